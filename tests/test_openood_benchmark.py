"""OpenOOD v1.5's benchmarks as released (``oodbench init openood``), its results table,
full-spectrum ID, and features imported from elsewhere (the ``import-<ds>`` stage's
readers and errors). No model runs here; tests/test_openood_project.py runs it all
through ``dvc repro``."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from oodbench.core.errors import DataError, ParamsError
from oodbench.data import imported
from oodbench.data import openood_benchmarks as O
from oodbench.data.materialize import run as materialize
from oodbench.formats.classifier import Linear, load_fc, save_fc
from oodbench.formats.features import load_features
from oodbench.formats.manifest import read_manifest
from oodbench.results import fsood
from oodbench.results.openood_table import render
from tests.faults_catalogue import catalogue
from tests.user_project import run


def imglists(data: Path, bench: str, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Every list of `bench` in OpenOOD's format, three lines each; returns the lines."""
    folder = data / "benchmark_imglist" / bench
    folder.mkdir(parents=True)
    written = {}
    for item in O.get(bench).lists:
        if item.file in skip:
            continue
        lines = [f"{item.name}/sub/img{i}.jpg {i % 3}" for i in range(3)]
        (folder / item.file).write_text("\n".join(lines) + "\n")
        written[item.name] = lines
    return written


def test_init_openood_writes_v15s_cifar10_benchmark(tmp_path: Path) -> None:
    data, dest = tmp_path / "openood", tmp_path / "project"
    dest.mkdir()
    lines = imglists(data, "cifar10")
    done = run([sys.executable, "-m", "oodbench.cli.app", "init", "openood", "cifar10",
                "--data", str(data), str(dest)], tmp_path)  # fmt: skip
    params = yaml.safe_load((dest / "params.yaml").read_text())
    bench = params["benchmark"]
    assert bench["id_train"] == "cifar10_train" and bench["id_val"] == "cifar10_test"
    assert bench["ood"] == ["cifar100", "tin", "mnist", "svhn", "texture", "places365", "cifar10c"]
    groups = {name: block["group"] for name, block in params["datasets"].items()}
    assert [n for n, g in groups.items() if g == "near"] == ["cifar100", "tin"]
    assert [n for n, g in groups.items() if g == "far"] == [
        "mnist", "svhn", "texture", "places365", "tin_val",
    ]  # fmt: skip
    assert groups["cifar10c"] == "csid" and groups["cifar10_val"] == "id"
    classic = (data / "images_classic").resolve().as_posix()
    assert {block["root"] for block in params["datasets"].values()} == {classic}
    assert params["backbones"] == {
        "resnet18": {"preset": "openood_cifar10", "checkpoint": "checkpoints/resnet18/best.ckpt"}
    }
    assert params["methods"]["knn"] == {"variant": "openood"}
    assert params["methods"]["ash"] == {"variant": "b", "percentile": 90.0}
    assert set(bench["methods"]) == set(params["methods"])
    # datalists: OpenOOD's paths as they are, ID and csid labels kept, OOD labels -1
    for name, listed in lines.items():
        text = (dest / "datalists" / f"{name}.txt").read_text().splitlines()
        want = [ln.rsplit(" ", 1)[0] for ln in listed]
        assert [ln.rsplit(" ", 1)[0] for ln in text] == want
        labels = [int(ln.rsplit(" ", 1)[1]) for ln in text]
        ood = groups[name] in ("near", "far")
        assert labels == ([-1] * 3 if ood else [0, 1, 2]), name
    assert "benchmark.tune_ood: tin_val" in done.stdout
    # a second init refuses to replace the project's files, and writes nothing
    before = (dest / "params.yaml").read_text()
    again = run([sys.executable, "-m", "oodbench.cli.app", "init", "openood", "cifar10",
                 "--data", str(data), str(dest)], tmp_path, check=False)  # fmt: skip
    assert again.returncode == 2 and "already exist; pass --force" in again.stderr
    assert (dest / "params.yaml").read_text() == before


