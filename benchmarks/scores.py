"""Time and memory of every registered OOD score on synthetic ImageNet-shaped features.

Shapes follow the ViM ImageNet benchmark: C=1000 classes, D=768 features, 200k ID train
rows, 50k ID val, OOD sets of 17,632 / 5,160 / 10,000 / 2,000 rows (OpenImage-O,
Texture, iNaturalist, ImageNet-O); ``--scale`` multiplies every row count. For each
method (all of ``registry()``) the table gives fit and score seconds, the peak of the
memory numpy allocates during fit + score (tracemalloc; torch tiles and BLAS buffers
are not counted), and next to them the time of a straightforward per-sample loop in the
style of the reference scripts (``benchmarks/reference_loops.py``: one row at a time in
Python, reusing the fitted detector's state) measured on the first ``--loop-rows`` val
rows and extrapolated to every scored row. On those rows the loop's scores are checked
against the vectorised ``score`` (rtol 1e-4, atol 1e-5 x the largest |score|); a
mismatch is printed under the method's row. A method without a reference loop times
``score`` called on one row at a time instead (call overhead only), marked ``*``.
Logits are computed once per dataset outside the timings, as the score stage does.

    python benchmarks/scores.py --scale 0.1
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np
from reference_loops import loop_for

from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.methods import Detector, FitData, create, registry

C, D = 1000, 768
ROWS = {"train": 200_000, "val": 50_000}
OOD_ROWS = {"openimage_o": 17_632, "texture": 5_160, "inaturalist": 10_000, "imagenet_o": 2_000}


@dataclass
class Bench:
    fc: Linear
    train: FeatureSet
    val: FeatureSet
    test: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (features, logits), val first


def _features(rng: np.random.Generator, centres: np.ndarray, n: int, ood: bool) -> FeatureSet:
    """Non-negative (post-activation-like) rows: a class centre plus noise, or pure noise."""
    labels = rng.integers(0, C, n) if not ood else -np.ones(n, np.int64)
    x = np.empty((n, D), np.float32)
    for s in range(0, n, 16384):
        block = rng.standard_normal((min(16384, n - s), D), dtype=np.float32)
        if not ood:
            block += 1.5 * centres[labels[s : s + len(block)]]
        x[s : s + len(block)] = np.maximum(block + 0.5, 0)
    return FeatureSet("ood" if ood else "id", x, labels.astype(np.int64), np.arange(n))


def synthetic(scale: float, seed: int = 0) -> Bench:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((C, D), dtype=np.float32)
    fc = Linear(
        0.05 * centres, rng.normal(0, 0.1, C).astype(np.float32), [str(c) for c in range(C)]
    )
    train = _features(rng, centres, max(int(ROWS["train"] * scale), 2 * C), ood=False)
    val = _features(rng, centres, max(int(ROWS["val"] * scale), 1), ood=False)
    test = {"val": (val.features, fc.logits(val.features))}
    for name, n in OOD_ROWS.items():
        x = _features(rng, centres, max(int(n * scale), 1), ood=True).features
        test[name] = (x, fc.logits(x))
    return Bench(fc, train, val, test)


def measure(name: str, bench: Bench, loop_rows: int) -> dict[str, object]:
    """Fit and score one method; then a per-sample loop on `loop_rows` val rows."""
    detector = create(name)
    tracemalloc.start()
    t0 = time.perf_counter()
    detector.fit(FitData(fc=bench.fc, train=bench.train, val=bench.val))
    t1 = time.perf_counter()
    for x, logits in bench.test.values():
        detector.score(x, logits)
    t2 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows = sum(len(x) for x, _ in bench.test.values())
    loop = time_loop(name, detector, bench, loop_rows)
    return {
        "method": name,
        "fit_s": t1 - t0,
        "score_s": t2 - t1,
        "rows_per_s": rows / max(t2 - t1, 1e-9),
        "peak_mb": peak / 2**20,
        "loop_s": loop["per_row"] * rows,
        "speedup": loop["per_row"] * rows / max(t2 - t1, 1e-9),
        **loop,
    }


def time_loop(name: str, detector: Detector, bench: Bench, loop_rows: int) -> dict[str, object]:
    """Seconds per row of the per-sample loop on the first val rows, and its agreement."""
    loop, fallback = loop_for(name)
    x, logits = bench.test["val"]
    n = max(min(loop_rows, len(x)), 1)
    x, logits = x[:n], logits[:n]
    t0 = time.perf_counter()
    got = loop(detector, x, logits)
    per_row = (time.perf_counter() - t0) / n
    return {
        "per_row": per_row,
        "fallback": fallback,
        "mismatch": mismatch(got, detector.score(x, logits)),
    }


def mismatch(got: np.ndarray, want: np.ndarray) -> str | None:
    """None when the loop agrees with the vectorised scores, else what differs."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    finite = np.abs(want[np.isfinite(want)])
    atol = 1e-5 * (finite.max() if finite.size else 1.0)
    if np.allclose(got, want, rtol=1e-4, atol=atol, equal_nan=True):
        return None
    bad = ~np.isclose(got, want, rtol=1e-4, atol=atol, equal_nan=True)
    i = int(np.flatnonzero(bad)[0])
    example = f"row {i}: loop {got[i]:.7g} vs vectorised {want[i]:.7g}"
    return f"{int(bad.sum())}/{len(want)} rows differ, e.g. {example}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every row count")
    parser.add_argument("--loop-rows", type=int, default=100, help="rows in the per-sample loop")
    parser.add_argument("--methods", nargs="*", help="subset of registered methods")
    args = parser.parse_args()
    t0 = time.perf_counter()
    bench = synthetic(args.scale)
    rows = sum(len(x) for x, _ in bench.test.values())
    print(
        f"synthetic data: C={C} D={D} train={len(bench.train)} scored rows={rows} "
        f"({time.perf_counter() - t0:.1f}s to generate)"
    )
    header = f"{'method':<14}{'fit s':>8}{'score s':>9}{'rows/s':>11}{'peak MB':>9}"
    print(header + f"{'loop s (extrap.)':>18}{'speed-up':>10}")
    fallbacks = 0
    for name in args.methods or list(registry()):
        try:
            r = measure(name, bench, args.loop_rows)
        except Exception as err:  # a method that cannot run on this data is reported, not fatal
            print(f"{name:<14}skipped: {type(err).__name__}: {str(err).splitlines()[0][:90]}")
            continue
        fallbacks += bool(r["fallback"])
        print_row(r)
    if fallbacks:
        print("* no reference per-sample loop: vectorised score() called on one row at a time")


def print_row(r: dict[str, object]) -> None:
    mark = "*" if r["fallback"] else " "
    print(
        f"{r['method']:<14}{r['fit_s']:>8.2f}{r['score_s']:>9.2f}{r['rows_per_s']:>11,.0f}"
        f"{r['peak_mb']:>9.0f}{r['loop_s']:>17.1f}{mark}{r['speedup']:>9.0f}x",
        flush=True,
    )
    if r["mismatch"]:
        print(f"  ! {r['method']}: per-sample loop != vectorised score: {r['mismatch']}")


if __name__ == "__main__":
    main()
