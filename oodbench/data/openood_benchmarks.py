"""OpenOOD v1.5's benchmarks as released: ``oodbench init openood <bench> --data <folder>``.

From a folder laid out as OpenOOD's own data root (``benchmark_imglist/<bench>/*.txt``,
``images_classic/``, ``images_largescale/``), :func:`openood_benchmark` makes the
datalists and the params.yaml blocks of one v1.5 benchmark: its datasets (each rooted
at the images folder its imglist is relative to, with its group), the benchmark lists
(ID train, ID test as ``id_val``: the set OpenOOD scores, near + far OOD, csid), the
backbone preset that loads OpenOOD's released checkpoint, and a set of methods.

The table below is the one place that names OpenOOD's files. It is taken from OpenOOD
v1.5's ``openood/evaluation_api/datasets.py`` (``DATA_INFO``): which imglist each
dataset of each benchmark reads, under which images folder, and its role. Lists of the
``csid`` group (covariate-shifted ID) and the validation lists are optional: a folder
without them gets the benchmark without full-spectrum metrics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oodbench.core.errors import DataError, ParamsError
from oodbench.data.openood import parse_imglist

CLASSIC, LARGESCALE = "images_classic", "images_largescale"


@dataclass(frozen=True)
class ImgList:
    """One imglist of a benchmark: the dataset key it becomes, its file, images, role."""

    name: str  # the dataset key in params.yaml / datalists/<name>.txt
    file: str  # under benchmark_imglist/<benchmark>/
    images: str  # the folder its paths are relative to (OpenOOD's data_dir)
    group: str  # id | near | far | csid | tune (OOD val: written, for benchmark.tune_ood)
    required: bool = True


@dataclass(frozen=True)
class OpenOODBenchmark:
    key: str
    preset: str  # oodbench/models/presets.py
    backbone: str  # the backbone key written to params.yaml
    checkpoint: str  # the released file's name, as a placeholder path
    lists: tuple[ImgList, ...]

    def of_group(self, group: str) -> list[ImgList]:
        return [item for item in self.lists if item.group == group]


def _cifar(key: str, near: str) -> tuple[ImgList, ...]:
    far = ("mnist", "svhn", "texture", "places365")
    return (
        ImgList(f"{key}_train", f"train_{key}.txt", CLASSIC, "id"),
        ImgList(f"{key}_test", f"test_{key}.txt", CLASSIC, "id"),
        ImgList(near, f"test_{near}.txt", CLASSIC, "near"),
        ImgList("tin", "test_tin.txt", CLASSIC, "near"),
        *(ImgList(name, f"test_{name}.txt", CLASSIC, "far") for name in far),
        ImgList(f"{key}_val", f"val_{key}.txt", CLASSIC, "id", required=False),
        ImgList("tin_val", "val_tin.txt", CLASSIC, "tune", required=False),
    )


def _imagenet(key: str, csid: tuple[str, ...]) -> tuple[ImgList, ...]:
    return (
        ImgList(f"{key}_train", f"train_{key}.txt", LARGESCALE, "id"),
        ImgList(f"{key}_test", f"test_{key}.txt", LARGESCALE, "id"),
        ImgList("ssb_hard", "test_ssb_hard.txt", LARGESCALE, "near"),
        ImgList("ninco", "test_ninco.txt", LARGESCALE, "near"),
        ImgList("inaturalist", "test_inaturalist.txt", LARGESCALE, "far"),
        ImgList("textures", "test_textures.txt", CLASSIC, "far"),
        ImgList("openimage_o", "test_openimage_o.txt", LARGESCALE, "far"),
        *(
            ImgList(f"imagenet_{c}", f"test_{key}_{c}.txt", LARGESCALE, "csid", required=False)
            for c in csid
        ),
        ImgList(f"{key}_val", f"val_{key}.txt", LARGESCALE, "id", required=False),
        ImgList("openimage_o_val", "val_openimage_o.txt", LARGESCALE, "tune", required=False),
    )


BENCHMARKS = {
    "cifar10": OpenOODBenchmark(
        "cifar10",
        "openood_cifar10",
        "resnet18",
        "best.ckpt",
        (
            *_cifar("cifar10", "cifar100"),
            ImgList("cifar10c", "test_cifar10c.txt", CLASSIC, "csid", required=False),
        ),
    ),
    "cifar100": OpenOODBenchmark(
        "cifar100", "openood_cifar100", "resnet18", "best.ckpt", _cifar("cifar100", "cifar10")
    ),
    "imagenet200": OpenOODBenchmark(
        "imagenet200",
        "openood_imagenet200",
        "resnet18",
        "best.ckpt",
        _imagenet("imagenet200", ("v2", "c", "r")),
    ),
    "imagenet": OpenOODBenchmark(
        "imagenet",
        "openood_imagenet",
        "resnet50",
        "resnet50-0676ba61.pth",  # torchvision's ResNet50_Weights.IMAGENET1K_V1
        _imagenet("imagenet", ("v2", "c", "r", "es")),
    ),
}

#: OpenOOD v1.5 postprocessors that oodbench has, under OpenOOD's variants where they
#: differ (kNN's k-th distance, ASH-B); hyperparameters are oodbench's defaults (the
#: papers' ImageNet settings), not OpenOOD's per-benchmark automatic search
METHODS: dict[str, dict[str, Any]] = {
    "msp": {},
    "odin": {},
    "energy": {},
    "maxlogit": {},
    "gen": {},
    "react": {},
    "mahalanobis": {},
    "rmds": {},
    "vim": {},
    "knn": {"variant": "openood"},
    "ash": {"variant": "b", "percentile": 90.0},
    "she": {},
}


def get(key: str) -> OpenOODBenchmark:
    if key not in BENCHMARKS:
        raise ParamsError(f"unknown OpenOOD benchmark {key!r}; v1.5 has {', '.join(BENCHMARKS)}")
    return BENCHMARKS[key]


def openood_benchmark(
    key: str, data: Path, dest: Path, checkpoint: str | None = None
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(params.yaml content, ``{dataset: datalist text}``, notes) for benchmark `key` from
    OpenOOD's data folder `data`, for a project in `dest` (roots inside it are written
    relative to it, others absolute). Missing required lists: one DataError naming them."""
    bench = get(key)
    lists_dir = data / "benchmark_imglist" / key
    missing = [
        item.file for item in bench.lists if item.required and not (lists_dir / item.file).is_file()
    ]
    if missing:
        raise DataError(
            f"{lists_dir}: OpenOOD's benchmark_imglist for {key} lacks {', '.join(missing)}; "
            "--data must be OpenOOD's data folder (benchmark_imglist/, images_classic/, "
            "images_largescale/), as its download scripts lay it out"
        )
    present = [item for item in bench.lists if (lists_dir / item.file).is_file()]
    notes = [
        f"{item.file} not found: {item.name} left out"
        for item in bench.lists
        if not item.required and item not in present
    ]
    datalists = {item.name: datalist_text(lists_dir / item.file, item.group) for item in present}
    roots = {folder: _root(data / folder, dest) for folder in (CLASSIC, LARGESCALE)}
    for folder in {item.images for item in present}:
        if not (data / folder).is_dir():
            notes.append(f"{data / folder}: not found; the images must be there before `dvc repro`")
    datasets = {
        item.name: {
            "root": roots[item.images],
            "group": "far" if item.group == "tune" else item.group,
        }
        for item in present
    }
    notes += [
        f"OpenOOD's validation OOD set is {item.name}: `benchmark.tune_ood: {item.name}` lets "
        "`oodbench tune` search hyperparameters on it"
        for item in bench.of_group("tune")
        if item in present
    ]
    ood = [
        item.name
        for group in ("near", "far", "csid")
        for item in bench.of_group(group)
        if item in present
    ]
    params = {
        "benchmark": {
            "backbones": [bench.backbone],
            "methods": list(METHODS),
            "id_train": f"{key}_train",
            "id_val": f"{key}_test",  # OpenOOD scores ID test; its val list tunes (tune_ood)
            "ood": ood,
        },
        "datasets": datasets,
        "backbones": {
            bench.backbone: {
                "preset": bench.preset,
                "checkpoint": checkpoint or f"checkpoints/{bench.backbone}/{bench.checkpoint}",
            }
        },
        # the defaults, written out: the check stage then declares the sections it reads
        # one by one, and an experiment on a method does not rerun it (pipeline/dvcyaml.py
        # check_params)
        "extract": {},
        "methods": {name: dict(block) for name, block in METHODS.items()},
    }
    return params, datalists, notes


