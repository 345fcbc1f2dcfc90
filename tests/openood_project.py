"""A user project for OpenOOD's CIFAR-10 benchmark with a model of the user's own.

Built the way docs/extending.md tells a user to:
- an OpenOOD data folder outside the project (``benchmark_imglist/cifar10/*.txt`` in
  OpenOOD's format, 32x32 PNGs under ``images_classic/``), a few images per list;
- ``oodbench init openood cifar10 --data <folder> .`` writes the datalists and params;
- ``mynets/resnet.py``: an OpenOOD-protocol CIFAR ResNet-18 written by the user (its
  blocks in ``mynets/blocks.py``, imported relatively), random weights saved as
  ``best.ckpt`` under OpenOOD's released tensor names;
- backbones: ``resnet18`` (the ``openood_cifar10`` preset init wrote, loading that
  checkpoint), ``own`` (``model: mynets/resnet.py:ResNet18_32x32``, the same
  checkpoint) and ``imported`` (features the test computed with its own forward pass,
  as .npy, a ViM-style pickle and an import-pkl feature folder, with a pickled [W, b]).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from tests.user_project import copy_code, run

#: the CIFAR-10 benchmark's lists and how many images each gets here (OpenOOD's names)
LISTS = {
    "train_cifar10.txt": ("cifar10/train", 2, "id"),
    "val_cifar10.txt": ("cifar10/val", 1, "id"),
    "test_cifar10.txt": ("cifar10/test", 2, "id"),
    "test_cifar10c.txt": ("cifar10c", 1, "id"),
    "test_cifar100.txt": ("cifar100/test", 8, "ood"),
    "test_tin.txt": ("tin/test", 4, "ood"),
    "test_mnist.txt": ("mnist/test", 8, "ood"),
    "test_svhn.txt": ("svhn/test", 4, "ood"),
    "test_texture.txt": ("texture", 4, "ood"),
    "test_places365.txt": ("places365", 4, "ood"),
    "val_tin.txt": ("tin/val", 4, "ood"),
}
CLASSES = 10
#: what the repro runs (init writes all of v1.5's sets and methods; fewer keep CI short)
OOD = ["cifar100", "mnist", "cifar10c"]
METHODS = ["msp", "energy", "knn", "mahalanobis", "vim"]
CIFAR10 = {
    "resize": 32,
    "crop": 32,
    "mean": [0.4914, 0.4822, 0.4465],
    "std": [0.2470, 0.2435, 0.2616],
    "interpolation": "bilinear",
}

BLOCKS = '''"""Residual blocks of my CIFAR ResNet."""
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        down = []
        if stride != 1 or cin != cout:
            down = [nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)]
        self.shortcut = nn.Sequential(*down)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))
'''

RESNET = '''"""My CIFAR ResNet-18, OpenOOD's network protocol and tensor names."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import Block


class ResNet18_32x32(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, cout in enumerate([64, 128, 256, 512], start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(Block(cin, cout, stride), Block(cout, cout, 1)))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x, return_feature=False, return_feature_list=False):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        feature = torch.flatten(self.avgpool(out), 1)
        logits = self.fc(feature)
        return (logits, feature) if return_feature else logits

    def get_fc(self):
        return self.fc.weight.detach().cpu().numpy(), self.fc.bias.detach().cpu().numpy()
