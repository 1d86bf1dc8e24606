"""Every command the README shows, as written, through the installed `deidflow` entry point
(and `make run`), in a copy of the project: configs/, data_samples/ and the Makefile, with
the project's installed environment as its .venv. Left out: `make test` (this suite), `make
server`/`make pg` (long-running servers) and `deidflow serve` against a server, which
tests/integration/test_serve.py runs."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in ("configs", "data_samples"):
        shutil.copytree(REPO / name, root / name)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, root / name)
    venv = root / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(BIN)
    (venv / ".installed-stamp").touch()  # newer than the copied pyproject.toml: no install
    return root


def sh(project: Path, command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """One README command line, run as written from the project's root."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DEIDFLOW_PSEUDONYM_KEY", "PREFECT_HOME", "PREFECT_API_URL")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", COLUMNS="200")
    out, err = project / ".cmd.out", project / ".cmd.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(shlex.split(command), cwd=project, env=env, stdout=fo, stderr=fe,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, 9)  # anything it left behind (a Prefect server)
            except ProcessLookupError:
                pass
    res = subprocess.CompletedProcess(command, proc.returncode, out.read_text(), err.read_text())
    out.unlink(), err.unlink()
    assert "Traceback" not in res.stdout + res.stderr, (command, res.stdout + res.stderr)
    return res


def ok(project: Path, command: str) -> str:
    res = sh(project, command)
    assert res.returncode == 0, (command, res.stdout + res.stderr)
    return res.stdout + res.stderr


def test_make_run_twice_then_every_command(project):
    first = ok(project, "make run")
    release_id = re.search(r"release (DSA-2026-0042-[0-9a-f]+)", first).group(1)
    assert "subjects in" in first and "2,000" in first and "already released" not in first
    # the example policy requires approval: make run staged, then approved with the demo key
    assert f"approved and published release {release_id}" in first
    assert re.search(rf"review page: \S*releases/{release_id}/review.html", first)
    again = ok(project, "make run")
    assert f"release {release_id} (already released; nothing new)" in again
    assert "no release is awaiting approval" in again
    assert [p.name for p in (project / "releases").iterdir()] == [release_id]
    verified = ok(project, f"deidflow verify releases/{release_id}")
    assert "approved by Demo privacy officer" in verified and "make run demo" in verified

    # the Approval section: an officer key of one's own, listed in the trust file
    ok(project, 'deidflow keys init --role approver --owner "privacy officer" --out officer-keys')
    ok(project, 'deidflow keys trust officer-keys/approver.pub --owner "privacy officer" --role approver '
                "--trust .deidflow/trust.yaml")
    assert "no release is awaiting approval" in ok(project, "deidflow releases list releases --policy configs/release.yaml")

    assert "is valid" in ok(project, "deidflow check configs/release.yaml")
    assert "is valid" in ok(project, "deidflow -v check configs/release.yaml")
    assert "pseudonymise" in ok(project, "deidflow techniques")
    assert "verified" in ok(project, f"deidflow verify releases/{release_id}")
    assert release_id in ok(project, "deidflow releases list releases")
    ok(project, "deidflow releases due releases")
    purge = sh(project, f"deidflow releases purge {release_id} --root releases --private .deidflow/private")
    assert purge.returncode == 2 and (project / "releases" / release_id).is_dir()
    assert "signing key" in ok(project, "deidflow keys init --key keys-elsewhere/signing.key").lower() or \
        (project / "keys-elsewhere" / "signing.key").is_file()

    ok(project, "deidflow consent status --policy configs/release.yaml")
    ok(project, "deidflow consent withdraw P0000001 --reason 'phoned the ward' --policy configs/release.yaml")
    ok(project, "deidflow consent withdrawn --policy configs/release.yaml")
    assert "deletion notice" in ok(project, "deidflow recheck configs/release.yaml")

    # the scale-out path as the README describes it: partition, point the policy at the parts
    parts = ok(project, "deidflow partition configs/release.yaml --out parts --partitions 4")
    assert "format: parquet" in parts
    policy = (project / "configs" / "release.yaml").read_text(encoding="utf-8")
    for table in ("patients", "encounters", "diagnoses", "lab_results", "notes"):
        policy = policy.replace(f"path: ../data_samples/{table}.csv", f"path: ../parts/{table}\n    format: parquet")
    (project / "configs" / "parts.yaml").write_text(policy, encoding="utf-8")
    dask = ok(project, "deidflow release configs/parts.yaml --engine dask --workers 2")
    assert "released" in dask and "awaiting approval" in dask
    staged_id = re.search(r"staged id:\s+(\S+)", dask).group(1)
    assert staged_id in ok(project, "deidflow releases list releases --policy configs/parts.yaml")
    rejected = ok(project, f"deidflow reject {staged_id} --policy configs/parts.yaml --key "
                           "officer-keys/approver.key --reason \"regions too fine\"")
    assert "nothing published" in rejected
    assert [p.name for p in (project / "releases").glob("DSA-*")] == [release_id]

    serve = sh(project, "deidflow serve configs/release.yaml")
    assert serve.returncode == 2 and "PREFECT_API_URL" in serve.stdout + serve.stderr

    # last: as written it regenerates data_samples/ (here with fewer patients)
    assert "patients" in ok(project, "deidflow samples --patients 50")
