"""Linear probes trained on frozen features (the supervised probing of the CLIP/PLP study).

The recipe is PLP's: standardise the train features, Adam with weight decay, a linear
warm-up over the first ``warmup`` fraction of steps then cosine decay to zero, a fixed
seed. The standardisation is folded into (W, b) afterwards, so the exported classifier
acts on the raw features like any model head.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from oodbench.core.errors import DataError, ParamsError
from oodbench.core.typed import coerce


@dataclass(frozen=True)
class ProbeConfig:
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-3
    warmup: float = 0.1
    batch_size: int = 256
    standardize: bool = True
    seed: int = 42

    def as_dict(self) -> dict[str, float | int | bool]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, block: dict) -> ProbeConfig:
        fields = cls.__dataclass_fields__
        unknown = sorted(set(block) - set(fields))
        if unknown:
            raise ParamsError(f"probe.{unknown[0]}: unknown key; probe takes {', '.join(fields)}")
        kwargs = {k: coerce(f"probe.{k}", v, type(getattr(cls, k))) for k, v in block.items()}
        config = cls(**kwargs)
        if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
            raise ParamsError("probe: epochs, batch_size and lr must be positive")
        if not 0.0 <= config.warmup < 1.0:
            raise ParamsError(f"probe.warmup: must be in [0, 1), got {config.warmup}")
        return config


def lr_at(step: int, total: int, config: ProbeConfig) -> float:
    """Linear warm-up to the peak lr, then cosine decay to 0 (PLP's schedule)."""
    warm = round(config.warmup * total)
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = (step - warm) / max(total - warm, 1)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_linear_probe(
    features: np.ndarray, labels: np.ndarray, num_classes: int, config: ProbeConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Train softmax regression on frozen features; return (W [C, D], b [C]) in float32."""
    import torch

    if features.shape[0] != labels.shape[0] or features.shape[0] == 0:
        raise DataError("probe: features and labels must be non-empty and of equal length")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"probe: labels must lie in [0, {num_classes}); got {labels.min()}..{labels.max()}"
        )
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0) if config.standardize else np.zeros(x.shape[1])
    std = x.std(axis=0) if config.standardize else np.ones(x.shape[1])
    std = np.where(std > 1e-12, std, 1.0)  # constant features: leave unscaled
    inputs = torch.from_numpy(((x - mean) / std).astype(np.float32))
    targets = torch.from_numpy(np.asarray(labels, dtype=np.int64))

    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    layer = torch.nn.Linear(inputs.shape[1], num_classes)
    optimizer = torch.optim.Adam(layer.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(inputs) / config.batch_size)
    total = config.epochs * steps_per_epoch
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(len(inputs), generator=gen)
        for start in range(0, len(inputs), config.batch_size):
            batch = order[start : start + config.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, config)
            loss = torch.nn.functional.cross_entropy(layer(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    w_std = layer.weight.detach().double().numpy()
    b_std = layer.bias.detach().double().numpy()
    # z = ((x - m) / s) W'^T + b'  =  x (W' / s)^T + (b' - W' (m / s))
    weight = w_std / std
    bias = b_std - w_std @ (mean / std)
    return weight.astype(np.float32), bias.astype(np.float32)
