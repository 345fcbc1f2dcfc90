"""Fault catalogue on a copy of the real demo workspace: bad params, skipped images,
Ctrl-C and SIGKILL during extraction and scoring (real `oodbench` subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from oodbench.formats.features import read_feature_info
from tests.conftest import feature_dir, rewrite_params, run, stage_command
from tests.faults_catalogue import catalogue

pytestmark = pytest.mark.slow
SMALL_SHARDS = {"batch_size": 4, "num_workers": 0, "precision": "fp32", "shard_rows": 8}
DS = "digits_id_train"  # 36 images: five shards of 8 rows


@pytest.fixture(scope="module")
def ws(demo_workspace: Path, tmp_path_factory) -> Path:
    """The demo workspace's data and artifacts (not its git/DVC state), with small shards."""
    dest = tmp_path_factory.mktemp("faults") / "ws"
    shutil.copytree(demo_workspace, dest, ignore=shutil.ignore_patterns(".git", ".dvc"))
    rewrite_params(dest, lambda p: p.update(extract=dict(SMALL_SHARDS)))
    run(stage_command("check"), dest)  # the stages read the specs it resolves
    return dest


def snapshot(ws: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(ws)): p.read_bytes()
        for p in ws.rglob("*")
        if p.is_file() and p.name != "params.yaml"
    }


def one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@catalogue(
    "params",
    "a hyperparameter has the wrong type, `benchmark.ood` is empty, or `benchmark.id_train` is missing",
    "the check stage (before any other) stops with one `error:` line naming the key, exit 2, no file touched (under `dvc repro` a changed hyperparameter alone reruns its score stage, not the check stage: see the next rows)",
)
@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (
            lambda p: p["methods"]["energy"].update(temperature="hot"),
            ["methods.energy.temperature", "'hot'"],
        ),
        (lambda p: p["benchmark"].update(ood=[]), ["benchmark.ood is empty"]),
        (lambda p: p["benchmark"].pop("id_train"), ["benchmark.id_train"]),
    ],
)
def test_bad_params_one_line(ws: Path, change, needles: list[str]) -> None:
    before = snapshot(ws)
    original = rewrite_params(ws, change)
    try:
        one_error_line(run(stage_command("check"), ws, check=False), *needles)
    finally:
        (ws / "params.yaml").write_text(original)
    assert snapshot(ws) == before


@catalogue(
    "images",
    "a dataset has unreadable images and `skip_bad` is on",
    "without it materialize fails and keeps the old manifest; with it the pipeline runs and `metrics/<bb>.json` reports `ood.<ds>.n_skipped` / `id.n_skipped`",
)
def test_skipped_images_reach_metrics(ws: Path) -> None:
    manifest = ws / "data/manifests/photos.parquet"
    old = manifest.read_bytes()
    datalist = ws / "datalists/photos.txt"
    datalist.write_text(datalist.read_text() + "photos/gone.jpg -1\n")
    result = run(stage_command("materialize", "--dataset", "photos"), ws, check=False)
    assert result.returncode == 2 and "line 17: photos/gone.jpg: missing" in result.stderr
    assert manifest.read_bytes() == old
    original = rewrite_params(ws, lambda p: p["datasets"]["photos"].update(skip_bad=True))
    try:
        run(stage_command("check"), ws)
        run(stage_command("materialize", "--dataset", "photos"), ws)
    finally:
        (ws / "params.yaml").write_text(original)
        run(stage_command("check"), ws)
    run(stage_command("extract", "--backbone", "lite0", "--dataset", "photos"), ws)
    for method in yaml.safe_load((ws / "params.yaml").read_text())["benchmark"]["methods"]:
        run(stage_command("score", "--method", method, "--backbones", "lite0"), ws)
    run(stage_command("evaluate", "--backbones", "lite0"), ws)
    metrics = json.loads((ws / "metrics/lite0.json").read_text())
    assert metrics["ood"]["photos"] == {"n": 16, "n_skipped": 1}
    assert metrics["ood"]["textures"]["n_skipped"] == 0 and metrics["id"]["n_skipped"] == 0


def start(ws: Path, *args: str) -> subprocess.Popen[str]:
    """A stage script in its own process group, so signals reach it and nothing else.

    SIGINT is reset to its default first: a shell's background job (`make test &`) starts
    with SIGINT ignored, children inherit that, and Python would then never raise
    KeyboardInterrupt; a user's Ctrl-C always arrives with the default disposition."""
    return subprocess.Popen(
        stage_command(*args),
        cwd=ws,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def shard_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.npy"))}


@pytest.fixture(scope="module")
def reference(ws: Path) -> dict[str, bytes]:
    """Shards of one uninterrupted extraction with the small-shard settings."""
    run(stage_command("extract", "--backbone", "lite0", "--dataset", DS), ws)
    shards = shard_bytes(ws / "features/lite0" / DS)
    assert len(shards) == 10  # features and logits of five shards
    return shards


def work_dir(ws: Path) -> Path:
    return ws / "features/.work/lite0" / DS


def finish(ws: Path, reference: dict[str, bytes]) -> str:
    """Rerun to completion: shards bit-identical, no work folder or temp file left."""
    result = run(stage_command("extract", "--backbone", "lite0", "--dataset", DS), ws)
    out = ws / "features/lite0" / DS
    assert shard_bytes(out) == reference
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*reference, "index.parquet", "info.json"]
    )
    assert not (ws / "features/.work").exists()
    return result.stderr


