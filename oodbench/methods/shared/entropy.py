"""The generalized entropy of GEN (Liu, Lochman & Zach, CVPR 2023).

GEN scores a softmax distribution by the generalized entropy of its M largest
probabilities, G(p) = sum_j p_j^g (1 - p_j)^g, and negates it (low entropy = ID).
The reference (``generalized_entropy`` in the GEN repository, also OpenOOD's
``GENPostprocessor``) sorts the probabilities ascending, keeps the last M and sums;
``M >= C`` therefore keeps every class. Unlike the Shannon entropy in the same
repository, p^g with g > 0 is finite at p = 0 (0^g = 0) and at p = 1 ((1-p)^g = 0),
so a probability that underflows to 0 needs no guard; ``1 - p`` is clipped at 0 in
case rounding ever pushes p above 1.
"""

from __future__ import annotations

import numpy as np

from oodbench.core.errors import ParamsError
from oodbench.methods.shared.logits import by_blocks, softmax_block


def generalized_entropy(probs: np.ndarray, gamma: float, top_m: int) -> np.ndarray:
    """-sum over the top-M probabilities of p^g (1-p)^g, computed in the dtype of `probs`.

    The top M are found with a partition and then sorted ascending, which gives exactly
    the values and summation order of the reference's full sort (``np.sort(p)[:, -M:]``)
    at O(C) instead of O(C log C) per row: the float32 result is the reference's bit for
    bit up to numpy's pairwise summation.
    """
    probs = np.asarray(probs)
    classes = probs.shape[1]
    if top_m >= classes:
        top = np.sort(probs, axis=1)
    else:
        top = np.partition(probs, classes - top_m, axis=1)[:, classes - top_m :]
        top.sort(axis=1)
    rest = np.clip(1 - top, 0, None)
    return -np.sum(top**gamma * rest**gamma, axis=1)


def gen_of_logits(logits: np.ndarray, gamma: float, top_m: int) -> np.ndarray:
    """GEN of softmax(z) per row, streamed over blocks of rows; float64 [N]."""
    return by_blocks(lambda z: generalized_entropy(softmax_block(z), gamma, top_m), logits)


def check_gen(where: str, gamma: float, top_m: int) -> None:
    if not gamma > 0:
        raise ParamsError(f"{where}.gamma: must be > 0, got {gamma}")
    if top_m < 1:
        raise ParamsError(f"{where}.M: must be an integer >= 1, got {top_m}")
