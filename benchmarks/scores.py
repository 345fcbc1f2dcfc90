"""Time and memory of the OOD scores and of their score stages, against a floor.

On a synthetic ImageNet ViT-B-shaped workspace (benchmarks/synthetic_workspace.py: C=1000,
D=768, 200k train, 84,792 scored rows; ``--scale`` multiplies every row count), per
method:

- ``fit+score s``: the detector fitted and every scored dataset scored in the score
  stage's own blocks (``score_set``), from arrays already in memory;
- ``stage s``: the real ``python stages/score.py`` as its own process (imports, specs,
  reading the NPY shards, fit, score, writing the table), as DVC runs it;
- ``x floor``: each divided by the floor, one read (np.load) of the feature shards the
  stage needs plus their logits ``X @ W.T + b`` in float32. A method that fits on train
  reads train, so its floor holds train's read and logits too; vim and residual fit
  from the subspace stage's file and read no train (that stage has its own row);
- ``peak RSS``: the stage process's peak resident memory, and ``x arrays`` its ratio to
  the feature arrays the stage needs (train when read, val, OOD; float32);
- the straightforward per-sample loop in the style of the reference scripts
  (``benchmarks/reference_loops.py``), timed on the first ``--loop-rows`` val rows,
  checked equal to the vectorised scores there (a mismatch is printed under the row),
  extrapolated to every scored row, and the speed-up of ``fit+score`` over it.

Then the two kNN backends (torch tiles, faiss ``IndexFlatIP``) on the same bank: their
seconds, the largest cosine difference and the neighbour agreement at k=1 and k=50.

    python benchmarks/scores.py --scale 0.1
    python benchmarks/scores.py --scale 1 --methods msp maxlogit energy odin gen gradnorm
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from reference_loops import loop_for
from synthetic_workspace import (
    BACKBONE,
    MOS_BACKBONE,
    Bench,
    array_bytes,
    floor_seconds,
    run_stage,
    synthetic,
    write_method,
    write_workspace,
)

from oodbench.formats.paths import FEATURES
from oodbench.methods import Detector, FitData, Precomputed, create
from oodbench.methods.shared.neighbours import Bank, unit_rows
from oodbench.results.fitdata import train_fingerprint
from oodbench.results.scoring import score_set

#: the seed methods: params key -> (method, hyperparameters)
SEED = {
    "msp": ("msp", {}),
    "maxlogit": ("maxlogit", {}),
    "energy": ("energy", {}),
    "odin": ("odin", {}),
    "react": ("react", {}),
    "gen": ("gen", {}),
    "gradnorm": ("gradnorm", {}),
    "vim": ("vim", {}),
    "residual": ("residual", {}),
    "mahalanobis": ("mahalanobis", {}),
    "rmds": ("rmds", {}),
    "klm": ("klm", {}),
    "mos": ("mos", {}),
    "knn": ("knn", {}),
    "knn_openood": ("knn", {"variant": "openood"}),
    "mcm": ("mcm", {}),
}
SUBSPACE = "vim_subspace.npz"


def fitted(key: str, bench: Bench, root: Path) -> tuple[Detector, float, float]:
    """The detector of `key` fitted as its stage fits it; (detector, fit s, score s)."""
    name, params = SEED[key]
    detector = create(name, params, where=f"methods.{key}")
    fc = bench.mos_fc if name == "mos" else bench.fc
    data = FitData(fc=fc, train=bench.train, val=bench.val)
    if detector.precomputed is not None:  # vim, residual: the subspace stage's file
        fingerprint = train_fingerprint(BACKBONE, "train", None, fc)  # cwd: the workspace
        path = root / FEATURES / BACKBONE / SUBSPACE
        data = FitData(fc=fc, precomputed=Precomputed(path, fingerprint))
    start = time.perf_counter()
    detector.fit(data)
    fit_s = time.perf_counter() - start
    for fs in bench.scored().values():
        score_set(detector, fs, fc)
    return detector, fit_s, time.perf_counter() - start - fit_s


def time_loop(key: str, detector: Detector, bench: Bench, loop_rows: int) -> dict:
    """Seconds per row of the per-sample loop on the first val rows, and its agreement."""
    name = SEED[key][0]
    loop, fallback = loop_for(name)
    fc = bench.mos_fc if name == "mos" else bench.fc
    x = bench.val.features[: max(min(loop_rows, len(bench.val)), 1)]
    logits = fc.logits(x)
    start = time.perf_counter()
    got = loop(detector, x, logits)
    per_row = (time.perf_counter() - start) / len(x)
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
    bad = ~np.isclose(got, want, rtol=1e-4, atol=atol, equal_nan=True)
    if not bad.any():
        return None
    i = int(np.flatnonzero(bad)[0])
    return f"{int(bad.sum())}/{len(want)} rows differ, e.g. row {i}: loop {got[i]:.7g} vs {want[i]:.7g}"


def stage_args(key: str) -> list[str]:
    if SEED[key][0] == "mos":  # the spec says it reads BACKBONE's features
        return ["--method", key, "--backbones", MOS_BACKBONE]
    return ["--method", key, "--backbones", BACKBONE]


def reads_train(key: str) -> bool:
    detector = create(*SEED[key])
    return bool(detector.requires & {"train", "labels"}) and detector.precomputed is None


def compare_backends(bench: Bench) -> None:
    """torch vs faiss on the train bank and every scored row: seconds, agreement."""
    if importlib.util.find_spec("faiss") is None:
        print("\nkNN backends: faiss-cpu is not installed (pip install faiss-cpu); skipped")
        return
    queries = unit_rows(np.concatenate([fs.features for fs in bench.scored().values()]))
    bank_rows = unit_rows(bench.train.features)
    print(f"\nkNN backends: {len(queries)} queries x {len(bank_rows)} bank rows (exact search)")
    print(
        f"{'k':>4}{'torch s':>10}{'faiss s':>10}{'max |cos diff|':>16}{'same top-1':>12}{'top-k overlap':>15}"
    )
    banks = {backend: Bank(bank_rows, backend) for backend in ("torch", "faiss")}
    for k in (1, 50):
        found, seconds = {}, {}
        for backend, bank in banks.items():
            start = time.perf_counter()
            found[backend] = bank.search(queries, k)
            seconds[backend] = time.perf_counter() - start
        (cos_t, rows_t), (cos_f, rows_f) = found["torch"], found["faiss"]
        same_top1 = float((rows_t[:, 0] == rows_f[:, 0]).mean())
        overlap = np.mean(
            [len(np.intersect1d(a, b)) / k for a, b in zip(rows_t, rows_f, strict=True)]
        )
        print(
            f"{k:>4}{seconds['torch']:>10.2f}{seconds['faiss']:>10.2f}"
            f"{np.abs(cos_t - cos_f).max():>16.2e}{same_top1:>12.4f}{overlap:>15.4f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every row count")
    parser.add_argument("--loop-rows", type=int, default=100, help="rows in the per-sample loop")
    parser.add_argument("--methods", nargs="*", choices=list(SEED), help="a subset (keys)")
    parser.add_argument("--no-backends", action="store_true", help="skip torch vs faiss")
    parser.add_argument("--workdir", help="where to write the workspace (default: a temp dir)")
    args = parser.parse_args()
    start = time.perf_counter()
    bench = synthetic(args.scale)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        write_workspace(root, bench)
        os.chdir(root)  # the stages and fitdata's helpers read relative paths
        keys = args.methods or list(SEED)
        for key in keys:
            write_method(root, key, *SEED[key])
        scored_names = list(bench.scored())
        rows = sum(len(fs) for fs in bench.scored().values())
        print(
            f"synthetic workspace: C=1000 D=768 train={len(bench.train)} scored rows={rows} "
            f"({time.perf_counter() - start:.1f}s to generate and write)"
        )
        floors = {
            False: min(floor_seconds(root, scored_names, bench.fc) for _ in range(2)),
            True: min(floor_seconds(root, ["train", *scored_names], bench.fc) for _ in range(2)),
        }
        mb = {t: array_bytes(bench, t) / 2**20 for t in (False, True)}
        print(
            f"floor: read + logits {floors[False]:.2f}s ({mb[False]:.0f} MB of features); "
            f"with train {floors[True]:.2f}s ({mb[True]:.0f} MB)"
        )
        subspace = None
        if {"vim", "residual"} & set(keys):
            subspace = run_stage(root, "subspace", "--backbone", BACKBONE)
        print(
            f"\n{'method':<13}{'fit+score s':>12}{'x floor':>8}{'stage s':>9}{'x floor':>8}"
            f"{'peak RSS MB':>12}{'x arrays':>9}{'loop s':>10}{'speed-up':>10}"
        )
        if subspace is not None:
            ratio = subspace.seconds / floors[True]
            print(
                f"{'subspace':<13}{'':>12}{'':>8}{subspace.seconds:>9.2f}{ratio:>8.1f}"
                f"{subspace.peak_rss / 2**20:>12.0f}{subspace.peak_rss / 2**20 / mb[True]:>9.2f}"
                "  (stage: once per backbone, for vim and residual)"
            )
        for key in keys:
            detector, fit_s, score_s = fitted(key, bench, root)
            loop = time_loop(key, detector, bench, args.loop_rows)
            stage = run_stage(root, "score", *stage_args(key))
            train = reads_train(key)
            inproc = fit_s + score_s
            loop_s = loop["per_row"] * rows
            mark = "*" if loop["fallback"] else " "
            print(
                f"{key:<13}{inproc:>12.2f}{inproc / floors[train]:>8.1f}{stage.seconds:>9.2f}"
                f"{stage.seconds / floors[train]:>8.1f}{stage.peak_rss / 2**20:>12.0f}"
                f"{stage.peak_rss / 2**20 / mb[train]:>9.2f}{loop_s:>9.1f}{mark}"
                f"{loop_s / inproc:>9.0f}x",
                flush=True,
            )
            if loop["mismatch"]:
                print(f"  ! {key}: per-sample loop != vectorised score: {loop['mismatch']}")
        print("* no reference per-sample loop: vectorised score() on one row at a time")
    if not args.no_backends:
        compare_backends(bench)


if __name__ == "__main__":
    main()
