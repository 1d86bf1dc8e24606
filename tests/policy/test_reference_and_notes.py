"""Policy rules for reference tables (lookup tables without a subject column) and for the
coupling of notes to the structured release (one date offset per subject; ages no finer than
the birth date's released level). Policy loads only: no release is run here."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from deidflow.errors import PolicyError
from deidflow.policy import parse_policy

REPO = Path(__file__).resolve().parents[2]
SYNTHEA = REPO / "configs" / "datasets" / "synthea.yaml"
SAMPLE = REPO / "configs" / "release.yaml"


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _parse(raw: dict):
    return parse_policy(yaml.safe_dump(raw, allow_unicode=True), source="policy.yaml")


def _refused(raw: dict) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        _parse(raw)
    return info.value


# --- reference tables --------------------------------------------------------------------------


def test_example_synthea_policy_declares_its_reference_tables():
    policy = _parse(_raw(SYNTHEA))
    assert set(policy.reference_tables) == {"organizations", "providers", "payers"}
    assert policy.tables["encounters"].columns["PAYER"].references == "payers"
    assert policy.reference_tables["providers"].keep == "all"


def test_a_reference_table_with_a_subject_column_is_refused():
    raw = _raw(SYNTHEA)
    raw["reference_tables"]["payers"]["subject_column"] = "Id"
    err = _refused(raw)
    assert "reference_tables.payers" in err.message and "no subject_column" in err.message
    assert "tables:" in err.message  # says where a table of patient rows belongs


def test_a_reference_table_declared_with_kind_under_tables_is_pointed_to_reference_tables():
    raw = _raw(SYNTHEA)
    ref = raw["reference_tables"].pop("payers")
    raw["tables"]["payers"] = {**ref, "kind": "reference", "subject_column": "Id"}
    del raw["tables"]["payers"]["key"]
    err = _refused(raw)
    assert "reference_tables:" in err.message and "tables.payers" in err.message


def test_a_foreign_key_into_an_unknown_table_is_refused_with_the_known_ones():
    raw = _raw(SYNTHEA)
    raw["tables"]["encounters"]["columns"]["PAYER"]["references"] = "insurers"
    err = _refused(raw)
    assert err.key == "tables.encounters.columns.PAYER.references"
    assert "'insurers'" in err.message
    assert all(name in err.message for name in ("organizations", "providers", "payers"))
    assert "reference_tables" in err.fix


def test_a_foreign_key_into_a_patient_table_is_refused():
    raw = _raw(SYNTHEA)
    raw["tables"]["encounters"]["columns"]["PAYER"]["references"] = "patients"
    err = _refused(raw)
    assert "patient table" in err.message


def test_a_foreign_key_pseudonymised_unlike_its_key_is_refused():
    raw = _raw(SYNTHEA)
    raw["tables"]["encounters"]["columns"]["PAYER"]["params"] = {"scope": "insurer"}
    err = _refused(raw)
    assert err.key == "tables.encounters.columns.PAYER.params"
    assert "payers.Id" in err.message and "'insurer' vs 'payer'" in err.message
    assert "scope: payer" in err.fix


def test_a_reference_table_nobody_references_needs_keep_all():
    raw = _raw(SYNTHEA)
    raw["tables"]["encounters"]["columns"]["PAYER"].pop("references")
    err = _refused(raw)
    assert err.key == "reference_tables.payers" and "keep: all" in err.fix


def test_keep_all_needs_a_reason():
    raw = _raw(SYNTHEA)
    del raw["reference_tables"]["providers"]["reason"]
    assert "reason" in _refused(raw).message


def test_reference_key_and_columns_are_checked():
    raw = _raw(SYNTHEA)
    raw["reference_tables"]["payers"]["key"] = "NAME"
    assert "is the table's key" in _refused(raw).message
    raw = _raw(SYNTHEA)
    raw["reference_tables"]["payers"]["columns"]["PHONE"]["technique"] = "keep"
    err = _refused(raw)
    assert err.key == "reference_tables.payers.columns.PHONE"
    raw = _raw(SYNTHEA)
    raw["reference_tables"]["providers"]["columns"]["CITY"] = {
        "role": "quasi_identifier", "technique": "generalise", "hierarchy": {"kind": "prefix"}}
    assert "not in the patient risk" in _refused(raw).message


def test_reference_tables_referencing_each_other_in_a_cycle_are_refused():
    raw = _raw(SYNTHEA)
    orgs = raw["reference_tables"]["organizations"]["columns"]
    orgs["REVENUE"] = {"role": "link_key", "technique": "pseudonymise",
                       "params": {"scope": "provider"}, "references": "providers"}
    raw["reference_tables"]["providers"].update(keep="referenced")
    raw["reference_tables"]["providers"].pop("reason")
    assert "cycle" in _refused(raw).message


# --- notes: one date offset per subject ------------------------------------------------------


def _notes(raw: dict) -> dict:
    return raw["tables"]["notes"]["columns"]["text"]["params"]


def test_sample_policy_notes_shift_with_the_structured_dates():
    policy = _parse(_raw(SAMPLE))
    assert policy.tables["notes"].columns["text"].params["shift_days"] == 30


def test_note_shift_days_unlike_the_structured_max_days_is_refused_naming_both_keys():
    raw = _raw(SAMPLE)
    _notes(raw)["shift_days"] = 60
    err = _refused(raw)
    assert err.key == "tables.notes.columns.text.params.shift_days"
    assert "max_days is 30" in err.message and ".params.max_days" in err.message
    assert "shift_days: 30" in err.fix


def test_note_shift_scope_unlike_the_structured_scope_is_refused():
    raw = _raw(SAMPLE)
    _notes(raw)["shift_scope"] = "notes-only"
    err = _refused(raw)
    assert err.key == "tables.notes.columns.text.params.shift_scope"
    assert "shift_scope: date_shift" in err.fix


def test_structured_dates_of_one_scope_with_different_max_days_are_refused():
    raw = _raw(SAMPLE)
    raw["tables"]["lab_results"]["columns"]["result_date"]["params"]["max_days"] = 90
    err = _refused(raw)
    assert "result_date" in err.key and "max_days" in err.message
    raw["tables"]["lab_results"]["columns"]["result_date"]["params"]["scope"] = "labs"
    _parse(raw)  # its own scope: its own offset, accepted


def test_a_note_that_does_not_shift_is_not_held_to_the_structured_shift():
    raw = _raw(SAMPLE)
    params = _notes(raw)
    params.pop("shift_days")
    params["dates"] = "placeholder"
    _parse(copy.deepcopy(raw))


# --- notes: ages follow the birth date ---------------------------------------------------------


@pytest.mark.parametrize("level,decade,policy_ages,applied", [
    (1, False, "keep", "keep"),     # month: ages in years say no more
    (3, False, "keep", "keep"),     # year
    (4, True, "keep", 10),          # decade: 10-year bands
    (4, True, 5, 10),               # the coarser of policy and birth date
    (4, True, 20, 20),
    (4, False, "keep", "remove"),   # '*' without a decade level
    (5, True, 10, "remove"),        # '*'
    (1, False, "remove", "remove"),  # the policy may always ask for less
])
def test_note_ages_follow_the_released_birth_date_level(level, decade, policy_ages, applied):
    from deidflow.note_consistency import note_ages

    raw = _raw(SAMPLE)
    raw["tables"]["patients"]["columns"]["birth_date"]["hierarchy"]["decade"] = decade
    _notes(raw)["ages"] = policy_ages
    policy = _parse(raw)
    spec, record = note_ages(policy.tables["notes"].columns["text"], policy, {"birth_date": level})
    assert spec.params["ages"] == applied
    assert record["ages_applied"] == applied and "birth date 'birth_date'" in record["ages_from_birth_date"]


def test_note_ages_are_removed_when_the_birth_date_is_not_released():
    from deidflow.note_consistency import note_ages

    raw = _raw(SAMPLE)
    raw["tables"]["patients"]["columns"]["birth_date"] = {
        "role": "quasi_identifier", "technique": "drop", "category": "demographics"}
    _notes(raw)["ages"] = "keep"
    policy = _parse(raw)
    spec, _ = note_ages(policy.tables["notes"].columns["text"], policy, {})
    assert spec.params["ages"] == "remove"


def test_the_second_look_stops_a_reference_value_that_survived_its_technique():
    """A provider's name copied into a column declared insensitive (a careless export) is
    caught by the reference tables' own check, whatever the techniques did; the error names
    table and column, never the value."""
    import pandas as pd

    from deidflow.errors import GateFailed
    from deidflow.reference_tables import check_no_leak

    policy = _parse(_raw(SYNTHEA))
    spec = policy.reference_tables["providers"]
    frame = pd.DataFrame({"NAME": ["Terrence276 O'Hara248", "Lemuel304 Murazik203"],
                          "SPECIALITY": ["GENERAL PRACTICE", "GENERAL PRACTICE"],
                          "ADDRESS": ["60 HOSPITAL ROAD", "330 MOUNT AUBURN STREET"]})
    clean = pd.DataFrame({"SPECIALITY": frame["SPECIALITY"]})
    check_no_leak("providers", spec, frame, clean)
    leaky = clean.assign(SPECIALITY=["GENERAL PRACTICE", " lemuel304 murazik203 "])
    with pytest.raises(GateFailed) as info:
        check_no_leak("providers", spec, frame, leaky)
    assert info.value.key == "reference_tables.providers.columns.SPECIALITY"
    assert "1 released value" in info.value.message and "Lemuel" not in str(info.value)


def test_note_ages_never_get_finer_as_the_birth_date_gets_coarser():
    """Property over every level and policy setting: the applied setting is at least as coarse
    as the policy's and as the birth date's, and a coarser birth date never gives finer ages."""
    from hypothesis import given, settings, strategies as st

    from deidflow.note_consistency import _coarseness, note_ages

    policies = {}
    for decade in (False, True):
        raw = _raw(SAMPLE)
        raw["tables"]["patients"]["columns"]["birth_date"]["hierarchy"]["decade"] = decade
        policies[decade] = _parse(raw)

    @settings(max_examples=25, deadline=None)
    @given(decade=st.booleans(), level=st.integers(0, 5),
           own=st.one_of(st.sampled_from(["keep", "remove"]), st.integers(1, 50)))
    def prop(decade, level, own):
        policy = policies[decade]
        base = policy.tables["notes"].columns["text"]
        spec = base.model_copy(update={"params": {**base.params, "ages": own}})
        here = note_ages(spec, policy, {"birth_date": level})[0].params["ages"]
        finer = note_ages(spec, policy, {"birth_date": max(level - 1, 0)})[0].params["ages"]
        assert _coarseness(here) >= _coarseness(own)
        assert _coarseness(here) >= _coarseness(finer)

    prop()


# --- notes: dates cut to the month beside shifted structured dates ----------------------------


def _month_notes(raw: dict, **params) -> dict:
    p = _notes(raw)
    p.pop("shift_days")
    p["dates"] = "month"
    p.update(params)
    return raw


def test_a_month_note_takes_the_structured_shift_before_the_cut():
    from deidflow.note_consistency import note_dates

    policy = _parse(_month_notes(_raw(SAMPLE)))
    spec, record = note_dates(policy.tables["notes"].columns["text"], policy)
    assert spec.params["shift_days"] == 30 and spec.params["shift_scope"] == "date_shift"
    assert spec.params["dates"] == "month"
    assert "30 days" in record["dates_shifted_before_cut"]
    assert "cut to the month" in record["dates_shifted_before_cut"]


def test_a_month_note_without_shifted_structured_dates_keeps_its_setting():
    from deidflow.note_consistency import note_dates

    raw = _month_notes(_raw(SAMPLE))
    for table in raw["tables"].values():
        for col in table["columns"].values():
            if col.get("technique") == "date_shift":
                col["technique"] = "drop"
                col.pop("params", None)
    policy = _parse(raw)
    spec, record = note_dates(policy.tables["notes"].columns["text"], policy)
    assert "shift_days" not in spec.params and record == {}


def test_a_month_note_in_another_shift_scope_or_with_other_days_is_refused():
    err = _refused(_month_notes(_raw(SAMPLE), shift_scope="notes-only"))
    assert err.key == "tables.notes.columns.text.params.shift_scope"
    assert "shift_scope: date_shift" in err.fix
    err = _refused(_month_notes(_raw(SAMPLE), shift_days=60))
    assert err.key == "tables.notes.columns.text.params.shift_days" and "shift_days: 30" in err.fix
    _parse(_month_notes(_raw(SAMPLE), shift_days=30))  # stated and equal: accepted


# --- reference tables: their identifying values ----------------------------------------------


def test_reference_identifiers_leave_out_values_that_identify_nobody():
    """The gate's known-value rule, applied to a reference table's rows: one character, a
    short bare number and a value that k rows share are not looked for; the rest are."""
    import pandas as pd

    from deidflow.reference_tables import identifying_rows

    policy = _parse(_raw(SYNTHEA))
    spec = policy.reference_tables["payers"]  # ADDRESS, ZIP and PHONE are direct identifiers
    frame = pd.DataFrame({
        "ADDRESS": ["7500 Security Blvd", "7500 Security Blvd", "7500 Security Blvd", "1 Main St", "X"],
        "ZIP": ["21244", "21244", "02110", "021100123", None],
        "PHONE": ["1-877-267-2323", "1-800-633-4227", None, None, None],
        "NAME": ["Medicare", "Medicaid", "Aetna", "Cigna", "Humana"],  # insensitive: not looked for
    })
    rows = pd.concat(identifying_rows("payers", spec, frame, k=3), ignore_index=True)
    got = {(c, v) for c, v in zip(rows["column"], rows["value"])}
    assert got == {("ADDRESS", "1 Main St"), ("ZIP", "021100123"),
                   ("PHONE", "1-877-267-2323"), ("PHONE", "1-800-633-4227")}
    assert set(rows["table"]) == {"payers"}


def test_a_note_generalising_its_dates_takes_the_structured_shift_too():
    from deidflow.note_consistency import note_dates

    raw = _raw(SAMPLE)
    p = _notes(raw)
    p.pop("shift_days")
    p.pop("dates")
    p["replace"] = {"date": "generalise", "default": "placeholder"}
    policy = _parse(raw)
    spec, record = note_dates(policy.tables["notes"].columns["text"], policy)
    assert spec.params["shift_days"] == 30 and "cut to the month" in record["dates_shifted_before_cut"]
