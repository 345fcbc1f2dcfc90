"""``oodbench datalists ...``: build the datalists of the real benchmarks.

Sub-commands: ``list`` (the registry), ``params`` (a params.yaml snippet), ``fetch``
(a published list or archive, sha256-checked), ``import-openood`` (an OpenOOD
benchmark_imglist file), ``from-folder`` (a folder-style dataset) and ``classes``
(an ImageNet class-order file). Every output is written atomically, so a bad input
leaves nothing behind under the final name, and an existing list is replaced only with
``--force``. Help texts are rendered as rich markup: no square brackets in them.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated

import typer

from oodbench.core.errors import DataError, ParamsError
from oodbench.data import classes as C
from oodbench.data import registry as D
from oodbench.data.datalist import parse_datalist
from oodbench.data.folder import list_folder
from oodbench.data.openood import parse_imglist
from oodbench.data.snippet import params_snippet
from oodbench.formats.atomic import atomic_path, write_text

DATALISTS = Path("datalists")
FORCE_HELP = "replace an existing list (and its classes file)"

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
def params(
    names: Annotated[
        list[str], typer.Argument(help="registry keys, or NAME of any datalists/NAME.txt")
    ],
) -> None:
    """Print the `datasets:` entries for NAMES, to paste into params.yaml.

    A list outside the registry: root from its `# root:` line or data/NAME, else CHANGE-ME."""
    typer.echo(params_snippet(names, DATALISTS), nl=False)


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
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
) -> None:
    """Convert an OpenOOD imglist (paths under OpenOOD's images root) into a datalist.

    Lines are `path label` or `path {'label': 0}` (OpenOOD's dict extras; no label: -1)."""
    dest = _datalist_dest(name)
    _refuse_overwrite(dest, [], force)
    entries = parse_imglist(file)
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
    beside = C.classes_file_of(dest)
    if beside.is_file():
        typer.echo(f"note: {beside} was kept; materialize checks it against the new labels")


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
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
) -> None:
    """List every image under ROOT (or ROOT/UNDER), sorted; labels from class folders or -1.

    Writes datalists/NAME.classes.txt with class folders; removes a stale one without."""
    dest = _datalist_dest(name)
    classes_file = C.classes_file_of(dest)
    _refuse_overwrite(dest, [classes_file], force)
    listing = list_folder(root, labels, under, exclude)
    with atomic_path(dest) as tmp:  # the classes file changes first, the list last
        tmp.write_text(listing.text, encoding="utf-8")
        if listing.classes:
            write_text(classes_file, "\n".join(listing.classes) + "\n")
        else:
            classes_file.unlink(missing_ok=True)
    typer.echo(f"{dest}: {listing.images} images, {len(listing.classes) or 'no'} classes")


def _refuse_overwrite(dest: Path, companions: list[Path], force: bool) -> None:
    """An existing list (or a file written with it) is replaced only with --force."""
    existing = [p.as_posix() for p in (dest, *companions) if p.exists()]
    if existing and not force:
        raise DataError(
            f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "pass --force to replace it (or choose another --name)"
        )


def _datalist_dest(name: str) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ParamsError(f"--name {name!r}: expected a plain dataset key like 'texture'")
    return DATALISTS / f"{name}.txt"


@app.command()
def classes(
    name: Annotated[str, typer.Option(help="name the labels of datalists/NAME.txt")],
    order: Annotated[str, typer.Option(help="sorted (timm/torchvision) or devkit")] = "sorted",
    devkit: Annotated[
        Path | None, typer.Option(help="meta.mat or map_clsloc.txt, for --order devkit")
    ] = None,
    imagenet_subset: Annotated[
        bool,
        typer.Option(
            help="the list holds some ImageNet-1k classes with their ImageNet label numbers"
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="replace an existing classes file")] = False,
) -> None:
    """Write the ImageNet-1k class (wnid) order of an ImageNet-labelled datalist.

    Refused unless the list's labels are ImageNet-1k's (all 1000, or --imagenet-subset)."""
    if order not in ("sorted", "devkit"):
        raise ParamsError(f"--order {order!r}: expected sorted or devkit")
    if order == "devkit" and devkit is None:
        raise ParamsError("--order devkit needs --devkit ILSVRC2012_devkit_t12/data/meta.mat")
    datalist = _datalist_dest(name)
    dest = C.classes_file_of(datalist)
    _refuse_overwrite(dest, [], force)
    if not datalist.is_file():
        raise DataError(
            f"{datalist}: not found; the classes file names the labels of that list, so "
            "fetch, import or write the list first"
        )
    labels = [e.label for e in parse_datalist(datalist)]
    C.check_imagenet_labels(datalist, labels, imagenet_subset)
    wnids = C.imagenet_sorted_wnids() if order == "sorted" else C.imagenet_devkit_wnids(devkit)
    write_text(dest, "\n".join(wnids) + "\n")
    typer.echo(f"{dest}: {len(wnids)} classes in {order} order")
