"""Every generated stage runs under a plain `dvc repro`, and none is generated for nothing.

`dvc repro` runs the stages of dvc.yaml and whatever they need; a stage of a backbone's
pipelines/<bb>/dvc.yaml whose outputs no stage reads never runs, and `dvc status`
then reports it as changed for good. Here the generated files are read as the graph
DVC builds (an output is an edge to every stage depending on it, or on a folder
holding it), for every combination of classifier kind and method set the tests build,
each with and without a tuning set (``benchmark.tune_ood``) and a backbone sharing
another's features. The real `dvc repro` + `dvc status` of one of them (a head with
msp and energy) is tests/test_user_benchmark.py.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from oodbench.pipeline import dvcyaml, pipelinefiles, resolve
from tests.user_project import TINY_CLIP

ROOT = Path(__file__).resolve().parents[1]
KINDS = {
    "head": {"timm": "resnet18", "num_classes": 2, "checkpoint": "checkpoints/r18.pth",
             "fc": "head"},
    "probe": {"timm": "resnet18", "num_classes": 0, "fc": "probe"},
    "plp": {"clip": "tiny-clip", "clip_config": "configs/tiny-clip.json",
            "checkpoint": "checkpoints/clip.safetensors", "fc": "plp"},
    "mos": {"timm": "resnet18", "num_classes": 0, "fc": "mos", "groups": "configs/groups.yaml"},
}  # fmt: skip
METHOD_SETS = {
    "logits": ["msp", "energy"],
    "train": ["msp", "knn"],
    "subspace": ["vim", "residual"],
    "labels": ["mahalanobis", "she"],
    "val": ["klm"],
}


def params_for(kind: str, methods: list[str], tune: bool, shared: bool) -> dict:
    backbones = {"bb": KINDS[kind]}
    if shared:  # an entry reusing bb's features with a head trained on them
        backbones["bb_mos"] = {"features": "bb", "fc": "mos", "groups": "configs/groups.yaml"}
    datasets = ["train", "val", "near", "far", *(["held_out"] if tune else [])]
    return {
        "benchmark": {
            "backbones": list(backbones),
            "methods": methods,
            "id_train": "train",
            "id_val": "val",
            "ood": ["near", "far"],
            **({"tune_ood": "held_out"} if tune else {}),
        },
        "datasets": {d: {"root": "data"} for d in datasets},
        "backbones": backbones,
        "methods": {m: {} for m in methods},
    }


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # params.yaml names files relative to the project root
    for code in ("stages", "oodbench"):
        (tmp_path / code).symlink_to(ROOT / code)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    (tmp_path / "configs" / "groups.yaml").write_text("- ['0']\n- ['1']\n")
    # the code digests' file lists add no edge between stages: skip parsing imports
    monkeypatch.setattr(dvcyaml, "closure", lambda entries, root: list(entries))
    monkeypatch.setattr(resolve, "closure", lambda entries, root: list(entries))
    return tmp_path


def paths_of(entries: list) -> list[str]:
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def outputs(stage: dict) -> list[str]:
    return paths_of([*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])])


def overlaps(out: str, dep: str) -> bool:
    """DVC's edge: the same path, or one inside the other (a folder dependency)."""
    return out == dep or dep.startswith(out + "/") or out.startswith(dep + "/")


def graph(files: dict[str, dvcyaml.Stages]) -> tuple[dict[str, dict], dict[str, set[str]]]:
    """Stages by DVC address and, for each, the stages reading one of its outputs."""
    stages = pipelinefiles.stages_of({f: pipelinefiles.render(s) for f, s in files.items()})
    readers = {
        name: {
            other
            for other, stage in stages.items()
            if other != name
            and any(overlaps(o, d) for o in outputs(stages[name]) for d in stage.get("deps", []))
        }
        for name in stages
    }
    return stages, readers


def run_by_repro(stages: dict[str, dict], readers: dict[str, set[str]]) -> set[str]:
    """What a plain `dvc repro` runs: the stages of dvc.yaml and all they need."""
    todo = [name for name in stages if ":" not in name]  # dvc.yaml's own stages
    needed: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += [s for s, read_by in readers.items() if name in read_by]
    return needed


