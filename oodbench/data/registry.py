"""Registry of the real benchmark datasets: where each lives, its group, labels and sources.

The pipeline only knows a dataset by its datalist and its `datasets.<key>` entry in
params.yaml; this module is the one place that says, for the published benchmarks
(ViM, GEN, MOODv2, MOS, OpenOOD v1.5), where each set is expected under ``data/``,
which group it belongs to, how its labels are numbered, and where its public file
list or archive comes from. Nothing here touches the network: ``oodbench datalists
fetch`` (oodbench/data/fetch.py) does, and only on request.

Checksums: a sha256 is recorded only where it was verified; every entry below has
``sha256=None`` because none could be checked offline when the registry was written.
``fetch`` then refuses to keep the download and prints its sha256, so the user checks
it against the source and reruns with ``--sha256 HASH``. ``md5`` is the checksum
published by the dataset's own loaders (torchvision-style), shown as a cross-check.

Label conventions (``labels``):
- ``imagenet-devkit``: ILSVRC2012_ID - 1, the order of the devkit's meta.mat
  (tench = 448 0-based / 449 1-based); the ViM val list uses it.
- ``imagenet-sorted``: sorted-wnid order of torchvision ImageFolder, timm and OpenOOD
  (tench = 0). A model head uses this order, so accuracy needs `label_map`.
- ``folders``: class subfolders in sorted order (written to <key>.classes.txt).
- ``ood``: labels are ignored (-1 or the source's own class ids); the set is OOD.
"""

from __future__ import annotations

from dataclasses import dataclass

from oodbench.core.errors import ParamsError

GROUPS = ("id", "near", "far")
LABELS = ("imagenet-devkit", "imagenet-sorted", "folders", "ood")
KINDS = ("list", "archive")

_VIM = "https://raw.githubusercontent.com/haoqiwang/vim/master/datalists"
_MOS = "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset"
_GDRIVE = "https://drive.google.com/uc?export=download&id="
# The four DTD classes ViM removes because they overlap ImageNet classes.
DTD_EXCLUDED = ("bubbly", "cobwebbed", "honeycombed", "spiralled")


@dataclass(frozen=True)
class Resource:
    """One downloadable file: a datalist (moved to datalists/) or an archive (extracted)."""

    kind: str  # "list" | "archive"
    url: str
    sha256: str | None = None
    md5: str | None = None  # published by the source's loaders; informative only
    note: str = ""


@dataclass(frozen=True)
class DatasetInfo:
    """What the benchmark needs to know about one public dataset."""

    key: str
    title: str
    root: str  # dataset root, relative to the project (paths in the list are under it)
    group: str  # id | near | far
    labels: str  # one of LABELS
    source: str  # paper / benchmark that defines the subset
    resources: tuple[Resource, ...] = ()
    hint: str = ""  # how to build the datalist when no list file is published

    @property
    def datalist(self) -> str:
        return f"datalists/{self.key}.txt"


def _gdrive(file_id: str) -> str:
    return _GDRIVE + file_id


_OPENOOD_NOTE = (
    "OpenOOD v1.5 Google Drive zip; large files need a browser (confirmation page): "
    "download it and pass --url file:///path/to/file.zip"
)

