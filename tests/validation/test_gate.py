"""validate_release end to end on a small policy: it passes good output, and returns a failing
report with a plain explanation for each way a release must be stopped; what it stores holds
no data value."""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from deidflow.errors import GateFailed
from deidflow.identifiers import check_chars
from deidflow.policy import parse_policy
from deidflow.validation import validate_release

POLICY = """
version: 1
plan: {objective: test, attacker_model: prosecutor, approver: Privacy Officer, executor: data-engineering, version: "1"}
release:
  agreement_id: DSA-TEST
  approval: not_required
  pipia_id: PIPIA-TEST
  purpose: ai-model-training
  recipient: {id: lab, name: 联合实验室}
  model: controlled
  data_categories: [demographics, notes]
subject_table: patients
tables:
  patients:
    path: patients.csv
    subject_column: patient_id
    columns:
      patient_id: {role: link_key, technique: pseudonymise, params: {scope: patient}}
      name: {role: direct_identifier, technique: drop}
      resident_id: {role: direct_identifier, technique: drop}
      mobile: {role: direct_identifier, technique: drop}
      birth_date: {role: quasi_identifier, technique: generalise, hierarchy: {kind: date}}
      sex: {role: quasi_identifier, technique: generalise, hierarchy: {kind: mask}}
      region_code: {role: quasi_identifier, technique: generalise, hierarchy: {kind: region}}
      icd10: {role: sensitive, technique: keep}
  notes:
    path: notes.csv
    subject_column: patient_id
    columns:
      note_id: {role: link_key, technique: pseudonymise, params: {scope: note}}
      patient_id: {role: link_key, technique: pseudonymise, params: {scope: patient}}
      text: {role: free_text, technique: scrub}
limits: {k: K, l: 2, max_overall_risk: 0.25, override: {reason: "a ten-row test table cannot reach 0.05"}}
"""


def policy(k: int = 5):
    return parse_policy(POLICY.replace("K", str(k)))


def resident_id(first17: str) -> str:
    return first17 + str(check_chars(np.array([[int(c) for c in first17]]))[0])


N = 10
NAMES = [f"{s}{g}" for s, g in zip("王李张刘陈杨赵黄周吴", "伟芳娜敏静丽强磊军洋")]
IDS = [resident_id(f"3101011980010{i:02d}1{i % 10}"[:17]) for i in range(N)]
MOBILES = [f"1391234{i:04d}" for i in range(N)]
KNOWN = NAMES + IDS + MOBILES
PSEUDONYMS = [f"P{i:02d}" + "a7c3e9f1b5d2c4e6f8"[: 18] for i in range(N)]


def tables() -> dict[str, pd.DataFrame]:
    patients = pd.DataFrame({
        "patient_id": PSEUDONYMS,
        "birth_date": ["1980"] * 5 + ["1990"] * 5,
        "sex": ["*"] * N,
        "region_code": ["3101"] * N,
        "icd10": ["E11", "I10"] * 5,
    })
    notes = pd.DataFrame({
        "note_id": [f"N{i:02d}ffee0011223344556677"[:21] for i in range(N)],
        "patient_id": PSEUDONYMS,
        "text": [f"患者[姓名]第{i}次复诊，血糖控制可。" for i in range(N)],
    })
    return {"patients": patients, "notes": notes}


def run(tmp_path: Path, name: str, pol=None, tabs=None, consented=PSEUDONYMS, docs=False):
    return validate_release(pol or policy(), tabs or tables(), input_identifiers=KNOWN,
                            consented_pseudonyms=consented, out_dir=tmp_path / name,
                            data_docs=docs)


def failed(report, table: str | None = None) -> dict[str, str]:
    return {e.type: e.explanation for e in report.failures if table in (None, e.table)}


@pytest.fixture(scope="module")
def passing(tmp_path_factory):
    out = tmp_path_factory.mktemp("gate")
    return out, run(out, "ok", docs=True)


def test_good_release_passes(passing):
    _, report = passing
    assert report.success, report.explain()
    assert not report.failures and not report.errors
    types = {e.type for e in report.expectations}
    assert {"expect_subjects_to_be_k_anonymous", "expect_sensitive_column_to_be_l_diverse",
            "expect_no_direct_identifiers", "expect_subjects_to_be_consented",
            "expect_table_to_match_policy_schema"} <= types
    report.raise_if_failed()  # no exception


