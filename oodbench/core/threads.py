"""How many CPU threads a stage uses, and how its numbers stay the same whatever that is.

A stage sizes its worker threads, torch and faiss to the cores *this process may run
on*, ``len(os.sched_getaffinity(0))``, not to the cores of the machine: a stage started
under ``taskset`` or in a container limited to a CPU set stays inside it, and
concurrent stages (``dvc queue start -j N``) can be given a share each.
``OODBENCH_THREADS=N`` (an integer >= 1) overrides the count, e.g. ``OODBENCH_THREADS=1
dvc queue start -j 8`` on an 8-core machine.

The count changes how fast a stage runs, never its numbers (README, "Determinism"):
numpy's and scipy's BLAS run one thread per call (:func:`limit_blas_threads`; the cores
are used by fixed row blocks in a thread pool, oodbench/methods/shared/threads.py), as
do torch's kNN products; the fc stage, whose head training cannot be cut into blocks,
runs torch's CPU products with oneMKL in its strict conditional-numerical-
reproducibility mode (:func:`reproducible_mkl`).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

from oodbench.core.errors import ParamsError

#: environment variable overriding the thread count
THREADS_ENV = "OODBENCH_THREADS"
#: oneMKL reads it at its first call: ``STRICT`` makes ?gemm give the same bits for any
#: number of threads (oneMKL's "strict CNR mode"); ``AUTO`` keeps the fastest code path
#: of this CPU, so bits may still differ between CPU families (AVX2 vs AVX-512)
MKL_CBWR = ("MKL_CBWR", "AUTO,STRICT")


def cpu_threads() -> int:
    """``OODBENCH_THREADS`` when set, else the number of cores this process may use."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ParamsError(f"{THREADS_ENV}={value!r}: must be an integer >= 1")
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux: no affinity mask to read
        return max(1, os.cpu_count() or 1)


def reproducible_mkl() -> None:
    """Put oneMKL (torch's CPU BLAS on x86) in strict CNR mode unless the user chose a
    ``MKL_CBWR`` of their own. Call before torch's first matrix product: MKL reads the
    variable once, at its first call (importing torch makes none). Only where a product
    cannot be given one thread per fixed block (training a head): strict mode costs
    15-35% of a CPU sgemm's speed on the development machine, so extraction runs
    without it."""
    os.environ.setdefault(*MKL_CBWR)


def size_torch_threads() -> int:
    """torch's intra-op threads = :func:`cpu_threads` (its own default ignores
    ``OODBENCH_THREADS``); returns the count. Imports torch: call it only where torch runs."""
    import torch

    threads = cpu_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def limit_blas_threads() -> int:
    """Give every BLAS library loaded in this process one thread, for the life of the
    process (a stage is one process); returns :func:`cpu_threads`, the number of worker
    threads the stage spreads fixed blocks of rows over instead. Libraries loaded later
    (scipy's own OpenBLAS, faiss's) are limited where they are used: ``Detector.fit``
    and ``ordered_map`` (oodbench/methods/shared/threads.py) enter :func:`blas_threads`."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    return cpu_threads()


def blas_threads(threads: int) -> AbstractContextManager:
    """A context in which the BLAS pools of this process use `threads` threads (then
    the previous count again)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")
