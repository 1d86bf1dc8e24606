"""The one home of identifier definitions: what a resident ID, a mobile number, a passport
or a WeChat id looks like, for every part of deidflow that needs to know.

Each identifier type is one small `Recogniser` (in the spirit of Presidio's): the pattern
parts of the value, the label words that announce it, and a checksum or validation where
one exists. Every form the code needs is generated from it: a Python `re` pattern for free
text (`python()`), an anchored whole-value pattern (`whole()`) and an RE2 pattern for
pyarrow (`re2()`). The scrubber (`techniques/scrub.py`) and the validation gate
(`validation/expectations.py`) both import them, so "what a mobile number is" has one answer.

Text is matched after `fold()`: the one-character NFKC forms (full-width digits and
letters, ideographic space, compatibility ideographs) and the dash family, each mapped to
one character, so every offset found in the folded text is an offset in the original.

`may_hold` says, in one RE2 pass over a column of notes, which notes may hold an identifier
`scan` finds (a superset), so that the Python scan runs only on those.

Values announced by a label (家庭住址：…, 邮编 | 510458, Bed +4, 冰 冻 号 : P82-57752) are read
by `scan_fields` from `FIELD_LABELS`: the value runs to the end of its field and is checked
against its kind.

Also here: the GB 11643-1999 check digit (vectorised for columns) and the parts a resident
ID carries (birth date, sex, GB/T 2260 region).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

# --- text folding -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _fold_table() -> tuple[dict[int, str], re.Pattern[str]]:
    """code point -> its one-character NFKC form (BMP), plus the dash family -> "-", and a
    regex matching any character the table changes (to skip texts that need nothing)."""
    table: dict[int, str] = {}
    for cp in range(0x80, 0x10000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        n = unicodedata.normalize("NFKC", c)
        if len(n) == 1 and n != c and n != "\x00":
            table[cp] = n
    for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d":
        table[ord(c)] = "-"
    for c in "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000":
        table[ord(c)] = " "
    # Keep what the detectors read as Chinese punctuation: NFKC would turn the full-width
    # comma, colon and brackets into ASCII, which the patterns accept anyway; folding them
    # changes nothing a detector needs and keeps the CJK punctuation the name rules read.
    for c in "，：；（）！？":
        table.pop(ord(c), None)
    ranges: list[tuple[int, int]] = []
    for cp in sorted(table):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    cls = "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                  for a, b in ranges)
    return table, re.compile(f"[{cls}]")


def fold(text: str) -> str:
    """`text` with full-width forms, odd spaces and dashes folded to one character each
    (１３８１２３４５６７８ -> 13812345678): same length, same offsets.

    Only the runs of characters that change are translated, the text between them copied:
    `str.translate` looks up every character of a non-ASCII text in the table, so one
    ideographic space in a chunk of 20,000 notes made the whole chunk pay for it."""
    table, needs = _fold_table()
    first = needs.search(text)
    if first is None:
        return text
    pieces, last = [], 0
    for m in _fold_runs().finditer(text, first.start()):
        a, e = m.span()
        pieces.append(text[last:a])
        pieces.append(text[a:e].translate(table))
        last = e
    pieces.append(text[last:])
    return "".join(pieces)


@lru_cache(maxsize=1)
def _fold_runs() -> re.Pattern[str]:
    """A run of characters `fold` changes."""
    return re.compile(_fold_table()[1].pattern + "+")


# --- recognisers ----------------------------------------------------------------------------

D = "[0-9]"  # ASCII digits only: RE2 (pyarrow) reads \\d differently on non-ASCII text
# One optional separator inside a number: 138-1234-5678, 110105 1990 0101 1234; up to two
# spaces, since OCR and hand-typed notes double a space (188 4272  6417).
S = r"[ \-]? ?"
LABEL_TAIL = r"(?:码)?[:：\s]{0,3}(?:为|是)?[:：\s]{0,3}"
_ALNUM = "[0-9A-Za-z]"


def alternation(words: tuple[str, ...] | list[str]) -> str:
    """A regex matching any of `words`, longest first (身份证号码 wins over 身份证), written
    as a trie: Python's `re` tries alternatives one by one, and a flat list of 700 labels
    is 700 tries at every position where a trie is one character test per branch."""
    return _trie_regex(_trie(words))


def _trie(words: tuple[str, ...] | list[str]) -> dict:
    """`words` as a character trie; the key "" marks the end of a word."""
    trie: dict = {}
    for w in set(words):
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}
    return trie


def _trie_regex(node: dict) -> str:
    branches = []
    for ch in sorted((c for c in node if c), key=lambda c: -_depth(node[c])):
        branches.append(re.escape(ch) + _trie_regex(node[ch]))
    ends = "" in node
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 and not ends else "(?:" + "|".join(branches) + ")"
    return body + "?" if ends and not body.startswith("(?:") else (f"(?:{body})?" if ends else body)


def _depth(node: dict) -> int:
    return 1 + max((_depth(v) for k, v in node.items() if k), default=0)


@dataclass(frozen=True)
class Recogniser:
    """One identifier type.

    `pattern`: the value itself, in the regex subset both Python `re` and RE2 accept (no
    look-arounds, [0-9] not \\d); None where the value has no shape of its own and is only
    recognised after a label. `labels`: the words that announce the value (身份证号, 微信);
    after one, `after_label` (a looser value pattern) is taken. `edge`: characters that may
    not touch the value (a mobile is not the middle of a longer number). `check`: validation
    of a candidate (a checksum), applied by `find`."""

    kind: str
    placeholder: str
    pattern: str | None = None
    labels: tuple[str, ...] = ()
    after_label: str | None = None
    edge: str = _ALNUM
    check: Callable[[str], bool] | None = None
    gloss: str = ""
    starts: str = ""  # every character a `pattern` match can begin with (for `scan`)
    guard: str = ""  # a cheap Python look-ahead every `pattern` match satisfies (for `scan`)

    def python(self) -> _Either:
        """Free-text form (compiled); the identifier is the group `v`."""
        return _python(self)

    def alternatives(self) -> list[str]:
        """The free-text form as Python `re` source, one string per alternative (shape;
        after a label), each with the identifier as group `v`."""
        return _parts(self)

    def whole(self) -> str:
        """Anchored whole-value form (Python `re` and RE2), spaces around allowed."""
        if self.pattern is None:
            raise ValueError(f"{self.kind} has no shape of its own")
        return rf"^\s*(?:{self.pattern})\s*$"

    def re2(self) -> str:
        """Search form for RE2 (pyarrow `match_substring_regex`): no look-arounds; the
        edges are consumed characters instead."""
        parts = []
        if self.pattern is not None:
            parts.append(rf"(?:^|[^{self.edge[1:-1]}])(?:{self.pattern})(?:[^{self.edge[1:-1]}]|$)")
        if self.labels:
            parts.append(rf"{alternation(self.labels)}{LABEL_TAIL}(?:{self.after_label or self.pattern})")
        return "|".join(parts)

    def find(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of every value in `text` (already folded), validated."""
        out = []
        edge = _edge(self.edge)
        n = len(text)
        for m in _scan(self).finditer(text):
            s, e = m.span(m.lastgroup)
            # the edges are tested here rather than as a look-behind in front of the
            # pattern, which would stop `re` from skipping in C to the first characters
            if (s > 0 and edge(text[s - 1])) or (e < n and edge(text[e])):
                continue
            if self.check is None or self.check(text[s:e]):
                out.append((s, e))
        return out


