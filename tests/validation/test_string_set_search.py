"""The validation gate's substring search over a set of known identifiers: the small-set path
(RE2 alternations of a few kilobytes each) finds exactly what a plain search finds, however
many alternations the set is cut into."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings, strategies as st

from deidflow.validation.sets import StringSet

ALPHABET = "张王李赵13579-.()|*ab"


def plain_hits(members: list[str], texts: list[str]) -> list[bool]:
    needles = {m for m in members if len(m) >= 2}
    return [any(n in t for n in needles) for t in texts]


@settings(max_examples=60, deadline=None)
@given(members=st.lists(st.text(ALPHABET, min_size=1, max_size=8), min_size=1, max_size=60),
       texts=st.lists(st.text(ALPHABET, max_size=40), min_size=1, max_size=30),
       budget=st.integers(1, 64))
def test_small_set_search_equals_a_plain_search(members, texts, budget):
    s = StringSet(pa.array(members))
    old = StringSet.PATTERN_BYTES
    StringSet.PATTERN_BYTES = budget  # many small alternations, as a large set gets
    try:
        got = s.substring_hits(pa.array(texts)).tolist()
    finally:
        StringSet.PATTERN_BYTES = old
    assert got == plain_hits(members, texts)


def test_a_set_of_many_alternations_still_finds_a_member_in_the_last_one():
    members = [f"地址{i:05d}号" for i in range(3000)]  # ~50 kB of literals: a dozen alternations
    texts = ["无", "患者住在地址02999号附近", "地址0299", "住址00000号"]
    assert StringSet(pa.array(members)).substring_hits(pa.array(texts)).tolist() == [False, True, False, False]
