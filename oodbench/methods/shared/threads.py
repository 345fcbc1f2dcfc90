"""Threads for the numeric work of fits and scores, with results that never depend on them.

A BLAS or LAPACK call's bits may depend on how many threads it runs: OpenBLAS picks a
small-matrix kernel on one thread and a blocked, threaded one on several; LAPACK's
eigh, pinv and inv split their updates differently (both measured on the 2-core
development machine: pinv, eigh and inv of a 768 x 768 matrix change in the last bits
between 1 and 3 threads). So in a score or subspace stage every BLAS call gets one
thread, and the cores are used by running *fixed* row blocks in a thread pool
(:func:`ordered_map`): the blocks are the same whatever the thread count, each block's
products run on one BLAS thread, and their partial results are combined in block
order. Decompositions run on one thread: they are small (D x D) next to the passes
over the rows.

The thread count itself comes from :func:`oodbench.core.threads.cpu_threads`
(``OODBENCH_THREADS`` overrides it); this module also offers that module's
``limit_blas_threads`` and ``blas_threads`` to the methods and the score stage.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from oodbench.core.threads import THREADS_ENV, blas_threads, cpu_threads, limit_blas_threads

__all__ = ["THREADS_ENV", "blas_threads", "cpu_threads", "limit_blas_threads", "ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], threads: int | None = None
) -> Iterator[R]:
    """``fn(item)`` for every item, computed by `threads` worker threads (default
    :func:`cpu_threads`) with one BLAS thread each, yielded in the order of `items`.

    The caller combines the results in that order, so a sum over row blocks is the same
    float whatever the thread count. At most two results per worker are held at once:
    memory stays at a few blocks, not one result per block."""
    workers = max(1, threads or cpu_threads())
    with blas_threads(1), ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
