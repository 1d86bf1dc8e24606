"""Shared fixtures. Prefect's test harness is session-scoped and only started by tests that
ask for it (`prefect_harness`), so unit tests do not pay its ~10 s start-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.fail(f"shared datasets not found at {DATASETS}; tests need ../shared beside the repo")
    return DATASETS


@pytest.fixture(scope="session")
def prefect_harness():
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A PostgreSQL server for the consent registry tests. CI starts one (.ci/postgres.sh) and
    exports DEIDFLOW_TEST_PG_URL; under CI a missing server is a failure, not a skip."""
    url = os.environ.get("DEIDFLOW_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("DEIDFLOW_TEST_PG_URL is not set under CI; .ci/run must start PostgreSQL")
        pytest.skip("no PostgreSQL: run `make pg` or set DEIDFLOW_TEST_PG_URL")
    return url
