"""dvc.yaml is generated from params.yaml and the stages' imports, and stays in sync.

The real `dvc status` proof (a comment appended to every module stales exactly the
stages whose closure holds it) is tests/test_code_deps.py.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest

from oodbench.core.params import read_params_file
from oodbench.pipeline import dvcyaml, pipelinefiles
from oodbench.pipeline.closure import closure
from tests.user_project import TINY_CLIP

ROOT = Path(__file__).resolve().parents[1]


def stages() -> dict:
    """Every committed stage by DVC address (``pipelines/score-knn/dvc.yaml:score``)."""
    return pipelinefiles.stages_of(pipelinefiles.existing(ROOT))


def stage(folder: str, name: str) -> dict:
    return stages()[f"pipelines/{folder}/dvc.yaml:{name}"]


def score(method: str) -> dict:
    return stage(f"score-{method}", "score")


def test_committed_pipeline_files_are_what_the_generator_writes():
    assert pipelinefiles.existing(ROOT) == pipelinefiles.generate(root=ROOT), (
        "dvc.yaml or pipelines/*/dvc.yaml is stale: run `oodbench pipeline`"
    )


def imports_by_exec(entry: str) -> set[str]:
    """An independent oracle: the oodbench files a fresh interpreter has loaded after
    importing everything `entry` imports at any depth (function bodies included)."""
    import subprocess
    import sys

    names: set[str] = set()
    todo, seen = [ROOT / entry], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("oodbench")
            ):
                names.add(node.module)
                for alias in node.names:
                    names.add(f"{node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names if a.name.startswith("oodbench")}
        for name in list(names):
            for candidate in (
                (ROOT / Path(*name.split("."))).with_suffix(".py"),
                ROOT / Path(*name.split(".")) / "__init__.py",
            ):
                if candidate.is_file() and candidate not in seen:
                    todo.append(candidate)
    code = (
        "import importlib, sys\n"
        f"for name in {sorted(names)!r}:\n"
        "    try: importlib.import_module(name)\n"
        "    except ImportError: pass\n"
        "print('\\n'.join(sorted({m.__file__ for m in list(sys.modules.values())"
        " if getattr(m, '__file__', None) and 'oodbench' in m.__name__})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    loaded = {Path(line).resolve() for line in out.stdout.split()}
    package = ROOT / "oodbench"
    return {p.relative_to(ROOT).as_posix() for p in loaded if package in p.parents} | {entry}


@pytest.mark.parametrize("kind", ["demo", "check", "materialize", "extract", "fc", "evaluate"])
def test_code_closure_is_what_the_stage_loads(kind):
    """The closure equals what Python loads when importing the same modules."""
    assert set(closure([f"stages/{kind}.py"], ROOT)) == imports_by_exec(f"stages/{kind}.py")


def test_each_stage_depends_on_the_digest_of_its_own_code():
    """One code dependency per stage: the check stage's digest of its closure (a score
    stage: its sha256, in the method's spec). A score stage's closure holds its own
    method's module and none of the others'."""
    from oodbench.formats.specs import dumps
    from oodbench.pipeline.benchmark import Benchmark
    from oodbench.pipeline.resolve import code_spec, resolve

    assert "build/specs/code/extract.json" in stage("lite0", "extract-textures")["deps"]
    assert "build/specs/methods/vim.json" in score("vim")["deps"]
    assert not [d for d in score("vim")["deps"] if "/code/" in d]
    params = read_params_file(ROOT / "params.yaml")
    specs = resolve(params, Benchmark.of(params), ROOT)
    for key, group in (("vim", "score-vim"), ("react_val", "score-react")):
        # an alias block runs another method's module: react_val is `method: react`
        digest = dumps(specs[Path(f"build/specs/code/{group}.json")]).encode()
        assert specs[Path(f"build/specs/methods/{key}.json")]["code"] == (
            hashlib.sha256(digest).hexdigest()
        )
    digest = code_spec(["stages/score.py", "oodbench/methods/vim.py"], ROOT)
    methods = {f for f in digest["files"] if f.startswith("oodbench/methods/")}
    assert methods == {
        "oodbench/methods/__init__.py",
        "oodbench/methods/base.py",
        "oodbench/methods/usermethod.py",  # loads a user's own method class
        "oodbench/methods/vim.py",
        "oodbench/methods/shared/__init__.py",
        "oodbench/methods/shared/checks.py",
        "oodbench/methods/shared/logits.py",
        "oodbench/methods/shared/subspace.py",
        "oodbench/methods/shared/threads.py",
    }
    assert set(digest["files"]) == set(closure(digest["entries"], ROOT))
    # a method's one score stage depends on each of its backbones' feature folder as one
    # (every set, the fc and ViM subspace in it), writes a table per backbone; evaluate
    # reads the folder of each backbone's scores
    for method in ("msp", "knn", "vim"):
        deps = score(method)["deps"]
        assert [d for d in deps if d.startswith("features/")] == [
            "features/lite0",
            "features/lite1",
        ], method
        assert score(method)["cmd"] == (
            f"python stages/score.py --method {method} --backbones lite0,lite1"
        )
        assert [next(iter(o)) for o in score(method)["outs"]] == [
            f"scores/lite0/{method}.parquet",
            f"scores/lite1/{method}.parquet",
        ]
    evaluate = stages()["evaluate"]["deps"]
    assert {"scores/lite0", "scores/lite1", "scores/lite0_mos"} <= set(evaluate)
    assert not [d for d in evaluate if d.startswith("scores/lite0/")]
    assert len(evaluate) == len(set(evaluate))  # what two backbones share, listed once
    # an entry sharing lite0's features reads lite0's folder, its own fc, and extracts nothing
    deps = score("mos")["deps"]
    assert [d for d in deps if d.startswith("features/")] == [
        "features/lite0",
        "features/lite0_mos/fc.safetensors",
    ]
    assert not [s for s in stages() if s.startswith("pipelines/lite0_mos/dvc.yaml:extract")]


def test_stages_declare_only_the_params_they_read():
    """The check stage declares the sections it resolves and the ``method:`` of the blocks
    that name one, the demo stage its own section, a score stage its method's block (whose
    hyperparameters it reads); every other stage reads its resolved spec (build/specs/...)."""
    s = stages()
    params = read_params_file(ROOT / "params.yaml")
    named = sorted(k for k, block in params["methods"].items() if "method" in (block or {}))
    assert named == ["knn_openood", "mahalanobis_pp", "react_val"]
    assert s["check"]["params"] == [
        "benchmark", "datasets", "backbones", "extract", "probe",
        *(f"methods.{k}.method" for k in ["react_val", "mahalanobis_pp", "knn_openood"]),
    ]  # fmt: skip
    assert s["demo"]["params"] == ["demo"]
    for name, stage in s.items():
        if name.startswith("pipelines/score-"):
            method = name.split("/")[1].removeprefix("score-")
            assert stage["params"] == [f"methods.{method}"], name
            assert all(o[next(iter(o))] == {"persist": True} for o in stage["outs"]), name
        elif name not in ("check", "demo"):
            assert "params" not in stage, name
        if name not in ("check", "demo"):
            assert any(d.startswith("build/specs/") for d in stage["deps"]), name


def test_a_check_stage_without_all_its_sections_declares_the_whole_file():
    """DVC refuses a declared key that is missing, so a section params.yaml lacks cannot be
    declared; the check stage then declares the whole file, so adding it is still seen."""
    from oodbench.pipeline.benchmark import Benchmark

    params = read_params_file(ROOT / "params.yaml")
    assert dvcyaml.check_params(params, Benchmark.of(params))[0] == "benchmark"
    del params["probe"]  # lite0 and lite1 train a linear probe: it counts
    assert dvcyaml.check_params(params, Benchmark.of(params)) == [{"params.yaml": None}]
    # with the models' own heads the probe settings reach no spec; a trained head added
    # later changes `backbones`, which is declared
    params["benchmark"].update(backbones=["lite0"], methods=["msp", "energy"])
    params["backbones"]["lite0"]["fc"] = "head"
    assert dvcyaml.check_params(params, Benchmark.of(params)) == [
        "benchmark", "datasets", "backbones", "extract"
    ]  # fmt: skip
    del params["extract"]
    assert dvcyaml.check_params(params, Benchmark.of(params)) == [{"params.yaml": None}]


def test_an_openood_project_declares_the_check_stages_sections_one_by_one(tmp_path):
    """`oodbench init openood` writes the extract settings out, so that an experiment on
    one method does not rerun its check stage."""
    from oodbench.data import openood_benchmarks as O
    from oodbench.pipeline.benchmark import Benchmark
    from tests.test_openood_benchmark import imglists

    imglists(tmp_path, "cifar10")
    params, _, _ = O.openood_benchmark("cifar10", tmp_path, tmp_path)
    assert params["extract"] == {}
    assert dvcyaml.check_params(params, Benchmark.of(params))[:4] == [
        "benchmark", "datasets", "backbones", "extract"
    ]  # fmt: skip


def test_the_check_stage_writes_every_spec_a_stage_reads():
    """Its output is the folder; each stage depends on the files in it it reads, every one
    a spec the check stage writes."""
    from oodbench.pipeline.benchmark import Benchmark
    from oodbench.pipeline.resolve import resolve

    s = stages()
    assert [next(iter(o)) for o in s["check"]["outs"]] == ["build/specs"]
    needed = {d for st in s.values() for d in st["deps"] if d.startswith("build/specs/")}
    params = read_params_file(ROOT / "params.yaml")
    written = {p.as_posix() for p in resolve(params, Benchmark.of(params), ROOT)}
    assert needed and needed <= written


def test_specs_hold_only_what_changes_the_numbers():
    """A speed-only setting, a backbone's classifier keys for extraction, and a default
    written out explicitly leave the specs as they were; a value that counts changes the
    one spec that holds it, whether it is added or removed."""
    from oodbench.pipeline.benchmark import Benchmark
    from oodbench.pipeline.resolve import resolve

    def specs(p):
        return resolve(p, Benchmark.of(p), ROOT)

    base = specs(read_params_file(ROOT / "params.yaml"))
    edited = read_params_file(ROOT / "params.yaml")
    edited["extract"]["num_workers"] = 7
    edited["extract"]["nproc_per_node"] = 3
    edited["backbones"]["lite0"]["fc"] = "probe"  # as before, written again
    edited["methods"]["msp"] = {"temperature": 1}  # the default, as an int
    del edited["backbones"]["lite0"]["preprocess"]  # timm is the default
    assert specs(edited) == base
    model = Path("build/specs/backbones/lite0.model.json")
    assert "fc" not in base[model] and "num_workers" not in base[Path("build/specs/extract.json")]
    edited["backbones"]["lite0"]["groups"] = "configs/g.txt"
    changed = {k for k, v in specs(edited).items() if v != base[k]}
    assert changed == {Path("build/specs/backbones/lite0.fc.json")}
    edited["backbones"]["lite0"]["preprocess"] = "reference"
    assert specs(edited)[model]["preprocess"] == "reference"


def test_generated_stages_follow_a_users_own_benchmark(tmp_path, monkeypatch):
    """Files named by backbones.<bb> are deps of exactly the stages that read them, the
    demo stage is left out of a benchmark without demo sets, and a CLIP backbone's fc
    depends on its checkpoint while a probe's does not."""
    monkeypatch.chdir(tmp_path)  # params.yaml names files relative to the project root
    for code in ("stages", "oodbench"):
        (tmp_path / code).symlink_to(ROOT / code)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    (tmp_path / "datalists").mkdir()
    (tmp_path / "datalists" / "shapes_train.classes.txt").write_text("circle\nsquare\n")
    params = {
        "benchmark": {
            "backbones": ["r18", "clip"],
            "methods": ["msp"],
            "id_train": "shapes_train",
            "id_val": "shapes_val",
            "ood": ["noise"],
        },
        "datasets": {n: {"root": "data/shapes"} for n in ("shapes_train", "shapes_val", "noise")},
        "backbones": {
            "r18": {"timm": "resnet18", "checkpoint": "checkpoints/r18/w.pth", "fc": "head"},
            "clip": {
                "clip": "tiny-clip",
                "clip_config": "configs/tiny-clip.json",
                "checkpoint": "checkpoints/clip/open_clip.safetensors",
                "fc": "plp",
                "classes": "configs/shapes.txt",
            },
        },
        "methods": {"msp": {}},
        "demo": {"seed": 0},
    }
    files = dvcyaml.build(params, tmp_path)
    s = pipelinefiles.stages_of({f: pipelinefiles.render(st) for f, st in files.items()})
    assert "demo" not in s
    assert s["materialize-shapes_train"]["deps"][:3] == [
        "build/specs/datasets/shapes_train.json",
        "datalists/shapes_train.txt",
        "datalists/shapes_train.classes.txt",
    ]
    assert "datalists/shapes_val.classes.txt" not in s["materialize-shapes_val"]["deps"]
    assert "checkpoints/r18/w.pth" in s["pipelines/r18/dvc.yaml:extract-noise"]["deps"]
    assert "checkpoints/r18/w.pth" in s["pipelines/r18/dvc.yaml:fc"]["deps"]
    assert "configs/shapes.txt" in s["pipelines/clip/dvc.yaml:fc"]["deps"]
    assert "checkpoints/clip/open_clip.safetensors" in s["pipelines/clip/dvc.yaml:fc"]["deps"]
    assert "configs/shapes.txt" not in s["pipelines/clip/dvc.yaml:extract-noise"]["deps"]
    assert (
        "checkpoints/r18/w.pth" in s["pipelines/r18/dvc.yaml:fc"]["deps"]
    )  # a head is read from the model
