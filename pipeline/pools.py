"""The Airflow pools the jobrec DAGs' tasks share, and the slots each gets when it is created.

Kept apart from ``dag_defaults`` (what the DAG files share) and ``airflow_env`` (which creates the pools with the
metadata DB: :func:`pipeline.airflow_env.ensure_pools`) so that both import it and neither imports the other for it.
"""

from __future__ import annotations

# One slot for the tasks that write a day's validated data and features, or read a whole training window:
# the weekly full retrain and the daily run of the same night otherwise build (and swap) the same day's
# features while the other reads them. Created with the metadata DB (pipeline.airflow_env.ensure_pools).
FEATURES_POOL = "jobrec_features"
FEATURES_POOL_DESCRIPTION = "jobrec: one writer of validated data and features at a time"

# One slot (by default) for the daily run's heavy steps: retrain, first-stage retrieval and re-scoring each
# take most of one machine's memory at scale (a 1M-member day with engine=spark in local[2]: a retrain's
# Spark JVM 7 GiB plus its Python workers; the retrieval started beside it took the machine past 17 GiB).
# Running them one at a time costs about a minute of wall time there, since the retrain is the shorter
# branch; with the steps on a Spark cluster (or a machine with memory to spare), raise the pool's slots in
# the UI (Admin → Pools) or with `airflow pools set jobrec_compute N ...`: jobrec never lowers them again.
COMPUTE_POOL = "jobrec_compute"
COMPUTE_POOL_DESCRIPTION = "jobrec: the daily run's heavy steps (retrain, retrieval, re-scoring), one at a time"

# (name, slots when created, description) of every pool the DAGs use; pipeline.airflow_env.ensure_pools
# creates the missing ones and leaves existing ones (and the slots an operator gave them) alone.
POOLS = ((FEATURES_POOL, 1, FEATURES_POOL_DESCRIPTION), (COMPUTE_POOL, 1, COMPUTE_POOL_DESCRIPTION))
