"""The materialize stage: datalist -> checked manifest (Parquet), one row per listed image.

Every file is checked here, once, so that extraction (hours on a GPU) never dies on
image 40,000 of a bad download: it must exist, stay under the dataset root (symlinks
followed) and decode fully with PIL. Bad files fail the stage with a list of them, or,
with ``skip_bad``, are recorded with a status so that extraction can skip them while
the row indices stay those of the datalist.

Manifest columns: ``index`` (int64, datalist order), ``path`` (relative posix),
``label`` (int64, -1 = unknown), ``size`` (bytes, -1 when unknown), ``status``
("ok" or a short reason). Key-value metadata: ``dataset`` and ``root``.

When the datalist comes with ``<ds>.classes.txt`` (line i = name of label i), its names
are checked against the labels and saved as ``<manifest>.classes.json`` (oodbench/formats/manifest.py),
the record later stages map labels to a classifier's class order with. It is a file of
its own rather than manifest metadata so that naming the classes does not change the
manifest and hence does not rerun feature extraction.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from oodbench.core.errors import DataError
from oodbench.data.classes import classes_file_of, read_classes
from oodbench.data.datalist import (
    MAX_LISTED_ERRORS,
    Entry,
    escapes_root,
    format_errors,
    parse_datalist,
)
from oodbench.data.images import MAX_PIXELS, too_large
from oodbench.formats import paths
from oodbench.formats.atomic import atomic_path
from oodbench.formats.class_names import ListClasses, classes_sidecar, save_list_classes
from oodbench.formats.manifest import OK, SCHEMA
from oodbench.formats.specs import dataset_spec, read_spec

ESCAPES = "outside root"
_CHUNK = 256  # images per thread-pool task: per-task overhead stays negligible at 1M images


def materialize_dataset(dataset: str) -> None:
    """Stage ``materialize-<ds>``: check ``datalists/<ds>.txt`` and write its manifest."""
    spec = read_spec(dataset_spec(dataset), f"datasets.{dataset}")
    classes = spec["classes_file"]
    run(
        dataset=dataset,
        datalist=paths.datalist_path(dataset),
        root=Path(spec["root"]),
        out=paths.manifest_path(dataset),
        skip_bad=spec["skip_bad"],
        classes_file=Path(classes) if classes else None,
        images=spec.get("images", True),
    )


def run(
    dataset: str,
    datalist: Path,
    root: Path,
    out: Path,
    skip_bad: bool,
    classes_file: Path | Literal["beside"] | None = "beside",
    images: bool = True,
) -> None:
    """Check every image of `datalist` under `root` and write the manifest `out` atomically.

    `images` False: every backbone of the benchmark imports its features (oodbench/data/
    imported.py), so no image is opened and the root need not exist; the manifest then
    lists the datalist's rows, each "ok" with size -1."""
    root, datalist, out = Path(root), Path(datalist), Path(out)
    if images and not root.is_dir():
        raise DataError(
            f"{root}: dataset root of {dataset!r} is not a directory; fix datasets.{dataset}.root "
            "in params.yaml or put the images there"
        )
    entries = parse_datalist(datalist)
    if classes_file == "beside":
        beside = classes_file_of(datalist)
        classes_file = beside if beside.is_file() else None
    classes = None if classes_file is None else list_classes(datalist, classes_file, entries)
    if images:
        sizes, statuses = check_images(root, [e.path for e in entries])
    else:
        sizes, statuses = [-1] * len(entries), [OK] * len(entries)
    _raise_on_escapes(datalist, root, entries, statuses)
    bad = [(e, s) for e, s in zip(entries, statuses, strict=True) if s != OK]
    if bad and not skip_bad:
        raise DataError(_bad_files_message(dataset, datalist, root, len(entries), bad))
    if len(bad) == len(entries):
        raise DataError(f"{datalist}: none of the {len(entries)} images under {root} is readable")
    table = pa.table(
        {
            "index": pa.array(range(len(entries)), pa.int64()),
            "path": pa.array([e.path for e in entries], pa.string()),
            "label": pa.array([e.label for e in entries], pa.int64()),
            "size": pa.array(sizes, pa.int64()),
            "status": pa.array(statuses, pa.string()),
        },
        schema=SCHEMA.with_metadata({"dataset": dataset, "root": _display_root(root)}),
    )
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    save_list_classes(classes_sidecar(out), dataset, classes)


