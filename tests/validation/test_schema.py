"""The released table has exactly the columns the policy releases, with the declared kinds."""

from __future__ import annotations

import pandas as pd

from deidflow.validation.expectations import ExpectTableToMatchPolicySchema, dtype_kind_matches

from .gxhelp import raised

COLUMNS = ["patient_id", "birth_date", "text"]
DTYPES = {"patient_id": "string", "birth_date": "any", "text": "string"}


def released() -> pd.DataFrame:
    return pd.DataFrame({"patient_id": ["Pa", "Pb"], "birth_date": ["1980", "1990"],
                         "text": ["无特殊。", "[姓名]复诊。"]})


def check(gx_validate, df):
    [res] = gx_validate(df, ExpectTableToMatchPolicySchema(columns=COLUMNS, dtypes=DTYPES))
    assert not raised(res), res.exception_info
    return res


def explain(res) -> str:
    return ExpectTableToMatchPolicySchema.explain(res.expectation_config.kwargs, res.result,
                                                 res.success)


def test_declared_schema_passes(gx_validate):
    res = check(gx_validate, released())
    assert res.success is True and res.result["observed_value"] == 0
    assert explain(res).startswith("schema: the 3 column(s)")


def test_added_column_fails(gx_validate):
    res = check(gx_validate, released().assign(resident_id=["x", "y"]))
    assert res.success is False and res.result["unexpected"] == ["resident_id"]
    assert "not released by the policy ['resident_id']" in explain(res)


def test_missing_column_fails(gx_validate):
    res = check(gx_validate, released().drop(columns=["text"]))
    assert res.success is False and res.result["missing"] == ["text"]
    assert "missing ['text']" in explain(res)


def test_wrong_kind_fails(gx_validate):
    df = released().assign(patient_id=[1, 2])
    res = check(gx_validate, df)
    assert res.success is False and list(res.result["wrong_type"]) == ["patient_id"]
    assert "'patient_id' is int64, policy declares string" in explain(res)


def test_kinds():
    s = pd.Series(["a"])
    assert dtype_kind_matches(s, "string") and not dtype_kind_matches(s, "integer")
    assert dtype_kind_matches(pd.Series([1]), "integer")
    assert dtype_kind_matches(pd.Series([1.5]), "numeric")
    assert not dtype_kind_matches(pd.Series([True]), "numeric")
    assert dtype_kind_matches(pd.Series(pd.to_datetime(["2020-01-01"])), "datetime")
    assert dtype_kind_matches(pd.Series(["a"], dtype="category"), "string")
