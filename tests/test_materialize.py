"""The materialize stage on real files: good and broken images, policies, the CLI."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from oodbench.core.errors import DataError
from oodbench.data import materialize
from oodbench.formats.manifest import read_manifest
from oodbench.formats.specs import dataset_spec, read_spec, write_spec
from tests.conftest import stage_command
from tests.faults_catalogue import catalogue


def png_bytes(seed: int, size: tuple[int, int] = (16, 12), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8).squeeze()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        buf, format="JPEG", quality=90
    )
    return buf.getvalue()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A root with good images (including a UTF-8 name with a space) and bad ones."""
    root = tmp_path / "root"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    (root / "good" / "a.png").write_bytes(png_bytes(0))
    (root / "good" / "b.jpg").write_bytes(jpeg_bytes(1))
    (root / "good" / "gray.png").write_bytes(png_bytes(2, mode="L"))
    (root / "good" / "café au lait.png").write_bytes(png_bytes(3))
    (root / "bad" / "truncated.jpg").write_bytes(jpeg_bytes(4)[:600])
    (root / "bad" / "zero.png").write_bytes(b"")
    (root / "bad" / "text.png").write_text("this is not a png\n")
    (root / "bad" / "dir.png").mkdir()
    broken = bytearray(png_bytes(5, size=(64, 64)))
    broken[200:260] = bytes(60)  # damage the compressed pixel data
    (root / "bad" / "broken.png").write_bytes(bytes(broken))
    return root


GOOD = "good/a.png 0\ngood/b.jpg 1\r\ngood/gray.png -1\ngood/café au lait.png 2\n"
BAD = "bad/truncated.jpg 0\nbad/zero.png 0\nbad/text.png 1\nbad/dir.png 1\nbad/broken.png 0\nbad/missing.png 2\n"


def test_good_list_writes_manifest(tree: Path, tmp_path: Path) -> None:
    lst = tmp_path / "good.txt"
    lst.write_text("# demo\n" + GOOD, encoding="utf-8")
    out = tmp_path / "m" / "good.parquet"
    materialize.run("good", lst, tree, out, skip_bad=False)
    frame, meta = read_manifest(out)
    assert meta == {"dataset": "good", "root": tree.as_posix()}
    assert list(frame.columns) == ["index", "path", "label", "size", "status"]
    assert frame["index"].tolist() == [0, 1, 2, 3]
    assert frame["path"].tolist() == [
        "good/a.png",
        "good/b.jpg",
        "good/gray.png",
        "good/café au lait.png",
    ]
    assert frame["label"].tolist() == [0, 1, -1, 2]
    assert frame["size"].tolist() == [(tree / p).stat().st_size for p in frame["path"]]
    assert set(frame["status"]) == {"ok"}
    schema = pq.read_schema(out)
    assert str(schema.field("index").type) == "int64" and str(schema.field("label").type) == "int64"


@catalogue(
    "images",
    "images are missing, zero bytes, truncated JPEG, damaged PNG, not an image, or a directory",
    "materialize fails listing `line N: path: reason` for each (up to 20); no manifest is written",
)
def test_bad_files_fail_with_list_and_no_output(tree: Path, tmp_path: Path) -> None:
    lst = tmp_path / "mixed.txt"
    lst.write_text(GOOD + BAD, encoding="utf-8")
    out = tmp_path / "mixed.parquet"
    with pytest.raises(DataError) as err:
        materialize.run("mixed", lst, tree, out, skip_bad=False)
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"{lst}: 6 of 10 images under {tree} are unreadable")
    assert "skip_bad" in lines[0]
    assert lines[2:5] == [
        "  line 6: bad/zero.png: empty file",
        "  line 7: bad/text.png: not an image",
        "  line 8: bad/dir.png: not a file",
    ]
    assert lines[6] == "  line 10: bad/missing.png: missing"
    assert len(lines) == 7
    assert lines[1].startswith("  line 5: bad/truncated.jpg: corrupt:")
    assert lines[5].startswith("  line 9: bad/broken.png: corrupt:")
    assert not out.exists()


