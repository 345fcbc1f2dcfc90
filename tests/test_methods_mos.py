"""MOS: the group score against the reference's per-group loop, head training, group files."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.classifier import Linear
from oodbench.heads.groups import class_columns, group_slices, group_targets, load_group_config
from oodbench.heads.mos_head import group_head_loss, train_group_head
from oodbench.methods import FitData, create
from oodbench.methods.mos import IMAGENET_GROUP_SIZES, mos_score

RTOL64, RTOL32 = 1e-12, 1e-5


def ref_mos(row, sizes) -> float:
    """The reference's cal_ood_score for one sample: max over groups of -softmax(slice)[0]."""
    best, start = -math.inf, 0
    for size in sizes:
        group = [float(v) for v in row[start : start + size + 1]]
        m = max(group)
        exps = [math.exp(v - m) for v in group]
        best = max(best, -exps[0] / sum(exps))
        start += size + 1
    return best


def _dummy_fc(columns: int) -> Linear:
    return Linear(
        np.zeros((columns, 4), np.float32), np.zeros(columns, np.float32), ["x"] * columns
    )


@pytest.mark.parametrize("rows", [30, 2500])  # 2500: three row blocks of by_blocks
@pytest.mark.parametrize("dtype,rtol", [(np.float64, RTOL64), (np.float32, RTOL32)])
@pytest.mark.parametrize("sizes", [[3, 1, 4], [1], [2, 2, 2, 2]])
def test_mos_score_matches_loop(dtype, rtol, sizes, rows):
    cols = sum(sizes) + len(sizes)
    z = (np.random.default_rng(0).normal(size=(rows, cols)) * 4).astype(dtype)
    det = create("mos", {"group_sizes": sizes}).fit(FitData(fc=_dummy_fc(cols)))
    np.testing.assert_allclose(det.score(None, z), [ref_mos(r, sizes) for r in z], rtol=rtol)


def test_mos_group_sizes_come_from_the_group_head():
    """Unset group_sizes: the fc stage's class -> group table decides, else ImageNet's."""
    from oodbench.heads.groups import GROUP_OF_CLASS

    fc = _dummy_fc(9)
    fc.extras = {GROUP_OF_CLASS: np.array([1, 0, 1, 2, 0, 1])}
    det = create("mos").fit(FitData(fc=fc))
    assert det.sizes_ == [2, 3, 1]
    z = np.random.default_rng(2).normal(size=(4, 9))
    np.testing.assert_allclose(det.score(None, z), [ref_mos(r, [2, 3, 1]) for r in z], rtol=1e-12)


