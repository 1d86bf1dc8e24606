"""The release flow under Prefect for real (prefect_test_harness): tasks pass paths, the run
publishes a summary artifact, and Prefect's own database never holds a record or the key."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from .conftest import SECRET_HEX, write_policy


def _prefect_db() -> Path:
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_HOME

    url = PREFECT_API_DATABASE_CONNECTION_URL.value() or ""
    if url.startswith("sqlite"):
        return Path(url.split("///", 1)[1])
    return Path(PREFECT_HOME.value()) / "prefect.db"


def test_release_flow_runs_and_stores_no_identities(env, prefect_harness):
    from prefect.client.orchestration import get_client

    from flows.release import release_flow

    state = release_flow(policy_path=str(env.policy), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    rel = Path(result["release_dir"])
    assert (rel / "manifest.json").is_file()

    import asyncio

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    run_id = state.state_details.flow_run_id
    arts = [a for a in asyncio.run(artifacts())
            if a.key == "release-summary" and a.flow_run_id == run_id]
    assert len(arts) == 1, "the flow publishes one release-summary artifact per run"
    md = arts[0].data
    assert result["release_id"] in md and "k reached" in md

    # Everything Prefect stored (parameters, states, logs, artifacts): no key, no identifier.
    db = _prefect_db()
    assert db.is_file(), db
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    dump = "\n".join(con.iterdump())
    con.close()
    assert SECRET_HEX not in dump and SECRET_HEX.upper() not in dump
    assert base64.b64encode(bytes.fromhex(SECRET_HEX)).decode() not in dump
    raw = pd.read_csv(env.data / "patients.csv", dtype="string")
    for col in ("resident_id", "mobile", "insurance_no"):
        leaked = [v for v in raw[col].dropna() if v in dump]
        assert not leaked, f"Prefect's database holds {col} values"
    names = [v for v in raw["name"].dropna() if len(v) >= 3 and v in dump]
    assert not names


def test_failed_gate_fails_the_flow_and_publishes_nothing(env, prefect_harness):
    from flows.release import release_flow

    policy = write_policy(env.root, env.data, edits={r"k: 6 ": "k: 1000 "}, name="k1000.yaml")
    state = release_flow(policy_path=str(policy), return_state=True)
    assert state.is_failed()
    assert not env.releases.exists() or not any(env.releases.iterdir())
    work = env.private / "work"
    assert not work.exists() or not any(work.iterdir())


def test_memory_engine_runs_its_partition_on_the_flow_thread():
    """One partition: the task is called on the calling thread (like run_release), not mapped
    onto the task runner; the Dask engine maps over every partition."""
    import threading

    from flows.release import each_partition

    calls = []

    class FakeTask:
        def __call__(self, work, i):
            calls.append(("call", work, i, threading.current_thread()))
            return {"i": i}

        def map(self, work, parts):
            calls.append(("map", parts))

            class Futures:
                def result(self):
                    return [{"i": i} for i in parts]

            return Futures()

    assert each_partition(FakeTask(), "w", [0], "memory") == [{"i": 0}]
    assert calls == [("call", "w", 0, threading.current_thread())]
    calls.clear()
    assert each_partition(FakeTask(), "w", [0, 1, 2], "dask") == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert calls == [("map", [0, 1, 2])]


def test_flow_process_skips_the_final_collection_walk(tmp_path):
    """Importing the flow registers gc.freeze at exit: the interpreter's last collection then
    has nothing to walk (1-3 s with Prefect and GX loaded). A handler registered before the
    import runs after it (atexit is last in, first out) and sees the objects frozen."""
    import subprocess
    import sys

    code = ("import atexit, gc\n"
            "atexit.register(lambda: print('frozen', gc.get_freeze_count()))\n"
            "import flows.release\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    frozen = int(out.stdout.split("frozen", 1)[1].split()[0])
    assert frozen > 100_000
