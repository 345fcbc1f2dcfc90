"""What a project made by `oodbench init` and a user's own method cost, side by side.

Table 1: one score stage on a synthetic ImageNet-shaped workspace (benchmarks/
synthetic_workspace.py, ``--scale`` of its rows), run as a clone runs it (``python
stages/score.py``) and as a project made by ``oodbench init`` runs it (``python -m
oodbench.cli.stage score``), for a built-in (msp) and for a user's own method (cosine
similarity to the class means, ``mymethods/cosine.py:CosineToMeans`` in the workspace),
best of ``--repeats`` runs, the entry points alternated.
Table 2: the ``package`` stage (the installed package's digest) and ``oodbench
check-method`` (the contract on synthetic features) per method, best of the repeats.

    python benchmarks/own_method.py --scale 0.05 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synthetic_workspace import ROOT, synthetic, write_method, write_method_spec, write_workspace

from oodbench.formats import features as store

COSINE = """\
from dataclasses import dataclass

import numpy as np

from oodbench import Detector


@dataclass
class CosineToMeans(Detector):
    requires = frozenset({"train", "labels"})
    reads_logits = False

    def _fit(self, data):
        x, y = data.train.features, data.train.labels
        means = np.stack([x[y == c].mean(axis=0) for c in np.unique(y)])
        self.means_ = means / np.linalg.norm(means, axis=1, keepdims=True)

    def _score(self, features, logits):
        x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        return (x @ self.means_.T).max(axis=1)
"""
ENTRIES = {
    "stages/score.py": [str(ROOT / "stages" / "score.py")],
    "-m oodbench.cli.stage score": ["-m", "oodbench.cli.stage", "score"],
}


def seconds(command: list[str], root: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.05, help="multiply every row count")
    parser.add_argument("--repeats", type=int, default=3, help="runs per entry, best is shown")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), store.DVC_STAGE_ENV: "score-bench"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench = synthetic(args.scale)
        write_workspace(root, bench)
        write_method(root, "msp", "msp", {})
        (root / "mymethods").mkdir()
        (root / "mymethods" / "cosine.py").write_text(COSINE)
        reference = "mymethods/cosine.py:CosineToMeans"
        write_method_spec(root, "cos", reference, {})
        rows = len(bench.train) + sum(len(fs) for fs in bench.scored().values())
        print(f"score stage, {rows} rows (scale {args.scale}), best of {args.repeats} (s)\n")
        print("| method | " + " | ".join(ENTRIES) + " | ratio |")
        print("|---|---|---|---|")
        for key in ("msp", "cos"):
            best = {entry: float("inf") for entry in ENTRIES}
            for _ in range(args.repeats):
                for entry, start in ENTRIES.items():
                    command = [sys.executable, *start, "--method", key, "--backbones", "vitb"]
                    best[entry] = min(best[entry], seconds(command, root, env))
            a, b = best.values()
            print(f"| {key} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
        package = min(
            seconds([sys.executable, "-m", "oodbench.cli.stage", "package"], root, env)
            for _ in range(args.repeats)
        )
        print(f"\npackage stage (digest of the installed package): {package:.2f} s\n")
        print("| check-method | s |\n|---|---|")
        for key in ("msp", "mahalanobis", "vim", "knn", reference):
            command = [sys.executable, "-m", "oodbench.cli.app", "check-method", key]
            took = min(seconds(command, root, env) for _ in range(args.repeats))
            print(f"| {key} | {took:.2f} |")


if __name__ == "__main__":
    main()
