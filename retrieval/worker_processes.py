"""Forked worker processes for block scoring (first-stage retrieval here, GLMix re-scoring in ``pipeline``).

One pool worker runs per core, and each block's work is NumPy/SciPy in that worker. Two things the fork
brings along would get in the way; :func:`prepare_worker_process`, the pools' initializer, undoes them.
"""

from __future__ import annotations

import os
import signal


def blas_threads_per_worker(processes: int, cores: int | None = None) -> int:
    """BLAS threads each of ``processes`` workers may use so that, together, they do not outnumber the
    cores (at least 1)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, processes))


def prepare_worker_process(processes: int) -> None:
    """Initializer of a pool of ``processes`` forked scoring workers.

    - Restores the default SIGTERM/SIGINT handlers: forked workers inherit the parent's (Airflow's task
      runner installs its own for SIGTERM), which would stop ``Pool.terminate`` from ending them.
    - Caps each worker's BLAS threads at its share of the cores. OpenBLAS starts a thread per core in every
      process, so two workers on two cores ran four BLAS threads, which spin while they wait for work: on
      the 100k reference day, retrieval took 46-60 s of wall time and 84-99 s of CPU that way, against
      35-42 s and 63-73 s with one thread per worker.
    """
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    threadpool_limits(limits=blas_threads_per_worker(processes), user_api="blas")
