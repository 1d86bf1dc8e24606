"""l-diversity of a sensitive column per equivalence class, counted in subjects."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from deidflow.validation.expectations import ExpectSensitiveColumnToBeLDiverse, l_diversity

from .gxhelp import raised

QI = ["age_band"]


def l_div(l: int, variant: str = "distinct", c: float = 0.0) -> ExpectSensitiveColumnToBeLDiverse:
    return ExpectSensitiveColumnToBeLDiverse(
        subject_column="pid", quasi_identifiers=QI, sensitive_column="icd10", l=l,
        variant=variant, c=c)


def table(classes: dict[str, list[str]]) -> pd.DataFrame:
    """One row per subject: class label -> the sensitive value of each of its subjects."""
    rows = [(f"{band}-{i}", band, v) for band, values in classes.items()
            for i, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["pid", "age_band", "icd10"])


def test_distinct_fails_on_a_homogeneous_class(gx_validate):
    df = table({"30-39": ["E11", "I10", "J45"], "40-49": ["E11", "E11", "E11"]})
    [res] = gx_validate(df, l_div(2))
    assert not raised(res)
    assert res.success is False
    assert res.result["observed_value"] == 1
    assert res.result["n_classes_below"] == 1 and res.result["n_classes"] == 2
    expl = ExpectSensitiveColumnToBeLDiverse.explain(res.expectation_config.kwargs,
                                                    res.result, False)
    assert "'icd10'" in expl and "1 of 2 classes" in expl


def test_distinct_passes_when_every_class_has_l_values(gx_validate):
    df = table({"30-39": ["E11", "I10", "J45"], "40-49": ["E11", "I10", "I10"]})
    [res] = gx_validate(df, l_div(2))
    assert res.success is True and res.result["observed_value"] == 2


def test_one_subjects_many_rows_are_one_value(gx_validate):
    """Values are counted per subject: ten rows of one patient with one diagnosis are one
    value, and a patient with two diagnoses contributes both."""
    df = pd.DataFrame({"pid": ["a"] * 10 + ["b"], "age_band": ["30-39"] * 11,
                       "icd10": ["E11"] * 10 + ["E11"]})
    [res] = gx_validate(df, l_div(2))
    assert res.success is False
    df.loc[0, "icd10"] = "I10"  # now subject a has two values: E11, I10
    [res] = gx_validate(df, l_div(2))
    assert res.success is True


def test_entropy_variant(gx_validate):
    skewed = table({"x": ["E11"] * 9 + ["I10"]})  # exp(H) ≈ 1.38
    even = table({"x": ["E11"] * 5 + ["I10"] * 5})  # exp(H) = 2
    [bad] = gx_validate(skewed, l_div(2, "entropy"))
    [good] = gx_validate(even, l_div(2, "entropy"))
    assert bad.success is False and bad.result["observed_value"] == pytest.approx(
        math.exp(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1))))
    assert good.success is True and good.result["observed_value"] == pytest.approx(2.0)


def test_recursive_variant(gx_validate):
    """(c,l) with l=2: r1 < c·(r2+…+rm)."""
    df = table({"x": ["E11"] * 6 + ["I10"] * 2 + ["J45"]})  # r1 / (r2 + r3) = 6 / 3 = 2
    [bad] = gx_validate(df, l_div(2, "recursive", c=2.0))
    [good] = gx_validate(df, l_div(2, "recursive", c=2.5))
    assert bad.success is False and bad.result["observed_value"] == pytest.approx(2.0)
    assert good.success is True


def test_recursive_with_fewer_values_than_l_is_infinite_and_fails():
    df = table({"x": ["E11"] * 4})
    out = l_diversity(df, "pid", QI, "icd10", "recursive", 2, 3.0)
    assert out["observed"] == math.inf and out["n_classes_below"] == 1


def test_missing_sensitive_value_counts_as_a_value():
    df = table({"x": ["E11", None]})
    assert l_diversity(df, "pid", QI, "icd10", "distinct", 2, 0)["n_classes_below"] == 0
