"""Exact nearest neighbours over a bank of ID train features, shared by ``knn`` and ``nnguide``.

Both need the k largest inner products of each query with a bank of up to 200k rows.
:func:`topk_inner` computes them exactly (brute force, like faiss ``IndexFlat``) with
torch matrix products over blocks of queries x blocks of the bank, merging a running
top-k, so memory stays at one [queries, bank-block] tile. It runs on CUDA when
available; float32 products give the same neighbours up to float32 rounding (torch
keeps TF32 off for float32 matmul by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.special import logsumexp

from oodbench.core.errors import DataError
from oodbench.formats.classifier import Linear

if TYPE_CHECKING:
    import torch

QUERY_ROWS = 2048  # rows of queries per tile
BANK_ROWS = 16384  # rows of the bank per tile: a tile is 2048 x 16384 float32 = 128 MB


def device() -> torch.device:
    import torch  # imported here: methods that never use kNN should not pay for torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float32 (torch F.normalize: norm clamped at 1e-12)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))


def to_bank(rows: np.ndarray) -> torch.Tensor:
    """The bank as a float32 tensor on the compute device, uploaded once at fit time."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).to(device())


def topk_inner(queries: np.ndarray, bank: torch.Tensor, k: int) -> np.ndarray:
    """The k largest <q, t> over bank rows t, per query row, descending, float32 [n, k]."""
    if k > len(bank):
        raise DataError(f"k={k} neighbours requested from a bank of only {len(bank)} rows")
    import torch

    out = np.empty((len(queries), k), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(queries), QUERY_ROWS):
            q = torch.from_numpy(np.ascontiguousarray(queries[start : start + QUERY_ROWS]))
            q = q.to(bank.device, torch.float32)
            best = torch.full((len(q), k), -torch.inf, device=bank.device)
            for b0 in range(0, len(bank), BANK_ROWS):
                sims = q @ bank[b0 : b0 + BANK_ROWS].T
                tile = torch.topk(sims, min(k, sims.shape[1]), dim=1).values
                best = torch.topk(torch.cat([best, tile], dim=1), k, dim=1).values
            out[start : start + len(q)] = best.cpu().numpy()
    return out


def energies(features: np.ndarray, fc: Linear, rows: int = 8192) -> np.ndarray:
    """logsumexp of the float32 logits per row, streamed so [N, C] never exists at once."""
    return np.concatenate(
        [
            logsumexp(fc.logits(features[s : s + rows]), axis=1)
            for s in range(0, len(features), rows)
        ]
    )
