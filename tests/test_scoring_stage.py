"""The score and subspace stages on a synthetic workspace written with the project's writers.

Feature folders (several shards, with the model head's logits shards), the fc file and
the resolved specs are written exactly as extract, fc and check write them; the stages
then run in process (or as real processes where their imports or threads are tested).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats import features as store
from oodbench.formats.classifier import Linear, load_fc, save_fc
from oodbench.formats.features import FeatureSet
from oodbench.formats.paths import fc_path, features_dir
from oodbench.formats.scores import load_scores
from oodbench.formats.specs import scoring_spec, write_spec
from oodbench.methods import FitData, create
from oodbench.methods.shared import threads
from oodbench.results import fitdata
from oodbench.results.scoring import score_method
from tests.conftest import ROOT, write_method_spec

C, D = 12, 40
BB = "bb"
SETS = {"train": 300, "val": 90, "near": 50, "far": 35}
SHARD_ROWS = 32


def write_features(
    root: Path, name: str, x: np.ndarray, labels: np.ndarray, fc: Linear, backbone: str = BB
) -> None:
    """A feature folder as extract writes it: shards of features and head logits."""
    info = {"backbone": backbone, "dataset": name}
    directory = root / features_dir(backbone, name)
    store.write_feature_dir(directory, info, x, labels, logits=fc.logits(x), shard_rows=SHARD_ROWS)


def arrays(seed: int = 0) -> tuple[Linear, dict[str, tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(C, D)).astype(np.float32)
    fc = Linear(0.4 * centres, rng.normal(0, 0.1, C).astype(np.float32), list("abcdefghijkl"))
    out = {}
    for name, n in SETS.items():
        labels = rng.integers(0, C, n) if name in ("train", "val") else -np.ones(n, np.int64)
        x = rng.normal(size=(n, D)) + 0.5 + (1.5 * centres[labels] if labels[0] >= 0 else 0)
        out[name] = (np.maximum(x, 0).astype(np.float32), labels.astype(np.int64))
    return fc, out


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(store.DVC_STAGE_ENV, raising=False)
    fc, sets = arrays()
    save_fc(fc_path(BB), fc)
    for name, (x, labels) in sets.items():
        write_features(tmp_path, name, x, labels, fc)
    scoring = {"id_train": "train", "id_val": "val", "ood": ["near", "far"], "one_class": None}
    write_spec(scoring_spec(), scoring)
    return tmp_path


def set_method(key: str, name: str, hyperparameters: dict | None = None) -> None:
    write_method_spec(Path(), key, name, hyperparameters)


def direct_scores(key: str, name: str, params: dict | None = None) -> dict[str, np.ndarray]:
    """Fit and score on whole arrays, as predict and tune do: the stage must agree."""
    fc, sets = arrays()
    train = FeatureSet("train", *sets["train"], np.arange(SETS["train"]))
    detector = create(name, params or {}, where=f"methods.{key}")
    detector.fit(FitData(fc=fc, train=train, val=FeatureSet("val", *sets["val"], np.arange(90))))
    return {s: detector.score(sets[s][0], fc.logits(sets[s][0])) for s in ("val", "near", "far")}


def load_stage_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = [
    ("energy", "energy", {}),
    ("gen", "gen", {"M": 5}),
    ("local_react", "local_react", {}),
    ("vim", "vim", {}),
    ("mahalanobis", "mahalanobis", {}),
    ("knn_openood", "knn", {"variant": "openood", "k": 5}),
    ("she", "she", {}),
]


@pytest.mark.parametrize(("key", "name", "params"), CASES)
def test_stage_scores_equal_whole_array_scoring(workspace: Path, capsys, key, name, params):
    set_method(key, name, params)
    score_method(BB, key)
    got = load_scores(workspace / "scores" / BB / f"{key}.parquet")
    want = direct_scores(key, name, params)
    for dataset, scores in want.items():
        np.testing.assert_allclose(got[dataset], scores, rtol=1e-6, atol=1e-9)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"score {BB}/{key}: 0 sets from cache, 3 scored; 175 samples; load ")
    for phase in ("fit", "score", "write"):
        assert f", {phase} " in line
    # a rerun (DVC reruns the stage when any input changes) reuses every unchanged set
    (workspace / "scores" / BB / f"{key}.parquet").unlink()
    score_method(BB, key)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"score {BB}/{key}: 3 sets from cache, 0 scored; 175 samples")
    again = load_scores(workspace / "scores" / BB / f"{key}.parquet")
    assert again.keys() == got.keys()
    assert all(np.array_equal(again[d], got[d]) for d in got)


def test_the_stage_reads_its_hyperparameters_from_params_yaml(workspace: Path) -> None:
    """The score stage takes its method's block from params.yaml (the key it declares to
    DVC): a changed value changes the scores, an empty block (`msp:`) means the defaults,
    a missing block or a bad value is one ParamsError naming the key."""
    write_method_spec(workspace, "msp", "msp", {"temperature": 2.0})
    score_method(BB, "msp")
    hot = load_scores(workspace / "scores" / BB / "msp.parquet")["far"]
    np.testing.assert_allclose(hot, direct_scores("msp", "msp", {"temperature": 2.0})["far"])
    params = workspace / "params.yaml"
    params.write_text(params.read_text().replace("temperature: 2.0", "").replace("msp: {}", "msp:"))
    assert "msp:\n" in params.read_text()
    score_method(BB, "msp")
    plain = load_scores(workspace / "scores" / BB / "msp.parquet")["far"]
    np.testing.assert_allclose(plain, direct_scores("msp", "msp")["far"])
    params.write_text(params.read_text().replace("msp:\n", "msp:\n    temperature: hot\n"))
    with pytest.raises(ParamsError, match=r"methods\.msp\.temperature"):
        score_method(BB, "msp")
    params.write_text("methods: {}\n")
    with pytest.raises(ParamsError, match=r"no methods\.msp block"):
        score_method(BB, "msp")


def test_each_backbone_is_scored_as_if_alone(workspace: Path) -> None:
    """The score stage scores its first backbone in its own process and each other one in
    a fresh process (the stage for that backbone alone): a fit's last bits can depend on
    what the process allocated before it (RMDS on the demo's lite1, fitted after lite0 in
    one process, differed in its last bits), so a backbone's table is the same bytes
    whether other backbones come before it or not. A failing backbone stops the stage
    with its own one error line and exit code."""
    fc, sets = arrays(seed=1)
    save_fc(fc_path("bb2"), fc)
    for name, (x, labels) in sets.items():
        write_features(workspace, name, x, labels, fc, backbone="bb2")
    write_method_spec(workspace, "rmds", "rmds")
    stage = [sys.executable, str(ROOT / "stages" / "score.py"), "--method", "rmds"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run_stage(backbones: str) -> subprocess.CompletedProcess[str]:
        command = [*stage, "--backbones", backbones]
        return subprocess.run(command, cwd=workspace, capture_output=True, text=True, env=env)

    both = run_stage("bb,bb2")
    assert both.returncode == 0, both.stderr
    assert [line.split(":")[0] for line in both.stdout.splitlines()] == [
        "score bb/rmds",
        "score bb2/rmds",
    ]
    table = (workspace / "scores" / "bb2" / "rmds.parquet").read_bytes()
    shutil.rmtree(workspace / "scores" / ".cache")  # score bb2 again, alone
    assert run_stage("bb2").returncode == 0
    assert (workspace / "scores" / "bb2" / "rmds.parquet").read_bytes() == table
    shutil.rmtree(workspace / "scores" / ".cache")
    shutil.rmtree(workspace / features_dir("bb2", "far"))
    failed = run_stage("bb,bb2")
    assert failed.returncode == 2
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "bb2" in errors[0] and "far" in errors[0], failed.stderr
    assert (workspace / "scores" / "bb2" / "rmds.parquet").read_bytes() == table  # as it was


def test_stage_reads_feature_shards_only_and_train_only_when_fitting(workspace: Path) -> None:
    """No logits shard is opened (scoring recomputes logits); a logit method without a fit
    never opens ID train; a method fitting on train reads it."""
    for shard in workspace.rglob("*.logits.npy"):
        shard.write_bytes(b"not read")
    set_method("energy", "energy")
    set_method("react", "react")
    train = workspace / features_dir(BB, "train")
    hidden = train.with_name("train.hidden")
    train.rename(hidden)
    score_method(BB, "energy")
    with pytest.raises(DataError, match=r"train/info\.json: missing"):
        score_method(BB, "react")
    hidden.rename(train)
    score_method(BB, "react")
    got = load_scores(workspace / "scores" / BB / "react.parquet")
    np.testing.assert_allclose(got["far"], direct_scores("react", "react")["far"], rtol=1e-6)


def _flip_data_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # a low mantissa bit of the last value: still a finite float
    path.write_bytes(bytes(data))


def test_checksums_are_verified_outside_dvc_and_left_to_dvc_inside(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_method("energy", "energy")
    # scores cached from an earlier run are reused without reading the shards again
    # (oodbench/results/scorecache.py): drop them so the shards are read here
    shutil.rmtree(workspace / "scores" / ".cache", ignore_errors=True)
    shard = workspace / features_dir(BB, "near") / "shard-00001.features.npy"
    _flip_data_byte(shard)
    with pytest.raises(DataError, match=r"near/shard-00001\.features\.npy: checksum mismatch"):
        score_method(BB, "energy")
    monkeypatch.setenv(store.DVC_STAGE_ENV, f"score-{BB}-energy")  # DVC hashed the deps
    score_method(BB, "energy")
    assert len(load_scores(workspace / "scores" / BB / "energy.parquet")["near"]) == 50
    # shapes and row counts are checked even so
    shutil.rmtree(workspace / "scores" / ".cache")
    shard.write_bytes(shard.read_bytes()[:-8])
    with pytest.raises(DataError, match=r"shard-00001\.features\.npy: truncated shard"):
        score_method(BB, "energy")
    info_path = workspace / features_dir(BB, "far") / "info.json"
    info = json.loads(info_path.read_text())
    info["shards"][0]["rows"] += 1
    info_path.write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"far/shard-00000\.features\.npy: shape \(32, 40\) does"):
        store.load_features(info_path.parent)


def test_subspace_stage_lets_vim_and_residual_skip_train(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The subspace stage writes features/<bb>/vim_subspace.npz; vim and residual then fit
    from it (train never loaded) with the scores of a fit from train; a file computed for
    another classifier is reported and ignored."""
    for key in ("vim", "residual"):
        set_method(key, key)
    before = {
        key: (score_method(BB, key), load_scores(f"scores/{BB}/{key}.parquet"))[1]
        for key in ("vim", "residual")
    }
    load_stage_module("subspace").write_subspace(BB)
    out = workspace / "features" / BB / "vim_subspace.npz"
    assert out.is_file() and "subspace bb: 300 train rows, D=40" in capsys.readouterr().out

    def no_train(*args: object) -> FeatureSet:
        raise AssertionError("train was read")

    with monkeypatch.context() as m:
        m.setattr(fitdata, "load_train_rows", no_train)
        for key in ("vim", "residual"):
            score_method(BB, key)
            got = load_scores(f"scores/{BB}/{key}.parquet")
            for dataset in before[key]:
                np.testing.assert_allclose(got[dataset], before[key][dataset], rtol=1e-6)
    fc = load_fc(fc_path(BB))
    fc.bias[0] += 1.0
    save_fc(fc_path(BB), fc)
    capsys.readouterr()
    score_method(BB, "vim")
    assert "vim_subspace.npz was computed from other train rows or another classifier" in (
        capsys.readouterr().err
    )
    fresh = create("vim")
    fc_now, sets = arrays()
    fc_now.bias[0] += 1.0
    fresh.fit(FitData(fc=fc_now, train=FeatureSet("t", *sets["train"], np.arange(300))))
    x = sets["far"][0]
    got = load_scores(f"scores/{BB}/vim.parquet")["far"]
    np.testing.assert_allclose(got, fresh.score(x, fc_now.logits(x)), rtol=1e-6)


