"""The policy loader refuses unknown keys, impossible settings and bad technique parameters
with messages that name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deidflow.errors import PolicyError
from deidflow.policy import ReleaseModel, Role, load_policy, parse_policy

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "release.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return p


def test_example_policy_loads_and_covers_every_role():
    loaded = load_policy(EXAMPLE)
    roles = {col.role for t in loaded.policy.tables.values() for col in t.columns.values()}
    assert roles == set(Role), f"the example must document every role; missing {set(Role) - roles}"
    assert len(loaded.sha256) == 64
    assert loaded.policy.max_class_risk == pytest.approx(1 / 5)
    assert loaded.policy.quasi_identifiers() == ["birth_date", "sex", "region_code", "ethnicity"]


def test_release_model_thresholds_are_gbt_42460():
    assert ReleaseModel.public.class_risk_threshold == pytest.approx(1 / 20)
    assert ReleaseModel.controlled.class_risk_threshold == pytest.approx(1 / 5)
    assert ReleaseModel.enclave.class_risk_threshold == pytest.approx(1 / 3)


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    raw = example()
    raw["limits"]["kk"] = raw["limits"].pop("k")
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, raw))
    e = err.value
    assert e.file.endswith("policy.yaml")
    assert e.key == "limits.kk"
    assert "did you mean 'k'" in e.fix


def test_typo_in_a_column_spec_names_the_column(tmp_path):
    raw = example()
    raw["tables"]["patients"]["columns"]["name"]["techniqe"] = "drop"
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, raw))
    assert err.value.key == "tables.patients.columns.name.techniqe"
    assert "technique" in err.value.fix


def test_unknown_technique_suggests_the_close_one(tmp_path):
    raw = example()
    raw["tables"]["patients"]["columns"]["name"]["technique"] = "dorp"
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, raw))
    assert err.value.key == "tables.patients.columns.name"
    assert "did you mean 'drop'" in err.value.fix


def test_quasi_identifier_without_hierarchy_is_refused(tmp_path):
    raw = example()
    del raw["tables"]["patients"]["columns"]["region_code"]["hierarchy"]
    with pytest.raises(PolicyError, match="region_code is a quasi_identifier to generalise but has no hierarchy"):
        load_policy(write(tmp_path, raw))


def test_direct_identifier_cannot_be_kept(tmp_path):
    raw = example()
    raw["tables"]["patients"]["columns"]["name"]["technique"] = "keep"
    with pytest.raises(PolicyError, match="direct_identifier and cannot be kept"):
        load_policy(write(tmp_path, raw))


def test_approver_must_differ_from_executor(tmp_path):
    raw = example()
    raw["plan"]["executor"] = raw["plan"]["approver"]
    with pytest.raises(PolicyError, match="approver different from the executor"):
        load_policy(write(tmp_path, raw))


@pytest.mark.parametrize(
    "path,value,match",
    [
        (("limits", "k"), 0, "greater than or equal to 1"),
        (("limits", "suppression_budget"), 1.5, "less than 1"),
        (("release", "retention_years"), 1, "greater than or equal to 3"),
        (("release", "model"), "open", "public"),
        (("subject_table",), "people", "subject_table 'people' is not one of the tables"),
    ],
)
def test_impossible_settings(tmp_path, path, value, match):
    raw = example()
    node = raw
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(PolicyError, match=match) as err:
        load_policy(write(tmp_path, raw))
    assert err.value.fix


def test_missing_required_section(tmp_path):
    raw = example()
    del raw["plan"]
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, raw))
    assert err.value.key == "plan"
    assert "add 'plan'" in err.value.fix


def test_not_yaml_reports_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("release:\n  purpose: [unclosed\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="not valid YAML at line"):
        load_policy(p)


def test_missing_file():
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy("/nonexistent/policy.yaml")


def test_error_renders_where_what_and_fix(tmp_path):
    raw = example()
    raw["limits"]["kk"] = 3
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, raw))
    text = str(err.value)
    assert text.startswith(str(tmp_path / "policy.yaml"))
    assert "key 'limits.kk'" in text and "Fix:" in text


def test_parse_policy_rejects_non_mapping():
    with pytest.raises(PolicyError, match="must be a YAML mapping"):
        parse_policy("- a\n- b\n")
