"""The ``jobrec`` command line: one subcommand per pipeline area.

Each area lives in its own module under :mod:`pipeline.cli` exposing ``register(subparsers)``, which adds its
subcommands and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit
code). Area modules keep heavy imports (Spark, Whoosh, Redis, Airflow) inside their handlers so that
``jobrec --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order here is the order of the help listing: the data flow, raw → store.
AREA_MODULES = (
    "pipeline.cli.synth",
    "pipeline.cli.validate",
    "pipeline.cli.features",
    "pipeline.cli.train",
    "pipeline.cli.retrieval",
    "pipeline.cli.rescore",
    "pipeline.cli.explain",
    "pipeline.cli.serving",
    "pipeline.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobrec",
        description=(
            "jobrec: an end-to-end GLMix job recommendation pipeline. Data lives under $JOBREC_HOME "
            "(default ./data); REDIS_URL selects the serving store (unset: an embedded Redis); "
            "JOBREC_SPARK_MASTER selects Spark (default local[*])."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in AREA_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # area not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # Expected user errors: say what is wrong, no traceback.
        print(f"jobrec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
