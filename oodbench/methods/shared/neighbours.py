"""Exact nearest neighbours over a bank of ID train features, shared by ``knn`` and ``nnguide``.

Both need the k largest inner products of each query with a bank of up to 200k rows.
:class:`Bank` finds them exactly (brute force) with one of two backends:

- ``torch`` (default): matrix products over blocks of queries x blocks of the bank,
  merging a running top-k, so memory stays at one [queries, bank-block] tile. It runs
  on CUDA when available; float32 products give the same neighbours up to float32
  rounding (torch keeps TF32 off for float32 matmul by default).
- ``faiss``: ``IndexFlatIP`` over the same rows, OpenOOD's choice (its kNN uses
  ``IndexFlatL2`` on normalised features, the same neighbours). Exact as well; it
  agrees with torch to float32 rounding (``tests/test_methods_knn.py`` measures it).

Threads: the same neighbours and similarities, bit for bit, whatever the thread count.
On the CPU both backends search fixed blocks of :data:`QUERY_ROWS` queries from
:func:`~oodbench.methods.shared.threads.cpu_threads` worker threads, each block on one
torch (or faiss and BLAS) thread.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Literal

import numpy as np

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.classifier import Linear
from oodbench.methods.shared.checks import SmallBankWarning, warn_fit
from oodbench.methods.shared.logits import logsumexp_block
from oodbench.methods.shared.threads import cpu_threads, ordered_map

if TYPE_CHECKING:
    import torch

Backend = Literal["torch", "faiss"]
QUERY_ROWS = 2048  # rows of queries per tile
BANK_ROWS = 16384  # rows of the bank per tile: a tile is 2048 x 16384 float32 = 128 MB


def device() -> torch.device:
    import torch  # imported here: methods that never use kNN should not pay for torch

    if not torch.cuda.is_available():
        torch.set_num_threads(cpu_threads())
        return torch.device("cpu")
    return torch.device("cuda")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float32 (torch F.normalize: norm clamped at 1e-12)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))


class Bank:
    """Rows searched by inner product, held by the backend that searches them."""

    def __init__(self, rows: np.ndarray, backend: Backend = "torch", where: str = "") -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.backend: Backend = backend
        self.shape = rows.shape
        if backend == "faiss":
            faiss = _faiss(where)
            self._index = faiss.IndexFlatIP(rows.shape[1])
            self._index.add(rows)  # the index keeps its own copy
        else:
            import torch

            self._tensor = torch.from_numpy(rows).to(device())

    def __len__(self) -> int:
        return int(self.shape[0])

    def vectors(self) -> np.ndarray:
        """The bank's rows as float32 [rows, D] (for reference loops and tests)."""
        if self.backend == "faiss":
            return self._index.reconstruct_n(0, len(self))
        return self._tensor.cpu().numpy()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(the k largest <q, t> over bank rows t, descending, float32 [n, k]; their rows)."""
        if k > len(self):
            raise DataError(f"k={k} neighbours requested from a bank of only {len(self)} rows")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.backend == "faiss":
            return self._search_faiss(queries, k)
        return self._search_torch(queries, k)

    def _search_faiss(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Fixed blocks of queries searched from a thread pool, faiss and its BLAS on one
        thread per block: its products then have the same bits whatever the thread
        count (oodbench/methods/shared/threads.py)."""
        faiss = _faiss("")

        def search_block(start: int) -> tuple[np.ndarray, np.ndarray]:
            faiss.omp_set_num_threads(1)  # this thread's OpenMP (faiss's BLAS follows it)
            return self._index.search(queries[start : start + QUERY_ROWS], k)

        found = list(ordered_map(search_block, range(0, len(queries), QUERY_ROWS)))
        values = np.concatenate([np.empty((0, k), np.float32), *(v for v, _ in found)])
        rows = np.concatenate([np.empty((0, k), np.int64), *(r for _, r in found)])
        return values, rows.astype(np.int64)

    def _search_torch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Blocks of queries one after another on a GPU; on the CPU from a thread pool, one
        torch thread per block (and one [QUERY_ROWS, BANK_ROWS] tile of 128 MB per
        worker): a product's bits may depend on how many threads compute it, a block's
        then do not (oodbench/methods/shared/threads.py)."""
        import torch

        starts = range(0, len(queries), QUERY_ROWS)
        if self._tensor.device.type != "cpu":
            found = [self._search_torch_block(queries[s : s + QUERY_ROWS], k) for s in starts]
        else:
            before = torch.get_num_threads()

            def search_block(start: int) -> tuple[np.ndarray, np.ndarray]:
                torch.set_num_threads(1)  # this thread's OpenMP, and MKL's
                return self._search_torch_block(queries[start : start + QUERY_ROWS], k)

            try:
                found = list(ordered_map(search_block, starts))
            finally:
                torch.set_num_threads(before)
        values = np.concatenate([np.empty((0, k), np.float32), *(v for v, _ in found)])
        rows = np.concatenate([np.empty((0, k), np.int64), *(r for _, r in found)])
        return values, rows

    def _search_torch_block(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best bank rows of each query of one block, merging a running top-k over
        tiles of the bank."""
        import torch

        bank = self._tensor
        with torch.no_grad():
            q = torch.from_numpy(queries).to(bank.device)
            best = torch.full((len(q), k), -torch.inf, device=bank.device)
            best_rows = torch.zeros((len(q), k), dtype=torch.int64, device=bank.device)
            for b0 in range(0, len(bank), BANK_ROWS):
                sims = q @ bank[b0 : b0 + BANK_ROWS].T
                tile = torch.topk(sims, min(k, sims.shape[1]), dim=1)
                merged = torch.cat([best, tile.values], dim=1)
                merged_rows = torch.cat([best_rows, tile.indices + b0], dim=1)
                best, pick = torch.topk(merged, k, dim=1)
                best_rows = torch.gather(merged_rows, 1, pick)
            return best.cpu().numpy(), best_rows.cpu().numpy()


