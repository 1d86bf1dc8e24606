"""`deidflow serve` against a real Prefect server: a flow served on its policy's cron fires on
schedule and completes. (On Prefect's temporary server schedules never fire; serve refuses it.)"""

from __future__ import annotations

import os
import subprocess

import pytest

from .conftest import write_policy
from .prefect_server import BIN, get, post, server_env, start_server, stop, wait

pytestmark = pytest.mark.slow


def test_serve_runs_a_scheduled_flow_on_a_real_server(env, tmp_path):
    policy = write_policy(env.root, env.data, name="serve.yaml",
                          edits={r'recheck_cron: "[^"]*"': 'recheck_cron: "* * * * *"'})
    base = server_env(tmp_path / "prefect-home")
    server_log = open(tmp_path / "server.log", "w")
    server, serve = None, None
    try:
        server, api = start_server(tmp_path / "prefect-home", server_log, timeout=90,
                                   extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"})
        serve_log = open(tmp_path / "serve.log", "w")
        serve = subprocess.Popen([str(BIN / "deidflow"), "serve", str(policy)],
                                 env=base | {"PREFECT_API_URL": api}, stdout=serve_log,
                                 stderr=subprocess.STDOUT, start_new_session=True)

        def runs_in(*states: str) -> list:
            # The scheduler creates many future runs; filter on the server, never page blindly.
            return post(f"{api}/flow_runs/filter", {
                "flow_runs": {"state": {"type": {"any_": list(states)}}},
                "sort": "EXPECTED_START_TIME_ASC", "limit": 5})

        def completed():
            failed = runs_in("FAILED", "CRASHED")
            assert not failed, f"scheduled run failed: {failed[0]['state_name']}"
            return [r for r in runs_in("COMPLETED") if r.get("deployment_id")]

        done = wait(completed, 240, "a scheduled run to complete", [server, serve], every=1)
        deployment = get(f"{api}/deployments/{done[0]['deployment_id']}")
        assert deployment["name"].startswith("recheck-")
        sched = deployment["schedules"][0]["schedule"]
        assert sched.get("cron") == "* * * * *"
        assert done[0]["auto_scheduled"] is True
    finally:
        stop(serve)
        stop(server)


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