REGISTRY: dict[str, DatasetInfo] = {
    d.key: d
    for d in (
        DatasetInfo(
            "imagenet_val", "ImageNet-1k val (50,000)", "data/imagenet", "id",
            "imagenet-devkit", "ViM / GEN / MOODv2",
            (Resource("list", f"{_VIM}/imagenet2012_val_list.txt"),),
            "ImageNet licence: download ILSVRC2012 yourself; val/ holds the 50k JPEGs flat",
        ),
        DatasetInfo(
            "imagenet_train_200k", "ImageNet-1k train, fixed 200k subset", "data/imagenet",
            "id", "imagenet-devkit", "ViM",
            (Resource("list", f"{_VIM}/imagenet2012_train_random_200k.txt"),),
            "train/<wnid>/*.JPEG; check the label order with `datalists classes`",
        ),
        DatasetInfo(
            "openimage_o", "OpenImage-O (17,632)", "data/openimage_o", "far", "ood",
            "ViM; OpenOOD v1.5 far-OOD",
            (
                Resource("list", f"{_VIM}/openimage_o.txt"),
                Resource("archive", _gdrive("1VUFXnB_z70uHfdgJG2E_pjYOcEgqM7tE"),
                         note=_OPENOOD_NOTE),
            ),
            "images from the OpenImages V3 test set, listed by ViM",
        ),
        DatasetInfo(
            "texture", "Texture: DTD minus bubbly, cobwebbed, honeycombed, spiralled",
            "data/dtd", "far", "ood", "ViM; OpenOOD v1.5 far-OOD",
            (
                Resource("list", f"{_VIM}/texture.txt"),
                Resource("archive",
                         "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                         md5="fff73e5086ae6bdbea199a49dfb8a4c1"),
            ),
            "or: oodbench datalists from-folder data/dtd --under images --labels none "
            + " ".join(f"--exclude {c}" for c in DTD_EXCLUDED) + " --name texture",
        ),
        DatasetInfo(
            "texture_mos", "Textures: all 47 DTD classes (5,640)", "data/dtd", "far", "ood",
            "MOS",
            (Resource("archive",
                      "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                      md5="fff73e5086ae6bdbea199a49dfb8a4c1"),),
            "oodbench datalists from-folder data/dtd --under images --labels none "
            "--name texture_mos",
        ),
        DatasetInfo(
            "inaturalist", "iNaturalist OOD subset (10,000)", "data/inaturalist", "far", "ood",
            "MOS; OpenOOD v1.5 far-OOD",
            (Resource("archive", f"{_MOS}/iNaturalist.tar.gz"),),
            "oodbench datalists from-folder data/inaturalist --labels none --name inaturalist",
        ),
        DatasetInfo(
            "sun", "SUN OOD subset (10,000)", "data/sun", "far", "ood", "MOS",
            (Resource("archive", f"{_MOS}/SUN.tar.gz"),),
            "oodbench datalists from-folder data/sun --labels none --name sun",
        ),
        DatasetInfo(
            "places", "Places OOD subset (10,000)", "data/places", "far", "ood", "MOS",
            (Resource("archive", f"{_MOS}/Places.tar.gz"),),
            "oodbench datalists from-folder data/places --labels none --name places",
        ),
        DatasetInfo(
            "imagenet_o", "ImageNet-O (2,000)", "data/imagenet_o", "near", "ood",
            "ViM / GEN / MOODv2 (adversarially filtered; not in OpenOOD v1.5)",
            (Resource("archive", "https://people.eecs.berkeley.edu/~hendrycks/imagenet-o.tar",
                      md5="86bd7a50c1c4074fb18fc5f219d6d50b"),),
            "oodbench datalists from-folder data/imagenet_o --labels none --name imagenet_o",
        ),
        DatasetInfo(
            "ninco", "NINCO OOD classes (5,879)", "data/ninco", "near", "ood",
            "OpenOOD v1.5 near-OOD",
            (Resource("archive", "https://zenodo.org/record/8013288/files/NINCO_all.tar.gz",
                      md5="b9ffae324363cd900a81ce3c367cd834"),),
            "oodbench datalists from-folder data/ninco --under NINCO_OOD_classes "
            "--labels none --name ninco",
        ),
        DatasetInfo(
            "ssb_hard", "SSB-hard (49,000, ImageNet-21k)", "data/ssb_hard", "near", "ood",
            "OpenOOD v1.5 near-OOD",
            (Resource("archive", _gdrive("1PzkA-WGG8Z18h0ooL_pDdz9cO-DCIouE"),
                      note=_OPENOOD_NOTE),),
            "import OpenOOD's benchmark_imglist/imagenet/test_ssb_hard.txt with import-openood",
        ),
        DatasetInfo(
            "cifar10_test", "CIFAR-10 test (10,000)", "data/cifar10", "id", "folders",
            "OpenOOD v1.5 (ID for the CIFAR-10 benchmark)",
            (Resource("archive", _gdrive("1Co32RiiWe16lTaiOU6JMMnyUYS41IlO1"),
                      note=_OPENOOD_NOTE),),
            "import OpenOOD's benchmark_imglist/cifar10/test_cifar10.txt with import-openood",
        ),
        DatasetInfo(
            "cifar100_test", "CIFAR-100 test (10,000)", "data/cifar100", "id", "folders",
            "OpenOOD v1.5 (ID for CIFAR-100; near-OOD for CIFAR-10)",
            (Resource("archive", _gdrive("1PGKheHUsf29leJPPGuXqzLBMwl8qMF8_"),
                      note=_OPENOOD_NOTE),),
            "import OpenOOD's benchmark_imglist/cifar100/test_cifar100.txt with import-openood",
        ),
    )
}  # fmt: skip


def get(key: str) -> DatasetInfo:
    """The registry entry for `key`, or an error listing the known keys."""
    try:
        return REGISTRY[key]
    except KeyError:
        raise ParamsError(f"unknown dataset {key!r}; known: {', '.join(REGISTRY)}") from None


def params_snippet(keys: list[str]) -> str:
    """The ``datasets:`` block for `keys`, to paste into params.yaml (block style).

    Written by hand rather than with yaml.dump so each entry carries a comment saying
    what it is and how its labels are numbered. Lists the registry does not know are
    handled by ``oodbench.data.snippet``, which uses ``entry_lines`` for registry keys.
    """
    if not keys:
        raise ParamsError("name at least one dataset; known: " + ", ".join(REGISTRY))
    lines = ["datasets:"]
    for key in dict.fromkeys(keys):
        lines += entry_lines(get(key))
    return "\n".join(lines) + "\n"


def entry_lines(info: DatasetInfo) -> list[str]:
    """One dataset's commented ``datasets:`` entry, indented for the block."""
    return [
        f"  # {info.title}; labels: {info.labels}; list: {info.datalist}",
        f"  {info.key}:",
        f"    root: {info.root}",
        f"    group: {info.group}",
    ]
