"""The release flow run pauses for the privacy officer on a real Prefect server (issue 20).

One `prefect server start` per module (its own PREFECT_HOME and SQLite database). Each test
runs the installed `deidflow release POLICY` in the background against it, from a working
directory that is not the project's, waits until its flow run is Paused, reads what the UI
would show (state message, artifact), then decides from the command line: `deidflow approve`
resumes the run and it completes with the release published; `deidflow reject` resumes it
and it ends reporting the rejection with nothing published; a staged release that expires
ends the run saying so. The Prefect path on the temporary server (no pause, "awaiting
approval") and the in-process path are the approval tests' (test_approval*.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from .conftest import SECRET_HEX, _import_consents, write_policy

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
EXECUTOR = "Data engineering, Example Hospital"
OFFICER = "Privacy Officer, Example Hospital"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen | None) -> None:
    """Kill a process group we started (server, background release), even on failure."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _wait(pred, timeout: float, what: str, procs=()):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: a process exited early (rc={p.returncode})")
        try:
            value = pred()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A real Prefect server for this module; stopped (its process group) whatever happens."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
    log = open(home / "server.log", "w")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        _wait(lambda: urllib.request.urlopen(f"{api}/health", timeout=2).status == 200, 120,
              "the Prefect server to start", [server])
        yield api
    finally:
        _stop(server)
        log.close()


@dataclass
class World:
    root: Path
    cwd: Path
    data: Path
    officer_key: Path
    api: str
    outputs: list[str] = field(default_factory=list)

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def private(self) -> Path:
        return self.root / "private"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PREFECT_") and k not in ("DEIDFLOW_PSEUDONYM_KEY", "DEIDFLOW_TRUST_FILE")}
        env.update(PATH=f"{BIN}:{env.get('PATH', '')}", COLUMNS="200",
                   PREFECT_HOME=str(self.root / "prefect-cli"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        return env | extra

    def run(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "deidflow"), *args], cwd=self.cwd, env=self.env(),
                              capture_output=True, text=True, timeout=300)
        self.outputs.append(proc.stdout + proc.stderr)
        return proc

    def policy(self, version: str) -> Path:
        """A policy requiring approval; its own plan version, so its own release id."""
        path = write_policy(self.root, self.data, name=f"policy-{version}.yaml", edits={
            r"(\n  model: controlled[^\n]*)": r"\1\n  approval: required",
            r"(signing_key_file: [^\n]*)": r"\1\n  trust_file: trust.yaml",
            r'version: "2026-11-r1"': f'version: "{version}"',
        })
        _import_consents(path, self.data)
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, extract, prefect_api) -> World:
    from deidflow.manifest.signing import generate_signing_keys
    from deidflow.manifest.trust import KeyRole, add_trusted_key

    root = tmp_path_factory.mktemp("approval-pause")
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    (keys / "pseudonym.key").write_text(SECRET_HEX + "\n")
    (keys / "pseudonym.key").chmod(0o600)
    _, executor_pub = generate_signing_keys(keys / "signing.key")
    add_trusted_key(root / "trust.yaml", executor_pub, owner=EXECUTOR, role=KeyRole.executor)
    officer, officer_pub = generate_signing_keys(root / "officer" / "officer.key")
    add_trusted_key(root / "trust.yaml", officer_pub, owner=OFFICER, role=KeyRole.approver)
    cwd = root / "elsewhere"
    cwd.mkdir()
    return World(root, cwd, extract, officer, prefect_api)


@dataclass
class Paused:
    proc: subprocess.Popen
    policy: Path
    staged: object
    run: dict
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8")


def start_paused_release(world: World, version: str) -> Paused:
    """`deidflow release POLICY` in the background on the server, until its run is Paused."""
    from deidflow.release.approval import pending

    policy = world.policy(version)
    log = world.root / f"release-{version}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(BIN / "deidflow"), "release", str(policy)], cwd=world.cwd,
                                env=world.env(PREFECT_API_URL=world.api), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def paused():
        for staged in pending(world.private):
            if staged.policy_path == str(policy) and staged.flow_run_id:
                run = _get(f"{world.api}/flow_runs/{staged.flow_run_id}")
                if run["state_type"] == "PAUSED":
                    return staged, run
        return None

    try:
        staged, run = _wait(paused, 300, "the release flow run to pause", [proc])
    except BaseException:
        _stop(proc)
        print(log.read_text(encoding="utf-8"))
        raise
    return Paused(proc, policy, staged, run, log)


def finish(p: Paused, timeout: float = 120) -> int:
    try:
        return p.proc.wait(timeout)
    finally:
        _stop(p.proc)


