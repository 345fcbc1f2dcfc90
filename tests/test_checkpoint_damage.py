"""A truncated or damaged weights file is found from its structure, without torch.

The check stage runs this before any stage loads a checkpoint (the real `dvc repro` of
a truncated checkpoint is tests/test_user_benchmark.py). Truncating a real file at
several points is a fault that must land: each cut must be reported, the whole file
never, and torch itself must fail to load what is reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from oodbench.core.errors import ParamsError
from oodbench.formats.checkpoints import damage
from oodbench.pipeline.check import check_checkpoint

TENSORS = {"conv.weight": torch.randn(8, 3, 3, 3), "fc.weight": torch.randn(4, 8), "fc.bias": torch.randn(4)}  # fmt: skip


def writers(folder: Path) -> dict[str, Path]:
    paths = {
        "zip": folder / "w.pth",
        "safetensors": folder / "w.safetensors",
        "npz": folder / "w.npz",
    }
    torch.save({"state_dict": TENSORS}, paths["zip"])
    save_file(TENSORS, str(paths["safetensors"]))
    np.savez(paths["npz"], **{k: v.numpy() for k, v in TENSORS.items()})
    return paths


def truncated(path: Path, keep: int, dest: Path) -> Path:
    dest.write_bytes(path.read_bytes()[:keep])
    return dest


@pytest.mark.parametrize("fraction", [0.0, 0.004, 0.5, 0.99])
def test_every_cut_is_found_and_the_whole_file_is_not(tmp_path: Path, fraction: float) -> None:
    for layout, path in writers(tmp_path).items():
        assert damage(path) is None, layout
        size = path.stat().st_size
        cut = truncated(path, int(size * fraction), tmp_path / f"cut{path.suffix}")
        assert cut.stat().st_size < size
        why = damage(cut)
        assert why is not None, (layout, fraction)
        if layout == "zip":  # torch agrees that the file is unreadable
            with pytest.raises(Exception):  # noqa: B017 (torch raises several types)
                torch.load(cut, weights_only=True)


def test_a_cut_inside_the_last_tensor_of_a_safetensors_file_is_found(tmp_path: Path) -> None:
    path = writers(tmp_path)["safetensors"]
    cut = truncated(path, path.stat().st_size - 1, tmp_path / "one_byte_short.safetensors")
    assert "data section" in damage(cut)


def test_layouts_not_checked_are_left_to_the_loader(tmp_path: Path) -> None:
    """torch's legacy (pre-1.6) pickle format has no structure to check without
    unpickling: the loader names the file when it fails."""
    legacy = tmp_path / "legacy.pth"
    torch.save(TENSORS, legacy, _use_new_zipfile_serialization=False)
    assert damage(legacy) is None
    assert damage(truncated(legacy, 100, tmp_path / "legacy_cut.pth")) is None


def test_the_check_stage_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = writers(tmp_path)["zip"]
    cut = truncated(path, path.stat().st_size // 2, tmp_path / "r18.pth")
    with pytest.raises(ParamsError) as err:
        check_checkpoint(cut, "backbones.r18.checkpoint")
    message = str(err.value)
    assert message.startswith(f"params.yaml: backbones.r18.checkpoint: {cut} is truncated")
    assert "copy it again" in message and "Nothing else ran" in message
