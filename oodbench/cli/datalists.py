"""``oodbench datalists ...``: build the datalists of the real benchmarks.

Sub-commands: ``list`` (the registry), ``params`` (a params.yaml snippet), ``fetch``
(a published list or archive, sha256-checked), ``import-openood`` (an OpenOOD
benchmark_imglist file), ``from-folder`` (a folder-style dataset) and ``classes``
(an ImageNet class-order file). Every output is written atomically, so a bad input
leaves nothing behind under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Annotated

import typer

from oodbench.core.errors import DataError, ParamsError
from oodbench.data import classes as C
from oodbench.data import registry as D
from oodbench.data.datalist import normalise_path, parse_datalist
from oodbench.formats.atomic import write_text

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
DATALISTS = Path("datalists")

app = typer.Typer(help="Build datalists for the real benchmarks (ImageNet, OOD sets).")


@app.command("list")
def list_() -> None:
    """Print the registry: key, group, root, label convention, sources."""
    for info in D.REGISTRY.values():
        kinds = ", ".join(r.kind for r in info.resources) or "none"
        typer.echo(
            f"{info.key:20} {info.group:5} {info.root:20} {info.labels:16} {kinds:14} {info.title}"
        )


@app.command()
def params(names: Annotated[list[str], typer.Argument(help="registry keys")]) -> None:
    """Print the `datasets:` entries for NAMES, to paste into params.yaml."""
    typer.echo(D.params_snippet(names), nl=False)


@app.command()
def fetch(
    name: Annotated[str, typer.Argument(help="registry key (see `datalists list`)")],
    sha256: Annotated[str | None, typer.Option(help="expected sha256 of the download")] = None,
    url: Annotated[str | None, typer.Option(help="download from here instead")] = None,
    kind: Annotated[str | None, typer.Option(help="list or archive, when it has both")] = None,
) -> None:
    """Download NAME's list (into datalists/) or archive (extracted into its root)."""
    from oodbench.data import fetch as F

    info = D.get(name)
    expected = F.check_sha256(sha256) if sha256 is not None else None
    resource = _pick_resource(info, kind)
    source = url or resource.url  # a mirror serves the same bytes: the hashes still apply
    md5 = resource.md5
    expected = expected or resource.sha256
    if resource.kind == "list":
        dest = DATALISTS / f"{info.key}.txt"
        count = F.fetch_list(info.key, source, expected, md5, dest)
        typer.echo(f"{dest}: {count} entries (sha256 checked)")
    else:
        count = F.fetch_archive(info.key, source, expected, md5, Path(info.root))
        typer.echo(f"{info.root}: {count} files extracted (sha256 checked)")
        if info.hint:
            typer.echo(f"next: {info.hint}")


def _pick_resource(info: D.DatasetInfo, kind: str | None) -> D.Resource:
    if kind is not None and kind not in D.KINDS:
        raise ParamsError(f"--kind {kind!r}: expected one of {', '.join(D.KINDS)}")
    choices = [r for r in info.resources if kind is None or r.kind == kind]
    if not choices:
        raise DataError(
            f"{info.key}: no published {kind or 'file'} to fetch; {info.hint or 'see docs'}"
        )
    return choices[0]


@app.command("import-openood")
def import_openood(
    file: Annotated[Path, typer.Argument(help="an OpenOOD benchmark_imglist .txt file")],
    name: Annotated[str, typer.Option(help="write datalists/NAME.txt")],
    strip: Annotated[
        str | None, typer.Option(help="path prefix to remove (default: the common first folder)")
    ] = None,
    ood: Annotated[bool, typer.Option(help="write label -1 for every entry")] = False,
) -> None:
    """Convert an OpenOOD imglist (paths under OpenOOD's images root) into a datalist."""
    dest = _datalist_dest(name)
    entries = parse_datalist(file)
    prefix = _common_prefix(file, [e.path for e in entries]) if strip is None else strip
    prefix = prefix.strip("/")
    lines = []
    for e in entries:
        rel = e.path
        if prefix:
            if not rel.startswith(prefix + "/"):
                raise DataError(
                    f"{file}: line {e.line}: path {rel!r} does not start with {prefix!r}/"
                )
            rel = rel[len(prefix) + 1 :]
        lines.append(f"{rel} {-1 if ood else e.label}")
    write_text(dest, "\n".join(lines) + "\n")
    typer.echo(f"{dest}: {len(lines)} entries (prefix {prefix!r} removed)")


