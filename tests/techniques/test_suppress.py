"""Suppression: masking never reveals more characters than asked (property), rare values
suppressed per subject and counted, record suppression counted, parameter checks."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.errors import PolicyError
from deidflow.techniques import registry
from deidflow.techniques.suppress import mask_values, rare_mask, suppress_records

from .helpers import col, ctx


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.text(min_size=0, max_size=25)), min_size=1, max_size=20),
    kf=st.integers(0, 10),
    kl=st.integers(0, 10),
)
def test_mask_never_reveals_more_than_asked(values, kf, kl):
    s = pd.Series(values, dtype="string")
    out = mask_values(s, kf, kl, "*")
    for v, m in zip(values, out):
        if v is None:
            assert pd.isna(m)
            continue
        assert len(m) == len(v)
        shown = [i for i, ch in enumerate(m) if ch != "*"]
        assert len(shown) <= kf + kl
        assert all(i < kf or i >= len(v) - kl for i in shown)
        assert all(m[i] == v[i] for i in shown)
        if v and "*" not in v:
            assert len(shown) < len(v)  # never the whole value


def test_resident_id_keeps_first_6_and_last_2():
    tech = registry.get("mask")
    spec = col("direct_identifier", "mask", {"keep_first": 6, "keep_last": 2})
    tech.check("resident_id", spec)
    s = pd.Series(["11010519491231002X", None])
    c = ctx(s)
    out = tech.apply(s, spec, c)
    assert out[0] == "110105" + "*" * 10 + "2X" and pd.isna(out[1])
    assert c.counts["cells_masked"] == 1


@pytest.mark.parametrize(
    "role, params, fragment",
    [
        ("direct_identifier", {"keep_first": 6, "keep_last": 4}, "at most 8"),
        ("quasi_identifier", {"keep_first": -1}, "params.keep_first"),
        ("quasi_identifier", {"keep_last": 1.5}, "params.keep_last"),
        ("quasi_identifier", {"char": "**"}, "params.char"),
        ("sensitive", {}, "role 'sensitive'"),
    ],
)
def test_mask_check_names_the_column(role, params, fragment):
    with pytest.raises(PolicyError) as exc:
        registry.get("mask").check("mobile", col(role, "mask", params))
    assert "mobile" in str(exc.value) and fragment in str(exc.value)


def test_rare_values_counted_per_subject_not_per_row():
    # subject s1 has 6 rows of "rare": still one holder, so it is rare
    values = pd.Series(["common"] * 10 + ["rare"] * 6 + [None])
    subjects = pd.Series([f"s{i}" for i in range(10)] + ["s1"] * 6 + ["s2"])
    assert rare_mask(values, 5, subjects).tolist() == [False] * 10 + [True] * 6 + [False]
    assert rare_mask(values, 5).tolist() == [False] * 16 + [False]  # by rows, 6 >= 5
    tech = registry.get("suppress_rare")
    spec = col("quasi_identifier", "suppress_rare", {"min_count": 5, "replacement": "其他"})
    c = ctx(values, subjects=subjects)
    out = tech.apply(values, spec, c)
    assert out.iloc[10:16].eq("其他").all() and out.iloc[:10].eq("common").all()
    assert c.counts["cells_suppressed"] == 6
    for params in ({"min_count": 1}, {"replacement": 3}):
        with pytest.raises(PolicyError, match="'ethnicity'"):
            tech.check("ethnicity", col("quasi_identifier", "suppress_rare", params))


def test_record_suppression_drops_every_row_of_a_subject():
    frame = pd.DataFrame({"pid": ["a", "b", "a", "c"], "x": [1, 2, 3, 4]})
    kept, dropped = suppress_records(frame, "pid", {"a", "zz"})
    assert dropped == 2 and kept["pid"].tolist() == ["b", "c"]