def _faiss(where: str) -> ModuleType:
    try:
        import faiss
    except ImportError:
        raise ParamsError(
            f"{where}.backend: faiss is not installed; `pip install faiss-cpu` (or "
            "`pip install oodbench[faiss]`), or use backend: torch"
        ) from None
    return faiss


def neighbour_count(
    where: str, k: int | None, default: int, bank_rows: int, note: str, remedy: str = ""
) -> int:
    """The k to search with: k as set, or the method's default capped at the bank.

    A k the user set (not null) larger than the bank is an error: a silently smaller k
    would be another method (and ``tune`` skips such grid points on this error). The
    default (k: null) is capped at the bank size with one warning naming both numbers,
    so a small benchmark (one-class mode, a demo) runs. `note` says where the bank's
    size comes from; `remedy` is another fix that would work, for the error."""
    if k is not None:
        if k > bank_rows:
            raise ParamsError(
                f"{where}.k: {k} neighbours but the bank has {bank_rows} rows ({note}); "
                f"set k <= {bank_rows}{remedy}, or k: null (the default {default}, capped "
                "at the bank size)"
            )
        return k
    if default > bank_rows:
        warn_fit(
            SmallBankWarning,
            f"{where}.k: the default {default} neighbours exceed the bank of {bank_rows} "
            f"rows ({note}); using k = {bank_rows}",
        )
        return bank_rows
    return default


def energies(features: np.ndarray, fc: Linear, rows: int = 8192) -> np.ndarray:
    """logsumexp of the float32 logits per row, streamed so [N, C] never exists at once
    (fixed blocks of rows in a thread pool: oodbench/methods/shared/threads.py)."""
    blocks = ordered_map(
        lambda s: logsumexp_block(fc.logits(features[s : s + rows])), range(0, len(features), rows)
    )
    return np.concatenate([np.empty(0, np.float32), *blocks]).astype(np.float32, copy=False)
