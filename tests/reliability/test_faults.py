"""Faults: a release killed at any point leaves no release behind, and the next run succeeds and
writes byte-identical data; an output directory that cannot be written, or a disk that fills
up, fails cleanly (deidflow's error, exit 2, nothing published).

Kills are real: the CLI runs in a child process that receives SIGKILL — no `finally`, no
atexit, exactly what an OOM killer or a lost node does. Deterministic points use the
DEIDFLOW_TEST_KILL_AT hook (release.plan.fault_injection, before every step); one more kill lands while
the transform or validation is writing the staging directory.
"""

from __future__ import annotations

import importlib
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from .conftest import Env, cli, data_digests, files_under, make_env

pytestmark = pytest.mark.slow

KILL_POINTS = ("search", "transform", "validate", "publish")


def _published(env: Env) -> list:
    """Release directories a recipient could pick up (staging dirs start with a dot)."""
    if not env.releases.exists():
        return []
    return sorted(p for p in env.releases.iterdir() if not p.name.startswith("."))


def _staging(env: Env) -> list:
    if not env.releases.exists():
        return []
    return sorted(p for p in env.releases.iterdir() if p.name.startswith(".staging-"))


def _kill_while_staging(env: Env) -> None:
    """Start a run and SIGKILL it as soon as its staging directory holds released data."""
    child_env = {k: v for k, v in os.environ.items() if k != "DEIDFLOW_PSEUDONYM_KEY"}
    child_env["PREFECT_HOME"] = str(env.root / "prefect")
    proc = subprocess.Popen([sys.executable, "-m", "deidflow.cli", "release", str(env.policy), "--no-prefect"],
                            cwd=env.root, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if any((s / "data").is_dir() and any((s / "data").iterdir()) for s in _staging(env)):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed mid-stage"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_killed_runs_leave_no_release_and_the_next_run_is_byte_identical(tmp_path, small_extract, baseline):
    env = make_env(tmp_path / "killed", small_extract)
    _kill_while_staging(env)  # first: later kills leave a staging dir it would mistake for its own
    assert _published(env) == []
    for point in KILL_POINTS:
        proc = cli(env, extra_env={"DEIDFLOW_TEST_KILL_AT": point})
        assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr[-2000:])
        assert _published(env) == [], f"killed before {point}: a release was published"
        if point in ("validate", "publish"):
            # the transform had started writing: its output is only in a hidden staging dir
            assert len(_staging(env)) == 1

    # SIGKILL skips cleanup, so the last killed run's private work dir (consented records) is
    # still there, 0700; each new run reaps the dirs of dead runs, so they never pile up.
    stale = list((env.private / "work").iterdir())
    assert len(stale) == 1
    assert all((p.stat().st_mode & 0o077) == 0 for p in stale)

    proc = cli(env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (release,) = _published(env)
    assert _staging(env) == [], "the successful run removed the killed runs' staging dirs"
    assert list((env.private / "work").iterdir()) == [], "the killed runs' work dirs were reaped"
    assert data_digests(release) == data_digests(baseline.release_dir)
    from deidflow.manifest.verify import verify_release

    assert verify_release(release, env.root / "keys" / "signing.pub").ok


def test_interrupted_publish_still_records_the_release(tmp_path, small_extract, monkeypatch):
    """Killed after the release directory was renamed into place but before the registry
    committed which subjects it contains (publish_release inserts them while it seals, and
    commits after the rename): the next run finds the release and must record it, or a later
    withdrawal would never be traced to this release."""
    from deidflow.consent.registry import ConsentRegistry, PendingRelease
    from deidflow.policy import load_policy
    from deidflow.release import registry_url, run_release

    env = make_env(tmp_path / "recorded", small_extract)

    class Killed(BaseException):
        pass

    def dies(self, *a, **kw):
        raise Killed()

    with monkeypatch.context() as m:
        m.setattr(PendingRelease, "commit", dies)
        with pytest.raises(Killed):
            run_release(env.policy)
    (release,) = _published(env)
    registry = ConsentRegistry(registry_url(load_policy(env.policy)))
    try:
        with registry.engine.connect() as conn:  # the uncommitted insert left nothing behind
            assert conn.exec_driver_sql("SELECT count(*) FROM release_subjects").scalar() == 0
    finally:
        registry.dispose()
    summary = run_release(env.policy)
    assert summary.already_released
    registry = ConsentRegistry(registry_url(load_policy(env.policy)))
    try:
        import sqlalchemy as sa

        with registry.engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            release_tables = [t for t in tables if "release" in t]
            assert release_tables, tables
            n = sum(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in release_tables)
    finally:
        registry.dispose()
    assert n > 0, "the release exists but the registry never recorded whom it contains"


def _recorded_subjects(env: Env) -> int:
    from deidflow.consent.registry import ConsentRegistry
    from deidflow.policy import load_policy
    from deidflow.release import registry_url

    registry = ConsentRegistry(registry_url(load_policy(env.policy)))
    try:
        with registry.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM release_subjects").scalar()
    finally:
        registry.dispose()


def test_a_release_that_fails_to_publish_is_not_recorded(tmp_path, small_extract, monkeypatch):
    """The registry inserts the release's subjects while the release is sealed: if the rename
    then fails, the insert is rolled back; nothing was published, so nothing is recorded."""
    from deidflow import release as stages
    from deidflow.errors import InputError
    from deidflow.release import run_release

    env = make_env(tmp_path / "unpublished", small_extract)

    def rename_fails(stage, final):
        raise InputError("cannot rename", file=str(final), fix="-")

    with monkeypatch.context() as m:
        m.setattr(importlib.import_module("deidflow.release.publish"), "rename_into_place", rename_fails)
        with pytest.raises(InputError, match="cannot rename"):
            run_release(env.policy)
    assert _published(env) == [] and _staging(env) == []
    assert _recorded_subjects(env) == 0
    summary = run_release(env.policy)  # and the next run publishes and records it
    assert not summary.already_released
    assert _recorded_subjects(env) == summary.released > 0


def test_a_registry_that_cannot_record_stops_the_release_unpublished(tmp_path, small_extract, monkeypatch):
    """A release that the registry could not record would be one a later withdrawal cannot be
    traced to: the failed insert is reported before the rename, and nothing is published."""
    import sqlite3

    from deidflow.consent import registry as registry_module
    from deidflow.errors import ConsentError
    from deidflow.release import run_release

    env = make_env(tmp_path / "unrecordable", small_extract)

    def locked(*a, **kw):
        raise sqlite3.OperationalError("database is locked")

    with monkeypatch.context() as m:
        m.setattr(registry_module, "_insert_release_sqlite", locked)
        with pytest.raises(ConsentError, match="database is locked"):
            run_release(env.policy)
    assert _published(env) == [] and _staging(env) == []
    assert _recorded_subjects(env) == 0


def test_output_directory_that_is_a_file_fails_cleanly(tmp_path, small_extract):
    env = make_env(tmp_path / "blocked", small_extract)
    env.releases.write_text("a file where the output directory should be")
    proc = cli(env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot create the output directory" in proc.stderr and "Traceback" not in proc.stderr
    assert env.releases.is_file()
    work = env.private / "work"
    assert not work.exists() or not any(work.iterdir())


def _limit_file_size(limit: int):
    def apply() -> None:
        # A write past the limit fails with EFBIG instead of killing the process: the same
        # OSError path as ENOSPC on a full disk, without needing a small filesystem.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("limit", [20_000, 200_000])
def test_full_disk_fails_cleanly(tmp_path, small_extract, limit):
    """Writes stop succeeding part-way (a file may grow to `limit` bytes, no more)."""
    env = make_env(tmp_path / f"full{limit}", small_extract)
    child_env = {k: v for k, v in os.environ.items() if k != "DEIDFLOW_PSEUDONYM_KEY"}
    child_env["PREFECT_HOME"] = str(env.root / "prefect")
    proc = subprocess.run([sys.executable, "-m", "deidflow.cli", "release", str(env.policy), "--no-prefect"],
                          cwd=env.root, env=child_env, capture_output=True, text=True, timeout=600,
                          preexec_fn=_limit_file_size(limit))
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:])
    assert "Traceback" not in proc.stderr and "Fix:" in proc.stderr
    assert _published(env) == [] and _staging(env) == []
    work = env.private / "work"
    assert not work.exists() or not any(work.iterdir())
    if limit < 100_000:
        return
    # and once there is room again, the release goes through
    proc = cli(env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(_published(env)) == 1
    assert files_under(_published(env)[0])
