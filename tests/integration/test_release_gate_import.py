"""prepare imports the validation gate (Great Expectations) while it waits for the consent
snapshot, and that cannot race: the snapshot thread loads no module, so only one thread
imports (two threads importing at once can see half-initialised modules). Each run is a
fresh interpreter, where every import is a real load; an audit hook records which thread
loaded what."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from .conftest import REPO, _import_consents, write_policy

SCRIPT = r"""
import json, sys, threading, time
loads = []
def hook(event, args):
    if event == "import":
        loads.append([threading.current_thread().name, args[0]])
sys.addaudithook(hook)
from deidflow import release
from deidflow.consent.registry import ConsentRegistry
read = ConsentRegistry.snapshot
def slow(self, *a, **k):  # a registry slower than staging: the main thread then waits
    time.sleep(float(sys.argv[2]))
    return read(self, *a, **k)
ConsentRegistry.snapshot = slow
before = len(loads)
work = release.prepare(sys.argv[1])
release.discard(work)
print(json.dumps({"loads": loads[before:]}))
"""


def _prepare(policy: Path, delay: float) -> list[list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO / "src")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(policy), str(delay)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["loads"]


def _check(policy: Path) -> None:
    loads = _prepare(policy, delay=4.0)
    gx = [m for t, m in loads if m.startswith("great_expectations")]
    assert gx and {t for t, m in loads if m.startswith("great_expectations")} == {"MainThread"}
    assert [(t, m) for t, m in loads if t != "MainThread"] == []


def test_sqlite_snapshot_thread_loads_no_module_while_the_gate_is_imported(env):
    _check(env.policy)


@pytest.mark.postgres
def test_postgresql_snapshot_thread_loads_no_module_while_the_gate_is_imported(env, pg_url):
    import sqlalchemy as sa

    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        sep = "&" if "?" in pg_url else "?"
        url = f"{pg_url}{sep}options={quote(f'-csearch_path={schema}')}"
        policy = write_policy(env.root, env.data, registry=url, name="pg.yaml")
        _import_consents(policy, env.data)
        _check(policy)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

