"""How long one experiment takes on the demo, and what that time is made of.

Builds demo workspaces of two shapes, both with the tests' small demo data (so that a
build takes minutes) and committed: ``small``, the tests' workspace (tests/conftest.py
make_workspace: lite0 and four methods, 18 stages), and ``demo``, the committed
params.yaml (every backbone and method, 74 stages). Then measures in rounds, the
variants taking turns within each round so that a busy machine slows them alike
(medians are printed):

- ``dvc exp run -S methods.energy.temperature=T`` end to end, a new T each time: it
  reruns energy's score stage (one for every backbone that runs energy; revisions
  before had one per backbone and method) and the evaluate stage (every backbone's
  metrics and the leaderboard; revisions before had one per backbone and a
  leaderboard stage), and, before score stages declared their method's params block,
  the check stage (the table counts them); and a ``dvc exp run``
  that changes nothing (DVC's own cost of an experiment, whatever the stages do);
- those stages' own commands, run as DVC runs them (``python stages/<kind>.py ...``);
- DVC's overhead per stage: ``dvc repro -f -s`` of one and of K score stages, wall time
  minus the stages' own time, the difference over K - 1 (as benchmarks/dvc_matrix.py);
- a no-op ``dvc status``;
- with ``--matrix``, the no-op ``dvc status`` and the overhead per forced score stage at
  the full matrix (benchmarks/dvc_matrix.py's workspace: 11 backbones x 25 methods x
  12 datasets, outputs copied from the demo workspace).

``--baseline REV`` adds a second variant: the same workspace with the package and stage
scripts of git revision REV (its own dvc.yaml, outputs recorded with ``dvc commit``, as
the numbers do not depend on the revision), so before and after come from one run.

    python benchmarks/iteration.py                          # this checkout
    python benchmarks/iteration.py --baseline 9f82ce2 --matrix --rounds 3
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import dvc_matrix  # benchmarks/dvc_matrix.py, beside this script
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: the tests' small demo (tests/conftest.py SMALL_DEMO): a build in minutes
SMALL_DEMO = {
    "seed": 0,
    "train_per_class": 6,
    "val_per_class": 4,
    "near_per_class": 4,
    "crops_per_texture": 4,
    "crops_per_photo": 2,
    "crop_size": 64,
}
METHOD = "energy"
RERUN = ("msp", "maxlogit", "energy", "react")  # score stages forced for DVC's overhead
#: the workspaces: what each changes in the committed params.yaml
SHAPES = {
    "small": {"backbones": ["lite0"], "methods": ["msp", "energy", "react", "maxlogit"]},
    "demo": {},
}


@dataclass
class Variant:
    """A workspace whose stage processes import its own copy of the package."""

    label: str
    ws: Path
    times: dict[str, list[float]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(self.ws)}

    def sh(self, *cmd: str, cwd: Path | None = None) -> tuple[float, str]:
        """Run `cmd` in the workspace; (wall seconds, stdout). Fails loudly."""
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=cwd or self.ws, env=self.env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if out.returncode != 0:
            sys.exit(
                f"{self.label}: {' '.join(cmd)} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
            )
        return seconds, out.stdout

    def record(self, key: str, seconds: float) -> None:
        self.times.setdefault(key, []).append(seconds)

    def commit(self, message: str) -> None:
        self.sh("git", "add", "-A")
        self.sh("git", "-c", "user.name=bench", "-c", "user.email=b@b", "commit", "-qm", message)


def copy_code(source: Path, dest: Path) -> None:
    for name in ("params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(source / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("stages", "oodbench", "configs", "checkpoints"):
        shutil.copytree(source / folder, dest / folder, ignore=ignore)
    shutil.copytree(source / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))


def build_current(dest: Path, shape: str) -> Variant:
    """A workspace of `shape` with this checkout's code, after one real `dvc repro`."""
    dest.mkdir(parents=True)
    copy_code(ROOT, dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["demo"] = dict(SMALL_DEMO)
    params["probe"]["epochs"] = 20
    params["benchmark"].update(SHAPES[shape])
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    variant = Variant(f"{shape}: this checkout", dest)
    variant.sh("git", "init", "-q")
    variant.sh("oodbench", "pipeline")
    t = time.perf_counter()
    variant.sh("dvc", "repro")
    print(f"built the {shape} workspace: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    variant.commit("built")
    return variant


def build_baseline(current: Variant, dest: Path, rev: str, shape: str) -> Variant:
    """A copy of the built workspace with revision `rev`'s package and stage scripts; its
    own dvc.yaml and specs, the outputs recorded as they are (`dvc commit`)."""
    shutil.copytree(current.ws, dest, symlinks=True)
    for folder in ("oodbench", "stages"):
        shutil.rmtree(dest / folder)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "oodbench", "stages"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    variant = Variant(f"{shape}: {rev}", dest)
    variant.sh("oodbench", "pipeline")
    variant.sh(sys.executable, "stages/check.py")
    variant.sh("dvc", "commit", "-f", "-q")
    variant.commit(f"code of {rev}")
    return variant


def reset(variant: Variant) -> None:
    """Back to the committed state: files, outputs, no experiments."""
    variant.sh("git", "reset", "-q", "--hard", "HEAD")
    variant.sh("dvc", "checkout", "-f", "-q")
    variant.sh("dvc", "exp", "remove", "-A", "-q")
    # the check stage's specs are git-ignored and uncached (build/specs): neither git nor
    # `dvc checkout` restores them, and left as the experiment wrote them they would make
    # the next `dvc exp run` rerun the check; writing them again from the committed
    # params.yaml makes them match dvc.lock
    variant.sh(sys.executable, "stages/check.py")
    variant.sh("dvc", "status", "-q")  # fails loudly if anything is still changed


def backbones_of(ws: Path) -> list[str]:
    return yaml.safe_load((ws / "params.yaml").read_text())["benchmark"]["backbones"]


def stage_commands(ws: Path) -> dict[str, list[str]]:
    """The commands of the stages one experiment on METHOD reruns, from dvc.yaml: a score
    stage for every backbone running METHOD (revisions before: for the first backbone)."""
    bb = backbones_of(ws)[0]
    stages = yaml.safe_load((ws / "pipelines" / bb / "dvc.yaml").read_text())["stages"]
    top = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    found = {
        "check stage": top["check"]["cmd"].split(),
        f"score-{METHOD} stage": dvc_matrix.score_stage(ws, METHOD, [bb])[1],
    }
    if "leaderboard" in top:  # a revision with an evaluate stage per backbone
        found["evaluate stage (one backbone)"] = stages["evaluate"]["cmd"].split()
        found["leaderboard stage"] = top["leaderboard"]["cmd"].split()
    else:
        found["evaluate stage (every backbone, leaderboard)"] = top["evaluate"]["cmd"].split()
    return found


def experiment(variant: Variant) -> None:
    # a value never run before: DVC's run cache would restore the outputs of a repeat
    value = round(1.0 + time.time() % 1000 / 100, 6)
    seconds, out = variant.sh("dvc", "exp", "run", "-S", f"methods.{METHOD}.temperature={value}")
    ran = re.findall(r"Running stage '([^']+)'", out)
    variant.record("exp run", seconds)
    variant.times["stages rerun"] = [float(len(ran))]
    reset(variant)
    # DVC's own floor: an experiment that changes nothing (stash, index, every stage's
    # status and lock, commit), the part of the time no stage's code can remove
    variant.record("no-op `dvc exp run`", variant.sh("dvc", "exp", "run")[0])
    reset(variant)


def stage_times(variant: Variant) -> None:
    for key, cmd in stage_commands(variant.ws).items():
        command = [sys.executable if cmd[0] == "python" else cmd[0], *cmd[1:]]
        variant.record(key, variant.sh(*command)[0])
    reset(variant)


def dvc_overhead(variant: Variant) -> None:
    """What each further forced score stage costs DVC itself (wall minus own time)."""
    backbones = backbones_of(variant.ws)
    targets, own = [], []
    for method in RERUN:
        name, cmd = dvc_matrix.score_stage(variant.ws, method, backbones)
        targets.append(name)
        variant.sh(sys.executable, *cmd[1:])  # warms the score cache the reruns read
        own.append(variant.sh(sys.executable, *cmd[1:])[0])
    one = variant.sh("dvc", "repro", "-f", "-s", targets[0])[0] - own[0]
    many = variant.sh("dvc", "repro", "-f", "-s", *targets)[0] - sum(own)
    variant.record("DVC overhead per stage", (many - one) / (len(targets) - 1))
    variant.record("no-op `dvc status`", variant.sh("dvc", "status", "-q")[0])
    reset(variant)


def matrix(variant: Variant, workdir: Path, args: argparse.Namespace) -> None:
    """The full matrix built from this variant's demo workspace, with its code."""
    ws = workdir / f"matrix-{variant.ws.name}"
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir()
    old = dvc_matrix.ENV
    dvc_matrix.ENV = {**old, "PYTHONPATH": str(variant.ws)}  # for its `oodbench pipeline` etc.
    try:
        dvc_matrix.copy_project(ws)
        for folder in ("oodbench", "stages"):  # this variant's code, not the checkout's
            shutil.rmtree(ws / folder)
            shutil.copytree(variant.ws / folder, ws / folder)
        shape = argparse.Namespace(
            backbones=args.matrix_backbones, methods=args.matrix_methods, datasets=12
        )
        dvc_matrix.build(workdir, variant.ws, ws.name, shape)
        found = dvc_matrix.measure(ws, rerun=len(RERUN))
    finally:
        dvc_matrix.ENV = old
    variant.times["matrix stages"] = [float(found["stages"])]
    variant.record("matrix: no-op `dvc status`", found["status s"])
    variant.record("matrix: DVC overhead per forced score stage", found["overhead per stage s"])
    shutil.rmtree(ws, ignore_errors=True)


def table(variants: list[Variant], args: argparse.Namespace) -> str:
    keys = list(dict.fromkeys(k for v in variants for k in v.times))
    lines = [
        f"{date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"{args.rounds} rounds (median s)",
        "",
        "| | " + " | ".join(v.label for v in variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for key in keys:
        cells = []
        for v in variants:
            values = v.times.get(key)
            if not values:
                cells.append("")
            elif key in ("stages rerun", "matrix stages"):
                cells.append(f"{values[0]:.0f}")
            else:
                cells.append(f"{statistics.median(values):.2f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for first, last in zip(variants[::2], variants[1::2], strict=False):
        if first.label.split(":")[0] != last.label.split(":")[0]:
            continue  # ratios within one shape, baseline -> this checkout
        ratios = []
        for key in keys:
            if key in ("stages rerun", "matrix stages") or key not in first.times:
                continue
            if key in last.times:
                a, b = (statistics.median(v.times[key]) for v in (first, last))
                ratios.append(f"{key}: {b / a:.2f}x")
        lines += ["", f"{last.label} / {first.label}: " + ", ".join(ratios)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", help="a git revision to measure beside this checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", default="small,demo", help="workspaces: small, demo")
    parser.add_argument("--matrix", action="store_true", help="also the full matrix")
    parser.add_argument("--matrix-backbones", type=int, default=11)
    parser.add_argument("--matrix-methods", type=int, default=25)
    parser.add_argument("--keep", action="store_true", help="keep the workspaces")
    parser.add_argument(
        "--workdir", type=Path, help="reuse the workspaces a run with --keep left there"
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="oodbench-iteration-"))
    variants = []
    for shape in args.shapes.split(","):
        here, there = workdir / f"{shape}-current", workdir / f"{shape}-baseline"
        if here.is_dir():  # --workdir: built by an earlier run
            current = Variant(f"{shape}: this checkout", here)
        else:
            current = build_current(here, shape)
        if args.baseline and there.is_dir():
            variants.append(Variant(f"{shape}: {args.baseline}", there))
        elif args.baseline:
            variants.append(build_baseline(current, there, args.baseline, shape))
        variants.append(current)
    for variant in variants:
        reset(variant)
    for round_ in range(args.rounds):
        for variant in variants:
            experiment(variant)
            stage_times(variant)
            dvc_overhead(variant)
        print(f"round {round_ + 1}: " + "; ".join(
            f"{v.label}: exp run {v.times['exp run'][-1]:.1f} s" for v in variants
        ), file=sys.stderr)  # fmt: skip
    if args.matrix:  # copies of the demo workspace's artifacts (it has every stage kind)
        for variant in [v for v in variants if v.label.startswith("demo:")]:
            matrix(variant, workdir, args)
    print(table(variants, args))
    if args.keep or args.workdir:
        print(f"kept {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
