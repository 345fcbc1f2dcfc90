"""Datalists: the plain-text file lists that define every dataset.

DVC tracks the datalist, not the image bytes, so the datalist is the dataset's
identity: it must be strict enough that two different readings of it are impossible.

Format (UTF-8, one entry per line, LF or CRLF):

    # comment                       skipped, as are blank lines
    n01440764/ILSVRC2012_val_01.JPEG 0
    ood/some image.jpg -1           label -1 = unknown / OOD
    ood/other.png                   a bare path means label -1

The label is the LAST whitespace-separated token and must be an integer >= -1; the
path is everything before it (leading and trailing whitespace stripped). A path that
contains whitespace therefore MUST be followed by a label (write ``-1`` when unknown):
``my photo.jpg`` alone is rejected as a non-integer label, never silently read as a
path with a space. Paths are relative to the dataset root, use ``/`` separators, may
not be absolute or contain ``..`` or backslashes, and must be unique (after dropping
``./`` components). With ``root`` given, a path that resolves (through symlinks)
outside the root is rejected too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oodbench.core.errors import DataError

_INT = re.compile(r"[+-]?[0-9]+")
MAX_LISTED_ERRORS = 20
#: labels are stored as int64 (manifest, feature index); a larger one is a typo
MAX_LABEL = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One datalist line: where it was (for error messages), what and which class."""

    line: int
    path: str  # relative posix path, normalised (no ``./``)
    label: int  # class index, or -1 for unknown / OOD


#: one line (its bytes, its 1-based number) -> its Entry, None when it lists nothing
LineParser = Callable[[bytes, int], Entry | None]


def parse_datalist(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> list[Entry]:
    """Read and validate a datalist; raise DataError naming every bad line (up to 20).

    All line errors are collected before raising so that a user fixes a list in one
    pass instead of one error per run.
    """
    path = Path(path)
    entries, errors = parse_lines(_read_bytes(path), parse_line)
    if root is not None and not errors:
        resolved_root = Path(root).resolve()
        errors.extend(
            f"line {e.line}: {e.path!r} resolves outside the root {root} (symlink?); "
            "copy the file under the root or point the root higher"
            for e in entries
            if escapes_root(resolved_root, e.path)
        )
    if errors:
        raise DataError(format_errors(path, errors, "bad line", "fix them and rerun"))
    if not entries:
        raise DataError(
            f"{path}: no entries (only blank or comment lines); list one `path label` per line"
        )
    return entries


def parse_lines(raw: bytes, parse: LineParser) -> tuple[list[Entry], list[str]]:
    """The entries of the lines of `raw` under `parse` (None: a line without an entry),
    and one error per bad line: `parse`'s ValueError, or a path listed twice. Errors are
    collected, not raised, so that a user fixes a list in one pass."""
    entries: list[Entry] = []
    errors: list[str] = []
    first_line: dict[str, int] = {}
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        try:
            entry = parse(line_bytes, number)
        except ValueError as err:
            errors.append(f"line {number}: {err}")
            continue
        if entry is None:
            continue
        if entry.path in first_line:
            first = first_line[entry.path]
            errors.append(
                f"line {number}: duplicate path {entry.path!r} (first on line {first}); remove one"
            )
            continue
        first_line[entry.path] = number
        entries.append(entry)
    return entries, errors


def parse_line(line_bytes: bytes, number: int = 0) -> Entry | None:
    """One line to an Entry, None for blank/comment lines; ValueError says what is wrong."""
    try:
        text = line_bytes.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"not valid UTF-8 ({err.reason} at byte {err.start}); re-save the list as UTF-8"
        ) from err
    if number == 1:
        text = text.removeprefix("\ufeff")
    text = text.rstrip("\r").strip()
    if not text or text.startswith("#"):
        return None
    parts = text.rsplit(maxsplit=1)
    if len(parts) == 1:
        rel, label = parts[0], -1
    else:
        rel, token = parts[0].rstrip(), parts[1]
        if not _INT.fullmatch(token):
            raise ValueError(
                f"non-integer label {token!r}; write `path label` with an integer label "
                "(-1 = unknown/OOD), and give a label to paths that contain spaces"
            )
        label = parse_label(token)
        if label < -1:
            raise ValueError(f"label {label} < -1; use 0..C-1 for classes and -1 for unknown/OOD")
    return Entry(line=number, path=normalise_path(rel), label=label)


def parse_label(token: str) -> int:
    """An integer label token within int64, or ValueError saying so (checked on the digits
    first: Python refuses to convert more than 4,300 of them, with a less useful message)."""
    digits = token.lstrip("+-").lstrip("0")
    if len(digits) > len(str(MAX_LABEL)) or int(token) > MAX_LABEL:
        shown = token if len(token) <= 30 else f"{token[:27]}..."
        raise ValueError(
            f"label {shown} is out of range (a class index 0..C-1, stored as a 64-bit integer); "
            "fix the label, or write -1 for unknown/OOD"
        )
    return int(token)


def normalise_path(rel: str) -> str:
    """A safe relative posix path, or ValueError: no absolute paths, ``..``, or backslashes."""
    if "\\" in rel:
        raise ValueError(f"path {rel!r} contains a backslash; use '/' as the separator")
    if "\x00" in rel:
        raise ValueError("path contains a NUL character")
    if rel.startswith("/") or re.match(r"[A-Za-z]:/", rel):
        raise ValueError(f"absolute path {rel!r}; list paths relative to the dataset root")
    parts = [p for p in PurePosixPath(rel).parts if p != "."]
    if ".." in parts:
        raise ValueError(f"path {rel!r} contains '..'; list paths inside the dataset root")
    if not parts:
        raise ValueError(f"path {rel!r} names the root itself, not a file")
    return "/".join(parts)


def escapes_root(resolved_root: Path, rel: str) -> bool:
    """True when root/rel, symlinks followed, lands outside the (already resolved) root."""
    target = (resolved_root / rel).resolve()
    return not target.is_relative_to(resolved_root)


def format_errors(path: Path, errors: list[str], what: str, todo: str) -> str:
    """One error: a single line; several: a summary line, then up to 20 indented items."""
    if len(errors) == 1:
        return f"{path}: {errors[0]}"
    shown = errors[:MAX_LISTED_ERRORS]
    more = len(errors) - len(shown)
    body = "\n".join(f"  {e}" for e in shown)
    tail = f"\n  ... and {more} more" if more else ""
    return f"{path}: {len(errors)} {what}s; {todo}\n{body}{tail}"


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(
            f"{path}: datalist not found; create it (`path label` per line) or run "
            "`oodbench materialize --demo` for the demo datasets"
        )
    if not path.is_file():
        raise DataError(f"{path}: not a file; a datalist is a text file with `path label` per line")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: empty datalist; list one `path label` per line")
    return raw
