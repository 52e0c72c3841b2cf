"""The ``glmix`` command: ``fit``, ``score``, ``evaluate`` and ``tune``.

    glmix fit --data PATH --spec SPEC.yaml --out MODEL_DIR [--validation PATH] [--warm-start MODEL_DIR]
              [--lock COORD ...] [--incremental --forgetting 0.9]
    glmix fit --data PATH --formula "y ~ x1 + (1 + genre_* | user)" [--task logistic] [--l2 1 | --l2 user=10 ...]
              --out MODEL_DIR [...]
    glmix score --model MODEL_DIR --data PATH --out OUT.parquet [--keep COL ...]
    glmix evaluate --model MODEL_DIR --data PATH [--evaluators NAME ...] [--group-output OUT.parquet]
    glmix tune --data PATH --validation PATH --spec SPEC.yaml --out DIR [--method grid|random|bayesian]
               [--trials N] --l2 COORD=LO:HI ... (or COORD=V1,V2,... for grid) [--metric auc]
               [--output-mode best|all] [--seed 0]

``--evaluators`` (fit: overrides the spec's list; evaluate: prints just these) takes names such as ``auc``,
``aupr``, ``rmse``, ``logistic_loss``, ``auc:member_id`` or ``precision@10:member_id``.

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
    how = f.add_mutually_exclusive_group(required=True)
    how.add_argument("--spec", help="model spec (YAML or JSON; may hold 'formula:' instead of 'coordinates:')")
    how.add_argument("--formula", help="lme4-style formula, e.g. 'y ~ x1 + genre_* + (1 + age | user)'")
    f.add_argument("--task", default=None, help="task with --formula (default logistic)")
    f.add_argument("--l2", nargs="+", default=None, metavar="L2",
                   help="with --formula: one number for every coordinate, or NAME=NUMBER items keyed by "
                        "coordinate name or entity column")
    f.add_argument("--out", required=True, help="model directory to write")
    f.add_argument("--validation", help="validation data; its metrics go into model.json")
    f.add_argument("--warm-start", help="previous model directory to start from")
    f.add_argument("--lock", nargs="*", default=[], help="coordinates kept as in --warm-start")
    f.add_argument("--incremental", action="store_true",
                   help="update random effects on the new data only, with --warm-start as the prior")
    f.add_argument("--forgetting", type=float, default=1.0, help="forgetting factor in (0, 1] for --incremental")
    f.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="local: one process (default); spark: rows and per-entity solves on Spark, the same PBCD "
                        "driver (same spec, same answer)")
    f.add_argument("--master", default=None,
                   help="Spark master with --engine spark (default: $JOBREC_SPARK_MASTER or local[*]; "
                        "ignored under spark-submit, which sets it)")
    f.add_argument("--partitions", type=int, default=None, help="Spark partitions with --engine spark")
    f.add_argument("--evaluators", nargs="+", default=None, metavar="NAME",
                   help="validation evaluators computed after every coordinate update, overriding the spec's "
                        "(the first picks the best model seen), e.g. auc auc:member_id precision@10:member_id")
    s = sub.add_parser("score", help="score rows; writes a 'score' column in input row order")
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True, help="output Parquet file")
    s.add_argument("--keep", nargs="*", default=[], help="input columns copied to the output")
    s.add_argument("--contributions", action="store_true", help="also write one column per coordinate")
    e = sub.add_parser("evaluate", help="print metrics as JSON")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--evaluators", nargs="+", default=None, metavar="NAME",
                   help="print just these metrics, e.g. auc aupr auc:member_id precision@5:member_id "
                        "(default: the standard set)")
    e.add_argument("--group-output", default=None, metavar="OUT.parquet",
                   help="also write one row per group (group id, rows, positives, auc, precision@k) of the "
                        "grouped evaluators (default: auc and precision@5/10 by each random effect's entity)")
    t = sub.add_parser(
        "tune", help="search per-coordinate L2 on validation data (grid, random or Bayesian)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit the spec once per trial with different per-coordinate L2 (prior precision), each fit\n"
                    "warm-started from the previous trial, score --validation, and keep the best model by\n"
                    "--metric.\n\n"
                    "  grid:     every combination of --l2 COORD=V1,V2,... lists (--trials is ignored)\n"
                    "  random:   --trials points drawn log-uniformly in --l2 COORD=LO:HI ranges (seeded)\n"
                    "  bayesian: a Gaussian process over log10 L2 in the same box; the first points are random\n"
                    "            search's (same --seed), then each trial maximises expected improvement\n\n"
                    "Writes DIR/best/ (the best model), DIR/trial-NNN/ for every trial with --output-mode all,\n"
                    "DIR/trials.jsonl (one line per finished trial) and DIR/trials.json (summary + trials), and\n"
                    "prints a summary JSON.",
        epilog="examples:\n"
               "  glmix tune --data train.parquet --validation valid.parquet --spec spec.yaml --out tuning/ \\\n"
               "      --method bayesian --trials 20 --l2 global=0.01:1000 per_member=0.01:1000 per_job=0.01:1000\n"
               "  glmix tune ... --method grid --l2 per_member=0.1,1,10 per_job=1,10 --metric logistic_loss")
    t.add_argument("--data", required=True, help="training data: Parquet file/folder or CSV")
    t.add_argument("--validation", required=True, help="validation data the metric is computed on")
    t.add_argument("--spec", required=True, help="model spec (YAML or JSON); its l2 values are the defaults "
                                                  "of the coordinates not given in --l2")
    t.add_argument("--out", required=True, help="output folder (best/, trial-NNN/, trials.json, trials.jsonl)")
    t.add_argument("--method", choices=("grid", "random", "bayesian"), default="bayesian",
                   help="search method (default bayesian)")
    t.add_argument("--trials", type=int, default=20, help="number of fits for random/bayesian (default 20)")
    t.add_argument("--l2", nargs="+", required=True, metavar="COORD=RANGE",
                   help="per searched coordinate: COORD=LO:HI (random/bayesian: log-uniform range; COORD=V pins "
                        "a value) or COORD=V1,V2,... (grid list)")
    t.add_argument("--metric", default="auc",
                   help="validation metric to pick by: an evaluator name (auc, aupr, rmse, logistic_loss, "
                        "auc:<id column>, precision@k:<id column>, ...) or an 'evaluate' key (log_loss, "
                        "per_<col>_auc, ...); higher is better for auc/aupr/precision, lower for losses/rmse "
                        "(default auc)")
    t.add_argument("--output-mode", choices=("best", "all"), default="best",
                   help="best: write only the best model to DIR/best/; all: also every trial's model to "
                        "DIR/trial-NNN/ (default best)")
    t.add_argument("--seed", type=int, default=0, help="seed of the random points (default 0)")
    t.add_argument("--initial", type=int, default=None,
                   help="bayesian: random points before the Gaussian process takes over "
                        "(default max(3, coordinates + 1))")
    t.add_argument("--warm-start", help="model directory the first trial starts from")
    t.add_argument("--lock", nargs="*", default=[], help="coordinates kept as in --warm-start (not tuned)")
    return parser


def _with_evaluators(spec, args):
    """``spec`` with ``--evaluators`` (when given) replacing its evaluator list."""
    import dataclasses

    return spec if args.evaluators is None else dataclasses.replace(spec, evaluators=tuple(args.evaluators))


def _fit(args) -> int:
    from . import fit, load_model, load_table
    from .formula import FormulaSpec, parse_l2_option, read_spec, schema_of

    if args.spec and (args.task or args.l2):
        raise ValueError("--task and --l2 go with --formula; with --spec set them in the spec file")
    if args.formula:
        source = FormulaSpec.parse(args.formula, task=args.task or "logistic", l2=parse_l2_option(args.l2))
    else:
        source = read_spec(args.spec)  # a GLMixSpec, or a FormulaSpec resolved against the data's columns
    spec = source if not isinstance(source, FormulaSpec) else None
    if args.evaluators is not None:
        from .evaluators import parse_all

        parse_all(args.evaluators)
    validation = load_table(args.validation) if args.validation else None
    warm = load_model(args.warm_start) if args.warm_start else None
    incremental = {"forgetting": args.forgetting} if args.incremental else None
    meta = {"training_data": str(Path(args.data).resolve())}
    engine_options: dict = {"engine": args.engine}
    if args.engine == "spark":
        import os

        from .spark_engine import spark_session

        master = args.master or os.environ.get("JOBREC_SPARK_MASTER") or "local[*]"
        engine_options.update(spark=spark_session(master), num_partitions=args.partitions)
        data = str(Path(args.data).resolve())  # Spark reads it (a local path is read by pyarrow in the tasks)
        if spec is None:
            spec = source.resolve(schema_of(args.data))
            meta["formula"] = source.formula.text
    else:
        data = load_table(args.data)
        meta["rows"] = data.num_rows
        if spec is None:
            spec = source.resolve(data)
            meta["formula"] = source.formula.text
    spec = _with_evaluators(spec, args)
    model = fit(spec, data, validation=validation, warm_start=warm, lock=args.lock, incremental=incremental,
                metadata=meta, **engine_options)
    model.save(args.out)
    summary = {"out": args.out, "objective": model.metadata["fit"]["objective"],
               "sweeps": model.metadata["fit"]["sweeps"], "converged": model.metadata["fit"]["converged"]}
    if validation is not None:
        summary["validation"] = model.metadata["metrics"]["validation"]
    if model.metadata["fit"].get("best") is not None:
        summary["best"] = model.metadata["fit"]["best"]
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

    if args.evaluators is not None:
        from .evaluators import parse_all

        parse_all(args.evaluators)
    model = load_model(args.model)
    data = load_table(args.data)
    result = evaluate(model, data, evaluators=args.evaluators)
    if args.group_output:
        import pyarrow.parquet as pq

        from .evaluation import group_metrics

        groups = group_metrics(model, data, args.evaluators)
        out = Path(args.group_output)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(groups, out)
        result["group_output"] = {"path": str(out), "rows": groups.num_rows}
    print(json.dumps(result, indent=2, default=str))
    return 0


def _tune(args) -> int:
    from . import load_model, load_table
    from .formula import FormulaSpec, read_spec
    from .tuning import parse_l2, tune

    source = read_spec(args.spec)  # a GLMixSpec, or a FormulaSpec resolved against the training columns
    l2 = parse_l2(args.l2, args.method)
    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1; got {args.trials}")
    train, validation = load_table(args.data), load_table(args.validation)
    spec = source.resolve(train) if isinstance(source, FormulaSpec) else source
    warm = load_model(args.warm_start) if args.warm_start else None
    options = {"n_initial": args.initial} if args.method == "bayesian" else {}
    result = tune(spec, train, validation, method=args.method, l2=l2, trials=args.trials, metric=args.metric,
                  seed=args.seed, warm_start=warm, lock=args.lock, out=args.out, output_mode=args.output_mode,
                  **options)
    print(json.dumps(result.summary(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``glmix`` console script; returns the exit status."""
    from .data import DataError
    from .model import ModelError
    from .spec import SpecError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    handler = {"fit": _fit, "score": _score, "evaluate": _evaluate, "tune": _tune}[args.command]
    try:
        return handler(args)
    except (DataError, SpecError, ModelError, ValueError, FileNotFoundError) as exc:
        print(f"glmix {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
