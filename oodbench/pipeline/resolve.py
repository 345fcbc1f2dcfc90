"""params.yaml -> the resolved spec of every stage (format: oodbench/formats/specs.py).

Each spec holds exactly what changes its consumer's numbers, defaults filled in, so
that writing a default out or changing a speed-only setting reruns nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from oodbench.core import params as P
from oodbench.formats import paths, specs
from oodbench.pipeline import layout
from oodbench.pipeline.benchmark import Benchmark
from oodbench.pipeline.closure import closure

TRAINED_HEADS = ("probe", "plp", "mos")
#: extract settings that change the numbers; core/params.py UNTRACKED_KEYS change none
EXTRACT_KEYS = ("batch_size", "precision", "shard_rows", "decoder")


def resolve(params: dict[str, Any], bench: Benchmark, root: Path = Path()) -> dict[Path, dict]:
    """Every spec file of the benchmark and its content (params already validated)."""
    out: dict[Path, dict] = {}
    for dataset in bench.datasets:
        out[specs.dataset_spec(dataset)] = dataset_spec(params, dataset, root)
    out[specs.extract_spec()] = extract_spec(params)
    for backbone in bench.backbones:
        model = model_spec(params, bench.features_of(backbone))
        if bench.features_of(backbone) == backbone:  # a sharing backbone extracts nothing
            out[specs.model_spec(backbone)] = model
        out[specs.fc_spec(backbone)] = fc_spec(params, bench, backbone, model)
        out[specs.evaluate_spec(backbone)] = evaluate_spec(params, bench, backbone)
    for method in bench.all_methods:
        out[specs.method_spec(method)] = method_spec(params, method, root)
    out[specs.scoring_spec()] = scoring_spec(params, bench)
    clone = layout.is_clone(root)
    for group, entries in code_groups(params, bench, root).items():
        out[specs.code_digest(group)] = code_spec(entries, root, clone)
    return out


def code_groups(
    params: dict[str, Any], bench: Benchmark, root: Path = Path()
) -> dict[str, list[str]]:
    """The entry files of each group of stages that run the same code: a stage kind, or
    the score stages of one registered method (``score-<name>``: the script + its module),
    or of one key running a user's own class (``score-user-<key>``: the script + the
    user's file and its packages). Outside a clone a kind's entry is the package module
    its stage runs (layout.py ``STAGE_MODULES``) instead of ``stages/<kind>.py``."""
    from oodbench.methods.usermethod import code_group

    def script(kind: str) -> str:
        return layout.stage_entry(kind, root)

    kinds = ("materialize", "extract", "fc", "evaluate", "leaderboard", "subspace")
    groups = {kind: [script(kind)] for kind in kinds}
    users = layout.user_methods(params, bench)
    for key in bench.all_methods:
        name = method_name(params, key)
        if key in users:
            entries = layout.entry_files(users[key], root)
            groups[code_group(key, name)] = [script("score"), *entries]
        else:
            groups[code_group(key, name)] = [script("score"), f"oodbench/methods/{name}.py"]
    return groups


def method_name(params: dict[str, Any], key: str) -> str:
    """The method a ``methods.<key>`` block runs: a registered name or ``path/file.py:Class``."""
    from oodbench.methods.base import method_of

    block = (params.get("methods") or {}).get(key)
    return method_of(key, block if isinstance(block, dict) else None)


def code_spec(entries: list[str], root: Path, clone: bool = True) -> dict[str, Any]:
    """The sha256 of every file the entries run (the closure of their imports).

    Outside a clone the package's entries (``oodbench/...``) are followed in the
    installed package (layout.py ``package_root``) and the user's in the project, and the
    stage dispatcher the commands run is added: so an upgrade of oodbench, like an edit
    in a clone, reruns only the stages whose code it changes."""
    if clone:
        files = {f: sha256(root / f) for f in closure(entries, root)}
        return {"entries": entries, "files": files}
    installed = layout.package_root()
    ours = [e for e in entries if e.startswith(layout.PACKAGE_PREFIX)]
    theirs = [e for e in entries if not e.startswith(layout.PACKAGE_PREFIX)]
    ours += [layout.STAGE_ENTRY] if ours else []  # run_main: how every stage starts and ends
    package = [*closure(ours, installed, only="oodbench"), layout.DISPATCHER]
    files = {f: sha256(installed / f) for f in package}
    files |= {f: sha256(root / f) for f in closure(theirs, root)}
    return {"entries": entries, "files": files}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dataset_spec(params: dict[str, Any], dataset: str, root: Path) -> dict[str, Any]:
    block = P.get(params, f"datasets.{dataset}", dict)
    classes = paths.classes_list_path(dataset)
    return {
        "dataset": dataset,
        "root": P.get(params, f"datasets.{dataset}.root", str),
        "skip_bad": bool(block.get("skip_bad", False)),
        "classes_file": classes.as_posix() if (root / classes).is_file() else None,
    }


def extract_spec(params: dict[str, Any]) -> dict[str, Any]:
    from oodbench.models.settings import ExtractSettings

    settings = ExtractSettings.from_params(params.get("extract") or {})
    return {key: getattr(settings, key) for key in EXTRACT_KEYS}


def model_spec(params: dict[str, Any], backbone: str) -> dict[str, Any]:
    """The validated model keys (preset expanded, defaults filled in)."""
    from oodbench.models.backbones import MODEL_KEYS, validate_spec

    cfg = validate_spec(backbone, P.get(params, f"backbones.{backbone}", dict))
    return {key: cfg[key] for key in MODEL_KEYS if cfg[key] is not None}


def fc_spec(
    params: dict[str, Any], bench: Benchmark, backbone: str, model: dict[str, Any]
) -> dict[str, Any]:
    """The classifier's keys, the probe recipe when one is trained, the model when it is
    loaded (a head is read from it; a CLIP backbone keeps its projection and text tower)."""
    from oodbench.heads.probe import ProbeConfig
    from oodbench.models.backbones import validate_spec

    cfg = validate_spec(backbone, P.get(params, f"backbones.{backbone}", dict))
    kind = cfg["fc"]
    trained = kind in TRAINED_HEADS
    probe = ProbeConfig.from_params(params.get("probe") or {})
    return {
        "backbone": backbone,
        "fc": kind,
        "classes": cfg["classes"],
        "groups": cfg["groups"],
        # a head fine-tuned on the ID classes is named after the ID train list's classes
        "id_train": bench.id_train,
        "probe": probe.as_dict() if trained else None,
        "model": model if kind == "head" or "clip" in model else None,
    }


def method_spec(params: dict[str, Any], key: str, root: Path = Path()) -> dict[str, Any]:
    from oodbench.methods.base import from_params

    detector = from_params(key, P.get(params, "methods", dict).get(key), root)
    return {
        "key": key,
        "method": detector.name,
        "hyperparameters": detector.hyperparameters(),
    }


def scoring_spec(params: dict[str, Any], bench: Benchmark) -> dict[str, Any]:
    from oodbench.data.oneclass import one_class_of

    return {
        "id_train": bench.id_train,
        "id_val": bench.id_val,
        "ood": bench.ood,
        "one_class": one_class_of(params),
    }


def evaluate_spec(params: dict[str, Any], bench: Benchmark, backbone: str) -> dict[str, Any]:
    from oodbench.data.oneclass import one_class_of

    datasets = P.get(params, "datasets", dict)
    return {
        "methods": bench.methods_of(backbone),
        "id_val": bench.id_val,
        "ood": bench.ood,
        "groups": {name: (datasets.get(name) or {}).get("group", "far") for name in bench.ood},
        "one_class": one_class_of(params),
    }