def test_one_class_subspace_is_fingerprinted_with_the_class(workspace: Path) -> None:
    fc, _ = arrays()
    whole = fitdata.train_fingerprint(BB, "train", None, fc)
    assert fitdata.train_fingerprint(BB, "train", 3, fc) != whole
    assert fitdata.train_fingerprint(BB, "train", None, fc) == whole


def run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        check=False,
    )


NON_KNN = [
    "msp",
    "maxlogit",
    "energy",
    "odin",
    "react",
    "gen",
    "gradnorm",
    "vim",
    "residual",
    "mahalanobis",
    "rmds",
    "klm",
    "mos",
    "mcm",
    "she",
    "ash",
    "local_react",
]


def test_score_stage_of_a_non_knn_method_imports_no_torch(workspace: Path) -> None:
    """Importing stages/score.py, building any non-kNN detector and running a real stage
    loads neither torch, timm nor matplotlib (each costs seconds at every stage start),
    nor pandas (half a second: the stage reads and writes Parquet through pyarrow)."""
    set_method("mahalanobis", "mahalanobis")
    code = f"""
import runpy, sys
sys.argv = ["score.py", "--backbone", "{BB}", "--method", "mahalanobis"]
runpy.run_path({str(ROOT / "stages" / "score.py")!r}, run_name="__main__")
from oodbench.methods import create
for name in {NON_KNN!r}:
    create(name)
print(sorted(m for m in ("torch", "timm", "matplotlib", "pandas") if m in sys.modules))
"""
    result = run_python(code, workspace)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_workers_follow_the_affinity_or_the_override_and_blas_gets_one_thread(
    workspace: Path,
) -> None:
    """The stage's worker count is the cores it may use (or OODBENCH_THREADS); every BLAS
    call runs on one thread, whatever that count (tests/test_thread_count.py)."""
    code = """
from threadpoolctl import threadpool_info
from oodbench.methods.shared.threads import cpu_threads, limit_blas_threads
import os
print(limit_blas_threads(), len(os.sched_getaffinity(0)), {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
"""
    plain = run_python(code, workspace).stdout.split()
    assert plain[0] == plain[1] and plain[-1] == "{1}"  # the cores this process may use
    three = run_python(code, workspace, OODBENCH_THREADS="3")
    assert three.stdout.split()[0] == "3" and three.stdout.split()[-1] == "{1}", three.stderr


