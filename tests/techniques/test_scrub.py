"""The free-text scrubber: every detector kind, known-identifier variants, the three
replacement modes, pseudonym consistency, the technique's parameter checks, and recall on the
MultiPriv Chinese paragraphs (structured fields = gold strings)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.errors import InputError, KeyCustodyError, PolicyError
from deidflow.identifiers import resident_id_check_char
from deidflow.keys import KeyRing
from deidflow.policy import Column
from deidflow.techniques import ApplyContext, registry
from deidflow.techniques.scrub import (
    DETECTORS,
    IDENTIFIER_PATTERNS,
    detect_spans,
    find_identifiers,
    known_variants,
    scrub_texts,
)

GENERIC = [k for k in DETECTORS if k != "known"]


def kinds_found(text: str) -> dict[str, list[str]]:
    spans = detect_spans([text], GENERIC)
    out: dict[str, list[str]] = {}
    for s, e, k in zip(spans["start"], spans["end"], spans["kind"]):
        out.setdefault(k, []).append(text[s:e])
    return out


def scrub(texts, **kw):
    return scrub_texts(pd.Series(texts, dtype="string"), **kw)


# --- generic detectors ------------------------------------------------------------------------

region = st.sampled_from(["110105", "230103", "330102", "440305", "510107", "650102"])
birth = st.dates(min_value=pd.Timestamp("1920-01-01").date(), max_value=pd.Timestamp("2024-12-31").date())
seq = st.integers(0, 999)


@st.composite
def resident_ids(draw) -> tuple[str, bool]:
    first17 = draw(region) + draw(birth).strftime("%Y%m%d") + f"{draw(seq):03d}"
    right = resident_id_check_char(first17)
    valid = draw(st.booleans())
    check = right if valid else draw(st.sampled_from([c for c in "0123456789X" if c != right]))
    return first17 + check, valid


@st.composite
def written_id(draw) -> tuple[str, str]:
    rid, _ = draw(resident_ids())
    form = draw(st.sampled_from(["plain", "space", "dash", "lower"]))
    text = {"plain": rid, "lower": rid.lower(),
            "space": f"{rid[:6]} {rid[6:14]} {rid[14:]}", "dash": f"{rid[:6]}-{rid[6:14]}-{rid[14:]}"}[form]
    return rid, text


@settings(max_examples=150, deadline=None)
@given(written_id(), st.sampled_from(["身份证号：", "证件号", "ID ", "", "患者，"]),
       st.sampled_from(["。", "，电话", " ", ""]))
def test_resident_ids_found_with_any_check_digit_and_spacing(written, before, after):
    _, text = written
    note = f"入院记录{before}{text}{after}既往体健"
    assert text in kinds_found(note).get("resident_id", [])


@settings(max_examples=60, deadline=None)
@given(region, birth, seq)
def test_old_fifteen_digit_ids_found(reg, b, s):
    old = reg + b.strftime("%y%m%d") + f"{s:03d}"
    assert old in kinds_found(f"旧身份证{old}，")["resident_id"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["13", "15", "17", "18", "19"]), st.integers(0, 10**9 - 1),
       st.sampled_from(["plain", "dash", "space", "+86 ", "+86-", "0086"]))
def test_mobiles_found_in_written_forms(prefix, rest, form):
    m = f"{prefix}{rest:09d}"
    text = {"plain": m, "dash": f"{m[:3]}-{m[3:7]}-{m[7:]}", "space": f"{m[:3]} {m[3:7]} {m[7:]}"}.get(form, form + m)
    found = kinds_found(f"联系电话{text}。")
    assert text in found.get("mobile", []), found


def test_numbers_inside_longer_numbers_are_not_mobiles():
    assert "mobile" not in kinds_found("化验编号 2138001234567890 结果")


@pytest.mark.parametrize(
    "note, kind, span",
    [
        ("邮箱 wang.xm+1@hospital.com.cn 联系", "email", "wang.xm+1@hospital.com.cn"),
        ("座机010-88776655转123", "landline", "010-88776655转123"),
        ("电话（0571）87654321", "landline", "（0571）87654321"),
        ("医保卡号：GD12345678。", "insurance_no", "GD12345678"),
        ("病案号 A0012345，", "record_no", "A0012345"),
        ("银行卡6222 0212 3456 7890 123付款", "bank_card", "6222 0212 3456 7890 123"),
        ("于2025年3月7日入院", "date", "2025年3月7日"),
        ("于2025-03-07入院", "date", "2025-03-07"),
        ("于2025/3/7入院", "date", "2025/3/7"),
        ("二〇二五年三月七日签字", "date", "二〇二五年三月七日"),
        ("3月7日复诊", "date", "3月7日"),
        ("现住址：北京市朝阳区建国路88号院3号楼2单元501室。", "address", "北京市朝阳区建国路88号院3号楼2单元501室"),
        ("家住浙江省杭州市西湖区文三路4113号假日公寓，", "address", "浙江省杭州市西湖区文三路4113号假日公寓"),
        ("lives at 268 Nienow Trace, Hingham", "address", "268 Nienow Trace"),
        ("SSN 999-41-2363.", "ssn", "999-41-2363"),
        ("患者王小明于昨日入院", "name", "王小明"),
        ("家属：李四陪同", "name", "李四"),
        ("经韩雪梅医生诊断", "name", "韩雪梅"),
        ("欧阳娜娜女士，35岁", "name", "欧阳娜娜"),
        ("施明远，53岁，男", "name", "施明远"),
        ("张先生诉头痛", "name", "张"),
        ("患者王某某，", "name", "王某某"),
        ("向伟（男，18岁）于门诊就诊", "name", "向伟"),
        ("患者黄帅本人知情并签字", "name", "黄帅"),
        ("在温迪·格伦医生的指导下", "name", "温迪·格伦"),
        ("目前她在桑德兰·本德医生的指导下", "name", "桑德兰·本德"),
        ("Seen by Dr. Maude482 Wunsch504 today", "name", "Maude482 Wunsch504"),
    ],
)
def test_each_detector_kind(note, kind, span):
    assert span in kinds_found(note).get(kind, []), kinds_found(note)


def test_name_found_in_context_is_removed_everywhere_in_the_note():
    out, counts = scrub(["白雅宁是一位43岁的女性。白雅宁的信用评分为850分。"], kinds=GENERIC)
    assert "白雅宁" not in out[0] and out[0].count("[姓名]") == 2
    assert counts["name"] == 2


@pytest.mark.parametrize(
    "note",
    ["患者于昨日入院，由医生告知病情", "担任某软件公司首席", "现任大学教授", "职业是麻醉医师",
     "主管医生查房", "体温38.2℃，心率96次/分，血压128/76mmHg", "ICD-10 编码 I63.9"],
)
def test_ordinary_clinical_words_are_not_identifiers(note):
    assert kinds_found(note).keys() <= {"date"}, kinds_found(note)


def test_identifier_patterns_name_the_kinds():
    assert set(IDENTIFIER_PATTERNS) == set(GENERIC)
    assert IDENTIFIER_PATTERNS["mobile"].search("电话13812345678")
    assert IDENTIFIER_PATTERNS["resident_id"].search("身份证号230103198008273629")
    assert not IDENTIFIER_PATTERNS["email"].search("无邮箱")


# --- known identifiers ------------------------------------------------------------------------


KNOWN = pd.DataFrame({
    "subject_id": ["P1"] * 5 + ["P2"] * 2,
    "kind": ["name", "resident_id", "mobile", "address", "insurance_no", "name", "mobile"],
    "value": ["欧阳明华", "11010519491231002X", "13912345678", "北京市朝阳区建国路88号",
              "YB99887766", "李娜", "13700001111"],
})


def test_known_variants_cover_common_spellings():
    _, v = known_variants("resident_id", "11010519491231002X")
    assert {"110105 19491231 002X", "110105-19491231-002X", "11010519491231002x"} <= v
    _, v = known_variants("mobile", "13912345678")
    assert {"139-1234-5678", "139 1234 5678"} <= v
    _, v = known_variants("name", "欧阳明华")
    assert {"欧阳明华", "欧阳某", "明华"} <= v
    _, v = known_variants("address", "北京市朝阳区建国路88号")
    assert "朝阳区建国路88号" in v and "建国路88号" in v
    kind, v = known_variants("FIRST", "Maude482")
    assert kind == "name" and {"Maude482", "Maude"} <= v


def test_nothing_of_a_known_identifier_remains():
    notes = [
        "明华诉头痛，欧阳某的电话139 1234 5678，证件11010519491231002x，住朝阳区建国路88号，"
        "医保YB99887766。",
        "李娜复诊，139-1234-5678不是她的号码。",
    ]
    out, counts = scrub(notes, subject_ids=pd.Series(["P1", "P2"]), known=KNOWN)
    for text in out:
        for value in ("明华", "欧阳", "1234", "002", "建国路", "YB99887766", "李娜"):
            assert value not in text, (value, text)
    assert counts["name"] >= 3 and counts["insurance_no"] == 1
    # Each note is matched against its own subject only: P2's note keeps no P1 value because
    # the generic mobile detector caught it, not because P1's values were searched there.
    spans = detect_spans(notes, ["known"], ["P1", "P2"], KNOWN)
    assert set(spans.loc[spans["row"] == 1, "kind"]) == {"name"}


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["王", "李", "欧阳", "萧", "任", "司马", "于"]),
    st.text(alphabet="建国小明丽华雅宁天宇思远", min_size=1, max_size=2),
    resident_ids(),
    st.sampled_from(["13", "15", "18"]).flatmap(lambda p: st.integers(0, 10**9 - 1).map(lambda r: f"{p}{r:09d}")),
    st.permutations(["{name}于昨日就诊。", "{masked}复诊。", "证件{rid}。", "电话{mobile}。", "{given}诉头痛。"]),
    st.sampled_from(["plain", "space", "dash"]),
)
def test_nothing_of_a_known_identifier_remains_whatever_the_spelling(surname, given, rid_valid, mobile, order,
                                                                     form):
    name = surname + given
    rid, _ = rid_valid

    def spell(v: str, cuts: tuple[int, ...]) -> str:
        sep = {"plain": "", "space": " ", "dash": "-"}[form]
        return sep.join(v[a:b] for a, b in zip((0, *cuts), (*cuts, len(v))))

    note = "".join(order).format(name=name, masked=surname + "某", rid=spell(rid, (6, 14)),
                                 mobile=spell(mobile, (3, 7)), given=given)
    known = pd.DataFrame({"subject_id": "S", "kind": ["name", "resident_id", "mobile"],
                          "value": [name, rid, mobile]})
    out, _ = scrub([note], subject_ids=pd.Series(["S"]), known=known)
    compact = re.sub(r"[ \-]", "", out[0])
    assert name not in out[0] and rid not in compact and mobile not in compact, (note, out[0])
    if len(given) >= 2:
        assert given not in out[0]


def test_known_numbers_match_only_whole_numbers():
    known = pd.DataFrame({"subject_id": ["P9"], "kind": ["postcode"], "value": ["100020"]})
    out, _ = scrub(["邮编100020，化验单号 21000201"], kinds=["known"], subject_ids=pd.Series(["P9"]), known=known)
    assert out[0] == "邮编[标识符]，化验单号 21000201"


@pytest.mark.parametrize(
    "note",
    ["证件号（护照）：123456789012345", "身份证号码为 230103 19800827 3629。", "ID：440305199912311234",
     "电话+86 139 1234 5678", "邮箱 li.na@example.org", "旧证110105491231002"],
)
def test_the_gate_finds_nothing_the_scrubber_left(note):
    assert find_identifiers(pd.Series([note], dtype="string")).all()
    out, _ = scrub([note])
    assert not find_identifiers(out).any(), out[0]


def test_gate_check_sees_what_the_scrubber_removes():
    notes = pd.Series(["患者李娜，电话13700001111，邮箱lina@163.com", "无标识符的病程记录"], dtype="string")
    assert find_identifiers(notes, ["李娜"]).tolist() == [True, False]
    out, _ = scrub_texts(notes, subject_ids=pd.Series(["P2", "P2"]), known=KNOWN)
    assert not find_identifiers(out, KNOWN["value"].tolist()).any()


# --- replacement modes ------------------------------------------------------------------------


def test_placeholders_are_typed():
    out, _ = scrub(["患者王小明，身份证号230103198008273629，手机13945671234，邮箱a@b.cn。"])
    assert out[0] == "患者[姓名]，身份证号[身份证号]，手机[电话]，邮箱[邮箱]。"


def test_generalise_dates_and_addresses():
    text = "2025年3月7日及2025-03-09复诊，现住黑龙江省哈尔滨市南岗区中山路123号。"
    out, _ = scrub([text], dates="month", replace={"address": "generalise"})
    assert out[0] == "2025年3月及2025-03复诊，现住黑龙江省哈尔滨市。"
    out, _ = scrub([text], dates="year")
    assert out[0] == "2025年及2025复诊，现住[地址]。"
    out, _ = scrub([text], dates="keep")
    assert "2025年3月7日" in out[0]


def test_pseudonyms_are_consistent_across_notes_and_spellings():
    notes = ["患者欧阳明华，电话139-1234-5678。", "欧阳某复诊，手机+86 13912345678。", "患者李娜。"]
    out, _ = scrub(notes, subject_ids=pd.Series(["P1", "P1", "P2"]), known=KNOWN,
                   replace="pseudonym", key=b"\x07" * 32)
    tags = [re.findall(r"\[(?:姓名|电话)-[a-p]{12}\]", t) for t in out]
    assert tags[0] == tags[1]  # same name, same mobile, in another spelling
    assert tags[2][0] != tags[0][0]
    again, _ = scrub(notes, subject_ids=pd.Series(["P1", "P1", "P2"]), known=KNOWN,
                     replace="pseudonym", key=b"\x07" * 32)
    other, _ = scrub(notes, subject_ids=pd.Series(["P1", "P1", "P2"]), known=KNOWN,
                     replace="pseudonym", key=b"\x08" * 32)
    assert again.tolist() == out.tolist() and other[0] != out[0]
    assert not re.search(r"[0-9]", "".join(tags[0]))  # no digit run a gate could mistake


def test_pseudonyms_need_a_key():
    with pytest.raises(KeyCustodyError):
        scrub(["患者王小明"], replace="pseudonym")


def test_nulls_stay_null_and_nul_is_refused():
    out, counts = scrub([None, "无", "患者王小明"])
    assert pd.isna(out[0]) and out[1] == "无" and counts == {"name": 1}
    with pytest.raises(InputError, match="NUL"):
        scrub(["a\x00b"])


# --- the technique ----------------------------------------------------------------------------


def _spec(**params) -> Column:
    return Column(role="free_text", technique="scrub", params=params)


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"replace": "mask"}, "must be one of"),
        ({"replace": {"name": "generalise"}}, "cannot be generalised"),
        ({"replace": {"nmae": "placeholder"}}, "unknown kind"),
        ({"dates": "week"}, "params.dates"),
        ({"kinds": ["name", "phone"]}, "params.kinds"),
        ({"kinds": []}, "params.kinds"),
        ({"colour": 1}, "unknown parameters"),
    ],
)
def test_bad_parameters_name_the_column(params, fragment):
    with pytest.raises(PolicyError, match=fragment) as err:
        registry.get("scrub").check("text", _spec(**params))
    assert "text" in str(err.value)


def test_scrub_is_for_free_text_only():
    with pytest.raises(PolicyError, match="role"):
        registry.get("scrub").check("name", Column(role="direct_identifier", technique="scrub"))


def test_technique_apply_counts_kinds_and_uses_the_key_ring():
    ring = KeyRing(b"\x11" * 32, recipient_id="r1", agreement_id="a1")
    frame = pd.DataFrame({"patient_id": ["P1", "P2"],
                          "text": ["患者欧阳明华，电话13912345678，2025年3月7日入院。", "李娜复诊。"]})
    ctx = ApplyContext(table="notes", column="text", subject_ids=frame["patient_id"], keyring=ring,
                       frame=frame, known_identifiers=KNOWN)
    spec = _spec(replace={"name": "pseudonym", "default": "placeholder"}, dates="month")
    technique = registry.get("scrub")
    out = technique.apply(frame["text"], spec, ctx)
    assert re.fullmatch(r"患者\[姓名-[a-p]{12}\]，电话\[电话\]，2025年3月入院。", out[0])
    assert re.fullmatch(r"\[姓名-[a-p]{12}\]复诊。", out[1])
    assert ctx.counts == {"name": 2, "mobile": 1, "date": 1}
    described = json.dumps(technique.describe(spec, ctx), ensure_ascii=False)
    assert "key_fingerprint" in described and "欧阳" not in described


def test_release_policy_notes_entry_loads():
    from pathlib import Path

    from deidflow.policy import load_policy

    loaded = load_policy(Path(__file__).resolve().parents[2] / "configs" / "release.yaml")
    spec = loaded.policy.tables["notes"].columns["text"]
    assert spec.technique == "scrub"
    registry.get("scrub").check("text", spec)


# --- recall on real text ----------------------------------------------------------------------

_TITLE = re.compile(r"\s*(?:副?主任医师|主治医师|医师|医生|教授|主任|博士)$")


def test_recall_on_multipriv_chinese_paragraphs(datasets):
    """Generic detectors alone (no structured values): ≥ 99 % of gold occurrences per kind."""
    rows = json.loads((datasets / "zh_text" / "multipriv_person_975_zh.json").read_text("utf-8"))
    texts = [r["naturalParagraph"] for r in rows]
    spans = detect_spans(texts, GENERIC)
    by_row: dict[int, list[tuple[int, int]]] = {}
    for r, s, e in zip(spans["row"], spans["start"], spans["end"]):
        by_row.setdefault(int(r), []).append((int(s), int(e)))
    hits: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        gold = {"name": [_TITLE.sub("", r["name"]), _TITLE.sub("", r["doctor"]).split()[-1]],
                "resident_id": [str(r["idCardNumbers"])], "mobile": [r["phoneNumbers"]],
                "email": [r["emailAddress"]], "address": [r["location"]]}
        for kind, values in gold.items():
            for v in values:
                j = texts[i].find(v)
                while j >= 0:
                    h = hits.setdefault(kind, [0, 0])
                    h[0] += 1
                    h[1] += any(s <= j and j + len(v) <= e for s, e in by_row.get(i, []))
                    j = texts[i].find(v, j + 1)
    recall = {k: found / total for k, (total, found) in hits.items()}
    assert set(recall) == {"name", "resident_id", "mobile", "email", "address"}
    assert min(recall.values()) >= 0.99, recall


def test_synthea_identifiers_leave_notes_written_from_them(datasets):
    """Notes written from Synthea patients' own fields keep none of them once scrubbed with
    the subject's known identifiers (digit-suffixed names, SSNs, US street addresses)."""
    p = pd.read_csv(datasets / "synthea" / "ma_113_burrows99" / "patients.csv", dtype=str,
                    keep_default_na=False).head(60)
    notes = pd.Series(
        [f"患者{r.FIRST} {r.LAST}，SSN {r.SSN}，住址{r.ADDRESS}, {r.CITY}。复诊时{r.FIRST}自诉好转，"
         f"Ms. {r.LAST} to return." for r in p.itertuples()], dtype="string")
    known = pd.concat([pd.DataFrame({"subject_id": p["Id"], "kind": c, "value": p[c]})
                       for c in ("FIRST", "LAST", "SSN", "ADDRESS")])
    out, counts = scrub_texts(notes, subject_ids=p["Id"], known=known)
    for text, r in zip(out, p.itertuples()):
        for value in (r.FIRST, r.LAST, r.SSN, r.ADDRESS):
            assert value not in text, (value, text)
    assert counts["ssn"] == len(p) and counts["address"] == len(p)


