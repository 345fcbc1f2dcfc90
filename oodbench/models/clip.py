"""CLIP image towers via open_clip, behind the timm feature contract.

The feature is the pooled image embedding *before* the projection (what the PLP study
stores and probes); the projection P [D, E] and the text tower are kept apart so that
MCM can compute cos(normalize(x P), t_c) from stored features. The wrapper has no
classifier (num_classes 0): zero-shot logits are not a linear map of x (x P is
normalised first), so the extract stage's head check does not apply.

Which prompts make t_c is the fc stage's business (oodbench/heads/clip_text.py): this
module only encodes the texts it is given, so editing the prompt set reruns fc and the
score stages, never extraction (which runs this module).

The architecture is open_clip's ``clip: <name>[.<tag>]``, or a config JSON of the
user's (``clip_config:``, registered under ``clip:``'s name or the file's stem in every
process that builds the model). Weights: the tag's hub download, or a local
``checkpoint:`` holding an open_clip state dict (.safetensors / .pt / .pth, optionally
under ``state_dict``) or OpenAI's TorchScript ``.pt`` archive. The keys themselves are
checked without torch (oodbench/models/clip_config.py), for the check stage.
"""

from __future__ import annotations

import contextlib
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from oodbench.core.errors import ParamsError
from oodbench.models.clip_config import (
    PREPROCESS_KEYS,
    ClipConfig,
    read_clip_config,
    split_name,
)

#: CLIP's own image preprocessing (open_clip's defaults): OpenAI's mean and std
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: open_clip resize modes -> timm's eval crop modes with crop_pct 1.0 (the same geometry:
#: shortest side to the size then a centre crop; or both sides to the size)
CROP_MODES = {"shortest": "center", "squash": "squash"}
#: scalars OpenAI's TorchScript archives keep next to the weights (not parameters)
OPENAI_ARCHIVE_SCALARS = ("input_resolution", "context_length", "vocab_size")


def _open_clip() -> ModuleType:
    try:
        import open_clip
    except ImportError as err:
        raise ParamsError("CLIP backbones need open_clip: `pip install oodbench[clip]`") from err
    return open_clip


def register_config(config: ClipConfig, where: str) -> None:
    """Make open_clip build ``config.name`` from the user's config (in this process).

    open_clip's public ``add_model_config`` names a config after its file; writing the
    registry directly lets ``clip:`` name it. Registering the same config again is a
    no-op; a different one under a name open_clip already knows (one of its own, or
    another file's) is refused rather than silently replacing it."""
    import open_clip.factory as factory

    registry = factory._MODEL_CONFIGS
    known = registry.get(config.name)
    if known is not None and known != config.model:
        raise ParamsError(
            f"params.yaml: {where}.clip_config: open_clip already has a different "
            f"architecture named {config.name!r}; rename the file or set {where}.clip to "
            "another name"
        )
    registry[config.name] = config.model


