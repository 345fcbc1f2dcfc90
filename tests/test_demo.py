"""The embedded demo: real packaged images, deterministic files and datalists, atomic."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oodbench.core.errors import DataError, ParamsError
from oodbench.data import demo, materialize
from oodbench.data.datalist import parse_datalist
from oodbench.formats.manifest import read_manifest
from tests.conftest import stage_command

SMALL = {
    "seed": 0,
    "train_per_class": 3,
    "val_per_class": 2,
    "near_per_class": 3,
    "crops_per_texture": 2,
    "crops_per_photo": 1,
    "crop_size": 32,
}


@pytest.fixture(scope="module")
def sources() -> demo.Sources:
    return demo.load_sources()


@pytest.fixture
def cached(sources: demo.Sources, monkeypatch: pytest.MonkeyPatch) -> demo.Sources:
    """Load the packaged data once per module (mnist_data() takes about a second)."""
    monkeypatch.setattr(demo, "load_sources", lambda: sources)
    return sources


def make(tmp_path: Path, name: str = "a", **overrides: int) -> tuple[Path, Path]:
    data, lists = tmp_path / name / "data" / "demo", tmp_path / name / "datalists"
    demo.run({**SMALL, **overrides}, data_root=data, lists_dir=lists)
    return data, lists


def snapshot(*dirs: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(d.parent)): p.read_bytes()
        for d in dirs
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def test_counts_labels_and_real_pixels(tmp_path: Path, cached: demo.Sources) -> None:
    data, lists = make(tmp_path)
    assert sorted(p.name for p in lists.iterdir()) == sorted(f"{n}.txt" for n in demo.DATASETS)
    entries = {name: parse_datalist(lists / f"{name}.txt", root=data) for name in demo.DATASETS}
    expected = {"digits_id_train": 18, "digits_id_val": 12, "digits_near": 12, "textures": 6}
    expected["photos"] = len(cached.photos)
    assert {n: len(e) for n, e in entries.items()} == expected
    assert len(cached.photos) >= 8  # 6 scikit-image photos + china + flower
    for name, per_class in (("digits_id_train", 3), ("digits_id_val", 2)):
        labels = [e.label for e in entries[name]]
        assert sorted(set(labels)) == list(range(6)) and labels.count(5) == per_class
    assert {e.label for n in ("digits_near", "textures", "photos") for e in entries[n]} == {-1}
    train = {e.path.split("/mnist_")[1][:4] for e in entries["digits_id_train"]}
    val = {e.path.split("/mnist_")[1][:4] for e in entries["digits_id_val"]}
    assert not train & val
    for entry in entries["digits_id_train"] + entries["digits_near"]:
        index = int(entry.path.split("/mnist_")[1][:4])
        pixels = np.asarray(Image.open(data / entry.path))
        assert np.array_equal(pixels, cached.digits[index])
        assert int(cached.digit_labels[index]) == int(entry.path.split("/")[1])
    near_digits = {int(e.path.split("/")[1]) for e in entries["digits_near"]}
    assert near_digits == {6, 7, 8, 9}
    photo = Image.open(data / entries["photos"][0].path)
    assert photo.format == "JPEG" and photo.mode == "RGB" and photo.size == (32, 32)
    assert Image.open(data / entries["textures"][0].path).size == (32, 32)
    assert (data / "SOURCES.txt").is_file()


def test_names_carry_content_hash_and_lists_are_sorted(
    tmp_path: Path, cached: demo.Sources
) -> None:
    data, lists = make(tmp_path)
    for name in demo.DATASETS:
        lines = (lists / f"{name}.txt").read_text().splitlines()
        assert lines == sorted(lines)
        for line in lines:
            rel = line.rsplit(" ", 1)[0]
            digest = hashlib.sha256((data / rel).read_bytes()).hexdigest()[:8]
            assert Path(rel).stem.endswith(f"_{digest}")


def test_deterministic_and_seed_sensitive(tmp_path: Path, cached: demo.Sources) -> None:
    first = snapshot(*make(tmp_path, "a"))
    second = snapshot(*make(tmp_path, "b"))
    assert first == second
    data, lists = make(tmp_path, "c", seed=1)
    other = snapshot(data, lists)
    for name in demo.DATASETS:
        key = f"datalists/{name}.txt"
        assert other[key] != first[key], name


def test_split_streams_are_independent(tmp_path: Path, cached: demo.Sources) -> None:
    _, lists = make(tmp_path, "a")
    _, lists_more = make(tmp_path, "b", train_per_class=5, crops_per_photo=2)
    for name in ("digits_id_val", "digits_near", "textures"):
        assert (lists / f"{name}.txt").read_bytes() == (lists_more / f"{name}.txt").read_bytes()
    small = (lists / "digits_id_train.txt").read_text().splitlines()
    assert set(small) < set((lists_more / "digits_id_train.txt").read_text().splitlines())


def test_failure_leaves_previous_outputs(
    tmp_path: Path, cached: demo.Sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, lists = make(tmp_path)
    (lists / "user_list.txt").write_text("mine.png 0\n")
    before = snapshot(data, lists)
    real_save, calls = demo._save, []

    def failing_save(*args: object) -> str:
        calls.append(1)
        if len(calls) > 20:
            raise OSError(28, "No space left on device")
        return real_save(*args)

    monkeypatch.setattr(demo, "_save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        demo.run({**SMALL, "seed": 7}, data_root=data, lists_dir=lists)
    assert snapshot(data, lists) == before
    assert sorted(p.name for p in data.parent.iterdir()) == ["demo"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"seed": -1}, "demo.seed must be an integer >= 0, got -1"),
        ({"seed": "0"}, "demo.seed must be an integer"),
        ({"crop_size": True}, "demo.crop_size must be an integer"),
        ({"train_per_class": 0}, "demo.train_per_class must be an integer in 1..499"),
        ({"near_per_class": 501}, "demo.near_per_class must be an integer in 1..500"),
        ({"crops_per_photo": 2.5}, "demo.crops_per_photo must be an integer"),
        (
            {"train_per_class": 400, "val_per_class": 101},
            "demo.train_per_class + demo.val_per_class",
        ),
        ({"colour": 1}, "demo.colour: unknown key"),
    ],
)
def test_bad_params_name_the_key(tmp_path: Path, change: dict, needle: str) -> None:
    with pytest.raises(ParamsError, match=needle.replace("+", r"\+").replace(".", r"\.")):
        demo.run({**SMALL, **change}, data_root=tmp_path / "d", lists_dir=tmp_path / "l")
    assert not (tmp_path / "d").exists() and not (tmp_path / "l").exists()


def test_missing_key_and_crop_too_large(tmp_path: Path, cached: demo.Sources) -> None:
    params = {k: v for k, v in SMALL.items() if k != "seed"}
    with pytest.raises(ParamsError, match=r"missing key demo\.seed"):
        demo.run(params, data_root=tmp_path / "d", lists_dir=tmp_path / "l")
    with pytest.raises(ParamsError, match=r"demo\.crop_size must be <= 300"):
        demo.run({**SMALL, "crop_size": 301}, data_root=tmp_path / "d", lists_dir=tmp_path / "l")
    assert not (tmp_path / "d").exists()


def test_demo_lists_materialize_cleanly(tmp_path: Path, cached: demo.Sources) -> None:
    data, lists = make(tmp_path)
    for name in demo.DATASETS:
        out = tmp_path / "manifests" / f"{name}.parquet"
        materialize.run(name, lists / f"{name}.txt", data, out, skip_bad=False)
        frame, meta = read_manifest(out)
        assert meta["dataset"] == name and (frame["status"] == "ok").all()


def test_demo_stage(tmp_path: Path) -> None:
    cmd = stage_command("demo")
    env = {k: v for k, v in os.environ.items() if k != "DVC_STAGE"} | {"DVC_NO_ANALYTICS": "1"}
    block = "".join(f"  {k}: {v}\n" for k, v in SMALL.items())
    (tmp_path / "params.yaml").write_text("demo:\n" + block.replace("seed: 0", "seed: -1"))
    bad = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr == "error: params.yaml: demo.seed must be an integer >= 0, got -1\n"
    (tmp_path / "params.yaml").write_text("demo:\n" + block)
    good = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert len((tmp_path / "datalists" / "digits_id_train.txt").read_text().splitlines()) == 18
    assert (tmp_path / "data" / "demo" / "photos").is_dir()


def test_an_edited_list_or_an_added_image_is_refused_not_overwritten(
    tmp_path: Path, cached: demo.Sources
) -> None:
    """DVC reruns the demo stage when its outputs change; the rerun refuses to put the
    generated files back over a user's edit, and says what to do instead."""
    data, lists = make(tmp_path)
    near = lists / "digits_near.txt"
    edited = near.read_text().splitlines()[:2]
    near.write_text("\n".join(edited) + "\n")
    (data / "mine.png").write_bytes((data / "SOURCES.txt").read_bytes())
    before = snapshot(data, lists)
    with pytest.raises(DataError) as err:
        demo.run({**SMALL, "seed": 1}, data_root=data, lists_dir=lists)
    message = str(err.value)
    assert message.startswith(f"{near.as_posix()}, {(data / 'mine.png').as_posix()}: changed")
    assert f"cp {near.as_posix()} {(lists / 'my_digits_near.txt').as_posix()}" in message
    assert "datasets.my_digits_near" in message and "outside" in message
    assert f"dvc checkout {near.as_posix()} {data.as_posix()}" in message
    assert snapshot(data, lists) == before  # nothing written
    # the demo's own files, as it wrote them, are rewritten without a word
    (data / "mine.png").unlink()
    near.write_text("".join(f"{line}\n" for line in before_lists(tmp_path)))
    demo.run({**SMALL, "seed": 1}, data_root=data, lists_dir=lists)
    assert near.read_text() != "".join(f"{line}\n" for line in before_lists(tmp_path))


def before_lists(tmp_path: Path) -> list[str]:
    """digits_near as the demo wrote it with the SMALL settings (a fresh copy)."""
    _, lists = make(tmp_path, "fresh")
    return (lists / "digits_near.txt").read_text().splitlines()
