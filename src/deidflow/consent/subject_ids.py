"""The one canonical spelling of a subject id, and the ids refused outright.

Consent files, the extract and the registry's release records are written by different
systems: one types ``P0000001``, another sends full-width digits, a third leaves a BOM or a
zero-width space in the cell, a fourth writes a resident ID's check character as ``x``. Compared
byte for byte, a withdrawal spelled any of those ways silently matches nobody. Every id is
therefore compared in one canonical form:

* Unicode NFKC (full-width digits and letters become ASCII, compatibility forms fold),
* leading and trailing white space removed,
* the GB 11643 check character of an 18-character resident ID upper-cased (``…x`` → ``…X``).

Case is otherwise kept: ``p0000001`` is another id than ``P0000001`` (hospital ids are
case-sensitive in general); such a withdrawal matches no subject of the extract and is
reported as an orphan withdrawal at release time.

Some ids are refused rather than canonicalised (`id_problems`), because no canonical form can
say what was meant: an id holding a control or format character (BOM U+FEFF, zero-width space
U+200B, …; a character that is invisible when the file is read by a person) or one mixing
letter scripts (a Cyrillic ``Р`` among Latin letters looks like ``P``). Latin letters beside
Chinese characters count as one script: Chinese record numbers mix them legitimately.

Vectorised in Arrow: ASCII ids (the usual case) are decided with Arrow kernels alone; only
distinct non-ASCII ids go through `unicodedata`, once each.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from deidflow.idcolumns import id_strings

#: An 18-character resident ID whose check character was written lower-case.
_LOWER_CHECK = r"^([0-9]{17})x$"
#: Unicode general categories refused in an id: control, format, private use, surrogate,
#: unassigned.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn"})
#: Letter scripts counted as one for the mixed-script test (Chinese ids mix Han and Latin).
_SCRIPT_GROUPS = {"CJK": "han", "HIRAGANA": "han", "KATAKANA": "han", "BOPOMOFO": "han"}
_ALLOWED_MIX = frozenset({"han", "latin"})


def canonical_id(value: str) -> str:
    """One id in canonical form (see the module docstring)."""
    text = unicodedata.normalize("NFKC", str(value)).strip()
    if len(text) == 18 and text[:17].isascii() and text[:17].isdigit() and text[17] == "x":
        text = text[:17] + "X"
    return text


def _plainly_canonical(arr: pa.Array) -> bool:
    """True when every id is already canonical, decided from the Arrow buffers alone: all
    bytes ASCII, no id starting or ending with a byte at or below the space (every ASCII
    white space character is one), and no 18-character id ending in ``x``. A release reads
    the same id columns many times after prepare has canonicalised them; this answers
    "nothing to change" with a few NumPy passes instead of string kernels. Conservative: any
    doubt (including bytes under missing slots) falls through to the exact path."""
    if arr.type not in (pa.string(), pa.large_string()):
        return False
    bufs = arr.buffers()
    if bufs[1] is None or bufs[2] is None:
        return False
    width = np.int32 if arr.type == pa.string() else np.int64
    offsets = np.frombuffer(bufs[1], dtype=width)[arr.offset:arr.offset + len(arr) + 1]
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(bufs[2], dtype=np.uint8)[lo:hi]
    if not data.size:
        return True
    if int(data.max()) >= 0x80:
        return False
    # The usual case, decided by two passes over the bytes: no byte at or below the space
    # anywhere (no edge white space) and no 'x' anywhere (no lower-case check character).
    if int(data.min()) > 0x20 and not (data == ord("x")).any():
        return True
    starts, ends = offsets[:-1] - lo, offsets[1:] - lo
    filled = ends > starts
    if not filled.all():
        starts, ends = starts[filled], ends[filled]
    if not len(starts):
        return True
    first, last = data[starts], data[ends - 1]
    if (first <= 0x20).any() or (last <= 0x20).any():
        return False
    return not ((last == ord("x")) & (ends - starts == 18)).any()


def canonical_ids(values: Sequence[str] | pd.Series | pd.Index | np.ndarray | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Every id in canonical form, as an Arrow string array (missing stays missing). ASCII
    ids need no NFKC; an array that needs no change at all is returned as it is (no copy)."""
    arr = id_strings(values)
    if len(arr) == 0:
        return arr
    if _plainly_canonical(arr):
        return arr
    ascii_only = pc.all(pc.string_is_ascii(arr), skip_nulls=True).as_py()
    if ascii_only is False:
        enc = pc.dictionary_encode(arr)
        uniques = enc.dictionary.to_pylist()
        fixed = pa.array([canonical_id(u) for u in uniques], arr.type)
        return fixed.take(enc.indices)
    # ASCII: trim white space, upper-case a resident ID's check character.
    first, last = pc.utf8_slice_codeunits(arr, 0, 1), pc.utf8_slice_codeunits(arr, -1)
    edge_space = pc.any(pc.or_(pc.utf8_is_space(first), pc.utf8_is_space(last)), skip_nulls=True).as_py()
    if edge_space:
        arr = pc.utf8_trim_whitespace(arr)
        last = pc.utf8_slice_codeunits(arr, -1)
    if pc.any(pc.equal(last, "x"), skip_nulls=True).as_py():
        arr = pc.replace_substring_regex(arr, pattern=_LOWER_CHECK, replacement=r"\1X")
    return arr


