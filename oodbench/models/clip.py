"""CLIP image towers via open_clip, behind the timm feature contract.

The feature is the pooled image embedding *before* the projection (what the PLP study
stores and probes); the projection P [D, E] and the text embeddings of the class names
are kept apart so that MCM can compute cos(normalize(x P), t_c) from stored features.
The wrapper has no classifier (num_classes 0): zero-shot logits are not a linear map
of x (x P is normalised first), so the extract stage's head check does not apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from oodbench.core.errors import ParamsError

#: MCM's prompt ensemble (scores.md); t_c = normalised mean of the normalised embeddings.
PROMPTS = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of many {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
)
#: CLIP's own image preprocessing: short side to the size (bicubic), centre crop.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _open_clip():
    try:
        import open_clip
    except ImportError as err:
        raise ParamsError("CLIP backbones need open_clip: `pip install oodbench[clip]`") from err
    return open_clip


def split_name(name: str) -> tuple[str, str | None]:
    """``ViT-B-16.openai`` -> (model, pretrained tag); the tag is optional."""
    model, _, tag = name.partition(".")
    return model, tag or None


def check_clip_name(where: str, name: Any) -> None:
    """The ``clip:`` value must name an open_clip model (``name`` or ``name.tag``)."""
    if not isinstance(name, str) or split_name(name)[0] not in _open_clip().list_models():
        raise ParamsError(
            f"params.yaml: {where}.clip: unknown open_clip model {name!r} "
            "(see `python -c 'import open_clip; print(open_clip.list_models())'`)"
        )


class ClipImageTower(nn.Module):
    """open_clip model whose image forward stops before the projection.

    ``forward_features``/``forward_head`` mirror timm, so extraction is the same code
    path for every backbone; ``projection`` and ``text_embeddings`` serve MCM/PLP."""

    num_classes = 0

    def __init__(self, clip: nn.Module, name: str) -> None:
        super().__init__()
        visual = clip.visual
        proj = getattr(visual, "proj", None)
        if not isinstance(proj, torch.Tensor):
            raise ParamsError(f"open_clip model {name!r} has no linear image projection")
        self.register_buffer("projection", proj.detach().clone())
        visual.proj = None  # the image forward now returns the pre-projection embedding
        self.clip = clip
        self.name = name
        self.num_features = int(proj.shape[0])
        size = visual.image_size
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        pre = getattr(visual, "preprocess_cfg", None) or {}
        self.pretrained_cfg = {
            "input_size": (3, *size),
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": tuple(pre.get("mean", OPENAI_MEAN)),
            "std": tuple(pre.get("std", OPENAI_STD)),
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.visual(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def get_classifier(self) -> nn.Module:
        return nn.Identity()

    @torch.no_grad()
    def text_embeddings(self, class_names: Sequence[str], chunk: int = 64) -> np.ndarray:
        """t_c [C, E]: per class, the normalised mean of the normalised prompt embeddings."""
        tokenizer = _open_clip().get_tokenizer(split_name(self.name)[0])
        out = []
        for start in range(0, len(class_names), chunk):
            names = class_names[start : start + chunk]
            tokens = tokenizer([p.format(c) for c in names for p in PROMPTS])
            emb = self.clip.encode_text(tokens).float()
            emb = emb / emb.norm(dim=-1, keepdim=True)
            mean = emb.view(len(names), len(PROMPTS), -1).mean(dim=1)
            out.append(mean / mean.norm(dim=-1, keepdim=True))
        return torch.cat(out).numpy().astype(np.float32)


def create_clip(name: str, checkpoint: Path | None, where: str) -> ClipImageTower:
    """open_clip model ``name[.tag]``: hub weights for the tag, or a local state dict."""
    open_clip = _open_clip()
    model_name, tag = split_name(name)
    quick = tag == "openai"  # OpenAI's weights were trained with QuickGELU
    if checkpoint is None and tag is None:
        raise ParamsError(
            f"params.yaml: {where}: set checkpoint: or a tag (clip: {model_name}.openai)"
        )
    if checkpoint is None:
        try:
            clip = open_clip.create_model(model_name, pretrained=tag, force_quick_gelu=quick)
        except Exception as err:  # hub / network errors vary
            raise ParamsError(
                f"params.yaml: {where}.clip: could not fetch {name!r} ({err}); set "
                f"{where}.checkpoint to a local open_clip state dict for offline use"
            ) from err
    else:
        from oodbench.models.weights import read_state_dict

        clip = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick)
        state = read_state_dict(checkpoint)
        missing, unexpected = clip.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ParamsError(
                f"{where}.checkpoint ({checkpoint}): not an open_clip {model_name} state dict "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    return ClipImageTower(clip.eval(), name)


def clip_class_names(classes: str | None, num_classes: int | None, where: str) -> list[str]:
    """Class names for the prompts: a text file (one per line, line i = label i),
    ``imagenet`` (timm's ImageNet-1k names, first synonym), or by default the label
    indices. ``num_classes`` (the ID labels seen, when known) must then match."""
    if classes is None:
        if not num_classes:
            raise ParamsError(f"params.yaml: {where}.classes: no ID labels to name; give a file")
        return [str(c) for c in range(num_classes)]
    if classes == "imagenet":
        import timm.data

        info = timm.data.ImageNetInfo()
        names = [info.index_to_description(i).split(",")[0] for i in range(info.num_classes())]
    else:
        path = Path(classes)
        if not path.is_file():
            raise ParamsError(f"params.yaml: {where}.classes: file {path} not found")
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if num_classes is not None and len(names) < num_classes:
        raise ParamsError(
            f"params.yaml: {where}.classes: {len(names)} names but ID labels reach {num_classes - 1}"
        )
    return names
