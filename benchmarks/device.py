"""The GPU checks, as one short script for a lent device; ``--quick`` runs it on a CPU.

Three tables, each measured in this one run:

1. extraction: the extract stage's loop (decode, transform, forward, shard writes)
   against the bare forward on pre-made batches, at bf16 autocast (channels_last for
   CNNs), for a ViT-B/16 and a ResNet-50 (timm; random weights saved to a local
   checkpoint, as the device has no model hub: speed does not depend on the weights);
2. kNN at ImageNet shape on the device: the tiled torch search of a 200k x 768 bank by
   84,792 queries at k = 1 and 50, against one bare query x bank product;
3. torchrun: the extract stage under ``torchrun --standalone`` with one rank per GPU
   (NCCL; gloo on a CPU), its features against one plain process's.

    python benchmarks/device.py                 # on the device (about 5 minutes)
    python benchmarks/device.py --quick         # a CPU smoke run of the same code
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from extract import bare_rate, stage_rate, write_images

from oodbench.formats.features import load_features
from oodbench.formats.specs import extract_spec, model_spec, write_spec
from oodbench.methods.shared.neighbours import Bank, device, unit_rows
from oodbench.pipeline import resolve

ROOT = Path(__file__).resolve().parents[1]
FULL = {
    "models": ["vit_base_patch16_224", "resnet50"],
    "images": 4096,
    "batch": 256,
    "workers": [8, 15],
    "bank": 200_000,
    "queries": 84_792,
}
QUICK = {
    "models": ["vit_tiny_patch16_224", "resnet18"],
    "images": 64,
    "batch": 16,
    "workers": [0],
    "bank": 5_000,
    "queries": 1_000,
}


def checkpoint(model: str, folder: Path) -> Path:
    """A random-weight checkpoint of a timm model, loaded as a user's local file would be."""
    import timm

    path = folder / f"{model}.pth"
    if not path.exists():  # the torchrun check reuses the extraction check's file
        torch.manual_seed(0)
        torch.save(timm.create_model(model, pretrained=False).state_dict(), path)
    return path


def extraction(cfg: dict, work: Path) -> None:
    print(f"\nextraction, bf16 autocast, batch {cfg['batch']}, {cfg['images']} images")
    print(f"{'model':<24}{'bare img/s':>12}{'workers':>9}{'stage img/s':>13}{'% of bare':>11}")
    root = work / "images"
    root.mkdir()
    manifest = write_images(root, cfg["images"])
    for model in cfg["models"]:
        spec = {"timm": model, "checkpoint": str(checkpoint(model, work))}
        settings = {"batch_size": cfg["batch"], "precision": "bf16", "shard_rows": 4096}
        bare = bare_rate(model, spec, {**settings, "num_workers": 0}, cfg["images"])
        for workers in cfg["workers"]:
            out = work / "features" / model / f"w{workers}"
            rate = stage_rate(model, spec, {**settings, "num_workers": workers}, manifest, out)
            print(
                f"{model:<24}{bare:>12.0f}{workers:>9}{rate:>13.0f}{100 * rate / bare:>10.0f}%",
                flush=True,
            )


def knn(cfg: dict) -> None:
    rng = np.random.default_rng(0)
    bank_rows = unit_rows(np.abs(rng.standard_normal((cfg["bank"], 768), dtype=np.float32)))
    queries = unit_rows(np.abs(rng.standard_normal((cfg["queries"], 768), dtype=np.float32)))
    bank = Bank(bank_rows, "torch")
    where = device()  # where the torch bank lives: the GPU when there is one
    print(f"\nkNN on {where}: {len(queries)} queries x {len(bank)} bank rows x 768")
    q, t = torch.from_numpy(queries).to(where), torch.from_numpy(bank_rows).to(where)
    sync = torch.cuda.synchronize if where.type == "cuda" else (lambda: None)
    (q[:8] @ t.T).sum().item()  # warm-up
    start = time.perf_counter()
    for b0 in range(0, len(q), 8192):  # the bare products, in blocks that fit any device
        (q[b0 : b0 + 8192] @ t.T).max(dim=1)
    sync()
    del t
    floor = time.perf_counter() - start
    tflop = 2 * len(queries) * len(bank) * 768 / 1e12
    print(f"{'k':>4}{'search s':>10}{'x bare product':>16}{'TFLOP/s':>9}")
    print(f"{'-':>4}{floor:>10.2f}{1.0:>16.1f}{tflop / floor:>9.1f}")
    for k in (1, 50):
        start = time.perf_counter()
        bank.search(queries, k)
        seconds = time.perf_counter() - start
        print(f"{k:>4}{seconds:>10.2f}{seconds / floor:>16.1f}{tflop / seconds:>9.1f}", flush=True)


def torchrun(cfg: dict, work: Path) -> None:
    """The extract stage with one rank per GPU (2 gloo ranks on a CPU) vs one process."""
    ranks = torch.cuda.device_count() or 2
    model = cfg["models"][-1]
    spec = {"timm": model, "checkpoint": str(checkpoint(model, work))}
    project = work / "project"
    (project / "data/manifests").mkdir(parents=True)
    shutil.copy(work / "images/bench.parquet", project / "data/manifests/bench.parquet")
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}  # CPU ranks meet on loopback
    settings = {"batch_size": cfg["batch"], "precision": "fp32", "shard_rows": cfg["batch"]}
    results = {}
    for nproc in (1, ranks):
        params = {"backbones": {model: spec}, "extract": {**settings, "nproc_per_node": nproc}}
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        write_spec(project / model_spec(model), resolve.model_spec(params, model))
        write_spec(project / extract_spec(), resolve.extract_spec(params))
        command = [sys.executable, str(ROOT / "stages/extract.py"), "--backbone", model]
        if nproc == 1 and torch.cuda.is_available():  # NCCL even for one rank
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc_per_node=1", *command[1:]]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(
            [*command, "--dataset", "bench"], cwd=project, env=env, capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"torchrun with {nproc} rank(s) failed:\n{proc.stderr[-3000:]}")
        out = project / "features" / model / "bench"
        results[nproc] = (seconds, load_features(out).features)
        shutil.rmtree(out)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    diff = np.abs(results[1][1] - results[ranks][1]).max()
    print(f"\ntorchrun ({backend}), {model}, {cfg['images']} images, whole stage process")
    print(f"{'ranks':>6}{'seconds':>9}{'max |diff| vs 1 rank':>22}")
    for nproc in (1, ranks):
        seconds, features = results[nproc]
        print(f"{nproc:>6}{seconds:>9.1f}{np.abs(results[1][1] - features).max():>22.2e}")
    if ranks == 1:
        print("(one GPU: one NCCL rank; several GPUs would split the shards)")
    print(f"largest difference between 1 and {ranks} ranks: {diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a CPU")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"torch {torch.__version__}, {gpu}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        extraction(cfg, work)
        knn(cfg)
        torchrun(cfg, work)


if __name__ == "__main__":
    main()
