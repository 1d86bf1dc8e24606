"""A generated extract, a policy and a registry for running the installed `deidflow` command
from a working directory that is not the project's, and the reference evaluator's verdict
for a release (tests/consent/reference.py) to check what went out against."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

import reference
from tests.integration.conftest import write_policy as _example_policy

SECRET_HEX = "5f1c2a9e8b7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b"
RELEASE = dict(purpose="ai-model-training", recipient="shanghai-ai-lab",
               categories=["demographics", "encounters", "diagnoses", "labs", "notes"], abroad=False)


def deidflow_bin() -> str:
    """The installed command of this interpreter's environment."""
    path = Path(sys.executable).parent / "deidflow"
    return str(path) if path.exists() else (shutil.which("deidflow") or "deidflow")


def write_policy(root: Path, data: Path, *, registry: str, edits: dict[str, str] | None = None) -> Path:
    return _example_policy(root, data, registry=registry, edits=edits)


class Cli:
    """Runs `deidflow …` in ``cwd`` (not the project's directory)."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if k != "DEIDFLOW_PSEUDONYM_KEY"}
        self.env["COLUMNS"] = "250"
        self.env["PREFECT_HOME"] = str(cwd / ".prefect")

    def __call__(self, *args: str, ok: bool | None = True, timeout: int = 600) -> subprocess.CompletedProcess:
        res = subprocess.run([deidflow_bin(), *map(str, args)], cwd=self.cwd, env=self.env,
                             capture_output=True, text=True, timeout=timeout)
        if ok is True:
            assert res.returncode == 0, res.stdout + res.stderr
        elif ok is False:
            assert res.returncode != 0, res.stdout + res.stderr
            assert "Traceback" not in res.stdout + res.stderr
        return res


def registry_events(url: str) -> list[dict]:
    """Every event of the registry in arrival order, as the reference reads them."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(sa.text("SELECT * FROM consent_events ORDER BY seq"), conn)
    finally:
        engine.dispose()
    frame["recorded_at"] = pd.to_datetime(frame["recorded_at"], utc=True)
    return frame.to_dict("records")


def released_subjects(url: str, release_id: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT subject_id FROM release_subjects WHERE release_id = :r"),
                                {"r": release_id}).fetchall()
    finally:
        engine.dispose()
    return {r[0] for r in rows}


def manifest(release_dir: Path) -> dict:
    """The release's statement predicate (the manifest's content)."""
    from deidflow.manifest.verify import read_statement

    return read_statement(release_dir)["predicate"]


def only_release(root: Path) -> Path:
    found = [p for p in (root / "releases").iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def check_against_reference(root: Path, url: str, data: Path, *, age_rule: bool = True,
                            resident_ids: bool = False) -> dict[str, str]:
    """The one release under ``root`` against the reference evaluator at the release's own
    consent moment: the gate's counts are the reference's, and every released subject is one
    the reference allows. Returns the reference's verdicts."""
    rel = only_release(root)
    pred = manifest(rel)
    consent = pred["consent"]
    patients = pd.read_csv(data / "patients.csv", dtype=str, keep_default_na=False)
    subjects = [{"subject_id": s, "birth_date": b or None, **({"resident_id": r} if resident_ids else {})}
                for s, b, r in zip(patients["patient_id"], patients["birth_date"], patients["resident_id"])]
    want = reference.evaluate(registry_events(url), subjects, as_of=consent["as_of"], age_rule=age_rule,
                              **RELEASE)
    allowed = {s for s, v in want.items() if v == "allowed"}
    assert consent["granted"] == len(allowed)
    counts = {k: v for k, v in consent["excluded_by_reason"].items() if v}
    ref_counts = pd.Series([v for v in want.values() if v != "allowed"], dtype=object).value_counts().to_dict()
    assert counts == ref_counts
    released = released_subjects(url, pred["release_id"])
    assert released and released <= allowed
    return want


def write_json(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path
