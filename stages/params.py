"""Reading params.yaml: only the keys a stage declared, with errors that name the key."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any

import yaml

from stages.errors import ParamsError

PARAMS_FILE = Path("params.yaml")


#: The params keys each stage declares in dvc.yaml, with its matrix placeholders.
#: A test checks this table against dvc.yaml; load_params() enforces it at run time.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "demo": ("demo",),
    "materialize": ("datasets.{dataset}",),
    "extract": ("backbones.{backbone}", "extract"),
    "fc": ("backbones.{backbone}", "benchmark.id_train", "probe"),
    "score": (
        "methods.{method}",
        "benchmark.id_train",
        "benchmark.id_val",
        "benchmark.ood",
        "benchmark.one_class",
    ),
    "evaluate": (
        "benchmark.methods",
        "benchmark.id_val",
        "benchmark.ood",
        "benchmark.one_class",
        "datasets",
    ),
}
#: the matrix axes of each stage, in dvc.yaml's order (they make up the name after @)
STAGE_MATRIX: dict[str, tuple[str, ...]] = {
    "materialize": ("dataset",),
    "extract": ("backbone", "dataset"),
    "fc": ("backbone",),
    "score": ("backbone", "method"),
    "evaluate": ("backbone",),
}
#: which top-level params mapping holds the names a placeholder can take
PLACEHOLDER_SOURCE = {"dataset": "datasets", "backbone": "backbones", "method": "methods"}


#: Where backbone, method and dataset names are written: the keys of these mappings and
#: the entries of the lists that dvc.yaml's matrices iterate over.
NAME_MAPPINGS = {"backbones": "backbone", "methods": "method", "datasets": "dataset"}
NAME_LISTS = {"backbones": "backbone", "methods": "method"}  # under benchmark:
#: A name becomes part of a DVC stage name (``score@<backbone>-<method>``, matrix values
#: joined by '-') and of a dotted params key (``methods.<method>``): '-' would make
#: ``score@a-b-c`` ambiguous, '@', '/', '.', ':' and whitespace break stage names or keys.
NAME_RE = re.compile(r"[A-Za-z0-9_]+")


def check_name(path: Path, where: str, name: Any, kind: str) -> None:
    """A ParamsError naming the key unless `name` is letters, digits and '_' only."""
    text = str(name)
    if NAME_RE.fullmatch(text):
        return
    fix = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or kind
    raise ParamsError(
        f"{path}: {where}: {kind} name {text!r} may hold only letters, digits and '_' "
        f"(DVC joins names with '-' into stage names like score@<backbone>-<method>); "
        f"rename it, e.g. to {fix!r}, everywhere it is used"
    )


def check_names(params: dict[str, Any], path: Path = PARAMS_FILE) -> None:
    """Every backbone, method and dataset name can be carried by a DVC stage name."""
    for section, kind in NAME_MAPPINGS.items():
        names = params.get(section)
        if isinstance(names, dict):
            for name in names:
                check_name(path, f"{section}.{name}", name, kind)
    benchmark = params.get("benchmark")
    for child, kind in NAME_LISTS.items():
        names = benchmark.get(child) if isinstance(benchmark, dict) else None
        if isinstance(names, list):
            for i, name in enumerate(names):
                check_name(path, f"benchmark.{child}[{i}]", name, kind)


def read_params_file(path: Path = PARAMS_FILE) -> dict[str, Any]:
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run oodbench from the project root")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: invalid YAML ({err})") from err
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    check_names(params, path)
    return params


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The params a command may read.

    Under ``dvc repro`` (DVC sets ``DVC_STAGE``, e.g. ``score@lite0-msp``) only the
    keys that stage declares are returned, so code cannot silently depend on an
    undeclared key and go stale. This does what ``dvc.api.params_show(stages=...)``
    does at a fraction of its cost (0.8 s per stage, 50+ stages in the demo). Run by
    hand, the whole file is returned.
    """
    params = read_params_file(path)
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return params
    return restrict(params, declared_keys(stage, params))


def declared_keys(stage: str, params: dict[str, Any]) -> list[str]:
    """Resolve ``kind@a-b`` to the kind's declared keys with its matrix values filled in."""
    kind, _, suffix = stage.partition("@")
    if kind not in STAGE_PARAMS:
        return [key for key in params]  # a user's own stage: no restriction known
    templates = STAGE_PARAMS[kind]
    names = STAGE_MATRIX.get(kind, ())
    for values in itertools.product(
        *(list(params.get(PLACEHOLDER_SOURCE[n]) or {}) for n in names)
    ):
        if "-".join(map(str, values)) == suffix:
            item = dict(zip(names, values, strict=True))
            return [t.format(**item) for t in templates]
    raise ParamsError(f"stage {stage!r}: cannot match {suffix!r} to params.yaml names")


def restrict(params: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The nested sub-dict of `params` holding only the dotted `keys` that exist."""
    out: dict[str, Any] = {}
    for key in keys:
        node: Any = params
        parts = key.split(".")
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = node
    return out


def get(params: dict[str, Any], key: str, expected: type | tuple[type, ...] | None = None) -> Any:
    """``get(params, "backbones.lite0.timm", str)``: the value, or an error naming the key."""
    node: Any = params
    walked = []
    for part in key.split("."):
        walked.append(part)
        if not isinstance(node, dict) or part not in node:
            where = ".".join(walked)
            hint = ""
            if isinstance(node, dict) and node:
                hint = f"; known: {', '.join(map(str, node))}"
            raise ParamsError(f"params.yaml: missing key {where}{hint}")
        node = node[part]
    if expected is not None and (
        not isinstance(node, expected) or (isinstance(node, bool) and expected is not bool)
    ):
        names = (
            expected.__name__
            if isinstance(expected, type)
            else " or ".join(t.__name__ for t in expected)
        )
        raise ParamsError(f"params.yaml: {key} must be {names}, got {node!r}")
    return node
