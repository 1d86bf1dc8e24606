"""Which released texts the gate's normalisation (`validation.direct.normalised`: NFKC, then
grouped mobile and ID numbers joined) could change in a way that matters to the search for
the input's known identifier values: the others need no second search, because their
normalised form holds exactly the known values the text as written holds.

Let U be the characters of the known values, widened by the digits, the space, '-', 'X' and
'x' (what the grouping patterns read). A text needs its second search only if it holds

1. a character that NFKC changes and that is in U or whose NFKC form has a character in U
   (`１` → `1`; not `，` → `,` when no known value holds a comma), or
2. a character that can take part in composition or reordering (a combining mark, a
   character that is the second of a canonical pair, one whose decomposition holds either),
   or one this Python's Unicode tables do not know or normalise otherwise than Arrow, or
3. a match of a grouping pattern as written.

Why that is enough: without (2), NFKC works character by character (no character can compose
with or reorder around its neighbour), so the normalised text is the characters' own NFKC
forms, each non-empty. Without (1), each character is either unchanged or is outside U and
becomes characters outside U. So the two texts have the same characters of U in the same
places, separated by runs of other characters exactly where the other is: a known value
(only characters of U) occurs in one exactly where it occurs in the other, and a grouping
pattern (its digits, spaces and dashes in U, its edges any non-digit) matches one exactly
when it matches the other, so without (3) the joining changes neither.
`tests/validation/test_normal_forms.py` holds the property against the full normalisation.
"""

from __future__ import annotations

import threading
import unicodedata
import weakref
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

GROUPING_CHARS = "0123456789 -Xx"  # what `direct._GROUPINGS` reads besides their edges
_CODE_POINTS = 0x110000
_SURROGATES = range(0xD800, 0xE000)

# the known values' characters, per StringSet (read once per gate run)
_CHARS: "weakref.WeakKeyDictionary[Any, np.ndarray]" = weakref.WeakKeyDictionary()


def _all_code_points() -> tuple[np.ndarray, pa.Array]:
    """Every scalar value (surrogates aside) and, for each, a one-character string."""
    cps = np.concatenate((np.arange(_SURROGATES.start, dtype=np.int64),
                          np.arange(_SURROGATES.stop, _CODE_POINTS, dtype=np.int64)))
    sizes = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
    data = "".join(map(chr, cps.tolist())).encode("utf-8")
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int32)
    return cps, pa.StringArray.from_buffers(len(cps), pa.py_buffer(offsets), pa.py_buffer(data))


HANGUL_SYLLABLES = (0xAC00, 0xD7A4)  # decomposed by rule, not by the tables
HANGUL_SECOND = (*range(0x1161, 0x1176), *range(0x11A8, 0x11C3))  # vowel and trailing jamo


_TABLES_LOCK = threading.Lock()


def nfkc_tables() -> tuple[dict[int, str], np.ndarray]:
    """(the characters Arrow's NFKC changes, with their NFKC forms; a bool per code point:
    condition (2) of the module docstring). Built once per process: the gate's two threads
    (detectors, known values) both ask for them on a notes column, and the second waits for
    the first's instead of building them too (~0.5 CPU s)."""
    with _TABLES_LOCK:
        return _nfkc_tables()


@lru_cache(maxsize=1)
def _nfkc_tables() -> tuple[dict[int, str], np.ndarray]:
    cps, chars = _all_code_points()
    arrow = pc.utf8_normalize(chars, "NFKC")
    changed = np.flatnonzero(~np.asarray(pc.equal(chars, arrow)))
    forms = dict(zip(cps[changed].tolist(), arrow.take(pa.array(changed)).to_pylist()))

    text = [chr(cp) for cp in cps.tolist()]
    sensitive = np.zeros(_CODE_POINTS, dtype=bool)
    # a non-starter, or a character this Python's Unicode tables do not know
    sensitive[cps] = np.fromiter(map(unicodedata.combining, text), dtype=np.int64, count=len(text)) != 0
    sensitive[cps] |= np.fromiter((c == "Cn" for c in map(unicodedata.category, text)), dtype=bool,
                                  count=len(text))
    decomposable = [cp for cp, d in zip(cps.tolist(), map(unicodedata.decomposition, text)) if d]
    del text
    # every character after the first of a canonical decomposition: the second of a pair
    second = {ord(c) for cp in decomposable for c in unicodedata.normalize("NFD", chr(cp))[1:]}
    sensitive[list(second | set(HANGUL_SECOND))] = True
    sensitive[HANGUL_SYLLABLES[0]:HANGUL_SYLLABLES[1]] = True
    for cp in decomposable:  # a decomposition holding one of them
        if sensitive[[ord(c) for c in unicodedata.normalize("NFKD", chr(cp))]].any():
            sensitive[cp] = True
    for cp in set(forms) | set(decomposable):  # Python's tables and Arrow's (utf8proc) agree
        if unicodedata.normalize("NFKC", chr(cp)) != forms.get(cp, chr(cp)):
            sensitive[cp] = True
    sensitive[_SURROGATES.start:_SURROGATES.stop] = False  # not in valid UTF-8
    return forms, sensitive


