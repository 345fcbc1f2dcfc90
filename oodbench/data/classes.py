"""Class names and class orders: classes files, ImageNet wnid orders, label maps.

A datalist keeps its source's class order (the ViM ImageNet val list uses the devkit
order, a timm head the sorted-wnid order); ``datalists/<ds>.classes.txt`` names its
labels, and ``label_map`` maps one order onto another by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from oodbench.core.errors import DataError

if TYPE_CHECKING:  # numpy loads only where label_map runs, keeping `oodbench --help` fast
    import numpy as np


def label_map(list_classes: list[str], head_classes: list[str]) -> np.ndarray:
    """``m[list_label] = head_index`` (-1 where the head lacks the class), int64.

    A datalist keeps its source's class order (the ViM ImageNet val list uses the
    devkit order, a timm head the sorted-wnid order), so accuracy must compare
    ``argmax(logits) == m[label]``, never the raw label.
    """
    import numpy as np

    for name, classes in (("list", list_classes), ("head", head_classes)):
        seen: set[str] = set()
        for index, c in enumerate(classes):
            if c in seen:
                raise DataError(f"label_map: {name} class {c!r} repeated (index {index})")
            seen.add(c)
    position = {c: i for i, c in enumerate(head_classes)}
    return np.array([position.get(c, -1) for c in list_classes], dtype=np.int64)


def classes_file_of(datalist: Path) -> Path:
    """``datalists/<ds>.txt`` -> ``datalists/<ds>.classes.txt``, its optional class names."""
    return datalist.with_name(f"{datalist.stem}.classes.txt")


def read_classes(path: Path) -> list[str]:
    """A ``<name>.classes.txt``: one class name per line, line i = label i."""
    if not path.is_file():
        raise DataError(f"{path}: classes file not found")
    names = path.read_text(encoding="utf-8").splitlines()
    for number, name in enumerate(names, start=1):
        if not name.strip():
            raise DataError(f"{path}: line {number}: empty class name")
    return names


def imagenet_sorted_wnids() -> list[str]:
    """The 1,000 ImageNet-1k wnids in sorted order: timm's own file, shipped in its wheel."""
    import timm.data

    path = Path(timm.data.__file__).parent / "_info" / "imagenet_synsets.txt"
    wnids = path.read_text(encoding="utf-8").split()
    if len(wnids) != 1000 or wnids != sorted(wnids):
        raise DataError(f"{path}: expected 1000 sorted wnids, got {len(wnids)}")
    return wnids


def imagenet_devkit_wnids(path: Path) -> list[str]:
    """The wnids in devkit order (index = ILSVRC2012_ID - 1), from the user's devkit.

    timm does not ship this order, so it is read from ``ILSVRC2012_devkit_t12/data/
    meta.mat`` (the file torchvision's ImageNet needs too) or from a text file with
    ``wnid ILSVRC2012_ID ...`` per line (the CLS-LOC devkit's ``map_clsloc.txt``).
    """
    if not path.is_file():
        raise DataError(f"{path}: devkit file not found (meta.mat or map_clsloc.txt)")
    pairs = _devkit_pairs_mat(path) if path.suffix == ".mat" else _devkit_pairs_txt(path)
    by_id = dict(pairs)
    if sorted(by_id) != list(range(1, 1001)) or len(set(by_id.values())) != 1000:
        raise DataError(f"{path}: expected ILSVRC2012_ID 1..1000 with distinct wnids")
    wnids = [by_id[i] for i in range(1, 1001)]
    if set(wnids) != set(imagenet_sorted_wnids()):
        raise DataError(f"{path}: its wnids are not the ImageNet-1k classes")
    return wnids


def _devkit_pairs_mat(path: Path) -> list[tuple[int, str]]:
    import scipy.io

    try:
        synsets = scipy.io.loadmat(str(path), squeeze_me=True)["synsets"]
    except (ValueError, KeyError, OSError) as err:
        raise DataError(f"{path}: not a devkit meta.mat with a 'synsets' table ({err})") from err
    return [
        (int(s["ILSVRC2012_ID"]), str(s["WNID"]))
        for s in synsets
        if int(s["num_children"]) == 0  # leaf synsets are the 1,000 classes
    ]


def _devkit_pairs_txt(path: Path) -> list[tuple[int, str]]:
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[1].isdigit():
            raise DataError(f"{path}: line {number}: expected `wnid ILSVRC2012_ID [name]`")
        pairs.append((int(parts[1]), parts[0]))
    return pairs


IMAGENET_CLASSES = 1000


def check_imagenet_labels(datalist: Path, labels: list[int], subset: bool) -> None:
    """Refuse to name a list's labels with the 1,000 ImageNet-1k wnids unless they are
    ImageNet-1k label numbers: every label in 0..999, and either all 1,000 classes present
    or ``subset`` (``--imagenet-subset``: a subset that kept ImageNet's numbering).

    Why: a classes file says "label i is wnid i"; written for a 3-class list of one's own
    it silently renames class 0 to "tench", and accuracy is then measured against the
    wrong classes."""
    known = sorted({label for label in labels if label >= 0})
    if not known:
        raise DataError(
            f"{datalist}: every label is -1 (an OOD list); it has no classes to name, "
            "so it needs no classes file"
        )
    if known[-1] >= IMAGENET_CLASSES:
        raise DataError(
            f"{datalist}: label {known[-1]} is beyond ImageNet-1k's 0..999, so the list is not "
            "numbered by ImageNet classes; write its classes file by hand (line i = name of "
            "label i) or with `oodbench datalists from-folder`"
        )
    if len(known) < IMAGENET_CLASSES and not subset:
        raise DataError(
            f"{datalist}: its labels name {len(known)} classes ({known[0]}..{known[-1]}), not "
            f"the {IMAGENET_CLASSES} of ImageNet-1k, so these wnids would rename them (label "
            f"{known[0]} would become ImageNet class {known[0]}); for a subset that kept "
            "ImageNet's label numbers pass --imagenet-subset, otherwise write the classes file "
            "by hand (line i = name of label i) or with `oodbench datalists from-folder`"
        )
