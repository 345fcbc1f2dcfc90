"""`oodbench datalists ...` end to end, in a temp dir, against a local HTTP server only."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import subprocess
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from oodbench.data.datalist import parse_datalist


def oodbench(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["oodbench", "datalists", *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"}, timeout=120,
    )  # fmt: skip


def assert_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An http.server on 127.0.0.1 serving files the test writes into `served`."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


LIST = b"val/ILSVRC2012_val_00000001.JPEG 489\nval/ILSVRC2012_val_00000002.JPEG 359\n"


def test_fetch_list_with_sha256(server, work: Path) -> None:
    base, served = server
    (served / "val.txt").write_bytes(LIST)
    args = ("fetch", "imagenet_val", "--url", f"{base}/val.txt")
    result = oodbench(work, *args, "--sha256", sha(LIST).upper())
    assert result.returncode == 0, result.stderr
    assert (work / "datalists" / "imagenet_val.txt").read_bytes() == LIST
    assert "2 entries" in result.stdout


def test_fetch_wrong_hash_keeps_nothing(server, work: Path) -> None:
    base, served = server
    (served / "val.txt").write_bytes(LIST)
    result = oodbench(work, "fetch", "imagenet_val", "--url", f"{base}/val.txt",
                      "--sha256", "0" * 64)  # fmt: skip
    assert_error(result, "sha256 mismatch", f"{base}/val.txt", sha(LIST), "not kept")
    assert leftovers(work / "datalists") == []


def test_fetch_without_known_hash_prints_it_and_refuses(server, work: Path) -> None:
    base, served = server
    (served / "val.txt").write_bytes(LIST)
    result = oodbench(work, "fetch", "imagenet_val", "--url", f"{base}/val.txt")
    assert_error(result, "no verified sha256", f"--sha256 {sha(LIST)}")
    assert leftovers(work / "datalists") == []


def test_fetch_http_404(server, work: Path) -> None:
    base, _ = server
    result = oodbench(work, "fetch", "imagenet_val", "--url", f"{base}/missing.txt",
                      "--sha256", "0" * 64)  # fmt: skip
    assert_error(result, "HTTP 404", f"{base}/missing.txt")
    assert leftovers(work / "datalists") == []


def test_fetch_bad_inputs(server, work: Path) -> None:
    base, served = server
    assert_error(oodbench(work, "fetch", "imagenet"), "unknown dataset 'imagenet'", "known:")
    assert_error(oodbench(work, "fetch", "imagenet_val", "--sha256", "abc"), "--sha256")
    bad = b"val/a.JPEG 1\nval/b.JPEG notalabel\n"
    (served / "bad.txt").write_bytes(bad)
    result = oodbench(work, "fetch", "imagenet_val", "--url", f"{base}/bad.txt",
                      "--sha256", sha(bad))  # fmt: skip
    assert_error(result, "line 2", "non-integer label")
    assert leftovers(work / "datalists") == []


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def make_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_fetch_archive_extracts_under_root(server, work: Path) -> None:
    base, served = server
    data = make_tar(
        {"iNaturalist/images/a.jpg": png_bytes(0), "iNaturalist/images/b.png": png_bytes(1)}
    )
    (served / "inat.tar.gz").write_bytes(data)
    result = oodbench(work, "fetch", "inaturalist", "--url", f"{base}/inat.tar.gz",
                      "--sha256", sha(data))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert leftovers(work / "data" / "inaturalist" / "images") == ["a.jpg", "b.png"]
    assert "from-folder" in result.stdout
    assert leftovers(work / "data") == ["inaturalist"]  # no temporary download left


@pytest.mark.parametrize("name", ["../evil.jpg", "/abs/evil.jpg", "top/../../evil.jpg"])
def test_fetch_archive_refuses_path_traversal(server, work: Path, name: str) -> None:
    base, served = server
    data = make_tar({"top/ok.jpg": b"x", name: b"evil"})
    (served / "evil.tar.gz").write_bytes(data)
    result = oodbench(work, "fetch", "inaturalist", "--url", f"{base}/evil.tar.gz",
                      "--sha256", sha(data))  # fmt: skip
    assert_error(result, "outside the root")
    assert leftovers(work / "data") == [] and not (work.parent / "evil.jpg").exists()


def test_fetch_zip_archive_and_symlink_refused(server, work: Path) -> None:
    base, served = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("NINCO/NINCO_OOD_classes/c1/x.jpg", png_bytes(2))
    (served / "n.zip").write_bytes(buf.getvalue())
    result = oodbench(work, "fetch", "ninco", "--url", f"{base}/n.zip",
                      "--sha256", sha(buf.getvalue()))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (work / "data" / "ninco" / "NINCO_OOD_classes" / "c1" / "x.jpg").is_file()
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        link = tarfile.TarInfo("sun/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)
    (served / "s.tar").write_bytes(tar.getvalue())
    result = oodbench(
        work, "fetch", "sun", "--url", f"{base}/s.tar", "--sha256", sha(tar.getvalue())
    )
    assert_error(result, "link or device")
    assert not (work / "data" / "sun").exists()


def test_import_openood(work: Path) -> None:
    src = work / "test_imagenet.txt"
    src.write_text(
        "imagenet_1k/val/ILSVRC2012_val_00000001.JPEG 65\n"
        "imagenet_1k/val/ILSVRC2012_val_00000002.JPEG 970\n"
    )
    result = oodbench(work, "import-openood", str(src), "--name", "imagenet_val")
    assert result.returncode == 0, result.stderr
    out = work / "datalists" / "imagenet_val.txt"
    assert out.read_text().splitlines() == [
        "val/ILSVRC2012_val_00000001.JPEG 65",
        "val/ILSVRC2012_val_00000002.JPEG 970",
    ]
    ninco = work / "test_ninco.txt"
    ninco.write_text("ninco/NINCO_OOD_classes/c/a.jpg 0\nninco/NINCO_OOD_classes/c/b.jpg 0\n")
    result = oodbench(work, "import-openood", str(ninco), "--name", "ninco", "--ood",
                      "--strip", "ninco/NINCO_OOD_classes")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [e.label for e in parse_datalist(work / "datalists" / "ninco.txt")] == [-1, -1]


def test_import_openood_bad_inputs(work: Path) -> None:
    src = work / "bad.txt"
    src.write_text("imagenet_1k/val/a.JPEG 1\nimagenet_1k/val/b.JPEG x\n")
    assert_error(oodbench(work, "import-openood", str(src), "--name", "v"), "bad.txt", "line 2")
    src.write_text("imagenet_1k/val/a.JPEG 1\nother/b.JPEG 2\n")
    result = oodbench(work, "import-openood", str(src), "--name", "v", "--strip", "imagenet_1k")
    assert_error(result, "bad.txt", "line 2", "does not start with 'imagenet_1k'/")
    assert_error(oodbench(work, "import-openood", str(src), "--name", "../v"), "--name")
    assert leftovers(work / "datalists") == []


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def test_from_folder_classes(work: Path) -> None:
    root = work / "data" / "toy"
    write_tree(root, {
        "b_class/2.png": png_bytes(1), "b_class/10.jpg": png_bytes(2),
        "a_class/sub/x.JPEG": png_bytes(3), "a_class/notes.txt": b"not an image",
        "a_class/.hidden.png": png_bytes(4), "c class/y z.png": png_bytes(5),
    })  # fmt: skip
    result = oodbench(work, "from-folder", "data/toy", "--name", "toy")
    assert result.returncode == 0, result.stderr
    lines = (work / "datalists" / "toy.txt").read_text().splitlines()
    assert lines == [
        "a_class/sub/x.JPEG 0",
        "b_class/10.jpg 1",
        "b_class/2.png 1",
        "c class/y z.png 2",
    ]
    classes = (work / "datalists" / "toy.classes.txt").read_text().splitlines()
    assert classes == ["a_class", "b_class", "c class"]
    entries = parse_datalist(work / "datalists" / "toy.txt", root=root)
    assert [e.path for e in entries][-1] == "c class/y z.png"
    first = (work / "datalists" / "toy.txt").read_bytes()
    assert oodbench(work, "from-folder", "data/toy", "--name", "toy").returncode == 0
    assert (work / "datalists" / "toy.txt").read_bytes() == first  # stable


def test_from_folder_ood_under_and_exclude(work: Path) -> None:
    root = work / "data" / "dtd"
    write_tree(root, {f"images/{c}/{c}_1.jpg": png_bytes(i) for i, c in
                      enumerate(["banded", "bubbly", "zigzagged"])})  # fmt: skip
    result = oodbench(work, "from-folder", "data/dtd", "--under", "images", "--labels", "none",
                      "--exclude", "bubbly", "--name", "texture")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (work / "datalists" / "texture.txt").read_text().splitlines() == [
        "images/banded/banded_1.jpg -1",
        "images/zigzagged/zigzagged_1.jpg -1",
    ]
    assert not (work / "datalists" / "texture.classes.txt").exists()


def test_from_folder_bad_inputs(work: Path) -> None:
    root = work / "data" / "flat"
    write_tree(root, {"a.png": png_bytes(0), "docs/readme.txt": b"text"})
    assert_error(oodbench(work, "from-folder", "data/flat", "--name", "f"), "a.png", "class folder")
    assert_error(
        oodbench(work, "from-folder", "data/nope", "--name", "f"), "data/nope", "not a folder"
    )
    assert_error(oodbench(work, "from-folder", "data/flat/docs", "--name", "f"), "no image files")
    assert_error(
        oodbench(work, "from-folder", "data/flat", "--name", "f", "--labels", "x"), "--labels"
    )
    result = oodbench(work, "from-folder", "data/flat", "--name", "f", "--exclude", "zzz")
    assert_error(result, "--exclude zzz")
    assert_error(
        oodbench(work, "from-folder", "data/flat", "--name", "f", "--under", "../x"), "--under"
    )
    assert leftovers(work / "datalists") == []


def test_params_and_classes_commands(work: Path) -> None:
    result = oodbench(work, "params", "imagenet_val", "texture")
    assert result.returncode == 0, result.stderr
    assert set(yaml.safe_load(result.stdout)["datasets"]) == {"imagenet_val", "texture"}
    assert_error(oodbench(work, "params", "nope"), "unknown dataset 'nope'")
    result = oodbench(work, "classes", "--name", "imagenet_val")
    assert result.returncode == 0, result.stderr
    wnids = (work / "datalists" / "imagenet_val.classes.txt").read_text().split()
    assert len(wnids) == 1000 and wnids[0] == "n01440764"
    assert_error(oodbench(work, "classes", "--name", "x", "--order", "devkit"), "--devkit")
    assert "imagenet_val" in oodbench(work, "list").stdout
