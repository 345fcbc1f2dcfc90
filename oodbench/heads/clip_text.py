"""The CLIP text head stored in the fc file: the image projection and class text embeddings.

For CLIP backbones the fc file keeps two extra tensors (``Linear.extras``):
``clip_projection`` P [D, E] and ``clip_text`` T [C, E], the normalised prompt-ensemble
text embeddings of the ID class names (oodbench/models/clip.py). MCM and PLP's
pseudo-labels are cosines between normalize(x P) and the rows of T. Numpy only: the
score stage imports it and must start without torch.
"""

from __future__ import annotations

import numpy as np

from oodbench.core.errors import DataError
from oodbench.formats.classifier import Linear

CLIP_PROJECTION, CLIP_TEXT = "clip_projection", "clip_text"


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
