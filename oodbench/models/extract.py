"""Stage ``extract``: manifest + backbone -> ``features/<bb>/<ds>/`` (feature and logit shards).

Resumable although DVC deletes a stage's outputs before running it: finished shards
live in a work folder *outside* the output, ``features/.work/<bb>/<ds>/<key>/``, where
``key`` hashes everything the numbers depend on (manifest bytes, backbone spec and
checkpoint, batch size, shard size, precision, device, library versions). A rerun with
the same key skips finished shards; the completed directory is then moved into place
in one rename. Batches never straddle a shard, so a resumed run computes every row in
exactly the batch it would have had uninterrupted: on CPU in fp32 the result is
bit-identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from oodbench.core import params as P
from oodbench.core.errors import DataError, ParamsError
from oodbench.core.threads import size_torch_threads
from oodbench.data.images import too_large
from oodbench.formats import paths
from oodbench.formats.atomic import replace_dir, write_text
from oodbench.formats.features import sha256_file, shard_name, write_feature_info, write_shard_array
from oodbench.formats.manifest import read_manifest
from oodbench.formats.specs import code_digest, extract_spec, model_spec, read_spec
from oodbench.models.backbones import (
    Backbone,
    forward_features_and_logits,
    load_backbone,
    model_head,
)
from oodbench.models.decode import JpegPixels, read_jpeg
from oodbench.models.settings import ExtractSettings as Settings

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: listed files looked up before extraction starts: a missing image folder is found in
#: a fraction of a second instead of inside a DataLoader worker
SAMPLED_FILES = 32
WORKER_DIED = "DataLoader worker (pid"  # how torch's messages for a dead worker start
# features @ W^T + b vs the model's logits, relative to max(1, max |logit|): fp32 only
# differs by summation order (~1e-6); half precision heads round to ~3 digits.
HEAD_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}
WORK_VERSION = 1  # bump when the shard contents change for the same inputs


class ImageFiles(Dataset):
    """Decoded, resized uint8 images ``root/path`` in manifest order (in the workers):
    PIL and the model's transform, or torchvision for JPEGs when ``jpeg`` is given."""

    def __init__(
        self, root: Path, paths: list[str], transform: Any, jpeg: JpegPixels | None = None
    ) -> None:
        self.root, self.paths, self.transform, self.jpeg = root, paths, transform, jpeg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        path = self.root / self.paths[i]
        try:
            pixels = read_jpeg(path, self.jpeg) if self.jpeg is not None else None
            if pixels is not None:
                return pixels
            with Image.open(path) as image:
                if reason := too_large(image):  # the limit materialize checked against
                    raise DataError(f"{path}: {reason}; it changed since the manifest was written")
                return self.transform(image)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(
                f"{path}: cannot read image ({err}); it changed since the manifest was written, "
                "rerun `dvc repro` to re-check the dataset"
            ) from err


def relaunch_under_torchrun(settings: dict) -> int | None:
    """With ``extract.nproc_per_node`` > 1 and no torchrun around us yet, run this same
    command line as that many ranks of ``torchrun --standalone`` (one per GPU; on CPU
    each rank gets one thread) and return its exit code; None: go on in this process.
    Several machines: start ``torchrun --nnodes ...`` yourself, RANK is then set."""
    cfg = Settings.from_params(settings)
    if cfg.nproc_per_node == 1 or "RANK" in os.environ:
        return None
    import subprocess

    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, f"--nproc_per_node={cfg.nproc_per_node}", sys.argv[0], *sys.argv[1:]]
    return subprocess.run(command, check=False).returncode


def extract_dataset(backbone: str, dataset: str) -> None:
    """Stage ``extract-<ds>`` of ``pipelines/<bb>/dvc.yaml``: features (and logits) of one dataset's manifest rows.

    With ``extract.nproc_per_node`` > 1 it reruns itself under torchrun (one rank per GPU)."""
    settings = {**read_spec(extract_spec(), "extract"), **untracked_settings()}
    exit_code = relaunch_under_torchrun(settings)
    if exit_code is not None:
        sys.exit(exit_code)
    run(
        backbone=backbone,
        spec=read_spec(model_spec(backbone), f"backbones.{backbone}"),
        settings=settings,
        manifest=paths.manifest_path(dataset),
        out=paths.features_dir(backbone, dataset),
    )