def _common_prefix(file: Path, paths: list[str]) -> str:
    """The first folder shared by every path (OpenOOD's dataset folder), else ''."""
    firsts = {PurePosixPath(p).parts[0] for p in paths if len(PurePosixPath(p).parts) > 1}
    if len(firsts) == 1 and all(len(PurePosixPath(p).parts) > 1 for p in paths):
        return firsts.pop()
    return ""


@app.command("from-folder")
def from_folder(
    root: Annotated[Path, typer.Argument(help="dataset root (paths are written relative to it)")],
    name: Annotated[str, typer.Option(help="write datalists/NAME.txt")],
    labels: Annotated[str, typer.Option(help="classes (subfolders) or none (-1)")] = "classes",
    under: Annotated[str, typer.Option(help="list only this sub-folder of ROOT")] = "",
    exclude: Annotated[
        list[str] | None, typer.Option(help="skip this top-level folder (repeatable)")
    ] = None,
) -> None:
    """List every image under ROOT[/UNDER], sorted; labels from class folders or -1."""
    if labels not in ("classes", "none"):
        raise ParamsError(f"--labels {labels!r}: expected classes or none")
    dest = _datalist_dest(name)
    try:
        top = root / normalise_path(under) if under else root
    except ValueError as err:
        raise ParamsError(f"--under: {err}") from err
    if not top.is_dir():
        raise DataError(f"{top}: not a folder")
    skip = set(exclude or ())
    if missing := skip - {p.name for p in top.iterdir() if p.is_dir()}:
        raise DataError(f"{top}: --exclude {', '.join(sorted(missing))}: no such folder")
    files = [p for p in _images(top) if p.relative_to(top).parts[0] not in skip]
    if not files:
        raise DataError(f"{top}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    classes: list[str] = []
    if labels == "classes":
        classes = sorted({p.relative_to(top).parts[0] for p in files if p.parent != top})
        if stray := [p for p in files if p.parent == top]:
            raise DataError(f"{stray[0]}: image outside any class folder; use --labels none")
    index = {c: i for i, c in enumerate(classes)}
    lines = []
    for p in files:
        rel = _relative(root, p)
        lines.append(f"{rel} {index[p.relative_to(top).parts[0]] if classes else -1}")
    if classes:
        write_text(DATALISTS / f"{name}.classes.txt", "\n".join(classes) + "\n")
    write_text(dest, "\n".join(lines) + "\n")
    typer.echo(f"{dest}: {len(lines)} images, {len(classes) or 'no'} classes")


def _images(top: Path) -> list[Path]:
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


def _relative(root: Path, path: Path) -> str:
    rel = path.relative_to(root).as_posix()
    if "\n" in rel or "\r" in rel:
        raise DataError(f"{path}: file name contains a line break; rename it")
    try:
        return normalise_path(rel)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from err


def _datalist_dest(name: str) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ParamsError(f"--name {name!r}: expected a plain dataset key like 'texture'")
    return DATALISTS / f"{name}.txt"


@app.command()
def classes(
    name: Annotated[str, typer.Option(help="write datalists/NAME.classes.txt")],
    order: Annotated[str, typer.Option(help="sorted (timm/torchvision) or devkit")] = "sorted",
    devkit: Annotated[
        Path | None, typer.Option(help="meta.mat or map_clsloc.txt, for --order devkit")
    ] = None,
) -> None:
    """Write the ImageNet-1k class (wnid) order of a datalist's labels."""
    if order == "sorted":
        wnids = C.imagenet_sorted_wnids()
    elif order == "devkit":
        if devkit is None:
            raise ParamsError("--order devkit needs --devkit ILSVRC2012_devkit_t12/data/meta.mat")
        wnids = C.imagenet_devkit_wnids(devkit)
    else:
        raise ParamsError(f"--order {order!r}: expected sorted or devkit")
    dest = DATALISTS / f"{name}.classes.txt"
    write_text(dest, "\n".join(wnids) + "\n")
    typer.echo(f"{dest}: {len(wnids)} classes in {order} order")
