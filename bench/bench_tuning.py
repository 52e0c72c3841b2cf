"""L2 tuning on the synthetic marketplace: random search vs Bayesian optimisation (``glmix_core.tuning``).

Builds the marketplace and its features with the pipeline's own code (`pipeline.synth`, `pipeline.validation`,
`pipeline.features`, as `bench_accuracy.py` does, whose feature-bag filter and GLMix-Full spec are reused),
trains GLMix-Full (global + per-member + per-job) on days 1..k and validates on day k+1. Both searches get
the same box (log10 L2 in [-2, 3] for each of global, per_member and per_job), the same trial budget and the
same seeds (Bayesian search's initial points are random search's first points), and we report the best
validation AUC after 10 and after 20 trials.

    .venv/bin/python bench/bench_tuning.py            # small: 2k members x 500 jobs, train 3 days, 3 seeds
    .venv/bin/python bench/bench_tuning.py --full     # 20k members x 5k jobs, train 5 days, 5 seeds
"""

from __future__ import annotations

import os

# one BLAS thread: the fits are sparse and small, and threaded OpenBLAS slows scipy's L-BFGS-B badly on a
# shared 2-core machine (see bench_glmix.py)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accuracy import build_marketplace, filter_bag, model_specs  # noqa: E402

from glmix_core.tuning import bayesian_search, random_search  # noqa: E402
from pipeline.config import Settings  # noqa: E402
from pipeline.storage import read_partition, shift_ds  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "tuning.json"
COORDINATES = ("global", "per_member", "per_job")
log = logging.getLogger("bench_tuning")


def marketplace(home: Path, *, members: int, jobs: int, days: int, start: str, seed: int, reuse: bool,
                random_fields: list[str]) -> tuple[pa.Table, pa.Table, dict]:
    """(train = days 1..days-1, validation = the last day, timings) of a synthetic marketplace under ``home``,
    built by the pipeline (synth → validate → features) unless ``reuse`` finds it built. The random
    effects' feature bags keep only ``random_fields`` (bench_accuracy's default: the categorical fields)."""
    settings = Settings.from_env(home=home)
    dss = [shift_ds(start, d) for d in range(days)]
    timings: dict[str, float] = {}
    if reuse and all(settings.layout.features("training", ds).is_dir() for ds in dss):
        log.info("reusing the marketplace and features under %s", home)
    else:
        build_marketplace(settings, dss, timings, members=members, jobs=jobs, seed=seed)

    def restrict(table: pa.Table) -> pa.Table:
        if random_fields:
            prefixes = tuple(f"{f}=" for f in random_fields)
            for bag in ("job_features", "member_features"):
                table = table.set_column(table.schema.get_field_index(bag), bag,
                                         filter_bag(table.column(bag), prefixes))
        return table

    train = pa.concat_tables([read_partition(settings.layout.features("training", ds)) for ds in dss[:-1]])
    validation = read_partition(settings.layout.features("training", dss[-1]))
    return restrict(train), restrict(validation), timings


