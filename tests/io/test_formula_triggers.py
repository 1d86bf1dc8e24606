"""A text cell that a spreadsheet would run as a formula is found by its first byte: the same
cells as the first-character test, for any text, missing values and sliced Arrow chunks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.io import FORMULA_TRIGGERS, _starts_with_trigger, neutralise_formulas

_CELL = st.one_of(st.none(), st.text(alphabet=st.sampled_from(
    list("=+-@\t\r'1.aZ 阴性é") + ["\u3000", "＝", "\U0001f600"]), max_size=4))


def _by_first_character(values: pd.Series) -> list[bool]:
    return [isinstance(v, str) and v[:1] in FORMULA_TRIGGERS for v in values.astype(object)]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_CELL, max_size=8), min_size=1, max_size=3), st.integers(0, 3),
       st.sampled_from(["str", "string[pyarrow]"]), st.booleans())
def test_first_byte_finds_the_cells_the_first_character_does(chunks, skip, dtype, wide):
    kind = pa.large_string() if wide else pa.string()
    arr = pa.chunked_array([pa.array(c, kind) for c in chunks], kind)
    arr = arr.slice(min(skip, len(arr)))  # chunks that start at an offset
    values = pd.Series(pd.arrays.ArrowStringArray(arr, dtype=pd.StringDtype("pyarrow", na_value=np.nan)
                                                  if dtype == "str" else pd.StringDtype("pyarrow")))
    assert _starts_with_trigger(values).tolist() == _by_first_character(values)
    # the object path (not Arrow) answers the same
    assert _starts_with_trigger(values.astype(object).astype("string[python]")).tolist() == \
        _by_first_character(values)


def test_neutralised_cells_get_the_quote_and_numbers_do_not():
    frame = pd.DataFrame({"v": pd.array(["=1+1", "-3", "-x", None, "阴性", "@a", ""], dtype="str")})
    out = neutralise_formulas(frame)["v"].tolist()
    assert out[:3] == ["'=1+1", "-3", "'-x"] and pd.isna(out[3]) and out[4:] == ["阴性", "'@a", ""]