def test_bad_thread_override_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.THREADS_ENV, "many")
    with pytest.raises(ParamsError, match=r"OODBENCH_THREADS='many': must be an integer >= 1"):
        threads.cpu_threads()


class Spy:
    """A detector stand-in recording the row counts it is asked to score."""

    def __init__(
        self, per_dataset: str | None, reads_logits: bool = True, threaded: bool = True
    ) -> None:
        self.per_dataset, self.params_key, self.calls = per_dataset, "methods.spy", []
        self.reads_logits, self.threaded_blocks = reads_logits, threaded
        self.threads: set[int] = set()

    def score(self, features: np.ndarray, logits: np.ndarray | None) -> np.ndarray:
        if self.reads_logits:
            np.testing.assert_array_equal(logits, FC.logits(features))  # the fc's product
        else:
            assert logits is None  # not computed for a method that never reads them
        self.calls.append(len(features))
        self.threads.add(threading.get_ident())
        time.sleep(0.05)  # long enough that a second worker takes the next block
        return features[:, 0].astype(np.float64)


FC = Linear(np.eye(3, 4, dtype=np.float32), np.zeros(3, np.float32), ["a", "b", "c"])


@pytest.mark.parametrize("threaded", [True, False])
@pytest.mark.parametrize("reads_logits", [True, False])
@pytest.mark.parametrize(("per_dataset", "calls"), [(None, [4, 4, 2]), ("why", [10])])
def test_blocks_of_rows_unless_the_method_scores_whole_datasets(
    per_dataset, calls, reads_logits, threaded
) -> None:
    """Blocks of rows, from two threads at once unless the detector threads itself or
    scores whole datasets; every row's score lands in its own place."""
    from oodbench.results.scoring import score_set

    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    spy = Spy(per_dataset, reads_logits, threaded)
    fs = FeatureSet("s", x, np.zeros(10, np.int64), np.arange(10))
    got = score_set(spy, fs, FC, 4, threads=2)
    assert sorted(spy.calls) == sorted(calls)
    concurrent = threaded and per_dataset is None
    assert len(spy.threads) == (2 if concurrent else 1)
    assert (threading.get_ident() in spy.threads) is not concurrent
    np.testing.assert_array_equal(got, x[:, 0])