def test_mos_imagenet_default_single_sample_and_extremes():
    det = create("mos").fit(FitData(fc=_dummy_fc(1008)))
    assert det.sizes_ == IMAGENET_GROUP_SIZES and sum(det.sizes_) == 1000
    z = np.random.default_rng(1).normal(size=(1, 1008)) * 10
    assert det.score(None, z)[0] == pytest.approx(ref_mos(z[0], IMAGENET_GROUP_SIZES), rel=1e-12)
    # huge logits: stable, the "others" probability of the winning group underflows to 0
    sizes = [2, 1]
    big = np.array([[0.0, 1000.0, 0.0, 1000.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    got = mos_score(big, sizes)
    assert np.all(np.isfinite(got)) and got[0] == 0.0
    assert got[1] == pytest.approx(-1 / 3)  # ties: every group uniform, min is group 0's 1/3


def test_mos_rejects_wrong_width_and_bad_params():
    with pytest.raises(DataError, match="group_sizes"):
        create("mos", {"group_sizes": [2, 2]}).fit(FitData(fc=_dummy_fc(5))).score(
            None, np.zeros((3, 5))
        )
    with pytest.raises(ParamsError, match=r"methods\.mos\.group_sizes\[1\]"):
        create("mos", {"group_sizes": [2, 0]})
    with pytest.raises(ParamsError, match=r"methods\.mos\.group_sizes"):
        create("mos", {"group_sizes": []})
    with pytest.raises(ParamsError, match=r"methods\.mos\.group_sizes\[0\]"):
        create("mos", {"group_sizes": [2.5]})


def test_layout_helpers():
    groups = np.array([1, 0, 1, 2, 0, 1])
    assert group_slices([2, 3, 1]).tolist() == [[0, 3], [3, 7], [7, 9]]
    assert class_columns(groups).tolist() == [4, 1, 5, 8, 2, 6]
    assert group_targets(np.array([0, 1, 3, 5]), groups).tolist() == [
        [0, 1, 0],
        [1, 0, 0],
        [0, 0, 1],
        [0, 3, 0],
    ]


def _blobs(n: int = 240, d: int = 8, classes: int = 6, seed: int = 0):
    r = np.random.default_rng(seed)
    centres = r.normal(size=(classes, d)) * 3
    labels = np.arange(n) % classes
    x = (centres[labels] + r.normal(size=(n, d))).astype(np.float32)
    return x, labels


@pytest.fixture
def one_thread():
    """Tiny torch problems run faster (and with less noise on a busy machine) on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_group_head_learns_and_is_deterministic(one_thread):
    x, y = _blobs()
    groups = np.array([0, 0, 1, 1, 1, 2])
    w, b = train_group_head(x, y, groups, epochs=15, batch_size=32, lr=0.05, seed=3)
    assert w.shape == (9, 8) and b.shape == (9,) and w.dtype == np.float32
    zero = group_head_loss(np.zeros_like(w), np.zeros_like(b), x, y, groups)
    assert zero == pytest.approx(math.log(3) + math.log(4) + math.log(2), rel=1e-6)
    short = group_head_loss(
        *train_group_head(x, y, groups, epochs=1, lr=0.05, seed=3), x, y, groups
    )
    trained = group_head_loss(w, b, x, y, groups)
    assert trained < short < zero and trained < 0.2 * zero
    w2, b2 = train_group_head(x, y, groups, epochs=15, batch_size=32, lr=0.05, seed=3)
    np.testing.assert_array_equal(w, w2)
    np.testing.assert_array_equal(b, b2)
    w3, _ = train_group_head(x, y, groups, epochs=15, batch_size=32, lr=0.05, seed=4)
    assert not np.array_equal(w, w3)
    # within its own group the head picks the sample's class; ID scores above noise
    z = x @ w.T + b
    own = groups[y]
    starts = group_slices([2, 3, 1])[:, 0]
    slot = np.array(
        [
            np.argmax(z[i, s : s + size + 1])
            for i, (s, size) in enumerate(zip(starts[own], np.array([2, 3, 1])[own], strict=True))
        ]
    )
    assert np.mean(slot == group_targets(y, groups)[np.arange(len(y)), own]) > 0.9
    noise = np.random.default_rng(9).normal(size=(100, 8)).astype(np.float32) * 0.1
    sizes = [2, 3, 1]
    assert mos_score(z, sizes).mean() > mos_score(noise @ w.T + b, sizes).mean()


def test_train_group_head_rejects_bad_labels(one_thread):
    x, y = _blobs()
    with pytest.raises(DataError, match="labels"):
        train_group_head(x, y + 10, np.array([0, 0, 1, 1, 1, 2]), epochs=1)
    with pytest.raises(DataError):
        train_group_head(x, y[:5], np.array([0, 0, 1, 1, 1, 2]), epochs=1)


NAMES = ["cat", "dog", "tiger cat", "car"]


@pytest.mark.parametrize(
    "name,text",
    [
        ("g.yaml", "cat: 1\ndog: 1\ntiger cat: 1\ncar: 0\n"),
        ("g.yml", "- [car]\n- [cat, 1, tiger cat]\n"),
        ("g.txt", "# class group\ncat 1\ndog 1\ntiger cat 1   # spaces in names\n3 0\n"),
        ("g.txt", "1\n1\n1\n0\n"),
    ],
)
def test_load_group_config_formats(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert load_group_config(path, NAMES).tolist() == [1, 1, 1, 0]


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("g.txt", "cat 0\ndog 0\nbird 1\ncar 1\n", "line 3: unknown class 'bird'"),
        (
            "g.txt",
            "cat 0\ncat 1\ndog 0\ncar 0\ntiger cat 0\n",
            "line 2: class 'cat' is assigned twice",
        ),
        ("g.txt", "cat 0\ndog 0\n", "2 classes have no group"),
        ("g.txt", "cat 0\ndog 2\ntiger cat 2\ncar 2\n", r"\[1\] are empty"),
        ("g.txt", "cat x\n", "line 1: group must be an integer"),
        ("g.txt", "7 0\n", "class index 7 outside"),
        ("g.txt", "0\ndog 0\n", "mixes bare"),
        ("g.yaml", "cat: [1\n", "invalid YAML"),
        ("g.yaml", "just text\n", "expected a mapping"),
        ("g.yaml", "cat: -1\ndog: 0\ntiger cat: 0\ncar: 0\n", "key 'cat': group must be"),
    ],
)
def test_load_group_config_errors(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        load_group_config(path, NAMES)
    with pytest.raises(DataError, match="not found"):
        load_group_config(tmp_path / "missing.txt", NAMES)
