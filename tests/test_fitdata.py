"""One fit-data loader: score, predict and tune fit every method on the same rows, class
names included, so they score alike (SHE once scored [0.692 2.468 1.581 0.282 1.848] in
the score stage and [0.692 2.468 0 0 1.848] in predict and tune, which dropped the names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oodbench.core.params import read_params_file
from oodbench.formats.class_names import ListClasses, save_list_classes
from oodbench.formats.classifier import Linear, save_fc
from oodbench.formats.paths import classes_record_path, fc_path, features_dir
from oodbench.methods import from_params
from oodbench.results.fitdata import load_fit_data
from oodbench.results.tune import tune_rows
from tests.conftest import feature_dir

ROOT = Path(__file__).resolve().parents[1]
DEMO = read_params_file(ROOT / "params.yaml")
NAMES = ["c0", "c1", "c2"]


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Linear:
    """Train and val features of 3 classes whose lists name them in another order than
    the classifier (the case that needs the names), and a classifier."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 16))
    for name, per in (("train", 30), ("val", 10)):
        labels = np.repeat(np.arange(3), per)
        x = (centres[labels] + rng.normal(0, 1, (len(labels), 16))).astype(np.float32)
        feature_dir(features_dir("bb", name), np.abs(x), labels.tolist(), "bb")
        # the list names label i as NAMES[2 - i]: reversed against the classifier
        save_list_classes(classes_record_path(name), name, ListClasses(NAMES[::-1], "list"))
    weight = np.abs(centres[::-1]).astype(np.float32)  # class j of the head = list label 2-j
    fc = Linear(weight, np.zeros(3, np.float32), NAMES)
    save_fc(fc_path("bb"), fc)
    return fc


def detector(key: str):
    return from_params(key, DEMO["methods"][key])


@pytest.mark.parametrize("key", [k for k in DEMO["methods"] if k not in ("mos", "local_react")])
def test_score_predict_and_tune_fit_alike(workspace, key) -> None:
    fc = workspace
    params = {"benchmark": {"id_train": "train", "id_val": "val", "one_class": None}}

    def fitted(data):
        return from_params(key, DEMO["methods"][key]).fit(data)

    score_data, val = load_fit_data("bb", detector(key), fc, "train", "val")
    tuned_train = tune_rows("bb", fc, params)
    x = val.features
    logits = fc.logits(x)
    by_score = fitted(score_data).score(x, logits)
    if score_data.train is not None:
        assert tuned_train.classes == score_data.train.classes
        np.testing.assert_array_equal(tuned_train.features, score_data.train.features)
        tuned = type(score_data)(fc=fc, train=tuned_train, val=score_data.val)
        np.testing.assert_array_equal(fitted(tuned).score(x, logits), by_score)
    # predict fits through the very same call (results/predict.py)
    predict_data, _ = load_fit_data("bb", detector(key), fc, "train", "val", None, "bb")
    np.testing.assert_array_equal(fitted(predict_data).score(x, logits), by_score)


def test_she_sees_the_class_names_through_the_loader(workspace) -> None:
    data, val = load_fit_data("bb", detector("she"), workspace, "train", "val")
    assert data.train.classes.names == NAMES[::-1]
    scores = from_params("she", {}).fit(data).score(val.features, workspace.logits(val.features))
    assert (scores != 0).all()  # every class has a pattern once labels are mapped by name
