"""What the committed extract promises its users: valid, consistent and unique identifiers,
link keys that resolve, plausible dates, and notes that name their own patient."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from faker.providers.ssn.zh_CN import Provider as ZhSsnProvider

from deidflow.identifiers import resident_id_parts, valid_mobiles, valid_resident_ids
from deidflow.samples._codes import PROVINCES


def test_resident_ids_are_valid_and_agree_with_birth_date_sex_and_region(extract):
    p = extract["patients"]
    assert valid_resident_ids(p["resident_id"]).all()
    parts = resident_id_parts(p["resident_id"])
    assert (parts["birth_date"].dt.strftime("%Y-%m-%d").to_numpy() == p["birth_date"].to_numpy()).all()
    assert (parts["sex"].to_numpy(dtype=object) == p["sex"].to_numpy(dtype=object)).all()
    assert (parts["region_code"].to_numpy(dtype=object) == p["region_code"].to_numpy(dtype=object)).all()
    assert set(p["sex"]) == {"M", "F"}
    # Registered at county level in the mainland: a real GB/T 2260 county code, not a
    # province/prefecture row.
    assert p["region_code"].isin(ZhSsnProvider.area_codes).all()
    assert not p["region_code"].str.endswith("00").any()
    assert p["region_code"].str[:2].isin(list(PROVINCES)).all()


def test_identifiers_are_unique_and_well_formed(extract):
    p = extract["patients"]
    for column in ("patient_id", "resident_id", "mobile", "insurance_no"):
        assert p[column].is_unique, column
    assert valid_mobiles(p["mobile"]).all()
    assert p["mobile"].str.fullmatch(r"1[3-9]\d{9}").all()
    assert p["insurance_no"].str.fullmatch(r"\d{16}").all()
    assert (p["insurance_no"].str[:2] == p["region_code"].str[:2]).all()
    assert p["postcode"].str.fullmatch(r"\d{6}").all()
    assert p["patient_id"].str.fullmatch(r"P\d{7}").all()
    # The address is in the province the resident ID names.
    province = p["region_code"].str[:2].map({k: v[0] for k, v in PROVINCES.items()})
    assert all(a.startswith(b) for a, b in zip(p["address"], province))
    assert (p["name"].str.len().between(2, 4)).all()


def test_every_link_key_resolves(extract):
    patients = set(extract["patients"]["patient_id"])
    enc = extract["encounters"]
    assert enc["encounter_id"].is_unique and set(enc["patient_id"]) <= patients
    owner = enc.set_index("encounter_id")["patient_id"]
    for name, key in (("diagnoses", "diagnosis_id"), ("lab_results", "lab_id"), ("notes", "note_id")):
        t = extract[name]
        assert t[key].is_unique, name
        assert t["encounter_id"].isin(owner.index).all(), name
        # The row's patient is the patient of its encounter.
        assert (owner.loc[t["encounter_id"]].to_numpy() == t["patient_id"].to_numpy()).all(), name
    # One note per encounter; most patients have some clinical history.
    assert set(extract["notes"]["encounter_id"]) == set(enc["encounter_id"])
    assert enc["patient_id"].nunique() > 0.9 * len(patients)
    consents = extract["consents"]
    assert consents["event_id"].is_unique and set(consents["subject_id"]) <= patients
    # "most but not all patients" have a consent event.
    assert 0.9 * len(patients) < consents["subject_id"].nunique() < len(patients)


def test_dates_are_in_order(extract):
    birth = pd.to_datetime(extract["patients"].set_index("patient_id")["birth_date"])
    enc = extract["encounters"]
    admit, discharge = pd.to_datetime(enc["admit_date"]), pd.to_datetime(enc["discharge_date"])
    assert (discharge >= admit).all()
    assert (admit.to_numpy() >= birth.loc[enc["patient_id"]].to_numpy()).all()
    assert set(enc["encounter_type"]) == {"门诊", "住院", "急诊"}
    span = enc.set_index("encounter_id")[["admit_date", "discharge_date"]].apply(pd.to_datetime)
    for name, column in (("diagnoses", "diagnosis_date"), ("lab_results", "result_date"), ("notes", "note_date")):
        t = extract[name]
        when = pd.to_datetime(t[column]).to_numpy()
        s = span.loc[t["encounter_id"]]
        assert (when >= s["admit_date"].to_numpy()).all() and (when <= s["discharge_date"].to_numpy()).all(), name
    assert extract["diagnoses"]["icd10"].str.fullmatch(r"[A-Z]\d{2}(\.\d{1,2})?").all()
    assert pd.to_numeric(extract["lab_results"]["value"], errors="coerce").notna().all()


def _digits_only(text: pd.Series) -> pd.Series:
    """Note text with the separators a person puts into an ID or phone number taken out."""
    return text.str.replace(r"[\s\-]", "", regex=True).str.upper()


def test_notes_name_their_own_patient_by_name_id_and_phone(extract):
    notes = extract["notes"]
    me = extract["patients"].set_index("patient_id").loc[notes["patient_id"]].reset_index()
    text = notes["text"]
    flat = _digits_only(text)
    has = {
        "name": np.fromiter(map(str.__contains__, text, me["name"]), bool, len(text)),
        "resident_id": np.fromiter(map(str.__contains__, flat, me["resident_id"]), bool, len(text)),
        "mobile": np.fromiter(map(str.__contains__, flat, me["mobile"]), bool, len(text)),
        "address": np.fromiter(map(str.__contains__, text, me["address"]), bool, len(text)),
        "insurance_no": np.fromiter(map(str.__contains__, text, me["insurance_no"]), bool, len(text)),
    }
    # Every note carries the three direct identifiers a scrubber must find (its header).
    assert has["name"].all() and has["resident_id"].all() and has["mobile"].all()
    # The optional mentions at their planned rates (notes.py: 30 % address, 15 % insurance
    # number); 6,007 notes put the observed share within ±0.03 of the plan.
    assert abs(has["address"].mean() - 0.30) < 0.03
    assert abs(has["insurance_no"].mean() - 0.15) < 0.03
    # The spellings vary: grouped, +86-prefixed and lower-case x forms all occur.
    assert text.str.contains(r"\d{6}[ -]\d{8}[ -]\d{3}[\dXx]").any()
    assert text.str.contains(r"\+86").any()
    assert text.str.contains(r"1[3-9]\d-\d{4}-\d{4}").any()
    # No note names a different patient's resident ID.
    id_like = re.compile(r"(?<![\d+])\d{6}[ -]?\d{8}[ -]?\d{3}[\dXx](?!\d)")
    found = text.str.findall(id_like).explode().dropna().str.replace(r"[ -]", "", regex=True).str.upper()
    assert len(found) >= len(text)
    owners = me["resident_id"].loc[found.index]
    assert (found.to_numpy() == owners.to_numpy()).all()


def test_children_have_relatives_in_their_notes_more_often(extract):
    notes = extract["notes"]
    birth = pd.to_datetime(extract["patients"].set_index("patient_id")["birth_date"]).loc[notes["patient_id"]]
    age = (pd.to_datetime(notes["note_date"]).to_numpy() - birth.to_numpy()) / np.timedelta64(1, "D") / 365.25
    family = notes["text"].str.contains("家属").to_numpy()
    child = age < 13
    assert child.sum() > 50
    assert family[child].mean() > 0.8 and 0.3 < family[~child].mean() < 0.5
