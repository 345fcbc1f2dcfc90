"""DVC's own cost at the full benchmark matrix: status, a no-op repro, rerunning stages.

Builds a workspace with B backbones x M methods x D datasets (default the full matrix,
11 x 27 x 12) whose artifacts are copies of one real small demo run (nothing is
extracted for the matrix), records them with `dvc commit`, then measures:
- `dvc status` and a no-op `dvc repro` (wall seconds),
- the DVC overhead of rerunning stages: `dvc repro -f -s` of 1 and of K score stages,
  wall time minus the stages' own command time; the difference divided by K - 1 is
  what each further stage costs DVC, the rest the fixed cost of one `dvc repro`,
- the size of the lock files, and the projected bookkeeping of a full repro
  (no-op repro + overhead per stage x stages).
`--layout single` puts every stage in one dvc.yaml (one dvc.lock, the old layout's
shape); the default is the pipeline's own: dvc.yaml + one pipelines/<bb>/dvc.yaml each.

    python benchmarks/dvc_matrix.py                      # 11 x 27 x 12, both layouts
    python benchmarks/dvc_matrix.py --backbones 2 --layouts split
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}
SMALL_DEMO = {
    "seed": 0,
    "train_per_class": 20,
    "val_per_class": 4,
    "near_per_class": 4,
    "crops_per_texture": 4,
    "crops_per_photo": 2,
    "crop_size": 64,
}
EXTRA_METHODS = {  # two more keys on top of the demo's 25 (+ mos, mcm are backbone-specific)
    "react_p95": {"method": "react", "quantile": 0.95},
    "knn_k10": {"method": "knn", "k": 10},
}


def sh(cmd: list[str], cwd: Path) -> float:
    """Run `cmd`; return its wall seconds (fail loudly)."""
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.perf_counter() - start


def copy_project(dest: Path) -> None:
    for name in ("params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("stages", "oodbench", "configs"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    shutil.copytree(ROOT / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    sh(["git", "init", "-q"], dest)


def real_run(dest: Path) -> None:
    """One small real demo run: the artifacts every matrix stage's outputs copy."""
    copy_project(dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["demo"] = dict(SMALL_DEMO)
    params["benchmark"]["backbones"] = ["lite0"]
    params["probe"]["epochs"] = 5
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["oodbench", "pipeline"], dest)
    sh(["dvc", "repro"], dest)


def matrix_params(real: Path, backbones: int, methods: int, datasets: int) -> dict:
    params = yaml.safe_load((real / "params.yaml").read_text())
    demo_sets = ["digits_id_train", "digits_id_val", "digits_near", "textures", "photos"]
    names = [f"ds{i:02d}" for i in range(datasets)]
    source = {names[0]: demo_sets[0], names[1]: demo_sets[1]}
    source |= {n: demo_sets[2 + i % 3] for i, n in enumerate(names[2:])}
    params.pop("demo")
    params["datasets"] = {
        n: {"root": "data/demo", "group": "near" if source[n] == "digits_near" else "far"}
        for n in names
    }
    keys = list(params["methods"])[:25] + list(EXTRA_METHODS)
    params["methods"] |= EXTRA_METHODS
    bbs = [f"bb{i:02d}" for i in range(backbones)]
    params["backbones"] = {b: dict(params["backbones"]["lite0"]) for b in bbs}
    params["benchmark"].update(
        backbones=bbs,
        methods=keys[:methods],
        id_train=names[0],
        id_val=names[1],
        ood=names[2:],
    )
    params["_source"] = source
    return params


def fake_outputs(ws: Path, real: Path, params: dict) -> None:
    """Every stage's outputs, copied from the real run (renamed where a file names itself)."""
    source = params.pop("_source")
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(real / "data" / "demo", ws / "data" / "demo")
    for ds, src in source.items():
        for suffix in (".txt",):
            shutil.copy2(real / "datalists" / f"{src}{suffix}", ws / "datalists" / f"{ds}{suffix}")
        for suffix in (".parquet", ".classes.json"):
            dest = ws / "data" / "manifests" / f"{ds}{suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real / "data" / "manifests" / f"{src}{suffix}", dest)
    for bb in params["benchmark"]["backbones"]:
        for ds, src in source.items():
            dest = ws / "features" / bb / ds
            shutil.copytree(real / "features" / "lite0" / src, dest)
            info = json.loads((dest / "info.json").read_text())
            (dest / "info.json").write_text(json.dumps(info | {"backbone": bb, "dataset": ds}))
        for name in ("fc.safetensors", "vim_subspace.npz"):  # the fc and subspace stages' outs
            shutil.copy2(real / "features/lite0" / name, ws / "features" / bb / name)
        (ws / "scores" / bb).mkdir(parents=True, exist_ok=True)
        for method in params["benchmark"]["methods"]:
            shutil.copy2(
                real / "scores/lite0/msp.parquet", ws / "scores" / bb / f"{method}.parquet"
            )
        (ws / "metrics" / bb).mkdir(parents=True, exist_ok=True)
        shutil.copy2(real / "metrics/lite0.json", ws / "metrics" / f"{bb}.json")
        for method in params["benchmark"]["methods"]:  # the per-method summaries
            shutil.copy2(real / "metrics/lite0/msp.json", ws / "metrics" / bb / f"{method}.json")
        shutil.copytree(real / "plots/lite0", ws / "plots" / bb)
    shutil.copy2(real / "metrics/leaderboard.md", ws / "metrics/leaderboard.md")


