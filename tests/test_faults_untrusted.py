"""Fault catalogue: untrusted pickles and checkpoints are loaded without running their code."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oodbench.core.errors import ParamsError
from oodbench.formats.classifier import load_fc
from oodbench.formats.features import load_features
from oodbench.models.weights import read_state_dict
from tests.faults_catalogue import catalogue


class Exploit:
    """Unpickling this runs a shell command that creates `marker` (what an attacker would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def oodbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = "from oodbench.cli.app import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True
    )


@catalogue(
    "untrusted",
    "`oodbench import-pkl` reads a ViM / MOODv2 feature pickle or `[W, b]` fc pickle",
    "loaded through a restricted unpickler (numpy arrays and lists only) and written as NPY shards + info.json or fc.safetensors",
)
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_import_pkl_features_and_fc(tmp_path: Path, protocol: int) -> None:
    rng = np.random.default_rng(protocol)
    feats = rng.normal(size=(7, 5)).astype(np.float32)
    w, b = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    (tmp_path / "val.pkl").write_bytes(pickle.dumps(feats, protocol=protocol))
    (tmp_path / "fc.pkl").write_bytes(pickle.dumps([w, b], protocol=protocol))
    (tmp_path / "val.txt").write_text("".join(f"img{i}.jpg {i % 3}\n" for i in range(7)))
    args = ["--backbone", "vit", "--dataset", "val", "--datalist", "val.txt"]
    done = oodbench("import-pkl", "val.pkl", "--out", "features/vit/val", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    fs = load_features(tmp_path / "features/vit/val", backbone="vit")
    np.testing.assert_array_equal(fs.features, feats)
    assert fs.labels.tolist() == [i % 3 for i in range(7)]
    out = "features/vit/fc.safetensors"
    done = oodbench("import-pkl", "fc.pkl", "--out", out, "--fc", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    fc = load_fc(tmp_path / out)
    np.testing.assert_array_equal(fc.weight, w)
    np.testing.assert_array_equal(fc.bias, b)


@catalogue(
    "untrusted",
    "a pickle given to `import-pkl` names any other global (e.g. `os.system`), or holds objects",
    "refused before anything runs: one `error:` line naming the global, exit 2, nothing written",
)
@pytest.mark.parametrize("kind", ["exploit", "exploit-in-list", "object-array"])
def test_import_pkl_refuses_code(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    payload = {
        "exploit": Exploit(marker),
        "exploit-in-list": [np.zeros((2, 2), np.float32), Exploit(marker)],
        "object-array": np.array([Exploit(marker)], dtype=object),
    }[kind]
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(payload))
    args = ("--fc",) if kind == "exploit-in-list" else ("--backbone", "b", "--dataset", "d")
    done = oodbench("import-pkl", "evil.pkl", "--out", "out", *args, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: evil.pkl: refused to unpickle"), lines
    assert "system" in lines[0] or "_reconstruct" not in lines[0]
    assert not marker.exists()  # the payload never ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pkl"]


@catalogue(
    "untrusted",
    "a backbone checkpoint is a pickle with a non-tensor global (code)",
    "refused by the loader (`torch.load(weights_only=True)`; safetensors never unpickle): ParamsError, the code never runs",
)
def test_pickled_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": Exploit(marker)}, path)
    with pytest.raises(ParamsError, match="not a weights-only torch checkpoint"):
        read_state_dict(path)
    assert not marker.exists()
