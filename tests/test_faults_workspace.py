"""Fault catalogue on a copy of the real demo workspace: bad params, skipped images,
Ctrl-C and SIGKILL during extraction and scoring (real `oodbench` subprocesses)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from oodbench.formats.scores import load_scores
from tests.conftest import rewrite_params, run, stage_command
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
    "the check stage (before any other) stops with one `error:` line naming the key, exit 2, no file touched",
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
        run(stage_command("score", "--backbone", "lite0", "--method", method), ws)
    run(stage_command("evaluate", "--backbone", "lite0"), ws)
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


@catalogue(
    "files",
    "extraction is killed (SIGKILL) at random points, several times",
    "each rerun resumes; the final shards are bit-identical to an uninterrupted run",
)
def test_sigkill_during_extraction_resumes(ws: Path, reference: dict[str, bytes]) -> None:
    shutil.rmtree(ws / "features/lite0" / DS)
    rng = random.Random(6)
    for _ in range(3):
        proc = start(ws, "extract", "--backbone", "lite0", "--dataset", DS)
        time.sleep(rng.uniform(1.0, 6.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finish(ws, reference)


@catalogue(
    "files",
    "Ctrl-C (SIGINT) arrives during scoring",
    "the scores file is either the old one or a complete new one, never partial; no temp file; the rerun gives identical scores",
)
def test_sigint_during_scoring(ws: Path) -> None:
    path = ws / "scores/lite0/react.parquet"
    original = load_scores(path)
    rng = random.Random(3)
    for _ in range(3):
        proc = start(ws, "score", "--backbone", "lite0", "--method", "react")
        time.sleep(rng.uniform(0.2, 3.0))
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode in (0, 130, -signal.SIGINT), proc.returncode
        scores = load_scores(path)
        assert scores.keys() == original.keys()
        assert all((scores[k] == original[k]).all() for k in original)
        assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    run(stage_command("score", "--backbone", "lite0", "--method", "react"), ws)
    again = load_scores(path)
    assert all((again[k] == original[k]).all() for k in original)
