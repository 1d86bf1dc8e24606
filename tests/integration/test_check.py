"""`deidflow check` finds, before any release, a hierarchy that does not fit its column's
data and a registry that would let nobody through; it prints counts, never values."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import write_policy


def _deidflow(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("deidflow", path=str(Path(sys.executable).parent)) or "deidflow"
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("DEIDFLOW_PSEUDONYM_KEY", None)
    return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_check_reports_hierarchies_and_consent_coverage(env, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _deidflow(elsewhere, "check", str(env.policy))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hierarchies against the data" in proc.stdout
    assert "region_code" in proc.stdout and "fails" not in proc.stdout
    assert "consent coverage:" in proc.stdout and "of 800 subjects" in proc.stdout


def test_check_fails_on_a_hierarchy_that_does_not_fit_the_data(env):
    bad = write_policy(env.root, env.data, name="bad-hierarchy.yaml",
                       edits={r"hierarchy: \{kind: region\}": "hierarchy: {kind: date}"})
    proc = _deidflow(env.root, "check", str(bad))
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "patients.region_code" in out and "not dates" in out and "Traceback" not in out


def test_check_fails_when_the_registry_has_no_consents(env):
    bad = write_policy(env.root, env.data, name="no-registry.yaml",
                       registry=f"sqlite:///{env.root / 'missing' / 'consent.db'}")
    proc = _deidflow(env.root, "check", str(bad))
    assert proc.returncode == 2
    assert "does not exist yet" in proc.stdout + proc.stderr
    assert not (env.root / "missing" / "consent.db").exists()
