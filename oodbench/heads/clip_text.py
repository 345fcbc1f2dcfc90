"""The CLIP text head stored in the fc file: the image projection and class text embeddings.

For CLIP backbones the fc file keeps two extra tensors (``Linear.extras``):
``clip_projection`` P [D, E] and ``clip_text`` T [C, E], the normalised prompt-ensemble
text embeddings of the ID class names. MCM and PLP's pseudo-labels are cosines between
normalize(x P) and the rows of T. The prompt set lives here, with the fc stage that
uses it, not in the image tower (oodbench/models/clip.py, which only encodes texts):
editing it reruns fc and score, not extraction. Numpy only: the score stage imports it
and must start without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from oodbench.core.errors import DataError
from oodbench.formats.classifier import Linear

CLIP_PROJECTION, CLIP_TEXT = "clip_projection", "clip_text"
#: MCM's prompt ensemble (scores.md), also PLP's pseudo-label prompts
PROMPTS = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of many {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
)


class TextEncoder(Protocol):
    """What the ensemble needs of a CLIP model (oodbench.models.clip.ClipImageTower)."""

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Projected text embeddings [len(texts), E], float32."""
        ...


def prompt_ensemble(
    encoder: TextEncoder,
    class_names: Sequence[str],
    prompts: Sequence[str] = PROMPTS,
    chunk: int = 64,
) -> np.ndarray:
    """t_c [C, E]: per class, the normalised mean of its normalised prompt embeddings
    (`chunk` classes per call to the text tower, to bound its memory)."""
    out = []
    for start in range(0, len(class_names), chunk):
        names = class_names[start : start + chunk]
        emb = encoder.encode_text([p.format(c) for c in names for p in prompts])
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        mean = emb.reshape(len(names), len(prompts), -1).mean(axis=1)
        out.append(mean / np.linalg.norm(mean, axis=1, keepdims=True))
    return np.concatenate(out).astype(np.float32)


def zero_shot_logits(
    features: np.ndarray, projection: np.ndarray, text: np.ndarray, scale: float = 1.0
) -> np.ndarray:
    """scale * cos(normalize(x P), t_c): MCM uses scale 1, PLP's pseudo-labels CLIP's 100."""
    z = np.asarray(features, np.float32) @ np.asarray(projection, np.float32)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return scale * (z @ np.asarray(text, np.float32).T)


def clip_tensors(fc: Linear, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(P, T) from the fc file, or an error saying which backbone kind provides them."""
    if CLIP_PROJECTION not in fc.extras or CLIP_TEXT not in fc.extras:
        raise DataError(
            f"{where} needs the CLIP projection and text embeddings, which the fc "
            "stage stores for CLIP backbones only (backbones.<bb>: {preset: clip_b16} or clip:)"
        )
    return fc.extras[CLIP_PROJECTION], fc.extras[CLIP_TEXT]