@pytest.mark.parametrize("bench", ["cifar100", "imagenet200", "imagenet"])
def test_init_openood_other_benchmarks(tmp_path: Path, bench: str) -> None:
    imglists(tmp_path, bench)
    params, datalists, _ = O.openood_benchmark(bench, tmp_path, tmp_path)
    groups = {n: b["group"] for n, b in params["datasets"].items()}
    near = [n for n, g in groups.items() if g == "near"]
    far = [n for n in params["benchmark"]["ood"] if groups[n] == "far"]
    csid = [n for n in params["benchmark"]["ood"] if groups[n] == "csid"]
    if bench == "cifar100":
        assert (near, far, csid) == (
            ["cifar10", "tin"],
            ["mnist", "svhn", "texture", "places365"],
            [],
        )
        assert params["backbones"]["resnet18"]["preset"] == "openood_cifar100"
        return
    assert near == ["ssb_hard", "ninco"] and far == ["inaturalist", "textures", "openimage_o"]
    assert csid == [
        "imagenet_v2",
        "imagenet_c",
        "imagenet_r",
        *(["imagenet_es"] if bench == "imagenet" else []),
    ]
    # textures live under images_classic, the rest under images_largescale (relative: inside)
    assert params["datasets"]["textures"]["root"] == "images_classic"
    assert params["datasets"]["ninco"]["root"] == "images_largescale"
    backbone = "resnet50" if bench == "imagenet" else "resnet18"
    assert params["backbones"][backbone]["preset"] == f"openood_{bench}"
    assert set(datalists) == set(params["datasets"])


@catalogue(
    "datalist",
    "`oodbench init openood` is given a folder without the benchmark's required imglists",
    "one line naming the folder and every missing list; optional lists (csid, validation) are left out with a note",
)
def test_init_openood_missing_lists(tmp_path: Path) -> None:
    imglists(tmp_path, "cifar10", skip=("test_tin.txt", "test_svhn.txt"))
    with pytest.raises(
        DataError, match=r"benchmark_imglist/cifar10: .* lacks test_tin\.txt, test_svhn\.txt"
    ):
        O.openood_benchmark("cifar10", tmp_path, tmp_path)
    optional = tmp_path / "opt"
    imglists(optional, "cifar10", skip=("test_cifar10c.txt", "val_tin.txt"))
    params, datalists, notes = O.openood_benchmark("cifar10", optional, tmp_path)
    assert "cifar10c" not in params["benchmark"]["ood"] and "cifar10c" not in datalists
    assert any("test_cifar10c.txt not found" in n for n in notes)
    with pytest.raises(ParamsError, match="unknown OpenOOD benchmark 'cifar11'"):
        O.openood_benchmark("cifar11", tmp_path, tmp_path)


METRICS = {
    "id": {"n": 4, "accuracy": 0.75},
    "methods": {
        "msp": {"a": {}, "near": {"auroc": 0.8, "fpr95_ood_positive": 0.5}, "far": {"auroc": 0.9, "fpr95_ood_positive": 0.3}},
        "knn": {"a": {}, "near": {"auroc": 0.7, "fpr95_ood_positive": 0.4}, "far": {"auroc": 0.95, "fpr95_ood_positive": 0.1}},
    },
    "fsood": {
        "id": {"n": 6, "accuracy": 0.5},
        "csid": {"c10c": {"n": 2}},
        "methods": {"msp": {"near": {"auroc": 0.6, "fpr95_ood_positive": 0.7}, "far": {"auroc": 0.65, "fpr95_ood_positive": 0.6}}},
    },
}  # fmt: skip


def test_the_openood_table() -> None:
    text = render({"r18": METRICS}, "markdown")
    assert "**r18: OOD**" in text and "**r18: full-spectrum OOD (ID + c10c)**" in text
    assert "| msp | **80.00** | 90.00 | 50.00 | 30.00 | 75.00 |" in text
    assert "| knn | 70.00 | **95.00** | **40.00** | **10.00** | 75.00 |" in text
    assert "| msp | **60.00** | **65.00** | **70.00** | **60.00** | 50.00 |" in text
    table = render({"r18": METRICS}, "table").splitlines()
    assert table[1].split() == [
        "method",
        "near",
        "AUROC",
        "far",
        "AUROC",
        "near",
        "FPR@95",
        "far",
        "FPR@95",
        "ID",
        "ACC",
    ]
    assert table[3].split() == ["msp", "80.00", "90.00", "50.00", "30.00", "75.00"]
    rows = render({"r18": METRICS}, "csv").splitlines()
    assert rows[1] == "r18: OOD,msp,0.800000,0.900000,0.500000,0.300000,0.750000"


