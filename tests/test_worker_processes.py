"""The forked scoring workers of retrieval and re-scoring: BLAS threads capped at each worker's share of the
cores (two workers with a BLAS thread per core each oversubscribed a 2-core machine), default signals."""

from __future__ import annotations

import signal

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from pipeline.rescoring.stream import ordered_map
from retrieval import batch
from retrieval.worker_processes import blas_threads_per_worker


def _blas_threads(_item=None) -> list[int]:
    from threadpoolctl import threadpool_info

    return sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})


def test_blas_threads_per_worker_share_the_cores_and_never_drop_below_one():
    assert blas_threads_per_worker(2, cores=2) == 1
    assert blas_threads_per_worker(2, cores=8) == 4
    assert blas_threads_per_worker(3, cores=2) == 1
    assert blas_threads_per_worker(1, cores=4) == 4


def test_rescoring_workers_run_blas_on_their_share_of_the_cores():
    in_parent = _blas_threads()
    share = blas_threads_per_worker(2)
    assert all(threads == [share] for threads in ordered_map(_blas_threads, range(6), processes=2))
    assert _blas_threads() == in_parent  # the parent keeps its own setting


def test_retrieval_workers_run_blas_on_their_share_of_the_cores_with_default_signals(monkeypatch):
    def threads_and_signal_as_scores(queries, jobs, k, **_):
        # forked workers inherit this patch: report the worker's BLAS threads and SIGTERM handler instead
        handler_is_default = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        scores = np.array([float(max(_blas_threads())), float(handler_is_default)])
        return np.array([0, 0]), np.array([0, 1]), scores, np.array([1, 2], np.int32)

    monkeypatch.setattr(batch, "score_block", threads_and_signal_as_scores)
    signal.signal(signal.SIGTERM, lambda *_: None)  # what Airflow's task runner does in the parent
    try:
        matrix = sp.csr_matrix(np.eye(3, 2))  # 3 terms × 2 jobs
        none = np.zeros(2, np.int64)
        jobs = batch.JobMatrix(matrix, np.array([1, 2]), none, none, np.array(["", ""], object), vocab=None)
        queries = sp.csr_matrix(np.ones((8, 3)))
        batches = list(batch.retrieve(jobs, queries, np.arange(8), 2, block_size=2, processes=2))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    scores = pa.Table.from_batches(batches)["score"].to_numpy().reshape(-1, 2)
    assert len(scores) == 4  # four blocks, each scored in a worker
    assert (scores[:, 0] == blas_threads_per_worker(2)).all()
    assert (scores[:, 1] == 1.0).all()
