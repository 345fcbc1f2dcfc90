"""Backbone, method and dataset names must survive DVC's ``stage@a-b`` naming."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from oodbench.core.errors import ParamsError
from oodbench.core.params import read_params_file
from tests.conftest import ROOT, run

BASE = {
    "benchmark": {"backbones": ["lite0"], "methods": ["msp", "react_val"], "ood": ["textures"]},
    "backbones": {"lite0": {"timm": "x"}},
    "methods": {"msp": {}, "react_val": {"method": "react", "source": "val"}},
    "datasets": {"digits_id_val": {"root": "data"}, "textures": {"root": "data"}},
}


def write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def renamed(section: str, old: str, new: str) -> dict:
    params = yaml.safe_load(yaml.safe_dump(BASE))
    params[section] = {new if k == old else k: v for k, v in params[section].items()}
    return params


def test_the_projects_params_and_underscored_names_pass(tmp_path):
    assert read_params_file(ROOT / "params.yaml")["methods"]
    assert read_params_file(write(tmp_path, BASE))["methods"]["react_val"]["source"] == "val"


@pytest.mark.parametrize("bad", ["react-val", "react@val", "react/val", "react val", "a.b"])
@pytest.mark.parametrize(
    ("section", "old", "kind"),
    [("methods", "react_val", "method"), ("backbones", "lite0", "backbone")],
)
def test_bad_characters_in_mapping_keys_name_the_key_and_the_fix(
    tmp_path, bad: str, section: str, old: str, kind: str
):
    path = write(tmp_path, renamed(section, old, bad))
    fix = "".join(c if c.isalnum() or c == "_" else "_" for c in bad)
    with pytest.raises(ParamsError) as caught:
        read_params_file(path)
    message = str(caught.value)
    assert f"{section}.{bad}: {kind} name {bad!r}" in message
    assert f"rename it, e.g. to {fix!r}" in message and "\n" not in message


def test_dataset_keys_and_benchmark_lists_are_checked(tmp_path):
    with pytest.raises(ParamsError, match=r"datasets\.ssb-hard: dataset name 'ssb-hard'"):
        read_params_file(write(tmp_path, renamed("datasets", "textures", "ssb-hard")))
    params = yaml.safe_load(yaml.safe_dump(BASE))
    params["benchmark"]["methods"].append("knn-openood")
    with pytest.raises(ParamsError, match=r"benchmark\.methods\[2\]: method name 'knn-openood'"):
        read_params_file(write(tmp_path, params))
    params = yaml.safe_load(yaml.safe_dump(BASE))
    params["benchmark"]["backbones"] = ["vit b16"]
    with pytest.raises(ParamsError, match=r"benchmark\.backbones\[0\].*'vit_b16'"):
        read_params_file(write(tmp_path, params))


def test_the_cli_refuses_with_one_line_and_exit_2(tmp_path):
    write(tmp_path, renamed("methods", "react_val", "react-val"))
    result = run(["oodbench", "tune", "lite0", "msp", "--ood", "x"], tmp_path, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: params.yaml: methods.react-val:")