def test_chunks_give_the_same_result_as_one_pass(monkeypatch):
    from deidflow.techniques import scrub as module

    notes = [f"患者欧阳明华第{i}次复诊，电话13912345678，{2000 + i}年3月7日。" for i in range(7)] + [None]
    ids = pd.Series(["P1"] * 8)
    whole, whole_counts = scrub(notes, subject_ids=ids, known=KNOWN, replace="pseudonym", key=b"\x05" * 32)
    monkeypatch.setattr(module, "CHUNK", 3)
    parts, part_counts = scrub(notes, subject_ids=ids, known=KNOWN, replace="pseudonym", key=b"\x05" * 32)
    assert parts.tolist() == whole.tolist() and part_counts == whole_counts
    empty, counts = scrub([])
    assert len(empty) == 0 and counts == {}


# --- quasi-identifiers in notes (issue 15) ------------------------------------------------------


def test_ages_removed_or_banded_and_over_89_always_grouped():
    text = ["患者，男，66岁，年龄：92，3个月时发病", "女，45 周岁"]
    removed = scrub(text, ages="remove")[0].tolist()
    assert removed == ["患者，男，[年龄]，年龄：[年龄]，[年龄]时发病", "女，[年龄]"]
    banded = scrub(text, ages=10)[0].tolist()
    assert banded == ["患者，男，60-69岁，年龄：90岁以上，0-9岁时发病", "女，40-49岁"]
    kept = scrub(text)[0].tolist()
    assert kept == ["患者，男，66岁，年龄：[90岁以上]，3个月时发病", "女，45 周岁"]


