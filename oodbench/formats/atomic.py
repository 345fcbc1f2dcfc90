"""Atomic outputs: write to a temporary sibling, rename into place only on success.

A crash, Ctrl-C or error therefore never leaves a partial artifact under the final
name, and whatever was there before stays untouched until the new one is complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from oodbench.core.errors import DataError

#: errors that mean "the disk is full", reported as one line instead of a traceback
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: errors that mean "this folder cannot be written": permissions, a read-only mount,
#: a file where a folder should be
_UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST)


class DiskFullError(DataError, OSError):
    """A write ran out of space: a one-line CLI error, still an OSError to callers."""


class UnwritableError(DataError, OSError):
    """The output's folder cannot be written: a one-line CLI error, still an OSError."""


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path next to `dest`; rename it onto `dest` on success."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as err:
        _raise_if_unwritable(err, dest)
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, dest)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        _raise_if_full(err, dest)
        _raise_if_unwritable(err, dest)
        raise


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory next to `dest`; swap it in for `dest` on success."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    except OSError as err:
        _raise_if_unwritable(err, dest)
        raise
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        replace_dir(tmp, dest)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_full(err, dest)
        _raise_if_unwritable(err, dest)
        raise


def replace_dir(src: Path, dest: Path) -> None:
    """Move directory `src` onto `dest`, replacing an existing `dest` as late as possible."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def write_text_if_changed(dest: str | os.PathLike[str], text: str) -> None:
    """Write `text` unless `dest` holds exactly it already: the file then keeps its inode
    and mtime, by which DVC knows a file it has hashed (no hashing it again)."""
    path = Path(dest)
    if not (path.is_file() and path.read_bytes() == text.encode("utf-8")):
        write_text(path, text)


def _raise_if_full(err: BaseException, dest: Path) -> None:
    """Turn a disk-full OSError into a DataError naming the output (the old one is intact)."""
    if isinstance(err, OSError) and err.errno in _FULL:
        raise DiskFullError(
            f"{dest}: no space left on device while writing it ({err.strerror or err}); "
            "the previous version is untouched and no partial file remains: free space "
            "(or point the DVC cache elsewhere) and rerun"
        ) from err


def _raise_if_unwritable(err: BaseException, dest: Path) -> None:
    """Turn "cannot write here" into a DataError naming the output and the fix; only
    errors about `dest` or a folder above it (a file the caller reads is its own error)."""
    if not isinstance(err, OSError) or err.errno not in _UNWRITABLE:
        return
    where = Path(err.filename) if err.filename else dest.parent
    if where != dest and where not in dest.parents and where.parent != dest.parent:
        return
    raise UnwritableError(
        f"{dest}: cannot write it ({err.strerror or err}: {where}); the previous version "
        f"is untouched: make {dest.parent} writable (`chmod u+w {dest.parent}`, or mount "
        "it read-write) or run where you may write, then rerun"
    ) from err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
