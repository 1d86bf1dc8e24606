"""The release flow run pauses for the privacy officer on a real Prefect server (issue 20).

One `prefect server start` per module (its own PREFECT_HOME and SQLite database). Three
hospitals each run the installed `deidflow release POLICY` in the background against it, at
once, from a working directory that is not the project's, until their flow runs are Paused;
each test reads what the UI would show (state message, artifact) or decides from the command
line: `deidflow approve` resumes the run and it completes with the release published;
`deidflow reject` (its server unreachable: a warning) ends it reporting the rejection with
nothing published; a staged release that expires ends the run saying so. The Prefect path on
the temporary server (no pause, "awaiting approval") and the in-process path are the approval
tests' (test_approval*.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from .conftest import SECRET_HEX
from .prefect_server import BIN, free_port, get, post, start_server, stop, wait
from .test_approval import OFFICER, World, make_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A real Prefect server for this module; stopped (its process group) whatever happens."""
    home = tmp_path_factory.mktemp("prefect-server")
    with open(home / "server.log", "w") as log:
        server, api = start_server(home, log, timeout=120)
        try:
            yield api
        finally:
            stop(server)


@dataclass
class Hospital:
    """One hospital root (keys, trust file, a policy requiring approval, consents) from the
    approval tests' `make_world`, and the module's Prefect server."""

    world: World
    api: str
    outputs: list[str] = field(default_factory=list)

    def __getattr__(self, name: str):
        return getattr(self.world, name)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PREFECT_") and k not in ("DEIDFLOW_PSEUDONYM_KEY", "DEIDFLOW_TRUST_FILE")}
        env.update(PATH=f"{BIN}:{env.get('PATH', '')}", COLUMNS="200",
                   PREFECT_HOME=str(self.root / "prefect-cli"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        return env | extra

    def run(self, *args: str) -> subprocess.CompletedProcess:
        """A decision or a check, with no PREFECT_API_URL: approve and reject find the server
        in the staged record."""
        proc = subprocess.run([str(BIN / "deidflow"), *args], cwd=self.cwd, env=self.env(),
                              capture_output=True, text=True, timeout=300)
        self.outputs.append(proc.stdout + proc.stderr)
        return proc


def hospital(tmp_path_factory, extract, api: str, version: str) -> Hospital:
    """Its own plan version, so its own release id (a rejected release is never restaged)."""
    return Hospital(make_world(tmp_path_factory.mktemp("approval-pause"), extract, version=version), api)


@dataclass
class Paused:
    world: Hospital
    proc: subprocess.Popen
    policy: Path
    staged: object
    run: dict
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8")


def launch(world: Hospital) -> subprocess.Popen:
    """`deidflow release POLICY` in the background, reporting to the module's server."""
    with open(world.root / "release.log", "w") as fh:
        return subprocess.Popen([str(BIN / "deidflow"), "release", str(world.policy)], cwd=world.cwd,
                                env=world.env(PREFECT_API_URL=world.api), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


def until_paused(world: Hospital, proc: subprocess.Popen) -> Paused:
    from deidflow.release.approval import pending

    def paused():
        for staged in pending(world.private):
            if staged.flow_run_id:
                run = get(f"{world.api}/flow_runs/{staged.flow_run_id}")
                if run["state_type"] == "PAUSED":
                    return staged, run
        return None

    log = world.root / "release.log"
    try:
        staged, run = wait(paused, 400, "the release flow run to pause", [proc])
    except BaseException:
        print(log.read_text(encoding="utf-8"))
        raise
    return Paused(world, proc, world.policy, staged, run, log)


@pytest.fixture(scope="module")
def paused(tmp_path_factory, extract, prefect_api) -> dict[str, Paused]:
    """Three hospitals' releases started together on the one server (three release runs at
    once cost less than one after another), each until its run is Paused: one to approve,
    one to reject, one to leave until it expires. Stopped, whatever happens."""
    worlds = {v: hospital(tmp_path_factory, extract, prefect_api, f"2026-11-{v}")
              for v in ("approve", "reject", "expire")}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for v, w in worlds.items():
            procs[v] = launch(w)
        yield {v: until_paused(w, procs[v]) for v, w in worlds.items()}
    finally:
        for proc in procs.values():
            stop(proc)


def finish(p: Paused, timeout: float = 120) -> int:
    try:
        return p.proc.wait(timeout)
    finally:
        stop(p.proc)


def artifacts_of(world: Hospital, run_id: str) -> list[dict]:
    return post(f"{world.api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})


def prefect_text(world: Hospital, run_id: str) -> str:
    """Everything the server keeps about a run that a UI user could read: parameters, every
    state's name and message, artifacts, logs."""
    run = get(f"{world.api}/flow_runs/{run_id}")
    states = get(f"{world.api}/flow_run_states/?flow_run_id={run_id}")
    logs = post(f"{world.api}/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    return json.dumps([run, states, artifacts_of(world, run_id), logs], ensure_ascii=False)


def no_values_in(text: str, data: Path) -> None:
    patients = pd.read_csv(data / "patients.csv", dtype="string", keep_default_na=False)
    assert SECRET_HEX not in text
    for col in ("name", "resident_id", "mobile", "address"):
        for v in patients[col].head(200):
            if len(v) >= (8 if v.isdigit() else 3):
                assert v not in text, f"a patients.{col} value reached Prefect or the terminal"


# --- approve ------------------------------------------------------------------------------------

def test_approve_resumes_the_paused_run_and_it_completes_published(paused):
    p = paused["approve"]
    world = p.world
    try:
        staged, run = p.staged, p.run
        # What the UI shows: Paused, the review page's path and the commands in the message.
        message = run["state"]["message"]
        assert run["state_name"] == "Paused"
        assert str(staged.review_page) in message
        assert f"deidflow approve {staged.staged_id}" in message
        assert f"deidflow reject {staged.staged_id}" in message
        details = run["state"]["state_details"]
        assert details["pause_key"].endswith(f"{staged.staged_id}:0")
        assert datetime.fromisoformat(details["pause_timeout"]) > staged.expires_at
        (art,) = [a for a in artifacts_of(world, staged.flow_run_id) if a["key"] == "release-approval"]
        assert str(staged.review_page) in art["data"] and staged.staged_id in art["data"]
        assert run["parameters"] == {"policy_path": str(p.policy), "as_of": None, "engine": "memory"}
        # The run is waiting, in its process; nothing is published yet; the operator is told.
        assert p.proc.poll() is None
        assert not (world.releases / staged.release_id).exists()
        assert staged.review_page.is_file()
        wait(lambda: "paused" in p.output() and str(staged.review_page) in p.output(), 30,
              "the terminal to say the run is paused")
        # The UI's Resume button (the same API call) decides nothing: the run pauses again.
        post(f"{world.api}/flow_runs/{staged.flow_run_id}/resume", {})

        def paused_again():
            state = get(f"{world.api}/flow_runs/{staged.flow_run_id}")["state"]
            return state["type"] == "PAUSED" and state["state_details"]["pause_key"].endswith(":1")

        wait(paused_again, 60, "the run resumed from the UI to pause again", [p.proc])
        assert not (world.releases / staged.release_id).exists()

        approve = world.run("approve", staged.staged_id, "--policy", str(p.policy),
                            "--key", str(world.officer_key), "--yes", "--comment", "fine for training")
        assert approve.returncode == 0, approve.stdout + approve.stderr
        assert "warning" not in approve.stderr.lower(), approve.stderr
        assert f"resumed the release's paused flow run {staged.flow_run_id}" in approve.stderr
        rc = finish(p)
        out = p.output()
        assert rc == 0, out
    finally:
        stop(p.proc)
    final = world.releases / staged.release_id
    assert [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("release:")] == [str(final)]
    done = get(f"{world.api}/flow_runs/{staged.flow_run_id}")
    assert done["state_type"] == "COMPLETED", done["state"]
    names = [s["name"] for s in sorted(get(f"{world.api}/flow_run_states/?flow_run_id={staged.flow_run_id}"),
                                       key=lambda s: s["timestamp"])]
    assert names[-3:] == ["Paused", "Running", "Completed"], names
    # A second resume (approve retried, say) finds nothing paused and says nothing.
    from deidflow.flows.approval_wait import resume_if_paused

    said: list[str] = []
    assert resume_if_paused(staged, warn=said.append, say=said.append) == "not-paused" and not said
    envelope = json.loads((final / "manifest.json").read_text())
    assert len(envelope["signatures"]) == 2
    verify = world.run("verify", str(final), "--trust", str(world.trust))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert OFFICER in verify.stdout + verify.stderr
    no_values_in(prefect_text(world, staged.flow_run_id) + out + approve.stdout + approve.stderr, world.data)


# --- reject -------------------------------------------------------------------------------------

def _edit_staged_record(staged, **fields: str) -> None:
    """Change fields of a staged release's staged.json (not signed: what the run polls)."""
    meta = staged.staged_dir / "staged.json"
    meta.write_text(json.dumps(json.loads(meta.read_text()) | fields))


def test_reject_with_prefect_unreachable_still_ends_the_run_reporting_the_rejection(paused):
    p = paused["reject"]
    world = p.world
    try:
        staged = p.staged
        # The officer's command cannot reach the server (down, or another network): the
        # rejection still stands, with a warning; the waiting run finds it in the staged record
        # and resumes itself.
        _edit_staged_record(staged, prefect_api_url=f"http://127.0.0.1:{free_port()}/api")
        reject = world.run("reject", staged.staged_id, "--policy", str(p.policy),
                           "--key", str(world.officer_key), "--reason", "ages too fine")
        assert reject.returncode == 0, reject.stdout + reject.stderr
        said = " ".join(reject.stderr.split())
        assert "warning: could not reach the Prefect server" in said and "decision is recorded" in said
        assert "Traceback" not in reject.stderr
        rc = finish(p)
        out = " ".join(p.output().split())
    finally:
        stop(p.proc)
    assert rc == 2, out
    assert f"staged release {staged.staged_id} was rejected" in out and "Nothing was released" in out
    assert "Traceback" not in out
    done = get(f"{world.api}/flow_runs/{staged.flow_run_id}")
    assert done["state_type"] == "FAILED" and "rejected" in done["state"]["message"], done["state"]
    assert not (world.releases / staged.release_id).exists()
    assert not staged.staged_dir.exists()
    no_values_in(prefect_text(world, staged.flow_run_id) + out, world.data)


# --- expiry -------------------------------------------------------------------------------------

def test_a_staged_release_not_decided_in_time_expires_and_the_run_says_so(paused):
    p = paused["expire"]
    world = p.world
    try:
        staged = p.staged
        # Time passes: the staged record's expiry moves into the past (approval_days is whole
        # days); the waiting run finds it at its next poll, removes the staged release and ends.
        _edit_staged_record(staged, expires_at=(datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat())
        rc = finish(p)
        out = " ".join(p.output().split())
    finally:
        stop(p.proc)
    assert rc == 2, out
    assert f"staged release {staged.staged_id} expired" in out and "approval_days" in out
    done = get(f"{world.api}/flow_runs/{staged.flow_run_id}")
    assert done["state_type"] == "FAILED" and "expired" in done["state"]["message"], done["state"]
    assert not staged.staged_dir.exists() and not (world.releases / staged.release_id).exists()
    late = world.run("approve", staged.staged_id, "--policy", str(p.policy),
                     "--key", str(world.officer_key), "--yes")
    assert late.returncode == 2 and "expired" in late.stderr, late.stdout + late.stderr


# --- resume_if_paused's own cases ----------------------------------------------------------------

def test_resume_with_no_run_or_no_server_is_quiet_or_a_warning():
    from types import SimpleNamespace

    from deidflow.flows.approval_wait import resume_if_paused

    said: list[str] = []
    staged = SimpleNamespace(staged_id="r1", flow_run_id="0b9f2c1e-4a7d-4f7e-9a51-3c2d1e0f9a8b",
                             prefect_api_url=f"http://127.0.0.1:{free_port()}/api")
    assert resume_if_paused(staged, warn=said.append) == "unreachable"
    assert "could not reach the Prefect server" in said[0] and "decision is recorded" in said[0]
    assert resume_if_paused(SimpleNamespace(staged_id="r1", flow_run_id=None, prefect_api_url=None)) == "no-run"