@given(st.integers(-180, 180).filter(bool), st.dates(min_value=pd.Timestamp("1950-01-01").date(),
                                                      max_value=pd.Timestamp("2030-12-31").date()))
@settings(max_examples=100, deadline=None)
def test_note_dates_move_by_the_subjects_offset_in_every_spelling(offset, day):
    import numpy as np

    moved = (pd.Timestamp(day) + pd.Timedelta(days=offset))
    text = f"{day:%Y-%m-%d}入院，{day.year}年{day.month}月{day.day}日手术，{day:%Y%m%d}出院"
    out = scrub([text], dates="shift", date_offsets=np.array([offset]), kinds=["date"])[0][0]
    assert out == (f"{moved:%Y-%m-%d}入院，{moved.year}年{moved.month}月{moved.day}日手术，"
                   f"{moved:%Y%m%d}出院")


def test_shift_without_offsets_is_refused():
    with pytest.raises(PolicyError, match="offset"):
        scrub(["2024-01-02"], dates="shift")


def test_release_shifts_note_dates_with_the_structured_dates():
    from deidflow.techniques.dateshift import ALGORITHM, DEFAULT_SCOPE, subject_offsets

    ring = KeyRing(b"\x07" * 32, recipient_id="r", agreement_id="a")
    ids_ = pd.Series(["P1", "P2"], dtype="string")
    spec = Column(role="free_text", technique="scrub",
                  params={"dates": "shift", "shift_days": 30, "ages": "remove"})
    ctx = ApplyContext(table="notes", column="text", subject_ids=ids_, keyring=ring)
    out = registry.get("scrub").apply(pd.Series(["2024-03-01就诊，66岁", "2024-03-01就诊"], dtype="string"), spec, ctx)
    off = subject_offsets(ids_, ring.derive(DEFAULT_SCOPE, purpose="date_shift", algorithm=ALGORITHM), 30)
    want = [(pd.Timestamp("2024-03-01") + pd.Timedelta(days=int(o))).strftime("%Y-%m-%d") for o in off]
    assert out.tolist() == [f"{want[0]}就诊，[年龄]", f"{want[1]}就诊"]
    described = registry.get("scrub").describe(spec, ctx)
    assert any("shifted" in x for x in described["not_covered_by_risk"])


