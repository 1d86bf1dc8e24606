"""A linkage attack that reads the released notes beside the structured quasi-identifiers.

The attacker knows each target's true birth date, sex, ethnicity and region (the extract's
quasi-identifiers) and generalises them as released (tests/reliability/test_attacks.py).
From the released notes of each candidate record they read every age written next to a
date ("男，66岁 … 2024年1月26日"): a candidate whose target would have had another age on that
date is ruled out. Success is the expected share of targets re-identified (1 / candidates
left, when the target is among them). It must stay at or under the risk the manifest claims.

As a control, the same attack on the same subjects' notes scrubbed with the old settings
(ages kept, dates cut to the true month) beats the claim: the test can fail.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from deidflow.policy import load_policy

from .conftest import Baseline
from .test_attacks import QIS, _claims, _truth, attacker_generalise

pytestmark = pytest.mark.slow

_AGE = re.compile(r"(?<![0-9])([0-9]{1,3})岁")
_DATE = re.compile(r"((?:19|20)[0-9]{2})(?:年|-)([0-9]{1,2})(?:月|-)(?:([0-9]{1,2})日?)?")


def note_facts(text: str) -> list[tuple[int, pd.Timestamp, pd.Timestamp]]:
    """(age, earliest, latest date it may refer to) for each note stating both; a date cut
    to its month spans the month."""
    ages = [int(a) for a in _AGE.findall(text)]
    m = _DATE.search(text)
    if not ages or m is None:
        return []
    y, mo = int(m.group(1)), int(m.group(2))
    if not 1 <= mo <= 12:
        return []
    if m.group(3):
        try:
            d = pd.Timestamp(y, mo, int(m.group(3)))
        except ValueError:
            return []
        lo = hi = d
    else:
        lo = pd.Timestamp(y, mo, 1)
        hi = lo + pd.offsets.MonthEnd(0)
    return [(a, lo, hi) for a in ages]


def _age_at(birth: pd.Timestamp, day: pd.Timestamp) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def notes_attack(targets: pd.DataFrame, released: pd.DataFrame, notes: pd.DataFrame,
                 levels: dict[str, int]) -> dict[str, float]:
    facts: dict[str, list] = {}
    for pid, text in zip(notes["patient_id"], notes["text"].fillna("")):
        facts.setdefault(pid, []).extend(note_facts(text))
    rel_key = released[QIS].astype(str).agg("|".join, axis=1)
    members: dict[str, list[str]] = {}
    for k, pid in zip(rel_key, released["patient_id"]):
        members.setdefault(k, []).append(pid)
    tgt_key = attacker_generalise(targets, levels).agg("|".join, axis=1)
    births = pd.to_datetime(targets["birth_date"])
    success, worst = [], 0.0
    for key, birth, truth in zip(tgt_key, births, targets["pseudonym"]):
        cands = [c for c in members.get(key, [])
                 if all(_age_at(birth, lo) <= a <= _age_at(birth, hi) for a, lo, hi in facts.get(c, []))]
        p = 1.0 / len(cands) if truth in cands else 0.0
        success.append(p)
        worst = max(worst, p)
    return {"expected": float(np.mean(success)), "max_target_risk": worst}


def test_notes_do_not_re_identify_beyond_the_claimed_risk(baseline: Baseline, monkeypatch):
    from deidflow.techniques.scrub import scrub_texts

    monkeypatch.delenv("DEIDFLOW_PSEUDONYM_KEY", raising=False)
    env, release_dir = baseline.env, baseline.release_dir
    released = pd.read_csv(release_dir / "data" / "patients.csv", dtype="string", keep_default_na=False)
    notes = pd.read_csv(release_dir / "data" / "notes.csv", dtype="string", keep_default_na=False)
    after, levels = _claims(release_dir)
    truth = _truth(env, released)
    targets = truth.loc[truth["released"]].reset_index(drop=True)

    result = notes_attack(targets, released, notes, levels)
    assert result["expected"] <= after["prosecutor_avg"] + 1e-12, (result, after)
    assert result["max_target_risk"] <= after["prosecutor_max"] + 1e-12, (result, after)
    # what the notes still carry is said in the manifest
    from deidflow.manifest.verify import read_statement

    columns = read_statement(release_dir)["predicate"]
    assert "not_covered_by_risk" in str(columns)

    # control: the same subjects' notes, scrubbed as before (true month, ages kept)
    raw_notes = pd.read_csv(env.data / "notes.csv", dtype="string", keep_default_na=False)
    pseud = dict(zip(truth["patient_id"], truth["pseudonym"]))
    raw_notes = raw_notes[raw_notes["patient_id"].isin(truth.loc[truth["released"], "patient_id"])]
    old, _ = scrub_texts(raw_notes["text"], dates="month")
    control = pd.DataFrame({"patient_id": raw_notes["patient_id"].map(pseud).to_numpy(), "text": old.to_numpy()})
    leaky = notes_attack(targets, released, control, levels)
    assert leaky["expected"] > after["prosecutor_avg"], (leaky, after)
    assert load_policy(env.policy).policy.tables["notes"].columns["text"].params["ages"] == "remove"
