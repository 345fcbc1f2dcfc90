"""Files named by backbones.<bb> (checkpoint, groups, classes) are DVC dependencies.

DVC cannot interpolate ``${backbones.${item.backbone}.checkpoint}``, so dvc.yaml
declares folders (checkpoints/<bb>/, configs/) and the stages refuse, under DVC, a file
outside them. The real `dvc status` / `dvc repro` checks are in tests/test_pipeline.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stages import backbones as B
from stages import fc as F
from stages.errors import ParamsError

ROOT = Path(__file__).resolve().parents[1]


def _stage(name: str) -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]


def test_dvc_yaml_declares_the_folders_of_backbone_files() -> None:
    assert "checkpoints/${item.backbone}" in _stage("extract")["deps"]
    fc_deps = _stage("fc")["deps"]
    assert "checkpoints/${item.backbone}" in fc_deps and "configs" in fc_deps
    # materialize reads datalists/<ds>.classes.txt when it exists: the folder is its dep
    assert "datalists" in _stage("materialize")["deps"]
    assert "data/manifests/${item.dataset}.classes.json" in _stage("materialize")["outs"]
    for stage, sets in (("fc", ["id_train"]), ("score", ["id_train", "id_val"])):
        for name in sets:
            assert f"data/manifests/${{benchmark.{name}}}.classes.json" in _stage(stage)["deps"]


def test_every_params_backbone_has_its_checkpoint_folder_in_the_repo() -> None:
    """A DVC dep must exist, and git keeps no empty folder: each holds a file."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for backbone in params["benchmark"]["backbones"]:
        assert any((ROOT / "checkpoints" / backbone).iterdir()), backbone
    assert any((ROOT / "configs").iterdir())


@pytest.fixture
def under_dvc(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_STAGE", "extract@vit-imagenet_val")
    return tmp_path


@pytest.mark.parametrize(
    "ref",
    [
        "/srv/weights/vit.pth",
        "checkpoints/other/vit.pth",
        "checkpoints/vit/../../vit.pth",
        "vit.pth",
    ],
)
def test_checkpoint_outside_its_folder_is_refused_naming_key_path_and_fix(under_dvc, ref) -> None:
    cfg = {"checkpoint": ref, "groups": None, "classes": None}
    with pytest.raises(ParamsError) as err:
        B.check_backbone_files("vit", cfg, configs=False)
    text = str(err.value)
    assert text.startswith("params.yaml: backbones.vit.checkpoint: ") and ref in text
    assert "outside checkpoints/vit/" in text and "checkpoint: checkpoints/vit/vit.pth" in text


def test_files_in_the_declared_folders_and_package_weights_pass(under_dvc) -> None:
    (under_dvc / "checkpoints" / "vit").mkdir(parents=True)
    for ref in ("checkpoints/vit/vit.pth", "./checkpoints/vit/sub/x.npz", "package:some_wheel"):
        B.check_backbone_files("vit", {"checkpoint": ref}, configs=False)
    cfg = {"checkpoint": None, "groups": "configs/g.yaml", "classes": "imagenet"}
    B.check_backbone_files("vit", cfg, configs=True)


@pytest.mark.parametrize("key", ["groups", "classes"])
def test_groups_and_classes_files_must_be_in_configs(under_dvc, key) -> None:
    cfg = {"checkpoint": None, "groups": None, "classes": None, key: "datalists/x.txt"}
    B.check_backbone_files("vit", cfg, configs=False)  # extract does not read them
    with pytest.raises(
        ParamsError, match=rf"backbones\.vit\.{key}: datalists/x\.txt is outside configs/"
    ):
        B.check_backbone_files("vit", cfg, configs=True)


def test_outside_dvc_any_path_is_read(tmp_path, monkeypatch) -> None:
    """Tests, `oodbench predict` and one-off runs are not DVC stages: no folder rule."""
    monkeypatch.delenv("DVC_STAGE", raising=False)
    cfg = {"checkpoint": str(tmp_path / "w.pth"), "groups": "/g.yaml", "classes": "/c.txt"}
    B.check_backbone_files("vit", cfg, configs=True)


def test_load_backbone_checks_before_reading_the_checkpoint(under_dvc) -> None:
    spec = {"timm": "resnet18", "checkpoint": "/nonexistent/w.pth", "fc": "head"}
    with pytest.raises(
        ParamsError, match=r"backbones\.tiny\.checkpoint: /nonexistent/w\.pth is outside"
    ):
        B.load_backbone("tiny", spec)


def test_fc_stage_refuses_a_groups_file_outside_configs(under_dvc, monkeypatch) -> None:
    (under_dvc / "g.yaml").write_text("[[0, 1]]\n")
    params = {
        "backbones": {"mae": {"preset": "vit_mae", "fc": "mos", "groups": "g.yaml"}},
        "benchmark": {"id_train": "tr"},
        "probe": {},
    }
    monkeypatch.setattr(F.P, "load_params", lambda: params)
    with pytest.raises(ParamsError, match=r"backbones\.mae\.groups: g\.yaml is outside configs/"):
        F.main("mae")