def test_fsood_counts_csid_rows_as_id() -> None:
    scores = {"val": np.array([1.0, 2.0]), "c10c": np.array([3.0]), "mnist": np.array([0.5])}
    out = fsood.as_id(scores, "val", ["c10c"])
    assert set(out) == {"val", "mnist"}
    np.testing.assert_array_equal(out["val"], [1.0, 2.0, 3.0])


# ---- features extracted elsewhere ----------------------------------------------------


def test_materialize_without_images(tmp_path: Path) -> None:
    """Every backbone imported: the datalist's rows become the manifest, no file opened."""
    (tmp_path / "list.txt").write_text("a/x.png 0\nb/y.png -1\n")
    out = tmp_path / "m.parquet"
    materialize("d", tmp_path / "list.txt", tmp_path / "nowhere", out, False, images=False)
    frame, meta = read_manifest(out)
    assert frame["path"].tolist() == ["a/x.png", "b/y.png"] and frame["label"].tolist() == [0, -1]
    assert set(frame["status"]) == {"ok"} and meta["dataset"] == "d"
    with pytest.raises(DataError, match="dataset root of 'd' is not a directory"):
        materialize("d", tmp_path / "list.txt", tmp_path / "nowhere", out, False)


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    (tmp_path / "list.txt").write_text("".join(f"img{i}.png {i % 2}\n" for i in range(4)))
    out = tmp_path / "d.parquet"
    materialize("d", tmp_path / "list.txt", tmp_path, out, False, images=False)
    return out