def untracked_settings() -> dict[str, Any]:
    """``extract.num_workers`` / ``nproc_per_node`` from params.yaml: they change how fast
    features come, not which, so no spec records them and changing them reruns nothing."""
    block = P.read_params_file().get("extract") or {}
    return {key: block[key] for key in ("num_workers", "nproc_per_node") if key in block}


def run(backbone: str, spec: dict, settings: dict, manifest: Path, out: Path) -> None:
    """Extract features (and logits) of every ``ok`` manifest row into ``out``.

    Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) rank r computes shards r, r + W, ...
    into the shared work folder; rank 0 then waits for every shard and publishes ``out``.
    Shards and batches are the same as in one process, so is the result."""
    cfg = Settings.from_params(settings)
    frame, meta = read_manifest(manifest)
    rows = frame[frame["status"] == "ok"].reset_index(drop=True)
    bb = load_backbone(backbone, spec)
    device = select_device()
    precision = cfg.precision
    if precision == "fp16" and device.type != "cuda":
        print("extract: fp16 autocast needs CUDA; running fp32 on CPU", file=sys.stderr)
        precision = "fp32"
    rank, world = _rank()
    out = Path(out)
    work = out.parent.parent / ".work" / out.parent.name / out.name
    job = work / work_key(Path(manifest), bb, cfg, precision, device)
    shards_dir, done_dir = job / "out", job / "done"
    n_shards = -(-len(rows) // cfg.shard_rows)
    done = lambda s: _shard_done(shards_dir, done_dir, s)  # noqa: E731
    todo = [s for s in range(rank, n_shards, world) if not done(s)]
    start = time.perf_counter()
    if todo:  # a rank with nothing to do creates nothing (rank 0 may have published already)
        root = Path(meta["root"])
        check_images_present(root, rows["path"].tolist(), meta["dataset"], Path(manifest))
        make_dirs(out, done_dir, shards_dir)
        _extract_shards(bb, rows, root, cfg, precision, device, todo, shards_dir, done_dir)
    seconds = time.perf_counter() - start
    computed = sum(min(cfg.shard_rows, len(rows) - s * cfg.shard_rows) for s in todo)
    print(
        f"extract {backbone}/{meta['dataset']}"
        + (f" rank {rank}/{world}" if world > 1 else "")
        + f": {len(rows)} images, {computed} computed in {seconds:.1f} s "
        f"({computed / max(seconds, 1e-9):.1f} img/s), {len(rows) - computed} from finished shards",
        file=sys.stderr,
    )
    synced = wait_for_other_ranks(world)
    if rank != 0:
        return
    missing = [s for s in range(n_shards) if not done(s)]
    if synced and missing:
        raise DataError(
            f"{job}: shards {missing[:10]} are missing although every rank finished; the "
            "features folder must be on a filesystem that all ranks (all machines) share"
        )
    while not all(done(s) for s in range(n_shards)):  # ranks started by hand, without torchrun
        time.sleep(1.0)
    for stale in shards_dir.glob(".*.tmp"):  # temp files of a killed writer (SIGKILL)
        stale.unlink()
    info = _info(backbone, meta["dataset"], bb, rows, precision, device, done_dir, n_shards)
    info["decoder"] = cfg.decoder
    write_feature_info(shards_dir, info, rows[["index", "label", "path"]])
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(shards_dir, out)
    shutil.rmtree(work, ignore_errors=True)  # this job and stale jobs of other settings
    _remove_empty_parents(work, stop=out.parent.parent)


def check_images_present(root: Path, listed: list[str], dataset: str, manifest: Path) -> None:
    """The dataset root and a sample of its listed files (first, last, evenly between)
    exist, else one DataError naming the root or the first missing file.

    The usual cause is a workspace without the images: ``dvc exp run --queue`` then
    ``dvc queue start`` runs each experiment in a temporary copy of the repository that
    holds only what git or DVC tracks, so an untracked ``data/`` folder is not there."""
    where = root if root.is_absolute() else Path.cwd() / root
    fix = (
        "the images must be there when extraction runs; queued experiments (`dvc exp run "
        "--queue`, `dvc queue start`) run in a temporary copy of the repository holding only "
        f"git- or DVC-tracked files, so track the images with `dvc add {root.as_posix()}` or "
        f"set datasets.{dataset}.root to an absolute path outside the repository "
        "(docs/datasets.md)"
    )
    if not root.is_dir():
        raise DataError(
            f"{root}: image root of dataset {dataset!r} (recorded in {manifest}) does not "
            f"exist in {where.parent}; {fix}"
        )
    step = max(1, len(listed) // SAMPLED_FILES)
    sample = sorted({*range(0, len(listed), step), len(listed) - 1} - {-1})
    missing = [listed[i] for i in sample if not (root / listed[i]).is_file()]
    if missing:
        raise DataError(
            f"{root / missing[0]}: listed in {manifest} but missing ({len(missing)} of "
            f"{len(sample)} sampled files under {where}); {fix}"
        )


def make_dirs(out: Path, *folders: Path) -> None:
    """Create the work folders; an unwritable features folder is one line, not an OSError."""
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"{err.filename or folders[0]}: cannot create the work folder for {out} "
            f"({err.strerror or err}); make {out.parent.parent} writable (`chmod -R u+w "
            f"{out.parent.parent}`) or run where you may write, then rerun"
        ) from err


def _shard_done(shards_dir: Path, done_dir: Path, shard: int) -> bool:
    """A shard is done when its marker and its arrays are there. A run killed after
    publishing (the arrays moved to the output) but before removing the work folder
    leaves markers without arrays: those shards are recomputed, not published empty."""
    name = shard_name(shard)
    return (done_dir / f"{name}.json").is_file() and (shards_dir / f"{name}.features.npy").is_file()


def _rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when run alone."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= rank < world:
        raise ParamsError(f"RANK={rank} is not below WORLD_SIZE={world}; launch with torchrun")
    return rank, world


def wait_for_other_ranks(world: int) -> bool:
    """Under torchrun, a barrier across all ranks (gloo on CPU, NCCL on GPUs), so rank 0
    publishes only when every rank has finished its shards. The barrier, not file
    polling, is what notices a dead rank: torchrun then stops the others. Ranks started
    by hand (RANK/WORLD_SIZE without torchrun's MASTER_ADDR) fall back to polling.
    Returns whether the ranks met at a barrier."""
    if world == 1 or "MASTER_ADDR" not in os.environ:
        return False
    import datetime

    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    # extraction of a large set can leave ranks hours apart; the default is 30 minutes
    dist.init_process_group(backend, timeout=datetime.timedelta(hours=12))
    try:
        if backend == "nccl":
            dist.barrier(device_ids=[int(os.environ.get("LOCAL_RANK", "0"))])
        else:
            dist.barrier()
    finally:
        dist.destroy_process_group()
    return True


def jpeg_pixels(bb: Backbone, cfg: Settings) -> JpegPixels | None:
    """The torchvision JPEG pipeline when ``extract.decoder: torchvision``, else None."""
    if cfg.decoder != "torchvision":
        return None
    return JpegPixels.from_data_config(bb.info["data_config"], f"backbones.{bb.key}")


def select_device() -> torch.device:
    """CUDA when there is one (``LOCAL_RANK`` picks it under torchrun), else CPU, with
    torch's threads sized to the cores the process may use (``OODBENCH_THREADS``), unless
    torchrun started several ranks on the CPU (it gives each ``OMP_NUM_THREADS=1``)."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        size_torch_threads()
    return torch.device("cpu")


def work_key(
    manifest: Path, bb: Backbone, cfg: Settings, precision: str, device: torch.device
) -> str:
    """Hash of every input that changes the numbers (not num_workers or nproc_per_node:
    shards and batches are the same whichever process computes them)."""
    import timm

    ident = {
        **user_code_key(bb),
        "version": WORK_VERSION,
        "manifest": sha256_file(manifest),
        "backbone": bb.info,
        "batch_size": cfg.batch_size,
        "decoder": cfg.decoder,
        "shard_rows": cfg.shard_rows,
        "precision": precision,
        "device": device.type,
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def user_code_key(bb: Backbone) -> dict[str, str]:
    """A user's model file and what it imports (the digest of the stage's code group,
    written by the check stage): edited code must not resume stale shards."""
    digest = code_digest(f"extract-{bb.key}")
    return {"code": sha256_file(digest)} if bb.info.get("model") and digest.is_file() else {}


def shard_batches(
    n_rows: int, shard_rows: int, batch_size: int, shards: list[int]
) -> list[list[int]]:
    """Row batches for the given shards; a batch never crosses a shard boundary."""
    batches = []
    for s in shards:
        lo, hi = s * shard_rows, min((s + 1) * shard_rows, n_rows)
        batches.extend(list(range(b, min(b + batch_size, hi))) for b in range(lo, hi, batch_size))
    return batches


def _extract_shards(
    bb: Backbone,
    rows: pd.DataFrame,
    root: Path,
    cfg: Settings,
    precision: str,
    device: torch.device,
    todo: list[int],
    shards_dir: Path,
    done_dir: Path,
) -> None:
    """Run the model over the unfinished shards, writing each shard as soon as it is complete."""
    if device.type == "cuda":
        torch.cuda.set_device(device)  # pinned memory and kernels on this rank's GPU only
    model, cnn = _prepare(bb.model, device)
    normalize = bb.normalize.to(device)
    batches = shard_batches(len(rows), cfg.shard_rows, cfg.batch_size, todo)
    loader = DataLoader(
        ImageFiles(root, rows["path"].tolist(), bb.pixels, jpeg_pixels(bb, cfg)),
        batch_sampler=batches,
        # one batch leaves nothing to decode ahead: a worker would only add its start-up
        num_workers=cfg.num_workers if len(batches) > 1 else 0,
        pin_memory=device.type == "cuda",
        worker_init_fn=quiet_lost_connections,
    )
    head = model_head(bb.model)
    dtype = AUTOCAST[precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    pending: dict[str, list[np.ndarray]] = {"features": [], "logits": []}
    checked = False
    with (
        worker_failures(),
        _progress(sum(map(len, batches)), f"{bb.key}") as advance,
        torch.inference_mode(),
        autocast,
    ):
        for batch, x in zip(batches, loader, strict=True):
            x = normalize(x.to(device, non_blocking=True))
            if cnn:
                x = x.contiguous(memory_format=torch.channels_last)
            feats, logits = forward_features_and_logits(model, x)
            pending["features"].append(feats.float().cpu().numpy())
            if logits is not None:
                pending["logits"].append(logits.float().cpu().numpy())
            if not checked and head is not None:
                check_head(
                    head,
                    pending["features"][-1],
                    pending["logits"][-1],
                    precision,
                    bb.key,
                    getattr(bb.model, "head_description", None),
                )
                checked = True
            advance(len(batch))
            shard, last = divmod(batch[-1], cfg.shard_rows)
            if last == cfg.shard_rows - 1 or batch[-1] == len(rows) - 1:
                _write_shard(shards_dir, done_dir, shard, pending)
                pending = {"features": [], "logits": []}


@contextlib.contextmanager
def worker_failures() -> Iterator[None]:
    """Around the loop over a DataLoader: a DataError raised in a worker process, or a
    worker that died, becomes one DataError line instead of torch's worker traceback.

    torch re-raises a worker's exception in the main process as the same type with the
    worker's whole traceback as its message (the original message is its last line),
    and reports a dead worker with a RuntimeError, possibly from its SIGCHLD handler,
    i.e. wherever the loop happens to be; hence a context around all of it."""
    try:
        yield
    except DataError as err:
        raise DataError(worker_message(str(err))) from None
    except RuntimeError as err:
        if not str(err).startswith(WORKER_DIED):
            raise
        raise DataError(
            f"extract: an image-decoding worker died ({err}); usually the kernel killed it "
            "for lack of memory: lower extract.num_workers or extract.batch_size (or free "
            "memory) and rerun; finished shards are kept and not recomputed"
        ) from None


def quiet_lost_connections(worker_id: int) -> None:
    """In a DataLoader worker: a lost connection reported by multiprocessing's fd-sharing
    thread (``resource_sharer``, which hands batches' tensors to the main process) prints
    nothing. It loses its connection only when the main process is going away, e.g. when
    another worker died and :func:`worker_failures` is stopping the stage with one line,
    which that thread's traceback would otherwise follow. Any other error still prints;
    the worker loop itself reports its errors through the DataLoader, not this hook."""
    default = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if not issubclass(kind, ConnectionError | EOFError):
            default(kind, value, tb)

    sys.excepthook = hook


def worker_message(text: str) -> str:
    """The original DataError message inside torch's "Caught DataError in DataLoader worker
    process N. Original Traceback ..." text (the message itself when not wrapped)."""
    marker = f"{DataError.__module__}.{DataError.__qualname__}: "
    lines = text.rstrip().splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith(marker):
            return "\n".join([lines[index][len(marker) :], *lines[index + 1 :]])
    return text


def _prepare(model: torch.nn.Module, device: torch.device) -> tuple[torch.nn.Module, bool]:
    """Move to the device; channels_last for CNNs (faster convolutions on CPU and GPU).

    A ViT has a single patch-embedding conv, a CNN many: that tells them apart."""
    cnn = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) > 1
    model = model.to(device)
    if cnn:
        model = model.to(memory_format=torch.channels_last)
    return model, cnn


