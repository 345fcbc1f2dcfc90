"""OpenOOD v1.5's benchmark networks, written here so that its released checkpoints load
unchanged (``backbones.<bb>.openood: resnet18_32x32``, the ``openood_*`` presets).

Both follow OpenOOD's network protocol, which oodbench/models/usermodel.py also accepts
from a user's own file: ``forward(x, return_feature=True) -> (logits, feature)`` and
``get_fc() -> (W, b)`` as numpy arrays.

- ``resnet18_32x32``: the CIFAR ResNet-18 of OpenOOD's CIFAR-10/100 checkpoints: a 3x3
  stride-1 stem without max pooling, four stages of two basic blocks (64, 128, 256, 512
  channels; stages 2-4 halve the resolution in their first block), global average
  pooling, a linear classifier ``fc``. Tensor names are OpenOOD's: a block's projection
  is ``layer<i>.0.shortcut.0`` (1x1 convolution) and ``.shortcut.1`` (its BatchNorm), and
  blocks without a projection have no shortcut tensors.
- ``resnet18_224x224``: the ImageNet-200 network, torchvision's ResNet-18 (its tensor
  names and forward) with the protocol added.
OpenOOD's ImageNet-1k benchmark uses torchvision's ResNet-50 as it is (``torchvision:
resnet50``), so it needs nothing here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: channels of the four stages of a ResNet-18, and how many basic blocks each has
STAGES = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2


class CifarBasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm; the identity, or a 1x1 projection when the
    block changes the resolution or the width, is added before the last ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        projects = stride != 1 or in_channels != channels
        self.shortcut = (
            nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
            if projects
            else nn.Sequential()  # no tensors: the released checkpoints have none here
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet18_32x32(nn.Module):  # OpenOOD's class name, kept for recognition
    """The CIFAR ResNet-18 of OpenOOD v1.5's CIFAR-10/100 benchmarks (32x32 inputs)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, STAGES[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGES[0])
        width = STAGES[0]
        for index, channels in enumerate(STAGES, start=1):
            blocks = []
            for block in range(BLOCKS_PER_STAGE):
                stride = 2 if index > 1 and block == 0 else 1
                blocks.append(CifarBasicBlock(width, channels, stride))
                width = channels
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        self.feature_size = width

    def forward(
        self, x: torch.Tensor, return_feature: bool = False, return_feature_list: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | list[torch.Tensor]]:
        stem = F.relu(self.bn1(self.conv1(x)))
        maps = [stem]
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            maps.append(stage(maps[-1]))
        pooled = self.avgpool(maps[-1])
        feature = torch.flatten(pooled, 1)
        logits = self.fc(feature)
        if return_feature:
            return logits, feature
        if return_feature_list:
            return logits, [*maps, pooled]
        return logits

    def get_fc(self) -> tuple[np.ndarray, np.ndarray]:
        return fc_arrays(self.fc)


def resnet18_224x224(num_classes: int = 1000) -> nn.Module:
    """OpenOOD's ImageNet-200 ResNet-18: torchvision's ResNet-18 with the protocol."""
    from torchvision.models.resnet import BasicBlock, ResNet

    class ResNet18_224x224(ResNet):
        def forward(
            self, x: torch.Tensor, return_feature: bool = False
        ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            feature = torch.flatten(self.avgpool(x), 1)
            logits = self.fc(feature)
            return (logits, feature) if return_feature else logits

        def get_fc(self) -> tuple[np.ndarray, np.ndarray]:
            return fc_arrays(self.fc)

    return ResNet18_224x224(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)


def fc_arrays(fc: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    """(W [C, D], b [C]) of a linear layer as numpy arrays, as OpenOOD's ``get_fc``."""
    return fc.weight.detach().cpu().numpy(), fc.bias.detach().cpu().numpy()


#: ``backbones.<bb>.openood: <name>`` -> the constructor (taking ``num_classes``)
NETWORKS = {"resnet18_32x32": ResNet18_32x32, "resnet18_224x224": resnet18_224x224}