# --- OCR and form spellings of numbers and labels (issue 15, the independent notes at scale) ---


def _covered(text: str, value: str) -> bool:
    """Every non-space character of `value` (at its first place in `text`) is replaced."""
    spans = detect_spans([text], GENERIC)
    mask = [False] * len(text)
    for s, e in zip(spans["start"], spans["end"]):
        mask[s:e] = [True] * (e - s)
    a = text.index(value)
    return all(mask[i] for i in range(a, a + len(value)) if not text[i].isspace())


def _with_gap(digits: str, at: int, gap: str) -> str:
    return digits[:at] + gap + digits[at:]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["13", "15", "18", "19"]), st.integers(0, 10**9 - 1), st.integers(1, 10),
       st.sampled_from([" ", "  "]), st.sampled_from(["plain", "3-4-4"]))
def test_a_doubled_space_inside_a_mobile_leaves_nothing(prefix, rest, at, gap, grouping):
    m = f"{prefix}{rest:09d}"
    written = _with_gap(m, at, gap) if grouping == "plain" else f"{m[:3]}{gap}{m[3:7]} {m[7:]}"
    assert _covered(f"手 机 :  {written}\t家庭住址：不详", written)


@settings(max_examples=80, deadline=None)
@given(resident_ids(), region, birth, seq, st.integers(1, 14), st.sampled_from([" ", "  ", "-"]))
def test_an_id_split_anywhere_leaves_nothing(rid18, reg, b, s, at, gap):
    old = reg + b.strftime("%y%m%d") + f"{s:03d}"  # 15-digit ID of before 1999
    for rid in (rid18[0], old):
        written = _with_gap(rid, at, gap)
        assert _covered(f"身 份 证 号 : {written}\n邮编：100000", written), written


