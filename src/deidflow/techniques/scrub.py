"""Scrubbing direct identifiers out of Chinese clinical free text (GB/T 37964 suppression,
pseudonymisation and generalisation applied inside a note).

Two kinds of detector run over each note:

- *generic* detectors: regular expressions for resident ID numbers (18-digit with or without
  a valid check digit, with spaces or dashes; 15-digit old IDs), mobile and landline numbers,
  e-mail addresses, bank cards, medical-insurance and record numbers after their label, dates
  (ISO and Chinese forms), street addresses down to the number, and names (surname list plus
  the context words 患者, 先生, 女士, 家属, 医生…). A name found in context is then removed
  everywhere else in the same note (白雅宁是一位… … 白雅宁的信用评分), because notes repeat
  names in places no context word marks;
- *known* detectors: the identifier strings the structured tables hold for the note's own
  subject (name, resident ID, mobile, address, insurance number…), matched exactly and in the
  variants people write (digits grouped with spaces or dashes, lower-case x, 王某, the given
  name alone, the address without its province).

Every span found is replaced according to the policy: a typed placeholder (`[姓名]`), a keyed
consistent pseudonym (`[姓名-djpk…]`, the same for one value in every note of one recipient),
or a generalised value (dates to month or year, addresses to city). Overlapping spans are
merged so that every character any detector claimed is replaced.

Speed: the column is scanned as one string (notes joined by NUL, which no detector crosses)
by two regexes: one for every detector that starts with a digit, one for all the others, each
opening with a single character class so that Python's `re` skips in C to the characters that
can start a match (e-mails are found from their "@"). Only spans, not rows, are walked in
Python; the subject's own values are found with `str.find`. The recognisers' scan (passports,
permits, plates, landlines…) runs only over the notes a one-pass RE2 test
(`identifiers.may_hold`) says may hold one; replacements are decided per kind and computed
once per distinct value.

`find_identifiers` is the cheap vectorised check the validation gate uses on whole columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from deidflow import identifiers as ids
from deidflow.errors import InputError, KeyCustodyError, PolicyError
from deidflow.policy import Column, Role
from deidflow.techniques import _zh_names as words
from deidflow.techniques import known_values, names
from deidflow.techniques.base import ApplyContext, Technique

# --- building blocks -----------------------------------------------------------------------

_S = ids.S  # one optional separator between digits: 110105 1990 0101 1234, 138-1234-5678
_D = "[0-9]"  # ASCII digits only: RE2 (pyarrow) treats \d differently on non-ASCII text
# "Not inside a longer number", written as a look-behind *after* the first character (which
# is a digit) so that each pattern still starts with a character class and `re` can skip to
# candidate positions in C instead of trying the pattern at every character.
_NB = r"(?<![0-9].)"
_NA = r"(?![0-9])"

# The identifier shapes and labels come from `deidflow.identifiers`, their one home.
_ID18, _ID15, _ID_ANY = ids.ID18, ids.ID15, ids.ID_ANY
_ID_LABEL = ids.alternation(ids.ID_LABELS)
_MOBILE = ids.MOBILE
_LANDLINE = ids.LANDLINE
_EMAIL = ids.EMAIL
_CARD_SEP = r"(?:-| {1,2})"  # between groups of four: a dash, or a space OCR may double
_BANK_CARD = rf"{_D}{{16,19}}|{_D}{{4}}(?:{_CARD_SEP}{_D}{{4}}){{3}}(?:{_CARD_SEP}?{_D}{{1,3}})?"
_LABEL_TAIL = ids.LABEL_TAIL
_INSURANCE_LABEL = ids.alternation(ids.INSURANCE_LABELS)
_RECORD_LABEL = ids.alternation(ids.RECORD_LABELS)
_CODE = r"[A-Za-z0-9][A-Za-z0-9\-]{3,31}"
_YEAR = rf"(?:1{_NB}9|2{_NB}0){_D}{{2}}"
_DATE_ISO = rf"{_YEAR}[\-/.](?:0?[1-9]|1[0-2])[\-/.](?:0?[1-9]|[12]{_D}|3[01]){_NA}"
_DATE_ZH = rf"{_YEAR} ?年 ?(?:0?[1-9]|1[0-2]) ?月(?: ?(?:0?[1-9]|[12]{_D}|3[01]) ?[日号])?"
_DATE_ZH_NUM = r"[〇零一二三四五六七八九]{4}年[一二三四五六七八九十]{1,2}月(?:[一二三四五六七八九十]{1,3}[日号])?"
_DATE_MD = rf"[0-9](?<![0-9年].)[0-9]?月[0-3]?[0-9][日号]"
# The street-and-number core of an address; the words before it (province, city, district,
# road name) are added by walking backwards, which is far cheaper than trying an address
# pattern at every character.
_ADDRESS_CORE = (
    r"[路街巷弄村里苑园区道同寓厦场]"  # last characters of 路, 胡同, 小区, 花园, 公寓, 大厦, 广场…
    r"(?:[0-9]{1,5}|[一二三四五六七八九十百]{1,4})(?:号楼|号院|号|弄|栋|幢|室|座)(?!床)"
    r"(?:[\-之]?[0-9]{1,5}(?:号楼|号|弄|栋|幢|楼|层|单元|室|座|户))*"
    # a named building after the number: 文三路4113号假日公寓, 中山路1号华润大厦3楼
    r"(?:[\u4e00-\u9fff]{1,6}?(?:公寓|大厦|小区|花园|广场|中心|大楼|家园|苑|城))?"
    r"(?:[A-Za-z0-9]{1,3}座|[0-9]{1,5}(?:号楼|号|栋|幢|楼|层|单元|室|户))*"
)
# Street suffixes (the USPS list plus British forms, which US address generators such as Synthea's draw from),
# each optionally plural, plus the common abbreviations.
_STREET_WORDS = (
    "Alley Annex Arcade Avenue Bayou Beach Bend Bluff Bottom Boulevard Branch Bridge Brook Burg "
    "Bypass Camp Canyon Cape Causeway Center Circle Cliff Club Common Corner Course Court Cove "
    "Creek Crescent Crest Crossing Crossroad Curve Dale Dam Divide Drive Estate Expressway "
    "Extension Falls Ferry Field Flat Ford Forest Forge Fork Fort Freeway Garden Gateway Glen "
    "Green Grove Harbor Haven Heights Highway Hill Hollow Inlet Island Isle Junction Key Knoll "
    "Lake Land Landing Lane Light Loaf Lock Lodge Loop Mall Manor Meadow Mews Mill Mission "
    "Motorway Mount Mountain Neck Orchard Oval Overpass Park Parkway Pass Passage Path Pike Pine "
    "Place Plain Plaza Point Port Prairie Radial Ramp Ranch Rapid Rest Ridge River Road Route Row "
    "Run Shoal Shore Skyway Spring Spur Square Station Stravenue Stream Street Summit Terrace "
    "Throughway Trace Track Trafficway Trail Tunnel Turnpike Underpass Union Valley Viaduct View "
    "Village Ville Vista Walk Wall Way Well Rue Via Trailer Fall "
    # British and Australian forms, also drawn by address generators
    "Approach Close Esplanade Gate Grange Parade Promenade Quay Rise Chase Wynd Vale Byway "
    "Highlands Frontage"
).split()
_STREET_EN = "|".join(
    [f"{w}s?" for w in _STREET_WORDS]
    + [r"St\.?", r"Ave\.?", r"Rd\.?", r"Blvd\.?", r"Ln\.?", r"Dr\.?", r"Ct\.?", r"Pl\.?", "Hwy"]
)
_ADDRESS_EN = (
    rf"[1-9]{_NB}[0-9]{{0,4}} (?:[A-Z][A-Za-z'\-]+ ){{1,3}}(?:{_STREET_EN})\b(?: [Rr]oad\b)?"
    r"(?:,? (?:Unit|Apt\.?|Suite) ?[0-9A-Za-z]+)?"
)
_SSN = rf"[0-9]{_NB}[0-9]{{2}}-[0-9]{{2}}-[0-9]{{4}}{_NA}"


def _cjk_class(excluded: str) -> str:
    """A character class of the CJK unified ideographs without `excluded` (built as ranges:
    Python's re has no class subtraction)."""
    out, start = [], 0x4E00
    for code in sorted({ord(c) for c in excluded if 0x4E00 <= ord(c) <= 0x9FFF}):
        if code > start:
            out.append((start, code - 1))
        start = code + 1
    out.append((start, 0x9FFF))
    parts = [chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in out]
    return "[" + "".join(parts) + "]"


def _alternation(items: Iterable[str]) -> str:
    return "(?:" + "|".join(re.escape(w) for w in sorted(set(items), key=len, reverse=True)) + ")"


def _class_escape(chars: str) -> str:
    return "".join("\\" + c if c in "\\]^-[" else c for c in chars)


def _firsts(items: Iterable[str]) -> str:
    return "".join(sorted({w[0] for w in items}))


def _seconds(items: Iterable[str]) -> str:
    """A look-ahead on the characters that stand second in `items` (all of two or more): put
    before a `_rest`, it turns most places away with one class test instead of one
    look-behind per word."""
    return f"(?=[{_class_escape(''.join(sorted({w[1] for w in items})))}])"


_SINGLE_ANCHORED = "".join(c for c in words.SINGLE_SURNAMES if c not in "于和由但都来那应时")
_SINGLE_FREE = "".join(c for c in words.SINGLE_SURNAMES if c not in words.FUNCTION_SURNAMES)
_COMPOUND = _alternation(words.COMPOUND_SURNAMES)
_GIVEN = _cjk_class(words.NOT_IN_GIVEN_NAME)
_NAME_BEFORE = _alternation(words.NAME_BEFORE) + r"[:：\s]{0,2}(?:为|是|叫|名叫)?"
# (a trie behind a test of the words' first characters: tried after every one or two given
# characters at every surname, where a list of 42 words is 42 tests)
_NAME_AFTER = (f"(?=[{_class_escape(_firsts(words.NAME_AFTER))}，,])"
               f"(?={ids.alternation(list(words.NAME_AFTER))}|[，,]\\s?{_D}{{1,3}}岁)")
_TITLES_EN = ("Mr", "Mrs", "Ms", "Miss", "Dr", "Prof")
_TITLE_EN = "(?:" + "|".join(_TITLES_EN) + r")\.? "
_NAME_EN = r"[A-Z][a-zà-ÿ'\-]+[0-9]*(?: [A-Z][a-zà-ÿ'\-]+[0-9]*){0,2}"

# kind -> alternatives. Each alternative is compiled on its own and starts with a character
# class or literal, so `re` jumps straight to candidate positions. Where only part of a
# match is the identifier (after a label or context word), that part is the group `v`.
_DETECTORS: dict[str, list[str]] = {
    "email": [_EMAIL],
    "resident_id": [
        rf"{_ID18[:5]}{_NB}{_ID18[5:]}{_NA}",
        rf"{_ID_LABEL}{_LABEL_TAIL}(?P<v>{_ID_ANY}){_NA}",
        rf"{_ID15[:5]}{_NB}{_ID15[5:]}{_NA}",
    ],
    "insurance_no": [rf"{_INSURANCE_LABEL}{_LABEL_TAIL}(?P<v>{_CODE})"],
    "record_no": [rf"{_RECORD_LABEL}{_LABEL_TAIL}(?P<v>{_CODE})"],
    "bank_card": [
        rf"[0-9]{_NB}(?:{_D}{{15,18}}|{_D}{{3}}(?:{_CARD_SEP}{_D}{{4}}){{3}}(?:{_CARD_SEP}?{_D}{{1,3}})?){_NA}"
    ],
    "mobile": [
        rf"(?:\+86|0086){_S}1{_S}[3-9](?:{_S}{_D}){{9}}{_NA}",
        rf"8{_NB}6{_S}1{_S}[3-9](?:{_S}{_D}){{9}}{_NA}",
        rf"1{_NB}{_S}[3-9](?:{_S}{_D}){{9}}{_NA}",
    ],
    "landline": ids.RECOGNISERS["landline"].alternatives(),
    "ssn": [_SSN],
    **{k: ids.RECOGNISERS[k].alternatives() for k in ("passport", "permit", "wechat", "qq", "plate", "ip", "age", "employer")},
    "date": [_DATE_ISO, _DATE_ZH, _DATE_ZH_NUM, _DATE_MD],
    "address": [_ADDRESS_CORE, _ADDRESS_EN],
    "name": [
        rf"{_NAME_BEFORE}(?P<v>(?:{_COMPOUND}|[{_SINGLE_ANCHORED}]){_GIVEN}{{1,2}})",
        rf"(?P<v>[{_SINGLE_FREE}](?<![担现出兼继升就调委聘信]任){_GIVEN}{{1,2}}){_NAME_AFTER}",
        rf"(?P<v>{_COMPOUND}{_GIVEN}{{1,2}}){_NAME_AFTER}",
        rf"[{_SINGLE_FREE}](?<![担现出兼继升就调委聘信]任)(?:某某|某){_GIVEN}?",
        rf"(?P<v>[{_SINGLE_ANCHORED}])(?:先生|女士|小姐)",
        rf"{_TITLE_EN}(?P<v>{_NAME_EN})",
        rf"[PpNn](?:(?<=[Pp])atient|(?<=[Nn])ame)[:：]? ?(?P<v>{_NAME_EN})(?=[ ,.;:，。]|$)",
    ],
}
# Transliterated foreign names (温迪·格伦) are found from their middle dot, which is rare,
# rather than by a pattern that would start at every ideograph.
_DOT_GIVEN = _cjk_class("于因在的是和与及为由从向对将把被等其他她它我你们年月日岁男女性医生师护患者")
_DOT_NAME_BEFORE = re.compile(_DOT_GIVEN + r"{1,4}\Z")
_DOT_NAME_AFTER = re.compile(_DOT_GIVEN + r"{1,6}?(?=医生|医师|教授|博士|先生|女士|小姐|主任|[^\u4e00-\u9fff])|"
                             + _DOT_GIVEN + r"{1,6}")
# Words before an address (province, city, district, road name) up to a stop character.
_ADDRESS_STOP = re.compile("[" + re.escape(words.NOT_IN_ADDRESS) + r"\x00\n\r\t]")


def _run_before(stop: re.Pattern[str], text: str, end: int, width: int) -> int | None:
    """Start of the longest run of at most `width` characters that `stop` does not match,
    ending at `end` (None where the character before `end` is a stop): what
    `[^stop]{1,width}\\Z` searched for in text[end - width:end] finds, read from the end
    (that search tries every start in the window and reads on to the end from each)."""
    lo = max(0, end - width)
    m = stop.search(text[lo:end][::-1])
    start = lo if m is None else end - m.start()
    return start if start < end else None

DETECTORS: tuple[str, ...] = ("known", *_DETECTORS)
"""Detector kinds a policy may select with `kinds:` (`known` = the subject's own values)."""

PLACEHOLDERS: dict[str, str] = {
    "name": "[姓名]",
    "resident_id": "[身份证号]",
    "mobile": "[电话]",
    "landline": "[电话]",
    "email": "[邮箱]",
    "address": "[地址]",
    "insurance_no": "[医保号]",
    "record_no": "[病历号]",
    "bank_card": "[卡号]",
    "ssn": "[证件号]",
    "date": "[日期]",
    **{k: ids.RECOGNISERS[k].placeholder for k in ("passport", "permit", "wechat", "qq", "plate", "ip")},
    "employer": "[单位]",
    "age": "[90岁以上]",
    "other": "[标识符]",
}
# Shortest value taken after a label: a bed number may be one digit (床号：3), an insurance
# number is longer than a count, a resident ID after its label at least 14 characters.
_MIN_LABELLED = {"record_no": 1, "insurance_no": 4, "resident_id": 14}
# Kinds found by their `identifiers.Recogniser` alone (one finditer each), beside the
# tuned combined scans above; landlines are found by both.
_RECOGNISER_KINDS = ("landline", "passport", "permit", "wechat", "qq", "plate", "ip", "age")
KINDS: tuple[str, ...] = tuple(PLACEHOLDERS)
"""Kinds a span can have (the generic detectors plus `other` for known values of no kind)."""

IDENTIFIER_PATTERNS: dict[str, re.Pattern[str]] = {
    k: re.compile("|".join(f"(?:{p.replace('(?P<v>', '(?:')})" for p in alts))
    for k, alts in _DETECTORS.items()
}
"""One compiled regex per detector kind (Python `re`), e.g. for naming the kinds the
validation gate found. The scrubber runs the same alternatives grouped by first character
(`_DIGIT_FIRST`, `_OTHER_FIRST`), which is faster."""


# How the detectors are run. Every pattern that starts with a digit shares one regex: one
# scan that stops only at a digit not preceded by a digit, then the alternatives in order
# (at one start the first that matches wins, so longer identifiers come first). The others
# each start with a character class or literal. E-mail addresses are found from their "@".
_DIGIT_FIRST: list[tuple[str, str]] = [
    # 18- then 15-digit IDs, the region read once (ids.ID_REGION without its first digit)
    ("resident_id", rf"(?<=[1-9]){ids.ID_REGION[5:]}(?:{ids.ID18_TAIL}{_NA}|{ids.ID15_TAIL}{_NA})"),
    ("bank_card", rf"(?:{_D}{{15,18}}|{_D}{{3}}(?:{_CARD_SEP}{_D}{{4}}){{3}}(?:{_CARD_SEP}?{_D}{{1,3}})?){_NA}"),
    ("ssn", rf"{_D}{{2}}-{_D}{{2}}-{_D}{{4}}{_NA}"),
    ("date", rf"[90](?<=19|20){_D}{{2}}[\-/.](?:0?[1-9]|1[0-2])[\-/.](?:0?[1-9]|[12]{_D}|3[01]){_NA}"),
    ("date", rf"[90](?<=19|20){_D}{{2}} ?年 ?(?:0?[1-9]|1[0-2]) ?月(?: ?(?:0?[1-9]|[12]{_D}|3[01]) ?[日号])?"),
    ("date", r"(?<!年.)[0-9]?月[0-3]?[0-9][日号]"),
    # compact dates (20230609, also exact dates of birth): a year 19xx/20xx, a real month
    # and day, and nothing more of a number around it
    ("date", rf"[90](?<=19|20){_D}{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]{_D}|3[01]){_NA}"),
    ("mobile", rf"(?:(?<=0)086|(?<=8)6){_S}1{_S}[3-9](?:{_S}{_D}){{9}}{_NA}"),
    ("mobile", rf"(?<=1){_S}[3-9](?:{_S}{_D}){{9}}{_NA}"),
    ("landline", rf"(?<=0){_D}{{2,3}}[ \-]?[2-9]{_D}{{6,7}}(?:(?:转|-|ext\.?){_D}{{1,5}})?{_NA}"),
    ("landline", rf"(?<=[48])00{_S}{_D}{{3}}{_S}{_D}{{4}}{_NA}"),
    ("address", _ADDRESS_EN[len("[1-9]" + _NB):].replace("[0-9]{0,4}", "(?<=[1-9])[0-9]{0,4}", 1)),
]
# One scan for every labelled number (身份证号, 医保卡号, 病案号…): the label says the kind.
_LABELS: dict[str, str] = {
    **{w: "record_no" for w in ids.RECORD_LABELS},
    **{w: "insurance_no" for w in ids.INSURANCE_LABELS},
    **{w: "resident_id" for w in ids.ID_LABELS},
}
_LABELLED = (
    f"(?P<label>{_alternation(_LABELS)}){_LABEL_TAIL}"
    r"(?P<v>[A-Za-z0-9](?:[A-Za-z0-9\-]|(?<=[0-9]) (?=[0-9])){3,31})(?![A-Za-z0-9])"
)
# Every labelled number (身份证号, 医保卡号, 病理号, 床号…) in one scan of its own: the
# labels as a trie let `re` skip in C to the characters a label can start with.
_LABEL_RX = re.compile(
    f"(?P<label>{ids.alternation(list(_LABELS))}){_LABEL_TAIL}"
    r"(?P<v>[A-Za-z0-9](?:[A-Za-z0-9\-]|(?<=[0-9]) (?=[0-9])){0,31})(?![A-Za-z0-9])"
)
# The employer labels (工作单位, 就职于…) are read by identifiers.scan_fields; a bare 单位： is
# the person's work unit only as a label of its own (not 转出单位：).
_EMPLOYER_RX = re.compile(r"单位(?<![\u4e00-\u9fff]..)[:：][ \u3000]{0,2}(?P<v>[^，。；;,、\n\x00\s]{2,30})")
# Each branch starts with a literal and checks the character before the label after it: a
# leading look-behind would make `re` try the pattern at every position instead of scanning
# for 编/号/I/N in C.
_WORD_BEFORE = r"(?<=[\u4e00-\u9fffA-Za-z].)"
_ANY_NUMBER_LABEL = re.compile(
    rf"(?:编{_WORD_BEFORE}号|号{_WORD_BEFORE}码|号{_WORD_BEFORE}|I{_WORD_BEFORE}D|N{_WORD_BEFORE}o\.?)[:：][ \u3000]{{0,2}}"
    r"(?P<v>[A-Za-z0-9][A-Za-z0-9\-]{3,31})(?![A-Za-z0-9])")
_FREE_GUARD = rf"(?<=[{_SINGLE_FREE}])(?<![担现出兼继升就调委聘信]任)"


# Labelled field kinds (identifiers.FIELD_LABELS) -> the scrub kind that replaces the value: a
# postcode is part of an address, a date of birth a date, a personal page a network identifier.
_FIELD_KINDS = {f: {"postcode": "address", "date_of_birth": "date", "url": "ip", "phone": "mobile"}.get(f, f)
                for f in ids.FIELD_LABELS}
_SURNAMES = frozenset(words.SINGLE_SURNAMES) | frozenset(words.COMPOUND_SURNAMES)


def _rest(items: Iterable[str]) -> str:
    """An alternation of words with each word's first character already consumed by the
    shared first-character class: (?:(?<=患)者|(?<=病)人|…), longest first."""
    by_first: dict[str, list[str]] = {}
    for w in set(items):
        by_first.setdefault(w[0], []).append(w[1:])
    parts = []
    for first, rests in sorted(by_first.items()):
        rest = ids.alternation([r for r in rests if r]) if any(rests) else ""
        if "" in rests and rest:
            rest = f"(?:{rest})?"
        parts.append(f"(?<={re.escape(first)}){rest}")
    return "(?:" + "|".join(parts) + ")"


# Every other detector, as (kind, first characters, the pattern after its first character,
# the group holding the identifier or None for the whole match). They run as ONE regex whose
# first character class is the union: one scan instead of ten.
_OTHER_FIRST: list[tuple[str, str, str, str | None]] = [
    # any 15/18-digit number up to 8 characters after an ID label: exactly what the
    # validation gate flags (证件号（护照）：…), so the gate never finds what the scrubber left
    ("resident_id", _firsts(ids.ID_LABELS),
     _seconds(ids.ID_LABELS) + _rest(ids.ID_LABELS) + rf"[^0-9\x00]{{0,8}}?(?P<v>{_ID_ANY}){_NA}", "v"),
    ("mobile", "+", rf"86{_S}1{_S}[3-9](?:{_S}{_D}){{9}}{_NA}", None),
    # the country code in brackets, as forms print it: (+86)138…, （0086 ）138…, (+8 6)138…
    ("mobile", "(（", rf"(?:\+ ?|00)?8 ?6 ?[)）]{_S}1{_S}[3-9](?:{_S}{_D}){{9}}{_NA}", None),
    ("landline", "（(", rf"0{_D}{{2,3}}[)）] ?[2-9]{_D}{{6,7}}(?:(?:转|-|ext\.?){_D}{{1,5}})?{_NA}", None),
    # 二〇二五年三月七日, found from its second character (〇, 零 or 九 are rare; 一 and 二 are not)
    ("date", "〇零九", r"(?<=[一二].)[〇零一二三四五六七八九]{2}年[一二三四五六七八九十]{1,2}月"
                     r"(?:[一二三四五六七八九十]{1,3}[日号])?", "back1"),
    ("address", "路街巷弄村里苑园区道同寓厦场", "(?=[0-9一二三四五六七八九十百])" + _ADDRESS_CORE[len("[路街巷弄村里苑园区道同寓厦场]"):], None),
    # names after context words: techniques/names.py (model-based, with boundaries)
    # 王某某 / 王先生 (the surname alone) / 王小明 followed by a word that follows names
    ("name", _SINGLE_ANCHORED,
     # (each alternative opens with a test of the next character, where its guards and
     # given-name classes would be read at every surname first)
     rf"(?:某(?<=[{_SINGLE_FREE}]某)(?<![担现出兼继升就调委聘信]任某)某?{_GIVEN}?|(?=先生|女士|小姐)"
     rf"|(?=.{{1,2}}[{_class_escape(_firsts(words.NAME_AFTER))}，,]){_FREE_GUARD}{_GIVEN}{{1,2}}{_NAME_AFTER})", None),
    # 向伟（男，18岁）: a surname that is also a function word, only at the start of a sentence
    # and before the sex
    ("name", "".join(c for c in words.FUNCTION_SURNAMES if c in words.SINGLE_SURNAMES),
     rf"(?=.{{1,2}}[（(，,])(?<![\u4e00-\u9fff].){_GIVEN}{{1,2}}(?=[（(，,]\s?[男女])", None),
    ("name", _firsts(words.COMPOUND_SURNAMES),
     rf"{_seconds(words.COMPOUND_SURNAMES)}{_rest(words.COMPOUND_SURNAMES)}{_GIVEN}{{1,2}}{_NAME_AFTER}", None),
    ("name", "MDP", rf"{_seconds(_TITLES_EN)}{_rest(_TITLES_EN)}\.? (?P<v>{_NAME_EN})", "v"),
    ("name", "PpNn", rf"(?=a)(?:(?<=[Pp])atient|(?<=[Nn])ame)[:：]? ?(?P<v>{_NAME_EN})(?=[ ,.;:，。]|$)", "v"),
]
# Companies named without a label (…在杭州某某科技有限公司上班): found from the legal
# suffix, grown backwards over the name up to a word that ends a sentence part.
_ORG_SUFFIX = re.compile(r"(?:有限责任公司|股份有限公司|有限公司|集团公司|集团)")
_ORG_BACK = re.compile(r"[^，。；;,、：:（）()\s\x00在于到去的是从向了职任供]{2,16}\Z")
_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_EMAIL_LOCAL_STOP = re.compile(r"[^A-Za-z0-9._%+\-]")


@lru_cache(maxsize=32)
def _compiled(kinds: tuple[str, ...]) -> tuple[Any, Any]:
    """(the digit-first regex and its group → kind map, the other regex and its group →
    (kind, identifier group) map); None where no selected kind needs one."""
    alts = [(k, p) for k, p in _DIGIT_FIRST if k in kinds]
    digit = None
    groups: dict[str, str] = {}
    if alts:
        parts = []
        for i, (k, p) in enumerate(alts):
            groups[f"a{i}"] = k
            parts.append(f"(?P<a{i}>{p})")
        # Every alternative goes on with a digit, 月, or a separator and a digit (an English
        # street: a space and a capital): the look-ahead turns the rest (5岁, 3次) away at once.
        digit = re.compile(rf"[0-9]{_NB}(?=[0-9月]|[ \-] ?[0-9]| [A-Z])(?:" + "|".join(parts) + ")")
    selected = [alt for alt in _OTHER_FIRST if alt[0] in kinds]
    others = None
    other_groups: dict[str, tuple[str, str | None]] = {}
    if selected:
        firsts = "".join(sorted({c for alt in selected for c in alt[1]}))
        # The Chinese name alternatives start at any of ~500 surname characters, the others at
        # a few characters: each run of them sits behind one test of its first characters, so
        # a surname costs one failed test per other run instead of one per alternative.
        # The alternatives keep their order, so the one that matches is unchanged.
        runs: list[tuple[tuple[bool, bool], set[str], list[str]]] = []  # (run, firsts, parts)
        for i, (k, first, rest, group) in enumerate(selected):
            rest = rest.replace("(?P<v>", f"(?P<v{i}>").replace("(?P<label>", f"(?P<label{i}>")
            part = f"(?P<o{i}>(?<=[{_class_escape(first)}]){rest})"
            other_groups[f"o{i}"] = (k, None if group is None else (f"v{i}" if group == "v" else group))
            run = (k == "name", first.isascii())  # Chinese names, English names, the rest
            if runs and runs[-1][0] == run:
                runs[-1][1].update(first)
                runs[-1][2].append(part)
            else:
                runs.append((run, set(first), [part]))
        parts = [ps[0] if len(ps) == 1 else
                 f"(?<=[{_class_escape(''.join(sorted(chars)))}])(?:" + "|".join(ps) + ")"
                 for _, chars, ps in runs]
        others = re.compile(f"[{_class_escape(firsts)}](?:" + "|".join(parts) + ")")
    return (digit, groups), (others, other_groups)


_KIND_CODE = {k: i for i, k in enumerate(KINDS)}  # also the priority when two kinds tie
_FIELD_NAME = -1  # a name read as a labelled field's value (see _checked_names)
_SEP = "\x00"  # joins notes into one string; no detector matches it or crosses it
CHUNK = 20_000  # notes per joined string: bounded memory on million-note columns


# --- detection --------------------------------------------------------------------------------


_Spans = list[tuple[int, int, int]]


def _generic_spans(big: str, kinds: tuple[str, ...]) -> tuple[_Spans, _Spans, _Spans]:
    """(start, end, kind code) of every generic detector match in the joined text, in three
    lists: the names (kind code name, or _FIELD_NAME for a labelled field's value), the
    Chinese addresses (which `_extend_addresses` grows), and the rest. Kept apart so that
    the passes over names and addresses read their own spans, not every span of the chunk."""
    out: _Spans = []
    found_names: _Spans = []
    addresses: _Spans = []
    append = out.append
    name_code, address_code = _KIND_CODE["name"], _KIND_CODE["address"]
    (digit, groups), others = _compiled(kinds)
    if digit is not None:
        codes = {g: _KIND_CODE[k] for g, k in groups.items()}
        # (English street addresses, found here, are not grown backwards: they stay in out)
        out.extend([(m.start(), m.end(), codes[m.lastgroup]) for m in digit.finditer(big)])
    other, other_groups = others
    if other is not None:
        # per group: the list its spans go to, the kind code, the identifier group
        route = {g: ({name_code: found_names.append, address_code: addresses.append}.get(
                     _KIND_CODE[kind], append), _KIND_CODE[kind], group)
                 for g, (kind, group) in other_groups.items()}
        for m in other.finditer(big):
            add, code, group = route[m.lastgroup]
            if group is None:
                add((m.start(), m.end(), code))
            elif group == "back1":
                add((m.start() - 1, m.end(), code))
            else:
                add((m.start(group), m.end(group), code))
    if set(kinds) & {"record_no", "insurance_no", "resident_id"}:
        for m in _LABEL_RX.finditer(big):
            label, v = m.group("label", "v")
            k = _LABELS[label]
            if k == "resident_id" and len(v) < _MIN_LABELLED[k]:
                k = "record_no"  # ID号：20230012 is a record number, not a resident ID
            if k in kinds and len(v) >= _MIN_LABELLED[k]:
                append((m.start("v"), m.end("v"), _KIND_CODE[k]))
    if "employer" in kinds:
        code = _KIND_CODE["employer"]
        out.extend((m.start("v"), m.end("v"), code) for m in _EMPLOYER_RX.finditer(big))
    if "record_no" in kinds:
        # any other numbered label (体检编号：TJ2023001, 会员号：…): a code holding a digit
        code = _KIND_CODE["record_no"]
        out.extend((m.start("v"), m.end("v"), code) for m in _ANY_NUMBER_LABEL.finditer(big)
                   if any(map(str.isdigit, m.group("v"))))
    fields = {f for f, k in _FIELD_KINDS.items() if k in kinds}
    if fields:
        if "landline" in kinds:
            fields.add("phone")
        # names found as a field's value go to _checked_names marked _FIELD_NAME: the label is
        # their evidence, so no clinical-word check cuts them
        for a, b, f in ids.scan_fields(big, fields, names.field_name_ok):
            if f == "name":
                found_names.append((a, b, _FIELD_NAME))
            else:
                code = _KIND_CODE[_FIELD_KINDS.get(f, f)]
                (addresses if code == address_code else out).append((a, b, code))
    by_recogniser = tuple(k for k in _RECOGNISER_KINDS if k in kinds)
    if by_recogniser:
        out.extend((a, b, _KIND_CODE[k]) for a, b, k in _scan_where_possible(big, by_recogniser))
    if "employer" in kinds:
        code = _KIND_CODE["employer"]
        # (every suffix holds 有限 or 集团: two substring searches spare a scan of the text)
        for m in (_ORG_SUFFIX.finditer(big) if "有限" in big or "集团" in big else ()):
            back = _ORG_BACK.search(big, max(0, m.start() - 16), m.start())
            if back:
                append((back.start(), m.end(), code))
    if "email" in kinds and "@" in big:
        code = _KIND_CODE["email"]
        for m in _EMAIL_DOMAIN.finditer(big):
            local = _run_before(_EMAIL_LOCAL_STOP, big, m.start(), 64)
            if local is not None:
                append((local, m.end(), code))
    if "name" in kinds and ("·" in big or "•" in big):
        for m in re.finditer("[·•]", big):
            dot = m.start()
            back = _DOT_NAME_BEFORE.search(big, max(0, dot - 4), dot)
            fwd = _DOT_NAME_AFTER.match(big, dot + 1)
            if back and fwd:
                found_names.append((back.start(), fwd.end(), name_code))
    return out, found_names, addresses


def _scan_where_possible(big: str, kinds: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """`ids.scan(big, kinds)`, run only over the notes that may hold such an identifier
    (`ids.may_hold`, one RE2 pass): passports, permits, plates or landlines are in few notes,
    and the Python scan for them costs far more than the RE2 test.

    The notes selected are scanned as one string in which each keeps the neighbours it has
    in `big` (a NUL, or the string's start or end), so every look-around and edge test sees
    what it saw there; no pattern matches a NUL, so no match crosses a note."""
    notes = big.split(_SEP)
    keep = np.flatnonzero(ids.may_hold(notes, kinds))
    if len(keep) == len(notes):
        return ids.scan(big, kinds)
    if not len(keep):
        return []
    lengths = np.fromiter((len(t) for t in notes), dtype=np.int64, count=len(notes))
    starts = np.zeros(len(notes), dtype=np.int64)
    starts[1:] = np.cumsum(lengths[:-1] + 1)
    lead = _SEP if keep[0] > 0 else ""
    tail = _SEP if keep[-1] < len(notes) - 1 else ""
    sub = lead + _SEP.join(notes[i] for i in keep) + tail
    sub_starts = np.zeros(len(keep), dtype=np.int64)
    sub_starts[1:] = np.cumsum(lengths[keep][:-1] + 1)
    sub_starts += len(lead)
    found = ids.scan(sub, kinds)
    if not found:
        return []
    at = np.searchsorted(sub_starts, [a for a, _, _ in found], side="right") - 1
    shift = (starts[keep] - sub_starts)[at].tolist()
    return [(a + d, b + d, k) for (a, b, k), d in zip(found, shift)]


# An age in a note: 66岁, 3 周岁, 年龄：66, 年龄 66岁 (months and days of infants too).
# Every age mention when ages are quasi-identifiers: 66岁, 3岁2个月, 8个月, 年龄：66, 年龄66.
# Written with the first digit read before the look-behinds (each one then also reads that
# digit back), so that every alternative starts with [0-9] and `re` skips ahead to digits
# instead of trying all three look-behinds at every character of the chunk: the same
# matches (`_ANY_AGE_PLAIN`, held equal to it in tests) at well under half the cost.
_ANY_AGE_PLAIN = (
    r"(?<![0-9.])[0-9]{1,3} ?(?:周岁|岁(?:[0-9]{1,2}个?月)?|个月)|(?<=年龄[:：])[0-9]{1,3}(?![0-9.])"
    r"|(?<=年龄)[0-9]{1,3}(?![0-9.])")
_ANY_AGE = re.compile(
    r"[0-9](?:(?<![0-9.][0-9])[0-9]{0,2} ?(?:周岁|岁(?:[0-9]{1,2}个?月)?|个月)"
    r"|(?<=年龄[:：][0-9])[0-9]{0,2}(?![0-9.])|(?<=年龄[0-9])[0-9]{0,2}(?![0-9.]))")
_AGE_NUMBER = re.compile(r"[0-9]{1,3}")


def _age_text(span: str, ages: Any) -> str:
    """An age mention replaced: removed ("[年龄]"), or cut to a band of `ages` years (60-69岁;
    90 and over as 90岁以上)."""
    if ages == "remove":
        return "[年龄]"
    m = _AGE_NUMBER.search(span)
    if m is None:
        return "[年龄]"
    width = int(ages)
    if "月" in span and "岁" not in span:  # an infant's months: under one year
        return f"0-{width - 1}岁"
    years = int(m.group())
    if years >= 90:
        return "90岁以上"
    lo = years // width * width
    return f"{lo}-{min(lo + width - 1, 89)}岁"


_ISO_LIKE = re.compile(r"((?:19|20)[0-9]{2})\s?[年\-/.]\s?([0-9]{1,2})\s?[月\-/.]\s?([0-9]{1,2})")
_MONTH_DAY = re.compile(r"([0-9]{1,2})月([0-9]{1,2})[日号]")


def _shift_date(span: str, offset: int) -> str:
    """A date in a note moved by its subject's offset (the same as the structured dates), in
    the spelling it had (2023-06-09, 2023年6月9日, 20230609, 6月9日); a date without a day
    (2023年6月) becomes the placeholder, since it cannot be moved consistently."""
    import datetime as dt

    try:
        if len(span) == 8 and span.isdigit():
            d = dt.date(int(span[:4]), int(span[4:6]), int(span[6:]))
            return (d + dt.timedelta(days=int(offset))).strftime("%Y%m%d")
        m = _ISO_LIKE.search(span)
        if m:
            d = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            n = d + dt.timedelta(days=int(offset))
            if "年" in span:
                return f"{n.year}年{n.month}月{n.day}日"
            sep = next(c for c in span[4:] if c in "-/.")
            if len(m.group(2)) == 2:
                return f"{n.year}{sep}{n.month:02d}{sep}{n.day:02d}"
            return f"{n.year}{sep}{n.month}{sep}{n.day}"
        m = _MONTH_DAY.search(span)
        if m:  # no year: moved within a non-leap year
            n = dt.date(2001, int(m.group(1)), int(m.group(2))) + dt.timedelta(days=int(offset))
            return f"{n.month}月{n.day}日"
    except ValueError:
        pass
    return PLACEHOLDERS["date"]


def _checked_names(big: str, found: _Spans) -> _Spans:
    """The name spans `found` by the detectors checked against the clinical vocabulary
    (患者安返病房 keeps 安返; 王伟高血压 ends at 伟), with the names read by
    `techniques.names` added."""
    code = _KIND_CODE["name"]
    checked = []
    clinical = names.CLINICAL_FIRSTS
    for s, e, k in found:
        if k == _FIELD_NAME:
            checked.append((s, e, code))
        else:
            if not clinical.isdisjoint(big[s:e]):
                e2 = names.plausible(big, s, e)
                if e2 is None:
                    continue
                e = e2
            checked.append((s, e, code))
    checked.extend((s, e, code) for s, e in names.find_names(big))
    checked.extend((s, e, code) for s, e in names.extend_lists(big, [(s, e) for s, e, _ in checked]))
    return checked


def _extend_addresses(big: str, spans: _Spans) -> _Spans:
    """Grow each Chinese address core (中山路123号) of the address `spans` backwards over the
    place words before it (黑龙江省哈尔滨市南岗区), stopping at words that end a sentence
    part (住, 于, 在, ：, ，)."""
    for i, (s, e, k) in enumerate(spans):
        if not big[s].isascii():
            start = _run_before(_ADDRESS_STOP, big, s, 24)
            if start is not None:
                spans[i] = (start, e, k)
    return spans


def _digit_variants(value: str) -> set[str]:
    """How people write a number: plain, lower-case x, grouped 6-8-4 (IDs) or 3-4-4 (mobiles)
    with spaces or dashes, and the other common groupings."""
    v = value.strip()
    lower = v.lower()
    out = {v, lower, v.upper()}
    for bounds in _GROUPS.get(len(v), ()):
        parts = [v[a:b] for a, b in bounds]
        spaced, dashed = " ".join(parts), "-".join(parts)
        out.add(spaced)
        out.add(dashed)
        if lower != v:  # a separator has no case: the groups lower-cased only if v has case
            out.add(spaced.lower())
            out.add(dashed.lower())
    return out


# Where numbers of each length are grouped: 6-8-4 and 6-4-4-4 for IDs, 3-4-4 for mobiles…,
# as (start, end) of each group.
_GROUPS = {
    n: [tuple(zip((0, *cut), (*cut, n))) for cut in cuts]
    for n, cuts in {18: [(6, 14), (6, 10, 14), (3, 6, 14)], 15: [(6, 12)], 11: [(3, 7), (3, 6)],
                    19: [(4, 8, 12, 16)], 16: [(4, 8, 12)]}.items()
}


_CJK = re.compile(r"[\u4e00-\u9fff]")
_ZH_NAME = re.compile(r"[\u4e00-\u9fff·]{2,8}")
_PLACE_PREFIX = re.compile(
    r"(?:" + "|".join(words.PROVINCES) + r")(?:省|市|自治区|壮族自治区|回族自治区|维吾尔自治区|特别行政区)?"
    r"|[\u4e00-\u9fff]{1,7}?(?:市|自治州|州|盟|地区)|[\u4e00-\u9fff]{1,6}?(?:区|县|旗)"
)
_DIGITS_ONLY = re.compile(r"[0-9Xx +\-()]{6,}")


_COMPOUND_RANK = {c: i for i, c in reversed(list(enumerate(words.COMPOUND_SURNAMES)))}
_COMPOUND_LENGTHS = sorted({len(c) for c in words.COMPOUND_SURNAMES})


def _compound_surname(v: str) -> str | None:
    """The first compound surname of the list that `v` starts with (a dictionary look-up per
    surname length rather than a test of each of the 64)."""
    found = [v[:n] for n in _COMPOUND_LENGTHS if v[:n] in _COMPOUND_RANK]
    return min(found, key=_COMPOUND_RANK.__getitem__) if found else None


def _name_variants(value: str) -> set[str]:
    """王小明 → 王小明, 王某, 王某某, 小明 (3+ characters); English Maude482 Wunsch504 →
    the whole, each part of 3+ letters, and each without its trailing digits."""
    v = value.strip()
    out = {v}
    if _CJK.search(v):
        surname = _compound_surname(v) or v[0]
        given = v[len(surname):]
        out |= {surname + "某", surname + "某某"}
        if len(given) >= 2:
            out.add(given)
        return out
    for part in re.split(r"[\s,]+", v):
        bare = part.rstrip("0123456789")
        out |= {p for p in (part, bare) if len(p) >= 3}
    return out


def _address_variants(value: str) -> set[str]:
    """The address, and the same without its leading province, city and district words (notes
    often drop them), as long as what is left still holds a street or a number."""
    v = value.strip()
    out = {v}
    rest = v
    for _ in range(3):
        m = _PLACE_PREFIX.match(rest)
        if not m or m.end() == len(rest):
            break
        rest = rest[m.end():]
        if re.search(r"[0-9路街巷弄号村]", rest) and len(rest) >= 4:
            out.add(rest)
    return out


# The shapes that decide a known value's kind when its column's name does not.
_NO_GROUPING = str.maketrans("", "", " -")
_ID_SHAPE = re.compile(r"[0-9]{17}[0-9Xx]|[0-9]{15}")
_MOBILE_SHAPE = re.compile(r"(?:\+?86)?1[3-9][0-9]{9}")
_SSN_SHAPE = re.compile(r"[0-9]{3}-[0-9]{2}-[0-9]{4}")
_ADDRESS_HINT = re.compile(r"[路街巷弄]|[0-9]号")


def known_variants(kind: str, value: str) -> tuple[str, set[str]]:
    """(span kind, the strings to look for) for one known identifier of a subject. The kind
    of the structured column is used where it is a scrub kind (name, mobile…); otherwise the
    value's shape decides."""
    v = ids.fold(str(value)).strip()
    compact = v.translate(_NO_GROUPING)
    k = _known_kind(kind, v, compact)
    return k, _spellings(k, v, compact)


def _known_kind(kind: str, v: str, compact: str) -> str:
    """The span kind of known value `v` (folded, stripped; `compact` without spaces and
    dashes) of structured column kind `kind`."""
    if kind in _KIND_CODE:
        return kind
    if "@" in v:
        return "email"
    if _ID_SHAPE.fullmatch(compact):
        return "resident_id"
    if _MOBILE_SHAPE.fullmatch(compact):
        return "mobile"
    if _SSN_SHAPE.fullmatch(v):
        return "ssn"
    if "name" in kind.lower() or kind.upper() in {"FIRST", "LAST", "MAIDEN"} or _ZH_NAME.fullmatch(v):
        return "name"
    if "addr" in kind.lower() or _ADDRESS_HINT.search(v):
        return "address"
    return "other"


def _spellings(k: str, v: str, compact: str) -> set[str]:
    """The strings to look for of known value `v` of span kind `k` (see known_variants)."""
    if k == "name":
        found = _name_variants(v)
    elif k == "address":
        found = _address_variants(v)
    elif _DIGITS_ONLY.fullmatch(v) and len(compact) >= 6:
        found = _digit_variants(compact) | {v}
        if k == "mobile" and compact.startswith("86") and len(compact) == 13:
            found |= _digit_variants(compact[2:])
    else:
        found = {v}
    # Single characters and very short strings would scrub ordinary words.
    return {f for f in found if len(f) >= 2 and not (f.isdigit() and len(f) < 6)}


# How a subject's own value is tested against a text before its spellings are made (see
# _KnownTable).
_NEED_ALWAYS, _NEED_IN, _NEED_EITHER, _NEED_DIGITS = range(4)
_VAGUE = "某"  # 王某: a surname with "somebody" for the given name


def _longest_first(entry: tuple[str, int, str]) -> int:
    return -len(entry[0])


class _KnownTable:
    """A column's known values. `subjects`: subject id → the indices of its own values (in
    the order of the known table); `everyone`: the variants searched in every note, longest
    first. Own value i (shared by every subject that has it) is `tests[i]` = (test, needle,
    other needle) and `values[i]` = (span kind, folded value, compact value, kind code,
    canonical value); its spellings are made the first time a text passes its test, then
    kept in `spelling[i]` (those without 某) and `vague[i]` (王某, 王某某: looked for only in a
    text that holds 某; a short needle starting with a common surname is a slow scan, and
    most notes hold no 某). Tuples, not an object or a list per value: the garbage collector
    stops walking a tuple of strings and numbers, while it walks every list and object on
    each full collection.

    Each test is necessary by construction of the variant functions, so a value that fails it
    has none of its spellings in the text:
    - a number (`_digit_variants`): every spelling is `compact` (for a mobile written with
      86 before it, 8613812345678, also `compact[2:]`), the value `v` itself included, with
      " " or "-" put in and/or its case changed, so the text with " " and "-" removed and X
      as x holds `compact[2:]` (that mobile: it is inside `compact`) or `compact`, with X as
      x (its only letter);
    - an address (`_address_variants`): every spelling is the value or a suffix of it of 4+
      characters, so all end in `v[-4:]` (the value itself when shorter);
    - a Chinese name (`_name_variants`): the whole, surname + 某/某某 (the surname, compound or
      not, starts with `v[0]`) and the given name (a suffix of `v`, so ending in `v[-1]`);
    - any other value: its one spelling, itself;
    - an English name's parts are not tested (each part is a spelling): always made."""

    __slots__ = ("subjects", "everyone", "tests", "values", "spelling", "vague")

    def __init__(self) -> None:
        self.subjects: dict[str, tuple[int, ...]] = {}
        self.everyone: list[tuple[str, int, str]] = []
        self.tests: list[tuple[int, str, str]] = []
        self.values: list[tuple[str, str, str, int, str]] = []
        self.spelling: list[tuple[tuple[str, int, str], ...] | None] = []
        self.vague: list[tuple[tuple[str, int, str], ...]] = []

    def add(self, kind: str, value: str, everyone: bool) -> int:
        """Index of a new value `value` of structured column kind `kind`."""
        v = ids.fold(value).strip()
        compact = v.translate(_NO_GROUPING)
        k = _known_kind(kind, v, compact)
        need, needle, other = _NEED_ALWAYS, "", ""
        if everyone:
            pass
        elif k == "name":
            if _CJK.search(v):
                need, needle, other = _NEED_EITHER, v[0], v[-1]
        elif k == "address":
            need, needle = _NEED_IN, v[-4:]
        elif _DIGITS_ONLY.fullmatch(v) and len(compact) >= 6:
            plus86 = k == "mobile" and compact.startswith("86") and len(compact) == 13
            need, needle = _NEED_DIGITS, (compact[2:] if plus86 else compact).replace("X", "x")
        else:
            need, needle = _NEED_IN, v
        self.tests.append((need, needle, other))
        self.values.append((k, v, compact, _KIND_CODE[k], value.strip()))
        self.spelling.append(None)
        self.vague.append(())
        i = len(self.values) - 1
        if everyone:
            # in every note only the whole value (and its spellings): 王某 or a given name
            # alone of some doctor would scrub words in everybody's notes
            variants = {v} if k == "name" else {x for x in _spellings(k, v, compact) if len(x) >= len(compact)}
            self.spelling[i] = self._entries(i, variants)
        return i

    def _entries(self, i: int, variants: set[str]) -> tuple[tuple[str, int, str], ...]:
        # longest first (stable): the order the whole subject's entries are searched in
        _, _, _, code, canonical = self.values[i]
        return tuple([(var, code, canonical) for var in sorted(variants, key=len, reverse=True)])

    def spelled(self, i: int) -> tuple[tuple[str, int, str], ...]:
        """Value i's (variant, kind code, canonical value) without 某, longest first (those
        with 某 then in `vague[i]`)."""
        entries = self.spelling[i]
        if entries is None:
            k, v, compact, _, _ = self.values[i]
            found = _spellings(k, v, compact)
            if _SEP in v:
                # none holds _SEP (no note does): the run of a subject's notes is searched
                # as one text joined by it (`_detect`); a spelling holds _SEP only if `v` does
                found = {x for x in found if _SEP not in x}
            entries = self._entries(i, found)
            vague = tuple([t for t in entries if _VAGUE in t[0]])
            if vague:
                self.vague[i] = vague
                entries = tuple([t for t in entries if _VAGUE not in t[0]])
            self.spelling[i] = entries
        return entries


def _known_table(known: pd.DataFrame | None) -> _KnownTable:
    """The known values per subject, each with its necessary test; spellings are made only
    for the values a text passes the test for (`_KnownTable`)."""
    table = _KnownTable()
    if known is None or not len(known):
        return table
    frame = known.dropna(subset=["subject_id", "value"]).drop_duplicates(["subject_id", "kind", "value"])
    # one value recurs under many subjects (an attending doctor of thousands of patients):
    # it is prepared, and spelled, once
    made: dict[tuple[str, str, bool], int] = {}
    subjects: dict[str, list[int]] = {}
    add = table.add
    for sid, kind, value in zip(frame["subject_id"].astype(str).tolist(), frame["kind"].astype(str).tolist(),
                                frame["value"].astype(str).tolist()):
        everyone = sid == EVERYONE
        i = made.get((kind, value, everyone))
        if i is None:
            i = made[(kind, value, everyone)] = add(kind, value, everyone)
        values = subjects.get(sid)
        if values is None:
            subjects[sid] = [i]
        else:
            values.append(i)
    table.subjects = {sid: tuple(own) for sid, own in subjects.items()}
    glob = subjects.get(EVERYONE)
    if glob:
        table.everyone = sorted((t for i in glob for t in table.spelled(i)), key=_longest_first)
    return table


EVERYONE = "*"
"""subject_id of the known values searched in every note (staff, contacts of any subject)."""
EVERYONE_MAX = 20_000
"""Most distinct values searched in every note (one `known_values.ValueSet`; a large
hospital's staff list is well within it). The gate looks for every one of them in every released note
(`release.validate.known_values`), so the scrubber must too: a doctor of one patient is named
in another patient's note, and a two-character name can stand inside ordinary words. Past the
cap, other tables' values are known for their own subject's notes only, and the gate refuses a
release where one is left elsewhere."""


@lru_cache(maxsize=8)
def _everyone_values(entries: tuple[tuple[str, int], ...]) -> tuple[known_values.ValueSet, dict[str, int]]:
    """The values known for every note, prepared once per set, and each one's kind code."""
    codes = {v: c for v, c in entries}
    return known_values.ValueSet(codes), codes


def known_from_tables(known: pd.DataFrame, policy: Any, read: Any, index: int, partitions: int) -> pd.DataFrame:
    """`known` (the subject table's values per subject) with every direct identifier of every
    other table of the release: per subject from this partition's rows (`read(table, columns,
    partition)`), and, while there are at most EVERYONE_MAX distinct values over all
    partitions, for every note (`EVERYONE`): the attending doctor of one patient is named in
    another patient's note."""
    parts = [known]
    everyone: dict[str, str] = {}
    for name, tspec in policy.tables.items():
        if name == policy.subject_table:
            continue
        cols = [c for c, cs in tspec.columns.items() if cs.role is Role.direct_identifier]
        if not cols:
            continue
        link = tspec.subject_column
        frame = read(name, [link, *cols], index)
        for col in cols:
            part = pd.DataFrame({"subject_id": frame[link].astype("string"), "kind": col,
                                 "value": frame[col].astype("string")}).dropna()
            parts.append(part.drop_duplicates())
        for i in range(partitions):
            if len(everyone) > EVERYONE_MAX:
                break
            other = frame if i == index else read(name, cols, i)
            for col in cols:
                for v in other[col].dropna().astype(str).unique():
                    everyone.setdefault(v, col)
    if 0 < len(everyone) <= EVERYONE_MAX:
        parts.append(pd.DataFrame({"subject_id": EVERYONE, "kind": list(everyone.values()),
                                   "value": list(everyone)}))
    return pd.concat(parts, ignore_index=True).astype("string")


def _find_all(text: str, needle: str, offset: int, code: int, out: list, canon: list | None,
              canonical: str | None) -> None:
    """Every occurrence of `needle`; a number only where it is not part of a longer number
    (a postcode 100020 inside 2100020 is not that postcode)."""
    numeric = needle[0].isdigit() or needle[-1].isdigit()
    n = len(needle)
    i = text.find(needle)
    while i >= 0:
        if not numeric or not ((i > 0 and text[i - 1].isdigit() and needle[0].isdigit())
                               or (i + n < len(text) and text[i + n].isdigit() and needle[-1].isdigit())):
            out.append((offset + i, offset + i + n, code))
            if canon is not None:
                canon.append((offset + i, canonical))
        i = text.find(needle, i + 1)


def detect_spans(
    texts: list[str],
    kinds: Iterable[str] = DETECTORS,
    subject_ids: list[str] | None = None,
    known: pd.DataFrame | None = None,
    *,
    table: _KnownTable | None = None,
    all_ages: bool = False,
) -> pd.DataFrame:
    """Every identifier span in `texts`, merged: columns row, start, end (offsets in the
    note), kind, canonical (the structured value a known match stands for, else None).

    `known` is the long table (subject_id, kind, value) of each subject's own identifiers
    and `subject_ids` says whose note each text is; both are needed for the `known` kind.
    `table` is `known` prepared by `_known_table` (scrub_texts builds it once per column).
    """
    return _detect(texts, kinds, subject_ids, known, table=table, all_ages=all_ages)[0]


def _detect(
    texts: list[str],
    kinds: Iterable[str],
    subject_ids: list[str] | None,
    known: pd.DataFrame | None,
    *,
    table: _KnownTable | None,
    all_ages: bool,
) -> tuple[pd.DataFrame, str, str, np.ndarray]:
    """`detect_spans`, also returning the joined notes, the folded text the detectors read
    and each note's offset in them (the replacement reuses them rather than joining and
    folding the chunk again)."""
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in DETECTORS]
    if bad:
        raise PolicyError(f"unknown scrub detector kind(s) {bad}", fix=f"use some of: {', '.join(DETECTORS)}")
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    starts = np.zeros(len(texts), dtype=np.int64)
    if len(texts) > 1:
        starts[1:] = np.cumsum(lengths[:-1] + 1)
    # Matched on the folded text (full-width digits, odd spaces and dashes as ASCII): the fold
    # keeps every character's offset, so the spans are offsets in the original notes.
    joined = _SEP.join(texts)
    big = ids.fold(joined)
    if big is not joined:
        texts = big.split(_SEP)
    spans, found_names, addresses = _generic_spans(big, tuple(k for k in kinds if k != "known"))
    if all_ages:  # ages are quasi-identifiers: every one, not only those over 89
        code = _KIND_CODE["age"]
        spans.extend((m.start(), m.end(), code) for m in _ANY_AGE.finditer(big))
    if "address" in kinds:
        addresses = _extend_addresses(big, addresses)
    spans.extend(addresses)
    if "name" in kinds:
        found_names = _checked_names(big, found_names)
    spans.extend(found_names)

    # A name found in context is a name wherever else it occurs in the same note.
    name_code = _KIND_CODE["name"]
    if "name" in kinds:
        found: dict[int, set[str]] = {}
        name_spans = [(s, e) for s, e, _ in found_names if e - s >= 2]
        rows_of = np.searchsorted(starts, [s for s, _ in name_spans], side="right") - 1
        for row, (s, e) in zip(rows_of.tolist(), name_spans):
            found.setdefault(row, set()).add(big[s:e])
        append = spans.append
        for row, names in found.items():
            text, off = texts[row], int(starts[row])
            for name in names:
                if name[0].isdigit() or name[-1].isdigit():
                    _find_all(text, name, off, name_code, spans, None, None)
                    continue
                n = len(name)
                i = text.find(name)
                while i >= 0:  # _find_all for a needle without digit ends, inline: one per name
                    append((off + i, off + i + n, name_code))
                    i = text.find(name, i + 1)

    canon: list[tuple[int, str]] = []
    if "known" in kinds and subject_ids is not None and (known is not None or table is not None):
        if table is None:
            table = _known_table(known)
        glob = table.everyone
        if glob:
            everyone, codes = _everyone_values(tuple((v, c) for v, c, _ in glob))
            for a, b, v in everyone.find(big):
                # a number only where it is not part of a longer number
                if v[0].isdigit() and ((a > 0 and big[a - 1].isdigit()) or (b < len(big) and big[b].isdigit())):
                    continue
                spans.append((a, b, codes[v]))
        offsets = starts.tolist()
        ends = (starts + lengths).tolist()
        append, canon_append = spans.append, canon.append
        subjects, tests, spelling, vagues, spelled = (table.subjects, table.tests, table.spelling,
                                                      table.vague, table.spelled)
        keys = [sid if isinstance(sid, str) else str(sid) for sid in subject_ids]
        rows, row = len(keys), 0
        while row < rows:
            # A subject's notes stand together in a release (about three at 1M subjects):
            # each run of them is searched as one text, their stretch of `big` (joined by
            # _SEP, which no spelling holds, so nothing is found across two notes, and a
            # number's neighbour at a note's edge is _SEP, not a digit, as in the note alone).
            sid, first = keys[row], row
            row += 1
            while row < rows and keys[row] == sid:
                row += 1
            owns = subjects.get(sid)
            if not owns:
                continue
            off = offsets[first]
            text = big[off:ends[row - 1]]
            # Only the values that pass their necessary test (`_KnownTable`) are spelled and
            # searched; the spellings present, longest first (stable), are the subsequence
            # of the subject's full longest-first list that is in the text.
            squeezed = vague = None
            present: list[tuple[str, int, str]] = []
            for i in owns:
                need, needle, other = tests[i]
                if need == _NEED_IN:
                    if needle not in text:
                        continue
                elif need == _NEED_DIGITS and needle not in text:
                    if squeezed is None:
                        squeezed = text.replace(" ", "").replace("-", "").replace("X", "x")
                    if needle not in squeezed:
                        continue
                elif need == _NEED_EITHER:
                    if needle not in text and other not in text:
                        continue
                entries = spelling[i]
                if entries is None:
                    entries = spelled(i)
                present += [t for t in entries if t[0] in text]
                if vagues[i]:
                    if vague is None:
                        vague = _VAGUE in text
                    if vague:
                        present += [t for t in vagues[i] if t[0] in text]
            if len(present) > 1:
                present.sort(key=_longest_first)
            for variant, code, canonical in present:
                n = len(variant)
                i = text.find(variant)
                head, tail = variant[0].isdigit(), variant[-1].isdigit()
                while i >= 0:  # _find_all, inline: a number not inside a longer number
                    if not ((head and i > 0 and text[i - 1].isdigit())
                            or (tail and i + n < len(text) and text[i + n].isdigit())):
                        append((off + i, off + i + n, code))
                        canon_append((off + i, canonical))
                    i = text.find(variant, i + 1)
    return _merge(spans, starts, canon), joined, big, starts


def _merge(spans: list[tuple[int, int, int]], starts: np.ndarray,
           canon: list[tuple[int, str]]) -> pd.DataFrame:
    """Union of overlapping spans (vectorised). Each merged span takes the kind of its longest
    member (ties: the earlier kind in PLACEHOLDERS) and the canonical value of a known match
    starting where it starts, if any."""
    cols = ["row", "start", "end", "kind", "canonical"]
    if not spans:
        return pd.DataFrame({c: pd.Series([], dtype="int64" if c in cols[:3] else "object") for c in cols})
    # from one flat iterator: np.asarray over a list of tuples is several times slower
    arr = np.fromiter(chain.from_iterable(spans), dtype=np.int64, count=3 * len(spans)).reshape(-1, 3)
    order = np.lexsort((-arr[:, 1], arr[:, 0]))
    s, e, k = arr[order, 0], arr[order, 1], arr[order, 2]
    reach = np.maximum.accumulate(e)
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] >= reach[:-1]
    group = np.cumsum(new, dtype=np.int64) - 1  # (int64 asked for: a bool sum casts slowly)
    n = int(group[-1]) + 1
    g_start = s[new]
    g_end = np.zeros(n, dtype=np.int64)
    np.maximum.at(g_end, group, e)
    # longest member per group (then lowest kind code)
    score = (e - s) * 64 - k
    best = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(best, group, score)
    is_best = score == best[group]
    g_kind = np.empty(n, dtype=np.int64)
    g_kind[group[is_best][::-1]] = k[is_best][::-1]
    row = np.searchsorted(starts, g_start, side="right") - 1
    out = pd.DataFrame({"row": row, "start": g_start - starts[row], "end": g_end - starts[row],
                        "kind": np.asarray(KINDS, dtype=object)[g_kind]})
    canonical = np.full(n, None, dtype=object)
    if canon:
        # the first canonical value recorded at each position, for the groups starting there
        pos = np.fromiter((p for p, _ in canon), dtype=np.int64, count=len(canon))
        values = np.empty(len(canon), dtype=object)
        values[:] = [v for _, v in canon]
        at, first = np.unique(pos, return_index=True)
        j = np.minimum(np.searchsorted(at, g_start), len(at) - 1)
        hit = at[j] == g_start
        canonical[hit] = values[first[j[hit]]]
    out["canonical"] = pd.Series(canonical, dtype=object)
    return out


