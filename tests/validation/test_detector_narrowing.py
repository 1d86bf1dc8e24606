"""The generic detectors' narrowing (`normal_forms.pattern_class`): a text matched as written
instead of after NFKC gives the same answer as the full pass, for texts made of the characters
that could tell the two apart — those NFKC changes into the pattern's own characters (full-width
digits, letters, brackets, the ideographic space), into several characters (㎏, ½, ﬁ), combining
marks and composable pairs, and characters NFKC lengthens without touching the pattern's
characters (㍻ → 平成, which moves a number out of the label's reach) — beside the ones it may skip (，：。)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.techniques.scrub import _DIRECT_RE2
from deidflow.validation import direct
from deidflow.validation.normal_forms import pattern_atoms, pattern_class

ALPHABET = ("0123456789１２３４５６７８９０Xxｘ -－‐@＠._a.ｅ身份证号码ID ＩＤ：:，。（）()+＋８６\u3000"
            "㎏½ﬁ①⑴㍻\u0301\u0308e\u1100\u1161\uac00\uf9d1\u2f08\u00a0\u2002王")
PIECES = st.sampled_from(["110101199003074518", "１１０１０１１９９００３０７４５１８", "13812345678",
                          "１３８１２３４５６７８", "（８６）13812345678", "身份证号：", "ＩＤ号", "wang.xm@example.cn",
                          "ｗａｎｇ＠ｅｘａｍｐｌｅ．ｃｎ", "138 1234 5678", "110101900307451"])
TEXT = st.lists(st.one_of(st.text(alphabet=ALPHABET, max_size=10), PIECES), max_size=6).map("".join)


@settings(max_examples=400, deadline=None)
@given(texts=st.lists(st.one_of(TEXT, st.none()), min_size=1, max_size=20))
def test_narrowed_equals_full_pass(texts):
    arr = pa.array(texts, type=pa.large_string())
    assert direct.detector_hits(arr, narrow=True).tolist() == direct.detector_hits(arr, narrow=False).tolist()


def test_narrowing_on_real_chinese_paragraphs(datasets):
    """Held out: the MultiPriv Chinese paragraphs, as written, with their identifiers cut
    out, and with their digits and letters made full-width (a pass the narrowing must not
    skip)."""
    rows = json.loads((datasets / "zh_text" / "multipriv_person_975_zh.json").read_text("utf-8"))
    texts = [r["naturalParagraph"] for r in rows]
    cut = [t.replace(str(r["idCardNumbers"]), "[ID]").replace(r["phoneNumbers"], "[PHONE]")
           .replace(r["emailAddress"], "[EMAIL]") for t, r in zip(texts, rows)]
    wide = [t.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}) for t in texts]
    arr = pa.array(texts + cut + wide + [None], type=pa.string())
    narrowed = direct.detector_hits(arr, narrow=True)
    assert narrowed.tolist() == direct.detector_hits(arr, narrow=False).tolist()
    assert narrowed[len(texts) + len(cut):-1].mean() > 0.99  # full-width identifiers still found
    assert narrowed.flags.writeable


def test_the_class_spares_full_width_punctuation_but_not_the_patterns_characters():
    import pyarrow.compute as pc

    cls = pattern_class(_DIRECT_RE2)
    assert cls is not None
    hits = pc.match_substring_regex(pa.array(["发热（咳嗽）：三天。", "１", "＋", "㎏", "e\u0301", "\u3000"]), cls)
    assert hits.to_pylist() == [False, True, True, True, True, True]


@pytest.mark.parametrize("pattern", [r"\d{3}", r"(?i)id", r"a.b", r"\bx", r"(?=a)b", r"(a)\1", r"[\w]"])
def test_a_pattern_the_argument_does_not_cover_is_not_narrowed(pattern):
    assert pattern_atoms(pattern) is None
    assert pattern_class(pattern) is None


def test_a_character_lengthened_by_nfkc_is_not_spared():
    # 身份证号 then at most 8 non-digits before the number: 5 × ㍻ is 5 as written, 10 after NFKC
    texts = ["身份证号" + "㍻" * 5 + "123456789012345。", "身份证号" + "平" * 3 + "123456789012345。"]
    arr = pa.array(texts, type=pa.string())
    full = direct.detector_hits(arr, narrow=False)
    assert full.tolist() == [False, True]
    assert direct.detector_hits(arr, narrow=True).tolist() == full.tolist()
