"""The gate's narrowed second search (`validation.normal_forms`): a text it skips holds, once
normalised, exactly the known values it holds as written; so the narrowed check finds every
text the full normalised pass finds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.validation import direct
from deidflow.validation.normal_forms import may_change, nfkc_tables
from deidflow.validation.sets import StringSet

# What Chinese notes hold, and what NFKC touches: full-width digits, letters and punctuation,
# compatibility forms (℃ → °C, ㎏ → kg, ① → 1, ｶ → カ), ideographic and no-break spaces,
# combining marks, Hangul jamo that compose, characters that decompose (é), and the digits,
# spaces and dashes of grouped numbers.
ALPHABET = ("王小明李患者电话号，：；（）。、"
            "0123456789１２３４５６７８９０ -－Xx×ＸYyB@.,:;()"
            "℃°C㎏kgⅠ①ｶカ\u3000\u00a0\u0301\u0308eé\u1100\u1161\u11a8가ﬁ")
TEXT = st.text(alphabet=ALPHABET, max_size=40)
VALUE = st.text(alphabet=ALPHABET, min_size=2, max_size=6)


def _full(texts: pa.Array, known: StringSet, monkeypatch) -> np.ndarray:
    monkeypatch.setattr(direct, "NARROW_BYTES", 1 << 62)  # the whole normalised pass
    return direct.known_hits(texts, known)


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(TEXT, min_size=1, max_size=20),
       values=st.lists(VALUE, min_size=1, max_size=5))
def test_a_skipped_text_holds_the_same_known_values_normalised(texts, values):
    known = StringSet(values)
    arr = pa.array(texts, type=pa.string())
    skipped = ~may_change(arr, known)
    raw = known.substring_hits(arr)
    normalised = known.substring_hits(direct.normalised(arr))
    assert (raw[skipped] == normalised[skipped]).all()


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(TEXT, min_size=1, max_size=20),
       values=st.lists(VALUE, min_size=1, max_size=5))
def test_the_narrowed_check_finds_what_the_full_pass_finds(texts, values):
    from _pytest.monkeypatch import MonkeyPatch

    known = StringSet(values)
    arr = pa.array(texts + [None], type=pa.string())
    with MonkeyPatch.context() as mp:
        mp.setattr(direct, "NARROW_BYTES", 0)
        narrowed = direct.known_hits(arr, known)
        full = _full(arr, known, mp)
    assert narrowed.tolist() == full.tolist()


def test_punctuation_no_known_value_holds_needs_no_second_search():
    known = StringSet(["13812345678", "王小明"])
    texts = pa.array(["患者，男：（无）", "电话１３８１２３４５６７８", "电话138 1234-5678", "体温36.8℃",
                      "电话13812345678", None])
    assert may_change(texts, known).tolist() == [False, True, True, False, False, False]
    # a known value with a comma makes the full-width comma matter
    assert may_change(pa.array(["患者，男"]), StringSet(["者,男"])).tolist() == [True]


def test_composing_characters_always_get_the_second_search():
    known = StringSet(["王小明"])
    texts = pa.array(["e\u0301", "\u1100\u1161", "가", "王小明"])
    assert may_change(texts, known).tolist() == [True, True, True, False]


def test_the_tables_agree_with_nfkc_character_by_character():
    forms, sensitive = nfkc_tables()
    import unicodedata

    assert forms[ord("１")] == "1" and forms[ord("，")] == "," and forms[ord("℃")] == "°C"
    assert ord("王") not in forms and not sensitive[ord("王")] and not sensitive[ord("，")]
    assert sensitive[0x0301] and sensitive[0x1161]
    for cp, form in list(forms.items())[::50]:
        assert unicodedata.normalize("NFKC", chr(cp)) == form or sensitive[cp]


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), st.text(max_size=12), TEXT), min_size=1, max_size=12),
       skip=st.integers(0, 3), piece=st.integers(1, 9))
def test_code_points_are_the_distinct_characters_of_the_texts(texts, skip, piece):
    # any code point (1- to 4-byte UTF-8), a slice of an array (its offsets do not start at
    # 0), and pieces of a few bytes, so that characters straddle the pieces' ends
    import deidflow.validation.normal_forms as nf

    arr = pa.array(texts, type=pa.large_string()).slice(min(skip, len(texts) - 1))
    want = sorted({ord(c) for t in arr.to_pylist() if t for c in t})
    old, nf._PIECE = nf._PIECE, piece
    try:
        assert nf.code_points(arr).tolist() == want
    finally:
        nf._PIECE = old
    assert nf.code_points(arr).tolist() == want
