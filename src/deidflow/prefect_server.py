"""The temporary Prefect API server of a default-path run, and the ones killed runs left.

Without PREFECT_API_URL, Prefect starts a temporary API server (a uvicorn child process with
Prefect's home, the policy's private `prefect/` directory) and stops it when the run's
process exits. A run killed with SIGKILL cannot stop it: the server is left running, holding
its port and Prefect's database in the private directory. Each run marks its environment
with its own process id (`RUN_MARK`), which the server inherits; before the next run starts
Prefect, `stop_orphaned_servers` ends every server of that home whose run is no longer its
parent (that run is gone). Servers of live runs, other homes and other users are never touched.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

RUN_MARK = "DEIDFLOW_RUN_PID"
_SERVER_APP = b"prefect.server.api.server:create_app"


def mark_run() -> None:
    """Mark this process's environment (inherited by the server Prefect starts for it)."""
    os.environ[RUN_MARK] = str(os.getpid())


def _environ(pid: str) -> dict[bytes, bytes]:
    raw = Path("/proc", pid, "environ").read_bytes()
    return dict(kv.split(b"=", 1) for kv in raw.split(b"\0") if b"=" in kv)


def _parent(pid: str) -> int:
    stat = Path("/proc", pid, "stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state


def orphaned_servers(home: Path) -> list[int]:
    """Process ids of temporary Prefect servers with Prefect home `home`, started by a
    deidflow run that is no longer their parent (Linux /proc; elsewhere none are found)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    uid, want = os.getuid(), Path(home).resolve()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid or _SERVER_APP not in (entry / "cmdline").read_bytes():
                continue
            env = _environ(entry.name)
            mark = env.get(RUN_MARK.encode())
            if env.get(b"PREFECT__SERVER_EPHEMERAL") != b"1" or not mark or \
                    Path(os.fsdecode(env.get(b"PREFECT_HOME", b""))).resolve() != want:
                continue
            if _parent(entry.name) == int(mark):
                continue  # its run is alive
            found.append(int(entry.name))
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path("/proc", str(pid), "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def stop_orphaned_servers(home: Path, wait: float = 5.0) -> list[int]:
    """End the temporary servers killed runs left under `home` (SIGTERM, then SIGKILL after
    `wait` seconds). Returns their process ids."""
    pids = orphaned_servers(home)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return pids
