"""Suites generated from the policy, saved as GX JSON, and reloaded only when every
expectation type is registered (GX would otherwise drop the unknown one and pass without it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deidflow.errors import DeidflowError
from deidflow.policy import load_policy
from deidflow.validation.expectations import CUSTOM_EXPECTATIONS
from deidflow.validation.suite import (
    RunSets,
    build_suites,
    expectation_types,
    load_suite,
    save_suite,
)

REPO = Path(__file__).resolve().parents[2]
SETS = RunSets(known_identifiers_ref="runtime:abc", n_known_identifiers=3,
               consented_ref="runtime:def", n_consented=2)


@pytest.fixture(scope="module")
def example_suites():
    policy = load_policy(REPO / "configs" / "release.yaml").policy
    return policy, build_suites(policy, SETS)


def test_one_suite_per_table_with_the_privacy_checks(example_suites):
    policy, suites = example_suites
    assert set(suites) == set(policy.tables)
    subject = expectation_types(suites["patients"])
    for t in ("expect_subjects_to_be_k_anonymous", "expect_max_class_risk_to_be_at_most",
              "expect_overall_risk_to_be_at_most", "expect_no_direct_identifiers",
              "expect_subjects_to_be_consented", "expect_table_to_match_policy_schema",
              "expect_table_columns_to_match_set", "expect_column_values_to_not_be_null",
              "expect_column_values_to_match_regex"):
        assert t in subject, t
    notes = expectation_types(suites["notes"])
    assert "expect_no_direct_identifiers" in notes and "expect_subjects_to_be_consented" in notes
    assert "expect_subjects_to_be_k_anonymous" not in notes  # risk is measured per subject


def test_thresholds_come_from_the_policy(example_suites):
    policy, suites = example_suites
    kw = {e.expectation_type: e.configuration.kwargs for e in suites["patients"].expectations}
    assert kw["expect_subjects_to_be_k_anonymous"]["k"] == policy.limits.k
    assert kw["expect_subjects_to_be_k_anonymous"]["quasi_identifiers"] == \
        ["birth_date", "sex", "region_code", "ethnicity"]
    assert kw["expect_max_class_risk_to_be_at_most"]["max_class_risk"] == pytest.approx(1 / 5)
    assert kw["expect_overall_risk_to_be_at_most"]["max_overall_risk"] == pytest.approx(0.05)
    cols = kw["expect_table_columns_to_match_set"]["column_set"]
    assert "name" not in cols and "resident_id" not in cols  # dropped columns are not released


def test_save_and_load_keep_every_expectation_and_required_value(example_suites, tmp_path):
    _, suites = example_suites
    suite = suites["patients"]
    path = save_suite(suite, tmp_path / "patients.json")
    back = load_suite(path)
    assert expectation_types(back) == expectation_types(suite)
    k = next(e for e in back.expectations if e.expectation_type == "expect_subjects_to_be_k_anonymous")
    assert k.configuration.kwargs["k"] == 6  # required fields are persisted (trap 2)
    saved = json.loads(path.read_text())
    assert {e["type"] for e in saved["expectations"]} >= {c.expectation_type for c in
                                                          CUSTOM_EXPECTATIONS
                                                          if c.__name__ != "ExpectSensitiveColumnToBeLDiverse"}


def test_unregistered_expectation_type_is_an_error(example_suites, tmp_path):
    _, suites = example_suites
    path = save_suite(suites["patients"], tmp_path / "patients.json")
    data = json.loads(path.read_text())
    data["expectations"][4]["type"] = "expect_subjects_to_be_k_anonymous_v2"
    path.write_text(json.dumps(data))
    with pytest.raises(DeidflowError) as err:
        load_suite(path)
    e = err.value
    assert "expect_subjects_to_be_k_anonymous_v2" in e.message
    assert "not registered" in e.message
    assert e.key == "expectations[4].type" and e.file == str(path)
    assert e.fix


def test_expectation_gx_would_drop_for_its_configuration_is_an_error(example_suites, tmp_path):
    _, suites = example_suites
    path = save_suite(suites["patients"], tmp_path / "patients.json")
    data = json.loads(path.read_text())
    i = next(i for i, e in enumerate(data["expectations"])
             if e["type"] == "expect_subjects_to_be_k_anonymous")
    del data["expectations"][i]["kwargs"]["k"]  # a hand-edited suite without its threshold
    path.write_text(json.dumps(data))
    with pytest.raises(DeidflowError):
        load_suite(path)


@pytest.mark.parametrize("text", ["not json", "[]", '{"name": "x"}'])
def test_not_a_suite_is_an_error(tmp_path, text):
    p = tmp_path / "s.json"
    p.write_text(text)
    with pytest.raises(DeidflowError) as err:
        load_suite(p)
    assert err.value.file == str(p)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DeidflowError):
        load_suite(tmp_path / "nope.json")
