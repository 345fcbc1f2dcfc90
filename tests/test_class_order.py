"""Class order: a datalist keeps its own label order; labels meet predictions by name.

Each check builds a list whose class order differs from the classifier's (reversed, or
with a class the classifier lacks) and compares the pipeline's number with a plain loop
that looks every label's class name up among the classifier's classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oodbench.core.errors import DataError
from oodbench.data import materialize
from oodbench.formats import class_names, classifier, manifest
from oodbench.formats.class_names import ListClasses
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.heads import export as F
from oodbench.heads.labels import head_class_keys, labels_in_head_order, predict_classes
from oodbench.heads.probe import ProbeConfig
from oodbench.methods import FitData, create
from oodbench.results import evaluate
from tests.conftest import feature_dir

HEAD = ["ant", "bee", "cat", "dog"]  # the classifier's order
FAST = ProbeConfig(epochs=40, lr=0.05, batch_size=32)


def _head(seed: int = 0, d: int = 6) -> Linear:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(len(HEAD), d)).astype(np.float32)
    return Linear(w, rng.normal(size=len(HEAD)).astype(np.float32), list(HEAD))


def _rows(fc: Linear, n: int, seed: int, classes: np.ndarray | None = None) -> np.ndarray:
    """Features around the weight rows of head `classes` (random ones where < 0 or None),
    noisy enough that some rows are misclassified."""
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, fc.num_classes, n)
    picked = drawn if classes is None else np.where(classes >= 0, classes, drawn)
    centres = 2.0 * fc.weight[picked]
    return (centres + rng.normal(size=centres.shape)).astype(np.float32)


def _head_classes(labels: np.ndarray, names: list[str] | None) -> np.ndarray:
    """The head class each row truly belongs to (-1: unknown or not a head class)."""
    names = names if names is not None else HEAD
    return np.array([HEAD.index(names[k]) if k >= 0 and names[k] in HEAD else -1 for k in labels])


def _loop_accuracy(fc: Linear, x: np.ndarray, labels: np.ndarray, names: list[str]) -> float:
    """Accuracy by hand: a row counts when its class is a head class; head index by name."""
    hits = total = 0
    for row, label in zip(x, labels, strict=True):
        if label < 0 or names[label] not in fc.class_names:
            continue
        z = [float(row @ fc.weight[c] + fc.bias[c]) for c in range(fc.num_classes)]
        hits += int(np.argmax(z) == fc.class_names.index(names[label]))
        total += 1
    return hits / total


def _val_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str] | None, labels: np.ndarray
) -> tuple[Linear, np.ndarray]:
    """features/bb/val + fc + the class record materialize writes, in a fresh cwd."""
    monkeypatch.chdir(tmp_path)
    fc = _head()
    x = _rows(fc, len(labels), seed=1, classes=_head_classes(labels, names))
    feature_dir(Path("features/bb/val"), x, labels.tolist(), "bb")
    classifier.save_fc(Path("features/bb/fc.safetensors"), fc)
    classes = ListClasses(names, "datalists/val.classes.txt") if names is not None else None
    Path("data/manifests").mkdir(parents=True)
    class_names.save_list_classes(Path("data/manifests/val.classes.json"), "val", classes)
    return fc, x


def test_accuracy_maps_a_reversed_list_to_the_head_by_name(tmp_path, monkeypatch) -> None:
    names = HEAD[::-1]  # list label 0 is "dog", the head's class 3
    labels = np.tile(np.arange(4), 30)
    fc, x = _val_workspace(tmp_path, monkeypatch, names, labels)
    entry = evaluate.id_accuracy("bb", "val")
    expected = _loop_accuracy(fc, x, labels, names)
    assert entry == {"n": 120, "accuracy": pytest.approx(expected, abs=1e-12), "accuracy_n": 120}
    # the raw labels would give a different (wrong) number on this list
    assert 0.7 < expected < 1.0
    assert float(np.mean(predict_classes(fc, x) == labels)) < 0.5


def test_accuracy_without_a_classes_file_takes_labels_as_head_indices(
    tmp_path, monkeypatch
) -> None:
    labels = np.tile(np.arange(4), 30)
    fc, x = _val_workspace(tmp_path, monkeypatch, None, labels)
    entry = evaluate.id_accuracy("bb", "val")
    assert entry == {"n": 120, "accuracy": _loop_accuracy(fc, x, labels, HEAD)}


def test_accuracy_is_over_the_rows_whose_class_the_head_has(tmp_path, monkeypatch, capsys) -> None:
    names = ["dog", "emu", "ant", "fox", "cat"]  # emu, fox: classes the head lacks
    labels = np.r_[np.tile(np.arange(5), 20), [-1, -1]]
    fc, x = _val_workspace(tmp_path, monkeypatch, names, labels)
    entry = evaluate.id_accuracy("bb", "val")
    assert entry["n"] == 102 and entry["accuracy_n"] == 60
    assert entry["accuracy"] == pytest.approx(_loop_accuracy(fc, x, labels, names), abs=1e-12)
    message = capsys.readouterr().err
    assert "40 of 100 labelled val rows" in message and "over the other 60" in message


def test_no_list_class_in_the_head_is_an_error_naming_the_file(tmp_path, monkeypatch) -> None:
    _val_workspace(tmp_path, monkeypatch, ["n01", "n02", "n03", "n04"], np.arange(4))
    with pytest.raises(DataError, match=r"datalists/val\.classes\.txt: none of the classes"):
        evaluate.id_accuracy("bb", "val")


def _she_patterns_by_loop(fc: Linear, train: FeatureSet, names: list[str]) -> np.ndarray:
    """SHE's stored patterns by hand: mean of the rows labelled c (by name) and predicted c."""
    x = train.features.astype(np.float64)
    patterns = np.zeros((fc.num_classes, x.shape[1]))
    for c, head_name in enumerate(fc.class_names):
        rows = [
            i
            for i, label in enumerate(train.labels)
            if label >= 0
            and names[label] == head_name
            and int(np.argmax(fc.logits(train.features[i : i + 1])[0])) == c
        ]
        if rows:
            patterns[c] = x[rows].mean(axis=0)
    return patterns


