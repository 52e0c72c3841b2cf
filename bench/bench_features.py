"""Benchmark: feature generation (``jobrec features``) time over N days of the synthetic marketplace.

Default: 3 days of 2,000 members × 600 jobs (a minute or two). ``--full``: the issue's size, 30 days of
100,000 members × 20,000 jobs. Prints per-day and total seconds, training rows/s and the peak memory of this
process and of the Spark JVM, and writes them to ``bench/out/features.json`` (rewritten after every day, so
an interrupted run still leaves its figures).

    .venv/bin/python bench/bench_features.py [--full] [--days N] [--members N] [--jobs N] [--master URL]
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

OUT = Path(__file__).resolve().parent / "out" / "features.json"


def descendant_peak_rss_mb() -> float:
    """Largest peak RSS (VmHWM) among this process's descendants, e.g. the Spark JVM, in MiB."""
    peak = 0.0
    pending, seen = [os.getpid()], set()
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                pending.extend(int(c) for c in children)
            if pid != os.getpid():
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="30 days of 100k members x 20k jobs")
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--start", default="2026-01-01")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--home", default=None, help="data folder (default: a temporary one, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data folder")
    args = parser.parse_args()
    days = args.days or (30 if args.full else 3)
    members = args.members or (100_000 if args.full else 2_000)
    jobs = args.jobs or (20_000 if args.full else 600)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline.features").setLevel(logging.ERROR)  # no per-table "not validated" warnings

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pipeline.config import Settings
    from pipeline.features import build_features
    from pipeline.storage import shift_ds
    from pipeline.synth import generate_marketplace

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="jobrec-bench-features-"))
    settings = Settings.from_env(home=home, spark_master=args.master, spark_shuffle_partitions=8)
    result: dict = {
        "benchmark": "feature generation (jobrec features), PySpark",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "spark_master": args.master},
        "size": {"days": days, "members": members, "jobs": jobs},
        "days": [],
    }
    try:
        t0 = time.perf_counter()
        summary = generate_marketplace(home, members=members, jobs=jobs, days=days, start=args.start, seed=7)
        result["generate_seconds"] = round(time.perf_counter() - t0, 2)
        result["impressions_total"] = sum(d["impressions"] for d in summary["days"])
        print(f"generated {days} days of {members} members x {jobs} jobs in {result['generate_seconds']}s "
              f"({result['impressions_total']} impressions)")
        total = 0.0
        for i in range(days):
            ds = shift_ds(args.start, i)
            t0 = time.perf_counter()
            report = build_features(ds, settings)
            seconds = time.perf_counter() - t0
            total += seconds
            result["days"].append({"ds": ds, "seconds": round(seconds, 2), "training_rows": report["training_rows"],
                                   "positives": report["positives"], "terms": report["terms"]})
            rows = sum(d["training_rows"] for d in result["days"])
            result.update({
                "days_done": i + 1,
                "feature_seconds_total": round(total, 2),
                "seconds_per_day_mean": round(total / (i + 1), 2),
                "training_rows_total": rows,
                "training_rows_per_second": round(rows / total, 1),
                "peak_rss_mb_python": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "peak_rss_mb_spark_jvm": round(descendant_peak_rss_mb(), 1),
            })
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(result, indent=2) + "\n")
            print(f"  {ds}: {seconds:6.1f}s  {report['training_rows']} rows ({report['positives']} positive), "
                  f"{report['terms']} terms")
        print(f"feature generation: {days} days in {total:.1f}s ({total / days:.1f}s/day), "
              f"{result['training_rows_per_second']:.0f} training rows/s; peak RSS python "
              f"{result['peak_rss_mb_python']} MiB, Spark JVM {result['peak_rss_mb_spark_jvm']} MiB")
        print(f"wrote {OUT}")
    finally:
        if not args.home and not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
