"""A real Prefect server for the tests that need one (schedules, paused runs): started in its
own process group with its own PREFECT_HOME, and the small HTTP helpers they poll it with."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def post(url: str, body: dict):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def wait(pred, timeout: float, what: str, procs=(), every: float = 0.5):
    """Poll `pred` until it returns something true; fail if one of `procs` exits first."""
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
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen | None) -> None:
    """End a process group we started (server, background command), even on failure."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def server_env(home: Path) -> dict[str, str]:
    """This environment without any PREFECT_ setting, and a quiet Prefect homed at `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
    return env


def start_server(home: Path, log: IO, timeout: float, extra_env: dict[str, str] | None = None
                 ) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on a free port, homed at `home`; returns it and its API URL once
    it answers /health (the caller stops it with `stop`)."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=server_env(home) | (extra_env or {}),
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait(lambda: urllib.request.urlopen(f"{api}/health", timeout=2).status == 200, timeout,
             "the Prefect server to start", [server])
    except BaseException:
        stop(server)
        raise
    return server, api
