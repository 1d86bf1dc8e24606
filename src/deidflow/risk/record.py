"""Risk of the subject's whole record, over every table of the release.

A subject is seen through their subject-table row *and* the rows of every other table that
carry quasi-identifiers (the age band and admission source of each encounter, the specialty
of each visit). In the spirit of longitudinal and set-valued k-anonymity, a subject's record
is their subject-row combination together with, per child table, the *set* of distinct
combinations of that table's quasi-identifiers over their rows; two subjects are
indistinguishable only when all of these are equal.

The rows of all tables are stacked into one table: a row carries its own table's
quasi-identifiers, a fixed "absent" code in the columns of the other tables, and its table's
tag, so that the set of a subject's generalised stacked rows is exactly their record. The
search (`risk.search` at patient level) then generalises every table's quasi-identifiers
together and suppresses whole subjects; l and t are measured on the subject table's sensitive
columns over the record classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from deidflow.risk.encoding import EncodedQI
from deidflow.risk.limits import RiskLimits

ABSENT = "∅"  # label of a quasi-identifier in a row of another table (never released)


def qualified(table: str, column: str, subject_table: str) -> str:
    """How a quasi-identifier is named in the search's levels: bare in the subject table (as
    before), `table.column` elsewhere."""
    return column if table == subject_table else f"{table}.{column}"


def _with_absent(q: EncodedQI, n_before: int, n_after: int, name: str) -> EncodedQI:
    """`q` (over one table's rows) placed in a stack of rows: `n_before` rows above and
    `n_after` below it take a new code, "absent", which stays itself at every level."""
    absent0 = q.cardinality(0)
    maps = tuple(np.append(m, np.int32(q.cardinality(lvl))) for lvl, m in enumerate(q.maps))
    labels = tuple(np.append(lab, np.array([ABSENT], dtype=object)) for lab in q.labels)
    codes = np.concatenate([np.full(n_before, absent0, np.int32), q.codes,
                            np.full(n_after, absent0, np.int32)])
    domain = None if q.domain is None else tuple(np.append(d, 1) for d in q.domain)
    return EncodedQI(name=name, codes=codes, maps=maps, labels=labels, domain=domain,
                     domain_size=q.domain_size)


def _tag(sizes: Sequence[int]) -> EncodedQI:
    """Which table each stacked row comes from: one level, never generalised."""
    codes = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    ident = np.arange(len(sizes), dtype=np.int32)
    return EncodedQI(name="__table", codes=codes, maps=(ident,),
                     labels=(np.array([str(i) for i in range(len(sizes))], dtype=object),))


@dataclass(frozen=True)
class RecordSearch:
    levels: dict[str, int]  # qualified names
    suppressed_subjects: np.ndarray  # subject ids (as text) suppressed whole
    before: Any
    after: Any
    utility: dict
    nodes_evaluated: int
    by_table: dict[str, dict] = field(default_factory=dict)
    sensitive_after: dict = field(default_factory=dict)


def record_search(
    frames: Mapping[str, pd.DataFrame],
    subject_columns: Mapping[str, str],
    subject_table: str,
    qi_columns: Mapping[str, Sequence[str]],
    encode: Any,
    limits: RiskLimits,
    level_bounds: Mapping[str, tuple[int, int]],
) -> RecordSearch:
    """The search over the whole record. `frames[t]` holds table t's kept rows (its subject
    column and quasi-identifiers; the subject table also its sensitive columns);
    `encode(table, column, values)` gives an EncodedQI with the column's hierarchy."""
    from deidflow.risk.metrics import report_from_sizes
    from deidflow.risk.search import search

    order = [subject_table] + [t for t in frames if t != subject_table and qi_columns.get(t)]
    sizes = [len(frames[t]) for t in order]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    total = int(starts[-1])
    qis: list[EncodedQI] = []
    owners: list[str | None] = []
    for i, t in enumerate(order):
        for col in qi_columns.get(t, ()):
            enc = encode(t, col, frames[t][col])
            qis.append(_with_absent(enc, int(starts[i]), total - int(starts[i + 1]),
                                    qualified(t, col, subject_table)))
            owners.append(t)
    if len(order) > 1:
        qis.append(_tag(sizes))
        owners.append(None)
    # the subject ids as integer codes, once: every grouping below factorises them again, and
    # integers cost a fraction of strings
    ids = pd.concat([frames[t][subject_columns[t]].astype("string") for t in order],
                    ignore_index=True)
    subj_codes, subjects = pd.factorize(ids)
    subject = subj_codes.astype(np.int64)
    sensitives = {}
    measured = list(limits.measured_sensitive_columns())
    if measured:
        # each subject's first row (the subject-table row comes first): codes are in order of
        # first appearance, so a first row is where the running maximum grows
        grows = np.concatenate([[True], subject[1:] > np.maximum.accumulate(subject)[:-1]])
        first = np.flatnonzero(grows)
    for col in measured:
        values = frames[subject_table][col].astype("string").fillna("<NA>").to_numpy(dtype=object)
        padded = np.concatenate([values, np.full(total - len(values), "", dtype=object)])
        sensitives[col] = pd.factorize(padded[first], sort=True)[0]
    bounds = dict(level_bounds)
    if len(order) > 1:
        bounds["__table"] = (0, 0)
    # one block of rows per table, with its own quasi-identifiers (risk.signatures)
    blocks = [(int(starts[i]), int(starts[i + 1]), [q.name for q, o in zip(qis, owners) if o == t])
              for i, t in enumerate(order)]
    res = search(qis, **limits.search_kwargs(), level_bounds=bounds, subject_codes=subject,
                 subject_sensitives=sensitives, record_blocks=blocks)
    levels = {k: v for k, v in res.levels.items() if k != "__table"}
    bad_rows = np.asarray(res.suppressed, dtype=bool)
    bad = np.zeros(len(subjects), dtype=bool)
    bad[subject[bad_rows]] = True
    bad_subjects = np.asarray(subjects.take(np.flatnonzero(bad)), dtype=object).astype(str)
    by_table = _by_table(order, qis, owners, res, bad)
    return RecordSearch(levels=levels, suppressed_subjects=bad_subjects, before=res.before,
                        after=res.after, utility=res.utility, nodes_evaluated=res.nodes_evaluated,
                        by_table=by_table, sensitive_after=res.sensitive_after)