# --- replacement ------------------------------------------------------------------------------

MODES = ("placeholder", "pseudonym", "generalise")
GENERALISABLE = ("date", "address")
DATE_LEVELS = ("keep", "month", "year", "placeholder", "pseudonym", "shift")

_DATE_PARTS = re.compile(r"((?:19|20)[0-9]{2})\s?[年\-/.]\s?([0-9]{1,2})|(?<![0-9])([0-9]{1,2})月")
_CITY = re.compile(
    r"(?:" + "|".join(sorted(words.PROVINCES, key=len, reverse=True)) + r")"
    r"(?:省|市|壮族自治区|回族自治区|维吾尔自治区|自治区|特别行政区)?"
    r"(?:[^区县旗路街巷弄号0-9\s]{1,6}?(?:市|自治州|州|盟|地区))?"
)


def _generalise_date(span: str, level: str) -> str:
    """2025-03-07 → 2025-03 (month) or 2025 (year); 2025年3月7日 → 2025年3月 or 2025年;
    3月7日 → 3月 (month; a year cannot be given). Unparsed forms become the placeholder."""
    if len(span) == 8 and span.isdigit():  # 20230609
        year, month = span[:4], int(span[4:6])
        return year if level == "year" else f"{year}-{month:02d}"
    m = _DATE_PARTS.search(span)
    if m is None:
        return PLACEHOLDERS["date"]
    year, month, month_only = m.group(1), m.group(2), m.group(3)
    if year is None:
        return f"{int(month_only)}月" if level == "month" else PLACEHOLDERS["date"]
    zh = "年" in span
    if level == "year":
        return f"{year}年" if zh else year
    return f"{year}年{int(month)}月" if zh else f"{year}-{int(month):02d}"


