"""prepare parses each distinct birth date once: the same dates, missing values and dtype as
parsing every subject's."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.release.prepare import _dates_once_each


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from(
    ["2020-01-05", " 1990-12-31 ", "x", "", "2019-07-14T08:30:00", "2000-02-30", "1899-01-01"])),
    max_size=20), st.sampled_from(["str", "string", object]))
def test_distinct_dates_parse_as_every_date(values, dtype):
    raw = pd.Series(values, dtype=dtype).astype("string").str.strip()
    expected = pd.to_datetime(raw, errors="coerce", format="ISO8601")
    got = _dates_once_each(raw)
    assert got.dtype == expected.dtype and got.equals(expected)