def single_file(ws: Path) -> None:
    """Every stage in dvc.yaml (names prefixed with the backbone): one lock file."""
    from oodbench.pipeline import pipelinefiles

    merged = {}
    for file, text in pipelinefiles.existing(ws).items():
        stages = yaml.safe_load(text)["stages"]
        prefix = "" if file == "dvc.yaml" else Path(file).parent.name + "-"
        for name, stage in stages.items():
            stage.pop("wdir", None)
            merged[prefix + name] = stage
        if file != "dvc.yaml":
            shutil.rmtree(ws / Path(file).parent)
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": merged}, sort_keys=False))


def build(workdir: Path, real: Path, layout: str, args: argparse.Namespace) -> Path:
    ws = workdir / layout
    params = matrix_params(real, args.backbones, args.methods, args.datasets)
    (ws / "datalists").mkdir(exist_ok=True)
    fake_outputs(ws, real, params)
    sh(["oodbench", "pipeline"], ws)
    sh([sys.executable, "stages/check.py"], ws)  # the specs the stages depend on
    if layout == "single":
        single_file(ws)
    sh(["git", "add", "-A"], ws)
    return ws


def measure(ws: Path, rerun: int) -> dict[str, float]:
    stages = len(
        re.findall(r"^\S+:\s*$", subprocess.run(["dvc", "status"], cwd=ws, env=ENV,
                   capture_output=True, text=True).stdout, flags=re.M)
    )  # fmt: skip
    out = {"stages": stages}
    out["commit s"] = sh(["dvc", "commit", "-f"], ws)
    out["status s"] = sh(["dvc", "status", "-q"], ws)
    out["noop repro s"] = sh(["dvc", "repro"], ws)
    locks = [*ws.glob("dvc.lock"), *ws.glob("pipelines/*/dvc.lock")]
    out["lock KB (largest)"] = max(p.stat().st_size for p in locks) / 1024
    out["lock KB (all)"] = sum(p.stat().st_size for p in locks) / 1024
    listed = yaml.safe_load((ws / "params.yaml").read_text())["benchmark"]["backbones"]
    targets, own = [], []
    methods = ("msp", "maxlogit", "energy", "odin")
    for method in methods[:rerun]:  # a method's one score stage, for every backbone
        name, command = score_stage(ws, method, listed)
        targets.append(name)
        # twice, the second timed: the first fills the score cache, which the forced
        # reruns below then read (a stage for 11 backbones fits 11 times on a cold cache)
        sh([sys.executable, *command[1:]], ws)
        own.append(sh([sys.executable, *command[1:]], ws))
    # DVC's cost of rerunning 1 and then K stages (wall minus the stages' own command
    # time): the difference over K - 1 is the cost each further stage adds, free of the
    # fixed cost of loading the pipeline once per `dvc repro`
    one = sh(["dvc", "repro", "-f", "-s", targets[0]], ws) - own[0]
    many = sh(["dvc", "repro", "-f", "-s", *targets], ws) - sum(own)
    out["rerun stages"] = len(targets)
    out["fixed s"] = one - (many - one) / (len(targets) - 1)
    out["overhead per stage s"] = (many - one) / (len(targets) - 1)
    out["projected bookkeeping s"] = out["noop repro s"] + out["overhead per stage s"] * stages
    return out


def score_stage(ws: Path, method: str, backbones: list[str]) -> tuple[str, list[str]]:
    """The DVC address and command of `method`'s score stage: its own file
    (``pipelines/score-<m>/dvc.yaml``), or, in a revision with a score stage per backbone
    and method, the first backbone's."""
    own = ws / "pipelines" / f"score-{method}" / "dvc.yaml"
    if own.exists():
        stage = yaml.safe_load(own.read_text())["stages"]["score"]
        return f"pipelines/score-{method}/dvc.yaml:score", stage["cmd"].split()
    bb = backbones[0]
    file = ws / "pipelines" / bb / "dvc.yaml"
    if file.exists():
        stage = yaml.safe_load(file.read_text())["stages"][f"score-{method}"]
        return f"pipelines/{bb}/dvc.yaml:score-{method}", stage["cmd"].split()
    merged = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]  # --layout single
    name = next(n for n in (f"score-{method}-score", f"{bb}-score-{method}") if n in merged)
    return name, merged[name]["cmd"].split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbones", type=int, default=11)
    parser.add_argument("--methods", type=int, default=27)
    parser.add_argument("--datasets", type=int, default=12)
    parser.add_argument("--layouts", default="single,split")
    parser.add_argument("--rerun", type=int, default=4, help="score stages rerun together")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="dvc-matrix-"))
    real = workdir / "real"
    real.mkdir()
    t = time.perf_counter()
    real_run(real)
    print(f"real demo run: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    rows = {}
    for layout in args.layouts.split(","):
        ws = workdir / layout
        ws.mkdir()
        copy_project(ws)
        build(workdir, real, layout, args)
        rows[layout] = measure(ws, args.rerun)
        print(f"{layout}: {rows[layout]}", file=sys.stderr)
    keys = list(next(iter(rows.values())))
    print(f"\n{args.backbones} backbones x {args.methods} methods x {args.datasets} datasets")
    print("| " + " | ".join(["layout", *keys]) + " |")
    print("|" + "---|" * (len(keys) + 1))
    for layout, row in rows.items():
        cells = [f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        print("| " + " | ".join([layout, *cells]) + " |")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
