"""Every method scores as the implementation before streamed scoring did, number for number.

``PREVIOUS`` holds the scores (eight rows, then the mean and standard deviation over all
160 rows) that the previous implementation (whole-dataset logits, scipy logsumexp and
softmax, concatenated shards; commit 652791f) computed on the seeded problem below with
its own ``score_set``. The streamed score stage must reproduce them to float32 rounding
(rtol 1e-5), in blocks of any size: here 7 rows (every block boundary crosses a class)
and the stage's default. mcm needs a CLIP head and is covered by tests/test_clip.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.methods import Detector, FitData, create, registry
from oodbench.results.scoring import score_set

D, C, GROUPS = 48, 20, [6, 7, 4]
ROWS = [0, 1, 17, 50, 99, 100, 133, 159]

CASES = {
    "msp": ("msp", {}),
    "maxlogit": ("maxlogit", {}),
    "energy": ("energy", {}),
    "odin": ("odin", {}),
    "react": ("react", {}),
    "react_val": ("react", {"source": "val"}),
    "gen": ("gen", {"M": 10}),
    "gen_react": ("gen_react", {"M": 10}),
    "local_react": ("local_react", {}),
    "gradnorm": ("gradnorm", {}),
    "vim": ("vim", {}),
    "residual": ("residual", {}),
    "mahalanobis": ("mahalanobis", {}),
    "mahalanobis_pp": ("mahalanobis", {"normalize": True}),
    "rmds": ("rmds", {}),
    "klm": ("klm", {}),
    "knn": ("knn", {}),
    "knn_openood": ("knn", {"variant": "openood"}),
    "nnguide": ("nnguide", {"bank_fraction": 1.0, "k": 10}),
    "ash": ("ash", {}),
    "ash_b": ("ash", {"variant": "b"}),
    "scale": ("scale", {}),
    "dice": ("dice", {}),
    "she": ("she", {}),
    "fdbd": ("fdbd", {}),
    "nci": ("nci", {}),
    "mos": ("mos", {"group_sizes": GROUPS}),
}


def arrays(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(C, D)).astype(np.float32)
    labels = np.repeat(np.arange(C), 30)
    train = np.maximum(centres[labels] * 1.5 + rng.normal(size=(len(labels), D)) + 0.3, 0)
    val_labels = rng.integers(0, C, 100)
    val = np.maximum(centres[val_labels] * 1.5 + rng.normal(size=(100, D)) + 0.3, 0)
    ood = np.maximum(rng.normal(size=(60, D)) * 1.5 + 0.3, 0)
    weight = (0.3 * centres + 0.05 * rng.normal(size=(C, D))).astype(np.float32)
    bias = rng.normal(0, 0.1, C).astype(np.float32)
    return (
        weight,
        bias,
        train.astype(np.float32),
        labels.astype(np.int64),
        val.astype(np.float32),
        val_labels.astype(np.int64),
        ood.astype(np.float32),
    )


# fmt: off
PREVIOUS = {
    'msp': [0.824268281, 0.980500579, 0.837248027, 0.999806345, 0.959580004, 0.37173748, 0.53418237, 0.38083598, 0.754842777, 0.284157578],
    'maxlogit': [6.62227201, 8.1230135, 6.87664413, 14.94839, 8.36847019, 2.7446537, 4.17060661, 3.28646183, 8.46717269, 4.81485241],
    'energy': [6.81553125, 8.14270592, 7.05427933, 14.9485836, 8.40972996, 3.73422098, 4.79762459, 4.25184822, 8.84877315, 4.44030394],
    'odin': [0.0502973534, 0.0504225045, 0.0503475778, 0.0507362038, 0.0504357852, 0.0501708165, 0.0502032265, 0.0501680262, 0.0504265462, 0.000230546027],
    'react': [6.81553125, 8.03212261, 7.05427933, 14.9485836, 8.40972996, 3.73422098, 4.79762459, 4.25184822, 8.68655075, 4.28860864],
    'react_val': [5.40883398, 6.62069178, 6.62264013, 12.2817612, 7.17344618, 3.80006862, 4.77620888, 4.25184822, 7.46571485, 3.20925169],
    'gen': [-6.53137827, -5.24408865, -6.04671288, -3.06080866, -5.51175833, -7.41492653, -7.21080685, -7.45893717, -5.37616815, 1.83763997],
    'gen_react': [-6.53137827, -5.29598999, -6.04671288, -3.06080866, -5.51175833, -7.41492653, -7.21080685, -7.45893717, -5.42459226, 1.80610413],
    'local_react': [6.81553125, 8.14270592, 7.05427933, 14.9485836, 8.40972996, 3.73422098, 4.79762459, 4.25184822, 8.83494823, 4.43603226],
    'gradnorm': [853.006077, 1397.91055, 1132.48738, 1960.97085, 1489.51079, 720.779834, 615.792643, 695.93619, 1286.95873, 400.844815],
    'vim': [-5.80034876, -5.73772144, -6.22268105, -3.23247147, -0.464481354, -12.394773, -6.01101971, -11.0823641, -5.0554759, 6.93168549],
    'residual': [-3.53325438, -3.88740849, -3.71839905, -5.09185982, -2.48534751, -4.51715136, -3.02711248, -4.29456139, -3.89408013, 1.0191767],
    'mahalanobis': [-52.9677419, -58.9541044, -56.9353466, -91.0140956, -57.3479072, -112.117954, -99.1839493, -121.383587, -87.4547556, 47.0544688],
    'mahalanobis_pp': [-78.2937009, -67.8532018, -75.4505897, -60.7258698, -63.0108439, -164.17553, -182.425991, -169.368333, -95.6075513, 56.9335479],
    'rmds': [-4.11863307, -0.68844827, -3.37108122, -2.04197854, -17.0523853, -35.6793193, -48.9391579, -60.6980551, -22.8527214, 28.0297722],
    'klm': [-0.0262849788, -0.00411605546, -0.0936266811, -9.8921516e-05, -0.0387507047, -2.19413489, -3.06680688, -2.47697015, -0.778250176, 1.02099054],
    'knn': [2.39754186e+18, 1.75922847e+18, 1.05059614e+18, 1.24845054e+19, 1.55069357e+17, 8936644480000.0, 680499965000000.0, 55478385900000.0, 1.39858351e+19, 3.71893509e+19],
    'knn_openood': [-0.997573018, -0.906125903, -0.966261983, -0.935433626, -0.869232893, -1.04037881, -0.994726896, -0.957700133, -0.948721146, 0.0704302027],
    'nnguide': [55.9083438, 68.7475901, 68.1148782, 180.906166, 81.9159064, 32.5935791, 46.2051128, 42.6586865, 99.5042172, 72.4470827],
    'ash': [37.8572922, 74.8557968, 38.5439072, 126.22287, 106.16539, 41.7465248, 32.6468964, 52.3000069, 71.6949234, 38.4260927],
    'ash_b': [4.57110882, 6.41690636, 6.29346561, 15.4580193, 8.44188309, 4.15804863, 4.36911631, 5.38964224, 8.23227494, 3.83238292],
    'scale': [29.5350513, 59.8292923, 42.8625641, 123.162468, 71.718605, 21.2928524, 22.8279724, 24.9610081, 61.7168679, 38.4962608],
    'dice': [7.65345812, 8.6014061, 7.74237537, 14.633872, 9.38136387, 6.48890018, 6.19492626, 6.84937286, 10.0969251, 3.39444719],
    'she': [42.5626869, 60.0427933, 48.0708771, 93.6320953, 53.4315491, 35.7270355, 33.9355431, 43.2787018, 60.8443008, 22.2452513],
    'fdbd': [6.16845193, 8.19911192, 6.99642918, 10.8580453, 9.44428646, 3.62700651, 4.69269547, 3.57686816, 7.55283015, 3.18038166],
    'nci': [1.25390949, 1.24814701, 1.31391293, 1.54117988, 1.13046883, -0.0241958813, 0.895612824, 0.677406443, 1.0366448, 0.584039033],
    'mos': [-0.00431788432, -0.000250496445, -0.00103583883, -0.00557621627, -0.000261657666, -0.0388676075, -0.00979289788, -0.0103391592, -0.0159799535, 0.0368132233],
}
# fmt: on


def fitted(key: str) -> tuple[Detector, Linear, FeatureSet, FeatureSet]:
    w, b, train, labels, val, val_labels, ood = arrays()
    fc = Linear(w, b, [str(c) for c in range(len(b))])
    tr = FeatureSet("train", train, labels, np.arange(len(train)))
    va = FeatureSet("val", val, val_labels, np.arange(len(val)))
    oo = FeatureSet("ood", ood, -np.ones(len(ood), np.int64), np.arange(len(ood)))
    name, params = CASES[key]
    detector = create(name, params, where=f"methods.{key}")
    return detector.fit(FitData(fc=fc, train=tr, val=va)), fc, va, oo


def test_every_registered_method_but_mcm_is_covered() -> None:
    assert {name for name, _ in CASES.values()} == set(registry()) - {"mcm"}


@pytest.mark.parametrize("block_rows", [7, None])
@pytest.mark.parametrize("key", list(CASES))
def test_scores_equal_the_previous_implementation(key: str, block_rows: int | None) -> None:
    detector, fc, val, ood = fitted(key)
    scores = np.concatenate(
        [score_set(detector, val, fc, block_rows), score_set(detector, ood, fc, block_rows)]
    )
    got = [*scores[ROWS], scores.mean(), scores.std()]
    want = np.array(PREVIOUS[key])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7 * np.abs(want).max(), err_msg=key)