def code_points(arr: pa.Array) -> np.ndarray:
    """The distinct code points of the strings of `arr` (decoded from its UTF-8 buffer), in
    order: marked in a table of every code point, a piece of the buffer at a time (a sort of
    every character, and whole-buffer temporaries of 8 bytes per byte, cost seconds and
    gigabytes for the known values of a large release)."""
    from deidflow.io import text_buffers

    seen = np.zeros(_CODE_POINTS, dtype=bool)
    if len(arr):
        off, data = text_buffers(arr)
        lo, hi = int(off[0]), int(off[-1])
        for a in range(lo, hi, _PIECE):
            n = min(_PIECE, hi - a)
            b = np.zeros(n + 3, dtype=np.uint8)  # a character's last bytes may lie past the piece
            tail = data[a:min(hi, a + n + 3)]
            b[:len(tail)] = tail
            # a piece may begin inside a character: its lead byte was read with the last piece
            lead = np.flatnonzero((b[:n] & 0xC0) != 0x80)
            b0 = b[lead].astype(np.int32)
            b1, b2, b3 = (b[lead + k].astype(np.int32) & 0x3F for k in (1, 2, 3))
            seen[np.where(b0 < 0x80, b0,
                 np.where(b0 < 0xE0, ((b0 & 0x1F) << 6) | b1,
                 np.where(b0 < 0xF0, ((b0 & 0x0F) << 12) | (b1 << 6) | b2,
                          ((b0 & 0x07) << 18) | (b1 << 12) | (b2 << 6) | b3)))] = True
    return np.flatnonzero(seen)


_PIECE = 1 << 22  # bytes of text decoded at a time by `code_points`


def known_chars(known: Any) -> np.ndarray:
    """A bool per code point: a character of some member of `known` (a `StringSet`), or one
    the grouping patterns read."""
    chars = _CHARS.get(known)
    if chars is None:
        chars = np.zeros(_CODE_POINTS, dtype=bool)
        for chunk in known._member_chunks():
            chunk = chunk.combine_chunks() if isinstance(chunk, pa.ChunkedArray) else chunk
            chars[code_points(chunk)] = True
        chars[[ord(c) for c in GROUPING_CHARS]] = True
        _CHARS[known] = chars
    return chars


def _ranges(cps: np.ndarray) -> str:
    """An RE2 character class of the sorted code points `cps`."""
    breaks = np.flatnonzero(np.diff(cps) != 1)
    starts = np.concatenate(([cps[0]], cps[breaks + 1]))
    ends = np.concatenate((cps[breaks], [cps[-1]]))
    return "[" + "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}"
                         for a, b in zip(starts.tolist(), ends.tolist())) + "]"


def relevant_class(known: Any) -> str:
    """The RE2 class of the characters of conditions (1) and (2) of the module docstring."""
    forms, sensitive = nfkc_tables()
    inside = known_chars(known)
    mark = sensitive.copy()
    for cp, form in forms.items():
        if inside[cp] or any(inside[ord(c)] for c in form):
            mark[cp] = True
    return _ranges(np.flatnonzero(mark))


