"""Notes against the rest of the release, through the installed `deidflow` command
(--no-prefect, from a directory that is not the project's), on the small extract with its notes
rewritten to controlled texts:

- a reference table's doctor named in notes in a form the generic name reader misses is
  scrubbed as a known value of every note, and the gate refuses a release that leaves it in
  (naming table, column, type and count, never the value);
- so is an attending doctor of the encounters table (a patient table's direct identifier,
  in 5,000 rows or in one: the gate's known values are every patient table's);
- notes with `dates: month` beside shifted structured dates state the shifted month.

Two releases of the same input: one that passes, one whose scrubber is told not to look for
known values or names (the gate's independent check must stop it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import Env, leftovers, make_env

pytestmark = pytest.mark.slow

DOCTOR = "申屠梓轩"  # after 与, before 讨论: no cue the generic reader knows (control below)
ATTENDING = "上官若曦"  # encounters.attending_doctor of some rows, named in other notes
NAMED = "与{}讨论后调整用药。"
MONTH_NOTES = {r"dates: shift, shift_days: 30, ages: remove": "dates: month, ages: remove"}
NO_NAMES = {r"dates: shift, shift_days: 30, ages: remove":
            "dates: month, ages: remove, kinds: [date, mobile, resident_id, age]"}


def _reference_block(data: Path) -> str:
    return f"""
reference_tables:
  doctors:
    path: {data}/doctors.csv
    key: doctor_id
    keep: all
    reason: "the hospital's doctor directory is part of the agreed extract"
    columns:
      doctor_id:  {{role: link_key, technique: pseudonymise, params: {{scope: doctor}}}}
      name:       {{role: direct_identifier, technique: drop}}
      phone:      {{role: direct_identifier, technique: drop}}
      department: {{role: insensitive, technique: keep}}
