"""The gate's large-set search (`validation.windows`): byte windows hashed and confirmed on the
strings find exactly what a plain substring search finds, whatever the byte lengths (Latin,
digits, CJK, short members with their own prefix), however the texts are cut into blocks and
threads, and for members held in memory or read from a source."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings, strategies as st

from deidflow.validation import windows
from deidflow.validation.sets import Chunks, StringSet

ALPHABET = "张王欧阳伟娜13805-@ab·"


def plain(members: list[str], texts: list[str | None]) -> list[bool]:
    needles = {m for m in members if len(m) >= 2}
    return [t is not None and any(n in t for n in needles) for t in texts]


@settings(max_examples=80, deadline=None)
@given(members=st.lists(st.text(ALPHABET, min_size=1, max_size=9), min_size=1, max_size=40),
       texts=st.lists(st.one_of(st.none(), st.text(ALPHABET, max_size=60)), min_size=1, max_size=40),
       block=st.integers(1, 200), held=st.booleans(), cut=st.integers(0, 40))
def test_window_search_equals_a_plain_search(members, texts, block, held, cut):
    ss = StringSet(pa.array(members)) if held else StringSet(Chunks(
        lambda: iter([pa.array(members[:3]), pa.array(members[3:], type=pa.large_string())])))
    ss.SMALL = -1  # the window path whatever the size
    ss.SHORT = 0  # even for short texts
    arr = pa.array(["pad", *texts], type=pa.string()).slice(1)  # a sliced array (offset 1)
    old = windows.BLOCK_BYTES
    windows.BLOCK_BYTES = block  # many blocks, on two threads
    try:
        got = ss.substring_hits(pa.chunked_array([arr.slice(0, cut), arr.slice(cut)]))
    finally:
        windows.BLOCK_BYTES = old
    assert got.tolist() == plain(members, texts)


def test_a_foreign_subjects_value_is_found_in_any_note():
    """The search is over every known value of every subject: a note that holds another
    subject's mobile or name (a leak the per-note scrubbing would not look for) is found."""
    members = [f"1{n:010d}" for n in range(3_000_000_000, 3_000_030_000)] + ["欧阳娜娜", "王伟"]
    ss = StringSet(pa.array(members))
    assert len(ss) > StringSet.SMALL
    notes = pa.array(["患者[姓名]，电话[电话]。", f"家属电话{members[29_999]}。", "陪同：欧阳娜娜。",
                      "王伟", "王[姓名]伟", f"{members[7][:-1]}"])
    assert ss.substring_hits(notes).tolist() == [False, True, True, True, False, False]


def test_a_one_character_member_is_not_searched_beside_two_character_ones():
    ss = StringSet(pa.array(["王", "aé", "ab"]))  # 王 and aé are both three bytes
    ss.SMALL = -1
    assert ss.substring_hits(pa.array(["王先生", "caé", "x"])).tolist() == [False, True, False]


def test_window_hashes_equal_whole_value_hashes():
    """A window's hash is `_hash64` of the same bytes as one value (partial last words too)."""
    import numpy as np

    from deidflow.io import text_buffers
    from deidflow.validation.sets import _hash64

    text = "x欧阳娜娜13812345678@example.org"
    arr = pa.array([text])
    off, data = text_buffers(arr)
    _, words = windows._padded(data, int(off[0]), int(off[-1]))
    raw = text.encode("utf-8")
    checked = 0
    for start in range(len(raw)):
        for size in (2, 6, 8, 9, 16, 17):
            piece = raw[start:start + size]
            if len(piece) < size:
                continue
            try:
                value = piece.decode("utf-8")
            except UnicodeDecodeError:
                continue
            assert windows.window_hashes(words, np.array([start]), size)[0] == _hash64(pa.array([value]))[0]
            checked += 1
    assert checked > 50
