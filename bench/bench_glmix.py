"""GLMix speed benchmark: PBCD vs scipy L-BFGS on the stacked design, warm-start daily retrain vs a cold fit,
incremental update vs a full warm-start retrain.

Data come from the small GLMix simulator in ``glmix_core.simulate`` (members, jobs, crossed random effects
with random slopes). A model trains on a window of ``--window`` days (rows split evenly); the next day's
window drops the oldest day and adds a new one. Default size: 100k rows, 10k members, 2k jobs; ``--full``: 1M rows, 100k members,
20k jobs (the issue's size). Prints the figures and writes them to ``bench/out/glmix.json``.

    .venv/bin/python bench/bench_glmix.py [--full] [--reference-limit SECONDS]
"""

from __future__ import annotations

import os

# One BLAS thread for both contenders: on a shared 2-core machine OpenBLAS threading makes scipy's L-BFGS-B
# (C port, scipy >= 1.15) more than 10x slower per iteration, which would flatter PBCD (scipy/scipy#26137).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from glmix_core import GLMixSpec, fit, metrics  # noqa: E402
from glmix_core import reference as ref  # noqa: E402
from glmix_core.model import GLMixModel  # noqa: E402
from glmix_core.simulate import full_spec_dict, make_truth, simulate  # noqa: E402

log = logging.getLogger("bench_glmix")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def measured(record: dict, key: str):
    """Wall time and peak resident memory above the starting level (sampled every 20 ms) of a phase."""
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        record[f"{key}_seconds"] = round(time.perf_counter() - start, 3)
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())
        record[f"{key}_peak_extra_rss_mb"] = round((peak[0] - base) / 2**20, 1)