def datalist_text(imglist: Path, group: str) -> str:
    """An OpenOOD imglist as a datalist: paths as they are (relative to the images
    folder), labels for ID and csid lists, -1 for OOD lists."""
    entries = parse_imglist(imglist)
    ood = group in ("near", "far", "tune")
    return "".join(f"{e.path} {-1 if ood else e.label}\n" for e in entries)


def _root(folder: Path, dest: Path) -> str:
    """`folder` relative to the project `dest` when inside it, else absolute."""
    absolute = Path(os.path.abspath(folder))
    try:
        return absolute.relative_to(Path(os.path.abspath(dest))).as_posix()
    except ValueError:
        return absolute.as_posix()


def write_benchmark(
    dest: Path, params: dict[str, Any], datalists: dict[str, str], force: bool = False
) -> list[Path]:
    """Write params.yaml and datalists/<ds>.txt into `dest`; existing files are replaced
    only with `force` (refused before anything is written). Returns the files written."""
    import yaml

    from oodbench.formats.atomic import write_text

    targets = {dest / "params.yaml": yaml.safe_dump(params, sort_keys=False, width=100)}
    targets |= {dest / "datalists" / f"{name}.txt": text for name, text in datalists.items()}
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        shown = ", ".join(p.as_posix() for p in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise DataError(f"{shown}{more} already exist; pass --force to replace them")
    for path, text in sorted(targets.items(), key=lambda kv: kv[0].name == "params.yaml"):
        write_text(path, text)  # the lists first, params.yaml last
    return list(targets)
