"""Property: random consent histories, written as hospital systems write them (a CSV event log
and a FHIR R4 bundle, ids in variant spellings, times in several zones or none, guardians),
imported through the real importers into SQLite and PostgreSQL, give the gate's verdicts that
the independent reference evaluator (reference.py) gives, subject by subject."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference
from deidflow.consent.gate import consent_gate
from deidflow.consent.importers import import_consent_file
from deidflow.consent.registry import ConsentRegistry

NOW = datetime.now(timezone.utc).replace(microsecond=0)
RUN = NOW - timedelta(days=1)
#: Subject ids: hospital numbers and resident IDs whose check character is X.
IDS = ["P0000001", "P0000002", "P0000003", "P0000004", "11010519900101103X", "31010419850505200X"]
GUARDIAN_ID = "110105198001011238"
FULL = str.maketrans("0123456789P", "０１２３４５６７８９Ｐ")
SPELL = [lambda s: s, lambda s: s.translate(FULL), lambda s: f" {s}\u3000", lambda s: s.lower() if s.endswith("X") else s]
ZONES = ["+08:00", "Z", "-03:00", None]
SHA = "cd" * 32

histories = st.lists(st.fixed_dictionaries({
    "subject": st.integers(0, len(IDS) - 1), "consent": st.integers(0, 1), "spelling": st.integers(0, 3),
    "fhir": st.booleans(), "kind": st.sampled_from(["granted", "amended", "withdrawn"]),
    "hours": st.integers(-24 * 900, 20), "zone": st.sampled_from(ZONES),
    "purposes": st.sets(st.sampled_from(["ai-model-training", "care"]), min_size=1),
    "recipients": st.sets(st.sampled_from(["shanghai-ai-lab", "fudan-med-ai"]), min_size=1),
    "categories": st.sets(st.sampled_from(["demographics", "labs", "notes"]), min_size=1),
    "scoped": st.booleans(),  # a withdrawal that carries terms (else: everything)
    "separate": st.booleans(), "until": st.none() | st.integers(-400, 400), "guardian": st.booleans(),
}), max_size=24)
births = st.lists(st.none() | st.integers(3 * 365, 60 * 365), min_size=len(IDS), max_size=len(IDS))


def _time(hours: int, zone: str | None) -> str:
    moment = pd.Timestamp(RUN) + pd.Timedelta(hours=hours)
    if zone is None:
        return moment.tz_convert("Asia/Shanghai").tz_localize(None).isoformat()
    return moment.tz_convert("UTC" if zone == "Z" else zone).isoformat()


def _build(specs, tmp: Path):
    """The CSV and FHIR files, and the events as imported (arrival order: CSV, then FHIR)."""
    csv_rows, fhir_entries, csv_events, fhir_events = [], [], [], []
    versions: dict[str, int] = {}
    for i, x in enumerate(specs):
        subject = SPELL[x["spelling"]](IDS[x["subject"]])
        cid = f"c{x['subject']}-{x['consent']}" + ("f" if x["fhir"] else "")
        withdrawal = x["kind"] == "withdrawn"
        scoped = (not withdrawal) or x["scoped"]
        terms = {
            "purposes": ";".join(sorted(x["purposes"])) if scoped else "",
            "recipients": ";".join(sorted(x["recipients"])) if scoped else "",
            "data_categories": ";".join(sorted(x["categories"])) if scoped else "",
        }
        until = (RUN.date() + timedelta(days=x["until"])).isoformat() if x["until"] is not None else ""
        guardian = x["guardian"] and not withdrawal
        when = _time(x["hours"], x["zone"])
        if not x["fhir"]:
            csv_rows.append({
                "event_id": f"e{i}", "consent_id": cid, "subject_id": subject, "event": x["kind"],
                "recorded_at": when, "grantor": "guardian" if guardian else "self",
                "guardian_name": "王芳" if guardian else "", "guardian_id": GUARDIAN_ID if guardian else "",
                "separate": str(x["separate"]).lower() if not withdrawal else "",
                "cross_border": "false" if not withdrawal else "", **terms,
                "valid_from": "", "valid_until": until if not withdrawal else "",
                "notice_version": "v1" if not withdrawal else "", "form_sha256": SHA if not withdrawal else ""})
            kind = x["kind"]
            csv_events.append({"subject_id": subject, "consent_id": cid, "event": kind, "recorded_at": when,
                               "grantor": "guardian" if guardian else "self", "separate": x["separate"],
                               "cross_border": False, **terms, "valid_from": None,
                               "valid_until": until if not withdrawal else None})
            continue
        versions[cid] = versions.get(cid, 0) + 1
        kind = "withdrawn" if withdrawal else ("granted" if versions[cid] == 1 else "amended")
        res = {"resourceType": "Consent", "id": cid, "meta": {"versionId": str(versions[cid])},
               "status": "inactive" if withdrawal else "active",
               "patient": {"reference": f"Patient/{subject}"}, "dateTime": when,
               "provision": {"type": "permit",
                             **({"purpose": [{"code": p} for p in terms["purposes"].split(";")]} if scoped else {}),
                             **({"actor": [{"role": {"coding": [{"code": "IRCP"}]},
                                            "reference": {"reference": f"Organization/{r}"}}
                                           for r in terms["recipients"].split(";")]} if scoped else {}),
                             **({"class": [{"code": c} for c in terms["data_categories"].split(";")]} if scoped else {}),
                             **({"period": {"end": until}} if until and not withdrawal else {})},
               "extension": [
                   {"url": "https://deidflow.org/fhir/StructureDefinition/pipl-separate-consent",
                    "valueBoolean": x["separate"]},
                   {"url": "https://deidflow.org/fhir/StructureDefinition/notice-version", "valueString": "v1"},
                   {"url": "https://deidflow.org/fhir/StructureDefinition/form-sha256", "valueString": SHA}]}
        if guardian:
            res["performer"] = [{"reference": "RelatedPerson/g1", "display": "王芳",
                                 "identifier": {"value": GUARDIAN_ID}}]
        fhir_entries.append({"resource": res})
        fhir_events.append({"subject_id": subject, "consent_id": f"Consent/{cid}", "event": kind,
                            "recorded_at": when, "grantor": "guardian" if guardian else "self",
                            "separate": x["separate"], "cross_border": False, **terms, "valid_from": None,
                            "valid_until": until if not withdrawal else None})
    csv_path = tmp / "consents.csv"
    pd.DataFrame(csv_rows, columns=["event_id", "consent_id", "subject_id", "event", "recorded_at", "grantor",
                                    "guardian_name", "guardian_id", "separate", "purposes", "recipients",
                                    "data_categories", "cross_border", "valid_from", "valid_until",
                                    "notice_version", "form_sha256"]).to_csv(csv_path, index=False)
    fhir_path = tmp / "consents.json"
    fhir_path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": fhir_entries},
                                    ensure_ascii=False), encoding="utf-8")
    return csv_path if csv_rows else None, fhir_path if fhir_entries else None, csv_events + fhir_events


def _check(url: str, tmp: Path, specs, birth_days, abroad: bool, categories: set[str]) -> None:
    csv_path, fhir_path, events = _build(specs, tmp)
    reg = ConsentRegistry(url)
    try:
        for path in (csv_path, fhir_path):
            if path is not None:
                import_consent_file(reg, path)
        snap = reg.snapshot(RUN)
    finally:
        reg.dispose()
    subjects = pd.DataFrame({
        "subject_id": [SPELL[i % 3](s) for i, s in enumerate(IDS)],
        "birth_date": [(RUN.date() - timedelta(days=d)).isoformat() if d else None for d in birth_days]})
    gate = consent_gate(snap, subjects, purpose="ai-model-training", recipient_id="shanghai-ai-lab",
                        categories=sorted(categories), abroad=abroad, as_of=RUN)
    want = reference.evaluate(events, subjects.to_dict("records"), as_of=RUN, purpose="ai-model-training",
                              recipient="shanghai-ai-lab", categories=categories, abroad=abroad)
    assert reference.gate_verdicts(gate) == want


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@settings(max_examples=60, **SETTINGS)
@given(histories, births, st.booleans(), st.sets(st.sampled_from(["demographics", "labs", "notes"]), min_size=1))
def test_sqlite_registry_gate_agrees_with_the_reference(tmp_path_factory, specs, birth_days, abroad, categories):
    tmp = tmp_path_factory.mktemp("h")
    _check(f"sqlite:///{tmp / 'consent.db'}", tmp, specs, birth_days, abroad, categories)


@pytest.mark.postgres
@settings(max_examples=30, **SETTINGS)
@given(histories, births, st.booleans(), st.sets(st.sampled_from(["demographics", "labs", "notes"]), min_size=1))
def test_postgresql_registry_gate_agrees_with_the_reference(tmp_path_factory, pg_url, specs, birth_days, abroad,
                                                            categories):
    import sqlalchemy as sa
    from urllib.parse import quote

    schema = "h_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in pg_url else "?"
    try:
        _check(f"{pg_url}{sep}options={quote(f'-csearch_path={schema}')}", tmp_path_factory.mktemp("h"),
               specs, birth_days, abroad, categories)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