@pytest.mark.parametrize("method", ["gradnorm", "energy", "msp", "mahalanobis", "vim", "klm"])
def test_scores_from_concurrent_blocks_equal_one_block_at_a_time(method: str) -> None:
    """Threads change who computes a block, not its numbers: two workers give the scores
    of one worker, whatever the BLAS thread count outside (each block gets one)."""
    from oodbench.methods.shared.threads import blas_threads
    from oodbench.results.scoring import score_set

    rng = np.random.default_rng(3)
    fc = Linear(
        rng.normal(size=(20, 16)).astype(np.float32),
        np.zeros(20, np.float32),
        list("abcdefghijklmnopqrst"),
    )
    x = np.abs(rng.normal(size=(1000, 16))).astype(np.float32)
    labels = rng.integers(0, 20, 1000)
    train = FeatureSet("train", x, labels, np.arange(1000))
    detector = create(method, {}).fit(FitData(fc=fc, train=train, val=train))
    fs = FeatureSet("val", x[:333], labels[:333], np.arange(333))
    one = score_set(detector, fs, fc, 64, threads=1)
    with blas_threads(2):
        two = score_set(detector, fs, fc, 64, threads=2)
    np.testing.assert_array_equal(two, one)
    loop = np.concatenate([detector.score(b, fc.logits(b)) for b in np.array_split(x[:333], 7)])
    np.testing.assert_allclose(two, loop, rtol=1e-5, atol=1e-6)