@catalogue(
    "images",
    "`--skip-bad` or `datasets.<ds>.skip_bad: true` is set",
    "bad images are recorded in the manifest with their reason and skipped by extract; row indices keep datalist order",
)
def test_skip_bad_records_statuses(tree: Path, tmp_path: Path) -> None:
    lst = tmp_path / "mixed.txt"
    lst.write_text(GOOD + BAD, encoding="utf-8")
    out = tmp_path / "mixed.parquet"
    materialize.run("mixed", lst, tree, out, skip_bad=True)
    frame, _ = read_manifest(out)
    status = dict(zip(frame["path"], frame["status"], strict=True))
    assert [status[p] for p in ("good/a.png", "good/café au lait.png")] == ["ok", "ok"]
    assert status["bad/zero.png"] == "empty file"
    assert status["bad/text.png"] == "not an image"
    assert status["bad/missing.png"] == "missing"
    assert status["bad/truncated.jpg"].startswith("corrupt")
    assert frame.loc[frame["path"] == "bad/missing.png", "size"].item() == -1
    assert frame["index"].tolist() == list(range(10))


@catalogue(
    "images", "more than 20 images are bad", "the first 20 are listed, then `... and N more`"
)
def test_too_many_bad_files_are_capped(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "ok.png").write_bytes(png_bytes(0))
    lst = tmp_path / "l.txt"
    lst.write_text("ok.png 0\n" + "".join(f"gone{i}.png 0\n" for i in range(25)))
    with pytest.raises(DataError) as err:
        materialize.run("l", lst, root, tmp_path / "o.parquet", skip_bad=False)
    lines = str(err.value).splitlines()
    assert len(lines) == 22 and lines[-1] == "  ... and 5 more"


@catalogue(
    "images",
    "an image has huge dimensions (decompression bomb)",
    "refused from its header (> 89.5 Mpx) before any pixel is decoded",
)
def test_decompression_bomb_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "big.png").write_bytes(png_bytes(0, size=(40, 40)))
    (root / "small.png").write_bytes(png_bytes(1, size=(8, 8)))
    monkeypatch.setattr(materialize, "MAX_PIXELS", 1000)
    assert materialize.decode_status(root / "big.png") == "too large (40x40 > 1000 pixels)"
    assert materialize.decode_status(root / "small.png") == "ok"


@catalogue(
    "datalist",
    "a symlink escapes the root while `skip_bad` is on",
    "still an error: escaping the root is never skippable",
)
def test_symlink_outside_root_is_never_skipped(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes(9))
    os.symlink(outside, tree / "good" / "link.png")
    lst = tmp_path / "s.txt"
    lst.write_text("good/a.png 0\ngood/link.png 1\n")
    with pytest.raises(
        DataError, match=r"s\.txt: line 2: 'good/link.png' resolves outside the root"
    ):
        materialize.run("s", lst, tree, tmp_path / "s.parquet", skip_bad=True)
    assert not (tmp_path / "s.parquet").exists()


@catalogue("params", "a dataset root is not a directory", "error names `datasets.<ds>.root`")
def test_missing_root_names_params_key(tmp_path: Path) -> None:
    lst = tmp_path / "l.txt"
    lst.write_text("a.png 0\n")
    with pytest.raises(DataError, match=r"fix datasets\.l\.root"):
        materialize.run("l", lst, tmp_path / "nowhere", tmp_path / "o.parquet", skip_bad=False)


@catalogue(
    "files",
    "materialize fails over an existing manifest",
    "the old manifest stays byte-identical and no temp file remains",
)
def test_failure_keeps_previous_manifest(tree: Path, tmp_path: Path) -> None:
    lst = tmp_path / "d.txt"
    out = tmp_path / "d.parquet"
    lst.write_text(GOOD)
    materialize.run("d", lst, tree, out, skip_bad=False)
    before = out.read_bytes()
    lst.write_text(GOOD + BAD)
    with pytest.raises(DataError):
        materialize.run("d", lst, tree, out, skip_bad=False)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".d.parquet")] == []