def check_head(
    head: Any,
    feats: np.ndarray,
    logits: np.ndarray,
    precision: str,
    key: str,
    source: str | None = None,
) -> None:
    """features @ W^T + b must reproduce the model's logits, else scores built on W, b are
    wrong. `source` names where W, b came from (``get_fc()``, a ``head:`` layer)."""
    scale = max(1.0, float(np.abs(logits).max()))
    err = float(np.abs(head.logits(feats) - logits).max())
    tol = HEAD_TOLERANCE[precision] * scale
    if not err <= tol:
        fix = (
            f"W, b come from {source}: make it return the classifier that maps the feature to "
            "the model's logits, name the final nn.Linear with head:, or use fc: probe"
            if source
            else "the head is not a linear map of the pooled features, so logit-based "
            "scores would be wrong; use fc: probe or another backbone"
        )
        raise DataError(
            f"backbones.{key}: features @ W^T + b differs from the model's logits by {err:.3g} "
            f"(tolerance {tol:.3g}, {precision}): {fix}"
        )


def _write_shard(
    shards_dir: Path, done_dir: Path, shard: int, pending: dict[str, list[np.ndarray]]
) -> None:
    """Write the arrays, then the done marker: a shard without its marker is recomputed."""
    sums, rows = {}, 0
    for kind, parts in pending.items():
        if parts:
            array = np.concatenate(parts)
            rows = len(array)
            sums[kind] = write_shard_array(shards_dir, shard, kind, array)
    write_text(done_dir / f"{shard_name(shard)}.json", json.dumps({"rows": rows, "sha256": sums}))


