"""``jobrec validate --ds``: check a day's raw partitions, quarantine bad rows, write the clean copies;
``jobrec land --ds``: mark a day's raw partitions as completely landed (or say which are not)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a day's raw partitions against their contracts and quarantine bad rows",
        description=(
            "Check raw/<table>/ds=D against the schemas of docs/architecture.md; write rejected rows with a "
            "reason to quarantine/<table>/ds=D and accepted rows to validated/<table>/ds=D. Fails (exit 2) "
            "on a missing or unreadable file, a schema break, when a table's bad fraction exceeds "
            "JOBREC_MAX_BAD_FRACTION, or when a table has no clean rows (unless --allow-empty); a failed run "
            "removes the day's validated data, so features are never built from stale clean rows."
        ),
    )
    parser.add_argument("--ds", required=True, help="day to validate, YYYY-MM-DD")
    parser.add_argument("--home", default=None, help="data folder (default $JOBREC_HOME, else ./data)")
    parser.add_argument(
        "--max-bad-fraction", type=float, default=None, help="override JOBREC_MAX_BAD_FRACTION for this run"
    )
    parser.add_argument(
        "--allow-empty", action="store_true", default=None,
        help="let tables with no rows pass: an empty day is expected (JOBREC_ALLOW_EMPTY_DAY for every run)",
    )
    parser.set_defaults(func=run)

    land = subparsers.add_parser(
        "land",
        help="mark a day's raw partitions as landed (_SUCCESS), or --check which have not landed",
        description=(
            "The DAGs start by waiting until raw/<table>/ds=D/_SUCCESS exists for every raw table (members, "
            "jobs, impressions, applies): a producer writes that empty marker once the day's files are "
            "complete (Spark and Hadoop jobs do on commit; `jobrec synth` does). `jobrec land --ds D` writes "
            "the markers for files landed by other means; `--check` only lists what is missing (exit 1)."
        ),
    )
    land.add_argument("--ds", required=True, help="day, YYYY-MM-DD")
    land.add_argument("--home", default=None, help="data folder (default $JOBREC_HOME, else ./data)")
    land.add_argument("--check", action="store_true", help="only report which tables have not landed")
    land.set_defaults(func=run_land)


def run_land(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.landing import mark_landed, missing_raw_partitions

    settings = Settings.from_env(home=args.home)
    if not args.check:
        for marker in mark_landed(args.ds, settings):
            print(f"landed {marker}")
    missing = missing_raw_partitions(args.ds, settings)
    for item in missing:
        print(f"not landed: {item}")
    if not missing:
        print(f"ds={args.ds}: every raw table has landed under {settings.layout.raw_dir()}")
    return 1 if missing else 0


def run(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.validation import validate_day

    settings = Settings.from_env(
        home=args.home, max_bad_fraction=args.max_bad_fraction, allow_empty_day=args.allow_empty
    )
    report = validate_day(args.ds, settings)
    print(f"validated {report['ds']} under {settings.home}: {report['rows']} rows, "
          f"{report['quarantined']} quarantined (max bad fraction {report['max_bad_fraction']})")
    for table, counts in report["tables"].items():
        reasons = ", ".join(f"{r}={n}" for r, n in counts["reasons"].items()) or "none"
        print(f"  {table:<12} {counts['rows']:>9} rows  {counts['clean']:>9} clean  "
              f"{counts['quarantined']:>6} quarantined ({counts['bad_fraction']:.4%})  reasons: {reasons}")
    return 0
