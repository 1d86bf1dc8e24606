"""Chinese person names in free text, whoever they name (patient, staff, relatives,
signatures): where a name is read, and where it ends.

Evidence, beyond the context words of `_zh_names`:

- a surname at the start: the single and compound surnames of `_zh_names` (the 百家姓
  entries still in use and the most frequent of the 2020 census);
- given-name characters from a model of real given names: `resources/given_name_chars.csv`
  (character counts over about 20 million names, MIT; see the README beside it). A
  character seen fewer than `GIVEN_MIN` times in given names is not read as one;
- boundaries: a given name ends before a clinical word (`CLINICAL_WORDS`: 王伟高血压), and a
  character that is also a function word (`SOFT_GIVEN`: 和, 有, 生, 月…) ends a name only
  where the text clearly ends the name after it (签名：毛春生。) — never before more text
  (李明有高血压, 王伟和李娜);
- a clinical word never starts a name (患者安返病房, 主任医师查体, 康复医师).

Names are read after a role or context word (术者：, 签名：, 其子, 患者), before a title (李主任
is 李; 王伟医师), in lists after one (王伟、李娜), and spelt with spaces (王 伟).
"""

from __future__ import annotations

import csv
import re
from functools import lru_cache
from importlib import resources

from deidflow import identifiers as ids
from deidflow.techniques import _zh_names as words

GIVEN_MIN = 300
"""Fewest given-name occurrences (of ~32 million) for a character to be read as part of a
given name: the 2,000 most frequent characters, 99.2 % of all given-name characters."""


@lru_cache(maxsize=1)
def given_name_counts() -> dict[str, int]:
    """The given-name character model: character -> count in the name corpus."""
    text = resources.files("deidflow.techniques").joinpath("resources/given_name_chars.csv")
    with text.open(encoding="utf-8") as f:
        return {row["char"]: int(row["count"]) for row in csv.DictReader(f)}


@lru_cache(maxsize=1)
def _model() -> tuple[frozenset[str], frozenset[str], dict[str, tuple[str, ...]]]:
    counts = given_name_counts()
    given = frozenset(c for c, n in counts.items() if n >= GIVEN_MIN) - set(words.HARD_NOT_GIVEN)
    single = frozenset(words.SINGLE_SURNAMES)
    clinical: dict[str, list[str]] = {}
    for w in set(words.CLINICAL_WORDS):
        clinical.setdefault(w[0], []).append(w)
    return given, single, {c: tuple(sorted(ws, key=len, reverse=True)) for c, ws in clinical.items()}


_GIVEN, _SINGLE, _CLINICAL = _model()
CLINICAL_FIRSTS = frozenset(_CLINICAL)  # a span holding none of these holds no clinical word
_BOUNDARY = frozenset("，,。.；;：:、！!？?（）()[]【】<>《》“”\"'‘’ \t\n\r\x00/|-—")
_SOFT = frozenset(words.SOFT_GIVEN)
_FUNCTION = frozenset(words.FUNCTION_GIVEN)
# Verbs that follow a name: after one, 和/有 closed the name (之妻麻凤和陪护, 其子雷浩和代诉).
_VERBS_AFTER = frozenset("陪说称述示签去到回离转送请问答讲听看叫找让给做需该嘱行予诉已代")
# Characters before a lone surname that make "surname + title" a person (请李主任会诊,
# 由王医生), besides punctuation and the start of the text.
_BEFORE_LONE = frozenset("请由与和及同向给对被让嘱经找问叫跟为随找报告知")
_ENDERS = tuple(sorted({*words.TITLES, *words.NAME_AFTER, *words.ROLE_WORDS, "签名", "签字",
                        "日期", "时间", "审核", "记录"}, key=len, reverse=True))
_ENDERS_RX = re.compile(ids.gapped_alternation(_ENDERS))
_ENDER_FIRSTS = frozenset(w[0] for w in _ENDERS)  # a match starts with a word's first character
_COMPOUNDS = tuple(words.COMPOUND_SURNAMES)