def _generalise_address(span: str) -> str:
    """黑龙江省哈尔滨市南岗区中山路123号 → 黑龙江省哈尔滨市 (the province and city only);
    an address without a recognisable province becomes the placeholder."""
    m = _CITY.match(span)
    if m is None or m.end() == len(span):
        return PLACEHOLDERS["address"]
    return m.group(0)


_NUMBER_KINDS = frozenset(("resident_id", "mobile", "landline", "bank_card", "ssn", "insurance_no", "record_no"))
_GROUPING = re.compile(r"[\s\-()（）+]")


def _normalise(kind: str, text: str) -> str:
    """One spelling per value, so that 138-1234-5678 and +86 13812345678 get one pseudonym."""
    if kind in _NUMBER_KINDS:
        compact = _GROUPING.sub("", text).upper()
        if kind == "mobile" and len(compact) == 13 and compact.startswith("86"):
            compact = compact[2:]
        if kind == "mobile" and len(compact) == 15 and compact.startswith("0086"):
            compact = compact[4:]
        return compact
    if kind == "email":
        return text.lower()
    return text.strip()


# Hex digits spelled as the letters a-p: a label holds no digit run, so it can never contain a
# known postcode or number that the validation gate looks for as a substring.
_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


def _pseudonym_labels(kinds: list[str], values: list[str], key: bytes) -> list[str]:
    """`[姓名-djpkamebncgh]`: the kind's placeholder with 48 bits of HMAC-SHA256 under the
    scrub key (hex, spelled with the letters a-p); two of a million distinct values share a
    label with probability about 0.2 %, and a shared label only joins two mentions in text. Typed, so a reader knows what was there; keyed, so nobody without the key
    can test a guessed name or ID against it; never a realistic surrogate name, which could be
    some other real person's name."""
    from deidflow.techniques.pseudonymise import hmac_digests

    if not values:
        return []
    uniq = sorted(set(zip(kinds, values)))
    digests = hmac_digests(key, [f"{k}\x1f{v}" for k, v in uniq])
    label = {
        kv: f"[{PLACEHOLDERS[kv[0]][1:-1]}-{digests[32 * i:32 * i + 6].hex().translate(_LETTERS)}]"
        for i, kv in enumerate(uniq)
    }
    return [label[kv] for kv in zip(kinds, values)]