def test_she_counts_correct_rows_by_class_name() -> None:
    fc = _head()
    names = ["dog", "emu", "bee", "cat", "ant"]  # shuffled, and emu is not a head class
    rng = np.random.default_rng(2)
    x = _rows(fc, 200, seed=3)
    # labels agree with the prediction for most rows, written in the list's own order
    head_pred = fc.logits(x).argmax(axis=1)
    labels = np.array([names.index(HEAD[p]) for p in head_pred])
    labels[rng.random(200) < 0.2] = 1  # some rows are "emu"
    labels[:5] = -1
    train = FeatureSet("train", x, labels, np.arange(200), classes=ListClasses(names, "t.txt"))
    she = create("she").fit(FitData(fc=fc, train=train))
    expected = _she_patterns_by_loop(fc, train, names)
    np.testing.assert_allclose(she.patterns_, expected, rtol=1e-5, atol=1e-6)
    test = _rows(fc, 20, seed=4)
    ref = [float(row @ expected[int(np.argmax(fc.logits(row[None])[0]))]) for row in test]
    np.testing.assert_allclose(she.score(test, None), ref, rtol=1e-4, atol=1e-5)
    # the raw list labels taken as head indices would be wrong here
    raw = FeatureSet("train", x, labels, np.arange(200))
    assert not np.allclose(create("she").fit(FitData(fc=fc, train=raw)).patterns_, expected)
    # the same rows with head-order labels and no names fit the same patterns
    plain = FeatureSet("train", x, labels_in_head_order(train, fc), np.arange(200))
    np.testing.assert_allclose(
        create("she").fit(FitData(fc=fc, train=plain)).patterns_, expected, rtol=1e-5, atol=1e-6
    )


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "data"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / f"{i}.png")
    (tmp_path / "datalists").mkdir()
    datalist = tmp_path / "datalists" / "toy.txt"
    datalist.write_text("0.png 1\n1.png 0\n2.png -1\n")
    return root, datalist