# A role or context word, then what may stand between it and the name.
# Role words, titles and occupations are matched with OCR's gaps between their characters
# (家 属, 母 亲, 护 士, 主 任医师, 工 程师).
_CONTEXT_RX = re.compile(
    "(?P<w>" + ids.gapped_alternation((*words.ROLE_WORDS, *words.NAME_BEFORE)) + ")"
    r"[:：\s]{0,2}(?:为|是|叫|名叫|系)?[:：\s]{0,1}"
)
_TITLE_RX = re.compile(ids.gapped_alternation(words.TITLES))
# from the colon (rare) rather than from every ideograph, one pattern per colon (full-width,
# ASCII): `re` finds a literal first character by a fast substring search, a class by a test
# at every character. A match holds one colon, so the two find what one [：:] pattern would.
_LABEL_COLONS_RX = tuple(re.compile(c + r"(?<=[\u4e00-\u9fff].)[ \u3000]{0,2}") for c in "：:")
_VALUE_END = frozenset(" \t\n\r\x00，,。；;、（）()/|")
_SEX_AFTER_RX = re.compile(r"[，,（( ][男女](?:[，,、）) ]|性)")
# The same found from 男 and from 女 (literals, which `re` finds by substring search), each
# match one character long; `_sex_after` keeps them as the three-character pattern above
# would, one after another without overlap (，男，女， is read once).
_SEX_RX = tuple(re.compile(c + rf"(?<=[，,（( ]{c})(?=[，,、）) ]|性)") for c in "男女")


def _sex_after(text: str) -> list[int]:
    """Where `_SEX_AFTER_RX.finditer(text)` matches (the punctuation before the sex)."""
    out, free = [], 0
    for t in sorted(m.start() - 1 for rx in _SEX_RX for m in rx.finditer(text)):
        if t >= free:  # not inside the previous match, which is three characters long
            out.append(t)
            free = t + 3
    return out


# What staff and relatives do in a note, right after their name: 由昝军完成采样, 夜班梅强予以
# 翻身, 格桑旺姆（儿子，电话…）. A name is read before one only where a boundary or a word
# that introduces a person (由, 与, 同, 请…) stands before it.
_ACTIONS = (
    "执行医嘱", "予以翻身", "巡视病房", "完成采样", "测量血压", "交代病情", "代为签署", "沟通", "陪同",
    "操作", "复核", "核对", "审核", "采样", "送检", "随访", "查房", "会诊", "查看患者", "指导", "指出",
    "建议", "签字", "签署", "签名", "记录", "执行", "接诊", "主刀", "负责", "告知",
    "（儿子", "（女儿", "（妻子", "（丈夫", "（母亲", "（父亲", "（哥哥", "（姐姐", "（弟弟", "（妹妹",
    "（儿媳", "（女婿", "（孙子", "（外孙女", "（配偶", "（子", "（女", "（妻", "（夫", "(",
)
_ACTIONS_RX = re.compile(ids.gapped_alternation(_ACTIONS))
_ACTION_FIRSTS = frozenset(w[0] for w in _ACTIONS)  # a given name ends before an action
_BEFORE_ACTOR = frozenset("由与同和及请经向对给让被跟随找叫班士科")  # 科: 请骨科杨鑫会诊
_OCCUPATION_RX = re.compile(ids.gapped_alternation(words.OCCUPATION_TITLES))


_NOT_IN_ACTOR = frozenset("的了是在被把将从对与及等于其他她它我你们这那某无不未已曾并又也都就再还，。、；：")


def _actor(window: str) -> bool:
    """Whether `window`, between a boundary and an action, is surname + one or two characters."""
    j = _surname_end(window, 0)
    return (j is not None and 1 <= len(window) - j <= 2 and not _NOT_IN_ACTOR.intersection(window)
            and window[0] not in words.PREPOSITION_SURNAMES  # 和家属沟通, 由护士执行
            and _CONTEXT_RX.search(window) is None
            and all("\u4e00" <= c <= "\u9fff" for c in window)
            and not _clinical_at(window, 0))


def _clinical_at(text: str, i: int) -> bool:
    ws = _CLINICAL.get(text[i]) if i < len(text) else None
    return ws is not None and text.startswith(ws, i)  # a tuple: every word tried in C


def _clinical_end(text: str, i: int) -> int:
    """End of the longest clinical word starting at i (i if none)."""
    ws = _CLINICAL.get(text[i], ())
    if not ws or not text.startswith(ws, i):
        return i  # most positions: no word at all, answered in C
    for w in ws:  # longest first
        if text.startswith(w, i):
            return i + len(w)
    return i


