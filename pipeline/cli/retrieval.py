"""``jobrec index build|update|search`` and ``jobrec retrieve``: the first stage, by hand.

With ``--ds`` the commands read and write the storage layout under $JOBREC_HOME, like the DAG tasks. For tests
and benchmarks they also take precomputed inputs: ``--jobs``/``--members`` Parquet tables (job_id/member_id
and one list<struct<term, weight>> column per field), ``--weights`` JSON ({"title": w, ...}),
``--index-dir`` and ``--out`` folders.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser("index", help="build, update or query the Whoosh job index")
    actions = index.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="full rebuild of the job index")
    _source_args(build)
    build.set_defaults(func=_build)

    update = actions.add_parser("update", help="daily update: yesterday's index + today's job changes")
    _source_args(update)
    update.add_argument("--from-index", help="with --jobs: the earlier index folder to update (not modified)")
    update.set_defaults(func=_update)

    search = actions.add_parser("search", help="query the index with the cosine weighting (debugging)")
    search.add_argument("query", help='e.g. "title:data skills:python^2 region:us-ca" (bare words: title)')
    search.add_argument("--ds", help="search the index of this day under $JOBREC_HOME")
    search.add_argument("--index-dir", help="search the index in this folder instead")
    search.add_argument("--weights", help="field weights JSON (default: the LR-Cosine model's, else equal)")
    search.add_argument("--k", type=int, default=10, help="hits to show (default 10)")
    search.set_defaults(func=_search)

    retrieve = subparsers.add_parser("retrieve", help="top-k cosine candidates for every member")
    retrieve.add_argument("--ds", help="the day, YYYY-MM-DD: index, member profiles, applies, candidates")
    retrieve.add_argument("--k", type=int, default=None, help="candidates per member (default 1000)")
    retrieve.add_argument("--members", help="member profiles Parquet (instead of --ds inputs)")
    retrieve.add_argument("--jobs", help="job profiles Parquet: indexed into --index-dir (or a temp dir) first")
    retrieve.add_argument("--index-dir", help="job index folder (instead of the day's)")
    retrieve.add_argument("--weights", help="field weights JSON")
    retrieve.add_argument("--applies", help="Parquet of (member_id, job_id) to exclude")
    retrieve.add_argument("--open-at", help="ISO time: keep jobs posted before and expiring after it")
    retrieve.add_argument("--out", help="output folder for the candidates Parquet (with --members)")
    retrieve.add_argument("--region-filter", action="store_true", help="only jobs in the member's region")
    retrieve.add_argument("--processes", type=int, default=None, help="worker processes (default: cores, <=4)")
    retrieve.add_argument("--engine", choices=("processes", "spark"), default="processes")
    retrieve.set_defaults(func=_retrieve)


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ds", help="the day, YYYY-MM-DD (reads features/job_profiles/ds=, writes index/jobs/ds=)")
    parser.add_argument("--jobs", help="job profiles Parquet (instead of --ds)")
    parser.add_argument("--index-dir", help="with --jobs: the index folder to write")


def _print(result: dict) -> None:
    print(json.dumps(result, indent=2, sort_keys=True, default=str))


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n, None)]
    if missing:
        raise ValueError(f"{' and '.join(missing)} required (or pass --ds to use the storage layout)")


def _read_table(path: str):
    from pipeline.storage import read_partition

    return read_partition(path)


def _build(args: argparse.Namespace) -> int:
    if args.ds:
        from pipeline.config import Settings
        from pipeline.retrieval_tasks import update_index

        _print(update_index(args.ds, Settings.from_env(), rebuild=True))
        return 0
    _need(args, "jobs", "index_dir")
    from pipeline.storage import atomic_directory
    from retrieval.index import build_index

    with atomic_directory(args.index_dir) as tmp:
        stats = build_index(tmp, _read_table(args.jobs))
    _print({"index_dir": args.index_dir, **stats.as_dict()})
    return 0


def _update(args: argparse.Namespace) -> int:
    if args.ds:
        from pipeline.config import Settings
        from pipeline.retrieval_tasks import update_index

        _print(update_index(args.ds, Settings.from_env()))
        return 0
    _need(args, "jobs", "index_dir", "from_index")
    from pipeline.storage import atomic_directory
    from retrieval.index import update_index

    with atomic_directory(args.index_dir) as tmp:
        stats = update_index(args.from_index, tmp, _read_table(args.jobs))
    _print({"index_dir": args.index_dir, **stats.as_dict()})
    return 0


def _weights(args: argparse.Namespace, settings) -> dict[str, float]:
    from pipeline.retrieval_tasks import field_weights_path
    from retrieval.schema import load_field_weights

    if args.weights:
        from pathlib import Path

        if not Path(args.weights).exists():
            raise FileNotFoundError(f"field weights file not found: {args.weights}")
        return load_field_weights(args.weights)
    return load_field_weights(field_weights_path(settings))


def _search(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from retrieval.index import open_index
    from retrieval.weighting import CosineWeighting, parse_debug_query, profile_query

    settings = Settings.from_env()
    if not (args.ds or args.index_dir):
        raise ValueError("pass --ds DAY or --index-dir FOLDER to choose the index")
    ix = open_index(args.index_dir or settings.layout.index(args.ds))
    weights = _weights(args, settings)
    query = profile_query(parse_debug_query(args.query), weights)
    with ix.searcher(weighting=CosineWeighting(weights)) as searcher:
        hits = searcher.search(query, limit=args.k)
        print(f"{len(hits)} of {hits.estimated_length()} matching jobs; query: {query}")
        for rank, hit in enumerate(hits, 1):
            print(f"{rank:>4}  job_id={hit['job_id']}  score={hit.score:.6f}  region={hit.get('job_region', '')}")
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    from pipeline.config import Settings

    settings = Settings.from_env()
    if args.ds and not args.members:
        from pipeline.retrieval_tasks import retrieve_candidates

        _print(retrieve_candidates(
            args.ds, settings, args.k, region_filter=args.region_filter, processes=args.processes,
            engine=args.engine,
        ))
        return 0
    _need(args, "members", "out")
    if not (args.index_dir or args.jobs):
        raise ValueError("pass --index-dir (an index) and/or --jobs (profiles to index) with --members")
    import datetime as dt
    import tempfile
    from pathlib import Path

    from pipeline.retrieval_tasks import candidate_batches, default_processes, write_candidates
    from retrieval import index as job_index
    from retrieval.batch import JobMatrix

    with tempfile.TemporaryDirectory(prefix="jobrec-index-") as scratch:
        index_dir = Path(args.index_dir or scratch)
        if args.jobs and not job_index.index_exists(index_dir):
            job_index.build_index(index_dir, _read_table(args.jobs))
        job_matrix = JobMatrix.from_index(job_index.open_index(index_dir))
    open_at_us = None
    if args.open_at:
        moment = dt.datetime.fromisoformat(args.open_at)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
        open_at_us = int(moment.timestamp() * 1_000_000)
    batches = candidate_batches(
        job_matrix, _read_table(args.members), _weights(args, settings),
        int(args.k or settings.candidates_k),
        applies=_read_table(args.applies) if args.applies else None, open_at_us=open_at_us,
        region_filter=args.region_filter, processes=args.processes or default_processes(),
    )
    rows = write_candidates(Path(args.out), batches)
    _print({"out": args.out, "candidates": rows, "jobs": job_matrix.n_jobs})
    return 0
