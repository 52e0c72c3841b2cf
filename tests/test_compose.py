"""docker-compose.yml structure (Docker cannot run on CI) and the DAGs importing under its settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_airflow3_components_postgres_redis_and_spark(compose) -> None:
    services = compose["services"]
    for name in (*AIRFLOW_SERVICES, "airflow-init", "postgres", "redis", "spark-master", "spark-worker"):
        assert name in services, name
    commands = {name: str(services[name]["command"]) for name in AIRFLOW_SERVICES}
    assert "api-server" in commands["airflow-apiserver"]
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"
    assert "db migrate" in str(services["airflow-init"]["command"])
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert "deploy.master.Master" in str(services["spark-master"]["command"])
    assert "spark://spark-master:7077" in str(services["spark-worker"]["command"])


def test_airflow_services_run_the_project_image_on_postgres(compose) -> None:
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        assert service["build"]["dockerfile"] == "Dockerfile"
        env = service["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql"), name
        assert "@postgres:5432/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
        assert "airflow-init" in service["depends_on"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "FROM apache/airflow:" in dockerfile
    assert "openjdk-17" in dockerfile, "Spark needs Java in the image"
    assert "pip install" in dockerfile and "/opt/jobrec" in dockerfile
    import airflow

    assert f"AIRFLOW_VERSION={airflow.__version__}" in dockerfile, "image must pin the tested Airflow version"


def test_tasks_and_spark_share_the_data_volume_and_serving_store_wiring(compose) -> None:
    services = compose["services"]
    assert "jobrec-data" in compose["volumes"]
    for name in (*AIRFLOW_SERVICES, "spark-master", "spark-worker"):
        service = services[name]
        assert "jobrec-data:/data" in service["volumes"], name
        env = service["environment"]
        assert env["JOBREC_HOME"] == "/data", name
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
        assert env["JOBREC_SPARK_MASTER"] == "spark://spark-master:7077", name
    for name in AIRFLOW_SERVICES:
        assert "./dags:/opt/airflow/dags" in services[name]["volumes"]
    # Every Airflow component signs/verifies task tokens with the same secret.
    secrets = {services[name]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for name in AIRFLOW_SERVICES}
    assert len(secrets) == 1


def test_dags_import_under_the_compose_settings(compose, tmp_path: Path) -> None:
    """Parse the DAG folder in a fresh process with the scheduler's environment (DB swapped for SQLite)."""
    env = {k: str(v) for k, v in compose["services"]["airflow-scheduler"]["environment"].items()}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow.db'}",
        JOBREC_HOME=str(tmp_path / "data"),
    )
    script = (
        "import json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder=__import__('os').environ['AIRFLOW__CORE__DAGS_FOLDER'])\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},"
        " 'dags': sorted(bag.dag_ids)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {}
    assert {"jobrec_daily", "jobrec_full_retrain"} <= set(parsed["dags"])
