"""OpenOOD ``benchmark_imglist`` files -> datalist entries.

OpenOOD's ``ImglistDataset`` splits each line at its first space: the image path, then
an "extra" that is either an integer label (``imagenet_1k/val/x.JPEG 65``) or a Python
dict literal (``imagenet_1k/val/x.JPEG {'label': 65}`` or ``{"label": 0}``) whose
``label`` key is the class. The extra is read here the way OpenOOD reads it
(``ast.literal_eval``, which evaluates literals only, never code); a dict without
``label`` gives -1 (unknown), which an OOD list writes anyway.

Paths are relative to OpenOOD's images folder (``images_largescale/``), so the caller
removes the dataset's folder prefix (``oodbench datalists import-openood``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from oodbench.core.errors import DataError
from oodbench.data.datalist import Entry, format_errors, normalise_path, parse_label, parse_lines

#: an extra longer than this is no label record: refuse it before parsing
MAX_EXTRA_CHARS = 10_000


def parse_imglist(path: Path) -> list[Entry]:
    """Every entry of an OpenOOD imglist, or one DataError naming each bad line (up to 20)."""
    if not path.is_file():
        raise DataError(f"{path}: OpenOOD imglist not found")
    entries, errors = parse_lines(path.read_bytes(), parse_imglist_line)
    if errors:
        raise DataError(format_errors(path, errors, "bad line", "fix them and rerun"))
    if not entries:
        raise DataError(f"{path}: no entries; an OpenOOD imglist has `path label` per line")
    return entries


def parse_imglist_line(raw: bytes, number: int) -> Entry | None:
    """One imglist line -> Entry (None for a blank line); ValueError says what is wrong."""
    try:
        text = raw.decode("utf-8").rstrip("\r").strip()
    except UnicodeDecodeError as err:
        raise ValueError(f"not valid UTF-8 ({err.reason} at byte {err.start})") from err
    if number == 1:
        text = text.removeprefix("\ufeff")
    if not text or text.startswith("#"):
        return None
    rel, _, extra = text.partition(" ")
    return Entry(line=number, path=normalise_path(rel), label=extra_label(extra.strip()))


def extra_label(extra: str) -> int:
    """The label in an imglist extra: an integer, or the ``label`` of a dict literal."""
    if not extra:
        return -1  # a bare path: unknown, as in a datalist
    if not extra.startswith("{"):
        return _checked_label(extra, extra)
    if len(extra) > MAX_EXTRA_CHARS:
        raise ValueError(f"extra of {len(extra)} characters is not a label record")
    try:
        record = ast.literal_eval(extra)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
        raise ValueError(
            f"extra {extra[:60]!r} is neither an integer label nor a dict literal "
            f"({type(err).__name__})"
        ) from err
    if not isinstance(record, dict):
        raise ValueError(f"extra {extra[:60]!r} is not a dict")
    if "label" not in record:
        return -1
    value = record["label"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"'label' in {extra[:60]!r} is {value!r}, not an integer")
    return _checked_label(str(value), extra)


def _checked_label(token: str, extra: str) -> int:
    try:
        label = parse_label(token)
    except ValueError as err:
        if token.lstrip("+-").isdigit():
            raise
        raise ValueError(
            f"extra {extra[:60]!r} is neither an integer label nor a dict literal"
        ) from err
    if label < -1:
        raise ValueError(f"label {label} < -1; use 0..C-1 for classes and -1 for unknown/OOD")
    return label
