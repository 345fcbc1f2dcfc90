"""Training a MOS group-softmax head on frozen features (``fc: mos``).

The MOS reference fine-tunes the backbone together with the head; here only the head
is trained, on the frozen ID train features, with the MOS loss: the sum over groups of
the cross-entropy of the group softmax, the target being "others" in every group but
the sample's own (layout: oodbench/heads/groups.py).
"""

from __future__ import annotations

import numpy as np

from oodbench.core.errors import DataError
from oodbench.heads.groups import group_sizes_of, group_slices, group_targets


def group_head_loss(
    weight: np.ndarray,
    bias: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    group_of_class: np.ndarray,
) -> float:
    """MOS training loss: sum over groups of the mean cross-entropy of the group softmax."""
    import torch

    z = torch.from_numpy(np.asarray(features, np.float32)) @ torch.from_numpy(
        np.asarray(weight, np.float32)
    ).T + torch.from_numpy(np.asarray(bias, np.float32))
    targets = torch.from_numpy(group_targets(labels, group_of_class))
    return float(_group_loss(z, targets, group_slices(group_sizes_of(group_of_class))))


def _group_loss(z, targets, slices: np.ndarray):
    import torch.nn.functional as F

    return sum(
        F.cross_entropy(z[:, int(a) : int(b)], targets[:, g]) for g, (a, b) in enumerate(slices)
    )


def train_group_head(
    features: np.ndarray,
    labels: np.ndarray,
    group_of_class: np.ndarray,
    *,
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Train the group-softmax head on frozen features; return W [C+G, D], b [C+G] (float32).

    Adam on the MOS loss (sum over groups of cross-entropy, the target being "others"
    in every group but the sample's own), zero-initialised weights, mini-batches in a
    seeded order: the same inputs and seed give the same head bit for bit (torch CPU,
    one process). Labels must be class indices 0..C-1.
    """
    import torch

    x = np.asarray(features, np.float32)
    labels = np.asarray(labels, np.int64)
    groups = np.asarray(group_of_class)
    if len(x) != len(labels) or len(x) == 0:
        raise DataError(f"{len(x)} feature rows but {len(labels)} labels; need equal, > 0")
    if labels.min() < 0 or labels.max() >= len(groups):
        raise DataError(f"labels must be class indices in 0..{len(groups) - 1}")
    slices = group_slices(group_sizes_of(groups))
    head = torch.nn.Linear(x.shape[1], int(slices[-1, 1]))
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    xt, targets = torch.from_numpy(x), torch.from_numpy(group_targets(labels, groups))
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=gen).split(batch_size):
            opt.zero_grad()
            _group_loss(head(xt[batch]), targets[batch], slices).backward()
            opt.step()
    return head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()