@pytest.mark.parametrize("card", ["6217 0000  1111 2222 333", "6217  0000 1111 2222", "6217-0000-1111-2222"])
def test_bank_card_groups_with_a_doubled_space(card):
    assert _covered(f"退费账户  : {card}\n", card)
    assert _covered(f"已付款{card}。", card)


@pytest.mark.parametrize("written", ["(+86)13912345678", "（+86）139 1234 5678", "(0086 )13912345678",
                                     "(86) 139-1234-5678", "(+8 6)13912345678"])
def test_mobile_with_the_country_code_in_brackets(written):
    assert _covered(f"随访时拨打{written}无人接听", written)


@pytest.mark.parametrize(
    "note, value",
    [
        ("出院\nq q : 12345678\n", "12345678"),  # OCR spaces out a lower-case label too
        ("出院\nq  q 98765432  监护人：无", "98765432"),
        ("出院\nW e C  h a t：abc_def9\n", "abc_def9"),
        ("出院\nWe Chat  xyzw-12\n", "xyzw-12"),
        ("出院\n微信号：abcd\n", "abcd"),  # a short id right after its label
        ("出院\nVX为wxyz。", "wxyz"),
        ("出院\nWeChatMinghao，电话见上", "Minghao"),  # a mixed-case label set straight before the id
        ("出院\nvxli_na8\n", "li_na8"),  # a lower-case one only before an id that cannot be a word
        ("出院\nM R N  AB12345678\n", "AB12345678"),  # the trailing gap is a separator
        ("出院，XK号QB1234567，", "QB1234567"),  # an unlisted abbreviation before 号
        ("出院\nX  K 号 : 7654321\n", "7654321"),
    ],
)
def test_spaced_and_short_labels_still_announce_their_value(note, value):
    assert _covered(note, value), kinds_found(note)


