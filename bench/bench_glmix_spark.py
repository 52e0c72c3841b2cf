"""Spark-backend GLMix fit time against the local backend on the same data, in one run.

    .venv/bin/python bench/bench_glmix_spark.py             # small: 20k rows
    .venv/bin/python bench/bench_glmix_spark.py --full      # the issue's sizes: 100k and 1M rows
    .venv/bin/python bench/bench_glmix_spark.py --rows 100000,1000000 --no-standalone

Both backends fit the GLMix-Full spec (fixed ``global`` + per-member + per-job, logistic) on the same Parquet
file from ``glmix_core.simulate`` with ``glmix_core.fit(..., engine=...)``. For every size it prints the
local time, the Spark time in ``local[2]`` and their ratio, and (unless ``--no-standalone``) the Spark time
on a standalone master + worker started on this machine from pyspark's own jars (``spark-class
org.apache.spark.deploy.master.Master`` / ``Worker``, 2 cores), each with sweeps and the objective gap to
the local fit. Each Spark session first runs one small warm-up fit (JVM and Python worker start-up, as in a
pipeline's long-lived session), reported apart. Each time is the median of ``--repeat`` fits of the same
data (default: 3 for sizes up to 200k rows, where one fit takes seconds and a single run swings by 20%, and
1 above); every fit's time is kept in the JSON. Results go to ``bench/out/glmix_spark.json``. Run it alone
on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import pyarrow.parquet as pq  # noqa: E402

from glmix_core import GLMixSpec, fit, load_table  # noqa: E402
from glmix_core.simulate import full_spec_dict, make_truth, simulate  # noqa: E402
from glmix_core.spark_engine import PYTHON_WORKER_CONF  # noqa: E402
from pipeline.spark_standalone import StandaloneCluster  # noqa: E402

log = logging.getLogger("bench_glmix_spark")
OUT = Path(__file__).resolve().parent / "out" / "glmix_spark.json"


def _session(master: str, partitions: int):
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master(master).appName("bench-glmix-spark")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", str(partitions))
               .config("spark.driver.memory", "6g").config("spark.executor.memory", "6g")
               .config(map=PYTHON_WORKER_CONF))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _warm_up(spark, spec, partitions: int | None) -> float:
    """One small fit, so JVM start-up, Python worker start-up and imports are not billed to the first size
    (a pipeline's session is long-lived); returns its seconds."""
    table = simulate(make_truth(200, 40, n_global=5, seed=1), 2_000, seed=1)[0]
    t0 = time.perf_counter()
    fit(spec, table, engine="spark", spark=spark, num_partitions=partitions)
    return time.perf_counter() - t0


def _timed(repeat: int, run) -> tuple[float, list[float], object]:
    """(median seconds, every run's seconds, the last result) of ``repeat`` calls of ``run()``."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def _repeats(rows: int, repeat: int | None) -> int:
    return repeat if repeat is not None else (3 if rows <= 200_000 else 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the issue's sizes: 100k and 1M rows")
    parser.add_argument("--rows", help="comma-separated row counts (overrides the preset)")
    parser.add_argument("--partitions", type=int, default=None,
                        help="partitions of the Spark layouts (default: the session's default parallelism)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--no-standalone", action="store_true", help="skip the standalone master + worker row")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed fits per backend and size, the median reported (default 3 up to 200k rows, else 1)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    warnings.simplefilter("ignore")
    sizes = [int(r) for r in args.rows.split(",")] if args.rows else ([100_000, 1_000_000] if args.full else [20_000])
    spec = GLMixSpec.from_dict(full_spec_dict("logistic"))
    results: dict = {"master": args.master, "partitions": args.partitions, "tolerance": spec.tolerance,
                     "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench_glmix_spark_") as tmp:
        paths = {}
        for rows in sizes:
            members, jobs = max(rows // 10, 100), max(rows // 50, 20)
            table = simulate(make_truth(members, jobs, n_global=5, seed=11), rows, seed=11, member_skew=0.0)[0]
            paths[rows] = str(Path(tmp) / f"train_{rows}.parquet")
            pq.write_table(table, paths[rows])
            del table
            path = paths[rows]
            local_s, local_times, local = _timed(_repeats(rows, args.repeat), lambda p=path: fit(spec, load_table(p)))
            results["sizes"][rows] = {"rows": rows, "members": members, "jobs": jobs, "local_seconds": local_s,
                                      "local_runs": local_times,
                                      "local_sweeps": local.metadata["fit"]["sweeps"],
                                      "local_objective": local.metadata["fit"]["objective"]}
            print(f"{rows:>9,} rows  local backend: {local_s:7.1f}s ({local.metadata['fit']['sweeps']} sweeps)",
                  flush=True)
            del local
        runs = [("spark", args.master)]
        cluster = None
        if not args.no_standalone:
            cluster = StandaloneCluster()
            runs.append(("standalone", cluster.__enter__()))
        try:
            for label, master in runs:
                spark = _session(master, args.partitions or 2)
                results[f"{label}_warm_up_seconds"] = _warm_up(spark, spec, args.partitions)
                for rows in sizes:
                    row = results["sizes"][rows]
                    seconds, times, model = _timed(_repeats(rows, args.repeat), lambda p=paths[rows], s=spark: fit(
                        spec, p, engine="spark", spark=s, num_partitions=args.partitions))
                    meta = model.metadata["fit"]
                    gap = abs(meta["objective"] - row["local_objective"]) / abs(row["local_objective"])
                    row.update({f"{label}_seconds": seconds, f"{label}_runs": times, f"{label}_sweeps": meta["sweeps"],
                                f"{label}_over_local": seconds / row["local_seconds"],
                                f"{label}_objective_rel_diff": gap})
                    where = args.master if label == "spark" else "standalone master + worker"
                    print(f"{rows:>9,} rows  spark ({where}): {seconds:7.1f}s ({meta['sweeps']} sweeps) = "
                          f"{seconds / row['local_seconds']:.2f}x local, objective rel. diff {gap:.1e}", flush=True)
                spark.stop()
        finally:
            if cluster is not None:
                cluster.__exit__(None, None, None)
    results["driver_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