"""


def deidflow(env: Env, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("deidflow")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "deidflow.cli"]
    cwd = env.root / "elsewhere"
    cwd.mkdir(exist_ok=True)
    child = {k: v for k, v in os.environ.items() if k not in ("DEIDFLOW_PSEUDONYM_KEY", "DEIDFLOW_TRUST_FILE")}
    child.update({"PREFECT_HOME": str(env.root / "prefect"), "COLUMNS": "250"})
    return subprocess.run([*cmd, *args, "--no-prefect"], cwd=cwd, env=child, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def data(tmp_path_factory, small_extract) -> Path:
    """The small extract, every note rewritten: its own date in two spellings, in every
    fifth note the doctor of the reference table, and in every seventh other note an
    attending doctor of the encounters table (of every ninth encounter, whoever's)."""
    out = tmp_path_factory.mktemp("notes-reference") / "extract"
    shutil.copytree(small_extract, out)
    notes = pd.read_csv(out / "notes.csv", dtype="string", keep_default_na=False)
    day = pd.to_datetime(notes["note_date"])
    text = (day.dt.strftime("%Y-%m-%d") + "复诊，" + day.dt.year.astype(str) + "年"
            + day.dt.month.astype(str) + "月" + day.dt.day.astype(str) + "日复查血常规。")
    named = np.arange(len(notes)) % 5 == 0
    text[named] = text[named] + NAMED.format(DOCTOR)
    attended = ~named & (np.arange(len(notes)) % 7 == 0)
    text[attended] = text[attended] + NAMED.format(ATTENDING)
    notes["text"] = text
    notes.to_csv(out / "notes.csv", index=False)
    encounters = pd.read_csv(out / "encounters.csv", dtype="string", keep_default_na=False)
    encounters.loc[np.arange(len(encounters)) % 9 == 0, "attending_doctor"] = ATTENDING
    encounters.to_csv(out / "encounters.csv", index=False)
    pd.DataFrame({"doctor_id": ["D01", "D02"], "name": [DOCTOR, "欧阳振华"],
                  "phone": ["13912345678", "13887654321"], "department": ["心内科", "急诊科"]},
                 ).to_csv(out / "doctors.csv", index=False)
    return out


def _env(root: Path, data: Path, edits: dict[str, str]) -> Env:
    return make_env(root, data, edits={**edits, r"\Z": _reference_block(data)})


@pytest.fixture(scope="module")
def released(tmp_path_factory, data):
    env = _env(tmp_path_factory.mktemp("released"), data, MONTH_NOTES)
    proc = deidflow(env, "release", str(env.policy))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (release,) = [p for p in env.releases.iterdir() if not p.name.startswith(".")]
    return env, release, proc


def test_the_generic_reader_alone_misses_the_doctor(data):
    from deidflow.techniques.scrub import scrub_texts

    notes = pd.read_csv(data / "notes.csv", dtype="string", keep_default_na=False)
    for doctor in (DOCTOR, ATTENDING):
        named = notes["text"][notes["text"].str.contains(doctor)]
        assert len(named) >= 20
        scrubbed, _ = scrub_texts(named, dates="month")  # every detector, no known values
        assert scrubbed.str.contains(doctor).all()


def test_a_reference_doctor_is_scrubbed_from_every_note(released):
    _, release, proc = released
    notes = pd.read_csv(release / "data" / "notes.csv", dtype=str, keep_default_na=False)
    assert not notes["text"].str.contains(DOCTOR).any()
    assert not notes["text"].str.contains(ATTENDING).any()
    said = notes["text"].str.extract(r"与(.*?)讨论后")[0].dropna()
    assert len(said) >= 40 and (said == "[姓名]").all()
    doctors = pd.read_csv(release / "data" / "doctors.csv", dtype=str)
    assert list(doctors.columns) == ["doctor_id", "department"] and len(doctors) == 2
    for doctor in (DOCTOR, ATTENDING):
        assert doctor not in proc.stdout + proc.stderr
        assert not any(doctor in p.read_text(errors="replace") for p in release.rglob("*")
                       if p.is_file() and p.suffix in (".json", ".html", ".csv", ".txt", ".md"))


def test_note_months_are_the_shifted_dates_months(released):
    from deidflow.manifest.verify import read_record_unverified

    _, release, _ = released
    notes = pd.read_csv(release / "data" / "notes.csv", dtype=str, keep_default_na=False)
    shifted = pd.to_datetime(notes["note_date"])
    want = (shifted.dt.strftime("%Y-%m") + "复诊，" + shifted.dt.year.astype(str) + "年"
            + shifted.dt.month.astype(str) + "月复查血常规。")
    assert len(notes) >= 300
    assert (notes["text"].str.split("。").str[0] + "。" == want).all()
    record = read_record_unverified(release)
    (text,) = [c for c in record.columns if c.table == "notes" and c.column == "text"]
    assert text.params["dates"] == "month" and text.params["shift_days"] == 30
    assert "per-subject offset" in text.params["dates_shifted_before_cut"]
    assert not any("true month" in x for x in text.params["not_covered_by_risk"])


def test_the_gate_refuses_a_release_that_leaves_the_doctor_in_a_note(tmp_path, data, released):
    env = _env(tmp_path / "root", data, NO_NAMES)
    proc = deidflow(env, "release", str(env.policy))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    flat = " ".join(out.split())
    # as many rows as the passing release scrubbed either doctor from (same input, same
    # consent): the reference table's and the encounters' attending doctor
    passed = pd.read_csv(released[1] / "data" / "notes.csv", dtype=str, keep_default_na=False)
    scrubbed = passed["text"].str.contains("与[姓名]讨论后", regex=False).to_numpy()
    rows = int(scrubbed.sum())
    assert re.search(rf"notes\b.*'text': {rows} row\(s\) with known identifier of the input {rows}", flat), flat
    assert DOCTOR not in out and ATTENDING not in out and "Traceback" not in out
    assert leftovers(env) == []  # no release, no staging, no private work directory
    logs = list((env.private / "gate").glob("*.json"))  # the row numbers, never the value
    assert logs and all(DOCTOR not in p.read_text(encoding="utf-8")
                        and ATTENDING not in p.read_text(encoding="utf-8") for p in logs)
    # the logged rows are those notes, the attending doctor's among them
    (log,) = logs
    logged = json.loads(log.read_text(encoding="utf-8"))["rows_with_direct_identifiers"]
    assert logged["notes"]["text"] == np.flatnonzero(scrubbed).tolist()
