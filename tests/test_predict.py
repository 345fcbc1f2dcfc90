"""`oodbench predict` refuses methods that cannot score a single image (local_react)."""

from __future__ import annotations

import re

import pytest
import yaml

from oodbench.core.errors import DataError, ParamsError
from oodbench.results.predict import MethodVerdict, Prediction, choose_detectors, render
from tests.conftest import run
from tests.faults_catalogue import catalogue

PARAMS = {
    "benchmark": {"backbones": ["lite0"], "methods": ["msp", "local_react", "energy"]},
    "backbones": {"lite0": {"timm": "tf_efficientnet_lite0"}},
    "methods": {
        "msp": {"temperature": 1.0},
        "local_react": {"quantile": 0.9995},
        "lr_alias": {"method": "local_react", "quantile": 0.99},
        "energy": {},
    },
}


@pytest.mark.parametrize("key", ["local_react", "lr_alias"])
def test_named_local_react_is_refused_naming_method_and_reason(key):
    with pytest.raises(ParamsError) as caught:
        choose_detectors(PARAMS, ["msp", key])
    message = str(caught.value)
    assert message.startswith(f"predict: method {key!r} (local_react) clips each dataset")
    assert "meaningless for one image" in message and "\n" not in message


def test_default_list_skips_local_react_and_says_so():
    detectors, skipped = choose_detectors(PARAMS, None)
    assert list(detectors) == ["msp", "energy"]
    assert list(skipped) == ["local_react"]
    pred = Prediction("x.png", "lite0", [("0", 0.9)], [MethodVerdict("msp", 0.9, 0.5, True)])
    pred.skipped = skipped
    assert "local_react    skipped: clips each dataset" in render(pred, "table")
    assert '"local_react": "clips each dataset' in render(pred, "json")


def test_only_local_react_in_the_default_list_is_an_error():
    params = {**PARAMS, "benchmark": {"methods": ["local_react"]}}
    with pytest.raises(ParamsError, match="no method can score a single image"):
        choose_detectors(params, None)


def test_cli_exits_2_with_one_line_before_loading_anything(tmp_path):
    """No features, fc or image exist here: the refusal comes before any of them is read."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    result = run(
        ["oodbench", "predict", "nosuch.png", "--methods", "msp,local_react"],
        tmp_path,
        check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: predict: method 'local_react' (local_react) clips")


def test_scores_print_with_four_significant_digits():
    """kNN scores of unnormalised features reach 1e21: %.4f printed 22 digits."""
    verdicts = [
        MethodVerdict("knn", -1.234567e21, -9.87654e20, False),
        MethodVerdict("msp", 0.000012345, 0.5, False),
        MethodVerdict("energy", 12.3456, 10.0, True),
    ]
    lines = render(Prediction("x.png", "lite0", [("0", 0.9)], verdicts), "table").splitlines()
    assert lines[-3] == "knn              -1.235e+21   -9.877e+20  OUT-OF-DISTRIBUTION"
    assert lines[-2] == "msp               1.234e-05          0.5  OUT-OF-DISTRIBUTION"
    assert lines[-1] == "energy                12.35           10  in-distribution"
    assert '"score": -1.234567e+21' in render(Prediction("x", "b", [], verdicts), "json")


def test_zero_prints_without_a_sign():
    """A score of -0.0 (e.g. energy of clipped zeros) printed as "-0" read as negative."""
    from oodbench.results.predict import readable

    assert [readable(v) for v in (-0.0, 0.0, -1e-20, -2.5)] == ["0", "0", "-1e-20", "-2.5"]
    verdicts = [MethodVerdict("react", -0.0, -0.0, True)]
    line = render(Prediction("x.png", "lite0", [], verdicts), "table").splitlines()[-1]
    assert line == "react                     0            0  in-distribution"


def test_warnings_are_collected_once_each_in_order(monkeypatch):
    """Fits on few train rows warn (IllPosedFitWarning); predict returns each distinct
    warning once, for the CLI to print after the answer instead of before it."""
    import warnings

    from oodbench.methods.shared.checks import IllPosedFitWarning
    from oodbench.results import predict as single

    def noisy(image, backbone, methods, top):
        for text in ("methods.vim: few rows", "methods.rmds: singular", "methods.vim: few rows"):
            warnings.warn(text, IllPosedFitWarning, stacklevel=1)
        warnings.warn("a library notice", UserWarning, stacklevel=1)
        return Prediction(str(image), backbone, [], [MethodVerdict("msp", 0.9, 0.5, True)])

    monkeypatch.setattr(single, "_predict", noisy)
    for _ in range(2):  # Python's once-per-place filter would hide them the second time
        result = single.predict("x.png", "lite0")
        assert result.warnings == [
            "IllPosedFitWarning: methods.vim: few rows",
            "IllPosedFitWarning: methods.rmds: singular",
            "UserWarning: a library notice",
        ]
    assert '"warnings": [' in render(result, "json")


@catalogue(
    "images",
    "`oodbench predict` is given an image over the pixel limit materialize applies "
    "(PIL itself refuses only above twice that)",
    "one line naming the image and its size; the same MAX_PIXELS everywhere",
)
def test_predict_refuses_images_materialize_refuses(tmp_path):
    from PIL import Image

    from oodbench.data import images, materialize
    from oodbench.results.predict import image_features

    assert materialize.MAX_PIXELS == images.MAX_PIXELS == Image.MAX_IMAGE_PIXELS
    big = tmp_path / "big.png"
    Image.new("1", (12_000, 12_000)).save(big)  # 144 Mpx: between PIL's limit and twice it
    reason = "too large (12000x12000 > 89478485 pixels)"
    assert materialize.decode_status(big) == reason
    with pytest.raises(DataError, match=rf"big\.png: {re.escape(reason)}; resize it"):
        image_features(big, "lite0", {"timm": "no_model_is_loaded_before_the_check"})
