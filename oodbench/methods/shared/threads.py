"""How many CPU threads the numeric libraries of a stage may use.

A stage sizes BLAS (numpy/scipy's OpenBLAS or MKL, through threadpoolctl), torch and
faiss to the cores *this process may run on*, ``len(os.sched_getaffinity(0))``, not to
the cores of the machine: a stage started under ``taskset`` or in a container limited
to a CPU set stays inside it, and concurrent stages (``dvc queue start -j N``) can be
given a share each instead of every one starting a thread per core.

``OODBENCH_THREADS=N`` (an integer >= 1) overrides the count, e.g. ``OODBENCH_THREADS=1
dvc queue start -j 8`` on an 8-core machine.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

from oodbench.core.errors import ParamsError

#: environment variable overriding the thread count
THREADS_ENV = "OODBENCH_THREADS"


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


def limit_blas_threads() -> int:
    """Size the BLAS thread pools of this process to :func:`cpu_threads`; returns it.

    Applied for the life of the process (a stage is one process); torch and faiss are
    sized when they are first used (oodbench/methods/shared/neighbours.py)."""
    from threadpoolctl import threadpool_limits

    threads = cpu_threads()
    threadpool_limits(limits=threads, user_api="blas")
    return threads


def blas_threads(threads: int) -> AbstractContextManager:
    """A context in which the BLAS pools of this process use `threads` threads (then
    the previous count again): row blocks scored from concurrent Python threads each
    get one BLAS thread instead of every block asking for every core."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")
