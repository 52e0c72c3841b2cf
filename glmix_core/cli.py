"""The ``glmix`` command: ``fit``, ``score`` and ``evaluate``.

    glmix fit --data PATH --spec SPEC.yaml --out MODEL_DIR [--validation PATH] [--warm-start MODEL_DIR]
              [--lock COORD ...] [--incremental --forgetting 0.9]
    glmix score --model MODEL_DIR --data PATH --out OUT.parquet [--keep COL ...]
    glmix evaluate --model MODEL_DIR --data PATH

PATH is a Parquet file, a folder of Parquet files or a CSV file. Input problems exit with status 2 and a
one-line message naming the problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glmix", description="Fit, score and evaluate GLMix models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress per coordinate and sweep")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit a model and write its directory")
    f.add_argument("--data", required=True, help="training data: Parquet file/folder or CSV")
    f.add_argument("--spec", required=True, help="model spec (YAML or JSON)")
    f.add_argument("--out", required=True, help="model directory to write")
    f.add_argument("--validation", help="validation data; its metrics go into model.json")
    f.add_argument("--warm-start", help="previous model directory to start from")
    f.add_argument("--lock", nargs="*", default=[], help="coordinates kept as in --warm-start")
    f.add_argument("--incremental", action="store_true",
                   help="update random effects on the new data only, with --warm-start as the prior")
    f.add_argument("--forgetting", type=float, default=1.0, help="forgetting factor in (0, 1] for --incremental")
    f.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="local: one process (default); spark: the distributed engine (same spec, same answer)")
    f.add_argument("--master", default=None,
                   help="Spark master with --engine spark (default: $JOBREC_SPARK_MASTER or local[*]; "
                        "ignored under spark-submit, which sets it)")
    f.add_argument("--partitions", type=int, default=None, help="Spark partitions with --engine spark")
    s = sub.add_parser("score", help="score rows; writes a 'score' column in input row order")
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True, help="output Parquet file")
    s.add_argument("--keep", nargs="*", default=[], help="input columns copied to the output")
    s.add_argument("--contributions", action="store_true", help="also write one column per coordinate")
    e = sub.add_parser("evaluate", help="print metrics as JSON")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    return parser


def _fit(args) -> int:
    from . import fit, load_model, load_table
    from .spec import GLMixSpec

    spec = GLMixSpec.from_yaml(args.spec)
    validation = load_table(args.validation) if args.validation else None
    warm = load_model(args.warm_start) if args.warm_start else None
    incremental = {"forgetting": args.forgetting} if args.incremental else None
    meta = {"training_data": str(Path(args.data).resolve())}
    if args.engine == "spark":
        import os

        from .spark_engine import fit_spark, spark_session

        master = args.master or os.environ.get("JOBREC_SPARK_MASTER") or "local[*]"
        model = fit_spark(spec, str(Path(args.data).resolve()), spark=spark_session(master), warm_start=warm,
                          lock=args.lock, incremental=incremental, num_partitions=args.partitions,
                          metadata=meta)
        if validation is not None:
            from . import evaluate

            model.metadata.setdefault("metrics", {})["validation"] = evaluate(model, validation)
    else:
        data = load_table(args.data)
        meta["rows"] = data.num_rows
        model = fit(spec, data, validation=validation, warm_start=warm, lock=args.lock, incremental=incremental,
                    metadata=meta)
    model.save(args.out)
    summary = {"out": args.out, "objective": model.metadata["fit"]["objective"],
               "sweeps": model.metadata["fit"]["sweeps"], "converged": model.metadata["fit"]["converged"]}
    if validation is not None:
        summary["validation"] = model.metadata["metrics"]["validation"]
    print(json.dumps(summary, default=str))
    return 0


def _score(args) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from . import load_model, load_table
    from .data import require_columns

    model = load_model(args.model)
    data = load_table(args.data)
    require_columns(data, args.keep, "--keep")
    columns = {name: data.column(name) for name in args.keep}
    columns["score"] = pa.array(model.score(data))
    if args.contributions:
        for name, part in model.contributions(data).items():
            columns[f"score_{name}"] = pa.array(part)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), out)
    print(json.dumps({"out": str(out), "rows": data.num_rows}))
    return 0


def _evaluate(args) -> int:
    from . import evaluate, load_model, load_table

    print(json.dumps(evaluate(load_model(args.model), load_table(args.data)), indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``glmix`` console script; returns the exit status."""
    from .data import DataError
    from .model import ModelError
    from .spec import SpecError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    handler = {"fit": _fit, "score": _score, "evaluate": _evaluate}[args.command]
    try:
        return handler(args)
    except (DataError, SpecError, ModelError, ValueError, FileNotFoundError) as exc:
        print(f"glmix {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
