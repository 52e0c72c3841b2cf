"""``jobrec features --ds``: build the day's vocab, member/job profiles and training examples (PySpark)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "features",
        help="build a day's feature vocab, member/job TF-IDF profiles and labelled training examples",
        description=(
            "Read the day's validated (else raw) members, jobs, impressions and applies; write "
            "features/{vocab,member_profiles,job_profiles,training}/ds=D atomically. Runs on Spark "
            "(JOBREC_SPARK_MASTER, default local[*])."
        ),
    )
    parser.add_argument("--ds", required=True, help="day to build, YYYY-MM-DD")
    parser.add_argument("--home", default=None, help="data folder (default $JOBREC_HOME, else ./data)")
    parser.add_argument("--master", default=None, help="Spark master URL (overrides JOBREC_SPARK_MASTER)")
    parser.add_argument("--json", action="store_true", help="print the run report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.features import build_features

    settings = Settings.from_env(home=args.home, spark_master=args.master)
    report = build_features(args.ds, settings)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(
            f"features {report['ds']} under {settings.home}: {report['members']} members, {report['jobs']} jobs, "
            f"{report['terms']} terms ({report['new_terms']} new), {report['training_rows']} training rows "
            f"({report['positives']} positive) in {report['seconds']}s"
        )
    return 0