def may_change(texts: pa.Array, known: Any) -> np.ndarray:
    """True for each text whose normalised form may hold a known value that the text as
    written does not (the conditions of the module docstring); False texts need no second
    search. Nulls are False."""
    from deidflow.validation.direct import _GROUPINGS

    out = np.asarray(pc.fill_null(pc.match_substring_regex(texts, relevant_class(known)), False),
                     dtype=bool).copy()
    rest = np.flatnonzero(~out)
    if rest.size:
        grouped = "|".join(f"(?:{pattern})" for pattern, _ in _GROUPINGS)
        out[rest] = np.asarray(pc.fill_null(pc.match_substring_regex(
            texts.take(pa.array(rest)), grouped), False), dtype=bool)
    return out


# --- the generic detectors' pattern (`direct.detector_hits`) ------------------------------------
#
# The same argument for a regular expression instead of the known values. Its atoms are its
# literals and its classes (a negated class [^0-9] holds every character but 0-9). Two
# characters that every atom holds both or neither of are alike to the pattern: a text and the
# text with characters replaced one for one by alike ones match at the same places. A text
# holding no character of condition (2) and no character that NFKC changes into more or fewer
# than one character, or into one not alike to it, is such a replacement of its NFKC form
# (`，` → `,` where no atom names a comma; `（` → `(` where every atom holding one holds the
# other): the pattern matches both or neither.

_POSITIONS = {"AT_BEGINNING", "AT_END", "AT_BEGINNING_STRING", "AT_END_STRING"}


@lru_cache(maxsize=8)
def pattern_atoms(pattern: str) -> tuple[tuple[bool, np.ndarray], ...] | None:
    """The atoms of `pattern` (see above), each as (negated, a bool per code point: the
    characters it names). None when the pattern holds anything the argument does not cover
    (\\d, \\w, \\b, '.', a flag, a look-around, a back-reference): then no text is spared
    its NFKC."""
    import re
    import re._parser as sre_parse

    try:
        parsed = sre_parse.parse(pattern)
    except re.error:
        return None
    if parsed.state.flags & ~re.UNICODE:
        return None
    atoms: dict[tuple[bool, bytes], tuple[bool, np.ndarray]] = {}

    def atom(negated: bool, named: list[tuple[int, int]]) -> None:
        chars = np.zeros(_CODE_POINTS, dtype=bool)
        for lo, hi in named:
            chars[lo:hi + 1] = True
        atoms.setdefault((negated, np.packbits(chars).tobytes()), (negated, chars))

    def walk(items: Any) -> bool:
        for op, av in items:
            name = str(op)
            if name in ("LITERAL", "NOT_LITERAL"):
                atom(name == "NOT_LITERAL", [(av, av)])
            elif name == "IN":
                named, negated = [], False
                for iop, iav in av:
                    iname = str(iop)
                    if iname == "LITERAL":
                        named.append((iav, iav))
                    elif iname == "RANGE":
                        named.append(iav)
                    elif iname == "NEGATE":
                        negated = True
                    else:
                        return False
                atom(negated, named)
            elif name == "AT":
                if str(av) not in _POSITIONS:
                    return False
            elif name == "SUBPATTERN":
                if av[1] or av[2] or not walk(av[3]):  # a flag set or cleared inside
                    return False
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                if not walk(av[2]):
                    return False
            elif name == "BRANCH":
                if not all(walk(branch) for branch in av[1]):
                    return False
            elif name == "ATOMIC_GROUP":
                if not walk(av):
                    return False
            else:
                return False
        return True

    return tuple(atoms.values()) if walk(parsed) else None


@lru_cache(maxsize=8)
def pattern_class(pattern: str) -> str | None:
    """The RE2 class of the characters for which a text's NFKC form may match `pattern`
    otherwise than the text as written: those of condition (2), and those NFKC changes into
    other than one character, or into one not alike to it. None: every text needs NFKC."""
    atoms = pattern_atoms(pattern)
    if atoms is None:
        return None
    forms, sensitive = nfkc_tables()
    mark = sensitive.copy()
    changed = np.fromiter(forms, dtype=np.int64, count=len(forms))
    single = np.array([len(f) == 1 for f in forms.values()], dtype=bool)
    into = np.array([ord(f) if len(f) == 1 else 0 for f in forms.values()], dtype=np.int64)
    mark[changed[~single]] = True
    alike = np.ones(len(changed), dtype=bool)
    for _, chars in atoms:  # a negated atom holds exactly the characters the other does not
        alike &= chars[changed] == chars[into]
    mark[changed[single & ~alike]] = True
    return _ranges(np.flatnonzero(mark))