def scrub_texts(
    texts: pd.Series,
    *,
    kinds: Iterable[str] = DETECTORS,
    replace: Mapping[str, str] | str = "placeholder",
    dates: str | None = None,
    subject_ids: pd.Series | None = None,
    known: pd.DataFrame | None = None,
    key: bytes | None = None,
    ages: Any = "keep",
    date_offsets: np.ndarray | None = None,
) -> tuple[pd.Series, dict[str, int]]:
    """Scrubbed copy of `texts` (nulls stay null) and the number of spans replaced per kind.

    `replace` is one mode for every kind or a mapping kind → mode (with an optional
    `default`); `dates` (month, year, placeholder, pseudonym, keep, shift) overrides the
    mode for dates; `shift` moves each date by the row's `date_offsets` (days). `ages`: keep
    (only those over 89 become "[90岁以上]"), remove, or a band width in years. `key` is
    needed when any kind is pseudonymised.
    """
    if dates == "shift" and date_offsets is None:
        raise PolicyError("dates: shift needs each note's date offset",
                          fix="run the scrubber inside a release (it passes the subject's offset), "
                          "or choose dates: month, year or placeholder")
    modes = _modes(replace, dates)
    kinds = tuple(k for k in kinds if not (k == "date" and dates == "keep"))
    present = texts.notna().to_numpy()
    column = texts.astype("string")
    sids = None if subject_ids is None else subject_ids.astype("string").fillna("").tolist()
    table = _known_table(known) if "known" in kinds and sids is not None else None
    # Python strings only for CHUNK notes at a time, in and out: each scrubbed chunk becomes
    # Arrow text at once, so a million-note column is never held as Python strings whole
    parts: list[pa.Array] = []
    counts: dict[str, int] = {}
    for lo in range(0, len(column), CHUNK):
        values = column.iloc[lo:lo + CHUNK].fillna("").tolist()
        if any(_SEP in v for v in values):
            raise InputError(
                "a text holds a NUL character, which the scrubber uses as a note separator",
                column=str(texts.name) if texts.name is not None else None,
                fix="remove NUL characters from the free-text column before the release",
            )
        part, part_counts = _scrub_chunk(
            values, None if sids is None else sids[lo:lo + CHUNK], kinds, modes,
            dates, table, key, texts.name, ages,
            None if date_offsets is None else np.asarray(date_offsets)[lo:lo + CHUNK],
        )
        parts.append(pa.array(part, type=pa.large_string(), mask=~present[lo:lo + CHUNK]))
        del values, part
        for kind, n in part_counts.items():
            counts[kind] = counts.get(kind, 0) + n
    dtype = texts.dtype if isinstance(texts.dtype, pd.StringDtype) else column.dtype
    out = pd.array(pa.chunked_array(parts, type=pa.large_string()), dtype=dtype)
    return pd.Series(out, index=texts.index, name=texts.name), counts


