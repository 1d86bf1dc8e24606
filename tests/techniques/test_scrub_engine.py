"""How the scrubber runs its detectors (not what they accept): the short cuts taken for speed
find exactly what the plain passes find."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow import identifiers as ids
from deidflow.techniques import scrub

KINDS = scrub._RECOGNISER_KINDS

# Pieces notes are made of: identifiers of the recogniser kinds with and without their labels,
# near misses (a digit or letter touching the value), label words alone, Unicode spaces (which
# Python's \s takes and RE2's does not), and ordinary text.
PIECES = st.sampled_from([
    "护照号：E12345678", "G87654321", "E12345678x", "9E12345678", "港澳通行证：C12345678",
    "通行证\u2028H123456789", "微信：wxid_abc123", "微信\u2003zhang-san88", "QQ号：123456789",
    "QQ\x1c12345", "京A12345", "粤B·D12345", "车牌：沪C1234F", "192.168.1.20", "1192.168.1.2",
    "https://x.example.cn/p?id=3", "www.example.com", "00:1a:2b:3c:4d:5e", "年龄：95岁", "96岁",
    "196岁", "电话：0571-88776655", "(010)12345678", "400-123-4567", "电话 12345678", "传真：1234567",
    "13812345678", "患者", "王伟", "，", "。", " ", "\u3000", "\n", "1", "x", "2023-05-06", "号码",
])
NOTE = st.lists(PIECES, max_size=8).map("".join)


@settings(max_examples=120, deadline=None)
@given(st.lists(NOTE, min_size=1, max_size=6))
def test_scanning_only_the_notes_re2_selects_finds_what_the_full_scan_finds(notes):
    big = ids.fold(scrub._SEP.join(notes))
    assert scrub._scan_where_possible(big, KINDS) == ids.scan(big, KINDS)
    # and the RE2 test never turns away a note the scan finds something in
    folded = big.split(scrub._SEP)
    held = ids.may_hold(folded, KINDS)
    for i, note in enumerate(folded):
        if ids.scan(note, KINDS):
            assert held[i], note


def test_re2_superset_reads_spaces_as_python_does():
    # \s inside a class widened to every Unicode space; outside a class: no RE2 form
    assert ids._python_spaces(r"[:\s]") == "[:\\s" + "".join(
        c for c in map(chr, range(0x3001)) if c.isspace() and c not in "\t\n\f\r ") + "]"
    assert ids._python_spaces(r"a\sb") is None
    assert ids._python_spaces(r"[]\s]") is not None and ids._python_spaces(r"[]\s]").startswith("[]\\s")


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(sorted({w for ws in ids.FIELD_LABELS.values() for w in ws})),
       st.sampled_from(["", " ", "\u3000", "  "]))
def test_the_two_character_look_ahead_lets_every_field_label_through(label, gap):
    rx, _ = ids._field_rx(True)
    spaced = label[0] + gap + label[1:] if "\u4e00" <= label[0] <= "\u9fff" else label
    m = rx.search(f"{spaced}：12345678。")
    assert m is not None and m.start() == 0, spaced


# Characters for the windows before an address core or an e-mail's @: stops of both (住, 于,
# ，, a NUL, a line break, a space, @), place words and local-part characters.
WINDOW = st.text(alphabet="ab9._-@ 住于在，市区路号省\x00\n\t" + "".join(scrub.words.NOT_IN_ADDRESS[:8]),
                 max_size=90)


@settings(max_examples=300, deadline=None)
@given(WINDOW, st.data())
def test_reading_a_run_back_from_its_end_finds_what_the_window_search_finds(text, data):
    import re

    end = data.draw(st.integers(0, len(text)))
    # the plain searches: every start in the window tried, each read on to the window's end
    address = re.compile("[^" + re.escape(scrub.words.NOT_IN_ADDRESS) + r"\x00\n\r\t]{1,24}\Z")
    local = re.compile(r"[A-Za-z0-9._%+\-]{1,64}\Z")
    for plain, stop, width in ((address, scrub._ADDRESS_STOP, 24), (local, scrub._EMAIL_LOCAL_STOP, 64)):
        m = plain.search(text, max(0, end - width), end)
        assert scrub._run_before(stop, text, end, width) == (m.start() if m else None)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="，,（( 男女、）性：:王伟x\u3000", max_size=30))
def test_the_name_reader_s_literal_scans_find_what_its_class_scans_find(text):
    import re

    from deidflow.techniques import names

    # the sex after a name, found from 男/女 and kept without overlap as the class pattern does
    assert names._sex_after(text) == [m.start() for m in names._SEX_AFTER_RX.finditer(text)]
    # a label's colon, one pattern per colon
    plain = re.compile(r"[：:](?<=[\u4e00-\u9fff].)[ \u3000]{0,2}")
    assert sorted(m.end() for rx in names._LABEL_COLONS_RX for m in rx.finditer(text)) == [
        m.end() for m in plain.finditer(text)]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab1２３\u3000 －—ﾊ中，：\x00", max_size=40))
def test_folding_only_the_runs_that_change_is_translating_the_whole_text(text):
    table, _ = ids._fold_table()
    assert ids.fold(text) == text.translate(table)


# Ages in every form the age pattern reads, and what touches them: digits, decimal points,
# the words 岁, 周岁, 个月, 年龄 with either colon, spaces and the chunk's NUL separator.
AGE_PIECES = st.sampled_from(["0", "7", "66", "105", "1234", ".", "岁", "周岁", "个月", "个", "月",
                              "年龄", "年", "龄", ":", "：", " ", "\x00", "x", "3岁2个月", "年龄：66"])


@settings(max_examples=300, deadline=None)
@given(st.lists(AGE_PIECES, max_size=10).map("".join))
def test_the_age_pattern_with_its_first_digit_read_first_finds_what_the_plain_one_finds(text):
    import re

    plain = re.compile(scrub._ANY_AGE_PLAIN)
    assert [m.span() for m in scrub._ANY_AGE.finditer(text)] == [m.span() for m in plain.finditer(text)]