def _by_table(order, qis, owners, res, bad) -> dict:
    """k, classes and unique subjects per table alone at the chosen levels (each table's own
    quasi-identifiers, its subjects' sets of combinations), beside the whole record's: each
    table's part of the record signatures the search computed (`risk.signatures`), over the
    kept subjects with rows in that table."""
    sig = res.signatures
    lv = [int(res.levels.get(q.name, 0)) for q in qis]
    out = {}
    for b, t in enumerate(order):
        own = [q.name for q, o in zip(qis, owners) if o == t]
        subjects = sig.has_rows(b) & ~bad
        if not own or not subjects.any():
            continue
        _, sizes = sig.block_classes(b, lv, subjects)
        out[t] = {"k": int(sizes.min()), "classes": int(len(sizes)),
                  "unique_subjects": int((sizes == 1).sum()), "subjects": int(sizes.sum()),
                  "quasi_identifiers": own}
    return out


def child_quasi_identifiers(policy: Any) -> dict[str, list[str]]:
    """Generalised quasi-identifiers per table other than the subject table."""
    from deidflow.policy import Role

    out: dict[str, list[str]] = {}
    for t, spec in policy.tables.items():
        if t == policy.subject_table:
            continue
        cols = [c for c, cs in spec.columns.items() if cs.role is Role.quasi_identifier
                and cs.technique == "generalise" and cs.hierarchy is not None]
        if cols:
            out[t] = cols
    return out


__all__ = ["record_search", "child_quasi_identifiers", "qualified", "RecordSearch", "ABSENT"]
