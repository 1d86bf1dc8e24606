"""A subject's known values are spelled and searched only where a cheap necessary test says
a text can hold them (`scrub._KnownTable`), and a subject's run of notes is searched as one
text. Both must give exactly what the plain way gives: every spelling of every own value,
longest first, searched in every note of the subject on its own."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow import identifiers as ids
from deidflow.techniques import scrub
from deidflow.techniques.scrub import detect_spans, known_variants, scrub_texts


def _plain_spans(texts: list[str], sids: list[str], known: pd.DataFrame) -> pd.DataFrame:
    """The reference: each own value's spellings all made (`known_variants`), the subject's
    list sorted longest first (stable), each note searched with every one of them."""
    table: dict[str, list[tuple[str, int, str]]] = {}
    frame = known.dropna(subset=["subject_id", "value"]).drop_duplicates(["subject_id", "kind", "value"])
    for sid, kind, value in zip(frame["subject_id"], frame["kind"], frame["value"]):
        k, variants = known_variants(kind, value)
        table.setdefault(sid, []).extend((v, scrub._KIND_CODE[k], value.strip()) for v in variants)
    for entries in table.values():
        entries.sort(key=lambda t: -len(t[0]))
    folded = [ids.fold(t) for t in texts]
    starts = np.zeros(len(texts), dtype=np.int64)
    starts[1:] = np.cumsum([len(t) + 1 for t in texts[:-1]])
    spans: list = []
    canon: list = []
    for row, (text, sid) in enumerate(zip(folded, sids)):
        for variant, code, canonical in table.get(sid, []):
            scrub._find_all(text, variant, int(starts[row]), code, spans, canon, canonical)
    return scrub._merge(spans, starts, canon)


_SURNAMES = ["王", "李", "张", "欧阳", "司马", "蒋"]
_GIVEN = "小明华建平红伟某"
_digits = st.text("0123456789", min_size=1, max_size=1)


@st.composite
def _resident_id(draw) -> str:
    body = draw(st.text("0123456789", min_size=17, max_size=17))
    return body + draw(st.sampled_from("0123456789Xx"))


@st.composite
def _mobile(draw) -> str:
    number = "1" + draw(st.sampled_from("3456789")) + draw(st.text("0123456789", min_size=9, max_size=9))
    return draw(st.sampled_from(["", "86", "86", "+86", "+86 "])) + number


@st.composite
def _name(draw) -> str:
    if draw(st.booleans()):
        return draw(st.sampled_from(_SURNAMES)) + draw(st.text(_GIVEN, min_size=1, max_size=2))
    return draw(st.sampled_from(["Maude482 Wunsch504", "Li Wei", "Jo", "Ann-Marie O'Neil"]))


@st.composite
def _address(draw) -> str:
    place = draw(st.sampled_from(["北京市朝阳区", "黑龙江省哈尔滨市南岗区", "河北省石家庄市", ""]))
    return place + draw(st.sampled_from(["建国路", "太原街", "中山路", "号"])) + draw(st.text("0123456789", max_size=3)) + "号"


_KINDS = {
    "resident_id": _resident_id(),
    "mobile": _mobile(),
    "name": _name(),
    "attending_doctor": _name(),
    "address": _address(),
    "postcode": st.text("0123456789", min_size=4, max_size=7),
    "insurance_no": st.text("0123456789", min_size=6, max_size=16),
    "email": st.sampled_from(["wang@example.cn", "a.b@c.org"]),
    "other": st.text("0123456789Xx -()+某王", min_size=1, max_size=12),
}


def _near_misses(value: str, draw) -> list[str]:
    """Spellings the value's own test or search must not be fooled by: its digits split by
    other characters, its case changed, cut short, inside a longer number, or +86 put on."""
    compact = value.replace(" ", "").replace("-", "")
    cut = draw(st.integers(1, max(1, len(compact) - 1)))
    sep = draw(st.sampled_from(["/", ".", "、", "—", "\u3000", " ", "-", "--"]))
    return [compact[:cut] + sep + compact[cut:], compact.upper(), compact.lower(), compact[:-1],
            compact[1:], "9" + compact + "1", "+86" + compact, compact.swapcase()]


@st.composite
def _case(draw):
    subjects = [str(i) for i in range(draw(st.integers(1, 4)))]
    rows = []
    for sid in subjects:
        for kind in draw(st.lists(st.sampled_from(sorted(_KINDS)), max_size=6)):
            rows.append((sid, kind, draw(_KINDS[kind])))
    known = pd.DataFrame(rows, columns=["subject_id", "kind", "value"], dtype="string")
    pieces = []
    for _, kind, value in rows:
        _, variants = known_variants(kind, value)
        choice = draw(st.sampled_from(["absent", "value", "variant", "variant", "near"]))
        if choice == "value":
            pieces.append(value)
        elif choice == "variant" and variants:
            pieces.append(draw(st.sampled_from(sorted(variants))))
        elif choice == "near":
            pieces.append(draw(st.sampled_from(_near_misses(value, draw))))
    # (no surname in the filler: a given name alone must be found by its own test)
    filler = st.text("患者记录医师电话号码某小明12-Xx ，。：\u3000１２３", max_size=8)
    # notes of one subject mostly side by side (as in a release), sometimes interleaved, and
    # notes of a subject with no known values
    owners = sorted(draw(st.lists(st.sampled_from([*subjects, "nobody"]), min_size=1, max_size=8)))
    if draw(st.booleans()):
        owners = draw(st.permutations(owners))
    texts = []
    for _ in owners:
        parts = draw(st.lists(st.sampled_from(pieces) if pieces else st.just(""), max_size=5))
        texts.append("".join(draw(filler) + p for p in parts) + draw(filler))
    return texts, list(owners), known


@settings(max_examples=300, deadline=None)
@given(_case())
def test_values_spelled_only_where_needed_give_the_plain_spans(case):
    texts, sids, known = case
    got = detect_spans(texts, ["known"], sids, known)
    want = _plain_spans(texts, sids, known)
    assert got.equals(want), (got, want)


def test_every_spelling_of_a_number_passes_its_test():
    """The 86 mobile's spellings without 86, an ID with x or X in any grouping, a number
    written with its own odd grouping, an address without its place words, a given name or
    欧阳某 alone: each alone in a note is found."""
    known = pd.DataFrame({"subject_id": ["1"] * 6,
                          "kind": ["mobile", "mobile", "resident_id", "other", "address", "name"],
                          "value": ["+8613812345678", "8613912345678", "11010519491231002X", "(010) 6512-3456",
                                    "北京市朝阳区建国路88号", "欧阳明华"]})
    for kind, value in zip(known["kind"], known["value"]):
        _, variants = known_variants(kind, value)
        for v in variants:
            note = f"患者电话{v}，见前。"
            spans = detect_spans([note], ["known"], ["1"], known)
            assert (note.index(v), note.index(v) + len(v)) in set(zip(spans["start"], spans["end"])), v


def test_multipriv_paragraphs_as_runs_give_the_plain_spans(datasets):
    """Real paragraphs (MultiPriv, not generated here) with their people's known values, three
    notes per subject side by side, and the same scrubbed text as note-by-note search."""
    rows = json.loads((datasets / "zh_text" / "multipriv_person_975_zh.json").read_text("utf-8"))[:150]
    known = pd.DataFrame(
        [(str(i // 3), kind, str(r[field])) for i, r in enumerate(rows)
         for kind, field in (("name", "name"), ("resident_id", "idCardNumbers"), ("mobile", "phoneNumbers"),
                             ("email", "emailAddress"), ("address", "location"))],
        columns=["subject_id", "kind", "value"], dtype="string")
    texts = [r["naturalParagraph"] for r in rows]
    sids = [str(i // 3) for i in range(len(rows))]
    got = detect_spans(texts, ["known"], sids, known)
    assert len(got) > len(rows)  # the values are there to be found
    assert got.equals(_plain_spans(texts, sids, known))
    # one subject's notes searched as one text: still nothing found across two notes
    out, _ = scrub_texts(pd.Series(texts, dtype="string"), kinds=["known"],
                         subject_ids=pd.Series(sids, dtype="string"), known=known)
    one_by_one = [scrub_texts(pd.Series([t], dtype="string"), kinds=["known"],
                              subject_ids=pd.Series([s], dtype="string"), known=known)[0].iloc[0]
                  for t, s in zip(texts[:30], sids[:30])]
    assert out.tolist()[:30] == one_by_one