'''


def write_model_code(project: Path) -> None:
    folder = project / "mynets"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text("")
    (folder / "blocks.py").write_text(BLOCKS)
    (folder / "resnet.py").write_text(RESNET)


def user_model(project: Path) -> torch.nn.Module:
    """The user's class, imported from the project as the extract stage does."""
    from oodbench.core.usercode import CodeRef, load

    ref = CodeRef.parse("mynets/resnet.py:ResNet18_32x32", "test")
    return load(ref, project, "test")


def save_checkpoint(project: Path) -> Path:
    """Random weights (BatchNorm statistics too, so that they matter) under OpenOOD's names."""
    torch.manual_seed(0)
    model = user_model(project)(num_classes=CLASSES)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                tensor.normal_(0, 0.1)
            elif name.endswith("bn1.weight") or name.endswith("bn2.weight"):
                tensor.uniform_(0.5, 1.5)
    path = project / "checkpoints" / "resnet18" / "best.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def write_openood_folder(data: Path, seed: int = 0) -> None:
    """OpenOOD's data layout: imglists with `path label` lines, 32x32 PNGs."""
    rng = np.random.default_rng(seed)
    lists = data / "benchmark_imglist" / "cifar10"
    lists.mkdir(parents=True)
    for name, (folder, count, role) in LISTS.items():
        lines = []
        classes = range(CLASSES) if role == "id" else [None]
        for label in classes:
            for i in range(count):
                rel = f"{folder}/{'x' if label is None else label}_{i}.png"
                image = data / "images_classic" / rel
                image.parent.mkdir(parents=True, exist_ok=True)
                base = rng.integers(0, 256, 3) if label is None else 25 * label
                pixels = np.clip(base + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(image)
                # OOD lists of OpenOOD carry a label too; init writes -1 for them
                lines.append(f"{rel} {0 if label is None else label}")
        (lists / name).write_text("\n".join(lines) + "\n")


def own_features(project: Path, data: Path, listed: Path) -> np.ndarray:
    """Features of a datalist's images by the test's own forward pass: OpenOOD's test
    transform (torchvision, PIL) and the user's model with the checkpoint."""
    from torchvision import transforms as T

    model = user_model(project)(num_classes=CLASSES).eval()
    model.load_state_dict(torch.load(project / "checkpoints/resnet18/best.ckpt"))
    transform = T.Compose(
        [T.Resize(32), T.CenterCrop(32), T.ToTensor(), T.Normalize(CIFAR10["mean"], CIFAR10["std"])]
    )
    rows = []
    with torch.no_grad():
        for line in listed.read_text().splitlines():
            path = line.rsplit(" ", 1)[0]
            x = transform(Image.open(data / "images_classic" / path).convert("RGB"))[None]
            rows.append(model(x, return_feature=True)[1][0].numpy())
    return np.stack(rows).astype(np.float32)


def write_imported(project: Path, data: Path, datasets: list[str]) -> None:
    """imported/own/: the test's own features in three formats, and a pickled [W, b]."""
    folder = project / "imported" / "own"
    folder.mkdir(parents=True)
    oodbench = [sys.executable, "-m", "oodbench.cli.app"]
    for i, dataset in enumerate(datasets):
        rows = own_features(project, data, project / "datalists" / f"{dataset}.txt")
        if i % 3 == 0:
            np.save(folder / f"{dataset}.npy", rows)
        elif i % 3 == 1:  # ViM's mmcv.dump: a bare pickled array
            (folder / f"{dataset}.pkl").write_bytes(pickle.dumps(rows, protocol=4))
        else:  # `oodbench import-pkl` of such a pickle: a feature folder
            source = project / "build" / f"{dataset}.pkl"
            source.parent.mkdir(exist_ok=True)
            source.write_bytes(pickle.dumps(rows, protocol=4))
            run([*oodbench, "import-pkl", str(source), "--out", f"imported/own/{dataset}",
                 "--backbone", "imported", "--dataset", dataset], project)  # fmt: skip
    state = torch.load(project / "checkpoints/resnet18/best.ckpt")
    pair = [state["fc.weight"].numpy(), state["fc.bias"].numpy()]
    (folder / "fc.pkl").write_bytes(pickle.dumps(pair, protocol=2))


def edit_params(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["benchmark"]["ood"] = OOD
    params["benchmark"]["methods"] = METHODS
    params["benchmark"]["backbones"] = ["resnet18", "own", "imported"]
    params["backbones"]["own"] = {
        "model": "mynets/resnet.py:ResNet18_32x32",
        "checkpoint": "checkpoints/resnet18/best.ckpt",
        "num_classes": CLASSES,
        "preprocess": CIFAR10,
    }
    params["backbones"]["imported"] = {"imported": "imported/own"}
    # the preset's features equal own's (the test checks): two methods show it runs (one
    # fitted on ID train, so that every extraction of the backbone is used)
    params["backbones"]["resnet18"]["methods"] = ["msp", "knn"]
    params["extract"] = {"batch_size": 8, "num_workers": 0, "shard_rows": 16}
    params["methods"]["vim"] = {"dim": 8}  # D = 512 features, 20 train rows
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def build_openood_project(base: Path) -> tuple[Path, Path, str]:
    """(the project, OpenOOD's data folder, init's output); git + DVC, pipeline written."""
    data, project = base / "openood_data", base / "project"
    write_openood_folder(data)
    copy_code(project)
    oodbench = [sys.executable, "-m", "oodbench.cli.app"]
    init = run([*oodbench, "init", "openood", "cifar10", "--data", str(data), "."], project)
    write_model_code(project)
    save_checkpoint(project)
    edit_params(project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    benchmark = params["benchmark"]
    write_imported(project, data, [benchmark["id_train"], benchmark["id_val"], *benchmark["ood"]])
    run(["git", "init", "-q"], project)
    run(["dvc", "add", "-q", "checkpoints/resnet18"], project)
    run([*oodbench, "pipeline"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project"], project)
    return project, data, init.stdout
