"""``jobrec rescore --ds``: score each member's candidates with the GLMix model and keep the top N."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rescore",
        help="re-score the day's candidates with the full GLMix model and write the top N per member",
        description=(
            "Read candidates/ds=D, the day's member/job profiles and a GLMix model directory (default "
            "models/daily/ds=D); drop expired and already-applied jobs, cap jobs per company, keep the top N "
            "and write recommendations/ds=D (member_id, rank, job_id, score, model_version, then the score's "
            "parts part_global + part_member + part_job = score, with part_main, part_cross and cos_<field> "
            "inside the global part; `jobrec explain MEMBER JOB --ds D` prints every term of a pair)."
        ),
    )
    parser.add_argument("--ds", required=True, help="day to re-score, YYYY-MM-DD")
    parser.add_argument("--home", default=None, help="data folder (default $JOBREC_HOME, else ./data)")
    parser.add_argument("--top-n", type=int, default=None, help="jobs kept per member (default JOBREC_TOP_N)")
    parser.add_argument("--model", default=None, help="GLMix model directory (default models/daily/ds=D)")
    parser.add_argument(
        "--max-per-company", type=int, default=None,
        help="at most this many jobs of one company per member (default 10; 0 = no cap)",
    )
    parser.add_argument(
        "--engine", choices=["local", "spark"], default="local",
        help="local: forked worker processes on this machine; spark: member partitions on the Spark cluster of "
        "JOBREC_SPARK_MASTER (same recommendations)",
    )
    parser.add_argument(
        "--processes", type=int, default=None, help="worker processes of the local engine (default: cores, at most 4)"
    )
    parser.add_argument("--json", action="store_true", help="print the run report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.scoring import DEFAULT_MAX_PER_COMPANY, rescore

    settings = Settings.from_env(home=args.home)
    cap = DEFAULT_MAX_PER_COMPANY if args.max_per_company is None else (args.max_per_company or None)
    report = rescore(args.ds, settings, top_n=args.top_n, model_dir=args.model, max_per_company=cap,
                     engine=args.engine, processes=args.processes)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(
            f"rescore {report['ds']} ({report['engine']}) with model {report['model_version']}: "
            f"{report['members']} members "
            f"({report['members_on_fallback']} on the fallback pool), {report['pairs_scored']} pairs, "
            f"{report['recommendations']} recommendations in {report['seconds']}s"
        )
    return 0
