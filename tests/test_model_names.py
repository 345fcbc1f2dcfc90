"""Model names from a list cached per library version (oodbench/models/names.py), and
the check stage that uses it: a real stage process that imports no torch, timm,
torchvision or open_clip, and still refuses an unknown model name in one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from oodbench.core.errors import ParamsError
from oodbench.models import names
from tests.conftest import ROOT, run
from tests.faults_catalogue import catalogue

HEAVY = ("torch", "timm", "torchvision", "open_clip")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder for this test, and no list remembered in this process."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("OODBENCH_CACHE_DIR", str(folder))
    names._known.cache_clear()
    yield folder
    names._known.cache_clear()


def test_cached_names_answer_as_the_libraries_do(cache: Path) -> None:
    import open_clip
    import timm
    import timm.models

    listed = set(timm.list_models()) | set(timm.models.get_deprecated_models())
    assert names.known("timm") == listed
    assert (cache / "model-names" / f"timm-{timm.__version__}.json").is_file()
    asked = [
        "resnet50",
        "resnet50.a1_in1k",  # a weights tag
        "tf_efficientnet_lite0",
        "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        "adv_inception_v3",  # deprecated alias, still accepted by timm
        "no_such_net",
        "resnet50x",
        "",
    ]
    assert [names.is_known("timm", n) for n in asked] == [timm.is_model(n) for n in asked]
    # open_clip's own configs; other tests of this process may have registered tiny ones
    # (add_model_config), which is_known also answers from the live registry
    packaged = {p.stem for p in (Path(open_clip.__file__).parent / "model_configs").glob("*.json")}
    assert names.known("open_clip") == packaged
    for name in ("ViT-B-16", "ViT-B-16.openai", "RN50", "no-such-clip"):
        assert names.is_known("open_clip", name) == (name.split(".")[0] in open_clip.list_models())


def test_the_list_is_kept_per_installed_version(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another version reads (or makes) its own file; a damaged file is made again."""
    real = names.version("timm")
    assert "resnet50" in names.known("timm")
    folder = cache / "model-names"
    (folder / "timm-0.0.fake.json").write_text(json.dumps(["only_this_net"]))
    monkeypatch.setattr(names, "version", lambda library: "0.0.fake")
    assert names.known("timm") == {"only_this_net"}
    assert not names.is_known("timm", "resnet50")
    monkeypatch.setattr(names, "version", lambda library: real)
    (folder / f"timm-{real}.json").write_text("[not json")
    names._known.cache_clear()
    assert "resnet50" in names.known("timm")
    assert "resnet50" in json.loads((folder / f"timm-{real}.json").read_text())


def test_a_library_that_is_not_installed_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = names.Library("no-such-distribution-xyz", "print([])", "`pip install it`")
    monkeypatch.setitem(names.LIBRARIES, "nolib", lib)
    with pytest.raises(ParamsError, match=r"nolib is not installed: `pip install it`"):
        names.known("nolib")


def check_stage(project: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """`python stages/check.py` as DVC runs it, listing every module it imports."""
    env = {**os.environ, "OODBENCH_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "stages/check.py"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
    )


def imported(stderr: str) -> set[str]:
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", stderr, flags=re.M))


@catalogue(
    "params",
    "a backbone names a model the installed timm (or open_clip) does not know, e.g. a typo",
    "the check stage stops with one `error:` line naming the key and how to list the "
    "models, exit 2, before any work; it reads the names from a list cached per library "
    "version and imports neither torch nor timm",
)
def test_check_stage_imports_no_model_library_and_refuses_unknown_names(
    tmp_path: Path,
) -> None:
    """The check stage runs at every parameter change (`dvc exp run -S ...`): it validates
    the backbones from the cached name lists, never importing torch, timm, torchvision
    or open_clip, even when the list is made (by a child process) on this first run."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(ROOT / "params.yaml", project / "params.yaml")
    for folder in ("stages", "oodbench", "datalists", "configs"):
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__py*"))
    run(["oodbench", "pipeline"], project)
    cache = tmp_path / "cache"

    result = check_stage(project, cache)  # a cold cache: the list is made first
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported(result.stderr)
    assert "oodbench.pipeline.check" in modules  # the listing is real
    assert "oodbench.models.backbones" in modules  # validate_spec ran
    assert not {m.split(".")[0] for m in modules} & set(HEAVY)
    assert sorted(p.name.split("-")[0] for p in (cache / "model-names").iterdir()) == ["timm"]
    assert (project / "build/specs/backbones/lite0.model.json").is_file()

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["backbones"]["lite1"]["timm"] = "tf_efficientnet_lite9"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = check_stage(project, cache)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time")]
    assert errors == [
        "error: params.yaml: backbones.lite1.timm: unknown timm model "
        "'tf_efficientnet_lite9' (see `python -c 'import timm; print(timm.list_models())'`)"
    ]
    assert not {m.split(".")[0] for m in imported(result.stderr)} & set(HEAVY)