def test_result_is_stored_with_the_release_and_summarised(passing):
    out, report = passing
    stored = out / "ok" / "validation.json"
    assert report.result_path == stored
    data = json.loads(stored.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert data["success"] is True
    assert {v["table"] for v in data["validations"]} == {"patients", "notes"}
    summary = report.as_dict()
    assert summary == data["summary"]
    assert summary["evaluated"] == len(report.expectations) == summary["passed"]
    assert summary["by_type"]["expect_subjects_to_be_consented"] == \
        {"passed": 2, "failed": 0, "errors": 0}
    assert summary["result_file"] == "validation.json"
    assert summary["data_docs"] == "data_docs/index.html"
    assert set(report.suite_paths) == {"patients", "notes"}
    assert all(p.is_file() and p.parent == out / "ok" / "suites" for p in report.suite_paths.values())


def test_k_1000_fails_with_the_numbers(tmp_path):
    report = run(tmp_path, "k", pol=policy(k=1000))
    assert not report.success
    f = failed(report, "patients")
    assert f["expect_subjects_to_be_k_anonymous"] == (
        "k-anonymity: smallest class has 5 patients, policy requires 1000 (is below k over "
        "birth_date, sex, region_code)")
    assert "1000" in report.explain()
    with pytest.raises(GateFailed) as err:
        report.raise_if_failed()
    assert "nothing may be released" in err.value.message and err.value.fix


def test_note_keeping_a_phone_number_fails(tmp_path):
    tabs = tables()
    tabs["notes"].loc[3, "text"] = "家属电话 138 0013 8000，已告知。"
    report = run(tmp_path, "phone", tabs=tabs)
    assert not report.success
    explanation = failed(report)["expect_no_direct_identifiers"]
    assert list(failed(report)) == ["expect_no_direct_identifiers"]
    # names the table and the column, the kind and count, the scrubbing fix, and the
    # per-column setting for look-alike values
    assert explanation.startswith("direct identifiers left in table 'notes': 'text': 1 row(s) "
                                  "with mobile 1")
    assert "fix the scrubbing settings, not the risk limits" in explanation
    assert "identifier_check" in explanation
    assert [e.table for e in report.failures] == ["notes"]


def test_note_keeping_a_known_name_fails(tmp_path):
    tabs = tables()
    tabs["notes"].loc[0, "text"] = f"患者{NAMES[4]}复诊。"
    report = run(tmp_path, "name", tabs=tabs)
    assert "known identifier of the input" in failed(report)["expect_no_direct_identifiers"]


def test_unconsented_pseudonym_fails(tmp_path):
    tabs = tables()
    stranger = "P99" + "0" * 18
    tabs["patients"].loc[9, "patient_id"] = stranger
    tabs["notes"].loc[9, "patient_id"] = stranger
    report = run(tmp_path, "consent", tabs=tabs)
    assert not report.success
    f = [e for e in report.failures if e.type == "expect_subjects_to_be_consented"]
    assert {e.table for e in f} == {"patients", "notes"}
    assert f[0].explanation.startswith("consent coverage: 1 of 10 released subject(s)")
    assert stranger not in report.explain()


def test_schema_change_fails(tmp_path):
    tabs = tables()
    tabs["patients"] = tabs["patients"].rename(columns={"icd10": "diagnosis"})
    report = run(tmp_path, "schema", tabs=tabs, docs=True)
    assert not report.success
    # an expectation that raised still renders in the Data Docs
    assert len(list((tmp_path / "schema" / "data_docs" / "validations").rglob("*.html"))) == 2
    f = failed(report, "patients")
    assert "missing ['icd10']" in f["expect_table_to_match_policy_schema"]
    assert "not released by the policy ['diagnosis']" in f["expect_table_to_match_policy_schema"]
    assert "expect_table_columns_to_match_set" in f
    # l-diversity of the missing column cannot be evaluated: an error, which also fails closed
    assert any(e.type == "expect_sensitive_column_to_be_l_diverse" for e in report.errors)


def test_missing_and_undeclared_tables_fail(tmp_path):
    tabs = tables()
    tabs["extra"] = tabs.pop("notes")
    report = run(tmp_path, "tables", tabs=tabs)
    assert not report.success
    f = failed(report)
    assert "table 'notes' of the policy is missing" in f["deidflow_table_present"]
    assert "'extra' is not declared" in f["deidflow_table_declared"]


def test_generalised_label_with_a_raw_value_fails(tmp_path):
    tabs = tables()
    tabs["patients"].loc[0, "region_code"] = "上海市黄浦区南京东路1号"
    report = run(tmp_path, "region", tabs=tabs)
    f = failed(report, "patients")
    assert f["expect_column_values_to_match_regex"].startswith(
        "value shape of generalised 'region_code': 1 of 10 values")


def test_no_input_identifier_or_data_value_is_stored(tmp_path):
    """The failing run holds a phone, a name, a resident ID and a raw address in its data;
    none of them reaches the suites, validation.json or the Data Docs."""
    tabs = tables()
    leaked = {"phone": MOBILES[2], "name": NAMES[1], "id": IDS[3],
              "address": "上海市黄浦区南京东路1号"}
    tabs["notes"].loc[1, "text"] = f"{leaked['name']}，电话{leaked['phone']}，身份证{leaked['id']}"
    tabs["patients"].loc[0, "region_code"] = leaked["address"]
    tabs["patients"].loc[9, "sex"] = None
    report = run(tmp_path, "leak", tabs=tabs, docs=True)
    assert not report.success
    files = [p for p in (tmp_path / "leak").rglob("*") if p.is_file()
             and p.suffix in (".json", ".html", ".css", ".js")]
    assert any(p.name == "validation.json" for p in files)
    assert any(p.suffix == ".html" and "validations" in p.parts for p in files)
    needles = [*KNOWN, *leaked.values(), "电话", "患者"]
    for p in files:
        text = p.read_text(encoding="utf-8")
        for needle in needles:
            assert needle not in text, f"{needle!r} stored in {p.relative_to(tmp_path)}"


class LazyTables(Mapping):
    """A mapping that builds a table on access, as a reader of one released file at a time
    would, and records every access and which earlier tables are still alive at that time."""

    def __init__(self, source: dict[str, pd.DataFrame]) -> None:
        self.source, self.fetched, self.alive_at_fetch = source, [], []
        self._refs: list[weakref.ref] = []

    def __getitem__(self, name: str) -> pd.DataFrame:
        gc.collect()
        self.alive_at_fetch.append([r() is not None for r in self._refs])
        self.fetched.append(name)
        df = self.source[name].copy()
        self._refs.append(weakref.ref(df))
        return df

    def __iter__(self):
        return iter(self.source)

    def __len__(self) -> int:
        return len(self.source)


def test_lazy_mapping_is_read_once_per_table_in_policy_order_and_let_go(tmp_path):
    """Each table is fetched once, in policy order, and no earlier table is still referenced
    (by the gate or by Great Expectations' batch cache) when the next one is fetched."""
    tabs = LazyTables({"notes": tables()["notes"], "patients": tables()["patients"]})
    report = run(tmp_path, "lazy", tabs=tabs)
    assert report.success, report.explain()
    assert tabs.fetched == ["patients", "notes"]  # policy order, not the mapping's
    assert tabs.alive_at_fetch == [[], [False]]


def test_sets_as_arrow_arrays_and_series_give_the_same_verdicts(tmp_path):
    """The run-time sets may be pyarrow arrays, pandas Series, the pandas array that
    Series.unique() returns, or numpy arrays (no list needed)."""
    tabs = tables()
    tabs["notes"].loc[0, "text"] = f"患者{NAMES[4]}复诊。"
    tabs["patients"].loc[9, "patient_id"] = "P99" + "0" * 18
    as_list = run(tmp_path, "list", tabs={k: v.copy() for k, v in tabs.items()})
    for kind, wrap in [("arrow", pa.array), ("series", lambda v: pd.Series(v, dtype="str")),
                       ("unique", lambda v: pd.Series(v, dtype="string").dropna().unique()),
                       ("numpy", lambda v: np.array(v, dtype=object))]:
        report = validate_release(policy(), {k: v.copy() for k, v in tabs.items()},
                                  input_identifiers=wrap(KNOWN),
                                  consented_pseudonyms=wrap(PSEUDONYMS),
                                  out_dir=tmp_path / kind, data_docs=False)
        assert [(e.type, e.table, e.success, e.observed) for e in report.expectations] == \
            [(e.type, e.table, e.success, e.observed) for e in as_list.expectations]
    assert {e.type for e in as_list.failures} == {"expect_no_direct_identifiers",
                                                  "expect_subjects_to_be_consented"}


def _parts(frame: pd.DataFrame, n: int):
    from deidflow.validation.gate import Parts

    bounds = np.linspace(0, len(frame), n + 1).astype(int)
    loaded = []

    def loader(lo: int, hi: int):
        def load() -> pd.DataFrame:
            loaded.append((lo, hi))
            return frame.iloc[lo:hi].reset_index(drop=True)
        return load

    return Parts(tuple(loader(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]))), loaded


