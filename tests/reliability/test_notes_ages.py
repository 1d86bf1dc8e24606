"""Notes never state an age finer than the released birth date: with the birth date released
to the decade, a policy that keeps the notes' ages still gets 10-year bands (66岁 → 60-69岁),
and the manifest says why. One in-process release of the small extract."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from .conftest import make_env

pytestmark = pytest.mark.slow

BARE_AGE = re.compile(r"(?<![0-9.\-])([0-9]{1,3}) ?(?:周岁|岁)")
BAND = re.compile(r"(?<![0-9])[0-9]?0-[0-9]?9岁|90岁以上")


def test_note_ages_are_banded_to_the_birth_dates_decade(tmp_path, small_extract, monkeypatch):
    from deidflow.manifest.verify import read_record_unverified
    from deidflow.release import run_release
    from deidflow.techniques.scrub import scrub_texts

    monkeypatch.delenv("DEIDFLOW_PSEUDONYM_KEY", raising=False)
    env = make_env(tmp_path / "root", small_extract, edits={
        r"hierarchy: \{kind: date, min_level: 1\}":
            "hierarchy: {kind: date, decade: true, min_level: 4, max_level: 4}",
        r"ages: remove\}": "ages: keep}",
        r"suppression_budget: [0-9.]+": "suppression_budget: 0.2",  # pinned to the decade
    })
    summary = run_release(env.policy)
    assert summary.levels["birth_date"] == 4
    patients = pd.read_csv(summary.release_dir / "data" / "patients.csv", dtype=str)
    assert patients["birth_date"].str.fullmatch(r"[0-9]{3}0s|\*").all()  # decades

    record = read_record_unverified(summary.release_dir)
    (text,) = [c for c in record.columns if c.table == "notes" and c.column == "text"]
    assert text.params["ages"] == 10 and text.params["ages_applied"] == 10
    assert text.params["ages_policy"] == "keep"
    assert "decade" in text.params["ages_from_birth_date"]

    notes = pd.read_csv(summary.release_dir / "data" / "notes.csv", dtype=str, keep_default_na=False)
    released = "\n".join(notes["text"])
    assert not BARE_AGE.findall(BAND.sub("", released))  # no age outside a 10-year band
    assert len(BAND.findall(released)) >= 20

    # control: the policy's own setting (keep) would have left the exact ages in these notes
    raw = pd.read_csv(env.data / "notes.csv", dtype=str, keep_default_na=False)
    kept, _ = scrub_texts(raw["text"].head(200), ages="keep")
    assert len(BARE_AGE.findall("\n".join(kept))) >= 20
