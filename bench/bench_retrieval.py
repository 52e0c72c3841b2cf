"""Benchmark of the first-stage retrieval: Whoosh searcher vs the batch engine vs a brute-force product.

    .venv/bin/python bench/bench_retrieval.py            # small: 5k jobs, 2k members, k=100 (about a minute)
    .venv/bin/python bench/bench_retrieval.py --full     # issue size: 100k jobs, 100k members, k=1000

Job and member profiles are generated here (``retrieval.synthetic``: Zipf-distributed terms per field, about
25 terms per profile). Measured in one run, members per second of:

(a) Whoosh's own searcher with the cosine weighting, one query per member, on a sample of members;
(b) the batch engine (posting lists read from the same Whoosh index), single process on the first
    ``--brute-members`` members (b1), and with ``--processes`` workers on all members (b);
(c) a brute-force SciPy product of those members against all jobs (``(Q @ D).toarray()``) + ``argpartition``.

Results are checked: (b) = (c) = (a) up to exact ties, and (b) with workers = (b1). Also: index build time
and size, index read time, peak memory. Figures are printed and written to ``bench/out/retrieval.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from retrieval import batch, index, synthetic, weighting

FIELD_WEIGHTS = {"title": 1.2, "skills": 2.0, "industry": 0.4, "function": 0.3, "seniority": 0.2, "region": 0.6}
TIE_TOL = 1e-12

log = logging.getLogger("bench_retrieval")


def peak_rss_mib() -> dict[str, float]:
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"self_mib": round(self_kib / 1024, 1), "largest_child_mib": round(children_kib / 1024, 1)}


def ranked_lists(record_batches, first_member_id: int, n_members: int, k: int, sample: np.ndarray | None = None):
    """(job_id, score) arrays n_members × k (job −1 / score 0 padding) of the first ``n_members`` members, the
    same for the members at the row positions ``sample``, and the row count, from candidate batches."""
    jobs = np.full((n_members, k), -1, dtype=np.int64)
    scores = np.zeros((n_members, k))
    sample = np.zeros(0, dtype=np.int64) if sample is None else np.asarray(sample)  # ascending, unique
    sample_jobs = np.full((len(sample), k), -1, dtype=np.int64)
    sample_scores = np.zeros((len(sample), k))
    rows = 0
    for record_batch in record_batches:
        member = record_batch.column(0).to_numpy() - first_member_id
        rank = record_batch.column(3).to_numpy() - 1
        job_ids, values = record_batch.column(1).to_numpy(), record_batch.column(2).to_numpy()
        inside = member < n_members
        jobs[member[inside], rank[inside]] = job_ids[inside]
        scores[member[inside], rank[inside]] = values[inside]
        in_sample = np.isin(member, sample)
        if in_sample.any():
            slot = np.searchsorted(sample, member[in_sample])
            sample_jobs[slot, rank[in_sample]] = job_ids[in_sample]
            sample_scores[slot, rank[in_sample]] = values[in_sample]
        rows += record_batch.num_rows
    return jobs, scores, rows, sample_jobs, sample_scores


def compare(jobs_a, scores_a, jobs_b, scores_b) -> dict[str, int]:
    """Rows identical, rows differing only inside groups of exactly tied scores, rows really different."""
    same_scores = np.abs(scores_a - scores_b) <= TIE_TOL * np.maximum(1.0, np.abs(scores_a))
    differ = jobs_a != jobs_b
    identical = ~differ.any(axis=1) & same_scores.all(axis=1)
    # A differing position is a tie when its score also occurs at a neighbouring rank, or when it is the
    # score of the last rank (the group of equal scores cut by k, of which either side may keep any).
    tied_prev = np.zeros_like(differ)
    tied_prev[:, 1:] = np.abs(np.diff(scores_a, axis=1)) <= TIE_TOL
    tied_next = np.zeros_like(differ)
    tied_next[:, :-1] = tied_prev[:, 1:]
    last = np.take_along_axis(scores_a, np.maximum((jobs_a >= 0).sum(axis=1) - 1, 0)[:, None], 1)
    at_cut = np.abs(scores_a - last) <= TIE_TOL
    explained = tied_prev | tied_next | at_cut
    tie_only = ~identical & same_scores.all(axis=1) & ~(differ & ~explained).any(axis=1)
    return {
        "rows": int(len(jobs_a)), "identical": int(identical.sum()), "tie_order_only": int(tie_only.sum()),
        "different": int((~identical & ~tie_only).sum()),
    }


def brute_force(queries, job_matrix: np.ndarray, job_ids: np.ndarray, k: int, block_size: int):
    """Reference: a plain SciPy sparse product against all jobs, dense scores, argpartition, sort."""
    n = queries.shape[0]
    kk = min(k, job_matrix.shape[1])
    jobs = np.full((n, k), -1, dtype=np.int64)
    scores = np.zeros((n, k))
    for start in range(0, n, block_size):
        dense = (queries[start : start + block_size] @ job_matrix).toarray()
        top = np.argpartition(-dense, kk - 1, axis=1)[:, :kk]
        values = np.take_along_axis(dense, top, 1)
        order = np.argsort(-values, axis=1, kind="stable")
        top, values = np.take_along_axis(top, order, 1), np.take_along_axis(values, order, 1)
        valid = values > 0
        jobs[start : start + len(dense), :kk] = np.where(valid, job_ids[top], -1)
        scores[start : start + len(dense), :kk] = np.where(valid, values, 0.0)
    return jobs, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="issue size: 100k jobs x 100k members, k=1000")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--whoosh-sample", type=int, default=20, help="members queried through Whoosh (a)")
    parser.add_argument("--brute-members", type=int, default=None, help="members for (b1) and (c)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--index-dir", help="keep the built index here and reuse it on the next run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "retrieval.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    n_jobs = args.jobs or (100_000 if args.full else 5_000)
    n_members = args.members or (100_000 if args.full else 2_000)
    k = args.k or (1000 if args.full else 100)
    n_brute = min(n_members, args.brute_members or (10_000 if args.full else n_members))
    figures: dict = {
        "jobs": n_jobs, "members": n_members, "k": k, "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(), "field_weights": FIELD_WEIGHTS,
    }

    started = time.perf_counter()
    jobs = synthetic.job_profiles(n_jobs, seed=1)
    members = synthetic.member_profiles(n_members, seed=2)
    figures["generate_seconds"] = round(time.perf_counter() - started, 2)

    workdir = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    try:
        index_dir = Path(args.index_dir) if args.index_dir else workdir / "index"
        build_record = index_dir.parent / f"{index_dir.name}.build.json"
        if args.index_dir and index.index_exists(index_dir) and build_record.exists():
            # Reuse an index this bench built earlier for the same sizes (the generator is deterministic).
            saved = json.loads(build_record.read_text())
            if saved["jobs"] != n_jobs:
                raise ValueError(f"{index_dir} was built for {saved['jobs']} jobs, not {n_jobs}")
            figures.update(saved["figures"])
            figures["index_reused_from"] = str(index_dir)
        else:
            started = time.perf_counter()
            stats = index.build_index(index_dir, jobs)
            figures["index_build_seconds"] = round(time.perf_counter() - started, 2)
            figures["index_size_mib"] = round(stats.size_bytes / 2**20, 1)
            build_record.write_text(json.dumps({"jobs": n_jobs, "figures": {
                "index_build_seconds": figures["index_build_seconds"], "index_size_mib": figures["index_size_mib"],
            }}))
        ix = index.open_index(index_dir)

        started = time.perf_counter()
        job_matrix = batch.JobMatrix.from_index(ix)
        figures["index_read_seconds"] = round(time.perf_counter() - started, 2)
        figures["postings"] = int(job_matrix.matrix.nnz)
        member_ids, queries = batch.member_queries(members, job_matrix, FIELD_WEIGHTS)
        binary = (queries != 0).astype(np.float64)
        figures["query_terms_mean"] = round(binary.nnz / n_members, 1)
        figures["postings_touched_per_query_mean"] = round(
            float((binary @ np.diff(job_matrix.matrix.indptr).astype(float)).mean()), 0
        )

        # (a) Whoosh's searcher, one query at a time, on evenly spread members.
        sample = np.unique(np.linspace(0, n_members - 1, min(args.whoosh_sample, n_members)).astype(int))
        profiles = members.take(pa.array(sample)).to_pylist()
        whoosh_jobs = np.full((len(sample), k), -1, dtype=np.int64)
        whoosh_scores = np.zeros((len(sample), k))
        started = time.perf_counter()
        with ix.searcher(weighting=weighting.CosineWeighting(FIELD_WEIGHTS)) as searcher:
            for i, profile in enumerate(profiles):
                hits = searcher.search(weighting.profile_query(profile, FIELD_WEIGHTS), limit=k)
                for rank, hit in enumerate(hits):
                    whoosh_jobs[i, rank], whoosh_scores[i, rank] = hit["job_id"], hit.score
        seconds = time.perf_counter() - started
        figures["a_whoosh"] = {
            "members_timed": len(sample), "seconds": round(seconds, 2),
            "members_per_second": round(len(sample) / seconds, 3),
            "extrapolated_hours_for_all_members": round(n_members * seconds / len(sample) / 3600, 2),
        }
        log.info("(a) whoosh: %s", figures["a_whoosh"])

        # (b1) batch engine, one process, first n_brute members.
        started = time.perf_counter()
        b1 = batch.retrieve(job_matrix, queries[:n_brute], member_ids[:n_brute], k, block_size=args.block_size)
        b1_jobs, b1_scores, b1_rows, _, _ = ranked_lists(b1, int(member_ids[0]), n_brute, k)
        seconds = time.perf_counter() - started
        figures["b1_batch_one_process"] = {
            "members": n_brute, "seconds": round(seconds, 2), "members_per_second": round(n_brute / seconds, 1),
            "candidates": b1_rows,
        }
        log.info("(b1) batch, 1 process: %s", figures["b1_batch_one_process"])

        # (b) batch engine, worker processes, all members.
        started = time.perf_counter()
        b_all = batch.retrieve(
            job_matrix, queries, member_ids, k, block_size=args.block_size, processes=args.processes
        )
        b_jobs, b_scores, b_rows, bs_jobs, bs_scores = ranked_lists(b_all, int(member_ids[0]), n_brute, k, sample)
        seconds = time.perf_counter() - started
        figures["b_batch"] = {
            "members": n_members, "processes": args.processes, "seconds": round(seconds, 2),
            "members_per_second": round(n_members / seconds, 1), "candidates": b_rows,
        }
        log.info("(b) batch, %d processes: %s", args.processes, figures["b_batch"])

        # (c) brute force on the same members as (b1), straight from the profiles (no index).
        reference = batch.JobMatrix.from_profiles(jobs, job_matrix.vocab)
        started = time.perf_counter()
        c_jobs, c_scores = brute_force(queries[:n_brute], reference.matrix, reference.job_ids, k, args.block_size)
        seconds = time.perf_counter() - started
        figures["c_brute_force"] = {
            "members": n_brute, "seconds": round(seconds, 2), "members_per_second": round(n_brute / seconds, 1),
        }
        log.info("(c) brute force: %s", figures["c_brute_force"])

        figures["ratios"] = {
            "b_over_a": round(figures["b_batch"]["members_per_second"] / figures["a_whoosh"]["members_per_second"], 1),
            "b1_over_a": round(
                figures["b1_batch_one_process"]["members_per_second"] / figures["a_whoosh"]["members_per_second"], 1
            ),
            "b1_over_c_same_cores": round(
                figures["b1_batch_one_process"]["members_per_second"] / figures["c_brute_force"]["members_per_second"],
                2,
            ),
            "b_over_c": round(figures["b_batch"]["members_per_second"] / figures["c_brute_force"]["members_per_second"], 2),
        }
        figures["checks"] = {
            "b_workers_vs_b1": compare(b_jobs, b_scores, b1_jobs, b1_scores),
            "b1_vs_c_brute_force": compare(b1_jobs, b1_scores, c_jobs, c_scores),
            "b_vs_a_whoosh_sample": compare(bs_jobs, bs_scores, whoosh_jobs, whoosh_scores),
        }
        figures["peak_memory"] = peak_rss_mib()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(json.dumps(figures, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
