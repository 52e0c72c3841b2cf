"""The Spark steps run by `jobrec` on a standalone master + worker (pyspark's own jars), as on a cluster.

Each command runs as a user runs it: a `jobrec` process with ``JOBREC_SPARK_MASTER=spark://…``, so the driver,
the worker's executor JVM and its Python workers are separate processes. Outputs equal the local engines'.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rescoring_world import DAY, make_world

from pipeline.config import Settings
from pipeline.rescoring.stream import in_key_order, partition_files
from pipeline.scoring import rescore
from pipeline.spark_standalone import StandaloneCluster
from pipeline.storage import atomic_directory, read_partition

pytestmark = pytest.mark.slow

JOBREC = str(Path(sys.executable).with_name("jobrec"))


@pytest.fixture(scope="module")
def master() -> str:
    with StandaloneCluster(cores=2, memory="1g") as url:
        yield url


def jobrec(master: str, home: Path, *args: str) -> str:
    env = {**os.environ, "JOBREC_HOME": str(home), "JOBREC_SPARK_MASTER": master,
           "JOBREC_SPARK_DRIVER_MEMORY": "1g", "JOBREC_SPARK_EXECUTOR_MEMORY": "1g", "JOBREC_SPARK_UI": "false"}
    done = subprocess.run([JOBREC, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr + done.stdout


def test_rescore_on_a_standalone_cluster_equals_the_local_engine_both_ways(master, tmp_path):
    settings = Settings.from_env(home=tmp_path / "home")
    make_world(settings, seed=23)
    local_report = rescore(DAY, settings, top_n=6, max_per_company=2)
    local = read_partition(settings.layout.recommendations(DAY))
    assert local.num_rows > 0

    out = jobrec(master, settings.layout.home, "rescore", "--ds", DAY, "--engine", "spark", "--top-n", "6",
                 "--max-per-company", "2")
    assert "member ranges read by the tasks" in out and master in out
    assert read_partition(settings.layout.recommendations(DAY)).equals(local)

    # The same candidates as two part files out of member order: the grouping path.
    table = read_partition(settings.layout.candidates(DAY))
    table = table.take(pa.array(np.random.default_rng(3).permutation(table.num_rows)))
    with atomic_directory(settings.layout.candidates(DAY)) as tmp:
        pq.write_table(table.slice(0, table.num_rows // 2), tmp / "part-00000.parquet")
        pq.write_table(table.slice(table.num_rows // 2), tmp / "part-00001.parquet")
    out = jobrec(master, settings.layout.home, "rescore", "--ds", DAY, "--engine", "spark", "--top-n", "6",
                 "--max-per-company", "2", "--json")
    assert "candidates grouped by member" in out
    assert read_partition(settings.layout.recommendations(DAY)).equals(local)
    assert f'"members": {local_report["members"]}' in out


def test_retrieve_on_a_standalone_cluster_writes_member_ordered_candidates_equal_to_local(master, tmp_path):
    from pipeline.retrieval_tasks import retrieve_candidates, update_index
    from pipeline.storage import write_partition
    from retrieval import synthetic

    settings = Settings.from_env(home=tmp_path / "home")
    ds = "2026-01-02"
    write_partition(settings.layout.features("job_profiles", ds), synthetic.job_profiles(300, seed=61, ds=ds))
    write_partition(settings.layout.features("member_profiles", ds), synthetic.member_profiles(120, seed=62))
    update_index(ds, settings)
    retrieve_candidates(ds, settings, k=20, processes=1)
    order = [("member_id", "ascending"), ("rank", "ascending")]
    local = read_partition(settings.layout.candidates(ds)).sort_by(order)

    jobrec(master, settings.layout.home, "retrieve", "--ds", ds, "--k", "20", "--engine", "spark")
    files = partition_files(settings.layout.candidates(ds))
    assert in_key_order(files)
    got = read_partition(settings.layout.candidates(ds))
    assert got.equals(got.sort_by(order))
    got = got.select(local.column_names).cast(local.schema)
    for column in ("member_id", "job_id", "rank"):
        assert got[column].equals(local[column]), column
    np.testing.assert_allclose(got["score"].to_numpy(), local["score"].to_numpy(), rtol=1e-12, atol=0)
