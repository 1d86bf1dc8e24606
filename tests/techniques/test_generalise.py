"""Generalisation: every built-in hierarchy and an ARX CSV file (adult); property: no level is
more specific than its input (each output label is a function of the input and of the level
below); ages over 89 grouped; top/bottom coding; parameter checks name the column."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.errors import InputError, PolicyError
from deidflow.policy import Hierarchy
from deidflow.techniques import registry
from deidflow.techniques.hierarchies import encode_qi, generalise_values

from .helpers import col, ctx


def _assert_coarsening(values: pd.Series, hierarchy: Hierarchy, base_dir=None) -> None:
    """At every level each input value has exactly one label, each label of level L+1 is a
    function of the level-L label, and nulls stay null: no output is more specific than its
    input (it never splits what the input or the level below had merged)."""
    enc = encode_qi("c", values, hierarchy, base_dir)
    prev = values.astype("string")
    for level in range(enc.n_levels):
        out = generalise_values("c", values, hierarchy, level, base_dir)
        assert (out.isna() == values.isna()).all()
        present = values.notna()
        frame = pd.DataFrame({"prev": prev[present].to_numpy(), "out": out[present].to_numpy()})
        assert frame.groupby("prev")["out"].nunique().le(1).all()
        assert out[present].nunique() <= prev[present].nunique()
        prev = out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 120)), min_size=1, max_size=60))
def test_age_bands_never_more_specific(ages):
    s = pd.Series(ages, dtype="Int64")
    _assert_coarsening(s, Hierarchy(kind="age"))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=60))
def test_intervals_never_more_specific(xs):
    _assert_coarsening(pd.Series(xs), Hierarchy(kind="interval", widths=[2.5, 5, 20], top=5000, bottom=-5000))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.dates(pd.Timestamp("1900-01-01").date(), pd.Timestamp("2100-12-31").date())),
                min_size=1, max_size=60))
def test_dates_never_more_specific(dates):
    s = pd.Series([d.isoformat() if d else None for d in dates], dtype="string")
    _assert_coarsening(s, Hierarchy(kind="date"))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.from_regex(r"[1-8][0-9]{5}", fullmatch=True), min_size=1, max_size=60),
       st.sampled_from(["region", "postcode", "mask"]))
def test_codes_never_more_specific(codes, kind):
    _assert_coarsening(pd.Series(codes, dtype="string"), Hierarchy(kind=kind))


def test_concrete_levels():
    d = pd.Series(["2024-02-29", "2023-11-05"])
    h = Hierarchy(kind="date")
    assert [generalise_values("d", d, h, lv).tolist() for lv in range(1, 5)] == [
        ["2024-02", "2023-11"], ["2024-Q1", "2023-Q4"], ["2024", "2023"], ["*", "*"]]
    r = pd.Series(["110105", "440305"])
    assert generalise_values("r", r, Hierarchy(kind="region"), 1).tolist() == ["1101", "4403"]
    assert generalise_values("r", r, Hierarchy(kind="region"), 2).tolist() == ["11", "44"]
    assert generalise_values("r", r, Hierarchy(kind="region"), 3).tolist() == ["CN", "CN"]
    p = pd.Series(["200031"])
    assert generalise_values("p", p, Hierarchy(kind="postcode"), 1).tolist() == ["2000**"]
    ages = pd.Series([3, 42, 89, 90, 104])
    assert generalise_values("a", ages, Hierarchy(kind="age"), 0).tolist() == ["3", "42", "89", "90+", "90+"]
    assert generalise_values("a", ages, Hierarchy(kind="age"), 2).tolist() == ["0-9", "40-49", "80-89", "90+", "90+"]


def test_arx_csv_hierarchy_from_adult(datasets):
    adult = pd.read_csv(datasets / "adult" / "adult.csv", sep=";", dtype="string", nrows=5000)
    for name in ("education", "age", "marital-status"):
        h = Hierarchy(kind="csv", file=f"adult_hierarchy_{name}.csv")
        _assert_coarsening(adult[name], h, base_dir=datasets / "adult")
    spec = col("quasi_identifier", "generalise", {"level": 1}, {"kind": "csv", "file": "adult_hierarchy_education.csv"})
    tech = registry.get("generalise")
    tech.check("education", spec)
    c = ctx(adult["education"], column="education", base_dir=datasets / "adult")
    out = tech.apply(adult["education"], spec, c)
    edu = dict(zip(adult["education"], out))
    assert edu["Bachelors"] == "Undergraduate" and edu["11th"] == "High School"
    assert c.counts["cells_generalised"] == len(adult)


def test_arx_csv_that_splits_a_group_is_refused(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("a;X;*\nb;X;*\nc;Y;*\n", encoding="utf-8")
    g = tmp_path / "split.csv"
    g.write_text("a;X;P\nb;X;Q\n", encoding="utf-8")
    _assert_coarsening(pd.Series(["a", "b", "c"]), Hierarchy(kind="csv", file=str(f)))
    with pytest.raises(InputError, match="splits"):
        generalise_values("c", pd.Series(["a", "b"]), Hierarchy(kind="csv", file=str(g)), 1)


def test_search_level_wins_and_out_of_range_refused():
    tech = registry.get("generalise")
    spec = col("quasi_identifier", "generalise", hierarchy={"kind": "date", "max_level": 2})
    s = pd.Series(["2020-05-17"])
    assert tech.apply(s, spec, ctx(s, level=2)).tolist() == ["2020-Q2"]
    with pytest.raises(PolicyError, match="'c'"):
        tech.apply(s, spec, ctx(s))  # no level from search or policy
    with pytest.raises(PolicyError, match="outside"):
        tech.apply(s, spec, ctx(s, level=3))


@pytest.mark.parametrize(
    "params, hierarchy, fragment",
    [
        ({}, None, "no hierarchy"),
        ({"level": -1}, {"kind": "date"}, "params.level"),
        ({"level": 5}, {"kind": "date", "max_level": 3}, "outside"),
        ({}, {"kind": "interval", "widths": [5, 7]}, "not nested"),
        ({"level": "2"}, {"kind": "date"}, "params.level"),
    ],
)
def test_generalise_check_names_the_column(params, hierarchy, fragment):
    with pytest.raises(PolicyError) as exc:
        registry.get("generalise").check("birth_date", col("quasi_identifier", "generalise", params, hierarchy))
    assert "birth_date" in str(exc.value) and fragment in str(exc.value)


def test_non_numeric_values_in_age_refused():
    with pytest.raises(InputError, match="not numbers"):
        generalise_values("age", pd.Series(["12", "old"]), Hierarchy(kind="age"), 1)


def test_top_bottom_coding_counts():
    tech = registry.get("top_bottom_code")
    spec = col("sensitive", "top_bottom_code", {"top": 200, "bottom": 10})
    tech.check("weight", spec)
    s = pd.Series([5, 50, 250, None])
    c = ctx(s, column="weight")
    out = tech.apply(s, spec, c)
    assert out.iloc[:3].tolist() == [10, 50, 200] and pd.isna(out.iloc[3])
    assert c.counts == {"cells_top_coded": 1, "cells_bottom_coded": 1}
    for params in ({}, {"top": 1, "bottom": 2}, {"top": "high"}):
        with pytest.raises(PolicyError, match="'weight'"):
            tech.check("weight", col("sensitive", "top_bottom_code", params))
    with pytest.raises(InputError, match="not numbers"):
        tech.apply(pd.Series(["x"]), spec, ctx(pd.Series(["x"])))
