"""Row-wise functions of logits, fused and streamed over blocks of rows.

The logit scores (energy, MSP/ODIN, GEN, GradNorm) reduce each row of z = x W^T + b
to one number. Written with scipy's ``logsumexp`` / ``softmax`` over a whole dataset they
allocate several [N, C] temporaries (z / T, z - max, exp, the probabilities): 340 MB each
for 84,792 rows x 1000 classes. Here each function works on one block of at most
:data:`BLOCK_ROWS` rows at a time, in place on a single block-sized buffer, and writes
into one preallocated float64 output, so memory stays at a few MB whatever N is.

Arithmetic is in the dtype of the logits (float32 logits, as the reference computes them,
give float32 arithmetic; float64 logits float64), with the max subtracted first as
scipy does; results agree with scipy's to the rounding of that dtype. No scipy import:
a score stage of a logit method starts without it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from oodbench.core.errors import DataError
from oodbench.formats.classifier import Linear
from oodbench.methods.shared.threads import ordered_map

#: rows per block: a float64 block of 1000 classes (8 MB) stays in cache, which is
#: measurably faster than 4096 rows for these few passes over each element
BLOCK_ROWS = 1024

RowFunction = Callable[..., np.ndarray]


def by_blocks(fn: RowFunction, *arrays: np.ndarray | None, rows: int | None = None) -> np.ndarray:
    """``fn(*blocks)`` over blocks of `rows` (default :data:`BLOCK_ROWS`) rows of every
    array (None passes through), written into one float64 [N] output; N is the row count
    of the first array that is not None."""
    rows = rows or BLOCK_ROWS
    n = len(next(a for a in arrays if a is not None))
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, rows):
        blocks = [None if a is None else a[start : start + rows] for a in arrays]
        out[start : start + rows] = fn(*blocks)
    return out


def _float(z: np.ndarray) -> np.ndarray:
    """The logits as an array of a float dtype (ints become float64)."""
    z = np.asarray(z)
    return z if np.issubdtype(z.dtype, np.floating) else z.astype(np.float64)


def shifted_exp(z: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(exp((z - max z) / T) as a new block, max z per row): the shared first step of
    logsumexp and softmax, with one block-sized temporary."""
    z = _float(z)
    peak = z.max(axis=1)
    e = np.subtract(z, peak[:, None])
    if temperature != 1.0:
        e /= z.dtype.type(temperature)
    np.exp(e, out=e)
    return e, peak


def logsumexp_block(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """T * logsumexp(z / T) per row of one block, in the dtype of `z`."""
    e, peak = shifted_exp(z, temperature)
    t = e.dtype.type(temperature)
    if temperature == 1.0:
        return peak + np.log(e.sum(axis=1))
    return t * (peak / t + np.log(e.sum(axis=1)))


def max_softmax_block(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """max_c softmax(z / T)_c = 1 / sum_c exp((z_c - max z) / T) per row of one block."""
    e, _ = shifted_exp(z, temperature)
    return 1 / e.sum(axis=1)


def softmax_block(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(z / T) of one block, in the dtype of `z` (a new block-sized array)."""
    e, _ = shifted_exp(z, temperature)
    e /= e.sum(axis=1, keepdims=True)
    return e


def logsumexp_rows(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """T * logsumexp(z / T) per row (the energy score), streamed; float64 [N]."""
    return by_blocks(lambda block: logsumexp_block(block, temperature), z)


def max_softmax_rows(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """max softmax(z / T) per row (MSP, ODIN at eps = 0), streamed; float64 [N]."""
    return by_blocks(lambda block: max_softmax_block(block, temperature), z)


def max_rows(z: np.ndarray) -> np.ndarray:
    """max_c z_c per row (MaxLogit); a reduction, no temporary."""
    return np.asarray(z).max(axis=1).astype(np.float64)


def predicted_classes(features: np.ndarray, fc: Linear, rows: int = 4 * BLOCK_ROWS) -> np.ndarray:
    """argmax of the float32 logits per row, over fixed blocks of rows in a thread pool
    (oodbench/methods/shared/threads.py): for fits that classify every train row."""
    blocks = ordered_map(
        lambda start: fc.logits(features[start : start + rows]).argmax(axis=1),
        range(0, len(features), rows),
    )
    return np.concatenate([np.empty(0, np.int64), *blocks])


def classifier_logits(fc: Linear, features: np.ndarray, logits: np.ndarray | None) -> np.ndarray:
    """The logits of `features` under the fitted classifier: the ones ``score`` was given
    (the score stage's ``fc.logits(block)``, the very product a method would recompute,
    bit for bit) or, when None, ``fc.logits(features)``."""
    if logits is None:
        return fc.logits(features)
    if logits.shape != (len(features), fc.num_classes):
        raise DataError(
            f"logits of shape {logits.shape} for {len(features)} rows and a classifier "
            f"with {fc.num_classes} outputs: pass fc.logits(features)"
        )
    return logits
