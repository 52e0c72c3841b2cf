"""The full retrain's L2 choice: one shared value from a grid vs one value per coordinate by Bayesian search.

Builds the synthetic marketplace with the pipeline's own code (as ``bench_accuracy.py`` does), then runs
``pipeline.training.train_full`` twice on the window of days 1..k-1, once per ``l2_search``, and reports for each
the chosen L2, the holdout AUC it was picked on, the fitting time, and the AUC on day k (the next day, which
neither search saw) next to the oracle's.

    .venv/bin/python bench/bench_l2_search.py                   # 4k members x 1k jobs x 6 days, 12 trials
    .venv/bin/python bench/bench_l2_search.py --full            # 10k members x 2.5k jobs x 6 days, 20 trials
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from bench_accuracy import build_marketplace, truth_columns

from glmix_core import metrics
from pipeline import training
from pipeline.config import Settings
from pipeline.storage import read_partition, shift_ds

OUT = Path(__file__).resolve().parent / "out" / "l2_search.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="10k members x 2.5k jobs, 20 trials")
    parser.add_argument("--members", type=int)
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--days", type=int, default=6, help="days generated; the last one is the test day")
    parser.add_argument("--trials", type=int,
                        help="fits of the Bayesian search (default: the pipeline's default; 20 with --full)")
    parser.add_argument("--grid", type=float, nargs="+", default=list(training.DEFAULT_L2_GRID),
                        help="the shared grid (default: the pipeline's default)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", default="2026-03-01")
    parser.add_argument("--home", type=Path, help="data folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="with --home: reuse an earlier run's marketplace")
    args = parser.parse_args(argv)
    args.members = args.members or (10_000 if args.full else 4_000)
    args.jobs = args.jobs or (2_500 if args.full else 1_000)
    args.trials = args.trials or (20 if args.full else training.DEFAULT_TUNING_TRIALS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("py4j", "pyspark", "glmix_core.pbcd"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    home = args.home or Path(tempfile.mkdtemp(prefix="jobrec_l2_search_"))
    settings = Settings.from_env(home=home)
    dss = [shift_ds(args.start, d) for d in range(args.days)]
    if not (args.reuse and all(settings.layout.features("training", ds).is_dir() for ds in dss)):
        build_marketplace(settings, dss, {}, members=args.members, jobs=args.jobs, seed=args.seed,
                          impressions_per_day=3 * args.members)
    test = read_partition(settings.layout.features("training", dss[-1]))
    truth = read_partition(settings.layout.truth(dss[-1]))
    y = test.column("label").to_numpy()
    oracle = metrics.auc(y, truth_columns(test, truth, "p_apply")[0])

    results: dict[str, dict] = {}
    for search in ("grid", "bayesian"):
        t0 = time.perf_counter()
        out = training.train_full(dss[-2], settings, window_days=args.days - 1, l2_search=search,
                                  l2_grid=args.grid, tuning_trials=args.trials)
        seconds = time.perf_counter() - t0
        model = training.load_model(settings.layout.model_full(out["version"]))
        results[search] = {"l2": out["l2"], "holdout_auc": out["holdout_auc"], "fits": len(out["trials"]),
                           "seconds": round(seconds, 1), "next_day_auc": metrics.auc(y, model.score(test))}
        logging.info("%s: %s", search, results[search])

    report = {"members": args.members, "jobs": args.jobs, "days": args.days, "trials": args.trials,
              "grid": args.grid, "train_rows": out["rows"] + out["holdout_rows"], "test_rows": test.num_rows,
              "test_positives": int(y.sum()), "oracle_next_day_auc": oracle, "searches": results}
    print(f"\nFull retrain on days 1-{args.days - 1} of {args.members} members x {args.jobs} jobs "
          f"({report['train_rows']} rows); next day: {test.num_rows} rows, {report['test_positives']} applies")
    print(f"{'search':<10}{'fits':>6}{'seconds':>9}{'holdout AUC':>13}{'next-day AUC':>14}  L2")
    for search, r in results.items():
        l2 = ", ".join(f"{k} {v:.3g}" for k, v in r["l2"].items())
        print(f"{search:<10}{r['fits']:>6}{r['seconds']:>9.1f}{r['holdout_auc']:>13.4f}{r['next_day_auc']:>14.4f}  {l2}")
    print(f"{'oracle':<38}{oracle:>14.4f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    print(f"written {OUT}")
    return report


if __name__ == "__main__":
    main()
