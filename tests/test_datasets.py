"""The dataset registry, the params snippet and the label maps (offline, no data)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import yaml

from oodbench.core.errors import DataError, ParamsError
from oodbench.data import classes as C
from oodbench.data import registry as D


def test_registry_entries_are_consistent() -> None:

    for key, info in D.REGISTRY.items():
        assert key == info.key and re.fullmatch(r"[a-z0-9_]+", key)
        assert info.group in D.GROUPS and info.labels in D.LABELS
        assert info.root.startswith("data/") and info.datalist == f"datalists/{key}.txt"
        for r in info.resources:
            assert r.kind in D.KINDS and r.url.startswith(("https://", "http://"))
            assert r.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", r.sha256)
            assert r.md5 is None or re.fullmatch(r"[0-9a-f]{32}", r.md5)
        assert info.resources or info.hint

    expected = {
        "imagenet_val",
        "imagenet_train_200k",
        "openimage_o",
        "texture",
        "inaturalist",
        "imagenet_o",
        "sun",
        "places",
        "ninco",
        "ssb_hard",
        "cifar10_test",
        "cifar100_test",
    }
    assert expected <= set(D.REGISTRY)
    assert D.REGISTRY["ninco"].group == "near" and D.REGISTRY["ssb_hard"].group == "near"
    assert D.REGISTRY["inaturalist"].group == "far" and D.REGISTRY["imagenet_val"].group == "id"
    assert set(D.DTD_EXCLUDED) == {"bubbly", "cobwebbed", "honeycombed", "spiralled"}


def test_unknown_key_names_the_known_ones() -> None:
    with pytest.raises(ParamsError, match="unknown dataset 'imagenet'; known: imagenet_val"):
        D.get("imagenet")


def test_params_snippet_parses_and_matches_the_registry() -> None:
    text = D.params_snippet(["imagenet_val", "ninco", "imagenet_val"])
    parsed = yaml.safe_load(text)
    assert parsed == {
        "datasets": {
            "imagenet_val": {"root": "data/imagenet", "group": "id"},
            "ninco": {"root": "data/ninco", "group": "near"},
        }
    }
    assert "# ImageNet-1k val" in text
    with pytest.raises(ParamsError):
        D.params_snippet([])


def test_label_map_maps_and_marks_missing() -> None:
    m = C.label_map(["b", "a", "z"], ["a", "b", "c"])
    assert m.dtype == np.int64 and m.tolist() == [1, 0, -1]
    with pytest.raises(DataError, match="list class 'a' repeated"):
        C.label_map(["a", "a"], ["a"])


def test_imagenet_sorted_wnids_from_timm() -> None:
    wnids = C.imagenet_sorted_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764"  # tench first in sorted order


def _fake_devkit_order() -> list[str]:
    """A devkit-like permutation with tench at ILSVRC2012_ID 449, as in the real devkit."""
    wnids = C.imagenet_sorted_wnids()
    rest = wnids[1:]
    return [*rest[:448], wnids[0], *rest[448:]]


def test_devkit_order_from_text_and_label_map(tmp_path: Path) -> None:
    order = _fake_devkit_order()
    path = tmp_path / "map_clsloc.txt"
    path.write_text("".join(f"{w} {i} name_{i}\n" for i, w in enumerate(order, start=1)))
    devkit = C.imagenet_devkit_wnids(path)
    assert devkit.index("n01440764") == 448
    m = C.label_map(devkit, C.imagenet_sorted_wnids())
    assert m[448] == 0 and sorted(m.tolist()) == list(range(1000))


def test_devkit_order_from_meta_mat(tmp_path: Path) -> None:
    order = _fake_devkit_order()
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")]
    rows = [(i, w, 0) for i, w in enumerate(order, start=1)] + [(1001, "n00000001", 5)]
    synsets = np.array(rows, dtype=dtype)
    scipy.io.savemat(tmp_path / "meta.mat", {"synsets": synsets})
    assert C.imagenet_devkit_wnids(tmp_path / "meta.mat") == order


def test_devkit_errors(tmp_path: Path) -> None:
    bad = tmp_path / "map.txt"
    bad.write_text("n01440764 x\n")
    with pytest.raises(DataError, match="line 1"):
        C.imagenet_devkit_wnids(bad)
    bad.write_text("n01440764 1\n")
    with pytest.raises(DataError, match=r"1\.\.1000"):
        C.imagenet_devkit_wnids(bad)
    with pytest.raises(DataError, match="not found"):
        C.imagenet_devkit_wnids(tmp_path / "missing.mat")
