"""Benchmark ``glmix_core.index_map.FeatureIndexMap`` against a Python ``{name: index}`` dict.

    .venv/bin/python bench/bench_index_map.py           # 2M feature names
    .venv/bin/python bench/bench_index_map.py --full    # 20M feature names (the dict needs ~3 GB)

Names look like the pipeline's (``skill=python_1234567``, ``x:industry=finance|region=eu_west_42``, 15–40
characters), are distinct and generated with Arrow kernels (no Python strings). Each measurement runs in a
fresh child process with Arrow's system memory pool (freed memory goes back to the OS), and reports

- build time, peak RSS increase during the build (VmHWM) and RSS increase held afterwards, relative to the
  process before the names were generated (so both sides include the names themselves: the dict holds them as
  Python ``str`` objects, the map as one Arrow string array); children run with a fixed glibc mmap threshold
  so freed temporaries are returned to the OS, after a small warm-up that pages in the code they run;
- lookup time of 1M query names (half present) — the dict path as the old code ran it (``to_pylist`` of the
  queries then ``dict.get`` per name) and the dict probes alone; plus two Arrow alternatives:
  ``pc.index_in(queries, value_set=names)`` (builds a hash table of all N names per call) and the
  "hash the smaller side" trick (``pc.is_in(names, value_set=queries)`` then ``index_in`` on the hits);
- save time and file size (Arrow IPC), then in another fresh process: memory-mapped load time, RSS after
  load, and RSS (anonymous vs file-backed) after the first 1M lookups.

Prints a table and writes ``bench/out/index_map.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SMALL, FULL, QUERIES = 2_000_000, 20_000_000, 1_000_000
PREFIXES = ["skill=", "title=", "m:industry=", "j:function=", "x:industry=", "m:seniority=", "j:region=",
            "x:region="]
WORDS = ["python", "sql", "engineer", "manager", "finance|region=eu_west", "data_science", "sales", "nurse",
         "senior", "java", "healthcare|function=ops", "paris", "marketing", "logistics"]


def status_kib() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in KiB (Linux /proc/self/status)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


def make_names(n: int, seed: int, start: int = 0):
    """``n`` distinct pipeline-shaped names, built with Arrow kernels (numbers ``start`` … ``start + n``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    numbers = pa.array(start + rng.permutation(n).astype(np.int64)).cast(pa.string())
    prefix = pa.array(PREFIXES).take(pa.array(rng.integers(0, len(PREFIXES), n)))
    word = pa.array(WORDS).take(pa.array(rng.integers(0, len(WORDS), n)))
    return pc.binary_join_element_wise(prefix, word, pa.scalar("_"), numbers, pa.scalar(""))


def queries_for(names, n_queries: int, seed: int):
    """``n_queries`` names: half taken from ``names``, half absent (numbers beyond the map's), shuffled."""
    import pyarrow as pa

    rng = np.random.default_rng(seed + 1)
    half = n_queries // 2
    present = names.take(pa.array(rng.integers(0, len(names), half)))
    absent = make_names(n_queries - half, seed + 2, start=len(names) + 1)
    both = pa.concat_arrays([present, absent])
    return both.take(pa.array(rng.permutation(n_queries)))


def worker(kind: str, n: int, seed: int, path: str) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc

    pa.set_memory_pool(pa.system_memory_pool())
    from glmix_core.index_map import FeatureIndexMap

    # warm-up: page in the Arrow/NumPy code this process will run, so RSS deltas measure data, not code
    warm = make_names(1000, seed + 3)
    warm_map = FeatureIndexMap.from_names(warm)
    warm_map.index_of(queries_for(warm, 100, seed))
    pc.is_in(warm, value_set=warm)
    warm_path = Path(path).with_name("warm.arrow")
    FeatureIndexMap.load(warm_map.save(warm_path)).index_of(warm)
    dict(zip(warm.to_pylist(), range(1000), strict=True))
    del warm, warm_map
    gc.collect()
    base = status_kib()
    out: dict = {}
    if kind == "load":
        reset_peak()
        t0 = time.perf_counter()
        fmap = FeatureIndexMap.load(path)
        out["load_seconds"] = time.perf_counter() - t0
        after = status_kib()
        out["rss_after_load_mib"] = mib(after["VmRSS"] - base["VmRSS"])
        queries = queries_for(fmap.names, QUERIES, seed)
        q_kib = queries.nbytes / 1024
        t0 = time.perf_counter()
        idx = fmap.index_of(queries)
        out["lookup_seconds"] = time.perf_counter() - t0
        out["found_fraction"] = float((idx >= 0).mean())
        del idx
        gc.collect()
        end = status_kib()
        # the queries (an Arrow array the caller would hold anyway) are not counted
        out["rss_after_lookups_mib"] = mib(end["VmRSS"] - base["VmRSS"] - q_kib)
        out["rss_file_after_lookups_mib"] = mib(end["RssFile"] - base["RssFile"])
        out["rss_anon_after_lookups_mib"] = mib(end["RssAnon"] - base["RssAnon"] - q_kib)
        return out

    names = make_names(n, seed)
    queries = queries_for(names, QUERIES, seed)
    out["names_arrow_mib"] = round(names.nbytes / 2**20, 1)
    out["mean_name_length"] = round(float(pc.mean(pc.utf8_length(names)).as_py()), 1)
    gc.collect()
    reset_peak()

    def held_memory() -> dict:
        """RSS held after the build (all, anonymous) and its peak, relative to before the names existed: they
        include the names (an Arrow array for the map, Python strings for the dict), not the queries."""
        gc.collect()
        held = status_kib()
        q_mib = round(queries.nbytes / 2**20, 1)
        return {"held_mib": mib(held["VmRSS"] - base["VmRSS"]) - q_mib,
                "held_anon_mib": mib(held["RssAnon"] - base["RssAnon"]) - q_mib,
                "peak_mib": mib(held["VmHWM"] - base["VmRSS"]) - q_mib}

    if kind == "map":
        t0 = time.perf_counter()
        fmap = FeatureIndexMap.from_names(names)
        out["build_seconds"] = time.perf_counter() - t0
        del names
        out.update(held_memory())
        out["structure_nbytes_mib"] = round(fmap.nbytes / 2**20, 1)
        t0 = time.perf_counter()
        idx = fmap.index_of(queries)
        out["lookup_seconds"] = time.perf_counter() - t0
        out["found_fraction"] = float((idx >= 0).mean())
        t0 = time.perf_counter()
        ref = pc.index_in(queries, value_set=fmap.names).fill_null(-1).to_numpy(zero_copy_only=False)
        out["arrow_index_in_seconds"] = time.perf_counter() - t0
        assert np.array_equal(ref, idx), "FeatureIndexMap disagrees with pc.index_in"
        t0 = time.perf_counter()
        hits = np.flatnonzero(pc.is_in(fmap.names, value_set=queries).to_numpy(zero_copy_only=False))
        small = fmap.names.take(pa.array(hits))
        pos = pc.index_in(queries, value_set=small).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        trick = np.where(pos >= 0, hits[np.maximum(pos, 0)], -1)
        out["arrow_smaller_side_seconds"] = time.perf_counter() - t0
        assert np.array_equal(trick, idx)
        t0 = time.perf_counter()
        fmap.save(path)
        out["save_seconds"] = time.perf_counter() - t0
        out["file_mib"] = round(Path(path).stat().st_size / 2**20, 1)
    elif kind == "dict":
        t0 = time.perf_counter()
        index: dict[str, int] = {}
        step = 1 << 20
        for lo in range(0, n, step):  # chunked so no full list of names exists next to the dict
            chunk = names.slice(lo, step).to_pylist()
            index.update(zip(chunk, range(lo, lo + len(chunk)), strict=True))
        del chunk
        out["build_seconds"] = time.perf_counter() - t0
        del names
        out.update(held_memory())
        t0 = time.perf_counter()
        as_list = queries.to_pylist()
        t1 = time.perf_counter()
        get = index.get
        idx = np.fromiter((get(q, -1) for q in as_list), dtype=np.int64, count=len(as_list))
        t2 = time.perf_counter()
        out["lookup_seconds"] = t2 - t0
        out["dict_probe_only_seconds"] = t2 - t1
        out["found_fraction"] = float((idx >= 0).mean())
    return out


def run_child(kind: str, n: int, seed: int, path: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--n", str(n), "--seed", str(seed), "--path", path]
    # a fixed glibc mmap threshold: large freed blocks go back to the OS at once (same for both sides)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help=f"{FULL:,} names (default {SMALL:,})")
    parser.add_argument("--n", type=int, default=None, help="number of names (overrides --full)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--worker", choices=["map", "dict", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.n or (FULL if args.full else SMALL)
    if args.worker:
        print(json.dumps(worker(args.worker, n, args.seed, args.path)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_index_map_") as tmp:
        path = str(Path(tmp) / "features.arrow")
        fmap = run_child("map", n, args.seed, path)
        loaded = run_child("load", n, args.seed, path)
        ref = run_child("dict", n, args.seed, path)
    result = {"n_names": n, "n_queries": QUERIES, "mean_name_length": fmap["mean_name_length"],
              "names_arrow_mib": fmap["names_arrow_mib"], "index_map": fmap, "index_map_loaded": loaded,
              "python_dict": ref,
              "ratio_dict_over_map": {
                  "held_memory": round(ref["held_mib"] / fmap["held_mib"], 2),
                  "peak_memory": round(ref["peak_mib"] / fmap["peak_mib"], 2),
                  "build_time": round(ref["build_seconds"] / fmap["build_seconds"], 2),
                  "lookup_time": round(ref["lookup_seconds"] / fmap["lookup_seconds"], 2)}}

    print(f"\n{n:,} feature names (mean {fmap['mean_name_length']} chars, {fmap['names_arrow_mib']} MiB as Arrow), "
          f"{QUERIES:,} lookups (half present)\n")
    rows = [
        ("build (s)", fmap["build_seconds"], ref["build_seconds"]),
        ("held RSS (MiB, incl. names)", fmap["held_mib"], ref["held_mib"]),
        ("peak RSS during build (MiB)", fmap["peak_mib"], ref["peak_mib"]),
        ("1M lookups (s)", fmap["lookup_seconds"], ref["lookup_seconds"]),
    ]
    print(f"{'':32}{'FeatureIndexMap':>18}{'dict':>14}{'dict / map':>12}")
    for label, a, b in rows:
        print(f"{label:32}{a:>18.2f}{b:>14.2f}{b / a:>12.2f}")
    print(f"\n  dict probes alone (queries already Python str): {ref['dict_probe_only_seconds']:.2f} s")
    print(f"  pc.index_in(queries, value_set=names) per call:  {fmap['arrow_index_in_seconds']:.2f} s")
    print(f"  is_in(names, queries) + index_in on the hits:    {fmap['arrow_smaller_side_seconds']:.2f} s")
    print(f"  save (Arrow IPC): {fmap['save_seconds']:.2f} s, {fmap['file_mib']} MiB on disk")
    print(f"  memory-mapped load: {loaded['load_seconds'] * 1000:.1f} ms, RSS +{loaded['rss_after_load_mib']} MiB; "
          f"after 1M lookups RSS +{loaded['rss_after_lookups_mib']} MiB "
          f"(file-backed {loaded['rss_file_after_lookups_mib']}, anonymous {loaded['rss_anon_after_lookups_mib']}), "
          f"lookups {loaded['lookup_seconds']:.2f} s")
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / "index_map.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out / 'index_map.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
