"""The layout of a MOS group-softmax head, and the class -> group file that defines it.

The C classes are split into G groups; the head has one extra "others" logit per
group, placed at index 0 of the group's slice, so it outputs C + G logits laid out
group after group: [others_0, classes of group 0, others_1, classes of group 1, ...]
(the MOS reference's ``get_group_slices``). Within a group, classes are in increasing
class index. The fc file of a group head keeps ``group_of_class`` [C] as an extra tensor.
Numpy only (training is oodbench/heads/mos_head.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from oodbench.core.errors import DataError

#: the fc file's extra tensor holding the group id of every class
GROUP_OF_CLASS = "group_of_class"


def group_slices(sizes: Sequence[int]) -> np.ndarray:
    """[G, 2] (start, end) column ranges of each group's slice, "others" first."""
    ends = np.cumsum(np.asarray(sizes, np.int64) + 1)
    return np.stack([ends - np.asarray(sizes) - 1, ends], axis=1)


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


def group_layout(group_of_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(column of each class [C], start column of each group [G]) in the head's logits."""
    sizes = group_sizes_of(group_of_class)
    return class_columns(group_of_class), group_slices(sizes)[:, 0]


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
