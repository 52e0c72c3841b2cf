"""Spark-engine GLMix fit time vs the local engine on the same data, and its growth from 1x to 4x the data.

    .venv/bin/python bench/bench_glmix_spark.py            # small: 20k rows, 2k members, 400 jobs
    .venv/bin/python bench/bench_glmix_spark.py --full     # ~1M rows, 100k members, 20k jobs (and 2M, 4M)

Both engines fit the GLMix-Full spec (fixed ``global`` + per-member + per-job) on the same Parquet file from
``glmix_core.simulate`` at every scale (1x/2x/4x rows, same entities); Spark runs ``local[2]``. Prints, per
scale, local time, Spark time and their ratio (the overhead a user pays for scale-out on one machine), each
engine's growth from 1x, the objective gap between engines, and the driver's peak RSS; writes them to
``bench/out/glmix_spark.json``. ``--rows 250000`` gives 250k/500k/1M rows (the ratio at ~1M in an hour
rather than the several hours of ``--full``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import pyarrow.parquet as pq  # noqa: E402

from glmix_core import GLMixSpec, fit, load_table  # noqa: E402
from glmix_core.simulate import full_spec_dict, make_truth, simulate  # noqa: E402
from glmix_core.spark_engine import fit_spark  # noqa: E402

log = logging.getLogger("bench_glmix_spark")
OUT = Path(__file__).resolve().parent / "out" / "glmix_spark.json"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="issue size: ~1M rows, 100k members, 20k jobs")
    parser.add_argument("--rows", type=int, help="rows at 1x (overrides the size preset)")
    parser.add_argument("--scales", default="1,2,4", help="data multiples for the growth figures")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the Spark layouts")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    members, jobs, rows = (100_000, 20_000, 1_000_000) if args.full else (2_000, 400, 20_000)
    rows = args.rows or rows
    scales = [int(s) for s in args.scales.split(",")]

    from pipeline.config import Settings
    from pipeline.spark import get_spark

    spark = get_spark(Settings.from_env(spark_master=args.master, spark_shuffle_partitions=args.partitions,
                                        spark_driver_memory="6g" if args.full else "2g"), app_name="bench-glmix-spark")
    spark.sparkContext.pythonExec = sys.executable
    spec = GLMixSpec.from_dict(full_spec_dict("logistic"))
    truth = make_truth(members, jobs, n_global=5, seed=11)
    results: dict = {"rows": rows, "members": members, "jobs": jobs, "master": args.master,
                     "partitions": args.partitions, "scales": scales, "local_fit_seconds": {},
                     "spark_fit_seconds": {}, "per_scale": {}}
    with tempfile.TemporaryDirectory(prefix="bench_glmix_spark_") as tmp:
        for scale in scales:
            table = simulate(truth, rows * scale, seed=11, member_skew=0.0)[0]
            path = Path(tmp) / f"train_{scale}x.parquet"
            pq.write_table(table, path)
            del table
            key = f"{scale}x"
            local_table = load_table(path)
            t0 = time.perf_counter()
            local = fit(spec, local_table)
            local_seconds = time.perf_counter() - t0
            results["local_fit_seconds"][key] = local_seconds
            local_objective, local_sweeps = local.metadata["fit"]["objective"], local.metadata["fit"]["sweeps"]
            del local_table, local
            print(f"local engine, {rows * scale:,} rows: {local_seconds:.1f}s ({local_sweeps} sweeps)", flush=True)
            t0 = time.perf_counter()
            model = fit_spark(spec, str(path), spark=spark, num_partitions=args.partitions)
            seconds = time.perf_counter() - t0
            results["spark_fit_seconds"][key] = seconds
            spark_objective = model.metadata["fit"]["objective"]
            results["per_scale"][key] = {
                "rows": rows * scale, "local_seconds": local_seconds, "spark_seconds": seconds,
                "spark_over_local": seconds / local_seconds, "local_sweeps": local_sweeps,
                "spark_sweeps": model.metadata["fit"]["sweeps"], "local_objective": local_objective,
                "spark_objective": spark_objective,
                "objective_rel_diff": abs(spark_objective - local_objective) / abs(local_objective)}
            print(f"spark engine ({args.master}), {rows * scale:,} rows: {seconds:.1f}s "
                  f"({model.metadata['fit']['sweeps']} sweeps): {seconds / local_seconds:.1f}x the local engine",
                  flush=True)
            del model
    largest = results["per_scale"][f"{scales[-1]}x"]
    # headline: the largest scale (the issue's ~1M rows with --full, or --rows 250000 at 4x)
    results.update({k: largest[k] for k in ("spark_over_local", "objective_rel_diff")})
    results["ratio_rows"] = largest["rows"]
    for engine in ("local", "spark"):
        times = results[f"{engine}_fit_seconds"]
        base = times.get("1x")
        results[f"{engine}_growth_vs_1x"] = {k: v / base for k, v in times.items()} if base else {}
    results["driver_peak_rss_mib"] = _peak_rss_mib()
    print(f"spark/local fit time ratio at {largest['rows']:,} rows: {results['spark_over_local']:.2f}x  "
          f"(objective rel. diff {results['objective_rel_diff']:.2e})")
    for engine in ("local", "spark"):
        print(f"{engine} fit time growth vs 1x: "
              + ", ".join(f"{k}: {v:.2f}" for k, v in results[f"{engine}_growth_vs_1x"].items()))
    print(f"driver peak RSS: {results['driver_peak_rss_mib']:.0f} MiB (Python driver; the JVM is a separate process)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
