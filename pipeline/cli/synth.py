"""``jobrec synth``: generate a synthetic job marketplace (raw tables + ground truth) under a data folder."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic job marketplace with a known true GLMix model",
        description=(
            "Write raw/{members,jobs,impressions,applies}/ds=D and truth/impressions/ds=D for D in "
            "[start, start + days), then truth/summary.json; print what was written and each day's oracle AUC."
        ),
    )
    parser.add_argument("--members", type=int, default=10_000, help="number of members (default 10000)")
    parser.add_argument("--jobs", type=int, default=2_000, help="job postings over the period (default 2000)")
    parser.add_argument("--days", type=int, default=7, help="number of days (default 7)")
    parser.add_argument("--start", default="2026-01-01", help="first day, YYYY-MM-DD (default 2026-01-01)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--impressions-per-day", type=int, default=None, help="impressions per day (default 3 × members)"
    )
    parser.add_argument("--out", default=None, help="data folder (default $JOBREC_HOME, else ./data)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.synth import generate_marketplace

    home = Settings.from_env(home=args.out).home
    summary = generate_marketplace(
        home,
        members=args.members,
        jobs=args.jobs,
        days=args.days,
        start=args.start,
        seed=args.seed,
        impressions_per_day=args.impressions_per_day,
    )
    params = summary["parameters"]
    print(
        f"wrote {params['days']} days of a synthetic marketplace under {home} "
        f"({params['members']} members, {params['jobs']} jobs, seed {params['seed']}):"
    )
    print("  raw/{members,jobs,impressions,applies}/ds=..., truth/impressions/ds=..., truth/summary.json")
    print(f"  {'ds':<10}  {'active jobs':>11}  {'impressions':>11}  {'applies':>8}  {'rate':>6}  "
          f"{'oracle AUC':>10}  {'day-1 model AUC':>15}")
    for day in summary["days"]:
        print(
            f"  {day['ds']:<10}  {day['active_jobs']:>11}  {day['impressions']:>11}  {day['applies']:>8}  "
            f"{day['apply_rate']:>6.4f}  {_auc(day['oracle_auc']):>10}  {_auc(day['frozen_auc']):>15}"
        )
    return 0


def _auc(value: float | None) -> str:
    """AUC with 4 decimals, ``n/a`` for a day where it is undefined (no applies, or only applies)."""
    return "n/a" if value is None else f"{value:.4f}"
