"""Reading params.yaml: only the keys a stage declared, with errors that name the key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from stages.errors import ParamsError

PARAMS_FILE = Path("params.yaml")


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The params a command may read.

    Under ``dvc repro`` (DVC sets ``DVC_STAGE``) only the keys the stage declared in
    dvc.yaml are returned, so code cannot silently depend on an undeclared key and go
    stale. Run by hand, the whole file is returned.
    """
    stage = os.environ.get("DVC_STAGE")
    if stage:
        import dvc.api

        return dvc.api.params_show(str(path), stages=[stage])
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run oodbench from the project root")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: invalid YAML ({err})") from err
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
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
