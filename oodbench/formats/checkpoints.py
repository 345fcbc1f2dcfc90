"""Whether a weights file is whole, from its structure alone: no torch, no tensor read.

The check stage runs this on every local ``checkpoint:`` before any stage that loads
one, so a truncated or damaged file (an interrupted copy or download) stops
``dvc repro`` in a second with one line, before DVC has removed any output of the
stages that read it. Only the container is checked, in O(number of tensors):

- safetensors: the 8-byte header length, the JSON header, and the tensors' byte
  ranges, which must tile the data section up to the end of the file;
- zip archives (``torch.save`` since torch 1.6, TorchScript, ``.npz``): the central
  directory at the end of the file, and every member's data inside the file.

Other layouts (torch's legacy pickle format) are left to the loader, which names the
file when it fails. Bit flips inside tensor data are not looked for: that would mean
reading every byte of files of gigabytes on every run of the check stage.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

ZIP_MAGIC = b"PK\x03\x04"
#: bytes of a zip local file header before its variable-length name and extra fields
ZIP_LOCAL_HEADER = 30


def damage(path: Path) -> str | None:
    """Why the weights file at `path` is not whole, or None (whole, or not a layout
    checked here)."""
    size = path.stat().st_size
    if size == 0:
        return "an empty file"
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix == ".safetensors":
        return safetensors_damage(path, size)
    if head.startswith(ZIP_MAGIC) or path.suffix == ".npz":
        return zip_damage(path, size)
    return None


def safetensors_damage(path: Path, size: int) -> str | None:
    if size < 8:
        return f"{size} bytes, shorter than the 8-byte header length"
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if 8 + length > size:
            return f"the header claims {length} bytes but the file has {size - 8} after it"
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return f"unreadable JSON header ({err})"
    if not isinstance(header, dict):
        return "the header is not a JSON object"
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    data = size - 8 - length
    if max(ends, default=0) != data:
        return f"the tensors end at byte {max(ends, default=0)} of a data section of {data} bytes"
    return None


def zip_damage(path: Path, size: int) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        return f"not a readable zip archive ({err}): its end, the central directory, is missing"
    for member in members:
        end = member.header_offset + ZIP_LOCAL_HEADER + len(member.filename) + member.compress_size
        if end > size:
            return f"member {member.filename} ends at byte {end} of a {size}-byte file"
    return None
