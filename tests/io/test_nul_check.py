"""The free-text NUL check's byte pre-test (`io._may_hold_nul`) answers False only for a column
with no NUL character: the exact string search it spares (which also names the row) is then
skipped with the same answer."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.io import _may_hold_nul

TEXT = st.text(alphabet=st.sampled_from(["a", "张", "\x00", "𠀀", "，", " ", "\x01", "é"]), max_size=8)


def _column(values: list[str | None], chunks: int, start: int) -> pd.Series:
    """Arrow-backed text over `chunks` chunks, each a slice of a larger array (a non-zero
    offset, and bytes of the neighbours that are not its values)."""
    step = max(1, -(-len(values) // max(chunks, 1)))
    parts = []
    for i in range(0, len(values), step):
        pad = ["\x00pad"] * start  # NUL outside the slice: must not count
        whole = pa.array(pad + values[i:i + step] + ["\x00tail"], type=pa.large_string())
        parts.append(whole.slice(start, len(values[i:i + step])))
    arr = pa.chunked_array(parts, type=pa.large_string()) if parts else pa.chunked_array([], pa.large_string())
    return pd.Series(pd.arrays.ArrowStringArray(arr), copy=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=12), st.integers(1, 3), st.integers(0, 2))
def test_false_only_without_nul(values, chunks, start):
    col = _column(values, chunks, start)
    exact = bool(col.str.contains("\x00", regex=False).fillna(False).any())
    assert list(col) == [pd.NA if v is None else v for v in values]
    if exact:
        assert _may_hold_nul(col)
    # with only non-null values the byte test is exact both ways
    if all(v is not None for v in values):
        assert _may_hold_nul(col) == exact


def test_object_text_takes_the_exact_search():
    assert _may_hold_nul(pd.Series(["a", "b"], dtype=object))
