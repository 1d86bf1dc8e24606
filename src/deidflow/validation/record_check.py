"""The gate's second opinion on risk over the whole record.

When quasi-identifiers are declared beyond the subject table, the search measured k over
each subject's record (`risk.record`); the Great Expectations suites see one table at a time.
This recomputes, from the released files alone and without the search's code, the size of
each record class: a subject's released subject-row quasi-identifiers and, per other table,
the set of their released rows' quasi-identifier combinations. Labels are compared as text.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def _mix(x: np.ndarray) -> np.ndarray:
    """A 64-bit mix (splitmix64's finaliser) so that a wrapping sum identifies a set."""
    x = x.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    return x ^ (x >> np.uint64(32))


def _codes(frame: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """One int64 code per row for the combination of `cols` (missing is a value of its own)."""
    key = np.zeros(len(frame), dtype=np.int64)
    for col in cols:
        codes, uniques = pd.factorize(frame[col], use_na_sentinel=False)
        key = pd.factorize(key * (len(uniques) + 1) + codes.astype(np.int64))[0].astype(np.int64)
    return key


def _subject_codes(ids: pd.Series) -> tuple[np.ndarray, pa.Array]:
    """Each released subject row's code (order of first appearance, a missing id a value of
    its own) and the distinct ids: Arrow's hash, several times pandas' on millions of text
    pseudonyms."""
    encoded = _arrow(ids).dictionary_encode(null_encoding="encode")
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _positions(ids: pd.Series, subjects: pa.Array) -> np.ndarray:
    """Each id's position among `subjects`, -1 when it is not one of them."""
    arr = _arrow(ids)
    text = (pa.types.is_string, pa.types.is_large_string)
    if arr.type != subjects.type and any(f(arr.type) for f in text) \
            and any(f(subjects.type) for f in text):
        arr = arr.cast(subjects.type)  # string beside large_string: the same text
    if arr.type != subjects.type:
        # ids of different kinds in the two tables (numbers and text): pandas compares them,
        # and a number never equals a text
        return pd.Index(subjects.to_pandas()).get_indexer(ids)
    found = pc.index_in(arr, value_set=subjects, skip_nulls=False)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _arrow(values: pd.Series) -> pa.Array:
    arr = pa.array(values, from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def record_class_sizes(subject: pd.DataFrame, sid: str, qis: list[str],
                       children: list[tuple[pd.DataFrame, str, list[str]]]) -> np.ndarray:
    """Size of each record class among the released subjects."""
    ids, subjects = _subject_codes(subject[sid])
    signature = _mix(_codes(subject, qis) + 1)
    n = len(subjects)
    for t, (frame, csid, cols) in enumerate(children):
        # each child row's subject among the released subjects (-1: not released)
        rows = _positions(frame[csid], subjects)
        combo = _codes(frame, cols)
        width = int(combo.max()) + 1 if len(combo) else 1
        ok = rows >= 0
        # rows come grouped by subject: a stable sort of nearly sorted keys is about one pass
        pairs = np.sort(rows[ok].astype(np.int64) * width + combo[ok], kind="stable")
        if len(pairs):
            pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
        per = np.zeros(n, dtype=np.uint64)
        if len(pairs):
            owner = pairs // width
            starts = np.flatnonzero(np.concatenate([[True], owner[1:] != owner[:-1]]))
            per[owner[starts]] = np.add.reduceat(_mix(pairs % width * 64 + t + 1), starts)
        signature = signature + _mix(per + np.uint64(t + 1))
    return np.unique(signature[ids], return_counts=True)[1]


def check_whole_record(policy: Any, read: Callable[[str, list[str]], pd.DataFrame]) -> dict:
    """k over the whole released record; `read(table, columns)` gives a released table. Only
    for policies with quasi-identifiers beyond the subject table; {} otherwise."""
    from deidflow.risk.limits import RiskLimits
    from deidflow.risk.record import child_quasi_identifiers

    children = child_quasi_identifiers(policy)
    if not children:
        return {}
    limits = RiskLimits.from_policy(policy)
    st = policy.subject_table
    sid = policy.tables[st].subject_column
    qis = list(limits.quasi_identifiers)
    subject = read(st, [sid, *qis])
    frames = []
    for name, cols in children.items():
        spec = policy.tables[name]
        kept = [c for c in cols if spec.columns[c].technique != "drop"]
        frames.append((read(name, [spec.subject_column, *kept]), spec.subject_column, kept))
    sizes = record_class_sizes(subject, sid, qis, frames)
    return {"k": int(sizes.min()) if len(sizes) else None, "classes": int(len(sizes)),
            "k_required": limits.k, "ok": bool(len(sizes) == 0 or sizes.min() >= limits.k)}