@catalogue(
    "files",
    "a manifest is missing, not Parquet, or lacks columns/metadata",
    "error names the file and says to rerun `dvc repro`",
)
def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"x\.parquet: manifest missing; run `dvc repro`"):
        read_manifest(tmp_path / "x.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="unreadable manifest"):
        read_manifest(junk)
    other = tmp_path / "other.parquet"
    pd.DataFrame({"index": [0], "path": ["a"]}).to_parquet(other)
    with pytest.raises(DataError, match="missing columns label, size, status"):
        read_manifest(other)


def _stage(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = stage_command(*args)
    env = {k: v for k, v in os.environ.items() if k != "DVC_STAGE"} | {"DVC_NO_ANALYTICS": "1"}
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def project(tree: Path, tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    (proj / "datalists").mkdir(parents=True)
    (proj / "params.yaml").write_text(
        f"datasets:\n  good:\n    root: {tree}\n  mixed:\n    root: {tree}\n  nolist:\n    root: {tree}\n"
    )
    (proj / "datalists" / "good.txt").write_text(GOOD, encoding="utf-8")
    (proj / "datalists" / "mixed.txt").write_text(GOOD + BAD, encoding="utf-8")
    for name in ("good", "mixed", "nolist"):  # what the check stage writes from params
        dataset_spec_file(proj, name, tree, skip_bad=False)
    return proj


def dataset_spec_file(proj: Path, name: str, root: Path, skip_bad: bool) -> None:
    spec = {"dataset": name, "root": str(root), "skip_bad": skip_bad, "classes_file": None}
    write_spec(proj / dataset_spec(name), spec)


def test_cli_missing_datalist_one_line_exit_2(project: Path) -> None:
    result = _stage(project, "materialize", "--dataset", "nolist")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: datalists/nolist.txt: datalist not found")
    assert "Traceback" not in result.stderr
    assert not (project / "data" / "manifests" / "nolist.parquet").exists()


def test_cli_bad_images_exit_2_without_output(project: Path) -> None:
    result = _stage(project, "materialize", "--dataset", "mixed")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: datalists/mixed.txt: 6 of 10 images")
    assert not (project / "data" / "manifests" / "mixed.parquet").exists()
    dataset_spec_file(
        project,
        "mixed",
        Path(read_spec(project / dataset_spec("mixed"), "datasets.mixed")["root"]),
        True,
    )
    ok = _stage(project, "materialize", "--dataset", "mixed")
    assert ok.returncode == 0, ok.stderr
    frame, meta = read_manifest(project / "data" / "manifests" / "mixed.parquet")
    assert meta["dataset"] == "mixed" and (frame["status"] == "ok").sum() == 4


def test_cli_good_dataset(project: Path) -> None:
    result = _stage(project, "materialize", "--dataset", "good")
    assert result.returncode == 0, result.stderr
    frame, _ = read_manifest(project / "data" / "manifests" / "good.parquet")
    assert len(frame) == 4


@catalogue(
    "datalist",
    "a label is too large for a 64-bit integer (`99999999999999999999999`)",
    "materialize: one line naming the list, the line and the label; no manifest",
)
def test_cli_oversized_label_names_the_line(project: Path) -> None:
    (project / "datalists" / "good.txt").write_text(
        "good/a.png 0\ngood/b.jpg 99999999999999999999999\n", encoding="utf-8"
    )
    result = _stage(project, "materialize", "--dataset", "good")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "error: datalists/good.txt: line 2: label 99999999999999999999999 is out of range "
        "(a class index 0..C-1, stored as a 64-bit integer); fix the label, or write -1 for "
        "unknown/OOD\n"
    )
    assert not (project / "data" / "manifests" / "good.parquet").exists()
