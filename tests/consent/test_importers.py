"""CSV and FHIR R4/R5 importers: the mapping to canonical events, and malformed entries named by
entry, field and fix, with nothing imported from a file that has any."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from deidflow.consent.importers import (
    events_from_csv,
    events_from_fhir,
    import_consent_file,
    read_consent_file,
)
from deidflow.consent.registry import ConsentRegistry
from deidflow.errors import ConsentError

HEADER = ("event_id,subject_id,event,recorded_at,grantor,guardian_name,guardian_id,separate,"
          "purposes,recipients,data_categories,cross_border,valid_from,valid_until,"
          "notice_version,form_sha256")
SHA = "a" * 64
GOOD = f"E1,P1,granted,2024-03-01T09:00:00+08:00,self,,,true,ai-model-training,shanghai-ai-lab,demographics;labs,true,2024-01-01,2027-12-31,v2.1,{SHA}"


def write_csv(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    path = tmp_path / "consents.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


# --- CSV ---------------------------------------------------------------------------------------
def test_csv_lists_are_canonical_and_times_are_utc(tmp_path):
    row = GOOD.replace("demographics;labs", " Labs;demographics; labs ").replace(
        "2024-03-01T09:00:00+08:00", "2024-03-01T09:00:00")  # no offset: Beijing time
    ev = events_from_csv(write_csv(tmp_path, row))
    assert ev.loc[0, "data_categories"] == "demographics;labs"
    assert ev.loc[0, "recorded_at"] == pd.Timestamp("2024-03-01T01:00:00Z")
    assert ev.loc[0, "consent_id"] == "P1"  # without consent_id, one consent per subject


def test_csv_withdrawal_needs_only_the_core_fields(tmp_path):
    ev = events_from_csv(write_csv(tmp_path, GOOD, "E2,P1,withdrawn,2025-01-01T10:00:00+08:00,,,,,,,,,,,,"))
    assert ev["event"].tolist() == ["granted", "withdrawn"]


@pytest.mark.parametrize("row, line_field, fix_word", [
    (GOOD.replace("granted", "given"), "event", "granted|amended|withdrawn"),
    (GOOD.replace("2024-03-01T09:00:00+08:00", "yesterday"), "recorded_at", "2024-05-01T09:30:00+08:00"),
    (GOOD.replace(",self,,,", ",guardian,王芳,110105198001011230,"), "guardian_id", "check digit"),
    (GOOD.replace(",self,,,", ",guardian,,110105198001011238,"), "guardian_name", "guardian's name"),
    (GOOD.replace(",true,ai", ",maybe,ai"), "separate", "true or false"),
    (GOOD.replace("shanghai-ai-lab", ""), "recipients", "';'-separated"),
    (GOOD.replace("2027-12-31", "2023-12-31"), "valid_until", "validity period"),
    (GOOD.replace("2027-12-31", "31/12/2027"), "valid_until", "YYYY-MM-DD"),
    (GOOD.replace(SHA, "abc"), "form_sha256", "64 hex"),
    (GOOD.replace(",v2.1,", ",,"), "notice_version", "privacy notice"),
])
def test_csv_malformed_entry_is_named_and_nothing_is_imported(tmp_path, row, line_field, fix_word):
    path = write_csv(tmp_path, GOOD.replace("E1", "E0"), row)
    with pytest.raises(ConsentError) as err:
        events_from_csv(path)
    e = err.value
    assert e.file == str(path)
    assert e.row == 3 and e.column == line_field  # header is line 1, the bad row is line 3
    assert f"row 3, field '{line_field}'" in e.message
    assert fix_word in e.fix
    assert "nothing was imported" in e.message
    reg = ConsentRegistry(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(ConsentError):
        import_consent_file(reg, path)
    assert reg.count_events() == 0  # the good row was not imported either


def test_csv_lists_every_problem_at_once(tmp_path):
    rows = [GOOD.replace("E1", f"E{i}").replace("granted", "given") for i in range(12)]
    with pytest.raises(ConsentError) as err:
        events_from_csv(write_csv(tmp_path, *rows))
    assert err.value.message.startswith("12 problems in malformed consent entries")
    assert "row 2," in err.value.message and "row 11," in err.value.message
    assert "row 12," not in err.value.message
    assert err.value.message.endswith("… and 2 more problems")


def test_csv_repeated_event_id_and_missing_columns(tmp_path):
    with pytest.raises(ConsentError, match="repeats an earlier row's event_id") as err:
        events_from_csv(write_csv(tmp_path, GOOD, GOOD))
    assert err.value.row == 3
    with pytest.raises(ConsentError, match="missing column") as err:
        events_from_csv(write_csv(tmp_path, "E1,P1", header="event_id,subject_id"))
    assert err.value.column == "event" and "schema" in err.value.fix


def test_unreadable_files(tmp_path):
    with pytest.raises(ConsentError, match="file not found"):
        events_from_csv(tmp_path / "nope.csv")
    bad = tmp_path / "gbk.csv"
    bad.write_bytes((HEADER + "\n" + GOOD.replace("self,,", "self,王芳,")).encode("gbk"))
    with pytest.raises(ConsentError, match="UTF-8"):
        events_from_csv(bad)
    with pytest.raises(ConsentError, match="cannot tell the format") as err:
        read_consent_file(tmp_path / "consents.xml")
    assert "--format" in err.value.fix


# --- FHIR --------------------------------------------------------------------------------------
def test_r4_mapping(fixtures):
    ev = events_from_fhir(fixtures / "consents_r4.json").set_index("consent_id")
    # draft c-r4-5 is not yet a consent; the Patient entry is ignored
    assert sorted(ev.index.unique()) == ["Consent/c-r4-1", "Consent/c-r4-2", "Consent/c-r4-3", "Consent/c-r4-4"]
    g = ev.loc["Consent/c-r4-2"]
    assert (g["grantor"], g["guardian_name"], g["guardian_id"]) == ("guardian", "王芳", "110105198001011238")
    versions = ev.loc["Consent/c-r4-3"].sort_values("recorded_at")
    assert versions["event"].tolist() == ["granted", "withdrawn"]
    assert versions["event_id"].tolist() == ["Consent/c-r4-3/_history/1", "Consent/c-r4-3/_history/2"]
    first = ev.loc["Consent/c-r4-1"]
    assert first["separate"] and first["cross_border"]
    assert first["recipients"] == "shanghai-ai-lab" and first["purposes"] == "ai-model-training"
    assert first["data_categories"] == "demographics;diagnoses;encounters;labs;notes"
    # c-r4-4 lacks the article 29 basis (not separate) and article 39 (no cross-border)
    assert not ev.loc["Consent/c-r4-4", "separate"] and not ev.loc["Consent/c-r4-4", "cross_border"]


def test_r5_mapping(fixtures):
    ev = events_from_fhir(fixtures / "consents_r5.json").set_index("consent_id")
    assert ev.loc["Consent/c-r5-2", "grantor"] == "guardian"
    # one provision per consent row when a Consent has several
    assert ev.loc["Consent/c-r5-3#p0", "purposes"] == "clinical-care"
    assert ev.loc["Consent/c-r5-3#p1", "data_categories"] == "demographics"
    assert ev.loc["Consent/c-r5-4", "event"] == "withdrawn"  # decision: deny
    assert ev["event_id"].is_unique
    assert all(len(s) == 64 for s in ev["form_sha256"].dropna())


def _bundle(fixtures: Path, name: str) -> dict:
    return json.loads((fixtures / name).read_text(encoding="utf-8"))


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def _consent(doc: dict, rid: str) -> dict:
    return next(e["resource"] for e in doc["entry"] if e["resource"].get("id") == rid)


def _set_sha1_attachment(res: dict) -> None:
    res["extension"] = [e for e in res["extension"] if not e["url"].endswith("form-sha256")]
    res["sourceAttachment"] = {"hash": base64.b64encode(hashlib.sha1(b"form").digest()).decode()}


@pytest.mark.parametrize("name, rid, mutate, field, fix_word", [
    ("consents_r4.json", "c-r4-1", lambda r: r.pop("id"), "id", "give every Consent an id"),
    ("consents_r4.json", "c-r4-1", lambda r: r.update(status="signed"), "status", "active"),
    ("consents_r4.json", "c-r4-1", lambda r: r.pop("patient"), "patient", "Patient/"),
    ("consents_r4.json", "c-r4-1", lambda r: r.update(dateTime="last week"), "dateTime", "2024-05-01"),
    ("consents_r4.json", "c-r4-1", lambda r: r["provision"].update(provision=[{"type": "deny"}]),
     "provision.provision", "separate Consent"),
    ("consents_r4.json", "c-r4-1", lambda r: r["provision"].update(purpose=[]), "provision.purpose", "purpose"),
    ("consents_r4.json", "c-r4-1", lambda r: r["provision"].update(actor=[]), "provision.actor", "IRCP"),
    ("consents_r4.json", "c-r4-2", lambda r: r["contained"][0]["identifier"][0].update(value="123"),
     "performer", "resident ID"),
    ("consents_r4.json", "c-r4-1", _set_sha1_attachment, "sourceAttachment.hash", "form-sha256"),
    ("consents_r5.json", "c-r5-1", lambda r: r.update(dateTime="2024-01-01"), "decision", "one FHIR version"),
    ("consents_r5.json", "c-r5-1", lambda r: r.update(provision={"purpose": []}), "provision", "list"),
])
def test_fhir_malformed_entry_is_named(tmp_path, fixtures, name, rid, mutate, field, fix_word):
    doc = _bundle(fixtures, name)
    index = next(i for i, e in enumerate(doc["entry"]) if e["resource"].get("id") == rid)
    mutate(doc["entry"][index]["resource"])
    path = _write(tmp_path, doc)
    with pytest.raises(ConsentError) as err:
        events_from_fhir(path)
    e = err.value
    assert e.file == str(path) and e.column == field
    assert f"entry[{index}]" in e.message and f"field '{field}'" in e.message
    assert fix_word in e.fix


def test_fhir_document_level_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConsentError, match=r"not valid JSON \(line 1"):
        events_from_fhir(bad)
    with pytest.raises(ConsentError, match="must be Bundle or Consent"):
        events_from_fhir(_write(tmp_path, {"resourceType": "Patient"}))
    with pytest.raises(ConsentError, match="entry\\[0\\].*resource.*is missing"):
        events_from_fhir(_write(tmp_path, {"resourceType": "Bundle", "entry": [{}]}))


def test_a_single_consent_resource_and_an_unversioned_change(tmp_path, fixtures):
    res = _consent(_bundle(fixtures, "consents_r4.json"), "c-r4-1")
    one = events_from_fhir(_write(tmp_path, res))
    assert len(one) == 1
    edited = copy.deepcopy(res)
    edited["provision"]["purpose"][0]["code"] = "quality-audit"
    two = events_from_fhir(_write(tmp_path, edited))
    # without meta.versionId the event id hashes the resource: an edit is a new event
    assert one.loc[0, "event_id"] != two.loc[0, "event_id"]
    assert one.loc[0, "consent_id"] == two.loc[0, "consent_id"]


def test_fhir_and_csv_of_the_same_consent_agree(fixtures):
    fhir = events_from_fhir(fixtures / "consents_r4.json").set_index("subject_id")
    csv = events_from_csv(fixtures / "consents.csv").set_index("subject_id")
    for col in ("purposes", "recipients", "data_categories", "separate", "cross_border",
                "valid_from", "valid_until", "recorded_at"):
        assert fhir.loc["P0000001", col] == csv.loc["P0000001", col], col