def extend_lists(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Names after a name and a list comma (王伟、李娜、张敏), whatever found the first one."""
    out = []
    ends = [e for _, e in spans]
    seen = set(ends)
    n = len(text)
    # only the ends at a list comma can start a list; they keep their order, so they are
    # read (last first) as when every end was popped in turn
    todo = [e for e in ends if e < n and text[e] == "、"]
    while todo:
        e = todo.pop()
        if e < n and text[e] == "、":
            e2 = name_at(text, e + 1)
            if e2 is not None and e2 not in seen:
                out.append((e + 1, e2))
                seen.add(e2)
                todo.append(e2)
    return out


def _ends_name(text: str, p: int) -> bool:
    """Whether the text clearly ends a name at p (end, punctuation, a title or role word, or
    what staff and relatives do: 何有为沟通, 瞿春和交代病情)."""
    return p >= len(text) or text[p] in _BOUNDARY or _ENDERS_RX.match(text, p) is not None or (
        text[p] in _ACTION_FIRSTS and _ACTIONS_RX.match(text, p) is not None)


_COMPOUND_BY_FIRST: dict[str, tuple[str, ...]] = {}
for _c in _COMPOUNDS:
    _COMPOUND_BY_FIRST[_c[0]] = (*_COMPOUND_BY_FIRST.get(_c[0], ()), _c)


def _surname_end(text: str, i: int) -> int | None:
    if i >= len(text):
        return None
    ch = text[i]
    for c in _COMPOUND_BY_FIRST.get(ch, ()):
        if text.startswith(c, i):
            return i + len(c)
        if text.startswith(c[1], i + 2) and text[i + 1] == " ":  # 皇 甫 红 江 (OCR, forms)
            return i + 3
    if ch in _SINGLE:
        return i + 1
    return None


_MINORITY_RX = re.compile(ids.alternation(words.MINORITY_NAME_PARTS))
_MINORITY_FIRSTS = frozenset(p[0] for p in words.MINORITY_NAME_PARTS)


def _minority_end(text: str, i: int) -> int | None:
    """End of a minority name of name parts starting at `i` (扎西多吉, 其其格), or None."""
    k, parts = i, 0
    while (m := _MINORITY_RX.match(text, k)) is not None:
        k, parts = m.end(), parts + 1
    return k if parts >= 2 or (parts == 1 and k - i >= 3) else None


# Every character a name may start with: `name_at` answers None at any other position at once.
_STARTS = _SINGLE | frozenset(_COMPOUND_BY_FIRST) | _MINORITY_FIRSTS
# Where a name without spaces may be longer than three characters (欧阳明月, 扎西多吉).
_LONG_STARTS = frozenset(_COMPOUND_BY_FIRST) | _MINORITY_FIRSTS


def name_at(text: str, i: int, *, lone: bool = False) -> int | None:
    """End of the name whose surname starts at `i`, or None. `lone`: a surname alone counts
    (before a title: 李主任)."""
    n = len(text)
    if i >= n:
        return None
    ch = text[i]
    if ch not in _STARTS:
        return None  # most positions: neither a surname nor a minority name part starts here
    if ch in _COMPOUND_BY_FIRST or ch in _MINORITY_FIRSTS:
        j = _surname_end(text, i)
        minority = _minority_end(text, i) if ch in _MINORITY_FIRSTS else None
        if j is None or minority is not None:
            return minority  # 斯琴高娃 is not 斯 + 琴高
    else:
        j = i + 1  # a single surname, the common case
    given = _GIVEN
    clinical = _CLINICAL  # _clinical_at inlined below: name_at runs at every candidate start
    ws = clinical.get(ch)
    if ws is not None and text.startswith(ws, i) or (
            j < n and text[j] == " " and _clinical_at(text[i:i + 12].replace(" ", ""), 0)):
        return None  # 查 房 spaced by OCR is still 查房
    if ch == "任" and i > 0 and text[i - 1] in "担现出兼继升就调委聘信主责":
        return None  # 现任, 担任, 主任: the verb, not the surname
    k = j
    taken = 0
    for slot in range(2):
        p = k
        if p < n and text[p] == " " and p + 1 < n and text[p + 1] != " ":
            p += 1  # 王 伟, 王 小 明
        if p >= n:
            break
        c = text[p]
        if c not in given:
            break
        ws = clinical.get(c)
        if ws is not None and text.startswith(ws, p) or (
                c in _ENDER_FIRSTS and _ENDERS_RX.match(text, p)) or (
                c in _ACTION_FIRSTS and _ACTIONS_RX.match(text, p)):
            break  # 王伟高血压, 王伟医师, 杜艳交代病情: the name ends before the word
        if slot == 1 and c in _FUNCTION and not (_ends_name(text, p + 1) or (
                p + 1 < n and text[p + 1] in _VERBS_AFTER)):
            break  # 王伟和李娜, 李明有高血压; but 之妻麻凤和陪护
        if slot == 1 and c in _SOFT and _clinical_at(text, p + 1):
            break
        k = p + 1
        taken += 1
    if taken == 0 and not lone:
        return None
    return k


def find_names(text: str) -> list[tuple[int, int]]:
    """(start, end) of every name read from the evidence above in `text` (folded)."""
    out: list[tuple[int, int]] = []
    n = len(text)
    role_ends = set()
    # Each reader below looks for a name starting a few characters before what it matched; a
    # name starts with a character of `_STARTS`, so a window without one is passed at once.
    starts = _STARTS
    long_starts = _LONG_STARTS
    for m in _CONTEXT_RX.finditer(text):
        i = m.end()
        if i >= n or text[i] not in starts:
            continue  # no name starts here (name_at would say so at once), and role_ends
            # is read only where one does
        start = m.start()
        over = -1  # end of the furthest clinical word starting in the three characters before
        for q in range(max(0, start - 3), start):
            if text[q] in _CLINICAL:
                over = max(over, _clinical_end(text, q))
        if over > start and (over >= m.end("w") or _CONTEXT_RX.match(text, over) is None):
            # 妇女儿童医疗中心: 女儿 is inside 妇女儿童, not a relative (but 患者女儿童东俊);
            # 已向外孙女: 向外 overlaps 外孙女, but 孙女 after it is a role word still
            continue
        role_ends.add(i)
        while i < n:
            e = name_at(text, i)
            if e is None:
                break
            out.append((i, e))
            # a list of names after one role word: 王伟、李娜 / 王伟和李娜
            if e < n and text[e] in "、/" or (e < n and text[e] in "和与及" and e + 1 < n
                                             and _surname_end(text, e + 1) is not None):
                i = e + 1
                continue
            break
    for i in sorted(m.end() for rx in _LABEL_COLONS_RX for m in rx.finditer(text)):
        # 审方药师：王伟 / 接生者：李娜  — any label, then a value that is exactly a name:
        # a surname, given-name characters, and the end of the value
        if i >= n or text[i] not in starts:
            continue
        e = name_at(text, i)
        if e is not None and (e >= n or text[e] in _VALUE_END):
            out.append((i, e))
    for t in _sex_after(text):
        # 王春生，男，66岁 / 欧阳明月（女，3岁）: a name at the start of a line or sentence
        if starts.isdisjoint(text[max(0, t - 4):t]):
            continue
        for back in (4, 3, 2):
            s = t - back
            if s < 0 or not (s == 0 or text[s - 1] in _BOUNDARY or text[s - 1] in "者"):
                continue
            if name_at(text, s) == t:
                out.append((s, t))
                break
    for m in _ACTIONS_RX.finditer(text):
        t = m.start()
        near = text[max(0, t - 7):t]
        if starts.isdisjoint(near):
            continue
        # past five characters only a name spelt with spaces (独 孤 慧 德)
        for back in (7, 6, 5, 4, 3, 2) if " " in near else (5, 4, 3, 2):
            s = t - back
            if s < 0 or text[s] not in starts or (back > 5 and " " not in text[s:t]):
                continue
            if back >= 4 and text[s] not in long_starts and " " not in near:
                continue  # a single surname and at most two given characters: 3 at most
            before = text[s - 1] if s > 0 else "\x00"
            if not (before in _BOUNDARY or before in _BEFORE_ACTOR):
                continue
            # read in a window that ends at the action: 姜平执行医嘱 is 姜平, not 姜平执; with
            # a boundary before and the action after, any given name (杨和平, 桑向阳)
            window = text[s:t]
            if name_at(window, 0) == back or _actor(window):
                out.append((s, t))
                break
    for m in _OCCUPATION_RX.finditer(text):
        t = m.start()
        if starts.isdisjoint(text[max(0, t - 4):t]):
            continue
        for back in (1, 2, 3, 4):  # shortest first: 由葛技师 is 葛, not 由葛
            s = t - back
            before = text[s - 1] if s > 0 else "\x00"
            if s >= 0 and (before in _BOUNDARY or before in _BEFORE_ACTOR) and (
                    name_at(text[s:t], 0, lone=True) == back):
                out.append((s, t))
                break
    for m in _TITLE_RX.finditer(text):
        t = m.start()
        near = text[max(0, t - 7):t]
        if starts.isdisjoint(near):
            continue
        # past four characters only a name spelt with spaces (慕容 凤美医师)
        for back in (7, 6, 5, 4, 3, 2, 1) if " " in near else (4, 3, 2, 1):
            s = t - back
            if s < 0 or text[s] not in starts or (back > 4 and " " not in text[s:t]):
                continue
            if back == 4 and text[s] not in long_starts and " " not in near:
                continue  # a single surname and at most two given characters: 3 at most
            if back >= 3 and text[s] in _MINORITY_FIRSTS and _minority_end(text, s) == t:
                out.append((s, t))  # 德吉卓嘎大夫: a minority name has no surname
                break
            if text[s] not in _SINGLE and text[s] not in _COMPOUND_BY_FIRST:
                continue
            if (back > 1 and text[s] in words.FUNCTION_SURNAMES and _surname_end(text, s + 1)
                    and _surname_end(text, s) == s + 1  # 南宫护士: a compound surname, not 南 + 宫
                    and not (s > 0 and text[s - 1] in _BEFORE_LONE)):
                continue  # 由王伟医师: the name starts at 王 (but 及相桂珍主治医师: at 相)
            e = name_at(text, s, lone=True)
            if e != t:
                continue
            if e - s == len(text[s:_surname_end(text, s) or s]):  # surname alone
                before = text[s - 1] if s > 0 else "\x00"
                if text[s] in words.PREPOSITION_SURNAMES and not (
                        before in _BOUNDARY and text[s] in "于都那应相初时但来") and s not in role_ends:
                    continue  # 由医生告知; but 。于大夫查房, 家属向阿姨
                if any(_clinical_at(text, q) and _clinical_end(text, q) > s for q in (s - 1, s - 2) if q >= 0):
                    continue  # 值班医生, 主管护士, 进修医生: the surname is the end of a word
            out.append((s, e))
            break
    return out


def plausible(text: str, s: int, e: int) -> int | None:
    """A name span from another detector checked against the boundaries: None where a
    clinical word starts it (患者安返病房), else its end cut before a clinical word inside."""
    if _clinical_at(text, s) or (s + 1 < e and text[s] in words.FUNCTION_SURNAMES and _clinical_at(text, s)):
        return None
    for p in range(s + 1, e):
        if _clinical_at(text, p):
            return p if p - s >= 2 else None
    return e


_NOT_A_NAME = frozenset(("本人", "患者", "家属", "不详", "可靠", "同上", "见上", "自己", "患者本人"))


def field_name_ok(value: str, separated: bool) -> bool:
    """Whether `value`, the whole value of a field whose label announces a person (术者：,
    签名 , Signed), reads as a name: a surname then given-name characters, a name with a
    middle dot, or (after a colon, bar or tab) given-name characters alone (德吉卓嘎). No
    clinical word may start it (管床医师：态度和蔼)."""
    v = value.replace(" ", "").replace("\u3000", "")
    if len(v) < 2 or v in _NOT_A_NAME or _clinical_at(v, 0):
        return False
    if "·" in v or "•" in v:  # (a split only where there is a dot: most values have none)
        parts = [p for p in re.split("[·•]", v) if p]
        if len(parts) > 1:
            return all(len(p) <= 8 for p in parts)
    if _minority_end(v, 0) == len(v):
        return True
    j = _surname_end(v, 0)
    if j is not None and 1 <= len(v) - j <= 3 and (separated or all(
            c in _GIVEN or c in _SOFT or c in _FUNCTION for c in v[j:])):
        return True  # after a colon or bar any given name (向阳: 向 is rarely a given name)
    return (separated or len(v) >= 3) and len(v) <= 5 and all(c in _GIVEN for c in v) and not any(
        _clinical_at(v, p) for p in range(len(v)))

