"""MOS (Huang & Li, CVPR 2021): minimum "others" score of a group-softmax head.

The C classes are split into G groups; the head has one extra "others" logit per
group, placed at index 0 of the group's slice, so it outputs C + G logits laid out
group after group: [others_0, classes of group 0, others_1, classes of group 1, ...]
(oodbench/heads/groups.py). The score is -min_k softmax(z[slice_k])[0] (the
reference's ``cal_ood_score``: the max over groups of minus the "others" probability).

The head itself is trained by the fc stage (``fc: mos``, oodbench/heads/mos_head.py) on
frozen features; the MOS reference fine-tunes the backbone together with the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.classifier import Linear
from oodbench.heads.groups import GROUP_OF_CLASS, group_sizes_of, group_slices
from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.logits import by_blocks

#: The MOS ImageNet taxonomy: classes per group, the "others" logit excluded.
IMAGENET_GROUP_SIZES = [398, 521, 9, 7, 52, 8, 3, 2]


def mos_score(logits: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """-min over groups of the group-softmax probability of "others", vectorised and
    streamed over row blocks (float64 temporaries of a few MB, not of the whole set)."""
    starts = group_slices(sizes)[:, 0]
    width = np.asarray(sizes) + 1

    def block(z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, np.float64)
        peak = np.maximum.reduceat(z, starts, axis=1)
        e = np.subtract(z, np.repeat(peak, width, axis=1))
        total = np.add.reduceat(np.exp(e, out=e), starts, axis=1)
        others = np.exp(z[:, starts] - peak) / total
        return -others.min(axis=1)

    return by_blocks(block, logits)


@register("mos")
@dataclass
class MOS(Detector):
    """MOS score of a group-softmax head (the ``fc: mos`` classifier).

    ``group_sizes`` lists the classes per group, excluding the "others" logit. Unset
    (null), it is read from the group head the fc stage trained (its class -> group
    table), else the MOS ImageNet taxonomy (8 groups, 1000 classes). The logits must
    be the group head's: C + G columns.
    """

    paper: ClassVar[str] = "Huang & Li, CVPR 2021"
    reference: ClassVar[str] = "https://github.com/deeplearning-wisc/large_scale_ood"

    group_sizes: list[int] | None = None

    def validate(self) -> None:
        if self.group_sizes is None:
            return
        if not self.group_sizes:
            raise ParamsError(f"{self.params_key}.group_sizes: needs at least one group")
        for i, size in enumerate(self.group_sizes):
            if size < 1:
                raise ParamsError(
                    f"{self.params_key}.group_sizes[{i}]: a group needs >= 1 class, got {size}"
                )

    def unsupported(self, fc: Linear) -> str | None:
        """A group head is needed: the fc stage's (``fc: mos``), one whose layout
        ``group_sizes`` gives, or a head with the ImageNet taxonomy's C + G outputs."""
        imagenet = sum(IMAGENET_GROUP_SIZES) + len(IMAGENET_GROUP_SIZES)
        if GROUP_OF_CLASS in fc.extras or self.group_sizes or fc.num_classes == imagenet:
            return None
        return (
            f"{self.params_key} needs a MOS group head (backbones.<bb>.fc: mos with a groups "
            f"file, or methods.<key>.group_sizes for a head trained with groups); this "
            f"classifier has {fc.num_classes} plain outputs"
        )

    def _fit(self, data: FitData) -> None:
        if self.group_sizes is not None:
            self.sizes_ = list(self.group_sizes)
        elif GROUP_OF_CLASS in data.fc.extras:
            self.sizes_ = group_sizes_of(data.fc.extras[GROUP_OF_CLASS])
        else:
            self.sizes_ = list(IMAGENET_GROUP_SIZES)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        sizes = self.sizes_  # fit() always sets it (from group_sizes, the head or ImageNet's)
        expected = sum(sizes) + len(sizes)
        if logits.shape[1] != expected:
            raise DataError(
                f"{self.params_key}: the logits have {logits.shape[1]} columns but "
                f"group_sizes {sizes} needs {expected} (classes + one 'others' "
                "per group); score MOS with the group head (backbones.<bb>.fc: mos) "
                "and matching group_sizes"
            )
        return mos_score(logits, sizes)