def _scrub_chunk(
    values: list[str],
    sids: list[str] | None,
    kinds: tuple[str, ...],
    modes: dict[str, str],
    dates: str | None,
    table: _KnownTable | None,
    key: bytes | None,
    column: Any,
    ages: Any = "keep",
    shifts: np.ndarray | None = None,
) -> tuple[list[str], dict[str, int]]:
    """One chunk of notes scrubbed: detection, replacement texts, one pass of slicing."""
    spans, big, folded, offsets = _detect(values, kinds, sids, None, table=table, all_ages=ages != "keep")
    counts = {str(k): int(n) for k, n in spans["kind"].value_counts().items()}
    if spans.empty:
        return values, counts
    # `folded` is what the detectors read; the replacement slices the original `big`, in
    # order (as _merge gives them: sorted only where they are not)
    at_start = offsets[spans["row"].to_numpy()] + spans["start"].to_numpy()
    if len(at_start) > 1 and (at_start[1:] < at_start[:-1]).any():
        spans = spans.sort_values(["row", "start"], kind="stable")
        at_start = offsets[spans["row"].to_numpy()] + spans["start"].to_numpy()
    g_start = at_start.tolist()
    g_end = (offsets[spans["row"].to_numpy()] + spans["end"].to_numpy()).tolist()
    span_kinds = spans["kind"].to_numpy(dtype=object)
    span_rows = spans["row"].tolist()
    repl = np.empty(len(span_kinds), dtype=object)
    pseudo_at = []
    # The replacement depends on the span's kind and the settings: decided once per kind,
    # then written for all its spans at once (typed placeholders need no span text at all).
    def moved(i: int) -> str:
        """Span i's text, shifted by its subject's offset where the dates are shifted."""
        text = folded[g_start[i]:g_end[i]]
        return text if shifts is None else _shift_date(text, int(shifts[span_rows[i]]))

    def per_value(at: np.ndarray, fn: Any) -> None:
        # fn(span text) written for every span of `at`, computed once per distinct text (an
        # address or a date recurs across a patient's notes)
        codes, uniq = pd.factorize(np.asarray([folded[g_start[i]:g_end[i]] for i in at.tolist()], dtype=object))
        repl[at] = np.asarray([fn(u) for u in uniq], dtype=object)[codes]

    def cut_dates(at: np.ndarray, level: str) -> None:
        # beside shifted structured dates, shifted first: the month of the shifted date
        # (note_consistency.note_dates), never the true one
        if shifts is None:
            per_value(at, lambda t: _generalise_date(t, level))
        else:
            repl[at] = [_generalise_date(moved(i), level) for i in at]

    for kind in pd.unique(span_kinds):
        at = np.flatnonzero(span_kinds == kind)
        mode = modes.get(kind, modes["default"])
        if kind == "age" and ages != "keep":
            per_value(at, lambda t: _age_text(t, ages))
        elif kind == "date" and dates == "shift" and shifts is not None:
            repl[at] = [moved(i) for i in at]
        elif kind == "date" and dates in ("month", "year"):
            cut_dates(at, dates)
        elif mode == "generalise" and kind == "address":
            per_value(at, _generalise_address)
        elif mode == "generalise" and kind == "date":
            cut_dates(at, "month")
        elif mode == "pseudonym":
            pseudo_at.append(at)
        else:
            repl[at] = PLACEHOLDERS[kind]
    if pseudo_at:
        if key is None:
            raise KeyCustodyError(
                "pseudonyms in free text need the key ring", column=str(column),
                fix="pass the KeyRing in the ApplyContext, or use replace: placeholder",
            )
        canonicals = spans["canonical"].to_numpy(dtype=object)
        for at in pseudo_at:
            kind = span_kinds[at[0]]
            # the structured value a known match stands for, else the span's own text; each
            # distinct one normalised and keyed once (a name recurs in every sentence)
            raw = canonicals[at]
            bare = np.flatnonzero(pd.isna(raw))
            raw[bare] = [folded[g_start[i]:g_end[i]] for i in at[bare].tolist()]
            codes, uniq = pd.factorize(raw)
            labels = _pseudonym_labels([kind] * len(uniq), [_normalise(kind, u) for u in uniq], key)
            repl[at] = np.asarray(labels, dtype=object)[codes]

    # the text between spans and the replacements, interleaved
    pieces: list[str] = [""] * (2 * len(g_start) + 1)
    pieces[0::2] = [big[a:b] for a, b in zip([0, *g_end], [*g_start, len(big)])]
    pieces[1::2] = repl.tolist()
    return "".join(pieces).split(_SEP), counts


