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


def _mix(x: np.ndarray) -> np.ndarray:
    """A 64-bit mix (splitmix64's finaliser) so that a wrapping sum identifies a set."""
    x = x.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    return x ^ (x >> np.uint64(32))


def record_class_sizes(subject: pd.DataFrame, sid: str, qis: list[str],
                       children: list[tuple[pd.DataFrame, str, list[str]]]) -> np.ndarray:
    """Size of each record class among the released subjects."""
    ids = subject[sid].astype("string")
    parts = [subject[qis].astype("string").fillna("\x00")] if qis else []
    key = pd.Series(pd.factorize(pd.MultiIndex.from_frame(parts[0]))[0] if qis else
                    np.zeros(len(subject), np.int64), index=ids.to_numpy())
    signature = _mix(key.to_numpy().astype(np.int64) + 1)
    for t, (frame, csid, cols) in enumerate(children):
        combos = frame[[csid, *cols]].astype("string").fillna("\x00").drop_duplicates()
        code = pd.factorize(pd.MultiIndex.from_frame(combos[cols]))[0].astype(np.int64)
        mixed = _mix(code * 64 + t + 1)
        per = pd.Series(mixed, dtype="uint64").groupby(combos[csid].to_numpy()).sum()
        signature = signature + _mix(per.reindex(ids.to_numpy()).fillna(0).to_numpy(
            dtype=np.uint64) + np.uint64(t + 1))
    return np.unique(signature, return_counts=True)[1]


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