def reference_time_to(problem: ref.StackedProblem, target: float, limit: float) -> dict:
    """Run scipy L-BFGS-B on the stacked design from zero until its objective <= target (or ``limit`` s)."""
    start = time.perf_counter()
    state = {"reached": None, "best": np.inf, "iterations": 0}

    def callback(coef, value):
        state["iterations"] += 1
        state["best"] = min(state["best"], value)
        if value <= target:
            state["reached"] = time.perf_counter() - start
            return True
        return time.perf_counter() - start > limit

    ref.solve_stacked(problem, method="lbfgs", gtol=1e-12, max_iter=1_000_000, callback=callback)
    return {"reached": state["reached"] is not None, "seconds": round(state["reached"] or (time.perf_counter() - start), 3),
            "best_objective": state["best"], "iterations": state["iterations"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1M rows, 100k members, 20k jobs")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--members", type=int)
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--reference-limit", type=float, default=None,
                        help="seconds the stacked L-BFGS may run before we report a lower bound (default 30x PBCD)")
    parser.add_argument("--forgetting", type=float, default=0.9)
    parser.add_argument("--window", type=int, default=4, help="training window in days (rows are split evenly)")
    parser.add_argument("--member-skew", type=float, default=0.0,
                        help="Zipf exponent of member activity (0: every member equally active; 1: a few members "
                             "make most impressions, as on a real marketplace)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "glmix.json"))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    rows = args.rows or (1_000_000 if args.full else 100_000)
    members = args.members or (100_000 if args.full else 10_000)
    jobs = args.jobs or (20_000 if args.full else 2_000)
    out: dict = {"rows": rows, "members": members, "jobs": jobs, "cpu_count": os.cpu_count(),
                 "machine": platform.platform(), "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "python": platform.python_version(),
                 "load_average_start": os.getloadavg()}
    print(f"GLMix benchmark: {rows:,} rows per {args.window}-day training window, {members:,} members, "
          f"{jobs:,} jobs (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")

    window = args.window
    per_day = rows // window
    truth = make_truth(members, jobs, n_global=10, seed=7)
    days = [simulate(truth, per_day, day=d, seed=7, member_skew=args.member_skew)[0] for d in range(window + 1)]
    test_day, test_mean = simulate(truth, per_day, day=window + 1, seed=7, member_skew=args.member_skew)
    y_test = test_day["label"].to_numpy()
    window_a = pa.concat_tables(days[:window])  # the model's training window
    window_b = pa.concat_tables(days[1:])  # the next day's window: one new day in, the oldest out
    spec = GLMixSpec.from_dict(full_spec_dict("logistic", tolerance=1e-6, max_iterations=200))
    precise = GLMixSpec.from_dict(full_spec_dict("logistic", tolerance=1e-10, max_iterations=40))
    out["window_days"] = window

    # 1. full fit (PBCD, design building included) vs stacked L-BFGS reaching the same objective
    full: dict = {}
    with measured(full, "pbcd"):
        model_a = fit(spec, window_a)
    f_pbcd = model_a.metadata["fit"]["objective"]
    full["pbcd_objective"] = f_pbcd
    full["pbcd_sweeps"] = model_a.metadata["fit"]["sweeps"]
    optimum = fit(precise, window_a, warm_start=model_a).metadata["fit"]["objective"]
    full["optimum_objective"] = optimum
    full["pbcd_relative_gap"] = (f_pbcd - optimum) / abs(optimum)
    print(f"[full fit] PBCD {full['pbcd_seconds']:.1f}s, {full['pbcd_sweeps']} sweeps, objective {f_pbcd:.8f} "
          f"(relative gap to optimum {full['pbcd_relative_gap']:.2e}), peak +{full['pbcd_peak_extra_rss_mb']} MB")
    with measured(full, "stacked_design"):
        problem = ref.stacked_problem(spec, window_a)
    full["stacked_columns"] = int(problem.X.shape[1])
    limit = args.reference_limit or max(30 * full["pbcd_seconds"], 60.0)
    with measured(full, "reference"):
        reached = reference_time_to(problem, f_pbcd, limit)
    full["reference"] = reached
    full["speedup"] = reached["seconds"] / full["pbcd_seconds"]
    bound = "" if reached["reached"] else f" (NOT reached within {limit:.0f}s: ratio is a lower bound)"
    print(f"[full fit] stacked L-BFGS ({full['stacked_columns']:,} columns): {reached['seconds']:.1f}s, "
          f"{reached['iterations']} iterations to objective <= {f_pbcd:.8f}{bound}, "
          f"peak +{full['reference_peak_extra_rss_mb']} MB")
    print(f"[full fit] speed-up PBCD vs stacked L-BFGS: {full['speedup']:.1f}x (target >= 5x); "
          f"stacked design build {full['stacked_design_seconds']:.1f}s not counted for the reference")
    out["full_fit"] = full
    del problem

    # 2. next day (window moved by one day): fixed effect locked, random effects warm-started vs cold
    daily: dict = {}
    with measured(daily, "warm"):
        warm = fit(spec, window_b, warm_start=model_a, lock=["global"])
    fixed_only = GLMixModel(spec, {"global": model_a.coordinates["global"]}, {})
    with measured(daily, "cold"):
        cold = fit(spec, window_b, warm_start=fixed_only, lock=["global"])
    daily["warm_objective"] = warm.metadata["fit"]["objective"]
    daily["cold_objective"] = cold.metadata["fit"]["objective"]
    daily["warm_sweeps"] = warm.metadata["fit"]["sweeps"]
    daily["cold_sweeps"] = cold.metadata["fit"]["sweeps"]
    daily["speedup"] = daily["cold_seconds"] / daily["warm_seconds"]
    # what the daily job would cost without the paper's scheme: the whole model refit from zero
    with measured(daily, "cold_full"):
        cold_full = fit(spec, window_b)
    daily["cold_full_objective"] = cold_full.metadata["fit"]["objective"]
    daily["cold_full_sweeps"] = cold_full.metadata["fit"]["sweeps"]
    daily["speedup_vs_full_refit"] = daily["cold_full_seconds"] / daily["warm_seconds"]
    # why warm starts save few sweeps: PBCD converges linearly, so the sweeps saved grow with the log of how
    # much closer the warm start begins (a new day moves every entity's optimum by its new rows)
    first = {name: m.metadata["fit"]["history"][0]["objective"] for name, m in (("warm", warm), ("cold", cold))}
    start_gap = {name: (m.metadata["fit"]["history"][0]["objective"], m.metadata["fit"]["objective"])
                 for name, m in (("warm", warm), ("cold", cold))}
    daily["objective_after_first_update"] = first
    daily["start_gap_ratio"] = ((start_gap["warm"][0] - start_gap["warm"][1])
                                / max(start_gap["cold"][0] - start_gap["cold"][1], 1e-300))
    print(f"[daily retrain] warm start {daily['warm_seconds']:.1f}s ({daily['warm_sweeps']} sweeps, objective "
          f"{daily['warm_objective']:.8f}) vs cold {daily['cold_seconds']:.1f}s ({daily['cold_sweeps']} sweeps, "
          f"objective {daily['cold_objective']:.8f}): {daily['speedup']:.1f}x (target >= 3x); "
          f"peak +{daily['warm_peak_extra_rss_mb']} MB vs +{daily['cold_peak_extra_rss_mb']} MB")
    print(f"[daily retrain] vs refitting the whole model from zero: {daily['cold_full_seconds']:.1f}s "
          f"({daily['cold_full_sweeps']} sweeps): {daily['speedup_vs_full_refit']:.1f}x; after the first update "
          f"the warm start is {daily['start_gap_ratio']:.2f} of the cold start's distance to the optimum")
    out["daily_retrain"] = daily

    # 3. incremental update on the new day only vs the full warm-start retrain on the moved window
    inc: dict = {}
    with measured(inc, "incremental"):
        incremental = fit(spec, days[window], warm_start=model_a, lock=["global"],
                          incremental={"forgetting": args.forgetting})
    inc["retrain_seconds"] = daily["warm_seconds"]
    inc["retrain_peak_extra_rss_mb"] = daily["warm_peak_extra_rss_mb"]
    inc["incremental_next_day_auc"] = metrics.auc(y_test, incremental.score(test_day))
    inc["retrain_next_day_auc"] = metrics.auc(y_test, warm.score(test_day))
    inc["previous_model_next_day_auc"] = metrics.auc(y_test, model_a.score(test_day))
    inc["oracle_next_day_auc"] = metrics.auc(y_test, test_mean)
    inc["speedup"] = inc["retrain_seconds"] / inc["incremental_seconds"]
    print(f"[incremental] update on the new day {inc['incremental_seconds']:.1f}s (peak "
          f"+{inc['incremental_peak_extra_rss_mb']} MB) vs warm retrain on the moved window "
          f"{inc['retrain_seconds']:.1f}s (peak +{inc['retrain_peak_extra_rss_mb']} MB): {inc['speedup']:.1f}x; "
          f"next-day AUC incremental {inc['incremental_next_day_auc']:.4f}, retrain {inc['retrain_next_day_auc']:.4f}, "
          f"previous model {inc['previous_model_next_day_auc']:.4f}, oracle {inc['oracle_next_day_auc']:.4f}")
    out["incremental"] = inc
    out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["load_average_end"] = os.getloadavg()
    print(f"process peak RSS {out['max_rss_mb']} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