def _modes(replace: Mapping[str, str] | str, dates: str | None) -> dict[str, str]:
    if isinstance(replace, str):
        modes = {"default": replace}
    else:
        modes = {"default": "placeholder", **dict(replace)}
    if dates in ("placeholder", "pseudonym"):
        modes["date"] = dates
    return modes


def date_cut(p: Mapping[str, Any]) -> str | None:
    """The level a scrub column cuts its dates to (month or year; `replace` generalise on
    dates is the month), or None where it keeps, shifts or replaces them whole. Such a column
    with `shift_days` shifts each date first (`note_consistency.note_dates`)."""
    dates = p.get("dates")
    if dates in ("month", "year"):
        return dates
    if dates is None:
        modes = _modes(p.get("replace", "placeholder"), None)
        return "month" if modes.get("date", modes["default"]) == "generalise" else None
    return None


# --- the technique ----------------------------------------------------------------------------


def _not_covered(p: Mapping[str, Any]) -> list[str]:
    """Quasi-identifiers a scrubbed note may still carry, which the risk the manifest claims
    (computed on the structured quasi-identifiers) does not count: said plainly."""
    out = ["sex words (男, 女) and the clinical content of the notes"]
    if p.get("ages", "keep") == "keep":
        out.append("ages under 90 as written (set params.ages: remove or a band width)")
    elif p.get("ages") != "remove":
        out.append(f"ages in {p['ages']}-year bands")
    cut = date_cut(p)
    if cut is not None and "shift_days" in p:
        out.append(f"the {cut} of dates shifted by each subject's offset, as the structured dates")
    elif cut is not None:
        out.append(f"the true {cut} of dates (not shifted: set params.dates: shift)")
    elif p.get("dates") in (None, "keep"):
        out.append("dates as written")
    elif p.get("dates") == "shift":
        out.append("dates shifted by each subject's offset, as the structured dates")
    return out


