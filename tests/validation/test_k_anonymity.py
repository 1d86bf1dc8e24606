"""k-anonymity over the released quasi-identifiers, counted in subjects (patients)."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.validation.expectations import ExpectSubjectsToBeKAnonymous, class_sizes
from .gxhelp import raised

QI = ["birth_year", "sex"]


def k_anon(k: int) -> ExpectSubjectsToBeKAnonymous:
    return ExpectSubjectsToBeKAnonymous(subject_column="pid", quasi_identifiers=QI, k=k)


def patients(groups: list[tuple[str, str, int]]) -> pd.DataFrame:
    rows = [(f"P{i}-{j}", y, s) for i, (y, s, n) in enumerate(groups) for j in range(n)]
    return pd.DataFrame(rows, columns=["pid", *QI])


def test_fails_when_one_class_is_smaller_than_k(gx_validate):
    df = patients([("1980", "F", 5), ("1990", "M", 5), ("1975", "F", 1)])
    [res] = gx_validate(df, k_anon(5))
    assert not raised(res)
    assert res.success is False
    assert res.result["observed_value"] == 1
    assert res.result["n_classes"] == 3
    expl = ExpectSubjectsToBeKAnonymous.explain(res.expectation_config.kwargs, res.result, False)
    assert "smallest class has 1 patient," in expl and "requires 5" in expl


def test_passes_when_every_class_has_k_subjects(gx_validate):
    df = patients([("1980", "F", 5), ("1990", "M", 6)])
    [res] = gx_validate(df, k_anon(5))
    assert res.success is True
    assert res.result["observed_value"] == 5


def test_repeating_one_patient_does_not_make_a_class(gx_validate):
    """A visit table with one patient's five rows is one subject, not a class of five."""
    df = pd.DataFrame({"pid": ["A"] * 5 + [f"B{i}" for i in range(5)],
                       "birth_year": ["1950"] * 5 + ["1980"] * 5, "sex": ["F"] * 10})
    [res] = gx_validate(df, k_anon(5))
    assert res.success is False
    assert res.result["observed_value"] == 1
    assert res.result["n_subjects"] == 6


def test_empty_table_fails_closed(gx_validate):
    [res] = gx_validate(pd.DataFrame({"pid": [], "birth_year": [], "sex": []}, dtype="str"),
                        k_anon(2))
    assert res.success is False


def test_missing_quasi_identifier_values_form_their_own_class(gx_validate):
    df = patients([("1980", "F", 3)])
    df.loc[2, "sex"] = None
    [res] = gx_validate(df, k_anon(3))
    assert res.success is False and res.result["observed_value"] == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.sampled_from("ab"), st.sampled_from("FM")),
                min_size=1, max_size=60))
def test_class_sizes_count_each_subject_once(rows):
    """The smallest class equals a brute-force count of distinct subjects per class."""
    df = pd.DataFrame([(f"S{s}", y, x) for s, y, x in rows], columns=["pid", "birth_year", "sex"])
    first = {}
    for pid, y, x in zip(df["pid"], df["birth_year"], df["sex"]):
        first.setdefault(pid, (y, x))
    expected: dict[tuple, int] = {}
    for key in first.values():
        expected[key] = expected.get(key, 0) + 1
    sizes = class_sizes(df, "pid", QI)
    assert sorted(sizes.tolist()) == sorted(expected.values())


@pytest.mark.parametrize("dtype", ["str", "string[pyarrow]", object])
@pytest.mark.parametrize("values", [["a", "b", None], ["a", "b", None, None], ["a", "a"], [],
                                    ["", None], ["b", "a", "b"]])
def test_subject_uniqueness_is_counted_as_pandas_does(values, dtype):
    """per_subject asks pyarrow whether an Arrow text column is unique (pandas would first
    make Python strings of it): same answer, a missing subject counting once."""
    from deidflow.validation.expectations import _is_unique

    s = pd.Series(values, dtype=dtype)
    assert _is_unique(s) == s.is_unique