def test_other_npy_layouts_are_read_and_a_bad_header_names_the_checksum(tmp_path: Path) -> None:
    """Shards are written float32 C-order; a float64 or Fortran-order one (another writer)
    is still read, cast to float32; a corrupted header reports the checksum mismatch."""
    x = np.random.default_rng(0).normal(size=(5, 3))
    d = tmp_path / "bb" / "val"
    for layout in (x, np.asfortranarray(x.astype(np.float32))):
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "shard-00000.features.npy", "wb") as f:
            np.save(f, layout)
        digest = store.sha256_file(d / "shard-00000.features.npy")
        info = {"backbone": "bb", "dataset": "val", "feature_dim": 3, "num_classes": 0}
        shard = {"name": "shard-00000", "rows": 5, "sha256": {"features": digest}}
        index = pd.DataFrame({"index": np.arange(5), "label": np.zeros(5, int), "path": [""] * 5})
        store.write_feature_info(d, {**info, "rows": 5, "shards": [shard]}, index)
        got = store.load_features(d)
        assert got.features.dtype == np.float32 and got.logits is None
        np.testing.assert_array_equal(got.features, x.astype(np.float32))
    raw = bytearray((d / "shard-00000.features.npy").read_bytes())
    raw[20] = ord("!")  # inside the header's dict literal
    (d / "shard-00000.features.npy").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum mismatch"):
        store.load_features(d)
    with pytest.raises(DataError, match="unreadable NPY file"):
        store.load_features(d, verify=False)


def test_features_of_another_backbone_are_refused_before_scoring() -> None:
    from oodbench.results.scoring import score_set

    x = np.ones((3, 5), np.float32)
    spy = Spy(None, reads_logits=False)
    with pytest.raises(DataError, match="feature dimension 5 does not match the classifier's 4"):
        score_set(spy, FeatureSet("s", x, np.zeros(3, np.int64), np.arange(3)), FC)
    assert spy.calls == []