class ClipImageTower(nn.Module):
    """open_clip model whose image forward stops before the projection.

    ``forward_features``/``forward_head`` mirror timm, so extraction is the same code
    path for every backbone; ``projection`` and ``encode_text`` serve MCM/PLP."""

    num_classes = 0

    def __init__(self, clip: nn.Module, name: str) -> None:
        super().__init__()
        visual = clip.visual
        proj = getattr(visual, "proj", None)
        if not isinstance(proj, torch.Tensor):
            raise ParamsError(
                f"open_clip model {name!r}: its image tower has no linear projection "
                "(visual.proj); only ViT CLIP towers are supported"
            )
        self.register_buffer("projection", proj.detach().clone())
        visual.proj = None  # the image forward now returns the pre-projection embedding
        self.clip = clip
        self.name = name
        self.num_features = int(proj.shape[0])
        self.pretrained_cfg = timm_data_config(visual, name)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.visual(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def get_classifier(self) -> nn.Module:
        return nn.Identity()

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        """open_clip's text embeddings [len(texts), E] (projected, not normalised), float32."""
        tokenizer = _open_clip().get_tokenizer(split_name(self.name)[0])
        return self.clip.encode_text(tokenizer(texts)).float().numpy().astype(np.float32)


def timm_data_config(visual: nn.Module, name: str) -> dict[str, Any]:
    """open_clip's eval preprocessing of the tower as a timm data config (read by
    models/transforms.py), so that the pixels are the ones open_clip's transform gives."""
    pre = getattr(visual, "preprocess_cfg", None) or {}
    size = pre.get("size", visual.image_size)
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    resize_mode = pre.get("resize_mode", "shortest")
    if resize_mode not in CROP_MODES or (resize_mode == "shortest" and size[0] != size[1]):
        raise ParamsError(
            f"open_clip model {name!r}: its preprocessing resizes with resize_mode "
            f"{resize_mode!r} to {size}; supported: {tuple(CROP_MODES)} (square for shortest)"
        )
    return {
        "input_size": (3, *size),
        "interpolation": pre.get("interpolation", "bicubic"),
        "crop_pct": 1.0,
        "crop_mode": CROP_MODES[resize_mode],
        "mean": tuple(pre.get("mean", OPENAI_MEAN)),
        "std": tuple(pre.get("std", OPENAI_STD)),
    }


def create_clip(
    name: str, checkpoint: Path | None, where: str, config: str | None = None
) -> ClipImageTower:
    """open_clip model ``name[.tag]`` (its architecture from `config` when given): hub
    weights for the tag, or a local checkpoint (open_clip state dict or OpenAI archive).

    A tag also sets what its weights were trained with, also for a local file: QuickGELU
    (OpenAI's weights) and the preprocessing (mean, std, resize mode). OpenAI's
    TorchScript archives always mean QuickGELU, as in ``open_clip.load_openai_model``."""
    open_clip = _open_clip()
    model_name, tag = split_name(name)
    preprocess: dict[str, Any] = {}
    if config is not None:
        user = read_clip_config(config, model_name, where)
        register_config(user, where)
        preprocess = user.preprocess
    tag_cfg = (open_clip.get_pretrained_cfg(model_name, tag) or {}) if tag else {}
    if checkpoint is None and tag is None:
        raise ParamsError(
            f"params.yaml: {where}: set checkpoint: or a tag (clip: {model_name}.openai)"
        )
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    if checkpoint is None:
        try:
            clip = open_clip.create_model(
                model_name,
                pretrained=tag,
                force_quick_gelu=quick_gelu,
                force_preprocess_cfg=preprocess or None,
            )
        except Exception as err:  # hub / network errors vary
            raise ParamsError(
                f"params.yaml: {where}.clip: could not fetch {name!r} ({err}); set "
                f"{where}.checkpoint to a local open_clip state dict for offline use"
            ) from err
        return ClipImageTower(clip.eval(), name)
    state, openai_archive = read_clip_checkpoint(checkpoint, where)
    # the tag's preprocessing (what create_model would take from its download), then the
    # config file's own
    preprocess = {k: tag_cfg[k] for k in PREPROCESS_KEYS if k in tag_cfg} | preprocess
    with _without_random_init_notice():
        clip = open_clip.create_model(
            model_name,
            pretrained=None,
            force_quick_gelu=quick_gelu or openai_archive,
            force_preprocess_cfg=preprocess or None,
            pretrained_text=False,  # no hub download of a text tower the checkpoint replaces
        )
    load_clip_state(clip, state, f"{where}.checkpoint ({checkpoint})", model_name)
    return ClipImageTower(clip.eval(), name)


class _RandomInitNotice(logging.Filter):
    """open_clip logs "initialized randomly" for a model built without weights; here the
    checkpoint is loaded right after, so the notice would only mislead in a stage's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _without_random_init_notice() -> Iterator[None]:
    root, notice = logging.getLogger(), _RandomInitNotice()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def is_torchscript_archive(path: Path) -> bool:
    """A TorchScript archive (OpenAI's CLIP ``.pt``) is a zip whose record holds the
    compiled code's ``constants.pkl``; ``torch.save`` zips have only ``data.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.partition("/")[2] == "constants.pkl" for n in archive.namelist())


def read_clip_checkpoint(path: Path, where: str) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict, whether it came from an OpenAI TorchScript archive).

    State dicts are read weights-only (oodbench/models/weights.py). OpenAI's archives
    cannot be (torch refuses ``weights_only`` for TorchScript), so they are opened with
    ``torch.jit.load``, TorchScript's own loader, which restores tensors and compiled
    code but no arbitrary Python objects; only the tensors are kept, no code is run."""
    from oodbench.models.weights import read_state_dict

    if is_torchscript_archive(path):
        try:
            archive = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # TorchScript load errors come in several types
            raise ParamsError(
                f"{where}.checkpoint ({path}): not a loadable TorchScript archive ({err})"
            ) from err
        state = dict(archive.state_dict())
        for key in OPENAI_ARCHIVE_SCALARS:
            state.pop(key, None)
        return state, True
    try:
        state = read_state_dict(path)
    except ParamsError as err:
        raise ParamsError(
            f"{where}.checkpoint: expected an open_clip state dict (.safetensors, .pt or "
            f".pth, optionally under 'state_dict') or OpenAI's TorchScript .pt: {err}"
        ) from err
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state, False


def load_clip_state(clip: nn.Module, state: dict[str, torch.Tensor], here: str, model: str) -> None:
    """Load a CLIP state dict strictly: every tensor of the model, no other, same shapes
    (no silent resize of position embeddings); dtypes are cast (OpenAI's are fp16)."""
    from open_clip.model import convert_to_custom_text_state_dict

    if "positional_embedding" in state and not hasattr(clip, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)  # older layout, text tower at top
    target = clip.state_dict()
    if "logit_scale" in state and "logit_scale" in target:  # scalar vs 1-element layouts
        state["logit_scale"] = state["logit_scale"].reshape(target["logit_scale"].shape)
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        raise ParamsError(
            f"{here}: not a state dict of open_clip model {model!r} ({len(missing)} "
            f"tensors missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. "
            f"{unexpected[:3]}); check clip: / clip_config:"
        )
    for key, tensor in target.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ParamsError(
                f"{here}: tensor {key!r} has shape {tuple(state[key].shape)}, open_clip "
                f"model {model!r} expects {tuple(tensor.shape)}; check clip: / clip_config:"
            )
    clip.load_state_dict(state, strict=True)
