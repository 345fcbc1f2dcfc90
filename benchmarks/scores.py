"""Time and memory of every registered OOD score on synthetic ImageNet-shaped features.

Shapes follow the ViM ImageNet benchmark: C=1000 classes, D=768 features, 200k ID train
rows, 50k ID val, OOD sets of 17,632 / 5,160 / 10,000 / 2,000 rows (OpenImage-O,
Texture, iNaturalist, ImageNet-O); ``--scale`` multiplies every row count. For each
method (all of ``registry()``) the table gives fit and score seconds, the peak of the
memory numpy allocates during fit + score (tracemalloc; torch tiles and BLAS buffers
are not counted), and next to them the time of a straightforward per-sample loop
(``score`` called on one row at a time, as the reference codes iterate) measured on a
subsample and extrapolated to every scored row. Logits are computed once per dataset
outside the timings, as the score stage does.

    python benchmarks/scores.py --scale 0.1
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np

from stages.methods import FitData, create, registry
from stages.store import FeatureSet, Linear

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
    x, logits = bench.test["val"]
    n = min(loop_rows, len(x))
    t3 = time.perf_counter()
    for i in range(n):
        detector.score(x[i : i + 1], logits[i : i + 1])
    per_row = (time.perf_counter() - t3) / n
    rows = sum(len(x) for x, _ in bench.test.values())
    return {
        "method": name,
        "fit_s": t1 - t0,
        "score_s": t2 - t1,
        "rows_per_s": rows / max(t2 - t1, 1e-9),
        "peak_mb": peak / 2**20,
        "loop_s": per_row * rows,
        "speedup": per_row * rows / max(t2 - t1, 1e-9),
    }


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
    for name in args.methods or list(registry()):
        try:
            r = measure(name, bench, args.loop_rows)
        except Exception as err:  # a method that cannot run on this data is reported, not fatal
            print(f"{name:<14}skipped: {type(err).__name__}: {str(err).splitlines()[0][:90]}")
            continue
        print(
            f"{r['method']:<14}{r['fit_s']:>8.2f}{r['score_s']:>9.2f}{r['rows_per_s']:>11,.0f}"
            f"{r['peak_mb']:>9.0f}{r['loop_s']:>18.1f}{r['speedup']:>9.0f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