def test_materialize_records_the_class_names_next_to_the_manifest(tmp_path) -> None:
    root, datalist = _tree(tmp_path)
    out = tmp_path / "manifests" / "toy.parquet"
    materialize.run("toy", datalist, root, out, skip_bad=False)
    record = json.loads((tmp_path / "manifests" / "toy.classes.json").read_text())
    assert record == {"dataset": "toy", "source": None, "classes": None}
    assert class_names.load_list_classes(class_names.classes_sidecar(out)) is None

    (tmp_path / "datalists" / "toy.classes.txt").write_text("zebra\nyak\n")
    materialize.run("toy", datalist, root, out, skip_bad=False)
    classes = class_names.load_list_classes(class_names.classes_sidecar(out))
    assert classes == ListClasses(
        ["zebra", "yak"], (datalist.parent / "toy.classes.txt").as_posix()
    )
    table, _ = manifest.read_manifest(out)
    assert table["label"].tolist() == [1, 0, -1]  # the list's own numbering is kept


def test_materialize_refuses_a_label_the_classes_file_does_not_name(tmp_path) -> None:
    root, datalist = _tree(tmp_path)
    (tmp_path / "datalists" / "toy.classes.txt").write_text("zebra\n")
    out = tmp_path / "manifests" / "toy.parquet"
    with pytest.raises(
        DataError, match=r"toy\.txt: line 1: label 1 has no name in .*toy\.classes\.txt"
    ):
        materialize.run("toy", datalist, root, out, skip_bad=False)
    assert not out.exists()


def test_probe_outputs_take_the_train_lists_class_names() -> None:
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 20)
    x = (4 * np.eye(3, 5)[labels] + 0.3 * rng.normal(size=(60, 5))).astype(np.float32)
    fc = F.fit_probe(x, labels, FAST, "tr", ["zebra", "yak", "emu", "unused"])
    assert fc.class_names == ["zebra", "yak", "emu"]
    assert F.fit_probe(x, labels, FAST, "tr").class_names == ["0", "1", "2"]


def test_mos_maps_train_labels_to_the_classes_param_order(tmp_path) -> None:
    """Train list order c, b, a; `classes:` file order a, b, c: the head learns by name."""
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(3), 25)
    x = (4 * np.eye(3, 6)[labels] + 0.3 * rng.normal(size=(75, 6))).astype(np.float32)
    names_file, groups_file = tmp_path / "names.txt", tmp_path / "groups.yaml"
    names_file.write_text("a\nb\nc\n")
    groups_file.write_text("a: 0\nb: 1\nc: 1\n")
    train = FeatureSet("tr", x, labels, np.arange(75), classes=ListClasses(["c", "b", "a"], "l"))
    fc = F.fit_mos(train, str(names_file), str(groups_file), FAST, "bb")
    assert head_class_keys(fc) == ["a", "b", "c"]
    predicted = [head_class_keys(fc)[p] for p in predict_classes(fc, x)]
    assert predicted == [["c", "b", "a"][label] for label in labels]

    stray = FeatureSet("tr", x, labels, np.arange(75), classes=ListClasses(["c", "b", "q"], "l"))
    with pytest.raises(DataError, match=r"l: class 'q' \(25 ID train rows\) is not among"):
        F.fit_mos(stray, str(names_file), str(groups_file), FAST, "bb")


def test_imagenet_head_keeps_wnids_so_wnid_lists_map_to_it(tmp_path) -> None:
    import timm

    from oodbench.data.classes import imagenet_sorted_wnids
    from oodbench.models.backbones import model_head

    head = model_head(timm.create_model("resnet18", pretrained=False))
    assert head.class_ids == imagenet_sorted_wnids() and head.class_names[0].startswith("tench")
    classifier.save_fc(tmp_path / "fc.safetensors", head)
    back = classifier.load_fc(tmp_path / "fc.safetensors")
    assert back.class_ids == head.class_ids
    # a list in another order (reversed wnids): label 0 is the head's class 999
    reversed_ids = imagenet_sorted_wnids()[::-1]
    val = FeatureSet(
        "val",
        np.zeros((3, 512), np.float32),
        np.array([0, 999, -1]),
        np.arange(3),
        classes=ListClasses(reversed_ids, "x"),
    )
    assert labels_in_head_order(val, back).tolist() == [999, 0, -1]
