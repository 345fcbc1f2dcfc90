"""The ``clip:`` / ``clip_config:`` keys of a backbone, checked without torch or open_clip.

The check stage validates them at every parameter change, so this module reads only
JSON and the cached list of open_clip's model names (oodbench/models/names.py). What
needs open_clip itself, registering a user's architecture under a name open_clip may
already use for a different one, is checked where the model is built
(oodbench/models/clip.py ``register_config``), with the same one-line error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oodbench.core.errors import ParamsError
from oodbench.models import names

#: the keys open_clip requires of an architecture config (factory._rescan_model_configs)
CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")
#: open_clip's preprocessing keys (transform.PreprocessCfg) a tag or config may set
PREPROCESS_KEYS = ("size", "mean", "std", "interpolation", "resize_mode", "fill_color")


def split_name(name: str) -> tuple[str, str | None]:
    """``ViT-B-16.openai`` -> (model, pretrained tag); the tag is optional."""
    model, _, tag = name.partition(".")
    return model, tag or None


@dataclass(frozen=True)
class ClipConfig:
    """A user's open_clip architecture: the model config and its optional preprocessing
    (open_clip's ``open_clip_config.json`` form nests them as model_cfg / preprocess_cfg)."""

    name: str
    model: dict[str, Any]
    preprocess: dict[str, Any] = field(default_factory=dict)


def read_clip_config(path: str | Path, name: str | None, where: str) -> ClipConfig:
    """Parse ``clip_config:``: a JSON object with open_clip's model config keys, plain or
    under ``model_cfg``; registered under `name` (the ``clip:`` model) or the file's stem."""
    path = Path(path)
    here = f"params.yaml: {where}.clip_config ({path})"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ParamsError(f"{here}: file not found") from err
    except (OSError, ValueError) as err:
        raise ParamsError(f"{here}: not a JSON file ({err})") from err
    model = data.get("model_cfg", data) if isinstance(data, dict) else None
    missing = [k for k in CONFIG_KEYS if not isinstance(model, dict) or k not in model]
    if missing:
        raise ParamsError(
            f"{here}: expected an open_clip model config, a JSON object with "
            f"{', '.join(CONFIG_KEYS)} (plain or under model_cfg); {missing[0]} is missing"
        )
    preprocess = data.get("preprocess_cfg", {}) if "model_cfg" in data else {}
    unknown = sorted(set(preprocess) - set(PREPROCESS_KEYS))
    if unknown:
        raise ParamsError(
            f"{here}: preprocess_cfg.{unknown[0]}: unknown; open_clip takes {PREPROCESS_KEYS}"
        )
    return ClipConfig(name or path.stem, model, dict(preprocess))


def check_clip_name(where: str, name: Any, config: str | None = None) -> None:
    """The ``clip:`` value must name an open_clip model (``name`` or ``name.tag``): one of
    open_clip's, or the ``clip_config:`` file's, which is read and checked here."""
    if not isinstance(name, str):
        raise ParamsError(
            f"params.yaml: {where}.clip must be an open_clip model name, got {name!r}"
        )
    model_name, _ = split_name(name)
    if config is not None:
        read_clip_config(config, model_name, where)  # registered under model_name
        return
    if not names.is_known("open_clip", model_name):
        raise ParamsError(
            f"params.yaml: {where}.clip: unknown open_clip model {name!r} (see `python -c "
            f"'import open_clip; print(open_clip.list_models())'`, or give {where}.clip_config)"
        )