def test_a_table_in_parts_passes_like_the_whole_table(tmp_path):
    tabs = tables()
    whole = run(tmp_path, "whole", tabs=tables())
    tabs["notes"], loaded = _parts(tabs["notes"], 3)
    parted = run(tmp_path, "parts", tabs=tabs)
    assert parted.success, parted.explain()
    assert len(loaded) == 3  # each partition loaded once
    assert [(e.type, e.table, e.success) for e in parted.expectations] == \
        [(e.type, e.table, e.success) for e in whole.expectations]
    stored = json.loads((tmp_path / "parts" / "validation.json").read_text())
    assert sorted(v.get("partition", -1) for v in stored["validations"] if v["table"] == "notes") == [0, 1, 2]


def test_a_failure_in_one_part_fails_the_table_and_names_the_part(tmp_path):
    tabs = tables()
    notes = tabs["notes"].copy()
    notes.loc[8, "text"] = f"患者{NAMES[8]}复诊"  # a known name, in the third part
    tabs["notes"], _ = _parts(notes, 3)
    consented = PSEUDONYMS[:-1]  # the last subject's rows (third part) are not consented
    report = run(tmp_path, "bad", tabs=tabs, consented=consented)
    assert not report.success
    f = failed(report, "notes")
    assert f["expect_subjects_to_be_consented"].startswith("partition 2 of 3: ")
    assert "expect_no_direct_identifiers" in f


def test_the_subject_table_is_never_checked_in_parts(tmp_path):
    tabs = tables()
    tabs["patients"], _ = _parts(tabs["patients"], 2)
    with pytest.raises(ValueError, match="subject table must be validated whole"):
        run(tmp_path, "subject", tabs=tabs)
