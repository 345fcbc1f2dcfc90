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
from tests.faults_catalogue import catalogue


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
    src.write_text(
        "imagenet_1k/val/a.JPEG 1\nimagenet_1k/val/b.JPEG 2\nimagenet_1k/val/./a.JPEG 3\n"
    )
    result = oodbench(work, "import-openood", str(src), "--name", "v")
    assert_error(result, "bad.txt", "line 3: duplicate path", "(first on line 1); remove one")
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
        "# root: data/toy",
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
    assert oodbench(work, "from-folder", "data/toy", "--name", "toy", "--force").returncode == 0
    assert (work / "datalists" / "toy.txt").read_bytes() == first  # stable


def test_from_folder_ood_under_and_exclude(work: Path) -> None:
    root = work / "data" / "dtd"
    write_tree(root, {f"images/{c}/{c}_1.jpg": png_bytes(i) for i, c in
                      enumerate(["banded", "bubbly", "zigzagged"])})  # fmt: skip
    result = oodbench(work, "from-folder", "data/dtd", "--under", "images", "--labels", "none",
                      "--exclude", "bubbly", "--name", "texture")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (work / "datalists" / "texture.txt").read_text().splitlines() == [
        "# root: data/dtd",
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
    assert_error(
        oodbench(work, "params", "nope"), "unknown dataset 'nope'", "no datalists/nope.txt"
    )
    (work / "datalists").mkdir()
    (work / "datalists" / "imagenet_val.txt").write_text(
        "".join(f"val/{i}.JPEG {i}\n" for i in range(1000))
    )
    result = oodbench(work, "classes", "--name", "imagenet_val")
    assert result.returncode == 0, result.stderr
    wnids = (work / "datalists" / "imagenet_val.classes.txt").read_text().split()
    assert len(wnids) == 1000 and wnids[0] == "n01440764"
    assert_error(oodbench(work, "classes", "--name", "x", "--order", "devkit"), "--devkit")
    assert "imagenet_val" in oodbench(work, "list").stdout


@catalogue(
    "datalist",
    'an OpenOOD imglist has dict extras (`path {"label": 0}`, OpenOOD\'s benchmark_imglist style)',
    "import-openood takes the label from the dict (-1 when it has none); a malformed "
    "extra is a line error",
)
def test_import_openood_dict_extras(work: Path) -> None:
    src = work / "test_ssb_hard.txt"
    src.write_text(
        'ssb_hard/n00000001/a.JPEG {"label": 0}\n'
        "ssb_hard/n00000001/b.JPEG {'label': 7, 'domain': 'x'}\n"
        "ssb_hard/n00000002/c.JPEG {'other': 1}\n"
        "ssb_hard/n00000002/d.JPEG -1\n"
    )
    result = oodbench(work, "import-openood", str(src), "--name", "ssb_hard")
    assert result.returncode == 0, result.stderr
    assert (work / "datalists" / "ssb_hard.txt").read_text().splitlines() == [
        "n00000001/a.JPEG 0",
        "n00000001/b.JPEG 7",
        "n00000002/c.JPEG -1",
        "n00000002/d.JPEG -1",
    ]
    bad = work / "bad.txt"
    bad.write_text("x/a.JPEG {'label': 0}\nx/b.JPEG {'label': 'cat'}\n")
    assert_error(
        oodbench(work, "import-openood", str(bad), "--name", "b"),
        "bad.txt: line 2",
        "'label'",
        "not an integer",
    )
    bad.write_text("x/a.JPEG {'label': __import__('os').getcwd()}\n")
    assert_error(
        oodbench(work, "import-openood", str(bad), "--name", "b"),
        "line 1",
        "neither an integer label nor a dict literal",
    )
    assert leftovers(work / "datalists") == ["ssb_hard.txt"]


@catalogue(
    "datalist",
    "`from-folder` or `import-openood` would replace an existing list",
    "refused naming the list (and its classes file) unless `--force`; nothing is written",
)
def test_from_folder_refuses_to_overwrite_and_keeps_classes_consistent(work: Path) -> None:
    root = work / "data" / "toy"
    write_tree(root, {"a/1.png": png_bytes(1), "b/2.png": png_bytes(2), "c/3.png": png_bytes(3)})
    assert oodbench(work, "from-folder", "data/toy", "--name", "toy").returncode == 0
    listed = work / "datalists" / "toy.txt"
    names = work / "datalists" / "toy.classes.txt"
    before = (listed.read_bytes(), names.read_bytes())
    again = oodbench(work, "from-folder", "data/toy", "--name", "toy", "--labels", "none")
    assert_error(again, "datalists/toy.txt and datalists/toy.classes.txt already exist", "--force")
    assert (listed.read_bytes(), names.read_bytes()) == before
    # the same listing as OOD with --force: the class names no longer apply, so they go
    forced = oodbench(work, "from-folder", "data/toy", "--name", "toy", "--labels", "none",
                      "--force")  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert [e.label for e in parse_datalist(listed)] == [-1, -1, -1]
    assert not names.exists()
    # with classes again, the names come back with the list
    (root / "d").mkdir()
    (root / "d" / "4.png").write_bytes(png_bytes(4))
    forced = oodbench(work, "from-folder", "data/toy", "--name", "toy", "--force")
    assert forced.returncode == 0, forced.stderr
    assert names.read_text().splitlines() == ["a", "b", "c", "d"]
    assert [e.label for e in parse_datalist(listed)] == [0, 1, 2, 3]
    src = work / "imglist.txt"
    src.write_text("toy/a/1.png 0\n")
    assert_error(oodbench(work, "import-openood", str(src), "--name", "toy"), "--force")
    assert [e.label for e in parse_datalist(listed)] == [0, 1, 2, 3]


@catalogue(
    "datalist",
    "`datalists classes` is asked for ImageNet wnids of a list whose labels are not "
    "ImageNet-1k's (a 3-class list of one's own, labels beyond 999, an OOD list)",
    "refused, saying how many classes the list has and how to name them instead; "
    "`--imagenet-subset` accepts a subset that kept ImageNet's numbering",
)
def test_classes_refuses_a_list_that_is_not_imagenet(work: Path) -> None:
    lists = work / "datalists"
    lists.mkdir()
    (lists / "pets.txt").write_text("cat/1.png 0\ndog/2.png 1\nfox/3.png 2\n")
    assert_error(
        oodbench(work, "classes", "--name", "pets"),
        "datalists/pets.txt: its labels name 3 classes (0..2), not the 1000 of ImageNet-1k",
        "--imagenet-subset",
        "from-folder",
    )
    (lists / "big.txt").write_text("a.png 0\nb.png 1000\n")
    assert_error(oodbench(work, "classes", "--name", "big"), "label 1000 is beyond ImageNet-1k")
    (lists / "ood.txt").write_text("a.png -1\n")
    assert_error(oodbench(work, "classes", "--name", "ood"), "every label is -1")
    assert_error(oodbench(work, "classes", "--name", "absent"), "datalists/absent.txt: not found")
    assert leftovers(lists) == ["big.txt", "ood.txt", "pets.txt"]
    subset = oodbench(work, "classes", "--name", "pets", "--imagenet-subset")
    assert subset.returncode == 0, subset.stderr
    assert (lists / "pets.classes.txt").read_text().split()[:2] == ["n01440764", "n01443537"]
    assert_error(
        oodbench(work, "classes", "--name", "pets", "--imagenet-subset"),
        "datalists/pets.classes.txt already exists",
        "--force",
    )


@catalogue(
    "params",
    "`datalists params NAME` names a list that is not in the registry (a user's own list)",
    "a `datasets:` entry from the list: root from its `# root:` line or data/NAME when "
    "its files are there, else a CHANGE-ME placeholder the check stage refuses",
)
def test_params_for_a_users_own_lists(work: Path) -> None:
    root = work / "images" / "mine"
    write_tree(root, {"a/1.png": png_bytes(1), "b/2.png": png_bytes(2)})
    assert oodbench(work, "from-folder", "images/mine", "--name", "mine").returncode == 0
    write_tree(work / "data" / "extra", {"x.png": png_bytes(3)})
    (work / "datalists" / "extra.txt").write_text("x.png -1\n")
    (work / "datalists" / "lost.txt").write_text("somewhere/y.png -1\n")
    result = oodbench(work, "params", "mine", "extra", "lost", "texture")
    assert result.returncode == 0, result.stderr
    block = yaml.safe_load(result.stdout)["datasets"]
    assert block == {
        "mine": {"root": "images/mine", "group": "id"},
        "extra": {"root": "data/extra", "group": "far"},
        "lost": {"root": "CHANGE-ME", "group": "far"},
        "texture": {"root": "data/dtd", "group": "far"},
    }
    text = result.stdout
    assert "datalists/mine.txt: 2 images, 2 classes (names: datalists/mine.classes.txt)" in text
    assert "root the list's `# root:` line, its first 2 listed files exist there" in text
    assert "'somewhere/y.png' was not found under data/lost" in text
    assert "REPLACE the CHANGE-ME placeholder" in text
