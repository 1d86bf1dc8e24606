"""Where a run's files live. The private work directory (hospital side, 0700, removed when the
run ends) holds the gated partitions, the consent verdicts, the frequency tables, the
pseudonym mapping and the exclusion log; the staging directory (one per run, in the output
directory) holds the release until it is renamed into place. Every path a stage uses is
made here; dead runs' directories are reaped here; the lock per output directory is here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import pandas as pd

from deidflow.errors import InputError
from deidflow.io import read_work
from deidflow.policy import LoadedPolicy
from deidflow.release.state import RunState, STATE


def private_dir(loaded: LoadedPolicy) -> Path:
    return loaded.resolve(loaded.policy.output.private_directory)


def output_root(loaded: LoadedPolicy) -> Path:
    return loaded.resolve(loaded.policy.output.directory)


def staging_dir(loaded: LoadedPolicy, state: RunState) -> Path:
    """This run's staging directory: named by the release id *and* the run, so two runs into
    one output directory never share (or delete) one."""
    return output_root(loaded) / f".staging-{state.release_id}.{state.run_id}"


def prepare_staging(loaded: LoadedPolicy, state: RunState) -> Path:
    """A fresh staging directory for this run. Staging left by runs that are over (their work
    directory reaped or removed) is removed; a live run's is never touched."""
    root = output_root(loaded)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output directory: {exc.strerror}", file=str(root),
                         fix="choose a writable output.directory in the policy") from None
    if not os.access(root, os.W_OK):
        raise InputError("the output directory is not writable", file=str(root),
                         fix="fix its permissions or choose another output.directory")
    work_root = private_dir(loaded) / "work"
    with output_lock(loaded):
        for stale in root.glob(".staging-*"):
            run = stale.name.rsplit(".", 1)[-1]
            if "." not in stale.name[len(".staging-"):] or not (work_root / run).is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        stage = staging_dir(loaded, state)
        stage.mkdir()
    return stage


class output_lock:
    """An exclusive lock on one output directory, held while a run creates its staging or
    publishes: the check that a release id is free and the rename into it are one step for
    every run writing there. The lock file (flock) is in the private directory, named by the
    output directory's resolved path, so nothing but releases appears in the output."""

    def __init__(self, loaded: LoadedPolicy) -> None:
        root = str(output_root(loaded).resolve())
        locks = private_dir(loaded) / "locks"
        locks.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = locks / (hashlib.sha256(root.encode()).hexdigest()[:16] + ".lock")

    def __enter__(self) -> "output_lock":
        import fcntl

        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def parquet_part(i: int) -> str:
    return f"part-{i:05d}.parquet"


def gated_path(work: Path, table: str, i: int) -> Path:
    return work / "gated" / table / arrow_part(i)


def consented_path(work: Path, table: str, i: int) -> Path:
    """Per row of a non-subject table's gated part: whether its subject passed the gate."""
    return work / "gated" / table / f"part-{i:05d}.consented.npy"


def gated_part(work: Path, table: str, i: int, columns: list[str] | None = None) -> pd.DataFrame:
    return read_work(gated_path(work, table, i), columns)


def gated_table(work: Path, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The consented rows of a table, all partitions in order."""
    parts = sorted((work / "gated" / table).glob("part-*.arrow"))
    return pd.concat([read_work(p, columns) for p in parts], ignore_index=True)


def arrow_part(i: int) -> str:
    """File name of partition i of a run's private Arrow work files."""
    return f"part-{i:05d}.arrow"


def reap_stale_work(root: Path) -> None:
    """Remove the work directories of runs that were killed (their process on this host is
    gone): they hold consented records and must not outlive their run. A directory without a
    readable state older than an hour is a run killed before it saved one."""
    if not root.is_dir():
        return
    import time

    host = socket.gethostname()
    for d in root.iterdir():
        try:
            st = json.loads((d / STATE).read_text())
            if st.get("host") != host or not st.get("pid"):
                continue
            try:
                os.kill(int(st["pid"]), 0)
                continue  # still running
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        except (OSError, ValueError):
            if time.time() - d.stat().st_mtime < 3600:
                continue
        shutil.rmtree(d, ignore_errors=True)


EXCLUSION_LOG = "consent-exclusions.csv"


def released_copy(work: Path, name: str) -> Path:
    return work / "released" / f"{name}.arrow"


def pseudonym_mapping(work: Path) -> pd.DataFrame:
    parts = sorted((work / "pseudonyms").glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