def list_classes(datalist: Path, path: Path, entries: list[Entry]) -> ListClasses:
    """The names of the list's labels from its classes file; every label must name a
    line of it (a shorter file means the file belongs to another list)."""
    names = read_classes(path)
    beyond = [e for e in entries if e.label >= len(names)]
    if beyond:
        raise DataError(
            f"{datalist}: line {beyond[0].line}: label {beyond[0].label} has no name in {path} "
            f"({len(names)} classes, {len(beyond)} lines affected); rewrite the classes file "
            "for this list (`oodbench datalists classes` / `from-folder`) or delete it"
        )
    return ListClasses(names=names, source=path.as_posix())


def check_images(
    root: Path, paths: Sequence[str], workers: int | None = None
) -> tuple[list[int], list[str]]:
    """(size, status) per relative path, decoded in a thread pool (PIL releases the GIL)."""
    resolved_root = root.resolve()
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    workers = workers or min(32, (os.cpu_count() or 1) * 2)
    sizes: list[int] = []
    statuses: list[str] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for chunk_result in pool.map(
            lambda c: [check_image(root, resolved_root, p) for p in c], chunks
        ):
            for size, status in chunk_result:
                sizes.append(size)
                statuses.append(status)
    return sizes, statuses


def check_image(root: Path, resolved_root: Path, rel: str) -> tuple[int, str]:
    """(size in bytes, "ok" or a short reason) for one image; never raises for bad data."""
    path = root / rel
    try:
        if escapes_root(resolved_root, rel):
            return -1, ESCAPES
        if not path.exists():
            return -1, "missing" if not path.is_symlink() else "broken symlink"
        if not path.is_file():
            return -1, "not a file"
        size = path.stat().st_size
    except OSError as err:
        return -1, f"unreadable: {err.strerror or err}"
    if size == 0:
        return 0, "empty file"
    return size, decode_status(path)


def decode_status(path: Path) -> str:
    """Decode fully (header check, then every pixel); "ok" or why the image is unusable."""
    try:
        with Image.open(path) as img:
            if reason := too_large(img, MAX_PIXELS):
                return reason
            img.verify()
        with Image.open(path) as img:
            img.load()
    except UnidentifiedImageError:
        return "not an image"
    except Image.DecompressionBombError:
        return f"too large (> {MAX_PIXELS} pixels)"
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # PIL reports truncation as OSError, some corrupt PNG chunks as SyntaxError.
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"corrupt: {text[:80]}"
    return OK


def _raise_on_escapes(
    datalist: Path, root: Path, entries: list[Entry], statuses: list[str]
) -> None:
    """A path leaving the root is a list error, never skippable: it may expose other data."""
    items = [
        f"line {e.line}: {e.path!r} resolves outside the root {root} (symlink?); "
        "copy the file under the root or point the root higher"
        for e, s in zip(entries, statuses, strict=True)
        if s == ESCAPES
    ]
    if items:
        raise DataError(format_errors(datalist, items, "bad line", "fix them and rerun"))


def _bad_files_message(
    dataset: str, datalist: Path, root: Path, total: int, bad: list[tuple[Entry, str]]
) -> str:
    """A one-line summary, then up to 20 `line N: path: reason` items."""
    summary = (
        f"{datalist}: {len(bad)} of {total} images under {root} are unreadable; fix or remove "
        f"them, or set datasets.{dataset}.skip_bad: true to record and skip them"
    )
    items = [f"  line {e.line}: {e.path}: {s}" for e, s in bad[:MAX_LISTED_ERRORS]]
    if len(bad) > MAX_LISTED_ERRORS:
        items.append(f"  ... and {len(bad) - MAX_LISTED_ERRORS} more")
    return "\n".join([summary, *items])


def _display_root(root: Path) -> str:
    """The root as a portable string: relative to the working directory when under it."""
    if root.is_absolute():
        try:
            return root.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return root.as_posix()
    return root.as_posix()
