"""One-class benchmark (benchmark.one_class: K): unit tests and a real `dvc repro`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from oodbench.core.errors import DataError, ParamsError
from oodbench.data.oneclass import one_class_of, restrict, split_id_val
from oodbench.formats.features import FeatureSet
from tests.conftest import rewrite_params, run


def test_one_class_of_validates_the_key():
    assert one_class_of({"benchmark": {}}) is None
    assert one_class_of({"benchmark": {"one_class": None}}) is None
    assert one_class_of({"benchmark": {"one_class": 3}}) == 3
    for bad in (-1, "3", True, 1.5):
        with pytest.raises(ParamsError, match=r"benchmark\.one_class"):
            one_class_of({"benchmark": {"one_class": bad}})


def test_restrict_keeps_the_class_rows():
    fs = FeatureSet(
        dataset="train",
        features=np.arange(12, dtype=np.float32).reshape(6, 2),
        labels=np.array([0, 1, 2, 1, 0, 1]),
        index=np.arange(6) + 10,
    )
    assert restrict(fs, None) is fs
    only = restrict(fs, 1)
    assert only.index.tolist() == [11, 13, 15] and only.features[:, 0].tolist() == [2, 6, 10]
    with pytest.raises(DataError, match="class 7 has no rows"):
        restrict(fs, 7)


def test_split_id_val_joins_labels_on_the_index():
    table = pd.DataFrame(
        {
            "dataset": ["val"] * 4 + ["ood"],
            "index": [3, 1, 2, 0, 0],
            "score": [0.3, 0.1, 0.2, 0.0, 9.0],
        }
    )
    # features in a different order than the score rows: the join must not care
    split = split_id_val(table, "val", np.array([0, 1, 2, 3]), np.array([5, 5, 6, 7]), 5)
    assert sorted(split["val"].tolist()) == [0.0, 0.1]
    assert split["class_6"].tolist() == [0.2] and split["class_7"].tolist() == [0.3]
    with pytest.raises(DataError, match="unlabelled"):
        split_id_val(table, "val", np.array([0, 1, 2, 3]), np.array([5, -1, 6, 7]), 5)


@pytest.mark.slow
def test_one_class_repro(demo_copy):
    """ID = digit 2; the other five ID digits become OOD sets; detectors fit on class 2.
    knn_openood (k=50) and nnguide (k=100) exceed class 2's six train rows and still run."""

    def one_class(params):
        params["benchmark"]["one_class"] = 2
        params["benchmark"]["methods"] += ["knn_openood", "nnguide"]

    rewrite_params(demo_copy, one_class)
    run(["oodbench", "pipeline"], demo_copy)
    # the check stage resolves one_class into the scoring and evaluate specs
    ran = run(["dvc", "repro"], demo_copy).stdout
    assert "Running stage 'pipelines/lite0/dvc.yaml:extract" not in ran
    assert "Running stage 'pipelines/lite0/dvc.yaml:fc'" not in ran
    report = json.loads((demo_copy / "metrics" / "lite0.json").read_text())
    assert report["id"]["one_class"] == 2 and report["id"]["n"] == 4
    classes = [f"class_{c}" for c in (0, 1, 3, 4, 5)]
    assert list(report["ood"]) == [*classes, "digits_near", "textures", "photos"]
    for name in classes:
        assert report["ood"][name]["n"] == 4
    msp = report["methods"]["msp"]
    assert set(msp) == {*classes, "digits_near", "textures", "photos", "mean", "near", "far"}
    assert {"knn_openood", "nnguide"} <= set(report["methods"])
    # react's clip is the 0.99 quantile of the class-2 train rows only
    from scipy.special import logsumexp

    from oodbench.formats.classifier import load_fc
    from oodbench.formats.features import load_features
    from oodbench.methods.shared.clipping import clip_threshold, clipped_logits

    feats = demo_copy / "features" / "lite0"
    train = load_features(feats / "digits_id_train")
    val = load_features(feats / "digits_id_val")
    fc = load_fc(feats / "fc.safetensors")
    clip = clip_threshold(train.features[train.labels == 2], 0.99)
    assert clip != clip_threshold(train.features, 0.99)
    expected = logsumexp(clipped_logits(val.features, clip, fc.weight, fc.bias), axis=1)
    scores = pd.read_parquet(demo_copy / "scores" / "lite0" / "react.parquet")
    got = scores[scores["dataset"] == "digits_id_val"]["score"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)  # every val row is scored