def test_every_format_imports_the_same_rows(tmp_path: Path, manifest: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    weight, bias = rows[:3].copy(), np.arange(3, dtype=np.float32)
    np.save(tmp_path / "a.npy", rows)
    torch.save(torch.from_numpy(rows), tmp_path / "b.pt")
    (tmp_path / "c.pkl").write_bytes(pickle.dumps(rows, protocol=2))
    fcs = {
        "fc.pkl": lambda p: p.write_bytes(pickle.dumps([weight, bias], protocol=4)),
        "fc.npz": lambda p: np.savez(p, weight=weight, bias=bias),
        "fc.pt": lambda p: torch.save({"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)}, p),
        "fc.safetensors": lambda p: save_fc(p, Linear(weight, bias, ["0", "1", "2"])),
    }  # fmt: skip
    for name, write in fcs.items():
        write(tmp_path / name)
        fc = imported.read_fc(tmp_path / name)
        np.testing.assert_array_equal(fc.weight, weight)
        np.testing.assert_array_equal(fc.bias, bias)
    for source in ("a.npy", "b.pt", "c.pkl"):
        out = tmp_path / "out" / source
        n = imported.import_dataset(
            "bb", "d", tmp_path / source, tmp_path / "fc.npz", manifest, out
        )
        got = load_features(out, backbone="bb")
        assert n == 4 and got.labels.tolist() == [0, 1, 0, 1] and got.index.tolist() == [0, 1, 2, 3]
        np.testing.assert_array_equal(got.features, rows)
    # a feature folder (what `oodbench import-pkl` writes) imports as well
    again = imported.import_dataset(
        "bb", "d", tmp_path / "out" / "a.npy", None, manifest, tmp_path / "o2"
    )
    assert again == 4


@catalogue(
    "files",
    "imported features are wider or narrower than the imported classifier, have another row count than the datalist, or are a pickle that names code",
    "the `import-<ds>` stage refuses them naming the file, both widths or counts (or the refused global); nothing is written",
)
def test_imported_features_that_do_not_fit(tmp_path: Path, manifest: Path) -> None:
    np.save(tmp_path / "wide.npy", np.ones((4, 7), np.float32))
    np.save(tmp_path / "short.npy", np.ones((3, 6), np.float32))
    np.savez(tmp_path / "fc.npz", weight=np.ones((2, 6), np.float32), bias=np.zeros(2, np.float32))
    out = tmp_path / "out"
    with pytest.raises(
        DataError,
        match=r"wide\.npy: 7 features per row, but the classifier .*fc\.npz has W of width 6",
    ):
        imported.import_dataset(
            "bb", "d", tmp_path / "wide.npy", tmp_path / "fc.npz", manifest, out
        )
    with pytest.raises(
        DataError, match=r"short\.npy: 3 feature rows but datalists/d\.txt lists 4 images"
    ):
        imported.import_dataset("bb", "d", tmp_path / "short.npy", None, manifest, out)
    assert not out.exists()  # nothing half-written
    (tmp_path / "evil.pkl").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(DataError, match=r"refused to unpickle os\.system"):
        imported.import_dataset("bb", "d", tmp_path / "evil.pkl", None, manifest, out)
    np.savez(tmp_path / "nobias.npz", weight=np.ones((2, 6), np.float32))
    with pytest.raises(DataError, match=r"nobias\.npz: no 'bias' array"):
        imported.read_fc(tmp_path / "nobias.npz")


@catalogue(
    "files",
    "an imported backbone's folder lacks a dataset's features, has two files for one, or has no classifier for `fc: head`",
    "the check stage names `backbones.<bb>.imported`, the folder and the file names it expects",
)
def test_the_check_stage_names_a_missing_imported_file(tmp_path: Path) -> None:
    folder = tmp_path / "imp"
    folder.mkdir()
    np.save(folder / "train.npy", np.ones((2, 3)))
    np.save(folder / "val.npy", np.ones((2, 3)))
    (folder / "val.pkl").write_bytes(b"")
    with pytest.raises(
        ParamsError, match=r"backbones\.i\.imported: no features for dataset 'ood' in imp"
    ):
        imported.check_folder("backbones.i", "imp", ["train", "ood"], False, tmp_path)
    with pytest.raises(
        ParamsError, match=r"backbones\.i\.imported: 2 files \(val\.npy, val\.pkl\)"
    ):
        imported.check_folder("backbones.i", "imp", ["val"], False, tmp_path)
    with pytest.raises(
        ParamsError, match=r"backbones\.i\.imported: no classifier in imp for fc: head"
    ):
        imported.check_folder("backbones.i", "imp", ["train"], True, tmp_path)
    with pytest.raises(ParamsError, match=r"backbones\.i\.imported: folder gone not found"):
        imported.check_folder("backbones.i", "gone", ["train"], True, tmp_path)
    assert imported.feature_source("imp", "train", tmp_path) == "imp/train.npy"
    save_fc(
        folder / "fc.safetensors",
        Linear(np.ones((2, 3), np.float32), np.zeros(2, np.float32), ["a", "b"]),
    )
    assert imported.fc_source("imp", tmp_path) == "imp/fc.safetensors"
    assert load_fc(folder / "fc.safetensors").num_classes == 2


def test_the_check_stage_on_csid_sets_and_imported_backbones(tmp_path: Path) -> None:
    """The check stage accepts group csid beside near/far, refuses a benchmark of csid
    sets only or csid with one_class, and checks an imported folder file by file."""
    from oodbench.pipeline.check import validate

    folder = tmp_path / "imp"
    folder.mkdir()
    for name in ("tr", "va", "mn", "c10c"):
        np.save(folder / f"{name}.npy", np.ones((2, 3), np.float32))
    np.savez(folder / "fc.npz", weight=np.ones((2, 3), np.float32), bias=np.zeros(2, np.float32))
    groups = {"tr": "id", "va": "id", "mn": "far", "c10c": "csid"}
    params = {
        "benchmark": {"backbones": ["imp"], "methods": ["msp"], "id_train": "tr", "id_val": "va",
                      "ood": ["mn", "c10c"]},
        "datasets": {name: {"root": "nowhere", "group": g} for name, g in groups.items()},
        "backbones": {"imp": {"imported": "imp"}},
        "methods": {"msp": {}},
    }  # fmt: skip
    assert validate(params, tmp_path).ood == ["mn", "c10c"]
    params["benchmark"]["one_class"] = 0
    with pytest.raises(
        ParamsError, match=r"benchmark\.one_class: .* remove the csid sets \(c10c\)"
    ):
        validate(params, tmp_path)
    del params["benchmark"]["one_class"]
    params["benchmark"]["ood"] = ["c10c"]
    with pytest.raises(ParamsError, match=r"benchmark\.ood lists only csid sets"):
        validate(params, tmp_path)
    params["benchmark"]["ood"] = ["mn"]
    (folder / "mn.npy").unlink()
    with pytest.raises(
        ParamsError, match=r"backbones\.imp\.imported: no features for dataset 'mn'"
    ):
        validate(params, tmp_path)
