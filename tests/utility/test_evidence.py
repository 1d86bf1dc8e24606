"""`utility_evidence` end to end on a small table: the figures it records are the hand-checked
ones, nothing but aggregates reaches the record, and a release that generalises and
suppresses nothing leaves the model exactly as good as on the original."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deidflow.errors import GateFailed, PolicyError
from deidflow.policy import load_policy
from deidflow.utility.evidence import utility_evidence

POLICY = """
version: 1
plan: {objective: o, attacker_model: a, approver: alice, executor: bob, version: "1"}
release:
  agreement_id: DSA-T
  approval: not_required
  pipia_id: P-T
  purpose: research
  recipient: {id: lab, name: Lab}
  data_categories: [demographics]
subject_table: people
tables:
  people:
    path: people.csv
    subject_column: pid
    columns:
      pid:     {role: link_key, technique: pseudonymise, category: demographics}
      name:    {role: direct_identifier, technique: drop, category: demographics}
      age:     {role: quasi_identifier, technique: generalise, hierarchy: {kind: interval, widths: [10, 20]}, category: demographics}
      sex:     {role: quasi_identifier, technique: generalise, hierarchy: {kind: mask}, category: demographics}
      outcome: {role: insensitive, technique: keep, category: demographics}
limits: {k: 2, small_cell: 2}
consent: {birth_date_column: null}
utility: {target: outcome, task: classification}
"""


@pytest.fixture
def loaded(tmp_path: Path):
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY)
    return load_policy(p)


def _people(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 80, n)
    sex = rng.choice(["F", "M"], n)
    outcome = np.where(age + rng.normal(0, 8, n) > 50, "yes", "no")
    return pd.DataFrame({"pid": [f"P{i:04d}" for i in range(n)], "name": [f"N{i}" for i in range(n)],
                         "age": age.astype(str), "sex": sex, "outcome": outcome}).astype("string")


def test_nothing_generalised_changes_nothing(loaded):
    people = _people()
    released = people.drop(columns=["name"])
    u = utility_evidence(loaded, people, released, people["pid"], levels={"age": 0, "sex": 0},
                         as_of=date(2026, 1, 1))
    assert u.subjects == u.released == 400 and u.suppressed_share == 0
    by = {c.column: c for c in u.columns}
    assert by["age"].precision == 1 and by["age"].nue_bits == 0 and by["age"].tvd == 0
    assert by["name"].before is None and by["pid"].before is None  # identifiers never plotted
    assert u.mean_record_loss == 0
    m = u.model
    assert m.accuracy_released == m.accuracy_original and m.auc_released == m.auc_original
    assert m.accuracy_original > 0.7
    # no record: no name, no id anywhere in what is recorded
    text = u.model_dump_json()
    assert "N1" not in text and "P0001" not in text


def test_generalised_and_suppressed_by_hand(loaded):
    people = pd.DataFrame({
        "pid": [f"P{i}" for i in range(8)], "name": ["x"] * 8,
        "age": ["21", "22", "23", "24", "31", "32", "33", "34"],
        "sex": ["F", "F", "F", "F", "M", "M", "M", "F"],
        "outcome": ["yes", "no"] * 4}).astype("string")
    # age released at level 1 (widths 10: "[20, 30)" / "[30, 40)"), sex kept, P7 suppressed
    kept = people.iloc[:7]
    released = pd.DataFrame({"pid": kept["pid"], "age": ["[20, 30)"] * 4 + ["[30, 40)"] * 3,
                             "sex": kept["sex"], "outcome": kept["outcome"]})
    u = utility_evidence(loaded, people, released, kept["pid"], levels={"age": 1, "sex": 0},
                         as_of=date(2026, 1, 1))
    age = {c.column: c for c in u.columns}["age"]
    assert age.level == 1 and age.top_level == 3  # value, width 10, width 20, "*"
    assert age.precision == pytest.approx(1 - 1 / 3)
    assert age.precision_with_suppression == pytest.approx(1 - (7 * (1 / 3) + 1) / 8)
    # each age is unique (f(x)=1): 4 released in a band of 4 lose 2 bits, 3 released in the
    # other band (f(g)=4) lose 2 bits, the suppressed one loses log2(8) = 3 bits
    assert age.nue_bits == pytest.approx((7 * 2 + 3) / 8)
    assert age.nue_normalised == pytest.approx((7 * 2 + 3) / (8 * 3))
    assert u.suppressed_share == pytest.approx(1 / 8)
    sex = {g.kind: g for g in u.groups}["sex"]
    shares = {x.label: x.suppressed_share for x in sex.groups}
    assert shares == {"F": pytest.approx(1 / 5), "M": 0.0}


def test_release_and_record_must_agree(loaded):
    people = _people(20)
    with pytest.raises(GateFailed, match="released table"):
        utility_evidence(loaded, people, people.iloc[:5], people["pid"], levels={}, as_of=date(2026, 1, 1))


def test_policy_block_is_checked(tmp_path: Path):
    p = tmp_path / "bad.yaml"
    p.write_text(POLICY.replace("utility: {target: outcome", "utility: {target: nonesuch"))
    with pytest.raises(PolicyError, match="utility.target 'nonesuch'"):
        load_policy(p)
    p.write_text(POLICY.replace("utility: {target: outcome, task: classification}",
                                "utility: {search_loss: classification}"))
    with pytest.raises(PolicyError, match="needs 'target"):
        load_policy(p)
    p.write_text(POLICY.replace("utility: {target: outcome", "utility: {target: name"))
    with pytest.raises(PolicyError, match="direct_identifier"):
        load_policy(p)