@pytest.mark.parametrize("note", ["Bedside care given.", "Family history: none", "paid by WeChatPay",
                                  "notes by wechatbot", "微信：无", "体温 36 5 37 2"])
def test_label_words_in_prose_take_no_value(note):
    found = kinds_found(note)
    assert not {"record_no", "wechat", "qq", "resident_id", "mobile"} & set(found), found


@pytest.mark.parametrize(
    "note, name",
    [
        ("已向其 女赵丽娟交代病情，其表示理解。", "赵丽娟"),  # a role word spaced out by OCR
        ("患者由其母 亲孙晓梅陪同就诊。", "孙晓梅"),
        ("病情好转。周主 任查房后同意出院。", "周"),  # a title spaced out
        ("冯护 士长巡视病房。", "冯"),
        ("上 官 晓 梅主治医师查房示病情平稳。", "上 官 晓 梅"),  # a spaced compound surname
        ("夜班司 马 丽 华巡视病房。", "司 马 丽 华"),
        ("已向外孙女韩梦瑶交代病情，其表示理解。", "韩梦瑶"),  # 向外 overlaps the role word
        ("请心内科魏振华会诊，建议加用阿司匹林。", "魏振华"),  # a department, then the consultant
        ("家属向大妈要求自动出院。", "向"),  # a role word, then surname + form of address
        ("家属蒋大爷（父亲）签字。", "蒋"),
        ("由扎西顿珠医生查看患者。", "扎西顿珠"),  # a minority name before a title
        ("与家属钱有为沟通病情。", "钱有为"),  # a function-word given character, then an action
        ("患者好转，南宫护师。", "南宫"),  # a compound surname whose first character is a preposition
        ("复查正常。邹文斌（ 儿子，电话见上）签字。", "邹文斌"),  # OCR's space after the bracket
    ],
)
def test_names_in_spaced_and_role_contexts(note, name):
    assert name in kinds_found(note).get("name", []), kinds_found(note)


@pytest.mark.parametrize(
    "note, kept",
    [
        ("已向其女孙艳交代病情。", "交代病情"),  # a given name ends before an action
        ("于妇女儿童医院就诊。", "妇女儿童医院"),
        ("广州市妇 女儿童医疗中心", "儿童医疗中心"),  # 女 儿 spaced: still no relative there
        ("由医生告知病情。", "医生告知"),
        ("请心内科会诊。", "心内科会诊"),
        ("主治医 师 查 房示病情平稳", "查 房"),  # a clinical word spaced out is no name
    ],
)
def test_clinical_words_around_role_words_are_kept(note, kept):
    spans = detect_spans([note], GENERIC)
    a = note.index(kept)
    assert not any(s < a + len(kept) and e > a for s, e in zip(spans["start"], spans["end"])), kinds_found(note)
