"""Download a registry file with a sha256 check; extract archives without escaping.

Only ``oodbench datalists fetch`` uses the network, and only on request: the
benchmark itself never needs it. A download goes to a temporary file next to its
destination and is hashed while it streams; it is kept only when the hash matches,
so a wrong or truncated file never reaches ``datalists/`` or ``data/``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from oodbench.core.errors import DataError
from oodbench.data.datalist import parse_datalist
from oodbench.formats.atomic import atomic_dir, atomic_path

CHUNK = 1 << 20
TIMEOUT_S = 60
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_sha256(value: str) -> str:
    """A lower-case 64-hex sha256, or an error before anything is downloaded."""
    value = value.strip().lower()
    if not _SHA256.fullmatch(value):
        raise DataError(f"--sha256 {value!r}: expected 64 hexadecimal characters")
    return value


def download(url: str, dest: Path) -> tuple[str, str]:
    """Stream `url` into `dest`; return (sha256, md5) of the bytes written.

    HTTP and connection errors become DataError naming the URL; an HTML page where a
    file was expected (Google Drive's confirmation page) is reported as such.
    """
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "oodbench"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(dest, "wb") as f:
            ctype = response.headers.get("Content-Type", "") if response.headers else ""
            if ctype.startswith("text/html"):
                raise DataError(
                    f"{url}: got an HTML page, not the file (a login or confirmation page?); "
                    "download it in a browser and pass --url file:///path/to/it"
                )
            while chunk := response.read(CHUNK):
                sha.update(chunk)
                md5.update(chunk)
                f.write(chunk)
    except urllib.error.HTTPError as err:
        raise DataError(
            f"{url}: HTTP {err.code} {err.reason}; check the URL or pass --url"
        ) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(
            f"{url}: download failed ({reason}); check the network or pass --url"
        ) from err
    return sha.hexdigest(), md5.hexdigest()


def verify(key: str, url: str, got: tuple[str, str], expected: str | None, md5: str | None) -> None:
    """Raise unless the sha256 matches; without a known sha256, print it and refuse."""
    sha, got_md5 = got
    if expected is None:
        md5_note = ""
        if md5 is not None:
            verdict = "matches" if got_md5 == md5 else "does NOT match"
            md5_note = f"; it {verdict} the md5 published by the source ({md5})"
        raise DataError(
            f"{key}: no verified sha256 is recorded for {url}; the download has sha256 "
            f"{sha}{md5_note}. Check it against the source, then rerun with --sha256 {sha} "
            "(the file was not kept)"
        )
    if sha != expected:
        raise DataError(
            f"{key}: sha256 mismatch for {url}: expected {expected}, got {sha} "
            "(the file was not kept)"
        )


def fetch_list(key: str, url: str, expected: str | None, md5: str | None, dest: Path) -> int:
    """Download a datalist into `dest` atomically; return its number of entries."""
    with atomic_path(dest) as tmp:
        got = download(url, tmp)
        verify(key, url, got, expected, md5)
        count = len(parse_datalist(tmp))
    return count


def fetch_archive(key: str, url: str, expected: str | None, md5: str | None, root: Path) -> int:
    """Download an archive and extract it as `root` (which must not exist yet)."""
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root}: already exists and is not empty; move it away to re-extract")
    root.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{root.name}.", suffix=".download", dir=root.parent)
    os.close(fd)
    archive = Path(name)
    try:
        got = download(url, archive)
        verify(key, url, got, expected, md5)
        with atomic_dir(root) as tmp:
            count = extract(archive, tmp)
    finally:
        archive.unlink(missing_ok=True)
    return count


def extract(archive: Path, dest: Path) -> int:
    """Extract a tar (any compression) or zip into `dest`; return the number of files.

    Every member is checked first: no absolute paths, no ``..``, no links, devices or
    fifos, so a hostile archive cannot write outside `dest`. A single top-level folder
    (``dtd/``, ``iNaturalist/``) is dropped, so the dataset root holds what the
    published lists expect (``images/...``) whatever the archive was called.
    """
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                _safe_member(archive, m.name)
                if not (m.isfile() or m.isdir()):
                    raise DataError(f"{archive}: member {m.name!r} is a link or device; refused")
            top = _single_top([m.name for m in members])
            for m in members:
                _extract_tar_member(tar, m, _target(dest, m.name, top))
            return sum(m.isfile() for m in members)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _safe_member(archive, info.filename)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DataError(f"{archive}: member {info.filename!r} is a symlink; refused")
            top = _single_top([i.filename for i in infos])
            for info in infos:
                target = _target(dest, info.filename, top)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
            return sum(not i.is_dir() for i in infos)
    raise DataError(f"{archive}: not a tar or zip archive")


def _single_top(names: list[str]) -> str:
    """The one folder every member lies in (and none lies beside), else ''."""
    parts = [PurePosixPath(n).parts for n in names if PurePosixPath(n).parts]
    firsts = {p[0] for p in parts}
    if len(firsts) == 1 and any(len(p) > 1 for p in parts):
        return firsts.pop()
    return ""


def _target(dest: Path, name: str, top: str) -> Path:
    parts = PurePosixPath(name).parts
    if top and parts and parts[0] == top:
        parts = parts[1:]
    return dest.joinpath(*parts) if parts else dest


def _extract_tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    if src is None:
        raise DataError(f"member {member.name!r} has no data")
    with src, open(target, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


def _safe_member(archive: Path, name: str) -> None:
    """Refuse names that are absolute, contain ``..`` or backslashes, or NUL."""
    pure = PurePosixPath(name)
    if (
        not name
        or name.startswith(("/", "\\"))
        or re.match(r"[A-Za-z]:", name)
        or "\\" in name
        or "\x00" in name
        or ".." in pure.parts
    ):
        raise DataError(f"{archive}: member {name!r} would extract outside the root; refused")
