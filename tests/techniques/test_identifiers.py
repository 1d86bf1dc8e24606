"""The one home of identifier definitions: each recogniser finds its identifier in text and
as a whole value, refuses near misses, and every generated form (Python re, whole-value,
RE2) agrees; folding keeps offsets so replacements land on the original characters."""

from __future__ import annotations

import re

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow import identifiers as ids
from deidflow.techniques.scrub import IDENTIFIER_PATTERNS, scrub_texts
from deidflow.validation.expectations import WHOLE_VALUE_PATTERNS

# kind -> (text holding it, the identifier's characters, near misses that are not it)
CASES = {
    "resident_id": ("身份证号：11010519900101123X。", "11010519900101123X", ["病床12张", "1234567890"]),
    "mobile": ("联系：+86 138-1234-5678，", "+86 138-1234-5678", ["12812345678", "体重138kg"]),
    "landline": ("电话(021)12345678转12", "(021)12345678转12", ["血压138/90", "2023年"]),
    "email": ("邮箱 wang.wei@hospital.com.cn。", "wang.wei@hospital.com.cn", ["a@b", "3@5"]),
    "passport": ("护照E12345678，", "E12345678", ["HbA1c 6.5", "E1234"]),
    "permit": ("港澳通行证：C12345678", "C12345678", ["通行顺畅"]),
    "wechat": ("微信：wxid_abc123，", "wxid_abc123", ["微信联系"]),
    "qq": ("QQ号：123456789", "123456789", ["QQ群"]),
    "plate": ("车牌京A12345停", "京A12345", ["京剧A组"]),
    "ip": ("登录IP 192.168.1.10，", "192.168.1.10", ["1.5.2", "300.1.1.1"]),
    "age": ("患者，男，93岁，", "93岁", ["男，66岁", "89岁"]),
    "employer": ("工作单位：杭州某某科技有限公司，", "杭州某某科技有限公司", ["单位剂量"]),
    "insurance_no": ("医保卡号：YB12345678", "YB12345678", ["医保报销"]),
    "record_no": ("病理号：P2023-0012，", "P2023-0012", ["病理诊断"]),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_recogniser_finds_its_identifier_and_nothing_else(kind):
    text, value, misses = CASES[kind]
    r = ids.RECOGNISERS[kind]
    found = [text[s:e] for s, e in r.find(text)]
    assert value in found
    for miss in misses:
        assert r.find(miss) == [], (kind, miss)
    # the scrubber runs the same definition
    out = scrub_texts(pd.Series([text], dtype="string"), kinds=[k for k in IDENTIFIER_PATTERNS])[0][0]
    assert value not in out
    assert IDENTIFIER_PATTERNS[kind].search(text)


@pytest.mark.parametrize("kind", ["resident_id", "mobile", "email", "passport", "plate", "ip"])
def test_whole_value_and_re2_forms_agree_with_the_python_form(kind):
    text, value, misses = CASES[kind]
    r = ids.RECOGNISERS[kind]
    assert re.fullmatch(r.whole(), value)
    assert re.fullmatch(r.whole(), f" {value} ")
    for miss in misses:
        assert not re.fullmatch(r.whole(), miss)
    arr = pa.array([text, *misses])
    got = pc.match_substring_regex(arr, r.re2()).to_pylist()
    python = [bool(r.find(t)) for t in [text, *misses]]
    assert got == python


mobiles = st.builds(lambda p, d: p + d, st.sampled_from(["138", "159", "186", "199", "147"]),
                    st.text("0123456789", min_size=8, max_size=8))
spellings = st.sampled_from(["{}", "+86{}", "+86 {}", "0086-{}", "{0}-{1}-{2}", "{0} {1} {2}"])


@given(mobiles, spellings)
@settings(max_examples=200, deadline=None)
def test_one_answer_to_what_a_mobile_number_is(number, spelling):
    """The column check, the gate's whole-value pattern and the recogniser agree."""
    text = spelling.format(number[:3], number[3:7], number[7:]) if "{0}" in spelling else spelling.format(number)
    assert ids.valid_mobiles(pd.Series([text]))[0]
    assert re.fullmatch(WHOLE_VALUE_PATTERNS["mobile"], text)
    note = f"电话{text}。"
    assert [note[s:e] for s, e in ids.RECOGNISERS["mobile"].find(note)] == [text]


@given(st.text(alphabet=st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",)), max_size=60))
@settings(max_examples=300, deadline=None)
def test_fold_keeps_every_offset(text):
    folded = ids.fold(text)
    assert len(folded) == len(text)


def test_full_width_identifiers_are_replaced_on_the_original_characters():
    text = "患者电话１３８１２３４５６７８，身份证１１０１０５１９９００１０１１２３Ｘ，复诊。"
    out = scrub_texts(pd.Series([text], dtype="string"))[0][0]
    assert out == "患者电话[电话]，身份证[身份证号]，复诊。"
    known = pd.DataFrame({"subject_id": ["s1"], "kind": ["mobile"], "value": ["13812345678"]})
    out = scrub_texts(pd.Series(["家属电话：１３８　１２３４　５６７８。"], dtype="string"), kinds=["known"],
                      subject_ids=pd.Series(["s1"]), known=known)[0][0]
    assert out == "家属电话：[电话]。"
