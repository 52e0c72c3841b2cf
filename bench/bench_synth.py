"""Benchmark ``jobrec synth`` (and one day of ``jobrec validate``): wall time, peak memory, oracle AUCs.

    .venv/bin/python bench/bench_synth.py           # small: 10k members × 2k jobs × 7 days
    .venv/bin/python bench/bench_synth.py --full    # the issue's size: 100k members × 20k jobs × 30 days

Prints the figures and writes them to ``bench/out/synth.json``. Peak memory is the process's maximum resident
set size (``resource.getrusage``), which covers everything the generator allocated.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import Settings  # noqa: E402
from pipeline.storage import Layout, read_partition  # noqa: E402
from pipeline.synth import generate_marketplace  # noqa: E402
from pipeline.validation import validate_day  # noqa: E402

SMALL = {"members": 10_000, "jobs": 2_000, "days": 7}
FULL = {"members": 100_000, "jobs": 20_000, "days": 30}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def folder_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="100k members × 20k jobs × 30 days")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--impressions-per-day", type=int, default=None, help="default 3 × members")
    parser.add_argument("--out", default=None, help="keep the data here (default: a temporary folder, removed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    size = FULL if args.full else SMALL

    home = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        rss_before = peak_rss_mib()
        started = time.perf_counter()
        summary = generate_marketplace(home, start="2026-01-01", seed=args.seed,
                                       impressions_per_day=args.impressions_per_day, **size)
        synth_seconds = time.perf_counter() - started
        synth_peak = peak_rss_mib()

        last_ds = summary["days"][-1]["ds"]
        started = time.perf_counter()
        report = validate_day(last_ds, Settings.from_env(home=home))
        validate_seconds = time.perf_counter() - started

        layout = Layout(home)
        shown_to = np.concatenate([
            read_partition(layout.raw("impressions", d["ds"]), columns=["member_id"]).column(0).to_numpy()
            for d in summary["days"]
        ])
        _, per_member = np.unique(shown_to, return_counts=True)
        per_member = np.concatenate([per_member, np.zeros(size["members"] - len(per_member), dtype=np.int64)])
        days = summary["days"]
        oracle = [d["oracle_auc"] for d in days]
        result = {
            "size": size,
            "seed": args.seed,
            "impressions_per_day": summary["parameters"]["impressions_per_day"],
            "synth_wall_seconds": round(synth_seconds, 2),
            "synth_seconds_per_day": round(synth_seconds / size["days"], 3),
            "peak_rss_mib": round(synth_peak, 1),
            "rss_before_mib": round(rss_before, 1),
            "output_mib": round(folder_mib(home), 1),
            "impressions_total": int(sum(d["impressions"] for d in days)),
            "applies_total": int(sum(d["applies"] for d in days)),
            "apply_rate_mean": float(np.mean([d["apply_rate"] for d in days])),
            "active_jobs_first_last": [days[0]["active_jobs"], days[-1]["active_jobs"]],
            "oracle_auc_by_day": {d["ds"]: round(d["oracle_auc"], 4) for d in days},
            "oracle_auc_min_max": [round(min(oracle), 4), round(max(oracle), 4)],
            "frozen_day_one_auc_by_day": {d["ds"]: round(d["frozen_auc"], 4) for d in days},
            "impressions_per_member_over_period": {
                q: float(np.quantile(per_member, float(q))) for q in ("0.25", "0.5", "0.9", "0.99", "1.0")
            },
            "validate_last_day_seconds": round(validate_seconds, 2),
            "validate_last_day_rows": report["rows"],
            "cpu_count": os.cpu_count(),
        }
    finally:
        if not args.out:
            shutil.rmtree(home, ignore_errors=True)

    print(f"synth {size['members']} members × {size['jobs']} jobs × {size['days']} days, "
          f"{result['impressions_per_day']} impressions/day (seed {args.seed})")
    print(f"  wall time {result['synth_wall_seconds']} s ({result['synth_seconds_per_day']} s/day), "
          f"peak RSS {result['peak_rss_mib']} MiB, output {result['output_mib']} MiB")
    print(f"  {result['impressions_total']} impressions, {result['applies_total']} applies "
          f"(mean rate {result['apply_rate_mean']:.4f}), active jobs first/last day {result['active_jobs_first_last']}")
    print("  ds          oracle AUC  day-one model AUC")
    for d in days:
        print(f"  {d['ds']}  {d['oracle_auc']:10.4f}  {d['frozen_auc']:17.4f}")
    print(f"  oracle AUC min/max {result['oracle_auc_min_max']}")
    print(f"  impressions per member over the period (quantiles): {result['impressions_per_member_over_period']}")
    print(f"  validate {last_ds}: {result['validate_last_day_rows']} rows in {result['validate_last_day_seconds']} s")
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / "synth.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"  wrote {out / 'synth.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
