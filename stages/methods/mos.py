"""MOS (Huang & Li, CVPR 2021): minimum "others" score of a group-softmax head.

The C classes are split into G groups; the head has one extra "others" logit per
group, placed at index 0 of the group's slice, so it outputs C + G logits laid out
group after group: [others_0, classes of group 0, others_1, classes of group 1, ...]
(the reference's ``get_group_slices``). Within a group, classes are in increasing
class index. The score is -min_k softmax(z[slice_k])[0] (the reference's
``cal_ood_score``: the max over groups of minus the "others" probability).

This module also trains that head on frozen features (the MOS reference fine-tunes
the backbone too; here only the head is trained) and reads the class -> group file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from stages.errors import DataError, ParamsError
from stages.methods.base import Detector, FitData, register

#: The MOS ImageNet taxonomy: classes per group, the "others" logit excluded.
IMAGENET_GROUP_SIZES = [398, 521, 9, 7, 52, 8, 3, 2]


def group_slices(sizes: Sequence[int]) -> np.ndarray:
    """[G, 2] (start, end) column ranges of each group's slice, "others" first."""
    ends = np.cumsum(np.asarray(sizes, np.int64) + 1)
    return np.stack([ends - np.asarray(sizes) - 1, ends], axis=1)


def mos_score(logits: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """-min over groups of the group-softmax probability of "others", vectorised."""
    z = np.asarray(logits, np.float64)
    starts = group_slices(sizes)[:, 0]
    width = np.asarray(sizes) + 1
    peak = np.maximum.reduceat(z, starts, axis=1)
    total = np.add.reduceat(np.exp(z - np.repeat(peak, width, axis=1)), starts, axis=1)
    others = np.exp(z[:, starts] - peak) / total
    return -others.min(axis=1)


@register("mos")
@dataclass
class MOS(Detector):
    """MOS score of a group-softmax head (the ``fc: mos`` classifier).

    ``group_sizes`` lists the classes per group, excluding the "others" logit. Unset
    (null), it is read from the group head the fc stage trained (its class -> group
    table), else the MOS ImageNet taxonomy (8 groups, 1000 classes). The logits must
    be the group head's: C + G columns.
    """

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

    def fit(self, data: FitData) -> MOS:
        super().fit(data)
        from stages.heads import GROUP_OF_CLASS

        if self.group_sizes is not None:
            self.sizes_ = list(self.group_sizes)
        elif GROUP_OF_CLASS in data.fc.extras:
            self.sizes_ = group_sizes_of(data.fc.extras[GROUP_OF_CLASS])
        else:
            self.sizes_ = list(IMAGENET_GROUP_SIZES)
        return self

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
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


# ---- the group layout ------------------------------------------------------------------------


def group_sizes_of(group_of_class: np.ndarray) -> list[int]:
    """Classes per group from a class -> group array (groups must be 0..G-1, none empty)."""
    groups = np.asarray(group_of_class)
    if groups.ndim != 1 or groups.size == 0 or groups.min() < 0:
        raise DataError("group_of_class must be a non-empty 1-D array of group ids >= 0")
    sizes = np.bincount(groups)
    if np.any(sizes == 0):
        raise DataError(f"groups {np.flatnonzero(sizes == 0).tolist()} have no class")
    return sizes.tolist()


def class_columns(group_of_class: np.ndarray) -> np.ndarray:
    """Column of each class in the head's logits (its group's offset + 1 + rank in group)."""
    groups = np.asarray(group_of_class)
    sizes = np.asarray(group_sizes_of(groups))
    order = np.argsort(groups, kind="stable")  # classes by group, then by class index
    rank = np.empty(len(groups), np.int64)
    rank[order] = np.arange(len(groups)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return group_slices(sizes)[groups, 0] + 1 + rank


def group_targets(labels: np.ndarray, group_of_class: np.ndarray) -> np.ndarray:
    """[N, G] target index per group: the class's slot in its own group, 0 ("others") elsewhere."""
    groups = np.asarray(group_of_class)
    labels = np.asarray(labels, np.int64)
    starts = group_slices(group_sizes_of(groups))[:, 0]
    local = class_columns(groups) - starts[groups]  # 1-based slot within the group
    targets = np.zeros((len(labels), len(starts)), np.int64)
    targets[np.arange(len(labels)), groups[labels]] = local[labels]
    return targets


# ---- training the head on frozen features ----------------------------------------------------


def group_head_loss(
    weight: np.ndarray,
    bias: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    group_of_class: np.ndarray,
) -> float:
    """MOS training loss: sum over groups of the mean cross-entropy of the group softmax."""
    import torch

    z = torch.from_numpy(np.asarray(features, np.float32)) @ torch.from_numpy(
        np.asarray(weight, np.float32)
    ).T + torch.from_numpy(np.asarray(bias, np.float32))
    targets = torch.from_numpy(group_targets(labels, group_of_class))
    return float(_group_loss(z, targets, group_slices(group_sizes_of(group_of_class))))


def _group_loss(z, targets, slices: np.ndarray):
    import torch.nn.functional as F

    return sum(
        F.cross_entropy(z[:, int(a) : int(b)], targets[:, g]) for g, (a, b) in enumerate(slices)
    )


def train_group_head(
    features: np.ndarray,
    labels: np.ndarray,
    group_of_class: np.ndarray,
    *,
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Train the group-softmax head on frozen features; return W [C+G, D], b [C+G] (float32).

    Adam on the MOS loss (sum over groups of cross-entropy, the target being "others"
    in every group but the sample's own), zero-initialised weights, mini-batches in a
    seeded order: the same inputs and seed give the same head bit for bit (torch CPU,
    one process). Labels must be class indices 0..C-1.
    """
    import torch

    x = np.asarray(features, np.float32)
    labels = np.asarray(labels, np.int64)
    groups = np.asarray(group_of_class)
    if len(x) != len(labels) or len(x) == 0:
        raise DataError(f"{len(x)} feature rows but {len(labels)} labels; need equal, > 0")
    if labels.min() < 0 or labels.max() >= len(groups):
        raise DataError(f"labels must be class indices in 0..{len(groups) - 1}")
    slices = group_slices(group_sizes_of(groups))
    head = torch.nn.Linear(x.shape[1], int(slices[-1, 1]))
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    xt, targets = torch.from_numpy(x), torch.from_numpy(group_targets(labels, groups))
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=gen).split(batch_size):
            opt.zero_grad()
            _group_loss(head(xt[batch]), targets[batch], slices).backward()
            opt.step()
    return head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()


# ---- the class -> group file -------------------------------------------------------------------


def load_group_config(path: str | Path, class_names: Sequence[str]) -> np.ndarray:
    """Read a class -> group file; return the group id of every class (int64 [C]).

    YAML (``.yaml``/``.yml``): a mapping ``class: group`` or a list of groups, each a
    list of classes. Text (anything else): one ``class group`` pair per line (the last
    token is the group, so class names may contain spaces), or one bare group id per
    line for classes 0, 1, ... in order. Classes are names from ``class_names`` or
    integer indices; ``#`` starts a comment. Every class must get exactly one group
    and the groups must be 0..G-1 with none empty.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: group config file not found")
    text = path.read_text(encoding="utf-8")
    is_yaml = path.suffix in (".yaml", ".yml")
    pairs = _yaml_pairs(path, text) if is_yaml else _text_pairs(path, text)
    return _assign(path, pairs, list(class_names))


def _yaml_pairs(path: Path, text: str) -> list[tuple[str, object, object]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DataError(f"{path}: invalid YAML ({err})") from err
    if isinstance(data, dict):
        return [(f"key {k!r}", k, g) for k, g in data.items()]
    if isinstance(data, list) and all(isinstance(g, list) for g in data):
        return [(f"group {g}", c, g) for g, members in enumerate(data) for c in members]
    raise DataError(f"{path}: expected a mapping class: group or a list of class lists")


def _text_pairs(path: Path, text: str) -> list[tuple[str, object, object]]:
    pairs, bare = [], 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) == 1:
            pairs.append((f"line {number}", bare, parts[0]))
            bare += 1
        else:
            pairs.append((f"line {number}", parts[0], parts[1]))
    if 0 < bare < len(pairs):
        raise DataError(f"{path}: mixes bare group ids with 'class group' lines")
    return pairs


def _assign(path: Path, pairs: list[tuple[str, object, object]], names: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    groups = np.full(len(names), -1, np.int64)
    for where, cls, group in pairs:
        if isinstance(cls, str) and cls in index:
            c = index[cls]
        elif isinstance(cls, int) or (isinstance(cls, str) and cls.lstrip("-").isdigit()):
            c = int(cls)
            if not 0 <= c < len(names):
                raise DataError(f"{path}: {where}: class index {c} outside 0..{len(names) - 1}")
        else:
            raise DataError(f"{path}: {where}: unknown class {cls!r}")
        try:
            g = int(str(group)) if not isinstance(group, bool) else None
        except ValueError:
            g = None
        if g is None or g < 0:
            raise DataError(f"{path}: {where}: group must be an integer >= 0, got {group!r}")
        if groups[c] >= 0:
            raise DataError(f"{path}: {where}: class {names[c]!r} is assigned twice")
        groups[c] = g
    missing = np.flatnonzero(groups < 0)
    if missing.size:
        shown = ", ".join(repr(names[i]) for i in missing[:5])
        raise DataError(f"{path}: {missing.size} classes have no group (e.g. {shown})")
    empty = np.flatnonzero(np.bincount(groups) == 0)
    if empty.size:
        raise DataError(f"{path}: groups must be numbered 0..G-1; {empty.tolist()} are empty")
    return groups
