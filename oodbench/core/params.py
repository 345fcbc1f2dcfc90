"""Reading params.yaml, with errors that name the key.

Only the check stage reads it under ``dvc repro`` (it writes each other stage's resolved
spec, oodbench/formats/specs.py); the interactive commands (predict, tune) read it too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from oodbench.core.errors import ParamsError

PARAMS_FILE = Path("params.yaml")


PIPELINE_FILE = Path("dvc.yaml")


#: Where backbone, method and dataset names are written: the keys of these mappings and
#: the entries of the lists that dvc.yaml's matrices iterate over.
NAME_MAPPINGS = {"backbones": "backbone", "methods": "method", "datasets": "dataset"}
NAME_LISTS = {"backbones": "backbone", "methods": "method"}  # under benchmark:
#: A name becomes part of a DVC stage name (``pipelines/<backbone>/dvc.yaml:score-<method>``,
#: ``extract-<dataset>``), of a folder and of a dotted params key (``methods.<method>``):
#: '-' would make ``extract-a-b`` ambiguous, '@', '/', '.', ':' and whitespace break
#: stage names, paths or keys.
NAME_RE = re.compile(r"[A-Za-z0-9_]+")


def check_name(path: Path, where: str, name: Any, kind: str) -> None:
    """A ParamsError naming the key unless `name` is letters, digits and '_' only."""
    text = str(name)
    if NAME_RE.fullmatch(text):
        return
    fix = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or kind
    raise ParamsError(
        f"{path}: {where}: {kind} name {text!r} may hold only letters, digits and '_' "
        f"(they become DVC stage names like score-<method> and folders like pipelines/<backbone>); "
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
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        params = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: invalid YAML ({err})") from err
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    check_names(params, path)
    return params


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
