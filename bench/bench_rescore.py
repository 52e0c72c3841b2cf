"""Benchmark: re-scoring throughput (members/s) with 1000 candidates per member (``jobrec rescore``).

Builds one day of the synthetic marketplace and its features (PySpark), draws 1000 random active candidate
jobs per member and a random GLMix model in the contract's format (fixed effect on every global feature,
per-member coefficients for 90% of members on 30 job features, per-job coefficients on 20 member
features), then times :func:`pipeline.scoring.rescore` (top 100, at most 10 per company).

Default: 1,000 members × 4,000 jobs. ``--full``: the issue's marketplace (100,000 members × 20,000 jobs),
re-scoring 20,000 of its members (20M candidate pairs; members/s does not depend on how many are scored).
``--features-from HOME`` reuses a data folder whose features for 2026-01-01 are built (e.g. the one
``bench_features.py --full --home`` leaves), instead of generating and building them here.
Prints members/s, pairs/s and peak memory and writes them to ``bench/out/rescore.json``.

    .venv/bin/python bench/bench_rescore.py [--full] [--members N] [--jobs N] [--score-members N]
        [--candidates K] [--features-from HOME]
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


def random_candidates(member_ids: np.ndarray, job_ids: np.ndarray, k: int, rng: np.random.Generator) -> pa.Table:
    """``k`` distinct random jobs per member (chunks of members, argpartition of random keys)."""
    k = min(k, len(job_ids))
    members, jobs = [], []
    chunk = max(1, 4_000_000 // max(len(job_ids), 1))
    for start in range(0, len(member_ids), chunk):
        block = member_ids[start:start + chunk]
        picks = np.argpartition(rng.random((len(block), len(job_ids))), k - 1, axis=1)[:, :k]
        members.append(np.repeat(block, k))
        jobs.append(job_ids[picks.ravel()])
    m, j = np.concatenate(members), np.concatenate(jobs)
    rank = np.tile(np.arange(1, k + 1, dtype=np.int32), len(member_ids))
    return pa.table({"member_id": m, "job_id": j, "score": rng.random(len(m)), "rank": rank})


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="20k members x 20k jobs, 1000 candidates each")
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--score-members", type=int, default=None, help="members re-scored (default all; --full 20k)")
    parser.add_argument("--features-from", default=None, help="reuse this data folder's features for " + DS)
    parser.add_argument("--master", default="local[2]", help="Spark master for the feature build")
    parser.add_argument("--home", default=None, help="data folder (default: a temporary one, removed after)")
    args = parser.parse_args()
    members = args.members or (100_000 if args.full else 1_000)
    jobs = args.jobs or (20_000 if args.full else 4_000)
    score_members = args.score_members or (20_000 if args.full else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline.features").setLevel(logging.ERROR)

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pipeline.config import Settings
    from pipeline.features import build_features
    from pipeline.scoring import rescore
    from pipeline.storage import read_partition, write_partition
    from pipeline.synth import generate_marketplace

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="jobrec-bench-rescore-"))
    settings = Settings.from_env(home=home, spark_master=args.master, spark_shuffle_partitions=8)
    rng = np.random.default_rng(11)
    try:
        t0 = time.perf_counter()
        if args.features_from:
            source = Settings.from_env(home=args.features_from).layout
            for kind in ("vocab", "job_profiles", "member_profiles"):
                write_partition(settings.layout.features(kind, DS), read_partition(source.features(kind, DS)))
        else:
            generate_marketplace(home, members=members, jobs=jobs, days=1, start=DS, seed=7,
                                 impressions_per_day=members)
            build_features(DS, settings)
            from pipeline.spark import get_spark

            get_spark(settings).stop()  # re-scoring runs without Spark; give its memory back
        if score_members:  # re-score a sample: keep only those members' profiles
            path = settings.layout.features("member_profiles", DS)
            profiles = read_partition(path)
            write_partition(path, profiles.slice(0, min(score_members, profiles.num_rows)))
        setup = time.perf_counter() - t0
        member_ids = np.sort(read_partition(settings.layout.features("member_profiles", DS), columns=["member_id"])
                             ["member_id"].to_numpy())
        job_table = read_partition(settings.layout.features("job_profiles", DS), columns=["job_id", "expires_at"])
        job_ids = np.sort(job_table["job_id"].to_numpy())
        end = pa.scalar(np.datetime64(f"{DS}T00:00:00", "us") + np.timedelta64(1, "D"), pa.timestamp("us"))
        active = job_table.filter(pc.greater(pc.cast(job_table["expires_at"], pa.timestamp("us")), end))
        active_ids = np.sort(active["job_id"].to_numpy())
        write_partition(settings.layout.candidates(DS), random_candidates(member_ids, active_ids, args.candidates, rng))
        random_model(settings.layout.model_daily(DS), settings, member_ids, job_ids, rng)

        t0 = time.perf_counter()
        report = rescore(DS, settings)
        seconds = time.perf_counter() - t0
        k = min(args.candidates, len(active_ids))
        result = {
            "benchmark": "re-scoring with the full GLMix model (pipeline.scoring.rescore)",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "size": {"members": int(len(member_ids)), "jobs": int(len(job_ids)), "active_jobs": int(len(active_ids)),
                     "candidates_per_member": k, "top_n": settings.top_n, "max_per_company": 10},
            "setup_seconds": round(setup, 1),
            "rescore_seconds": round(seconds, 2),
            "members_per_second": round(len(member_ids) / seconds, 1),
            "pairs_per_second": round(report["pairs_scored"] / seconds, 1),
            "pairs_scored": report["pairs_scored"],
            "recommendations": report["recommendations"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=2) + "\n")
        print(f"re-scoring: {len(member_ids)} members x {k} candidates in {seconds:.2f}s -> "
              f"{result['members_per_second']:.0f} members/s ({result['pairs_per_second']:.0f} pairs/s); "
              f"peak RSS {result['peak_rss_mb']} MiB (setup {setup:.0f}s not counted)")
        print(f"wrote {OUT}")
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