class Scrub(Technique):
    """Find identifiers in free text and replace each span (placeholder, keyed pseudonym, or a
    generalised value), matching every note against its own subject's known identifiers.

    Parameters: `replace` (placeholder | pseudonym | generalise, or a mapping kind → mode
    with an optional `default`; only dates and addresses can be generalised, so a default of
    generalise leaves the other kinds as placeholders), `dates` (month | year | placeholder |
    pseudonym | keep), `kinds` (the detectors to run, default all of DETECTORS), `scope` (the
    pseudonym key's scope, default "scrub": text pseudonyms are unlinkable to the id columns').
    """

    name = "scrub"
    roles = frozenset({Role.free_text})
    allowed_params = frozenset({"replace", "dates", "kinds", "scope", "ages", "shift_days", "shift_scope"})

    def check(self, column: str, spec: Column) -> None:
        super().check(column, spec)
        p = spec.params
        replace = p.get("replace", "placeholder")
        if isinstance(replace, str):
            items = {"default": replace}
        elif isinstance(replace, Mapping):
            items = dict(replace)
        else:
            raise PolicyError(
                f"column '{column}': params.replace must be a mode or a mapping kind → mode",
                fix="e.g. replace: placeholder, or replace: {name: pseudonym, default: placeholder}",
            )
        for kind, mode in items.items():
            if kind != "default" and kind not in KINDS:
                raise PolicyError(
                    f"column '{column}': params.replace names unknown kind {kind!r}",
                    fix=f"kinds: {', '.join(KINDS)} (or default)",
                )
            if mode not in MODES:
                raise PolicyError(
                    f"column '{column}': params.replace.{kind} must be one of {', '.join(MODES)} "
                    f"(got {mode!r})",
                    fix="placeholder ([姓名]), pseudonym (keyed, consistent) or generalise",
                )
            if mode == "generalise" and kind not in (*GENERALISABLE, "default"):
                raise PolicyError(
                    f"column '{column}': {kind} cannot be generalised, only "
                    f"{' and '.join(GENERALISABLE)} can",
                    fix=f"use placeholder or pseudonym for {kind}",
                )
        dates = p.get("dates")
        if dates is not None and dates not in DATE_LEVELS:
            raise PolicyError(
                f"column '{column}': params.dates must be one of {', '.join(DATE_LEVELS)} "
                f"(got {dates!r})",
                fix="dates: month (2025-03-07 → 2025-03) or year, placeholder, pseudonym, keep",
            )
        kinds = p.get("kinds", list(DETECTORS))
        if (not isinstance(kinds, list) or not kinds
                or any(not isinstance(k, str) or k not in DETECTORS for k in kinds)):
            raise PolicyError(
                f"column '{column}': params.kinds must be a non-empty list of detector kinds "
                f"(got {kinds!r})",
                fix=f"choose from: {', '.join(DETECTORS)}; omit it for all",
            )
        scope = p.get("scope", "scrub")
        if not isinstance(scope, str) or not scope.strip():
            raise PolicyError(
                f"column '{column}': params.scope must be a non-empty string",
                fix="omit it (scrub) or name the pseudonym scope, e.g. scope: notes",
            )
        ages = p.get("ages", "keep")
        if ages not in ("keep", "remove") and not (isinstance(ages, int) and not isinstance(ages, bool)
                                                  and 1 <= ages <= 50):
            raise PolicyError(
                f"column '{column}': params.ages must be keep, remove or a band width in years "
                f"(got {ages!r})",
                fix="ages: remove (every age becomes [年龄]) or e.g. ages: 10 (66岁 → 60-69岁)",
            )
        if dates == "shift" or (date_cut(p) is not None and "shift_days" in p):
            days = p.get("shift_days")
            if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650:
                raise PolicyError(
                    f"column '{column}': dates: shift needs params.shift_days, the max_days of the "
                    "structured dates' date_shift (the same offset moves both)",
                    fix="e.g. dates: shift, shift_days: 30 (as note_date: date_shift max_days: 30)",
                )

    def _uses_key(self, spec: Column) -> bool:
        replace = spec.params.get("replace", "placeholder")
        modes = _modes(replace, spec.params.get("dates"))
        return "pseudonym" in modes.values()

    def apply(self, values: pd.Series, spec: Column, ctx: ApplyContext) -> pd.Series:
        self.check(ctx.column, spec)
        p = spec.params
        key = None
        if self._uses_key(spec):
            if ctx.keyring is None:
                raise KeyCustodyError(
                    "pseudonyms in free text need the key ring", column=ctx.column,
                    fix="load it with KeyRing.from_policy(loaded) and pass it in the ApplyContext",
                )
            key = ctx.keyring.derive(str(p.get("scope", "scrub")), purpose="scrub")
        offsets = None
        if p.get("dates") == "shift" or (date_cut(p) is not None and "shift_days" in p):
            # the same keyed per-subject offset as the date_shift technique: a note's dates
            # move with the subject's structured dates, never back to the true month
            from deidflow.techniques import dateshift

            if ctx.keyring is None:
                raise KeyCustodyError(
                    "shifting dates in free text needs the key ring", column=ctx.column,
                    fix="load it with KeyRing.from_policy(loaded) and pass it in the ApplyContext",
                )
            dkey = ctx.keyring.derive(str(p.get("shift_scope", dateshift.DEFAULT_SCOPE)),
                                      purpose="date_shift", algorithm=dateshift.ALGORITHM)
            offsets = dateshift.subject_offsets(ctx.subject_ids, dkey, int(p["shift_days"]), memo=ctx.memo)
        out, counts = scrub_texts(
            values,
            ages=p.get("ages", "keep"),
            date_offsets=offsets,
            kinds=p.get("kinds", DETECTORS),
            replace=p.get("replace", "placeholder"),
            dates=p.get("dates"),
            subject_ids=ctx.subject_ids,
            known=ctx.known_identifiers,
            key=key,
        )
        for kind, n in sorted(counts.items()):
            ctx.count(kind, n)
        return out

    def describe(self, spec: Column, ctx: ApplyContext) -> dict[str, Any]:
        p = spec.params
        out: dict[str, Any] = {
            "technique": self.name,
            "params": {
                "replace": p.get("replace", "placeholder"),
                "dates": p.get("dates"),
                "kinds": list(p.get("kinds", DETECTORS)),
                "ages": p.get("ages", "keep"),
            },
            # what the scrubber leaves that the risk figures of the manifest do not count
            "not_covered_by_risk": _not_covered(p),
        }
        if "shift_days" in p and (p.get("dates") == "shift" or date_cut(p) is not None):
            out["params"]["shift_days"] = p["shift_days"]
        if self._uses_key(spec):
            scope = str(p.get("scope", "scrub"))
            out["params"]["scope"] = scope
            out["params"]["algorithm"] = "HMAC-SHA256 (48 bits as 12 letters a-p), key derived with HKDF-SHA256 per recipient/agreement/scope"
            if ctx.keyring is not None:
                out["key_fingerprint"] = ctx.keyring.fingerprint(scope, purpose="scrub")
        return out


