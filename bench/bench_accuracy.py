"""Accuracy on the synthetic marketplace: the paper's model comparison next to the oracle AUC.

Generates a marketplace, validates it and builds features for every day with the pipeline's own code
(`pipeline.synth`, `pipeline.validation`, `pipeline.features`), trains on all days but the last and reports
the last day's AUC of:

- LR-Cosine: a logistic regression on the per-field cosine similarities only (the first stage's model);
- LR-Full: a logistic regression on every global feature;
- GLMix-Member: global + per-member random effect (on job features);
- GLMix-Job: global + per-job random effect (on member features);
- GLMix-Full: global + both random effects;

next to the oracle AUC (the true apply probabilities of the generating model on the test day).

    .venv/bin/python bench/bench_accuracy.py            # small: 4k members x 1k jobs x 6 days
    .venv/bin/python bench/bench_accuracy.py --full     # 100k members x 20k jobs x 8 days
    .venv/bin/python bench/bench_accuracy.py --tune 12  # each model's L2 by Bayesian search on day k-1

``--decompose`` also splits GLMix-Full's gap to the oracle in two, by refitting it with one half of the truth
given as an offset: the true global logit (so only the random effects are estimated) and the true random-effect
logit (so only the global coefficients are estimated). Whichever refit stays far from the oracle holds the gap.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from glmix_core import GLMixSpec, fit, metrics
from pipeline.config import Settings
from pipeline.storage import read_partition, shift_ds

OUT = Path(__file__).resolve().parent / "out" / "accuracy.json"


def filter_bag(bag: pa.ChunkedArray, prefixes: tuple[str, ...]) -> pa.Array:
    """A feature bag restricted to the entries whose name starts with one of ``prefixes``."""
    bag = bag.combine_chunks()
    items = pc.list_flatten(bag)
    names = items.field("name")
    keep = pc.starts_with(names, prefixes[0])
    for prefix in prefixes[1:]:
        keep = pc.or_(keep, pc.starts_with(names, prefix))
    parents = pc.list_parent_indices(bag).to_numpy()
    counts = np.bincount(parents[keep.to_numpy(zero_copy_only=False)], minlength=len(bag))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), items.filter(keep))


def build_marketplace(settings: Settings, dss: list[str], timings: dict[str, float], **synth) -> dict:
    """Generate the synthetic marketplace for days ``dss`` under ``settings.home`` (``synth``: keyword
    arguments of ``generate_marketplace``), then validate and build features for every day with the pipeline's
    own code; adds ``synth`` and ``features`` seconds to ``timings`` and returns the generator's summary."""
    from pipeline.features import build_features
    from pipeline.synth import generate_marketplace
    from pipeline.validation import validate_day

    t0 = time.perf_counter()
    summary = generate_marketplace(settings.home, days=len(dss), start=dss[0], **synth)
    timings["synth"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for ds in dss:
        validate_day(ds, settings)
        build_features(ds, settings)
    timings["features"] = time.perf_counter() - t0
    return summary


def tuned_spec(spec: GLMixSpec, fit_part: pa.Table, validation: pa.Table, trials: int,
               seed: int) -> tuple[GLMixSpec, dict]:
    """``spec`` with the L2 of every coordinate chosen by Bayesian search (fit on ``fit_part``, validate on
    ``validation`` by AUC). Returns the spec and ``{"l2", "validation_auc", "trials", "seconds"}``."""
    from glmix_core.tuning import bayesian_search

    box = {c.name: (1e-2, 1e3) for c in spec.coordinates}
    t0 = time.perf_counter()
    result = bayesian_search(spec, fit_part, validation, box, trials=trials, seed=seed, metric="auc")
    best = result.best_trial
    return spec.with_l2(best["l2"]), {"l2": best["l2"], "validation_auc": best["value"], "trials": trials,
                                      "seconds": round(time.perf_counter() - t0, 1)}


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def truth_columns(table: pa.Table, truth: pa.Table, *names: str) -> list[np.ndarray]:
    """The generator's truth columns ``names`` (e.g. ``p_apply``) aligned to ``table``'s rows by impression ID."""
    order = pc.index_in(table.column("impression_id"), value_set=truth.column("impression_id")).to_numpy()
    return [truth.column(name).to_numpy()[order] for name in names]


def with_truth_offsets(table: pa.Table, truth: pa.Table) -> pa.Table:
    """``table`` plus the generating model's ``true_global`` logit (fixed part with the intercept) and
    ``true_random`` logit (the random effects' part) per row, matched by impression ID."""
    p_apply, p_global = truth_columns(table, truth, "p_apply", "p_global")
    full, fixed = logit(p_apply), logit(p_global)
    return table.append_column("true_global", pa.array(fixed)).append_column("true_random", pa.array(full - fixed))


def decomposition_specs(full: GLMixSpec) -> dict[str, GLMixSpec]:
    """GLMix-Full refit with half of the truth as offset: ``random effects only`` keeps an unpenalised global
    intercept (the offset's calibration) and the random effects; ``global only`` keeps the global coordinate."""
    raw = full.to_dict()
    coords = {c["name"]: c for c in raw["coordinates"]}
    intercept_only = dict(coords["global"], features=[], feature_bags=[], l2=0.0)
    return {
        "random effects only (true global offset)": GLMixSpec.from_dict(
            dict(raw, offset="true_global", coordinates=[intercept_only, coords["per_member"], coords["per_job"]])),
        "global only (true random-effect offset)": GLMixSpec.from_dict(
            dict(raw, offset="true_random", coordinates=[coords["global"]])),
    }


def model_specs(l2_fixed: float, l2_member: float, l2_job: float, max_sweeps: int = 100) -> dict[str, GLMixSpec]:
    fixed = {"name": "global", "type": "fixed", "feature_bags": ["global"], "intercept": True, "l2": l2_fixed}
    member = {"name": "per_member", "type": "random", "entity": "member_id", "feature_bags": ["job_features"],
              "intercept": True, "l2": l2_member}
    job = {"name": "per_job", "type": "random", "entity": "job_id", "feature_bags": ["member_features"],
           "intercept": True, "l2": l2_job}
    cosine = dict(fixed, feature_bags=["cosine"])
    base = {"task": "logistic", "response": "label", "max_iterations": max_sweeps, "tolerance": 1e-6}
    return {
        "LR-Cosine": GLMixSpec.from_dict(dict(base, coordinates=[cosine])),
        "LR-Full": GLMixSpec.from_dict(dict(base, coordinates=[fixed])),
        "GLMix-Member": GLMixSpec.from_dict(dict(base, coordinates=[fixed, member])),
        "GLMix-Job": GLMixSpec.from_dict(dict(base, coordinates=[fixed, job])),
        "GLMix-Full": GLMixSpec.from_dict(dict(base, coordinates=[fixed, member, job])),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="100k members x 20k jobs x 8 days")
    parser.add_argument("--members", type=int)
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--days", type=int)
    parser.add_argument("--impressions-per-member", type=float, default=3.0,
                        help="impressions per member per day (default 3, the generator's default); more data per "
                             "entity lets the random effects approach the truth")
    parser.add_argument("--max-member-impressions", type=float, default=None,
                        help="the logging policy's cap on a member's expected impressions/day (default 20)")
    parser.add_argument("--activity-sigma", type=float, default=None,
                        help="log-normal spread of member activity (default 2.5: most members are rarely active)")
    parser.add_argument("--max-sweeps", type=int, default=100, help="PBCD sweeps at most (tolerance 1e-6)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", default="2026-03-01")
    parser.add_argument("--home", type=Path, help="data folder (default: a temporary one)")
    parser.add_argument("--l2", type=float, nargs=3, default=(1.0, 10.0, 10.0), metavar=("FIXED", "MEMBER", "JOB"),
                        help="L2 per coordinate (default 1 10 10: picked on a validation day)")
    parser.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                        help="choose each model's L2 by Bayesian search (glmix_core.tuning) with this many trials: "
                             "train on days 1..k-2, validate on day k-1 (log10 L2 in [-2, 3] per coordinate), then "
                             "refit on days 1..k-1 with the best L2 and test on day k (default 0: use --l2)")
    parser.add_argument("--decompose", action="store_true",
                        help="also refit GLMix-Full with the true global / true random-effect logit as offset, to "
                             "show which half of the model holds the gap to the oracle")
    parser.add_argument("--reuse", action="store_true",
                        help="with --home: reuse a marketplace and features built by an earlier run")
    parser.add_argument("--random-fields", nargs="*", default=["industry", "function", "seniority", "region"],
                        metavar="FIELD",
                        help="restrict the random effects' feature bags to these profile fields (default: the "
                             "categorical ones; pass no value for every field, which is ~20x slower to fit)")
    args = parser.parse_args(argv)
    members = args.members or (100_000 if args.full else 4_000)
    jobs = args.jobs or (20_000 if args.full else 1_000)
    days = args.days or (8 if args.full else 6)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from pipeline.synth.policy import PolicyParameters

    policy_changes = {k: v for k, v in (("max_member_impressions", args.max_member_impressions),
                                        ("activity_sigma", args.activity_sigma)) if v is not None}
    policy = dataclasses.replace(PolicyParameters(), **policy_changes)
    home = args.home or Path(tempfile.mkdtemp(prefix="jobrec_accuracy_"))
    settings = Settings.from_env(home=home)
    timings: dict[str, float] = {}
    dss = [shift_ds(args.start, d) for d in range(days)]
    built = all(settings.layout.features("training", ds).is_dir() for ds in dss)
    if args.reuse and built:
        summary = json.loads((home / "truth" / "summary.json").read_text())
        logging.info("reusing the marketplace and features under %s", home)
    else:
        summary = build_marketplace(settings, dss, timings, members=members, jobs=jobs, seed=args.seed,
                                    impressions_per_day=int(round(args.impressions_per_member * members)),
                                    policy_params=policy)

    train_days = [read_partition(settings.layout.features("training", ds)) for ds in dss[:-1]]
    test = read_partition(settings.layout.features("training", dss[-1]))
    def with_bags(table: pa.Table) -> pa.Table:
        table = table.append_column("cosine", filter_bag(table.column("global"), ("cos:",)))
        if args.random_fields:
            prefixes = tuple(f"{f}=" for f in args.random_fields)
            for bag in ("job_features", "member_features"):
                table = table.set_column(table.schema.get_field_index(bag), bag,
                                         filter_bag(table.column(bag), prefixes))
        return table

    train_days, test = [with_bags(day) for day in train_days], with_bags(test)
    train = pa.concat_tables(train_days)
    truth = read_partition(settings.layout.truth(dss[-1]))
    (p_true,) = truth_columns(test, truth, "p_apply")
    y_test = test.column("label").to_numpy()
    oracle = metrics.auc(y_test, p_true)
    # the truth without its random effects: the ceiling of a model with global features only
    oracle_global = (metrics.auc(y_test, truth_columns(test, truth, "p_global")[0])
                     if "p_global" in truth.column_names else None)

    results: dict[str, dict] = {}
    final_specs: dict[str, GLMixSpec] = {}
    for name, spec in model_specs(*args.l2, max_sweeps=args.max_sweeps).items():
        tuned = None
        if args.tune:
            spec, tuned = tuned_spec(spec, pa.concat_tables(train_days[:-1]), train_days[-1], args.tune, args.seed)
            logging.info("%s: L2 %s chosen on validation day %d (AUC %.4f)", name, tuned["l2"], days - 1,
                         tuned["validation_auc"])
        final_specs[name] = spec
        t0 = time.perf_counter()
        model = fit(spec, train)
        seconds = time.perf_counter() - t0
        score = model.score(test)
        results[name] = {"test_auc": metrics.auc(y_test, score), "fit_seconds": round(seconds, 2),
                         "sweeps": model.metadata["fit"]["sweeps"], "converged": model.metadata["fit"]["converged"]}
        if tuned is not None:
            results[name]["tuned"] = tuned
        logging.info("%s: test AUC %.4f (fit %.1f s)", name, results[name]["test_auc"], seconds)

    decomposition: dict[str, dict] = {}
    if args.decompose:
        truth_train = pa.concat_tables([with_truth_offsets(day, read_partition(settings.layout.truth(ds)))
                                        for day, ds in zip(train_days, dss[:-1], strict=True)])
        truth_test = with_truth_offsets(test, truth)
        full_spec = final_specs["GLMix-Full"]
        for name, spec in decomposition_specs(full_spec).items():
            t0 = time.perf_counter()
            model = fit(spec, truth_train)
            decomposition[name] = {"test_auc": metrics.auc(y_test, model.score(truth_test)),
                                   "fit_seconds": round(time.perf_counter() - t0, 2),
                                   "l2": {c.name: c.l2 for c in spec.coordinates}}
            logging.info("GLMix-Full, %s: test AUC %.4f", name, decomposition[name]["test_auc"])

    report = {
        "members": members, "jobs": jobs, "days": days, "seed": args.seed, "l2": list(args.l2),
        "tune_trials": args.tune,
        "random_fields": args.random_fields,
        "train_rows": train.num_rows, "test_rows": test.num_rows,
        "impressions_per_member": args.impressions_per_member, "policy": dataclasses.asdict(policy),
        "test_positives": int(y_test.sum()), "oracle_auc": oracle, "oracle_global_auc": oracle_global,
        "oracle_auc_by_day": [d["oracle_auc"] for d in summary["days"]],
        # the truth with its day-one random effects (drift alone, no estimation error)
        "frozen_day_one_auc": summary["days"][-1].get("frozen_auc"),
        "models": results, "decomposition": decomposition, "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(f"\nAccuracy on the synthetic marketplace: {members} members x {jobs} jobs, "
          f"train days 1-{days - 1} ({train.num_rows} rows), test day {days} ({test.num_rows} rows)")
    print(f"{'model':<14}{'test AUC':>10}{'gap to oracle':>15}{'fit s':>8}")
    for name, r in results.items():
        print(f"{name:<14}{r['test_auc']:>10.4f}{oracle - r['test_auc']:>15.4f}{r['fit_seconds']:>8.1f}")
    print(f"{'oracle':<14}{oracle:>10.4f}")
    if oracle_global is not None:
        print(f"{'oracle-global':<14}{oracle_global:>10.4f}   (the truth's global part alone)")
    if report["frozen_day_one_auc"] is not None:
        print(f"{'oracle-frozen':<14}{report['frozen_day_one_auc']:>10.4f}   (the truth with day 1's random effects: "
              f"what {days - 1} days of drift cost a perfect model)")
    if decomposition:
        print("\nGLMix-Full's gap split: refit with half of the truth given as offset")
        for name, r in decomposition.items():
            print(f"  {name:<42}{r['test_auc']:>8.4f}  gap {oracle - r['test_auc']:.4f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    print(f"written {OUT}")
    return report


if __name__ == "__main__":
    main()
