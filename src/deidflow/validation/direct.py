"""The gate's second opinion on direct identifiers in released text, independent of the
scrubber's recognisers: every known direct-identifier value of the input, searched in every
released text after a normalisation of its own (pyarrow NFKC, separators between digits
removed), so a full-width or regrouped copy of a patient's mobile is still that mobile.

Also here: what a failure of the direct-identifier check tells the user (table, column,
identifier type, count; the fix points at the scrubbing settings, never at the risk
limits), and the private log of the row numbers that hold a leak.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DIRECT_TYPE = "expect_no_direct_identifiers"
KNOWN_KIND = "known identifier of the input"

SCRUB_FIX = (
    "a direct identifier is in released text: this is a scrubbing problem, not a risk limit. "
    "Check the free-text column's scrub settings in the policy (params.kinds must include every "
    "detector; params.replace), make sure the column that holds the value is a "
    "direct_identifier of its table (its values are then scrubbed from every note), and try "
    "`deidflow scrub` on a sample of the notes; the row numbers are in the private gate log "
    "(output.private_directory/gate/)"
)


# The groupings people write numbers in (mobile 3-4-4, resident ID 6-8-4 and 6-4-4-4), joined
# back. Only these: joining every digit run across a dash would turn 2024-01-26 into 20240126,
# which holds many a six-digit postcode.
_GROUPINGS = (
    (r"(^|[^0-9])(1[3-9][0-9])[ \-]+([0-9]{4})[ \-]+([0-9]{4})([^0-9]|$)", r"\1\2\3\4\5"),
    (r"(^|[^0-9])([0-9]{6})[ \-]+([0-9]{8})[ \-]+([0-9]{3}[0-9Xx])([^0-9]|$)", r"\1\2\3\4\5"),
    (r"(^|[^0-9])([0-9]{6})[ \-]+([0-9]{4})[ \-]+([0-9]{4})[ \-]+([0-9]{3}[0-9Xx])([^0-9]|$)",
     r"\1\2\3\4\5\6"),
)


_SLICE_BYTES = 1 << 25  # text normalised per call: slices of a large column go to two threads
# texts of this many bytes or more are first narrowed to those the normalisation can matter
# for (`normal_forms.may_change`, whose tables take a second or two to build once)
NARROW_BYTES = 1 << 24


def normalised(texts: Any) -> pa.Array:
    """NFKC, and mobile and ID numbers written in groups joined (138 1234-5678 → 13812345678)."""
    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(texts, type=pa.string())
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if arr.nbytes <= 2 * _SLICE_BYTES:
        return _normalised(arr)
    # Arrow's kernels release the GIL: a notes column's slices normalised on two threads
    from concurrent.futures import ThreadPoolExecutor

    step = max(1, int(len(arr) * _SLICE_BYTES / max(arr.nbytes, 1)))
    slices = [arr.slice(i, step) for i in range(0, len(arr), step)]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="normalise") as pool:
        return pa.concat_arrays(list(pool.map(_normalised, slices)))


def _normalised(arr: pa.Array) -> pa.Array:
    arr = pc.utf8_normalize(arr, "NFKC")
    for pattern, joined in _GROUPINGS:
        arr = pc.replace_substring_regex(arr, pattern, joined)
    return arr


def detector_hits(texts: pa.Array | pa.ChunkedArray, narrow: bool | None = None) -> np.ndarray:
    """`techniques.scrub.find_identifiers(texts, None)` on Arrow text, without a Python
    string per text: the same NFKC (Arrow's) and the same RE2 alternation of the scrubber's
    generic detectors, matched by the same Arrow kernel pandas calls for it; nulls False.
    find_identifiers builds a Python string of every note to make its Arrow array again (about
    half its time on a notes column). `tests/validation/test_detector_hits.py` holds the two
    equal.

    Texts of `NARROW_BYTES` or more (or any, with `narrow`) are normalised only where NFKC can
    change the answer (`normal_forms.pattern_class`: a Chinese note's full-width comma cannot);
    the others are matched as written, the same answer. NFKC was ~3/4 of this on notes."""
    from deidflow.techniques.scrub import _DIRECT_RE2

    arr = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.large_string())
    if narrow is None:
        narrow = arr.nbytes >= NARROW_BYTES
    relevant = None
    if narrow:
        from deidflow.validation.normal_forms import pattern_class

        relevant = pattern_class(_DIRECT_RE2)
    if relevant is None:
        found = pc.match_substring_regex(pc.utf8_normalize(arr, "NFKC"), _DIRECT_RE2)
        return np.asarray(pc.fill_null(found, False), dtype=bool).copy()
    need = np.asarray(pc.fill_null(pc.match_substring_regex(arr, relevant), False), dtype=bool)
    found = np.zeros(len(arr), dtype=bool)
    for rows, normalise in ((np.flatnonzero(~need), False), (np.flatnonzero(need), True)):
        if not rows.size:
            continue
        part = arr if rows.size == len(arr) else arr.take(pa.array(rows))
        if normalise:
            part = pc.utf8_normalize(part, "NFKC")
        found[rows] = np.asarray(pc.fill_null(pc.match_substring_regex(part, _DIRECT_RE2), False), dtype=bool)
        del part  # the spared notes' copy is not held while the others are normalised
    return found


def known_hits(texts: Any, known: Any) -> np.ndarray:
    """True where a text holds a known identifier of the input, as written or normalised."""
    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), type=pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    hit = np.asarray(known.substring_hits(arr), dtype=bool).copy()
    rest = np.flatnonzero(~hit)
    if rest.size and int(pc.sum(pc.binary_length(arr)).as_py() or 0) >= NARROW_BYTES:
        # normalised and searched again only the texts whose normalised form can hold a
        # known value the text as written does not (`validation.normal_forms`: a full-width
        # comma cannot, where no known value holds a comma); the same answer
        from deidflow.validation.normal_forms import may_change

        rest = rest[may_change(arr if rest.size == len(arr) else arr.take(pa.array(rest)), known)]
    if rest.size:
        # searched again only where the normalisation changed the text (few notes hold
        # full-width or grouped numbers): the search is the costly part of the gate
        before = arr if rest.size == len(arr) else arr.take(pa.array(rest))
        after = normalised(before)
        changed = np.asarray(pc.fill_null(pc.not_equal(before, after), False).to_numpy(zero_copy_only=False), dtype=bool)
        if changed.any():
            hit[rest[changed]] = known.substring_hits(after.filter(pa.array(changed)))
    return hit


def kinds_of(texts: pa.Array, known: Any) -> dict[str, np.ndarray]:
    """For the texts that hold an identifier: which kind each holds (a text may hold several),
    by the recognisers of `identifiers` on the NFKC text, and the known values."""
    from deidflow.techniques.scrub import IDENTIFIER_PATTERNS

    values = normalised(texts).to_pylist()
    out: dict[str, np.ndarray] = {}
    for kind in ("resident_id", "mobile", "landline", "email", "passport", "permit", "wechat", "qq",
                 "plate", "ip", "insurance_no", "record_no"):
        rx = IDENTIFIER_PATTERNS[kind]
        mask = np.fromiter((isinstance(v, str) and rx.search(v) is not None for v in values),
                           dtype=bool, count=len(values))
        if mask.any():
            out[kind] = mask
    if known:
        mask = known_hits(texts, known)
        if mask.any():
            out[KNOWN_KIND] = mask
    return out


def explain(column: str, hit: Mapping[str, Any]) -> str:
    by_kind = hit.get("by_kind") or {}
    if by_kind:
        detail = ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items(), key=lambda kv: -kv[1]))
    else:
        detail = ", ".join(hit.get("kinds", []))
    return f"'{column}': {hit['rows']} row(s) with {detail}"


def gate_fix(failed_types: Iterable[str]) -> str | None:
    """The fix of a failed gate when a direct-identifier check failed (else None)."""
    return SCRUB_FIX if DIRECT_TYPE in set(failed_types) else None


def leak_rows(tables: Mapping[str, Any], failed: Iterable[Mapping[str, Any]], known: Any) -> dict[str, Any]:
    """Row numbers (0-based, in the released table) of every text value that holds a direct
    identifier, in the columns whose direct-identifier check failed (every text column of the
    table where the check named none)."""
    from deidflow.validation.expectations import FREE_TEXT_BYTES
    from deidflow.validation.sets import StringSet

    if known is not None and not isinstance(known, StringSet):
        known = StringSet(known)
    out: dict[str, dict[str, list[int]]] = {}
    flagged: dict[Any, set[str]] = {}  # the columns the gate named (all, where it named none)
    for e in failed:
        if e.get("type") == DIRECT_TYPE:
            flagged.setdefault(e.get("table"), set()).update(str(c) for c in e.get("columns") or ())
    for table, named in flagged.items():
        frame = tables[table] if table is not None else None
        if not isinstance(frame, pd.DataFrame):
            continue
        for col in frame.columns:
            if named and str(col) not in named:
                continue
            values = frame[col]
            if not (pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values)):
                continue
            s = values.astype("string")
            if int(s.str.len().fillna(0).sum()) < FREE_TEXT_BYTES * len(s):
                # short texts, as the gate searches them: each distinct value once (every
                # window of a short text is looked up, so a column of millions would not fit)
                codes, uniques = pd.factorize(s)
                found = _leaks_in(pd.Series(uniques, dtype="string"), known)
                hit = np.zeros(len(s), dtype=bool)
                hit[codes >= 0] = found[codes[codes >= 0]]
            else:
                hit = _leaks_in(s, known)
            if hit.any():
                out.setdefault(str(table), {})[str(col)] = np.flatnonzero(hit).tolist()
    return out


def _leaks_in(s: pd.Series, known: Any) -> np.ndarray:
    """Which texts hold an identifier (the gate's detectors, `detector_hits`, then the known
    values), in slices whose search windows stay within the gate's slice size: a whole
    column's windows at once would pass Arrow's 2 GB limit of one string array (4 bytes a
    character bound UTF-8)."""
    from deidflow.validation.expectations import SLICE_BYTES
    from deidflow.validation.sets import StringSet

    hit = np.zeros(len(s), dtype=bool)
    # a set's search of short texts looks up every window of them: bytes ~ length x length
    lens = s.str.len().fillna(0).to_numpy(dtype=np.int64)
    size = 4 * int((lens * np.minimum(lens, StringSet.SHORT)).sum())
    step = max(1, int(len(s) * SLICE_BYTES / max(size, 1)))
    for lo in range(0, len(s), step):
        part = s.iloc[lo:lo + step]
        text = pa.array(part, type=pa.large_string())
        found = detector_hits(text)  # as the gate searched
        if known:
            found |= known_hits(pc.fill_null(text, ""), known)
        hit[lo:lo + len(part)] = found
    return hit


def write_leak_log(path: Path, rows: Mapping[str, Any]) -> Path:
    """The private gate log (0600): row numbers only, never a value."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"rows_with_direct_identifiers": rows}, f, ensure_ascii=False, indent=1)
    return path
