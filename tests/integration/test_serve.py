"""`deidflow serve` against a real Prefect server: a flow served on its policy's cron fires on
schedule and completes. (On Prefect's temporary server schedules never fire; serve refuses it.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import write_policy

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> list | dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _wait(pred, timeout: float, what: str, procs=()):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: a process exited early ({p.args[:2]}, rc={p.returncode})")
        try:
            value = pred()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def test_serve_runs_a_scheduled_flow_on_a_real_server(env, tmp_path):
    policy = write_policy(env.root, env.data, name="serve.yaml",
                          edits={r'recheck_cron: "[^"]*"': 'recheck_cron: "* * * * *"'})
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                PREFECT_SERVER_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
    server_log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=base | {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"},
        stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
    serve = None
    try:
        _wait(lambda: urllib.request.urlopen(f"{api}/health", timeout=2).status == 200, 90,
              "the Prefect server to start", [server])
        serve_log = open(tmp_path / "serve.log", "w")
        serve = subprocess.Popen([str(BIN / "deidflow"), "serve", str(policy)],
                                 env=base | {"PREFECT_API_URL": api}, stdout=serve_log,
                                 stderr=subprocess.STDOUT, start_new_session=True)

        def runs_in(*states: str) -> list:
            # The scheduler creates many future runs; filter on the server, never page blindly.
            return _post(f"{api}/flow_runs/filter", {
                "flow_runs": {"state": {"type": {"any_": list(states)}}},
                "sort": "EXPECTED_START_TIME_ASC", "limit": 5})

        def completed():
            failed = runs_in("FAILED", "CRASHED")
            assert not failed, f"scheduled run failed: {failed[0]['state_name']}"
            return [r for r in runs_in("COMPLETED") if r.get("deployment_id")]

        done = _wait(completed, 240, "a scheduled run to complete", [server, serve])
        deployment = json.loads(urllib.request.urlopen(
            f"{api}/deployments/{done[0]['deployment_id']}", timeout=5).read())
        assert deployment["name"].startswith("recheck-")
        sched = deployment["schedules"][0]["schedule"]
        assert sched.get("cron") == "* * * * *"
        assert done[0]["auto_scheduled"] is True
    finally:
        for p in (serve, server):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, 15)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, 9)


def test_serve_refuses_the_temporary_server(env, tmp_path):
    # A real process with no PREFECT_API_URL (in-process, another test's Prefect harness may
    # have set the API URL for the whole session).
    envv = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    envv["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    res = subprocess.run([str(BIN / "deidflow"), "serve", str(env.policy)], env=envv,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "make server" in "".join((res.stdout + res.stderr).split()).replace("`", "") or \
        "make server" in res.stdout + res.stderr
