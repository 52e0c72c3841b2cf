"""``jobrec explain MEMBER JOB --ds D``: every term of a (member, job) pair's GLMix score on a day."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="why this job: the full score breakdown of a (member, job) pair from the day's files",
        description=(
            "Read the day's vocab, member and job profiles and the GLMix model (default models/daily/ds=D) and "
            "print every global feature's value x coefficient, the member's and the job's coefficient "
            "contributions (largest first) and the total, which equals the model's score of the pair; works "
            "for any pair, recommended or not."
        ),
    )
    parser.add_argument("member_id", type=int, help="member ID")
    parser.add_argument("job_id", type=int, help="job ID")
    parser.add_argument("--ds", required=True, help="day, YYYY-MM-DD")
    parser.add_argument("--home", default=None, help="data folder (default $JOBREC_HOME, else ./data)")
    parser.add_argument("--model", default=None, help="GLMix model directory (default models/daily/ds=D)")
    parser.add_argument("--top", type=int, default=10, help="member/job terms shown (default 10; 0 = all)")
    parser.add_argument("--json", action="store_true", help="print the breakdown as JSON (every term)")
    parser.set_defaults(func=run)


def _rows(terms, top: int | None) -> list[str]:
    shown = terms if not top else terms[: top + 1]  # the intercept plus the top terms
    lines = [f"    {t.contribution:+.6f}  = {t.value:.6g} x {t.coefficient:+.6g}  {t.name}" for t in shown]
    if len(shown) < len(terms):
        rest = sum(t.contribution for t in terms[len(shown):])
        lines.append(f"    {rest:+.6f}  ({len(terms) - len(shown)} more terms)")
    return lines


def run(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.rescoring.explain import explain_pair

    settings = Settings.from_env(home=args.home)
    e = explain_pair(args.ds, settings, args.member_id, args.job_id, model_dir=args.model)
    if args.json:
        print(json.dumps(e.as_dict(), indent=2))
        return 0
    print(f"member {e.member_id}, job {e.job_id}, ds={e.ds}, model {e.model_version}")
    for note in e.notes:
        print(f"  note: {note}")
    print(f"  global (fixed effect): {e.part_global:+.6f}")
    print("\n".join(_rows(e.global_terms, None)))
    print(f"  per member (alpha_m . s_j): {e.part_member:+.6f}")
    print("\n".join(_rows(e.member_terms, args.top)))
    print(f"  per job (beta_j . q_m): {e.part_job:+.6f}")
    print("\n".join(_rows(e.job_terms, args.top)))
    print(f"  total score: {e.total:+.9f}")
    if e.recommended is not None:
        rank, score = e.recommended
        print(f"  recommended at rank {rank} (stored score {score:+.9f})")
    else:
        print("  not in the day's recommendations")
    return 0
