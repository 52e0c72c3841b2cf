"""The Airflow pools the jobrec DAGs' tasks share, and the slots each gets when it is created.

Kept apart from ``dag_defaults`` (what the DAG files share) and ``airflow_env`` (which creates the pools with the
metadata DB: :func:`pipeline.airflow_env.ensure_pools`) so that both import it and neither imports the other for it.
"""

from __future__ import annotations

# One slot for the tasks that write a day's validated data and features (the daily run's validate_raw and
# build_features, the weekly run's prepare_window): the weekly and the daily run of the same night otherwise
# build the same day at once. Readers need no slot: a partition swapped while it is read is read again whole
# (pipeline.storage.read_partition). Created with the metadata DB (pipeline.airflow_env.ensure_pools).
FEATURES_POOL = "jobrec_features"
FEATURES_POOL_DESCRIPTION = "jobrec: one writer of validated data and features at a time"

# One slot (by default) for the heavy steps: the daily run's retrain, first-stage retrieval and re-scoring,
# and the weekly full retrain. Each takes most of one machine's memory at scale (a 1M-member day with
# engine=spark in local[2]: a retrain's Spark JVM 7 GiB plus its Python workers; the retrieval started beside
# it took the machine past 17 GiB), and the weekly fit starts the same night as a daily run. Running them one
# at a time costs the daily run about a minute of wall time, since the retrain is the shorter branch (on a
# weekly night, the daily's heavy steps wait for the full fit). With the steps on a Spark cluster (or a
# machine with memory to spare), raise the pool's slots in the UI (Admin → Pools) or with
# `airflow pools set jobrec_compute N ...`: jobrec never lowers them again.
COMPUTE_POOL = "jobrec_compute"
COMPUTE_POOL_DESCRIPTION = "jobrec: the heavy steps (daily retrain, retrieval, re-scoring; weekly full retrain), one at a time"

# (name, slots when created, description) of every pool the DAGs use; pipeline.airflow_env.ensure_pools
# creates the missing ones and leaves existing ones (and the slots an operator gave them) alone.
POOLS = ((FEATURES_POOL, 1, FEATURES_POOL_DESCRIPTION), (COMPUTE_POOL, 1, COMPUTE_POOL_DESCRIPTION))
