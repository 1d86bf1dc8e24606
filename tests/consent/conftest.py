"""Registries for the consent tests: a fresh SQLite file and a fresh PostgreSQL schema per test
(other helpers and other tests share the PostgreSQL database, so each test gets its own
search_path and nothing leaks between them)."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from deidflow.consent.registry import ConsentRegistry

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


def _fresh_pg_schema(pg_url: str):
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in pg_url else "?"
    url = f"{pg_url}{sep}options={quote(f'-csearch_path={schema}')}"
    return admin, schema, url


@pytest.fixture
def pg_registry_url(pg_url):
    admin, schema, url = _fresh_pg_schema(pg_url)
    yield url
    with admin.begin() as conn:
        # DROP is not an UPDATE/DELETE/TRUNCATE: the append-only triggers allow it.
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'consent.db'}"
    return request.getfixturevalue("pg_registry_url")


@pytest.fixture
def registry(registry_url):
    reg = ConsentRegistry(registry_url)
    yield reg
    reg.dispose()