def _info(
    backbone: str,
    dataset: str,
    bb: Backbone,
    rows: pd.DataFrame,
    precision: str,
    device: torch.device,
    done_dir: Path,
    n_shards: int,
) -> dict[str, Any]:
    shards = []
    for s in range(n_shards):
        done = json.loads((done_dir / f"{shard_name(s)}.json").read_text())
        shards.append({"name": shard_name(s), "rows": done["rows"], "sha256": done["sha256"]})
    if sum(s["rows"] for s in shards) != len(rows):
        raise DataError(
            f"finished shards in {done_dir} do not add up to {len(rows)} rows; delete it and rerun"
        )
    return {
        "backbone": backbone,
        "dataset": dataset,
        "feature_dim": bb.info["feature_dim"],
        "num_classes": bb.info["num_classes"],
        "rows": len(rows),
        "shards": shards,
        "precision": precision,
        "device": device.type,
        # the model: a timm name or an open_clip one (a CLIP backbone has no timm key)
        **{
            k: bb.info[k]
            for k in ("timm", "clip", "clip_config", "model", "torchvision", "openood", "head")
            if bb.info.get(k)
        },
        "preprocess": bb.info["preprocess"],
        "data_config": bb.info["data_config"],
        "checkpoint_sha256": bb.info.get("checkpoint_sha256"),
    }


@contextlib.contextmanager
def _progress(total: int, label: str):
    """A rich bar on stderr with img/s and ETA; yields ``advance(n)``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]} img/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(label, total=total, rate="   -")

        def advance(n: int) -> None:
            progress.advance(task, n)
            speed = progress.tasks[task].speed
            progress.update(task, rate=f"{speed:6.1f}" if speed else "   -")

        yield advance


def _remove_empty_parents(path: Path, stop: Path) -> None:
    """Drop ``.work/<bb>`` and ``.work`` once empty, so no litter is left behind."""
    for parent in path.parents:
        if parent == stop or not parent.is_dir() or any(parent.iterdir()):
            break
        parent.rmdir()
