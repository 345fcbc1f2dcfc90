"""fc variants: PLP pseudo-label probing and the MOS group head, on real arrays; the MOS
class prediction against a loop transcription of the reference's calc_group_softmax_acc."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from oodbench.core.errors import DataError
from oodbench.formats.classifier import Linear, load_fc, save_fc
from oodbench.formats.features import FeatureSet
from oodbench.formats.specs import fc_spec, write_spec
from oodbench.heads import export as F
from oodbench.heads.clip_text import CLIP_PROJECTION, CLIP_TEXT
from oodbench.heads.groups import GROUP_OF_CLASS
from oodbench.heads.labels import accuracy, predict_classes
from oodbench.heads.probe import ProbeConfig
from oodbench.methods import FitData, create
from oodbench.pipeline import resolve

FAST = ProbeConfig(epochs=40, lr=0.05, batch_size=32)


def _clusters(n_per: int, centres: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(centres)), n_per)
    return (centres[labels] + 0.3 * rng.normal(size=(len(labels), centres.shape[1]))), labels


def test_plp_learns_the_zero_shot_labels_not_the_true_ones() -> None:
    rng = np.random.default_rng(1)
    proj = np.eye(6, 4, dtype=np.float32)
    text = np.eye(3, 4, dtype=np.float32)  # class c <-> embedding axis c
    feats, _ = _clusters(40, 3 * np.eye(3, 6), seed=2)
    wrong = rng.integers(0, 3, len(feats))  # true labels are ignored by PLP
    extras = {CLIP_PROJECTION: proj, CLIP_TEXT: text}
    fc = F.fit_plp(feats.astype(np.float32), extras, ["a", "b", "c"], FAST, "clip")
    pseudo = (feats @ proj @ text.T).argmax(1)
    assert np.mean(fc.logits(feats).argmax(1) == pseudo) == 1.0
    assert fc.class_names == ["a", "b", "c"] and not np.array_equal(pseudo, wrong)
    with pytest.raises(DataError, match=r"backbones\.vit\.fc: plp needs CLIP"):
        F.fit_plp(feats, {}, None, FAST, "vit")


def _reference_group_prediction(logits: np.ndarray, sizes: list[int]) -> np.ndarray:
    """The MOS reference, per group then per row (returns the global class index)."""
    out, starts = [], np.concatenate([[0], np.cumsum(np.asarray(sizes) + 1)[:-1]])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for row in logits:
        best = (-1.0, -1)
        for g, (s, n) in enumerate(zip(starts, sizes, strict=True)):
            p = np.exp(row[s : s + n + 1] - row[s : s + n + 1].max())
            p = p / p.sum()
            k = int(np.argmax(p[1:]))
            if p[1:][k] > best[0]:
                best = (p[1:][k], offsets[g] + k)
        out.append(best[1])
    return np.array(out)


def test_mos_prediction_matches_the_reference_rule() -> None:
    sizes = [3, 1, 2]
    groups = np.repeat(np.arange(3), sizes)  # classes in group order: global = offset + k
    rng = np.random.default_rng(3)
    w = rng.normal(size=(sum(sizes) + 3, 5)).astype(np.float32)
    fc = Linear(w, np.zeros(len(w), np.float32), [str(i) for i in range(len(w))])
    fc.extras = {GROUP_OF_CLASS: groups}
    x = rng.normal(size=(200, 5)).astype(np.float32)
    np.testing.assert_array_equal(
        predict_classes(fc, x), _reference_group_prediction(fc.logits(x), sizes)
    )


def test_mos_head_trains_classifies_and_scores(tmp_path) -> None:
    feats, labels = _clusters(30, 4 * np.eye(5, 8), seed=4)
    train = FeatureSet("id_train", feats.astype(np.float32), labels, np.arange(len(labels)))
    groups_file = tmp_path / "groups.txt"
    groups_file.write_text("0 1\n1 0\n2 1\n3 0\n4 1\n")  # class group, interleaved
    fc = F.fit_mos(train, None, str(groups_file), FAST, "bb")
    assert fc.weight.shape == (7, 8) and fc.class_names[0] == "others_0"
    assert fc.class_names[1:3] == ["1", "3"] and fc.class_names[3] == "others_1"
    save_fc(tmp_path / "fc.safetensors", fc, {"source": "mos"})
    back = load_fc(tmp_path / "fc.safetensors")
    np.testing.assert_array_equal(back.extras[GROUP_OF_CLASS], [1, 0, 1, 0, 1])
    assert accuracy(back, train) == (1.0, len(labels))  # classes, not C + G logit columns
    unlabelled = FeatureSet("id_train", train.features, -np.ones_like(labels), train.index)
    assert accuracy(back, unlabelled) == (None, 0)
    mos = create("mos", {"group_sizes": [2, 3]}).fit(FitData(fc=back))
    far, _ = _clusters(25, 4 * np.eye(8)[6:], seed=5)  # directions no ID class uses
    id_scores = mos.score(feats, back.logits(feats))
    assert np.median(id_scores) > np.median(mos.score(far, back.logits(far)))


def test_fc_stage_writes_a_mos_head_from_a_preset_block(tmp_path, monkeypatch) -> None:
    """The fc stage: preset defaults + fc: mos + groups file, resolved by the check stage's
    resolver -> fc.safetensors with group ids."""
    feats, labels = _clusters(20, 4 * np.eye(4, 8), seed=6)
    train = FeatureSet("tr", feats.astype(np.float32), labels, np.arange(len(labels)))
    (tmp_path / "g.yaml").write_text("[[0, 1], [2, 3]]\n")
    params = {
        "backbones": {
            "mae": {"preset": "vit_mae", "fc": "mos", "groups": str(tmp_path / "g.yaml")}
        },
        "benchmark": {"id_train": "tr"},
        "probe": {"epochs": 40, "lr": 0.05, "batch_size": 32},
    }
    monkeypatch.chdir(tmp_path)
    bench = SimpleNamespace(id_train="tr")
    model = resolve.model_spec(params, "mae")
    write_spec(fc_spec("mae"), resolve.fc_spec(params, bench, "mae", model))
    monkeypatch.setattr(F, "load_features", lambda *a, **k: train)
    F.export_classifier("mae")
    fc = load_fc(tmp_path / "features/mae/fc.safetensors")
    assert fc.weight.shape == (6, 8) and accuracy(fc, train) == (1.0, len(labels))
    np.testing.assert_array_equal(fc.extras[GROUP_OF_CLASS], [0, 0, 1, 1])


def test_fc_file_bytes_are_the_same_in_every_process(tmp_path) -> None:
    """safetensors writes its header from a hash map; save_fc sorts it, so an fc stage
    rerun on the same inputs leaves the same file and DVC reruns nothing after it."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from oodbench.formats.classifier import Linear, save_fc; "
        "fc = Linear(np.eye(3, 4, dtype=np.float32), np.zeros(3, np.float32), list('abc'), "
        "extras={'group_of_class': np.array([0, 1, 1])}, class_ids=list('xyz')); "
        "save_fc(sys.argv[1], fc, {'source': 'probe', 'train': 't', 'probe': 'p'})"
    )
    paths = [tmp_path / f"fc{i}.safetensors" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    assert len({path.read_bytes() for path in paths}) == 1
    back = load_fc(paths[0])
    assert back.class_names == ["a", "b", "c"] and back.class_ids == ["x", "y", "z"]
    np.testing.assert_array_equal(back.weight, np.eye(3, 4, dtype=np.float32))
    np.testing.assert_array_equal(back.extras[GROUP_OF_CLASS], [0, 1, 1])
