"""The per-column identifier_check of the policy, and which input identifiers are looked for:
ordinary clinical values that look like identifiers (15-digit SNOMED CT codes, long decimals)
no longer block a release when the policy says why; nothing else is exempted."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.errors import PolicyError
from deidflow.policy import IdentifierCheck, parse_policy
from deidflow.validation.expectations import ExpectNoDirectIdentifiers, runtime_set
from deidflow.validation.known_identifiers import identifying_values

from .gxhelp import raised

SNOMED = ["428361000124107", "444814009000012", "160903007"]  # 15- and 9-digit concept ids


def _check(gx_validate, df, known=("张伟",), **kw):
    with runtime_set(list(known)) as ref:
        [res] = gx_validate(df, ExpectNoDirectIdentifiers(
            whole_value_columns=[], known_identifiers_ref=ref, n_known_identifiers=len(known),
            table="observations", **kw))
    assert not raised(res), res.exception_info
    return res


def test_snomed_codes_fail_without_a_setting_and_the_error_names_the_table(gx_validate):
    res = _check(gx_validate, pd.DataFrame({"code": SNOMED}))
    assert res.success is False
    from deidflow.validation.expectations import ExpectNoDirectIdentifiers as E
    text = E.explain({"table": "observations"}, res.result, False)
    assert "table 'observations'" in text and "identifier_check" in text


def test_allowed_format_exempts_only_matching_values(gx_validate):
    formats = {"code": [r"[0-9]{6,18}"]}
    ok = _check(gx_validate, pd.DataFrame({"code": SNOMED}), allowed_formats=formats)
    assert ok.success is True
    # a mobile number written with separators does not match the format: still caught
    leak = _check(gx_validate, pd.DataFrame({"code": SNOMED + ["138-1234-5678"]}),
                  allowed_formats=formats)
    assert leak.success is False
    # a known identifier of the input is still looked for in an allowed column
    named = _check(gx_validate, pd.DataFrame({"code": SNOMED + ["张伟"]}),
                   allowed_formats={"code": [r".+"]})
    assert named.success is False


def test_check_off_skips_only_that_column(gx_validate):
    df = pd.DataFrame({"value": ["13912345678.12345"], "note": ["电话 13912345678"]})
    res = _check(gx_validate, df, unchecked_columns=["value"])
    assert res.success is False
    assert list(res.result["columns_with_identifiers"]) == ["note"]
    assert _check(gx_validate, df[["value"]], unchecked_columns=["value"]).success is True


def test_identifier_check_needs_a_reason_and_a_regex():
    with pytest.raises(ValueError, match="reason"):
        IdentifierCheck(check=False)
    with pytest.raises(ValueError, match="regular expression"):
        IdentifierCheck(allow_formats=["[0-9"], reason="codes")
    assert IdentifierCheck(check="off", reason="SNOMED CT concept ids").check is False


def test_identifier_check_refused_on_a_direct_identifier():
    from tests.integration.conftest import EXAMPLE_POLICY

    text = EXAMPLE_POLICY.read_text(encoding="utf-8").replace(
        "mobile:       {role: direct_identifier, technique: drop, category: demographics}",
        "mobile:       {role: direct_identifier, technique: drop, category: demographics, "
        "identifier_check: {check: off, reason: x}}")
    with pytest.raises(PolicyError, match="identifier_check cannot be set"):
        parse_policy(text)


def test_short_and_common_values_are_not_looked_for():
    values = pa.array(["1", "42", "12345", "123456", "张伟", "李", None, "王芳", "王芳", "王芳"])
    kept = identifying_values(values, common=3).to_pylist()
    assert kept == ["123456", "张伟"]
    # below the common threshold a shared value is kept
    assert identifying_values(values, common=4).to_pylist().count("王芳") == 3


def test_other_tables_values_are_not_left_out_for_filling_many_rows():
    from deidflow.validation.known_identifiers import non_subject_values

    # the subject table: a value held by k=3 subjects is left out there
    assert identifying_values(pa.array(["王芳", "王芳", "王芳", "张伟"]), common=3).to_pylist() == ["张伟"]
    # an attending-doctor column: one doctor in 5,000 encounters is one person, looked for,
    # and so is a doctor who bears a name common among the patients; once each
    doctors = pa.array(["夏莹"] * 5000 + ["王芳"] * 10 + ["李", "42", None, "申屠梓轩"])
    kept = non_subject_values(doctors).to_pylist()
    assert sorted(kept) == sorted(["夏莹", "王芳", "申屠梓轩"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["夏莹", "王芳", "申屠梓轩", "7", "123456", "12", ""]), max_size=40),
       st.integers(min_value=2, max_value=6))
def test_other_tables_values_are_the_distinct_values_the_shape_rules_keep(values, k):
    from deidflow.validation.known_identifiers import non_subject_values

    # whatever the row counts: a value is looked for exactly when the rules without counting
    # keep it, once
    kept = non_subject_values(pa.array(values, type=pa.string())).to_pylist()
    want = set(identifying_values(pa.array(values, type=pa.string()), common=0).to_pylist())
    assert sorted(kept) == sorted(want) and len(kept) == len(set(kept))
    assert set(identifying_values(pa.array(values, type=pa.string()), common=k).to_pylist()) <= want
