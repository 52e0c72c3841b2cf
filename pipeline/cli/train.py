"""``jobrec train daily|full --ds`` and ``jobrec gate --ds``: the training tasks of the DAGs, by hand."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train the daily (random effects) or the full GLMix model")
    kinds = train.add_subparsers(dest="kind", metavar="KIND", required=True)

    daily = kinds.add_parser("daily", help="refit the random effects for a day, fixed effect locked")
    daily.add_argument("--ds", required=True, help="the day, YYYY-MM-DD (needs its training features)")
    daily.add_argument("--mode", choices=("incremental", "warm_start"), default="incremental",
                       help="incremental (default): the day's rows with the previous model's posterior as the "
                            "prior; warm_start: refit on the day's rows alone from the previous coefficients")
    daily.add_argument("--engine", choices=("local", "spark"), default="local")
    daily.set_defaults(func=_train_daily)

    full = kinds.add_parser("full", help="fit the full GLMix on a window, gate it and promote it")
    full.add_argument("--ds", required=True, help="last day of the training window, YYYY-MM-DD")
    full.add_argument("--window-days", type=int, default=7)
    full.add_argument("--l2-search", choices=("grid", "bayesian"), default="grid",
                      help="grid (default): try each --l2-grid value for all coordinates at once; bayesian: one L2 "
                           "per coordinate by Bayesian search on the holdout, starting from the grid values")
    full.add_argument("--tuning-trials", type=int, default=12, help="fits of the Bayesian search (default 12)")
    full.add_argument("--l2-range", default="0.01:1000", metavar="LO:HI",
                      help="log-uniform L2 box of the Bayesian search, per coordinate (default 0.01:1000)")
    full.add_argument("--l2-grid", default="0.1,1,10",
                      help="comma-separated L2 values: the grid, and the Bayesian search's start (default 0.1,1,10)")
    full.add_argument("--engine", choices=("local", "spark"), default="local")
    full.add_argument("--margin", type=float, default=0.01, help="gate: max AUC drop vs the promoted model")
    full.add_argument("--no-promote", action="store_true", help="train and gate only")
    full.set_defaults(func=_train_full)

    gate = subparsers.add_parser("gate", help="check a day's model against its parent on the day's holdout")
    gate.add_argument("--ds", required=True)
    gate.add_argument("--margin", type=float, default=0.01, help="max holdout AUC drop (default 0.01)")
    gate.add_argument("--min-coverage", type=float, default=0.5)
    gate.set_defaults(func=_gate)


def _print(result: dict) -> None:
    print(json.dumps(result, indent=2, sort_keys=True, default=str))


def _train_daily(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.training import train_daily

    _print(train_daily(args.ds, Settings.from_env(), mode=args.mode, engine=args.engine))
    return 0


def _train_full(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.training import gate_full, prepare_window, promote, train_full

    try:
        grid = [float(v) for v in args.l2_grid.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"--l2-grid must be comma-separated numbers; got {args.l2_grid!r}") from exc
    try:
        low, high = (float(v) for v in args.l2_range.split(":"))
    except ValueError as exc:
        raise ValueError(f"--l2-range must be LO:HI, e.g. 0.01:1000; got {args.l2_range!r}") from exc
    settings = Settings.from_env()
    result = {"prepare_window": prepare_window(args.ds, settings, window_days=args.window_days)}
    result["train_full"] = train_full(
        args.ds, settings, window_days=args.window_days, l2_grid=grid, engine=args.engine,
        l2_search=args.l2_search, tuning_trials=args.tuning_trials, l2_range=(low, high),
    )
    result["gate"] = gate_full(args.ds, settings, margin=args.margin, window_days=args.window_days)
    if not args.no_promote:
        result["promote"] = promote(args.ds, settings)
    _print(result)
    return 0


def _gate(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.training import GateFailedError, gate

    try:
        _print(gate(args.ds, Settings.from_env(), margin=args.margin, min_coverage=args.min_coverage))
    except GateFailedError as exc:
        print(f"jobrec gate: FAILED: {exc}")
        return 1
    return 0
