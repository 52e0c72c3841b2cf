"""Benchmark: GLMix re-scoring next to first-stage retrieval on the same day, each against its SciPy limit.

Builds one day of the synthetic marketplace and its features (PySpark), the day's Whoosh job index and a
random GLMix model in the contract's format (fixed effect on every global feature, per-member coefficients
for 90% of members on 30 profile features, per-job coefficients on 20), then times, in one run and with the
same worker processes:

- retrieval: :func:`pipeline.retrieval_tasks.retrieve_candidates` (top ``--candidates`` per member), and its
  SciPy limit: the plain sparse product of each block of member queries with the job matrix,
  ``(Q_block @ D).toarray()``, over all members;
- re-scoring: :func:`pipeline.scoring.rescore` of those candidates (top 100, at most 10 per company), and its
  SciPy limit: the plain sparse product of each block of member vectors ``[b⊙q + α | q]`` with the job
  vectors ``[s | β]``, ``(U_block @ V).toarray()`` (the product re-scoring computes per block, there split
  by term density, :class:`pipeline.rescoring.layout.SplitProduct`, so re-scoring can beat this "limit";
  building the vectors is not timed).

Prints both times, each one's ratio to its limit and re-scoring's ratio to retrieval, with peak memory, and
writes them to ``bench/out/rescore.json``. Default: 2,000 members × 4,000 jobs, 1000 candidates. ``--full``:
the issue's marketplace (100,000 members × 20,000 jobs). ``--features-from HOME`` reuses a data folder whose
features for 2026-01-01 are built, instead of generating and building them here.

    .venv/bin/python bench/bench_rescore.py [--full] [--members N] [--jobs N] [--candidates K]
        [--processes P] [--engine local|spark] [--features-from HOME] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent / "out" / "rescore.json"
DS = "2026-01-01"


def random_model(model_dir: Path, settings, member_ids, job_ids, rng: np.random.Generator) -> None:
    """A GLMix model directory (model.json + coefficients.parquet) with random coefficients."""
    from pipeline.features.pairs import GlobalSpace
    from pipeline.features.vocab import load_vocab

    space = GlobalSpace.from_vocab(load_vocab(DS, settings))
    vocab = space.vocab.table
    profile_names = pc.binary_join_element_wise(vocab["field"], vocab["term"], "=").to_numpy(zero_copy_only=False)
    parts = [pa.table({
        "coordinate": pa.array(["global"] * (len(space.names) + 1)),
        "entity": pa.nulls(len(space.names) + 1, pa.string()),
        "feature": pa.concat_arrays([pa.array(["(intercept)"]), space.names]),
        "value": rng.normal(0, 0.3, len(space.names) + 1),
    })]
    for coordinate, ids, per_entity, share in (("per_member", member_ids, 30, 0.9), ("per_job", job_ids, 20, 1.0)):
        chosen = ids[rng.random(len(ids)) < share]
        feats = profile_names[rng.integers(0, len(profile_names), (len(chosen), per_entity))]
        entity = np.repeat(chosen.astype(str), per_entity + 1)
        feature = np.concatenate([np.full((len(chosen), 1), "(intercept)", dtype=object), feats], axis=1).ravel()
        parts.append(pa.table({
            "coordinate": pa.array([coordinate] * len(entity)),
            "entity": pa.array(entity, pa.string()),
            "feature": pa.array(feature, pa.string()),
            "value": rng.normal(0, 0.2, len(entity)),
        }))
    table = pa.concat_tables(parts)
    table = table.append_column("variance", pa.nulls(table.num_rows, pa.float64()))
    model_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, model_dir / "coefficients.parquet", compression="zstd")
    spec = {"task": "logistic", "response": "label", "coordinates": [
        {"name": "global", "type": "fixed", "feature_bags": ["global"]},
        {"name": "per_member", "type": "random", "entity": "member_id", "feature_bags": ["job_features"]},
        {"name": "per_job", "type": "random", "entity": "job_id", "feature_bags": ["member_features"]}]}
    (model_dir / "model.json").write_text(json.dumps({"format": "glmix/1", "spec": spec, "version": "bench"}))


# Blocks of the limit measurements, shared with forked workers (each returns a float, not the dense block).
_LIMIT: dict = {}


def _product_task(start: int) -> float:
    s = _LIMIT
    block = (s["left"][start:start + s["rows"]] @ s["right"]).toarray()
    return float(block[0, 0]) if block.size else 0.0


def timed_products(left, right, rows: int, processes: int) -> float:
    """Seconds to compute ``(left[block] @ right).toarray()`` for every block of ``rows`` rows."""
    from pipeline.rescoring.stream import ordered_map

    _LIMIT.update(left=left.tocsr(), right=right.tocsr(), rows=rows)
    try:
        started = time.perf_counter()
        for _ in ordered_map(_product_task, range(0, left.shape[0], rows), processes):
            pass
        return time.perf_counter() - started
    finally:
        _LIMIT.clear()


def scipy_limits(settings, ds: str, processes: int, retrieval_block: int = 256) -> dict:
    """Same-run SciPy limits of the day's retrieval and re-scoring (seconds; see the module docstring).

    Needs the day's features, index (``update_index``) and model (``models/daily/ds=``).
    """
    import scipy.sparse as sp

    from pipeline.features.pairs import GlobalSpace, ProfileBlock
    from pipeline.features.vocab import load_vocab
    from pipeline.rescoring.layout import build_rescorer
    from pipeline.retrieval_tasks import day_bounds_us, field_weights_path
    from pipeline.scoring import _active_jobs, block_members_for, load_glmix_model
    from pipeline.storage import read_partition
    from retrieval import batch
    from retrieval import index as job_index
    from retrieval.schema import load_field_weights

    layout = settings.layout
    members = read_partition(layout.features("member_profiles", ds)).sort_by("member_id")
    jobs = batch.JobMatrix.from_index(job_index.open_index(layout.index(ds)))
    jobs = jobs.select(jobs.open_at(day_bounds_us(ds)[1]))
    _, queries = batch.member_queries(members, jobs, load_field_weights(field_weights_path(settings)))
    retrieval_s = timed_products(queries, jobs.matrix, retrieval_block, processes)

    space = GlobalSpace.from_vocab(load_vocab(ds, settings))
    job_table = read_partition(layout.features("job_profiles", ds)).sort_by("job_id")
    model, version = load_glmix_model(layout.model_daily(ds))
    rescorer = build_rescorer(model, space, job_table, _active_jobs(job_table, ds), version, 500)
    profile_block = ProfileBlock.from_table(members, space.vocab)
    alpha, _, _ = rescorer.members.rows(members["member_id"].to_numpy())
    profile = profile_block.combined()
    vectors = sp.hstack([(profile @ sp.diags(rescorer.column_weights(set()))).tocsr() + alpha, profile], format="csr")
    rows = block_members_for(rescorer.jobs.n_active)
    rescore_s = timed_products(vectors, rescorer.jobs.product.to_csr(), rows, processes)
    return {"retrieval_limit_seconds": round(retrieval_s, 3), "retrieval_limit_block": retrieval_block,
            "rescore_limit_seconds": round(rescore_s, 3), "rescore_limit_block": rows,
            "members": members.num_rows, "open_jobs": jobs.n_jobs}


def peak_rss_mib() -> dict:
    return {"self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "largest_child": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="100k members x 20k jobs, 1000 candidates each")
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=None, help="worker processes (default: cores, at most 4)")
    parser.add_argument("--engine", choices=["local", "spark"], default="local", help="re-scoring engine")
    parser.add_argument("--features-from", default=None, help="reuse this data folder's features for " + DS)
    parser.add_argument("--master", default="local[2]", help="Spark master for the feature build")
    parser.add_argument("--home", default=None, help="data folder (default: a temporary one, removed after)")
    args = parser.parse_args()
    members = args.members or (100_000 if args.full else 2_000)
    jobs = args.jobs or (20_000 if args.full else 4_000)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline.features").setLevel(logging.ERROR)

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pipeline.config import Settings
    from pipeline.features import build_features
    from pipeline.retrieval_tasks import retrieve_candidates, update_index
    from pipeline.scoring import default_processes, rescore
    from pipeline.storage import read_partition, write_partition
    from pipeline.synth import generate_marketplace

    processes = args.processes or default_processes()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="jobrec-bench-rescore-"))
    settings = Settings.from_env(home=home, spark_master=args.master, spark_shuffle_partitions=8)
    rng = np.random.default_rng(11)
    try:
        t0 = time.perf_counter()
        if args.features_from:
            source = Settings.from_env(home=args.features_from).layout
            for kind in ("vocab", "job_profiles", "member_profiles"):
                write_partition(settings.layout.features(kind, DS), read_partition(source.features(kind, DS)))
        elif not settings.layout.features("member_profiles", DS).exists():
            generate_marketplace(home, members=members, jobs=jobs, days=1, start=DS, seed=7,
                                 impressions_per_day=members)
            build_features(DS, settings)
        if args.engine == "local":
            from pyspark.sql import SparkSession

            active = SparkSession.getActiveSession()
            if active is not None:
                active.stop()  # retrieval and re-scoring run without Spark; give its memory back
        update_index(DS, settings)
        member_ids = np.sort(read_partition(settings.layout.features("member_profiles", DS), columns=["member_id"])
                             ["member_id"].to_numpy())
        job_ids = np.sort(read_partition(settings.layout.features("job_profiles", DS), columns=["job_id"])
                          ["job_id"].to_numpy())
        random_model(settings.layout.model_daily(DS), settings, member_ids, job_ids, rng)
        setup = time.perf_counter() - t0

        t0 = time.perf_counter()
        retrieved = retrieve_candidates(DS, settings, k=args.candidates, processes=processes)
        retrieval_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = rescore(DS, settings, engine=args.engine, processes=processes)
        rescore_s = time.perf_counter() - t0
        limits = scipy_limits(settings, DS, processes)
        result = {
            "benchmark": "GLMix re-scoring vs first-stage retrieval on one day, each vs its SciPy product limit",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_average_at_end": os.getloadavg()},
            "size": {"members": int(len(member_ids)), "jobs": int(len(job_ids)), "open_jobs": limits["open_jobs"],
                     "candidates_per_member": args.candidates, "top_n": settings.top_n, "max_per_company": 10},
            "processes": processes,
            "engine": args.engine,
            "setup_seconds": round(setup, 1),
            "retrieval_seconds": round(retrieval_s, 2),
            "rescore_seconds": round(rescore_s, 2),
            **limits,
            "ratios": {
                "rescore_over_retrieval": round(rescore_s / retrieval_s, 2),
                "rescore_over_its_limit": round(rescore_s / limits["rescore_limit_seconds"], 2),
                "retrieval_over_its_limit": round(retrieval_s / limits["retrieval_limit_seconds"], 2),
            },
            "candidates": retrieved["candidates"],
            "pairs_scored": report["pairs_scored"],
            "microseconds_per_pair": round(1e6 * rescore_s / max(report["pairs_scored"], 1), 3),
            "recommendations": report["recommendations"],
            "peak_rss_mib": peak_rss_mib(),
        }
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=2) + "\n")
        r = result["ratios"]
        print(f"\n{len(member_ids)} members x {len(job_ids)} jobs ({limits['open_jobs']} open), "
              f"{args.candidates} candidates, {processes} processes, re-scoring engine {args.engine}:")
        print(f"  retrieval   {retrieval_s:8.2f} s   SciPy limit {limits['retrieval_limit_seconds']:8.2f} s   "
              f"ratio {r['retrieval_over_its_limit']:.2f}")
        print(f"  re-scoring  {rescore_s:8.2f} s   SciPy limit {limits['rescore_limit_seconds']:8.2f} s   "
              f"ratio {r['rescore_over_its_limit']:.2f}   ({result['microseconds_per_pair']} us per pair)")
        print(f"  re-scoring / retrieval {r['rescore_over_retrieval']:.2f}; peak RSS {result['peak_rss_mib']} MiB "
              f"(setup {setup:.0f}s not counted)")
        print(f"wrote {OUT}")
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
