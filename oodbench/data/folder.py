"""Folder-style datasets -> datalist text (``oodbench datalists from-folder``).

Every image file under ``root/under`` (hidden entries skipped), sorted by path, with
paths relative to ``root``; labels are the top-level folders in sorted order, or -1 for
an OOD set. The list starts with a ``# root: <root>`` comment (a datalist comment, so
readers skip it) that ``oodbench datalists params`` reads back to fill in
``datasets.<ds>.root``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from oodbench.core.errors import DataError, ParamsError
from oodbench.data.datalist import normalise_path

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
LABEL_MODES = ("classes", "none")
ROOT_COMMENT = "# root: "


@dataclass(frozen=True)
class FolderList:
    """A folder's datalist text and its class names (empty for an OOD set)."""

    text: str
    images: int
    classes: list[str]


def list_folder(
    root: Path, labels: str, under: str = "", exclude: list[str] | None = None
) -> FolderList:
    """The datalist of the images under ``root/under``; errors name the folder or file."""
    if labels not in LABEL_MODES:
        raise ParamsError(f"--labels {labels!r}: expected classes or none")
    try:
        top = root / normalise_path(under) if under else root
    except ValueError as err:
        raise ParamsError(f"--under: {err}") from err
    if not top.is_dir():
        raise DataError(f"{top}: not a folder")
    skip = set(exclude or ())
    if missing := skip - {p.name for p in top.iterdir() if p.is_dir()}:
        raise DataError(f"{top}: --exclude {', '.join(sorted(missing))}: no such folder")
    files = [p for p in image_files(top) if p.relative_to(top).parts[0] not in skip]
    if not files:
        raise DataError(f"{top}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    classes: list[str] = []
    if labels == "classes":
        if stray := [p for p in files if p.parent == top]:
            raise DataError(f"{stray[0]}: image outside any class folder; use --labels none")
        classes = sorted({p.relative_to(top).parts[0] for p in files})
    index = {c: i for i, c in enumerate(classes)}
    lines = [f"{ROOT_COMMENT}{root.as_posix()}"]
    for p in files:
        label = index[p.relative_to(top).parts[0]] if classes else -1
        lines.append(f"{relative_path(root, p)} {label}")
    return FolderList(text="\n".join(lines) + "\n", images=len(files), classes=classes)


def image_files(top: Path) -> list[Path]:
    """Image files under `top`, hidden entries and symlinked folders skipped, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            Path(dirpath) / f
            for f in filenames
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return sorted(found, key=lambda p: p.relative_to(top).as_posix())


def relative_path(root: Path, path: Path) -> str:
    """`path` relative to `root` as a datalist path, or an error naming the file."""
    rel = path.relative_to(root).as_posix()
    if "\n" in rel or "\r" in rel:
        raise DataError(f"{path}: file name contains a line break; rename it")
    if rel.startswith("#"):
        raise DataError(f"{path}: a path starting with '#' reads as a datalist comment; rename it")
    try:
        return normalise_path(rel)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from err


def recorded_root(datalist: Path) -> str | None:
    """The root a ``# root: ...`` comment at the top of `datalist` names, if any."""
    with open(datalist, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", errors="replace").strip().removeprefix("\ufeff")
            if not line.startswith("#"):
                return None
            if line.startswith(ROOT_COMMENT):
                return line[len(ROOT_COMMENT) :].strip() or None
    return None
