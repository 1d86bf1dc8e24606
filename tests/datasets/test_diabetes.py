"""Diabetes 130-US hospitals as patients + encounters with quasi-identifiers in both tables:
k holds over each patient's whole record (their row and the set of their visits), which the
encounter columns alone once broke (k=5 reported, tens of thousands of unique visits)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.datasets.helpers import (consent_log, import_consents, place_policy, recheck_k,
                                    released, setup_root)

PATIENT_QIS = ["race", "gender"]
ENCOUNTER_QIS = ["age", "admission_type_id", "admission_source_id", "medical_specialty",
                 "time_in_hospital"]


def split(source, out_dir, n_patients=None):
    data = pd.read_csv(source, dtype=str, keep_default_na=False)
    if n_patients is not None:
        keep = data["patient_nbr"].drop_duplicates().iloc[:n_patients]
        data = data[data["patient_nbr"].isin(keep)]
    patients = data.drop_duplicates("patient_nbr")[["patient_nbr", "race", "gender"]]
    encounters = data.drop(columns=["race", "gender"])
    out_dir.mkdir(parents=True, exist_ok=True)
    patients.to_csv(out_dir / "patients.csv", index=False)
    encounters.to_csv(out_dir / "encounters.csv", index=False)
    return patients, encounters


@pytest.fixture
def diabetes(tmp_path, datasets, monkeypatch):
    patients, encounters = split(datasets / "diabetes_130_us_hospitals" / "diabetic_data.csv",
                                 tmp_path / "data", n_patients=12_000)
    setup_root(tmp_path, monkeypatch)
    policy = place_policy("diabetes", tmp_path, {"patients": tmp_path / "data" / "patients.csv",
                                                 "encounters": tmp_path / "data" / "encounters.csv"})
    import_consents(policy, consent_log(tmp_path / "consents.csv", patients["patient_nbr"],
                                        purpose="ai-model-training", recipient="readmission-lab",
                                        categories=["demographics", "encounters"]))
    return policy, patients, encounters


def test_whole_record_k_over_patients_and_encounters(diabetes):
    from deidflow.manifest.verify import read_record_unverified
    from deidflow.release import run_release

    policy, patients, encounters = diabetes
    # the encounter columns alone make many records unique before generalisation
    raw_k = recheck_k(patients, "patient_nbr", PATIENT_QIS, [(encounters, ENCOUNTER_QIS)])
    assert raw_k == 1
    summary = run_release(policy)
    p, e = released(summary, "patients"), released(summary, "encounters")
    assert recheck_k(p, "patient_nbr", PATIENT_QIS, [(e, ENCOUNTER_QIS)]) >= 5
    assert len(p) >= len(patients) * 0.95
    assert set(e["patient_nbr"]) <= set(p["patient_nbr"])  # suppressed patients leave whole
    assert not p["patient_nbr"].isin(patients["patient_nbr"]).any()
    assert pd.api.types.is_integer_dtype(e["num_lab_procedures"])  # counts stay numbers
    record = read_record_unverified(summary.release_dir)
    by_table = record.risk.after["by_table"]
    assert set(by_table) == {"patients", "encounters"}
    assert record.risk.after["k"] >= 5
    assert any(k.startswith("encounters.") for k in record.risk.levels)
    review = (summary.release_dir / "review.html").read_text()
    assert "Risk per table and for the whole record" in review


def test_the_gate_rechecks_the_whole_record(diabetes, monkeypatch):
    """The validation stage recomputes k over the whole record from the released files: a
    search that forgot the encounters' quasi-identifiers (as before this issue) is stopped
    there and nothing is published."""
    from deidflow.errors import GateFailed
    from deidflow.release import run_release
    import deidflow.risk.record as record

    policy, _, _ = diabetes
    original = record.record_search

    def forgetful(frames, subject_columns, subject_table, qi_columns, encode, limits, bounds):
        res = original(frames, subject_columns, subject_table, qi_columns, encode, limits, bounds)
        levels = {k: (0 if k.startswith("encounters.") else v) for k, v in res.levels.items()}
        from dataclasses import replace
        return replace(res, levels=levels)

    monkeypatch.setattr(record, "record_search", forgetful)
    with pytest.raises(GateFailed, match="whole record"):
        run_release(policy)
    releases = policy.parent / "releases"
    assert not releases.exists() or not [p for p in releases.iterdir() if not p.name.startswith(".")]