# --- the gate's vectorised check ------------------------------------------------------------

# RE2-compatible (pyarrow): no look-arounds, [0-9] not \d, boundaries as (^|[^0-9]).
_DIRECT_RE2 = "|".join(
    [
        rf"(?:^|[^0-9]){_ID18}(?:[^0-9]|$)",
        rf"{_ID_LABEL}[^0-9]{{0,8}}{_ID_ANY}(?:[^0-9]|$)",
        rf"(?:^|[^0-9]){_ID15}(?:[^0-9]|$)",
        rf"(?:^|[^0-9]){_MOBILE}(?:[^0-9]|$)",
        _EMAIL,
    ]
)
_RE2_SPECIAL = set(r"\.^$|?*+()[]{}")


def _re2_escape(s: str) -> str:
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in s)


def find_identifiers(texts: pd.Series, known: Iterable[str] | None = None) -> pd.Series:
    """True per row where the text holds a direct identifier: a resident ID (18-digit with a
    birth-date shape, any 15/18-digit number after an ID label, a 15-digit old ID), a mobile
    number, an e-mail address, or any of the `known` literal strings (e.g. every patient name
    in the structured tables). Vectorised: pyarrow's RE2 engine runs one combined regex over
    the column, and the known literals as alternations of a few thousand each."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # NFKC first (pyarrow's own normalisation, not the scrubber's fold): a full-width
    # １３８１２３４５６７８ is the same mobile
    arr = pa.array(texts.astype("string").to_numpy(dtype=object, na_value=None), type=pa.string())
    s = pd.Series(pc.utf8_normalize(arr, "NFKC"), index=texts.index, dtype="string[pyarrow]")
    hit = s.str.contains(_DIRECT_RE2, regex=True).fillna(False).astype(bool)
    if known is not None:
        literals = sorted({str(k) for k in known if k is not None and len(str(k)) >= 2},
                          key=len, reverse=True)
        for i in range(0, len(literals), 5000):
            rest = ~hit
            if not rest.any():
                break
            pat = "|".join(_re2_escape(x) for x in literals[i:i + 5000])
            found = s[rest].str.contains(pat, regex=True).fillna(False).astype(bool)
            hit.loc[found.index[found.to_numpy()]] = True
    return pd.Series(hit.to_numpy(dtype=bool), index=texts.index)


# --- one CSV file, for trying the scrubber before a release ---------------------------------

SAFE_DEFAULTS: dict[str, Any] = {"replace": "placeholder", "dates": "month", "kinds": list(DETECTORS)}
"""The scrubbing of `deidflow scrub` without a policy: every detector, typed placeholders,
dates cut to the month."""


def _read_text(path: Path, encoding: str) -> tuple[str, str]:
    """The file's text and the codec it was read with; a clear error for a file that is not
    in the encoding asked for (auto: UTF-8, then GB18030)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", file=str(path), fix="pass the path of a CSV file") from None
    except IsADirectoryError:
        raise InputError("is a directory, not a CSV file", file=str(path), fix="pass the path of a CSV file") from None
    codecs = ("utf-8-sig", "gb18030") if encoding.lower() == "auto" else (encoding,)
    for codec in codecs:
        try:
            return raw.decode(codec), codec
        except LookupError:
            raise InputError(f"unknown encoding '{encoding}'", file=str(path),
                             fix="use --encoding utf-8, gb18030, gbk or auto") from None
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            bad = exc
    raise InputError(
        f"does not decode as {' or '.join(codecs)} (first bad byte on line {line})",
        file=str(path), row=line,
        fix="re-save the file as UTF-8, or pass its real encoding with --encoding (e.g. gb18030)",
    ) from bad


def scrub_settings(policy_path: Path | None, column: str) -> tuple[dict[str, Any], bytes | None]:
    """The scrub parameters a release would use for `column` (the policy's scrubbed column of
    that name, else its first scrubbed column) and the text key if they pseudonymise; the safe
    defaults without a policy."""
    if policy_path is None:
        return dict(SAFE_DEFAULTS), None
    from deidflow.policy import load_policy

    loaded = load_policy(policy_path)
    specs = [(c, s) for t in loaded.policy.tables.values() for c, s in t.columns.items()
             if s.technique == "scrub"]
    if not specs:
        raise PolicyError("the policy scrubs no column", file=str(policy_path),
                          fix="give a free-text column 'technique: scrub', or omit --policy for the safe defaults")
    spec = next((s for c, s in specs if c == column), specs[0][1])
    Scrub().check(column, spec)
    params = {"replace": spec.params.get("replace", "placeholder"), "dates": spec.params.get("dates"),
              "kinds": list(spec.params.get("kinds", DETECTORS)), "ages": spec.params.get("ages", "keep")}
    if params["dates"] == "shift":
        # one CSV has no subject to take the offset from: the dates are cut to the month,
        # which is never finer than what the release writes
        params["dates"] = "month"
    key = None
    if Scrub()._uses_key(spec):
        from deidflow.keys import KeyRing

        key = KeyRing.from_policy(loaded).derive(str(spec.params.get("scope", "scrub")), purpose="scrub")
    return params, key


def scrub_csv(source: Path, column: str, out: Path, *, policy: Path | None = None,
              encoding: str = "auto") -> dict[str, int]:
    """Scrub one column of a CSV file as a release would, keeping every other column, every
    value's text and the row order; write `out` (UTF-8) atomically. Returns the number of
    spans replaced per kind (never a value)."""
    import csv
    import io
    import os

    params, key = scrub_settings(policy, column)
    text, _ = _read_text(source, encoding)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise InputError("not a well-formed CSV file (a row has more fields than the header)",
                         file=str(source), row=int(m.group(1)) if m else None,
                         fix="quote fields that hold commas or line breaks, then rerun") from None
    except pd.errors.EmptyDataError:
        raise InputError("the file is empty", file=str(source), fix="pass a CSV file with a header row") from None
    if column not in frame.columns:
        raise InputError(f"no column '{column}' (columns: {', '.join(map(str, frame.columns))})",
                         file=str(source), column=column,
                         fix="pass the free-text column's header with --column")
    scrubbed, counts = scrub_texts(frame[column], kinds=params["kinds"], replace=params["replace"],
                                   dates=params["dates"], key=key, ages=params.get("ages", "keep"))
    frame[column] = scrubbed.fillna("")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        frame.to_csv(tmp, index=False, encoding="utf-8", quoting=csv.QUOTE_MINIMAL)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return counts
