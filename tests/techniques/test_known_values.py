"""The values known for every note (`scrub.EVERYONE`) are found by `known_values.ValueSet`,
which must find exactly what the plain `re` trie alternation of the values finds."""

from __future__ import annotations

import re

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow import identifiers as ids
from deidflow.techniques.known_values import ValueSet
from deidflow.techniques.scrub import EVERYONE, detect_spans

# A small alphabet makes values that are prefixes of one another, overlap, repeat and sit
# inside longer numbers; a character beyond the BMP and a NUL (the note separator) as well.
_ALPHABET = "王李小明华12345某 -\x00𠀀"
_values = st.lists(st.text(_ALPHABET, min_size=1, max_size=5), min_size=0, max_size=25)


def _plain(values: list[str], text: str) -> list[tuple[int, int, str]]:
    if not values:
        return []
    rx = re.compile(ids.alternation(values))
    return [(m.start(), m.end(), m.group()) for m in rx.finditer(text)]


@settings(max_examples=400, deadline=None)
@given(_values, st.lists(st.text(_ALPHABET, max_size=12), max_size=8), st.text(_ALPHABET, max_size=40))
def test_value_set_finds_what_the_trie_regex_finds(values, pieces, filler):
    # values that are prefixes of others (王小 of 王小明), and texts built from the values
    # themselves (so that most values occur, inside and beside each other), glued by filler
    values = values + [v[:-1] for v in values[::2] if len(v) >= 3]
    text = filler.join(pieces + values[::2] + [v + v[:1] for v in values[1::3]])
    assert ValueSet(values).find(text) == _plain(values, text)


def test_value_set_takes_the_longest_value_at_the_leftmost_start():
    vs = ValueSet(["王小", "王小明", "小明华", "明华", "1234", "12345"])
    # 明华 is not found inside 王小明华: the scan resumes after 王小明
    assert vs.find("王小明华王小红12345") == [(0, 3, "王小明"), (4, 6, "王小"), (7, 12, "12345")]
    assert vs.find("小明华") == [(0, 3, "小明华")]
    assert ValueSet(["王小明"]).find("") == []
    assert ValueSet([]).find("王小明") == []


def test_staff_names_are_found_in_every_note_with_the_digit_rule():
    """Through the scrubber: a staff value in another subject's note, a number only where it
    is not inside a longer number, the same spans as the plain alternation gives."""
    known = pd.DataFrame({"subject_id": [EVERYONE] * 4 + ["1"],
                          "kind": ["attending_doctor", "attending_doctor", "other", "other", "name"],
                          "value": ["李洋", "欧阳明华", "A12345", "887766", "王小明"]})
    texts = ["患者王小明，记录医师：李洋", "会诊欧阳明华、李洋；编号A12345、9887766与887766。"]
    spans = detect_spans(texts, ["known"], ["1", "2"], known)
    got = {(r, texts[r][s:e]) for r, s, e in zip(spans["row"], spans["start"], spans["end"])}
    assert got == {(0, "王小明"), (0, "李洋"), (1, "欧阳明华"), (1, "李洋"), (1, "A12345"), (1, "887766")}
    # the 887766 inside 9887766 is not that value: only the standalone one is
    assert [texts[1][s:e] for r, s, e in zip(spans["row"], spans["start"], spans["end"]) if r == 1][-1] == "887766"
    assert sum(texts[1][s:e] == "887766" for r, s, e in zip(spans["row"], spans["start"], spans["end"])) == 1
