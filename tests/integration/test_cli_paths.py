"""The installed `deidflow` command on both paths (the default Prefect flow and --no-prefect),
run from a working directory that is not the project's: a rerun reports the existing release
(exit 0, that release's figures), user errors are deidflow's message alone, Prefect's home is
under the policy's private directory, and a policy edited during a run is never published."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import write_policy

DEIDFLOW = str(Path(sys.executable).parent / "deidflow")
PATHS = [pytest.param([], id="prefect"), pytest.param(["--no-prefect"], id="no-prefect")]


def run(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None, timeout: float = 600,
        end_group: bool = True):
    """The installed command in its own process group; whatever it started and left behind
    when killed (Prefect's temporary server) is ended with it, unless `end_group` is false."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DEIDFLOW_PSEUDONYM_KEY", "PREFECT_HOME", "PREFECT_API_URL")}
    env.update({"COLUMNS": "200"}, **(extra_env or {}))
    out, err = cwd / ".out", cwd / ".err"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([DEIDFLOW, *args], cwd=cwd, env=env, stdout=fo, stderr=fe, text=True,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        finally:
            try:
                if end_group or proc.returncode is None:
                    os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())
    out.unlink(), err.unlink()
    return result


def published(env) -> list[Path]:
    return sorted(p for p in env.releases.iterdir() if not p.name.startswith(".")) if env.releases.exists() else []


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    d = tmp_path / "somewhere-else"
    d.mkdir()
    return d


@pytest.mark.parametrize("path", PATHS)
def test_a_killed_run_leaves_nothing_the_next_publishes_and_a_rerun_reports_it(env, elsewhere, path):
    """The kill hook fires in both executors (before publish: the staged release is complete);
    the next run publishes; a rerun from any directory reports that release. (One sequence per
    path: each command on the Prefect path pays for a server start.) On the default path the
    killed run's temporary Prefect server outlives it (SIGKILL: no clean-up); the next run stops
    it before it starts Prefect (`deidflow.prefect_server`)."""
    from deidflow.prefect_server import orphaned_servers

    killed = run(["release", str(env.policy), *path], elsewhere, {"DEIDFLOW_TEST_KILL_AT": "publish"},
                 end_group=False)
    orphans = orphaned_servers(env.private / "prefect")
    try:
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        assert published(env) == []
        assert len(orphans) == (0 if path else 1), orphans
        first = run(["release", str(env.policy), *path], elsewhere)
        assert first.returncode == 0, first.stdout + first.stderr
        assert len(published(env)) == 1
        assert not [p for p in env.releases.iterdir() if p.name.startswith(".staging-")]
        assert not [p for p in orphans if Path(f"/proc/{p}").exists()
                    and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"]
    finally:
        for pid in orphans:  # the server this test's killed run left, if the fix did not end it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert "already released" not in first.stdout
    (release,) = published(env)
    again = run(["release", str(env.policy), *path], elsewhere)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already released" in again.stdout and release.name in again.stdout
    assert "Traceback" not in again.stdout + again.stderr
    assert published(env) == [release]
    # the figures printed are the release's own (its signed record), the same both times
    figures = [ln for ln in first.stdout.splitlines() if "│" in ln]
    assert figures and figures == [ln for ln in again.stdout.splitlines() if "│" in ln]
    assert not (elsewhere / ".deidflow").exists(), "nothing is written to the working directory"
    if not path:
        assert (env.private / "prefect").is_dir(), "Prefect's home is under the private directory"


@pytest.mark.parametrize("path", PATHS)
def test_a_policy_typo_is_reported_before_prefect_starts(env, elsewhere, path):
    bad = write_policy(env.root, env.data, edits={r"suppression_budget:": "suppresion_budget:"}, name="typo.yaml")
    res = run(["release", str(bad), *path], elsewhere)
    assert res.returncode == 2
    out = res.stdout + res.stderr
    assert "suppresion_budget" in out and "Traceback" not in out
    assert "prefect" not in out.lower()
    assert len(out.splitlines()) <= 6, out
    assert not (env.private / "prefect").exists(), "Prefect never started"


@pytest.mark.parametrize("path", PATHS)
def test_an_error_inside_the_run_is_deidflows_message_alone(env, elsewhere, path):
    """No consent for this recipient: the search stage refuses. On the Prefect path the
    message is the same few lines, without Prefect's task-failure tracebacks."""
    bad = write_policy(env.root, env.data, edits={r'id: "shanghai-ai-lab"': 'id: "nobody-lab"'}, name="nobody.yaml")
    res = run(["release", str(bad), *path], elsewhere)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "no subject has a valid consent" in out and "Nothing was released" in out
    assert "Traceback" not in out and "| ERROR" not in out
    assert len(out.splitlines()) <= 8, out
    assert published(env) == []


def test_partition_as_documented(env, elsewhere):
    """`deidflow partition POLICY --out DIR --partitions N`, as the README shows it."""
    res = run(["partition", str(env.policy), "--out", "parts", "--partitions", "4"], elsewhere)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert len(list((elsewhere / "parts" / "patients").glob("part-*.parquet"))) == 4
    assert "format: parquet" in res.stdout