def canonical_series(values: pd.Series) -> pd.Series:
    """`canonical_ids` as a pandas Series of the same index (pandas "str" dtype)."""
    out = canonical_ids(values).to_pandas()
    out.index = values.index
    return out.astype("str") if len(out) else out.astype(object)


def canonical_column(values: pd.Series) -> pd.Series:
    """An extract's id column with its text ids in canonical form: the column itself when
    nothing changes or when it is not text (integer ids have one spelling)."""
    if not (pd.api.types.is_string_dtype(values.dtype) or values.dtype == object):
        return values
    arr = id_strings(values)
    fixed = canonical_ids(arr)
    if fixed is arr or pc.all(pc.equal(fixed, arr), skip_nulls=True).as_py() is not False:
        return values
    out = pd.Series(fixed.to_pandas(), index=values.index, name=values.name)
    return out.astype(values.dtype) if isinstance(values.dtype, pd.StringDtype) else out


def _problem(text: str) -> str | None:
    """What is wrong with one (non-ASCII or odd) id, or None."""
    for ch in text:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            return (f"holds the invisible character U+{ord(ch):04X} "
                    f"({unicodedata.name(ch, 'control character')})")
    scripts = set()
    for ch in unicodedata.normalize("NFKC", text):
        if not ch.isalpha():
            continue
        word = unicodedata.name(ch, "UNKNOWN").split(" ")[0]
        scripts.add(_SCRIPT_GROUPS.get(word, word.lower()))
    if len(scripts) > 1 and not scripts <= _ALLOWED_MIX:
        return f"mixes letters of several scripts ({', '.join(sorted(scripts))})"
    return None


def id_problems(values: Sequence[str] | pd.Series | pd.Index | np.ndarray | pa.Array) -> dict[int, str]:
    """Position → what is wrong, for every id that must be refused (control or format
    characters, mixed scripts). ASCII ids are tested with one Arrow kernel; distinct non-ASCII
    ids one by one."""
    arr = id_strings(values)
    if len(arr) == 0:
        return {}
    arr = pc.utf8_trim_whitespace(arr)  # edge white space is trimmed, not refused
    ascii_mask = pc.fill_null(pc.string_is_ascii(arr), True)
    ctrl = pc.fill_null(pc.match_substring_regex(arr, r"[\x00-\x1f\x7f]"), False)
    suspect = pc.or_(pc.invert(ascii_mask), ctrl)
    where = np.flatnonzero(suspect.to_numpy(zero_copy_only=False))
    if len(where) == 0:
        return {}
    out: dict[int, str] = {}
    seen: dict[str, str | None] = {}
    texts = arr.take(pa.array(where)).to_pylist()
    for i, text in zip(where.tolist(), texts):
        if text not in seen:
            seen[text] = _problem(text)
        if seen[text] is not None:
            out[i] = seen[text]
    return out
