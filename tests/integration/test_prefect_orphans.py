"""`deidflow.prefect_server`: which temporary Prefect servers count as left behind by a killed
run, and that they are stopped. Stand-in processes (a sleeping Python whose command line and
environment are a temporary server's) keep it cheap; test_cli_paths kills a real run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from deidflow.prefect_server import RUN_MARK, orphaned_servers, stop_orphaned_servers


def _server(home, mark: int, ephemeral: str = "1") -> subprocess.Popen:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT__SERVER_EPHEMERAL": ephemeral, RUN_MARK: str(mark)}
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                             "prefect.server.api.server:create_app"], env=env)


def test_only_servers_whose_run_is_gone_are_stopped(tmp_path):
    home, other = tmp_path / "prefect", tmp_path / "other"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    procs = {
        "orphan": _server(home, dead.pid),  # its run is gone: its parent is not that run
        "live": _server(home, os.getpid()),  # its run (this process) is its parent
        "other home": _server(other, dead.pid),
        "not ephemeral": _server(home, dead.pid, ephemeral="0"),
    }
    try:
        time.sleep(0.3)  # the children have exec'd
        assert orphaned_servers(home) == [procs["orphan"].pid]
        assert stop_orphaned_servers(home, wait=5) == [procs["orphan"].pid]
        assert procs["orphan"].wait(timeout=5) == -signal.SIGTERM
        assert all(p.poll() is None for name, p in procs.items() if name != "orphan")
        assert orphaned_servers(home) == []
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