@catalogue(
    "files",
    "Ctrl-C (SIGINT) arrives during extraction",
    "exit 130, no output directory; finished shards are kept and the rerun resumes from them, bit-identical",
)
def test_sigint_during_extraction_resumes(ws: Path, reference: dict[str, bytes]) -> None:
    shutil.rmtree(ws / "features/lite0" / DS)
    proc = start(ws, "extract", "--backbone", "lite0", "--dataset", DS)
    deadline = time.monotonic() + 120
    while not list(work_dir(ws).glob("*/done/shard-00001.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert not (ws / "features/lite0" / DS).exists()
    log = finish(ws, reference)
    resumed = int(log.rsplit(", ", 1)[-1].split()[0])  # "... N from finished shards"
    assert resumed >= 16, log


def done_shards(ws: Path) -> set[str]:
    """The shards an interrupted extraction finished, kept in its work folder."""
    return {p.name for p in work_dir(ws).glob("*/done/shard-*.json")}


@catalogue(
    "files",
    "extraction is killed (SIGKILL) several times, each time after one more shard",
    "each rerun resumes; the final shards are bit-identical to an uninterrupted run",
)
def test_sigkill_during_extraction_resumes(ws: Path, reference: dict[str, bytes]) -> None:
    shutil.rmtree(ws / "features/lite0" / DS)
    for kill in range(1, 4):  # three runs, each killed once it finished one more shard
        proc = start(ws, "extract", "--backbone", "lite0", "--dataset", DS)
        deadline = time.monotonic() + 120
        while len(done_shards(ws)) < kill:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        # the kill landed mid-work: the process died of it, leaving a partial extraction
        assert proc.returncode == -signal.SIGKILL, proc.returncode
        assert kill <= len(done_shards(ws)) < 5
        assert not (ws / "features/lite0" / DS).exists()
    log = finish(ws, reference)
    assert int(log.rsplit(", ", 1)[-1].split()[0]) >= 3 * 8  # rows from finished shards


@catalogue(
    "files",
    "Ctrl-C (SIGINT) arrives during scoring, after the first dataset",
    "exit 130; the scores file is the old one, never partial, and no temp file is left; the "
    "datasets already scored are kept and the rerun scores only the rest, identically",
)
def test_sigint_during_scoring(ws: Path, tmp_path: Path) -> None:
    """Mahalanobis on an OOD set of 8,000 rows: a second of float64 GEMMs after the ID val
    set's scores are stored, so the signal, sent once they are, lands mid-work."""
    work = tmp_path / "ws"
    shutil.copytree(ws, work, ignore=shutil.ignore_patterns(".work"))
    rewrite_params(work, lambda p: p["benchmark"].update(methods=["mahalanobis"]))
    run(["oodbench", "pipeline"], work)
    run(stage_command("check"), work)
    near = work / "features/lite0/digits_near"
    dim = read_feature_info(near)["feature_dim"]
    rows = np.maximum(np.random.default_rng(0).standard_normal((8_000, dim), np.float32), 0)
    shutil.rmtree(near)
    feature_dir(near, rows, [-1] * len(rows), "lite0")
    score = stage_command("score", "--method", "mahalanobis", "--backbones", "lite0")
    run(score, work)  # the uninterrupted scores of these sets
    path = work / "scores/lite0/mahalanobis.parquet"
    complete = path.read_bytes()
    cache = work / "scores/.cache/lite0/mahalanobis"
    shutil.rmtree(cache)  # score every set again: ID val first, then the OOD sets in order

    proc = start(work, "score", "--method", "mahalanobis", "--backbones", "lite0")
    deadline = time.monotonic() + 60
    while not list(cache.glob("digits_id_val-*.npz")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    # it landed mid-work: the process stopped on it, with one set of four stored
    assert proc.returncode == 130, stderr
    assert "interrupted: finished outputs are kept" in stderr
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["digits_id_val"]
    assert path.read_bytes() == complete  # the old scores, untouched
    assert [p.name for p in work.joinpath("scores").rglob("*") if ".tmp" in p.name] == []
    rerun = run(score, work)
    assert "1 sets from cache, 3 scored" in rerun.stdout
    assert path.read_bytes() == complete