def _parts(r: Recogniser) -> list[str]:
    parts = []
    if r.pattern is not None:
        parts.append(rf"(?<!{r.edge})(?P<v>{r.pattern})(?!{r.edge})")
    if r.labels:
        value = r.after_label or r.pattern
        parts.append(rf"{alternation(r.labels)}{LABEL_TAIL}(?P<v>{value})(?!{r.edge})")
    return parts


@lru_cache(maxsize=None)
def _python(r: Recogniser) -> _Either:
    body = "|".join(_parts(r))
    # a group name may occur once in a Python pattern: the second alternative's is v2
    n = 0

    def rename(_m: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return "(?P<v>" if n == 1 else f"(?P<v{n}>"

    body = re.sub(r"\(\?P<v>", rename, body)
    return _Either(re.compile(body), n)


@lru_cache(maxsize=None)
def _edge(cls: str) -> Callable[[str], bool]:
    return re.compile(cls).fullmatch  # type: ignore[return-value]


@lru_cache(maxsize=None)
def _scan(r: Recogniser) -> re.Pattern[str]:
    """The scanning form `find` runs: the alternatives without their edge look-arounds,
    each value a group of its own (a, b)."""
    parts = []
    if r.pattern is not None:
        parts.append(f"(?P<a>{r.pattern})")
    if r.labels:
        parts.append(f"{alternation(r.labels)}{LABEL_TAIL}(?P<b>{r.after_label or r.pattern})")
    return re.compile("|".join(parts))


class _Either:
    """A compiled pattern whose identifier group is `v`, `v2`, … (one per alternative)."""

    def __init__(self, pattern: re.Pattern[str], groups: int) -> None:
        self.pattern = pattern
        self.names = ["v"] + [f"v{i}" for i in range(2, groups + 1)]

    def finditer(self, text: str):
        for m in self.pattern.finditer(text):
            yield _Match(m, next(g for g in self.names if m.group(g) is not None))


class _Match:
    def __init__(self, m: re.Match[str], group: str) -> None:
        self.m, self.group = m, group

    def span(self, _name: str = "v") -> tuple[int, int]:
        return self.m.span(self.group)


def _resident_id_ok(value: str) -> bool:
    """A GB 11643 shape with a real birth date. The check digit is *not* required: most IDs
    typed by hand into notes carry a wrong one (887 of 975 in MultiPriv)."""
    v = re.sub(r"[ \-]", "", value).upper()
    if len(v) == 15:
        return True
    return len(v) == 18 and v[:17].isdigit() and v[17] in "0123456789X"


# Resident ID, 18 characters: region (first digit 1-9), birth date 18xx-20xx with a real
# month and day, sequence, check character; separators allowed between any two digits. The
# old 15-digit ID has a two-digit year and no check character. Both share the region part,
# so a scanner can try the two tails after reading it once.
ID_REGION = rf"[1-9](?:{S}{D}){{5}}{S}"
_MMDD = rf"(?:0{S}[1-9]|1{S}[0-2]){S}(?:0{S}[1-9]|[12]{S}{D}|3{S}[01])"
ID18_TAIL = rf"(?:1{S}[89]|2{S}0){S}{D}{S}{D}{S}{_MMDD}(?:{S}{D}){{3}}{S}[0-9Xx]"
ID15_TAIL = rf"{D}{S}{D}{S}{_MMDD}(?:{S}{D}){{3}}"
ID18 = ID_REGION + ID18_TAIL
ID15 = ID_REGION + ID15_TAIL
ID_ANY = rf"{D}(?:{S}{D}){{14}}(?:(?:{S}{D}){{2}}{S}[0-9Xx])?"  # 15 or 18, any shape
ID_LABELS = ("公民身份号码", "身份证号码", "身份证号", "身份证", "身份号码", "证件号码", "证件号",
             "ID号", "ID")
MOBILE = rf"(?:(?:\+|00)?86{S}|[(（](?:\+|00)?86[)）]{S})?1{S}[3-9](?:{S}{D}){{9}}"
# Landlines: area code in brackets or with a leading 0 (+86 and 0086 dropping the 0),
# a local number of 7-8 digits, optionally grouped, optional extension; 400/800 numbers.
_AREA = rf"(?:[(（]0?{D}{{2,3}}[)）]|0{D}{{2,3}}|(?:\+|00)86{S}[(（]?0?{D}{{2,3}}[)）]?)"
LANDLINE = (
    rf"{_AREA}{S}(?:{D}{{3,4}}{S}{D}{{4}}|{D}{{4}}{S}{D}{{3}})(?:(?:转|-|ext\.?){D}{{1,5}})?"
    rf"|[48]00{S}{D}{{3}}{S}{D}{{4}}"
)
LANDLINE_LABELS = ("联系电话", "办公电话", "家庭电话", "固定电话", "固话", "座机", "电话", "传真",
                   "Tel", "TEL", "Fax", "FAX")
EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
IPV4_OCTET = rf"(?:25[0-5]|2[0-4]{D}|1{D}{D}|[1-9]?{D})"
_CODE = r"[A-Za-z0-9][A-Za-z0-9\-]{0,31}"

# Labels after which a number identifies a person's record, specimen, bed, device, card…
# (any label of these stems followed by 号/编号/号码/ID/No).
RECORD_STEMS = (
    "病历", "病案", "住院", "门诊", "急诊", "登记", "就诊卡", "就诊", "档案", "患者", "病人", "检查",
    "影像", "放射", "超声", "彩超", "B超", "心电图", "心电", "内镜", "胃镜", "肠镜", "CT", "MRI", "MR",
    "DR", "PET", "X线", "病理", "标本", "样本", "检验", "化验", "条码", "申请单", "送检", "HIS",
    "LIS", "PACS", "EMR", "床", "床位", "手术", "麻醉", "输血", "血袋", "处方", "医嘱", "发票",
    "收费", "挂号", "流水", "预约", "随访", "转诊", "会诊", "透析", "健康档案", "健康卡", "就诊卡",
    "诊疗卡", "医疗卡", "居民健康卡", "IC卡", "账户", "账", "帐", "会员", "订单", "快递", "工",
    "员工", "学", "设备", "设备序列", "序列", "IMEI", "MAC", "驾驶证", "驾照", "军官证", "士兵证",
    "警官证", "居住证", "工作证", "学生证", "车架", "VIN", "报告单", "报告", "病区床",
)
RECORD_LABELS = tuple(
    f"{stem}{tail}" for stem in RECORD_STEMS for tail in ("号", "编号", "号码", "ID", "No.", "NO.", "No", "NO")
) + ("MRN", "病历编号", "住院号", "床号", "ID号")
INSURANCE_LABELS = ("医疗保险卡号", "医疗保险号", "社会保障卡号", "社会保障号", "医保卡号", "医保编号",
                    "医保账号", "医保号", "社保卡号", "社保号", "参保编号", "参保号", "新农合号",
                    "农合号", "医保卡", "社保卡", "医保：", "医保:", "社保：", "社保:")
PASSPORT = r"[EeGgDdSsPp][0-9]{8}|[Ee][A-HJ-NP-Za-hj-np-z][0-9]{7}"
PERMIT = r"[CcWw][0-9A-Za-z][0-9]{7}|[HhMm][0-9]{8}(?:[0-9]{2})?|[Tt][0-9]{8}|[Ll][0-9]{8}"
PERMIT_LABELS = (
    "港澳居民来往内地通行证", "往来港澳通行证", "港澳通行证", "回乡证", "台湾居民来往大陆通行证",
    "台胞证", "大陆居民往来台湾通行证", "往来台湾通行证", "入台证", "港澳台居民居住证",
    "外国人永久居留身份证", "永久居留证", "通行证",
)
PLATE_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE = rf"[{PLATE_PROVINCES}][A-HJ-NP-Z][·• ]?(?:[A-HJ-NP-Z0-9]{{4}}[0-9]|[DF][A-HJ-NP-Z0-9][0-9]{{4}}|[0-9]{{5}}[DF])"
VIN = r"[A-HJ-NPR-Z0-9]{8}[0-9X][A-HJ-NPR-Z0-9]{2}[0-9]{6}"
URL = r"(?:https?://|www\.)[A-Za-z0-9.\-]+(?:/[A-Za-z0-9._~%/?#=&+\-]*)?"
EMPLOYER_LABELS = ("工作单位", "单位名称", "所在单位", "工作地点", "就职于", "任职于", "供职于",
                   "工作于", "就读于", "毕业于", "就读学校", "所在学校", "学校名称", "学校", "雇主",
                   "服务单位", "受雇于")
MAC = r"[0-9A-Fa-f]{2}(?:[:\-][0-9A-Fa-f]{2}){5}"

RECOGNISERS: dict[str, Recogniser] = {
    r.kind: r
    for r in (
        Recogniser("resident_id", "[身份证号]", pattern=f"{ID18}|{ID15}", starts="123456789", labels=ID_LABELS,
                   after_label=ID_ANY, edge="[0-9]", check=_resident_id_ok,
                   gloss="居民身份证号 (GB 11643): 18 or 15 digits with a birth date"),
        Recogniser("mobile", "[电话]", pattern=MOBILE, starts="+081", edge="[0-9]",
                   gloss="mainland mobile, +86/0086 optional, any grouping"),
        Recogniser("landline", "[电话]", pattern=LANDLINE, starts="(（0+48",
                   guard=r"(?=[(（+]|0[0-9]|[48]00)", labels=LANDLINE_LABELS,
                   after_label=rf"{LANDLINE}|{D}{{7,8}}|{D}{{4}}[ \-]{D}{{4}}", edge="[0-9]",
                   gloss="fixed line with area code in any bracket/dash/space spelling; fax"),
        Recogniser("email", "[邮箱]", pattern=EMAIL, starts="", edge=r"[A-Za-z0-9._%+\-]", gloss="e-mail"),
        Recogniser("passport", "[证件号]", pattern=PASSPORT, starts="DdEeGgPpSs",
                   labels=("护照号码", "护照号", "护照"), after_label=r"[A-Za-z]{0,2}[0-9]{6,10}",
                   gloss="passport E/G + 8 digits, E + letter + 7 digits"),
        Recogniser("permit", "[证件号]", pattern=None, labels=PERMIT_LABELS,
                   after_label=rf"(?:号码|号)?[:：\s]{{0,3}}(?:{PERMIT}|[A-Za-z]?[0-9]{{8,10}})",
                   gloss="HK/Macau/Taiwan travel and home-return permits, residence permits"),
        Recogniser("wechat", "[社交账号]", pattern=None,
                   labels=("微信号", "微信ID", "微信", "WeChat", "wechat", "weixin", "VX", "vx", "wx"),
                   after_label=r"[A-Za-z][A-Za-z0-9_\-]{5,19}|1[3-9][0-9]{9}",
                   gloss="WeChat id after its label"),
        Recogniser("qq", "[社交账号]", pattern=None, labels=("QQ号码", "QQ号", "QQ", "qq", "扣扣"),
                   after_label=r"[1-9][0-9]{4,11}", edge="[0-9]", gloss="QQ number after its label"),
        Recogniser("plate", "[车牌号]", pattern=PLATE, starts=PLATE_PROVINCES, labels=("车牌号码", "车牌号", "车牌", "车架号", "VIN"),
                   after_label=rf"{PLATE}|{VIN}", gloss="licence plate (京A12345, new-energy), VIN"),
        Recogniser("ip", "[网络标识]", starts="0123456789hw",
                   guard=r"(?=[0-9]{1,3}\.[0-9]|https?:|www\.|[0-9A-Fa-f]{2}[:\-])", pattern=rf"{IPV4_OCTET}(?:\.{IPV4_OCTET}){{3}}|{URL}|{MAC}",
                   edge="[0-9A-Za-z.]", gloss="IPv4, URL, MAC address (those starting with a digit)"),
        Recogniser("age", "[90岁以上]", starts="91", guard=r"(?=9[0-9]|1[0-2][0-9])", pattern=r"(?:9[0-9]|1[0-2][0-9]) ?(?:周岁|岁)",
                   labels=("年龄", "年纪", "享年"), after_label=r"(?:9[0-9]|1[0-2][0-9])(?: ?(?:周岁|岁))?",
                   edge="[0-9]", gloss="ages over 89 (HIPAA's 90+; GB/T 42460 Annex B age)"),
        Recogniser("employer", "[单位]", pattern=None, labels=EMPLOYER_LABELS,
                   after_label=r"[^，。；;,、\n\x00\s]{2,30}", edge="[\x00]",
                   gloss="employer or school after its label (GB/T 39725 10.2(b) work unit)"),
        Recogniser("insurance_no", "[医保号]", pattern=None, labels=INSURANCE_LABELS,
                   after_label=_CODE, gloss="medical-insurance / social-security numbers after a label"),
        Recogniser("record_no", "[病历号]", pattern=None, labels=RECORD_LABELS,
                   after_label=_CODE, gloss="record, specimen, imaging, bed, device… numbers after a label"),
    )
}
"""Every identifier type with a shape or a label, by kind."""


def whole_value(kind: str) -> str:
    return RECOGNISERS[kind].whole()


@lru_cache(maxsize=32)
def _combined(kinds: tuple[str, ...]) -> tuple[list[re.Pattern[str]], dict[str, Recogniser]]:
    """Two regexes for `kinds`: their labels (a trie, which `re` skips to in C), and their
    shapes, opened by a look-ahead on the characters the shapes can start with."""
    shapes, labels, groups, firsts, label_firsts = [], [], {}, set(), set()
    label_words: list[str] = []
    for i, kind in enumerate(kinds):
        r = RECOGNISERS[kind]
        if r.pattern is not None:
            if not r.starts:
                raise ValueError(f"{kind}: starts is needed to scan for its shape")
            shapes.append(f"{r.guard}(?P<s{i}>{r.pattern})")
            groups[f"s{i}"] = r
            firsts |= set(r.starts)
        if r.labels:
            labels.append(f"{alternation(r.labels)}{LABEL_TAIL}(?P<l{i}>{r.after_label or r.pattern})")
            groups[f"l{i}"] = r
            label_firsts |= {w[0] for w in r.labels}
            label_words.extend(r.labels)
    out = []
    if labels:
        cls = "".join("\\" + c if c in "\\]^-[" else c for c in sorted(label_firsts))
        out.append(re.compile(f"(?=[{cls}]{_second_chars(label_words)})(?:" + "|".join(labels) + ")"))
    if shapes:
        cls = "".join("\\" + c if c in "\\]^-[" else c for c in sorted(firsts))
        # every edge holds the digits, so no shape starts right after one: skip those in C
        out.append(re.compile(f"(?=[{cls}])(?<![0-9])(?:" + "|".join(shapes) + ")"))
    return out, groups


def scan(text: str, kinds: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every identifier of `kinds` in `text` (already folded): one
    pass for them all, then each candidate's edges and check."""
    rxs, groups = _combined(tuple(kinds))
    n = len(text)
    out = []
    for m in (m for rx in rxs for m in rx.finditer(text)):
        g = m.lastgroup
        r = groups[g]
        s, e = m.span(g)
        edge = _edge(r.edge)
        if (s > 0 and edge(text[s - 1])) or (e < n and edge(text[e])):
            continue
        if r.check is None or r.check(text[s:e]):
            out.append((s, e, r.kind))
    return out


def may_hold(notes: list[str], kinds: tuple[str, ...]) -> np.ndarray:
    """True per note (already folded) that may hold an identifier `scan` finds for `kinds`;
    False only where it cannot. One RE2 pass over the notes (pyarrow, linear time): each
    kind's shape and its label form with the value's edges, a superset of what `scan`
    accepts (it also tests the edges, the first alternative that matches and the check), so
    `scan` needs to run only on the notes this selects."""
    pattern = _superset_re2(tuple(kinds))
    if pattern is None or not notes:
        return np.ones(len(notes), dtype=bool)
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        hit = pc.match_substring_regex(pa.array(notes, type=pa.large_string()), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a pattern RE2 cannot take
        return np.ones(len(notes), dtype=bool)
    return np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)


@lru_cache(maxsize=32)
def _superset_re2(kinds: tuple[str, ...]) -> str | None:
    parts = []
    for kind in kinds:
        r = RECOGNISERS[kind]
        after = rf"(?:[^{r.edge[1:-1]}]|$)"
        if r.pattern is not None:
            parts.append(rf"(?:^|[^{r.edge[1:-1]}])(?:{r.pattern}){after}")
        if r.labels:
            parts.append(rf"{alternation(r.labels)}{LABEL_TAIL}(?:{r.after_label or r.pattern}){after}")
    out = _python_spaces("|".join(parts))
    # a NUL character itself (an edge of [\x00]) is not passed to RE2 as a C string could end there
    return None if out is None or "\x00" in out else out


def _python_spaces(pattern: str) -> str | None:
    """`pattern` with every \\s meaning what it means to Python's `re` (every Unicode space),
    not RE2's five ASCII ones; None where a \\s stands outside a character class."""
    extra = "".join(c for c in map(chr, range(0x3001)) if c.isspace() and c not in "\t\n\f\r ")
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            esc = pattern[i:i + 2]
            if esc == "\\s":
                if not in_class:
                    return None
                esc += extra
            out.append(esc)
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            j = i + 1 + (pattern[i + 1:i + 2] == "^")
            if pattern[j:j + 1] == "]":  # a ] right after [ or [^ is a member
                out.append(pattern[i:j + 1])
                i = j + 1
                continue
        elif c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


# GB 11643-1999: weights 2^(17-i) mod 11 for the first 17 digits; check = map[sum mod 11].
ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
CHECK_CHARS = np.array(list("10X98765432"))



def resident_id_check_char(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident ID."""
    digits = np.frombuffer(first17.encode("ascii"), dtype=np.uint8) - ord("0")
    return str(CHECK_CHARS[int(digits @ ID_WEIGHTS) % 11])


def check_chars(first17: np.ndarray) -> np.ndarray:
    """Vectorised check characters for an (n, 17) array of digit values."""
    return CHECK_CHARS[(first17.astype(np.int64) @ ID_WEIGHTS) % 11]


def _digit_matrix(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(n, 18) uint8 matrix of the IDs' bytes, and the mask of well-formed rows."""
    s = ids.astype("string").fillna("").str.upper()
    well_formed = s.str.fullmatch(r"\d{17}[\dX]").fillna(False).to_numpy(dtype=bool)
    fixed = s.where(well_formed, "0" * 18).to_numpy(dtype="U18").astype("S18")
    return np.frombuffer(fixed.tobytes(), dtype=np.uint8).reshape(-1, 18), well_formed


def valid_resident_ids(ids: pd.Series) -> pd.Series:
    """True where the value is an 18-character resident ID with a correct check digit."""
    mat, well_formed = _digit_matrix(ids)
    expected = check_chars(mat[:, :17] - ord("0")).astype("S1").view(np.uint8)
    ok = well_formed & (expected == mat[:, 17])
    return pd.Series(ok, index=ids.index)


def resident_id_parts(ids: pd.Series) -> pd.DataFrame:
    """Birth date, sex and region code carried inside resident IDs.

    Digits 1-6 are the GB/T 2260 region of registration, 7-14 the birth date (YYYYMMDD),
    and digit 17 is odd for men and even for women. Rows that are not well formed get nulls.
    """
    s = ids.astype("string").str.upper()
    well_formed = s.str.fullmatch(r"\d{17}[\dX]").fillna(False)
    s = s.where(well_formed)
    birth = pd.to_datetime(s.str.slice(6, 14), format="%Y%m%d", errors="coerce")
    sex_digit = pd.to_numeric(s.str.slice(16, 17), errors="coerce")
    sex = pd.Series(pd.NA, index=ids.index, dtype="string")
    sex = sex.mask(sex_digit % 2 == 1, "M").mask(sex_digit % 2 == 0, "F")
    return pd.DataFrame(
        {"birth_date": birth, "sex": sex, "region_code": s.str.slice(0, 6)}, index=ids.index
    )


def valid_mobiles(values: pd.Series) -> pd.Series:
    """True where the value is a mainland China mobile number (optionally +86-prefixed)."""
    s = values.astype("string").str.strip()
    return s.str.fullmatch(RECOGNISERS["mobile"].pattern).fillna(False).astype(bool)


# --- labelled fields ------------------------------------------------------------------------
# Forms, tables and headers write an identifier as the value of a labelled field: 家庭住址：…,
# 邮编 | 510458, Bed +4, 冰 冻 号 : P82-57752, 申请医师为买买提·吾守尔。 The label says what the
# value is, so the value is taken whole, up to the end of the field (line break, tab, ｜, two
# spaces, a clause mark), then checked against the kind. Labels may be spelt with spaces
# between their characters (OCR) and in English.

FIELD_LABELS: dict[str, tuple[str, ...]] = {
    "address": ("家庭住址", "现住址", "住址", "家庭地址", "联系地址", "居住地址", "常住地址", "户籍地址",
                "户籍地", "现居住地", "通讯地址", "地址", "家住", "Addr", "Address", "Home address"),
    "postcode": ("邮政编码", "邮编", "Zip", "ZIP", "Zip code", "Postcode", "Postal code"),
    "date_of_birth": ("出生日期", "出生年月日", "出生年月", "生日", "出生于", "DOB", "D.O.B.", "Date of birth",
                      "Birth date", "Birthday"),
    "employer": (*EMPLOYER_LABELS, "Employer", "Work unit", "School", "Company"),
    "record_no": (*RECORD_LABELS, "冰冻号", "冰冻编号", "体检编号", "体检号", "放射编号", "样本号", "样本编号",
                  "条码号", "床位", "床号", "Bed", "Bed No.", "Adm No.", "Admission No.", "Img No.", "Path No.",
                  "Specimen", "Specimen No.", "Exam No.", "Accession No.", "Case No.", "Visit No.",
                  "Barcode", "Ward"),
    "insurance_no": (*INSURANCE_LABELS, "Ins No.", "Insurance No.", "SSC No."),
    "permit": (*PERMIT_LABELS, "Permit No.", "Permit", "HK/Macau permit", "Travel permit"),
    "passport": ("护照号码", "护照号", "护照", "Passport No.", "Passport"),
    "plate": ("车牌号码", "车牌号", "车牌", "肇事车辆", "车辆号牌", "Plate", "Plate No.", "Licence plate"),
    "wechat": ("微信号", "微信", "WeChat", "Wechat", "VX", "vx"),
    "qq": ("QQ号码", "QQ号", "QQ", "qq", "扣扣"),
    "ip": ("登录IP", "终端IP", "IP地址", "IP", "Login IP"),
    "url": ("个人主页", "主页", "网址", "随访链接", "链接", "URL", "Homepage", "Website"),
    "bank_card": ("银行卡号", "银行账号", "退费账户", "账号", "卡号", "Card No.", "Bank card", "Account No."),
    "mobile": ("手机号码", "手机号", "手机", "移动电话", "Mobile"),
    "landline": ("单位电话", "办公电话", "家庭电话", "固定电话", "座机", "传真", "Office Tel", "Office", "Fax"),
    # either: the value's shape decides (scan_fields reports mobile or landline)
    "phone": ("联系电话", "联系人电话", "电话", "电话号码", "Tel", "TEL", "Phone", "Contact Tel"),
    # resident IDs have a shape of their own and their labels are read by the scrubber's
    # labelled-number scan (a fifth of all label hits in MultiPriv-like text: not read twice)
    "resident_id": ("ID No.", "ID card"),
    "name": (
        "姓名", "患者姓名", "病人姓名", "签名", "签字", "医师签名", "医生签名", "护士签名", "患者签名",
        "家属签字", "家属签名", "监护人签名", "监护人", "代理人", "委托人", "联系人", "紧急联系人", "陪同人",
        "陪护", "病史陈述者", "陈述者", "代诉人", "术者", "主刀", "一助", "二助", "三助", "麻醉医师", "麻醉师",
        "麻醉护士", "器械护士", "巡回护士", "洗手护士", "申请医师", "申请医生", "送检医师", "送检医生",
        "报告医师", "报告医生", "诊断医师", "复核医师", "审核医师", "检验者", "检验师", "审核者", "审核人",
        "审核", "核对者", "核对", "调配", "发药", "记录者", "记录人", "记录医师", "接诊医师", "接诊医生",
        "住院医师", "上级医师", "主治医师", "主治医生", "主任医师", "副主任医师", "会诊医师", "谈话医师",
        "转诊医师", "主检医师", "随访人", "随访者", "责任护士", "管床医师", "经治医师", "技师", "操作者",
        "检查者", "报告人", "医师", "医生", "护士", "Name", "Patient", "Signed", "Signature", "Surgeon",
        "1st Asst", "2nd Asst", "Assistant", "Anesth", "Anesthesiologist", "Anaesthetist", "Scrub RN",
        "Circ RN", "RN", "Nurse", "Req. by", "Requested by", "Submitted by", "Referring Dr", "Attending",
        "Guardian", "Family", "Contact", "Informant", "By", "Doctor", "Dr.", "Reported by",
        "Verified by", "Technician"),
}
"""Labels that announce a field's value, by kind (the scrubber maps each kind to its own)."""

_NOT_AN_EMPLOYER = frozenset(("无", "不详", "退休", "待业", "无业", "学生", "农民", "个体", "自由职业", "本人"))
_FIELD_END = "\n\r\t｜|，。；;、\x00"
_SPACE_CLS = r"[ \u3000]"


def gapped_alternation(words: tuple[str, ...]) -> str:
    """`alternation` with up to three spaces allowed after each CJK character, ASCII letter or
    opening bracket (冰 冻 号, W e C h a t, q  q, （ 女儿): OCR spaces out every character."""
    trie = _trie(words)

    def emit(node: dict) -> str:
        branches = []
        for ch in sorted((c for c in node if c), key=lambda c: -_depth(node[c])):
            spaced = "\u4e00" <= ch <= "\u9fff" or (ch.isascii() and ch.isalpha()) or ch in "（("
            gap = f"{_SPACE_CLS}{{0,3}}" if spaced and any(k for k in node[ch]) else ""
            branches.append(re.escape(ch) + gap + emit(node[ch]))
        if not branches:
            return ""
        body = "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(trie)


def _digit_label_prefixes() -> tuple[str, ...]:
    """The fixed start (up to the first place a gap may follow) of every label that starts
    with a digit (1st Asst): one of them must be in a text for such a label to match."""
    out = []
    for words in FIELD_LABELS.values():
        for w in words:
            if w[0].isdigit():
                k = next((i for i, c in enumerate(w) if "\u4e00" <= c <= "\u9fff" or c.isupper()), len(w) - 1)
                out.append(w[:k + 1])
    return tuple(out)


_DIGIT_LABEL_PREFIXES = _digit_label_prefixes()


def _second_chars(words: tuple[str, ...] | list[str], extra: str = "") -> str:
    """A class of every character that can stand second in a match of `words` (spaces too,
    which a gapped label may hold after its first character; `extra` for other
    alternatives), or "" where a word of one character needs none. Most places where a
    label's first character stands (生, 医, 住) are no label: a look-ahead on the first two
    characters turns them away before the label trie runs, which costs far more."""
    if any(len(w) < 2 for w in words):
        return ""
    chars = sorted({w[1] for w in words} | set(extra) | {" ", "\u3000"})
    return "[" + "".join("\\" + c if c in "\\]^-[" else c for c in chars) + "]"


@lru_cache(maxsize=2)
def _field_rx(digit_labels: bool = True) -> tuple[re.Pattern[str], dict[str, str]]:
    """The labelled-field pattern; without `digit_labels` it leaves out the labels that start
    with a digit (1st Asst), which would make every 1 and 2 of a text a place to try."""
    by_label = {w: kind for kind, words in FIELD_LABELS.items() for w in words
                if digit_labels or not w[0].isdigit()}
    # any upper-case letter may open an unlisted abbreviation before 号 (ZY号)
    firsts = "".join(sorted({w[0] for w in by_label} | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")))
    cls = "".join("\\" + c if c in "\\]^-[" else c for c in firsts)
    rx = re.compile(
        rf"(?=[{cls}]{_second_chars(tuple(by_label), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ')})(?<![A-Za-z])"
        rf"(?P<label>{gapped_alternation(tuple(by_label))}"
        rf"|[A-Z](?:{_SPACE_CLS}{{0,3}}[A-Z]){{1,3}}(?={_SPACE_CLS}{{0,3}}号))"
        r"(?P<tail>(?:[ \u3000]{0,3}(?:号[ \u3000]{0,3}码|编[ \u3000]{0,3}号|号))?)"
        rf"(?P<sep>[ \t\u3000]{{0,4}}(?:[:：|｜][ \t\u3000]{{0,4}})?(?:为|是)?[ \u3000]{{0,3}})"
        # the value is read in a look-ahead: a field whose value is missing (电话 | 随访人 | 王伟)
        # must not swallow the next label
        rf"(?=(?P<v>[^{_FIELD_END}]{{1,64}}?)(?:{_SPACE_CLS}{{2}}|{_SPACE_CLS}?[{_FIELD_END}（(]|{_SPACE_CLS}?$))"
    )
    # looked up with every space removed (冰 冻 号, Adm No. -> AdmNo.)
    return rx, {w.replace(" ", ""): k for w, k in by_label.items()}


_NAME_VALUE = re.compile(r"[\u4e00-\u9fff·•](?:[ \u3000]{0,2}[\u4e00-\u9fff·•]){1,9}")
_NUMBERISH = re.compile(r"[+(（]?[A-Za-z0-9][A-Za-z0-9 +\-()（）./#_:：]*")
_LANDLINE_VALUE = re.compile(r"(?:[(（]?(?:\+|00)?86[)）]?[ \-]?)?[+(（]?[0-9][0-9 +\-()（）]*(?:(?:转|分机|-分机|ext\.?|x)[ ]?[0-9]{1,6})?")
_PLATE_VALUE = re.compile(rf"[{PLATE_PROVINCES}][A-Za-z0-9·• \-]{{5,9}}")
_POSTCODE_VALUE = re.compile(r"[0-9]{6}(?![0-9])")
_DATE_VALUE = re.compile(r"[0-9〇零一二三四五六七八九十][0-9〇零一二三四五六七八九十年月日号./\-]{3,16}")
_ADDRESS_HINT = re.compile(r"[省市区县镇乡村路街道号巷弄栋座室楼组里苑]")


def _field_value(kind: str, v: str, separated: bool,
                 is_name: Callable[[str, bool], bool] | None) -> tuple[int, int] | None:
    """(start, end) within `v` of the identifier a field of `kind` holds, or None."""
    if kind == "name":
        m = _NAME_VALUE.match(v)
        if m is None or m.end() < len(v.rstrip(" \u3000")) or is_name is None:
            return None
        return (m.start(), m.end()) if is_name(m.group(), separated) else None
    if kind == "address":
        s = v.rstrip(" \u3000")
        return (0, len(s)) if len(s) >= 4 and _ADDRESS_HINT.search(s) else None
    if kind == "employer":
        s = v.rstrip(" \u3000")
        return (0, len(s)) if len(s) >= 2 and s not in _NOT_AN_EMPLOYER and not s.isdigit() else None
    if kind == "postcode":
        m = _POSTCODE_VALUE.match(v)
        return m.span() if m else None
    if kind == "date_of_birth":
        m = _DATE_VALUE.match(v)
        return m.span() if m and any(c.isdigit() or c in "〇零" for c in m.group()) else None
    if kind == "url":
        s = v.split()[0] if v.split() else ""
        return (0, len(s)) if len(s) >= 6 and ("." in s or "/" in s) else None
    if kind == "plate":
        m = _PLATE_VALUE.match(v)
        if m:
            return m.start(), m.start() + len(m.group().rstrip(" -"))
    phone = kind in ("mobile", "landline", "phone")
    m = (_LANDLINE_VALUE if phone else _NUMBERISH).match(v)
    if m is None:
        return None
    s = m.group().rstrip(" +-(（:：./")
    if sum(map(str.isdigit, s)) < (5 if phone else 1) or len(s) > 40:
        if not (kind == "wechat" and len(s) >= 4):
            return None
    if kind == "wechat" and len(s) < 4:  # an id after its label may be short (微信：hehe)
        return None
    return m.start(), m.start() + len(s)


_NOT_DIGIT = re.compile(r"[^0-9]")
_MOBILE_DIGITS = re.compile(r"(?:0086|86)?1[3-9][0-9]{9}")


def scan_fields(text: str, kinds: frozenset[str] | set[str],
                is_name: Callable[[str, bool], bool] | None = None) -> list[tuple[int, int, str]]:
    """(start, end, field kind) of every labelled field value of `kinds` in `text` (folded).
    Names need `is_name(value, separated)` (techniques.names.field_name_ok): whether a value
    reads as a name, after a colon/bar/tab or directly after its label (技师曲春和)."""
    rx, by_label = _field_rx(any(w in text for w in _DIGIT_LABEL_PREFIXES))
    out = []
    for m in rx.finditer(text):
        raw, tail, sep, value = m.group("label", "tail", "sep", "v")
        label = raw.replace(" ", "").replace("\u3000", "") if " " in raw or "\u3000" in raw else raw
        kind = by_label.get(label)
        if kind is None and label.isupper() and tail:
            kind = "record_no"
        if kind is None or kind not in kinds:
            continue
        if raw[-1] in " \u3000":  # a gap the label's trie took (IP 10.0.0.1, M R N MZ3384)
            sep = " " + sep
        # glued: the value's letters run on from the label's (Bedside) with no 号, space or
        # colon between them
        glued = label[-1].isascii() and label[-1].isalpha() and not sep and not tail \
            and value[:1].isascii() and value[:1].isalpha()
        if glued and not (kind == "wechat" and (label != label.lower() or re.search(r"[0-9_\-]", value))):
            # Bedside is no bed number; but a WeChat label set in Chinese text is followed
            # by its id directly (WeChatfang-yan0147, WeChatGuoying, VXhewu, wxli_na8)
            continue
        separated = (bool(sep.strip(" \u3000")) or len(sep) >= 2 or bool(tail)
                     or (label.isascii() and bool(sep)))
        if not separated and label.isascii() and not sep and not glued:
            continue  # an English label needs a colon or a space (Bed 4, not Bed4)
        got = _field_value(kind, value, separated, is_name)
        if got is not None:
            s = m.start("v")
            if kind == "phone":
                digits = _NOT_DIGIT.sub("", text[s + got[0]:s + got[1]])
                kind = "mobile" if _MOBILE_DIGITS.fullmatch(digits) else "landline"
            out.append((s + got[0], s + got[1], kind))
    return out