def artifacts_of(world: World, run_id: str) -> list[dict]:
    return _post(f"{world.api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})


def prefect_text(world: World, run_id: str) -> str:
    """Everything the server keeps about a run that a UI user could read: parameters, every
    state's name and message, artifacts, logs."""
    run = _get(f"{world.api}/flow_runs/{run_id}")
    states = _get(f"{world.api}/flow_run_states/?flow_run_id={run_id}")
    logs = _post(f"{world.api}/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    return json.dumps([run, states, artifacts_of(world, run_id), logs], ensure_ascii=False)


def no_values_in(text: str, data: Path) -> None:
    patients = pd.read_csv(data / "patients.csv", dtype="string", keep_default_na=False)
    assert SECRET_HEX not in text
    for col in ("name", "resident_id", "mobile", "address"):
        for v in patients[col].head(200):
            if len(v) >= (8 if v.isdigit() else 3):
                assert v not in text, f"a patients.{col} value reached Prefect or the terminal"


# --- approve ------------------------------------------------------------------------------------

def test_approve_resumes_the_paused_run_and_it_completes_published(world: World):
    p = start_paused_release(world, "2026-11-approve")
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
        _wait(lambda: "paused" in p.output() and str(staged.review_page) in p.output(), 30,
              "the terminal to say the run is paused")

        approve = world.run("approve", staged.staged_id, "--policy", str(p.policy),
                            "--key", str(world.officer_key), "--yes", "--comment", "fine for training")
        assert approve.returncode == 0, approve.stdout + approve.stderr
        assert "warning" not in approve.stderr.lower(), approve.stderr
        rc = finish(p)
        out = p.output()
        assert rc == 0, out
    finally:
        _stop(p.proc)
    final = world.releases / staged.release_id
    assert f"release:      {final}" in out
    done = _get(f"{world.api}/flow_runs/{staged.flow_run_id}")
    assert done["state_type"] == "COMPLETED", done["state"]
    names = [s["name"] for s in sorted(_get(f"{world.api}/flow_run_states/?flow_run_id={staged.flow_run_id}"),
                                       key=lambda s: s["timestamp"])]
    assert names[-3:] == ["Paused", "Running", "Completed"], names
    envelope = json.loads((final / "manifest.json").read_text())
    assert len(envelope["signatures"]) == 2
    verify = world.run("verify", str(final), "--trust", str(world.root / "trust.yaml"))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert OFFICER in verify.stdout + verify.stderr
    no_values_in(prefect_text(world, staged.flow_run_id) + out + approve.stdout + approve.stderr, world.data)


# --- reject -------------------------------------------------------------------------------------

def test_reject_resumes_the_run_and_it_ends_reporting_the_rejection(world: World):
    p = start_paused_release(world, "2026-11-reject")
    try:
        staged = p.staged
        reject = world.run("reject", staged.staged_id, "--policy", str(p.policy),
                           "--key", str(world.officer_key), "--reason", "ages too fine")
        assert reject.returncode == 0, reject.stdout + reject.stderr
        assert "warning" not in reject.stderr.lower(), reject.stderr
        rc = finish(p)
        out = " ".join(p.output().split())
    finally:
        _stop(p.proc)
    assert rc == 2, out
    assert f"staged release {staged.staged_id} was rejected" in out and "Nothing was released" in out
    assert "Traceback" not in out
    done = _get(f"{world.api}/flow_runs/{staged.flow_run_id}")
    assert done["state_type"] == "FAILED" and "rejected" in done["state"]["message"], done["state"]
    assert not (world.releases / staged.release_id).exists()
    assert not staged.staged_dir.exists()
    no_values_in(prefect_text(world, staged.flow_run_id) + out, world.data)


# --- expiry -------------------------------------------------------------------------------------

def test_a_staged_release_not_decided_in_time_expires_and_the_run_says_so(world: World):
    p = start_paused_release(world, "2026-11-expire")
    try:
        staged = p.staged
        # Time passes: the staged record's expiry moves into the past (approval_days is whole
        # days); the waiting run finds it at its next poll, removes the staged release and ends.
        meta = staged.staged_dir / "staged.json"
        record = json.loads(meta.read_text())
        record["expires_at"] = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
        meta.write_text(json.dumps(record))
        rc = finish(p)
        out = " ".join(p.output().split())
    finally:
        _stop(p.proc)
    assert rc == 2, out
    assert f"staged release {staged.staged_id} expired" in out and "approval_days" in out
    done = _get(f"{world.api}/flow_runs/{staged.flow_run_id}")
    assert done["state_type"] == "FAILED" and "expired" in done["state"]["message"], done["state"]
    assert not staged.staged_dir.exists() and not (world.releases / staged.release_id).exists()
    late = world.run("approve", staged.staged_id, "--policy", str(p.policy),
                     "--key", str(world.officer_key), "--yes")
    assert late.returncode == 2 and "expired" in late.stderr, late.stdout + late.stderr


# --- Prefect down at decision time --------------------------------------------------------------

def test_resume_with_the_server_unreachable_warns_and_does_not_fail():
    from types import SimpleNamespace

    from deidflow.flows.approval_wait import resume_if_paused

    said: list[str] = []
    staged = SimpleNamespace(staged_id="r1", flow_run_id="0b9f2c1e-4a7d-4f7e-9a51-3c2d1e0f9a8b",
                             prefect_api_url=f"http://127.0.0.1:{_free_port()}/api")
    assert resume_if_paused(staged, warn=said.append) == "unreachable"
    assert "could not reach the Prefect server" in said[0] and "decision is recorded" in said[0]
    assert resume_if_paused(SimpleNamespace(staged_id="r1", flow_run_id=None, prefect_api_url=None)) == "no-run"