CASES = list(itertools.product(KINDS, METHOD_SETS, [False, True], [False, True]))


@pytest.mark.parametrize(("kind", "methods", "tune", "shared"), CASES)
def test_every_generated_stage_runs_and_is_read(project, kind, methods, tune, shared):
    params = params_for(kind, METHOD_SETS[methods], tune, shared)
    stages, readers = graph(dvcyaml.build(params, project))
    assert run_by_repro(stages, readers) == set(stages)
    for name, read_by in readers.items():
        if name.startswith("pipelines/"):  # dvc.yaml's stages run anyway
            assert read_by, f"{name}: nothing reads its outputs"
    extracts_train = "pipelines/bb/dvc.yaml:extract-train" in stages
    trains = kind != "head" or shared or methods != "logits"  # klm fits on train too
    assert extracts_train == trains
    assert ("extract-bb-held_out" in stages) == tune
    assert not any(s.endswith("held_out") for s in stages if s.startswith("pipelines/"))


def test_a_head_with_logit_methods_extracts_no_train_features(project):
    """The issue's case: ``fc: head`` with msp and energy reads no ID train features, so
    no extract-<id_train> stage exists to stay unrun; klm, which fits on train, adds it."""
    files = dvcyaml.build(params_for("head", ["msp", "energy"], False, False), project)
    assert set(files["pipelines/bb/dvc.yaml"]) == {
        "extract-val",
        "extract-near",
        "extract-far",
        "fc",
    }
    assert {f for f in files if "score-" in f} == {
        "pipelines/score-msp/dvc.yaml",
        "pipelines/score-energy/dvc.yaml",
    }
    files = dvcyaml.build(params_for("head", ["msp", "klm"], False, False), project)
    assert "extract-train" in files["pipelines/bb/dvc.yaml"]
    assert "features/bb" in files["pipelines/score-klm/dvc.yaml"]["score"]["deps"]  # all sets


LOCK = """schema: '2.0'
stages:
  fc:
    cmd: python stages/fc.py --backbone bb
    outs:
    - path: features/bb/fc.safetensors
      hash: md5
      md5: 0f
      size: 10
  evaluate:
    cmd: python stages/evaluate.py --backbone bb
    deps:
    - path: scores/bb
      hash: md5
      md5: 1a.dir
  score-msp:
    cmd: python stages/score.py --backbone bb --method msp
    outs:
    - path: scores/bb/msp.parquet
      hash: md5
      md5: 2b
"""


def test_writing_the_pipeline_drops_the_lock_entries_of_stages_it_no_longer_has(tmp_path):
    """DVC keeps the lock entry of a stage removed from dvc.yaml (here the per-backbone
    evaluate of earlier revisions); `oodbench pipeline` cuts it out, every other byte
    kept, and leaves alone a lock file not laid out as DVC writes it."""
    pipeline = {"stages": {"fc": {"cmd": "x"}, "score-msp": {"cmd": "y"}}}
    folder = tmp_path / "pipelines" / "bb"
    folder.mkdir(parents=True)
    (folder / "dvc.lock").write_text(LOCK)
    pipelinefiles.write(
        tmp_path, {"pipelines/bb/dvc.yaml": pipelinefiles.render(pipeline["stages"])}
    )
    start, end = LOCK.index("  evaluate:"), LOCK.index("  score-msp:")
    assert (folder / "dvc.lock").read_text() == LOCK[:start] + LOCK[end:]
    flow = "{schema: '2.0', stages: {fc: {cmd: a}, evaluate: {cmd: b}}}\n"
    (folder / "dvc.lock").write_text(flow)
    (folder / "dvc.yaml").unlink()  # written again, so its lock is looked at again
    pipelinefiles.write(
        tmp_path, {"pipelines/bb/dvc.yaml": pipelinefiles.render(pipeline["stages"])}
    )
    assert (folder / "dvc.lock").read_text() == flow
