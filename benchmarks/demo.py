"""Wall time of a full `dvc repro` of the embedded demo, per stage, from a fresh clone.

Clones the current commit into a temporary folder (no DVC cache, so every stage runs),
runs `dvc repro`, timestamps each line DVC prints, and prints one row per stage (the
time from its "Running stage" line to the next one) plus the total and the time of
a second, no-op `dvc repro`.

    python benchmarks/demo.py [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_repro(workdir: Path) -> tuple[list[tuple[str, float]], float]:
    """Run `dvc repro`, return (stage, seconds) in run order and the total seconds."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marks: list[tuple[str, float]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if match := re.match(r"Running stage '([^']+)'", line):
            marks.append((match.group(1), time.perf_counter()))
    if proc.wait() != 0:
        sys.exit(f"dvc repro failed in {workdir}")
    end = time.perf_counter()
    stamps = [t for _, t in marks[1:]] + [end]
    return [(name, stop - t0) for (name, t0), stop in zip(marks, stamps, strict=True)], end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="oodbench-demo-"))
    subprocess.run(["git", "clone", "-q", str(ROOT), str(workdir / "repo")], check=True)
    repo = workdir / "repo"
    stages, total = timed_repro(repo)
    t0 = time.perf_counter()
    subprocess.run(["dvc", "repro"], cwd=repo, check=True, capture_output=True)
    noop = time.perf_counter() - t0

    by_kind: dict[str, list[float]] = defaultdict(list)
    print(f"{'stage':40s} {'seconds':>8s}")
    for name, seconds in stages:
        print(f"{name:40s} {seconds:8.1f}")
        by_kind[name.split("@")[0]].append(seconds)
    print(f"\n{'stage kind':14s} {'count':>5s} {'seconds':>8s}")
    for kind, times in by_kind.items():
        print(f"{kind:14s} {len(times):5d} {sum(times):8.1f}")
    print(f"{'total':14s} {len(stages):5d} {total:8.1f}")
    print(f"no-op dvc repro afterwards: {noop:.1f} s")
    if not args.keep:
        shutil.rmtree(workdir)
    else:
        print(f"kept {repo}")


if __name__ == "__main__":
    main()
