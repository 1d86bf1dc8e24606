"""The whole-record release on both executors: the Prefect flow, and the installed `deidflow`
command with --no-prefect started from a directory that is not the project's. Both release
the same diabetes extract (patients + encounters, QIs in both) with the same levels."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.datasets.helpers import (consent_log, import_consents, place_policy, recheck_k,
                                    setup_root)
from tests.datasets.test_diabetes import ENCOUNTER_QIS, PATIENT_QIS, split


def _setup(root: Path, datasets, monkeypatch) -> Path:
    patients, _ = split(datasets / "diabetes_130_us_hospitals" / "diabetic_data.csv",
                        root / "data", n_patients=3000)
    setup_root(root, monkeypatch)
    policy = place_policy("diabetes", root, {"patients": root / "data" / "patients.csv",
                                             "encounters": root / "data" / "encounters.csv"})
    import_consents(policy, consent_log(root / "consents.csv", patients["patient_nbr"],
                                        purpose="ai-model-training", recipient="readmission-lab",
                                        categories=["demographics", "encounters"]))
    return policy


def _released(release_dir: Path):
    p = pd.read_parquet(release_dir / "data" / "patients.parquet")
    e = pd.read_parquet(release_dir / "data" / "encounters.parquet")
    return p, e


def test_flow_and_installed_command_agree(tmp_path, datasets, monkeypatch, prefect_harness):
    from deidflow.manifest.verify import read_record_unverified
    from flows.release import release_flow

    a = _setup(tmp_path / "flow", datasets, monkeypatch)
    state = release_flow(policy_path=str(a), return_state=True)
    assert state.is_completed(), state.message
    flow_dir = Path(state.result()["release_dir"])
    p, e = _released(flow_dir)
    assert recheck_k(p, "patient_nbr", PATIENT_QIS, [(e, ENCOUNTER_QIS)]) >= 5

    b = _setup(tmp_path / "cli", datasets, monkeypatch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exe = shutil.which("deidflow", path=str(Path(sys.executable).parent)) or "deidflow"
    env = {k: v for k, v in os.environ.items() if k != "DEIDFLOW_PSEUDONYM_KEY"}
    proc = subprocess.run([exe, "release", str(b), "--no-prefect"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    (cli_dir,) = [d for d in (tmp_path / "cli" / "releases").iterdir()
                  if not d.name.startswith(".")]
    p2, e2 = _released(cli_dir)
    assert recheck_k(p2, "patient_nbr", PATIENT_QIS, [(e2, ENCOUNTER_QIS)]) >= 5
    assert (read_record_unverified(flow_dir).risk.levels
            == read_record_unverified(cli_dir).risk.levels)
    assert len(p) == len(p2) and len(e) == len(e2)
