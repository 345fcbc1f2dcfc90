"""A user's own benchmark, built the way the README tells a new user to: not the demo.

ID: PIL-drawn shapes (circle, square, triangle) in class folders, listed with
`oodbench datalists from-folder`; OOD: noise images listed by an OpenOOD imglist with
dict extras (`oodbench datalists import-openood`) and stripes listed from a folder with
`--labels none`. Backbones: a timm resnet18 with its own 3-class head in a local
checkpoint (keys saved with a `net.` prefix and each BatchNorm's bias before its weight,
the layout that once loaded silently wrong), a ViT-tiny without a head plus a linear
probe, and a tiny open_clip model from its own config file with a local state dict.
Methods: built-ins beside one of the user's own, ``cos`` (``mymethods/cosine.py``, cosine
similarity to the class means, with a helper module of its own: tests/own_method.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

from tests.own_method import BLOCK, write_method

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square", "triangle")
IMAGE = 64
#: a CLIP small enough to run on two CPU cores in seconds (open_clip's JSON config format)
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def draw_shape(kind: str, rng: np.random.Generator) -> Image.Image:
    """One shape, random size, place and colours, on a noisy background."""
    background = rng.integers(0, 80, (IMAGE, IMAGE, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(20, 40))
    x, y = (int(v) for v in rng.integers(4, IMAGE - size - 4, 2))
    colour = tuple(int(c) for c in rng.integers(120, 256, 3))
    if kind == "circle":
        draw.ellipse([x, y, x + size, y + size], fill=colour)
    elif kind == "square":
        draw.rectangle([x, y, x + size, y + size], fill=colour)
    else:
        draw.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=colour)
    return image


def write_images(root: Path, seed: int = 0) -> None:
    """data/shapes/{train,val}/<class>/*.png, data/noise/*.png, data/stripes/*.jpg."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", 20), ("val", 8)):
        for kind in CLASSES:
            folder = root / "data" / "shapes" / split / kind
            folder.mkdir(parents=True)
            for i in range(count):
                draw_shape(kind, rng).save(folder / f"{kind}_{i:03d}.png")
    (root / "data" / "noise" / "images").mkdir(parents=True)
    for i in range(10):
        pixels = rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "data" / "noise" / "images" / f"noise_{i:03d}.png")
    (root / "data" / "stripes").mkdir(parents=True)
    for i in range(10):
        stripes = np.zeros((IMAGE, IMAGE, 3), np.uint8)
        stripes[:, :: 2 + i % 4] = rng.integers(100, 256, 3)
        Image.fromarray(stripes).save(root / "data" / "stripes" / f"stripes_{i:03d}.jpg")


def openood_imglist(root: Path) -> Path:
    """An OpenOOD benchmark_imglist file: paths under OpenOOD's images root, dict extras."""
    lines = [
        f'noise/images/{p.name} {{"label": -1, "source": "noise"}}'
        for p in sorted((root / "data" / "noise" / "images").iterdir())
    ]
    path = root / "benchmark_imglist" / "test_noise.txt"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    return path


def save_r18(path: Path, train_root: Path) -> None:
    """A resnet18 with a 3-class head fitted to the shapes (least squares on its features),
    saved the way a training script wrapping the model as `net` might: `net.`-prefixed
    keys, each BatchNorm's bias before its weight."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    feats, labels = [], []
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    with torch.no_grad():
        for label, kind in enumerate(CLASSES):
            for file in sorted((train_root / kind).iterdir()):
                x = transform(Image.open(file).convert("RGB"))[None]
                feats.append(model.forward_head(model.forward_features(x), pre_logits=True)[0])
                labels.append(label)
    x = torch.stack(feats).double()
    y = torch.nn.functional.one_hot(torch.tensor(labels), 3).double() * 2 - 1
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.double)], dim=1)
    solution = torch.linalg.lstsq(design, y, driver="gelsd").solution
    model.fc.weight.data = solution[:-1].T.float().contiguous()
    model.fc.bias.data = solution[-1].float()
    state = model.state_dict()
    reordered = {}
    for key in state:  # bias before weight wherever a module has both
        base, _, leaf = key.rpartition(".")
        if leaf == "weight" and f"{base}.bias" in state:
            reordered[f"net.{base}.bias"] = state[f"{base}.bias"]
        if not (leaf == "bias" and f"{base}.weight" in state):
            reordered[f"net.{key}"] = state[key]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reordered, path)


def save_vit_tiny(path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def save_tiny_clip(config: Path, weights: Path) -> None:
    import open_clip
    from safetensors.torch import save_file

    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({**TINY_CLIP}))
    open_clip.add_model_config(config)
    torch.manual_seed(2)
    model = open_clip.create_model(config.stem, pretrained=None)
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))


def copy_code(dest: Path) -> None:
    """The project's code and DVC set-up, as a user's clone has them (no demo data)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (".dvcignore", ".gitignore"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("stages", "oodbench"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    shutil.copytree(ROOT / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))


PARAMS = {
    "benchmark": {
        "backbones": ["r18", "vt", "clip"],
        "methods": ["msp", "energy", "maxlogit", "knn", "knn_openood", "mahalanobis", "vim",
                    "she", "nnguide", "mcm", "cos"],
        "id_train": "shapes_train",
        "id_val": "shapes_val",
        "ood": ["noise", "stripes"],
    },
    "datasets": {
        "shapes_train": {"root": "data/shapes", "group": "id"},
        "shapes_val": {"root": "data/shapes", "group": "id"},
        "noise": {"root": "data", "group": "far"},
        "stripes": {"root": "data/stripes", "group": "near"},
    },
    "backbones": {
        "r18": {"timm": "resnet18", "num_classes": 3, "checkpoint": "checkpoints/r18/r18.pth",
                "fc": "head"},
        "vt": {"timm": "vit_tiny_patch16_224", "num_classes": 0,
               "checkpoint": "checkpoints/vt/vt.safetensors", "fc": "probe"},
        # no `clip:` name: the architecture file registers the model under its stem
        "clip": {"clip_config": "configs/tiny-clip.json",
                 "checkpoint": "checkpoints/clip/tiny.safetensors", "fc": "plp"},
    },
    "extract": {"batch_size": 16, "num_workers": 0, "precision": "fp32", "shard_rows": 64},
    "probe": {"epochs": 30, "lr": 0.01, "weight_decay": 0.001, "warmup": 0.1,
              "batch_size": 32, "standardize": True, "seed": 42},
    "methods": {
        "msp": {}, "energy": {}, "maxlogit": {},
        "knn": {"variant": "plp", "k": 1, "temperature": 0.02},
        "knn_openood": {"method": "knn", "variant": "openood"},
        "mahalanobis": {}, "vim": {"dim": "current"}, "she": {}, "nnguide": {},
        "mcm": {"temperature": 1.0},
        "cos": dict(BLOCK),  # the user's own method: mymethods/cosine.py:CosineToMeans
    },
}  # fmt: skip


def build_project(dest: Path) -> Path:
    """The whole user project in `dest`, as a git + DVC repo, datalists made with the CLI."""
    copy_code(dest)
    write_images(dest)
    (dest / "datalists").mkdir()
    oodbench = [sys.executable, "-m", "oodbench.cli.app"]
    for split in ("train", "val"):
        run([*oodbench, "datalists", "from-folder", "data/shapes", "--under", split,
             "--name", f"shapes_{split}"], dest)  # fmt: skip
    run([*oodbench, "datalists", "import-openood", str(openood_imglist(dest)), "--name", "noise",
         "--strip", "", "--ood"], dest)  # fmt: skip
    run([*oodbench, "datalists", "from-folder", "data/stripes", "--labels", "none",
         "--name", "stripes"], dest)  # fmt: skip
    save_r18(dest / "checkpoints/r18/r18.pth", dest / "data/shapes/train")
    save_vit_tiny(dest / "checkpoints/vt/vt.safetensors")
    save_tiny_clip(dest / "configs/tiny-clip.json", dest / "checkpoints/clip/tiny.safetensors")
    write_method(dest)
    (dest / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    run(["git", "init", "-q"], dest)
    # images and weights are tracked by DVC, not git (README): a queued experiment's
    # temporary workspace checks them out from the cache
    run(["dvc", "add", "-q", "data/shapes", "data/noise", "data/stripes", "checkpoints/r18",
         "checkpoints/vt", "checkpoints/clip"], dest)  # fmt: skip
    run([*oodbench, "pipeline"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "user project"], dest)
    return dest
