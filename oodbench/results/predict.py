"""``oodbench predict IMAGE``: the MOODv2 single-image demo on the cached benchmark.

For one image and each method: its score, the threshold that keeps 95% of ID val
(``np.percentile(id_val_scores, 5)``, numpy's linear percentile, as the MOODv2 demo
computes it), the verdict in/out of distribution, and the classifier's top classes.

Nothing is re-extracted but the image itself: each detector is fitted on the cached ID
train features exactly as its ``score`` stage fits it, the threshold comes from the
cached ID val features, and the image goes through the same backbone, transform and
feature contract as ``extract`` (``oodbench/models/backbones.py``). Run it after ``dvc repro``.

Methods that score a whole dataset at once cannot score one image: ``local_react``
clips each dataset at a quantile of that dataset's own features, which for a single
image is a quantile of its own D activations. Named with ``--methods`` they are refused
(exit 2); taken from ``benchmark.methods`` they are left out and listed as skipped.

Warnings raised on the way (a fit on few train rows, a model library's notices) are
collected, each distinct one kept once, and printed after the answer rather than
before it (``Prediction.warnings``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from oodbench.core import params as P
from oodbench.core.errors import ParamsError
from oodbench.data.images import open_checked
from oodbench.data.oneclass import one_class_of
from oodbench.formats.classifier import Linear, load_fc
from oodbench.formats.paths import fc_path
from oodbench.methods import Detector, errors_of, from_params
from oodbench.results.fitdata import load_fit_data

KEEP_ID = 95.0  # percent of ID val kept above the threshold


@dataclass
class MethodVerdict:
    """One method's answer for the image."""

    method: str
    score: float
    threshold: float
    in_distribution: bool


@dataclass
class Prediction:
    """The image's verdicts and top classes (class name, probability)."""

    image: str
    backbone: str
    top_classes: list[tuple[str, float]]
    verdicts: list[MethodVerdict]
    #: benchmark.methods entries left out because they cannot score one image, and why
    skipped: dict[str, str] = field(default_factory=dict)
    #: the distinct warnings raised while predicting, in the order first raised
    warnings: list[str] = field(default_factory=list)


def image_features(image: Path, backbone: str, spec: dict) -> np.ndarray:
    """The image's pooled feature [1, D] through the extract stage's model and transform."""
    import torch

    from oodbench.models.backbones import forward_features_and_logits, load_backbone

    pixels = open_checked(image)  # the size limit materialize applies to every dataset
    bb = load_backbone(backbone, spec)
    with torch.inference_mode():
        feats, _ = forward_features_and_logits(bb.model, bb.transform(pixels)[None])
    return feats.float().cpu().numpy()


def top_classes(fc: Linear, feature: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The k most probable classes of the classifier (softmax of the float32 logits)."""
    from scipy.special import softmax

    probs = softmax(fc.logits(feature).astype(np.float64), axis=1)[0]
    order = np.argsort(-probs, kind="stable")[:k]
    return [(fc.class_names[i], float(probs[i])) for i in order]


def predict(
    image: Path, backbone: str, methods: list[str] | None = None, top: int = 5
) -> Prediction:
    """Score `image` with each method against thresholds from the cached ID val scores.

    A method with no ``methods.<m>`` block in params.yaml runs with its defaults, so any
    registered method can be tried on the cached features without a pipeline change.
    The warnings raised on the way are returned in ``Prediction.warnings``, each once.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prediction = _predict(image, backbone, methods, top)
    texts = (f"{w.category.__name__}: {w.message}" for w in caught)
    prediction.warnings = list(dict.fromkeys(texts))
    return prediction


def _predict(image: Path, backbone: str, methods: list[str] | None, top: int) -> Prediction:
    params = P.read_params_file()
    spec = P.get(params, f"backbones.{backbone}", dict)
    # build every detector first: a bad or per-dataset method fails before the model loads
    detectors, skipped = choose_detectors(params, methods)
    one_class = one_class_of(params)
    fc = load_fc(fc_path(backbone))
    sets = (P.get(params, "benchmark.id_train", str), P.get(params, "benchmark.id_val", str))
    feature = image_features(Path(image), backbone, spec)
    image_logits = fc.logits(feature)
    verdicts = []
    for method, detector in detectors.items():
        # the score stage's own loader: the same rows, class names and one-class cut
        data, _ = load_fit_data(backbone, detector, fc, *sets, one_class, fc_backbone=backbone)
        with errors_of(detector, "fit"):  # a user's method: one line naming its line
            detector.fit(data)
        val = data.val  # ID val as fitted on (class K only in one-class mode)
        with errors_of(detector, "score"):
            val_scores = detector.score(val.features, fc.logits(val.features))
            score = float(np.asarray(detector.score(feature, image_logits)).ravel()[0])
        threshold = float(np.percentile(val_scores, 100 - KEEP_ID))
        score, threshold = score + 0.0, threshold + 0.0  # -0.0 -> 0.0: no "-0" printed
        verdicts.append(MethodVerdict(method, score, threshold, bool(score >= threshold)))
    return Prediction(str(image), backbone, top_classes(fc, feature, top), verdicts, skipped)


def choose_detectors(
    params: dict, methods: list[str] | None
) -> tuple[dict[str, Detector], dict[str, str]]:
    """The detectors to run, by method key, and the keys skipped with the reason.

    A per-dataset method (``PER_DATASET``) asked for by name is a ParamsError naming
    it; from the default list (``benchmark.methods``) it is skipped, so a plain
    ``oodbench predict IMAGE`` still works on the demo, whose list has local_react.
    """
    blocks = P.get(params, "methods", dict)
    explicit = bool(methods)
    keys = methods or P.get(params, "benchmark.methods", list)
    detectors, skipped = {}, {}
    for key in keys:
        detector = from_params(key, blocks.get(key))
        why = detector.per_dataset
        if why is None:
            detectors[key] = detector
        elif explicit:
            raise ParamsError(
                f"predict: method {key!r} ({detector.name}) {why}; leave it out of --methods"
            )
        else:
            skipped[key] = why
    if not detectors:
        raise ParamsError("predict: no method can score a single image; pass --methods")
    return detectors, skipped


def readable(value: float) -> str:
    """Four significant digits whatever the magnitude: ``-0.5235``, ``1.235e+21``, ``inf``,
    and zero without a sign (``0``, never ``-0``).

    A fixed ``%.4f`` prints a kNN score of 1e21 as 22 digits and one of 1e-5 as 0.0000;
    the table is for reading, the JSON output keeps full precision."""
    return f"{value + 0.0:.4g}"  # -0.0 + 0.0 is 0.0


def render(pred: Prediction, fmt: str) -> str:
    """JSON for programs, or a plain table for people."""
    if fmt == "json":
        return json.dumps(asdict(pred), indent=2) + "\n"
    lines = [f"{pred.image} ({pred.backbone})", "top classes:"]
    lines += [f"  {name:<24} {100 * p:6.2f}%" for name, p in pred.top_classes]
    lines.append(
        f"{'method':<14} {'score':>12} {'threshold':>12}  verdict (keeps {KEEP_ID:g}% of ID val)"
    )
    for v in pred.verdicts:
        verdict = "in-distribution" if v.in_distribution else "OUT-OF-DISTRIBUTION"
        lines.append(
            f"{v.method:<14} {readable(v.score):>12} {readable(v.threshold):>12}  {verdict}"
        )
    lines += [f"{method:<14} skipped: {why}" for method, why in pred.skipped.items()]
    return "\n".join(lines) + "\n"
