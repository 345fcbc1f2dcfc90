"""Stage ``score-<bb>-<method>``: fit one OOD method on ID train, score ID val and OOD sets.

Logits are recomputed from the features and the exported classifier in float32, as
the reference code does, so a probe or a MOS group head scores the same way as a
model's own head. Scores go to ``scores/<bb>/<method>.parquet`` (dataset, index, score).
A method the backbone's classifier cannot serve (``mcm`` without a CLIP text head,
``mos`` without a group head) is skipped: its table holds no rows and says why, and
the report shows the reason instead of stopping the benchmark halfway.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from oodbench.core.errors import DataError
from oodbench.formats.classifier import Linear, load_fc
from oodbench.formats.features import FeatureSet, load_features
from oodbench.formats.paths import fc_path, features_dir, scores_path
from oodbench.formats.scores import save_scores, save_skipped
from oodbench.formats.specs import method_spec, read_spec, scoring_spec
from oodbench.methods import Detector, create
from oodbench.results.fitdata import check_finite, load_fit_data


def detector_of(method: str) -> Detector:
    """The detector of ``methods.<method>`` as the check stage resolved it."""
    spec = read_spec(method_spec(method), f"methods.{method}")
    return create(spec["method"], spec["hyperparameters"], where=f"methods.{method}")


def score_method(backbone: str, method: str, features: str | None = None) -> None:
    """Stage ``score-<bb>-<method>``: fit on ID train, score ID val and every OOD set.

    `features` names the backbone whose feature folders to read, for an entry that shares
    another's extraction (``backbones.<bb>.features``); by default `backbone`'s own."""
    source = features or backbone
    detector = detector_of(method)
    spec = read_spec(scoring_spec(), "benchmark")
    out = scores_path(backbone, method)
    fc = load_fc(fc_path(backbone))
    reason = detector.unsupported(fc)
    if reason is not None:
        save_skipped(out, reason)
        print(f"score {backbone}/{method}: skipped ({reason})", file=sys.stderr)
        return
    start = time.perf_counter()
    data, val = load_fit_data(
        source, detector, fc, spec["id_train"], spec["id_val"], spec["one_class"]
    )
    detector.fit(data)
    fit_seconds = time.perf_counter() - start
    rows = [(spec["id_val"], val.index, score_set(detector, val, fc))]
    for name in spec["ood"]:
        ood = load_features(features_dir(source, name), backbone=source)
        check_finite(ood)
        rows.append((name, ood.index, score_set(detector, ood, fc)))
    save_scores(out, rows)
    total = sum(len(r[1]) for r in rows)
    print(
        f"score {backbone}/{method}: fit {fit_seconds:.2f}s, {total} samples in "
        f"{time.perf_counter() - start - fit_seconds:.2f}s"
    )


def score_set(detector: Detector, features: FeatureSet, fc: Linear) -> np.ndarray:
    """The detector's scores of one dataset, checked: one finite float64 per row."""
    raw = detector.score(features.features, fc.logits(features.features))
    scores = np.asarray(raw, np.float64)
    if scores.shape != (len(features),):
        raise DataError(
            f"{detector.params_key} returned shape {scores.shape} for {len(features)} rows"
        )
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise DataError(
            f"{detector.params_key} produced {bad.size} NaN/Inf scores on dataset "
            f"{features.dataset!r} (manifest index {features.index[bad[:10]].tolist()}); "
            "check its options in params.yaml (e.g. klm `empty: nan` poisons every score)"
        )
    return scores
