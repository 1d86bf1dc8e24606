"""Fuzzing the release itself: random subject tables (sizes, value pools, junk values, missing
values) under random limits go through prepare, consent gate, search and transform. Each run
either stages a release that meets k, or stops with deidflow's own error; nothing else may
escape, and a stopped run leaves no staging or work directory. (The Great Expectations gate is
left out: it costs seconds per example and is exercised by every other release test.)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deidflow.errors import DeidflowError

from .conftest import REPO, SECRET_HEX

pytestmark = pytest.mark.slow

CONSENT_ROW = ("{eid},{sid},granted,2025-09-10T09:36:27+08:00,self,,,true,ai-model-training,shanghai-ai-lab,"
               "demographics;diagnoses,false,2025-09-10,2030-03-20,v2.2," + "0" * 64)
CONSENT_HEADER = ("event_id,subject_id,event,recorded_at,grantor,guardian_name,guardian_id,separate,purposes,"
                  "recipients,data_categories,cross_border,valid_from,valid_until,notice_version,form_sha256")

DATES = st.one_of(st.dates(min_value=pd.Timestamp("1920-01-01").date(), max_value=pd.Timestamp("2005-12-31").date())
                  .map(str), st.sampled_from(["", "1987-02-30", "not a date"]))
REGIONS = st.one_of(st.sampled_from(["310101", "310104", "310115", "320102", "110105", ""]),
                    st.text(alphabet="0123456789a.", min_size=1, max_size=7))
SEX = st.sampled_from(["M", "F", "", "X"])
DX = st.sampled_from(["E", "I", "J", "K", "C", ""])


@st.composite
def releases(draw):
    n = draw(st.integers(1, 60))
    junk = draw(st.sampled_from([False, False, False, False, True]))  # mostly clean data, so the search has work
    rows = [{"patient_id": f"P{i:05d}",
             "birth_date": draw(DATES) if junk else draw(DATES.filter(lambda d: d[:2] in ("19", "20") and d[5:7] != "02")),
             "sex": draw(SEX) if junk else draw(st.sampled_from(["M", "F"])),
             "region_code": draw(REGIONS) if junk else draw(st.sampled_from(["310101", "310104", "320102"])),
             "dx": draw(DX)} for i in range(n)]
    consented = draw(st.lists(st.sampled_from([True, True, True, False]), min_size=n, max_size=n))
    limits = {"k": draw(st.sampled_from([1, 2, 3, 5, 8])), "suppression_budget": draw(st.sampled_from([0.0, 0.02, 0.2, 0.6])),
              "max_overall_risk": draw(st.sampled_from([0.05, 1.0, 1.0])),
              "max_class_risk": draw(st.sampled_from([0.2, 1.0]))}
    if draw(st.booleans()):
        limits["l"] = draw(st.integers(1, 3))
    # limits below GB/T 42460's floors are part of what is fuzzed: they need an override
    limits["override"] = {"reason": "fuzzed limits, synthetic data"}
    return rows, consented, limits


def _write(root: Path, rows, consented, limits) -> Path:
    pd.DataFrame(rows).to_csv(root / "patients.csv", index=False)
    lines = [CONSENT_HEADER] + [CONSENT_ROW.format(eid=f"C{i:06d}", sid=r["patient_id"])
                                for i, (r, ok) in enumerate(zip(rows, consented)) if ok]
    (root / "consents.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    (keys / "pseudonym.key").write_text(SECRET_HEX + "\n")
    (keys / "pseudonym.key").chmod(0o600)
    policy = {
        "plan": {"objective": "o", "attacker_model": "a", "approver": "x", "executor": "y", "version": "1"},
        "release": {"agreement_id": "A", "pipia_id": "P", "purpose": "ai-model-training", "approval": "not_required",
                    "data_categories": ["demographics", "diagnoses"],
                    "recipient": {"id": "shanghai-ai-lab", "name": "R"}},
        "subject_table": "patients",
        "tables": {"patients": {"path": "patients.csv", "subject_column": "patient_id", "columns": {
            "patient_id": {"role": "link_key", "technique": "pseudonymise", "params": {"scope": "patient"}},
            "birth_date": {"role": "quasi_identifier", "technique": "generalise", "hierarchy": {"kind": "date"}},
            "sex": {"role": "quasi_identifier", "technique": "generalise",
                    "hierarchy": {"kind": "csv", "file": str(REPO / "configs" / "hierarchies" / "sex.csv"),
                                  "delimiter": ","}},
            "region_code": {"role": "quasi_identifier", "technique": "generalise", "hierarchy": {"kind": "region"}},
            "dx": {"role": "sensitive", "technique": "keep"},
        }}},
        "limits": limits,
        "consent": {"registry": f"sqlite:///{root / 'consent.db'}"},
        "keys": {"pseudonym_key_file": str(keys / "pseudonym.key"), "signing_key_file": str(keys / "signing.key")},
        "output": {"directory": str(root / "releases"), "private_directory": str(root / "private")},
    }
    p = root / "policy.yaml"
    p.write_text(yaml.safe_dump(policy, allow_unicode=True), encoding="utf-8")
    return p


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(case=releases())
def test_random_extracts_and_limits_stage_a_k_anonymous_release_or_fail_with_our_error(
        tmp_path_factory, monkeypatch, case):
    from deidflow import release as st_
    from deidflow.consent.importers import import_consent_file
    from deidflow.consent.registry import ConsentRegistry

    monkeypatch.delenv("DEIDFLOW_PSEUDONYM_KEY", raising=False)
    rows, consented, limits = case
    root = tmp_path_factory.mktemp("fuzzrel")
    policy = _write(root, rows, consented, limits)
    work = None
    try:
        if any(consented):
            import_consent_file(ConsentRegistry(f"sqlite:///{root / 'consent.db'}"), root / "consents.csv")
        work = st_.prepare(policy)
        st_.search(work)
        stage = Path(st_.transform(work))
        released = pd.read_csv(stage / "data" / "patients.csv", dtype="string", keep_default_na=False)
        if len(released):
            sizes = released.groupby(["birth_date", "sex", "region_code"]).size()
            assert sizes.min() >= limits["k"], sizes.sort_values().head()
            if limits.get("l"):
                assert released.groupby(["birth_date", "sex", "region_code"])["dx"].nunique().min() >= limits["l"]
    except DeidflowError as err:
        assert err.fix, err.render()
    finally:
        if work is not None:
            st_.discard(work)
    leftover = list((root / "private" / "work").glob("*")) if (root / "private" / "work").exists() else []
    assert leftover == []
    assert not list((root / "releases").glob(".staging-*")) if (root / "releases").exists() else True
