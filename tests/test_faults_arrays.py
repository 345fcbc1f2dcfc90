"""Fault catalogue, in process: image modes, bad arrays, corrupted files and a full disk."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
from PIL import Image

from oodbench.core.errors import DataError
from oodbench.data.materialize import decode_status
from oodbench.formats import features as store
from oodbench.formats.classifier import Linear, load_fc, save_fc
from oodbench.formats.features import FeatureSet, load_features
from oodbench.heads.labels import check_labels
from oodbench.methods import create
from oodbench.models.extract import ImageFiles
from oodbench.models.transforms import build_transform
from oodbench.results import evaluate
from oodbench.results.fitdata import check_finite
from oodbench.results.scoring import score_set
from tests.conftest import feature_dir
from tests.faults_catalogue import catalogue


def linear(c: int = 3, d: int = 4) -> Linear:
    rng = np.random.default_rng(0)
    return Linear(
        rng.normal(size=(c, d)).astype(np.float32), np.zeros(c, np.float32), list("abcdefgh"[:c])
    )


def save(image: Image.Image, path: Path, **kwargs) -> str:
    image.save(path, **kwargs)
    return path.name


@catalogue(
    "images",
    "an image is CMYK, grayscale, 16-bit grayscale, palette or RGBA",
    "accepted by materialize and decoded by extract to the right RGB pixels (16-bit rescaled, not clipped)",
)
def test_image_modes_decode_to_rgb(tmp_path: Path) -> None:
    cases = {
        save(Image.new("L", (8, 8), 100), tmp_path / "gray.png"): (100, 100, 100),
        save(Image.fromarray(np.full((8, 8), 40000, np.uint16)), tmp_path / "gray16.png"): (
            156,
            156,
            156,
        ),
        save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95): (
            255,
            0,
            0,
        ),
        save(Image.new("RGBA", (8, 8), (10, 20, 30, 128)), tmp_path / "rgba.png"): (10, 20, 30),
    }
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    cases[save(palette, tmp_path / "palette.png")] = (10, 200, 30)
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    pixels, _, _ = build_transform(timm.create_model("test_efficientnet"), "reference")
    files = ImageFiles(tmp_path, list(cases), pixels)
    for i, (name, rgb) in enumerate(cases.items()):
        assert decode_status(tmp_path / name) == "ok", name
        x = files[i]
        assert x.shape[0] == 3 and x.dtype.is_floating_point is False
        got = x.reshape(3, -1).float().mean(dim=1).round().tolist()
        tolerance = 3 if name.endswith(".jpg") else 0  # JPEG is lossy
        assert np.abs(np.array(got) - rgb).max() <= tolerance, (name, got, rgb)


@catalogue(
    "arrays",
    "the fc and the features have different dimensions",
    "DataError naming both dimensions: the two come from different backbones; rerun `dvc repro`",
)
def test_fc_feature_dimension_mismatch() -> None:
    with pytest.raises(DataError, match="feature dimension 5 does not match the classifier's 4"):
        linear().logits(np.zeros((2, 5), np.float32))


@catalogue(
    "arrays",
    "features hold NaN or Inf",
    "score refuses, naming the dataset and the manifest indices of the bad rows",
)
def test_nan_features_are_refused() -> None:
    feats = np.ones((4, 4), np.float32)
    feats[2, 1] = np.inf
    fs = FeatureSet("photos", feats, np.zeros(4, np.int64), np.arange(10, 14))
    with pytest.raises(DataError, match=r"'photos': 1 feature rows hold NaN/Inf .*\[12\]"):
        check_finite(fs)


@catalogue(
    "arrays",
    "logits or scores come out NaN/Inf (or the fc holds NaN)",
    "score refuses naming the method, dataset and rows; an fc file with NaN is refused on load",
)
def test_nan_logits_and_fc_are_refused(tmp_path: Path) -> None:
    features = np.ones((3, 4), np.float32)
    features[1, 2] = np.inf  # inf * 0 weight: a NaN logit in row 1
    fs = FeatureSet("near", features, np.zeros(3, np.int64), np.arange(3))
    fc = Linear(np.eye(2, 4, dtype=np.float32), np.zeros(2, np.float32), ["a", "b"])
    with pytest.raises(DataError, match=r"maxlogit produced 1 NaN/Inf scores on dataset 'near'"):
        score_set(create("maxlogit"), fs, fc)
    bad = linear()
    bad.weight[0, 0] = np.nan
    save_fc(tmp_path / "fc.safetensors", bad)
    with pytest.raises(DataError, match="W or b holds NaN/Inf"):
        load_fc(tmp_path / "fc.safetensors")


@catalogue(
    "datalist",
    "an ID label is >= the classifier's number of classes",
    "score and evaluate refuse, naming the dataset, the label, its manifest index and the class count",
)
def test_label_out_of_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FeatureSet("val", np.zeros((3, 4), np.float32), np.array([0, 7, -1]), np.arange(3))
    with pytest.raises(DataError, match=r"label 7 \(manifest index 1, 1 rows in all\).*3 classes"):
        check_labels(fs, linear())
    monkeypatch.chdir(tmp_path)
    feature_dir(Path("features/bb/val"), np.zeros((3, 4), np.float32), [0, 2, 5], "bb")
    save_fc(Path("features/bb/fc.safetensors"), linear())
    with pytest.raises(DataError, match=r"'val': label 5 .* out of range"):
        evaluate.id_accuracy("bb", "val")


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@catalogue(
    "files",
    "a feature shard or the fc file is corrupted on disk",
    "checksum mismatch (sha256 in info.json / in the fc metadata) names the file and says to rerun or `dvc checkout`",
)
def test_corrupted_shard_and_fc(tmp_path: Path) -> None:
    d = feature_dir(tmp_path / "bb" / "val", np.ones((3, 4), np.float32), [0, 1, 2], "bb")
    _flip_last_byte(d / "shard-00000.features.npy")
    with pytest.raises(DataError, match=r"shard-00000\.features\.npy: checksum mismatch"):
        load_features(d)
    fc = tmp_path / "fc.safetensors"
    save_fc(fc, linear())
    _flip_last_byte(fc)  # the last byte is tensor data: safetensors alone would not notice
    with pytest.raises(DataError, match=r"fc\.safetensors: checksum mismatch"):
        load_fc(fc)
    fc.write_bytes(fc.read_bytes()[:40])
    with pytest.raises(DataError, match="unreadable classifier file"):
        load_fc(fc)


@catalogue(
    "files",
    "a feature directory was extracted with another backbone",
    "refused on load, naming both backbones",
)
def test_shard_from_another_backbone(tmp_path: Path) -> None:
    d = feature_dir(tmp_path / "val", np.ones((2, 4), np.float32), [0, 1], "lite1")
    with pytest.raises(DataError, match="backbone 'lite1', expected 'lite0'"):
        load_features(d, backbone="lite0")


@catalogue(
    "files",
    "the disk fills up while a shard, an fc or a feature directory is written",
    "one-line `no space left on device` error naming the output; the previous version is intact and no temp file remains",
)
def test_disk_full_keeps_old_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = feature_dir(tmp_path / "bb" / "val", np.ones((3, 4), np.float32), [0, 1, 2], "bb")
    save_fc(tmp_path / "fc.safetensors", linear())
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(DataError, match=r"shard-00000\.features\.npy: no space left on device"):
        store.write_shard_array(d, 0, "features", np.zeros((3, 4), np.float32))
    monkeypatch.setattr("safetensors.numpy.save_file", full)
    with pytest.raises(DataError, match=r"fc\.safetensors: no space left on device"):
        save_fc(tmp_path / "fc.safetensors", linear(3, 4))
    monkeypatch.setattr(shutil, "copyfile", full)
    from oodbench.formats.atomic import atomic_dir

    with pytest.raises(DataError, match=r"val: no space left"), atomic_dir(d) as tmp:
        shutil.copyfile(d / "info.json", tmp / "info.json")
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # old artifacts byte-identical, and no .tmp files anywhere
    assert json.loads((d / "info.json").read_text())["rows"] == 3
