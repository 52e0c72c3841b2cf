"""The HTTP service's OpenAPI document is true: schemathesis (its CLI, every check, positive and negative
data) runs a bounded number of generated requests against the real service (uvicorn on a loopback port,
a real Redis holding a published version) and finds nothing, with and without a bearer token.

Before issue 15 it reported ST202 (a schema-valid ``member_id`` string rejected with 400) and ST103 (400
undocumented); a 4,301-digit ID was a 500.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from serving_helpers import running_service

from serving_store.api import create_app
from serving_store.connection import connect
from serving_store.publisher import RecommendationLists, publish_lists

MAX_EXAMPLES = 100  # per operation and phase: the whole module stays well under a minute
SEED = 15
ST = "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'st'; sys.exit(schemathesis())"


@pytest.fixture
def published(redis_url):
    """A published version: members 0..199 (the small IDs generators like) and one large ID."""
    members = np.r_[np.arange(200), 2**62].astype(np.int64)
    k = 5
    lists = RecommendationLists.from_columns(
        np.repeat(members, k),
        np.tile(np.arange(1, k + 1), members.size),
        np.arange(members.size * k) % 997,
        np.tile(np.linspace(0.9, 0.1, k), members.size),
    )
    publish_lists(connect(redis_url), lists, ds="2026-01-05", model_version="full-1")
    return redis_url


def run_schemathesis(base: str, workdir, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-c", ST, "run", f"{base}/openapi.json",
        "--checks", "all", "--mode", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
        "--workers", "1", "--generation-database", "none", "--no-color", "--request-timeout", "10",
        *extra,
    ]  # fmt: skip
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300)


def assert_no_issues(result: subprocess.CompletedProcess) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "No issues found" in out, out[-6000:]
    assert "Fuzzing" in out and "Coverage" in out, out[-3000:]


def test_schemathesis_finds_no_issue_without_authentication(published, tmp_path):
    with running_service(create_app(published)) as base:
        assert_no_issues(run_schemathesis(base, tmp_path))


def test_schemathesis_finds_no_issue_with_a_bearer_token(published, tmp_path):
    """With the token: its checks include ``ignored_auth`` (requests without the token must be refused)."""
    with running_service(create_app(published, api_token="s3cret-t0ken")) as base:
        assert_no_issues(run_schemathesis(base, tmp_path, "-H", "Authorization: Bearer s3cret-t0ken"))


def test_openapi_types_member_id_as_an_integer_and_documents_400_401_and_503():
    spec = create_app("unix:///unused.sock", api_token="t").openapi()
    operation = spec["paths"]["/v1/members/{member_id}/recommendations"]["get"]
    (member_id,) = [p for p in operation["parameters"] if p["name"] == "member_id"]
    assert member_id["schema"]["type"] == "integer"
    assert (member_id["schema"]["minimum"], member_id["schema"]["maximum"]) == (0, 2**63 - 1)
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for status in ("400", "401", "503"):
        assert operation["responses"][status]["content"]["application/json"]["schema"] == error, status
    assert spec["components"]["schemas"]["ErrorBody"]["properties"]["detail"]["type"] == "string"
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "RecommendationsBody"
    )
    health = spec["paths"]["/healthz"]["get"]["responses"]
    assert health["503"]["content"]["application/json"]["schema"] == error
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    without_token = create_app("unix:///unused.sock").openapi()
    assert "401" not in without_token["paths"]["/v1/members/{member_id}/recommendations"]["get"]["responses"]