def print_table(report: dict) -> None:
    """The method × trials → best validation AUC table (mean over search seeds, then one row per seed)."""
    checkpoints = report["checkpoints"]
    header = "".join(f"{f'AUC @{c}':>10}" for c in checkpoints)
    print(f"{'method':<16}{header}{'seconds':>10}")
    for method, r in report["results"].items():
        row = "".join(f"{r['mean_best_at'][str(c)]:>10.4f}" for c in checkpoints)
        label = method if len(r["runs"]) == 1 else f"{method} (mean)"
        print(f"{label:<16}{row}{r['mean_seconds']:>10.0f}")
    for method, r in report["results"].items():
        if len(r["runs"]) > 1:
            for run in r["runs"]:
                row = "".join(f"{run['best_at'][str(c)]:>10.4f}" for c in checkpoints)
                label = f"  {method} s{run['seed']}"
                print(f"{label:<16}{row}{run['seconds']:>10.0f}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="20k members x 5k jobs x 6 days, 5 search seeds")
    parser.add_argument("--members", type=int)
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--days", type=int, help="days generated: train on all but the last, validate on it")
    parser.add_argument("--trials", type=int, default=20, help="trials per search (default 20)")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[10, 20],
                        help="report the best validation AUC after these many trials (default 10 20)")
    parser.add_argument("--search-seeds", type=int, help="searches per method, seeds 0..n-1 (default 3; --full 5)")
    parser.add_argument("--box", type=float, nargs=2, default=(-2.0, 3.0), metavar=("LOG10_LOW", "LOG10_HIGH"),
                        help="log10 L2 range of every coordinate (default -2 3)")
    parser.add_argument("--seed", type=int, default=7, help="marketplace seed")
    parser.add_argument("--start", default="2026-03-01")
    parser.add_argument("--home", type=Path, help="data folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="with --home: reuse a marketplace built earlier")
    parser.add_argument("--random-fields", nargs="*", default=["industry", "function", "seniority", "region"],
                        metavar="FIELD", help="profile fields kept in the random effects' bags (as bench_accuracy)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    members = args.members or (20_000 if args.full else 2_000)
    jobs = args.jobs or (5_000 if args.full else 500)
    days = args.days or (6 if args.full else 4)
    seeds = list(range(args.search_seeds or (5 if args.full else 3)))
    checkpoints = sorted({c for c in args.checkpoints if 1 <= c <= args.trials} | {args.trials})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("py4j", "pyspark", "glmix_core.pbcd"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    home = args.home or Path(tempfile.mkdtemp(prefix="jobrec_tuning_"))
    train, validation, timings = marketplace(home, members=members, jobs=jobs, days=days, start=args.start,
                                             seed=args.seed, reuse=args.reuse, random_fields=args.random_fields)
    spec = model_specs(1.0, 10.0, 10.0)["GLMix-Full"]
    box = {name: (10.0 ** args.box[0], 10.0 ** args.box[1]) for name in COORDINATES}
    searches = {"random": random_search, "bayesian": bayesian_search}
    results: dict[str, dict] = {}
    for method, search in searches.items():
        runs = []
        for seed in seeds:
            t0 = time.perf_counter()
            result = search(spec, train, validation, box, trials=args.trials, seed=seed, metric="auc")
            seconds = time.perf_counter() - t0
            curve = result.best_so_far()
            runs.append({
                "seed": seed, "seconds": round(seconds, 1),
                "fit_seconds": round(sum(t["fit_seconds"] for t in result.trials), 1),
                "best_at": {str(c): curve[c - 1] for c in checkpoints}, "best_so_far": curve,
                "best_trial": result.best_trial["trial"], "best_l2": result.best_trial["l2"],
                "trials": [{"l2": t["l2"], "auc": t["value"], "proposal": t["proposal"],
                            "fit_seconds": t["fit_seconds"], "sweeps": t["sweeps"]} for t in result.trials],
            })
            log.info("%s seed %d: best AUC %s in %.0fs", method, seed,
                     {c: round(curve[c - 1], 4) for c in checkpoints}, seconds)
        results[method] = {
            "runs": runs,
            "mean_best_at": {str(c): float(np.mean([r["best_at"][str(c)] for r in runs])) for c in checkpoints},
            "mean_seconds": float(np.mean([r["seconds"] for r in runs])),
        }

    y = validation.column("label").to_numpy()
    report = {
        "members": members, "jobs": jobs, "days": days, "train_days": days - 1, "marketplace_seed": args.seed,
        "train_rows": train.num_rows, "validation_rows": validation.num_rows,
        "validation_positives": int(y.sum()), "box_log10_l2": list(args.box), "coordinates": list(COORDINATES),
        "trials": args.trials, "checkpoints": checkpoints, "search_seeds": seeds, "results": results,
        "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_end": os.getloadavg(),
    }
    print(f"\nL2 tuning of GLMix-Full on the synthetic marketplace: {members} members x {jobs} jobs, train days "
          f"1-{days - 1} ({train.num_rows} rows), validation day {days} ({validation.num_rows} rows, "
          f"{int(y.sum())} positives); log10 L2 in [{args.box[0]:g}, {args.box[1]:g}] for {', '.join(COORDINATES)}; "
          f"{len(seeds)} search seed(s)")
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")
    return report


if __name__ == "__main__":
    main()
