"""The type a kept column is released with: decided over every partition, never losing a
value (codes with leading zeros, a '?' among numbers and mixed kinds stay text)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.column_types import column_kind, with_kinds


def test_kinds():
    assert column_kind([pa.array(["1", "-2", None])]) == "integer"
    assert column_kind([pa.array(["1", "2.5"])]) == "number"
    assert column_kind([pa.array(["1"]), pa.array(["2.5"])]) == "number"  # across partitions
    assert column_kind([pa.array(["02134", "1"])]) == "text"  # a ZIP code keeps its zero
    assert column_kind([pa.array(["?", "1"])]) == "text"
    assert column_kind([pa.array(["2020-01-01", "2021-12-31"])]) == "date"
    assert column_kind([pa.array(["2020-1-01"])]) == "text"
    assert column_kind([pa.array(["2019-02-17T06:07:17Z"])]) == "timestamp"
    assert column_kind([pa.array([None, None], pa.string())]) == "text"
    # the sample does not decide alone: a bad value after it keeps the column text
    assert column_kind([pa.array(["1"] * 5000 + ["x"])]) == "text"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(-10**12, 10**12).map(str),
                          st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
                          st.text(max_size=4)), min_size=1, max_size=20))
def test_typed_values_read_back_equal(texts):
    kind = column_kind([pa.array(texts)])
    frame = pd.DataFrame({"v": pd.array(texts, dtype="string[pyarrow]")})
    out = with_kinds(frame, {"v": kind})["v"]
    if kind == "integer":
        assert [int(t) for t in texts] == out.tolist()
    elif kind == "number":
        assert [float(t) for t in texts] == out.tolist()
    else:
        assert kind == "text" and out.tolist() == texts


def _kind_over_whole_columns(parts, sample):
    """The decision as made before the sample was read from the first rows only: every
    part's present values as one array, its first `sample` values tested first."""
    import pyarrow.compute as pc

    from deidflow import column_types as ct

    candidates, seen = list(ct._ORDER), False
    for values in parts:
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        arr = arr.filter(pc.is_valid(arr))
        if not len(arr):
            continue
        seen = True
        candidates = [k for k in candidates if ct._fits(arr.slice(0, sample), k)]
        if len(arr) > sample:
            candidates = [k for k in candidates if ct._fits(arr, k)]
        if not candidates:
            return "text"
    return candidates[0] if seen and candidates else "text"


_VALUE = st.one_of(st.none(), st.sampled_from(["1", "-7", "2.5", "2020-01-31", "x", "01"]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.lists(_VALUE, max_size=12), min_size=1, max_size=3), min_size=1, max_size=3))
def test_the_sample_from_the_first_rows_decides_as_the_whole_column_did(parts):
    # a sample of 3 values: columns that start with many missing values, a bad value just
    # after the rows read for the sample, chunked partitions
    from deidflow import column_types as ct

    arrays = [pa.chunked_array([pa.array(c, pa.large_string()) for c in chunks]) for chunks in parts]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ct, "_SAMPLE", 3)
        assert column_kind(arrays) == _kind_over_whole_columns(arrays, 3)
