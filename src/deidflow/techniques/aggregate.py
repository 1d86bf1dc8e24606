"""GB/T 37964 aggregation: group-count tables of the released records with small-cell suppression.

A count below the threshold (5 by default, GB/T 39725 and NHS/ONS practice) is not published:
"3 patients aged 90+ in department X" points at people. Suppressing only those cells (primary
suppression) is not enough when totals are published, because a row total minus the visible
cells gives the hidden cell back. So cells are also suppressed *complementarily*: in every row
and column of the table (margins included) that has exactly one hidden cell, the smallest other
non-zero cell is hidden too, repeated until nothing changes. Because that classic rule can still
leave a hidden cell pinned down by a longer chain of equations, the result is then audited with
linear algebra: a hidden cell whose value is fixed by the published cells and margins (it lies
outside the null space's support) gets another complementary suppression, until none is.

The table is long: one row per group with its count, then the margins with "(total)" in the
summed-over columns. Every hidden count is an empty cell, primary or complementary alike, so the
table does not say which hidden cells are the small ones.

A label can disclose on its own: "rare diagnosis X" listed beside a hidden count still says
that someone released has X. `published_table` (what a release writes) therefore also
publishes as "(suppressed)" every label — a value of the first column, or a combination of the
others — seen only beside hidden counts, its margin included, and lists the identical lines
that leaves once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deidflow.errors import InputError

TOTAL = "(total)"
SUPPRESSED = "(suppressed)"
AUDIT_MAX_WORK = 2e8  # lines^2 x hidden cells ~ cost of one thin SVD


def _hide_singletons(m: np.ndarray, hidden: np.ndarray, axes: tuple[int, ...]) -> int:
    """One pass of the complementary rule along `axes`; returns how many cells it hid."""
    added = 0
    for axis in axes:
        mv = m if axis == 1 else m.T
        hv = hidden if axis == 1 else hidden.T  # a view: writes reach `hidden`
        lone = hv.sum(axis=1) == 1
        if not lone.any():
            continue
        cost = np.where(hv | (mv == 0), np.inf, mv.astype(float))
        rows = np.flatnonzero(lone & np.isfinite(cost).any(axis=1))
        cols = cost[rows].argmin(axis=1)
        hv[rows, cols] = True
        added += len(rows)
    return added


def _determined(m: np.ndarray, hidden: np.ndarray, two_d: bool) -> np.ndarray:
    """Flat indices (into m) of hidden cells whose value follows from the published ones.

    Unknowns are the hidden cells; each line of the table (cells minus its margin = 0) is one
    equation. A hidden cell is determined exactly when its unit vector lies in the row space of
    the equations, i.e. when the null space has no component on it.
    """
    idx = np.flatnonzero(hidden.ravel())
    r, c = m.shape
    if len(idx) == 0:
        return np.array([], dtype=np.int64)
    coef = np.ones((r, c))
    coef[:, -1] = -1.0
    rows_eq = np.zeros((r, len(idx)))
    ri, ci = np.divmod(idx, c)
    rows_eq[ri, np.arange(len(idx))] = coef[ri, ci]
    eqs = [rows_eq]
    if two_d:
        col_coef = np.ones((r, c))
        col_coef[-1, :] = -1.0
        cols_eq = np.zeros((c, len(idx)))
        cols_eq[ci, np.arange(len(idx))] = col_coef[ri, ci]
        eqs.append(cols_eq)
    a = np.vstack(eqs)
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    rank = int((s > 1e-9 * max(1.0, s.max(initial=0.0))).sum())
    # e_i is in the row space iff its projection onto it has length 1: diag(V_r V_r^T)[i] == 1
    leverage = (vt[:rank] ** 2).sum(axis=0)
    return idx[leverage > 1 - 1e-9]


def _suppress(m: np.ndarray, threshold: int, two_d: bool) -> tuple[np.ndarray, int, bool]:
    """Hidden-cell mask of the table with margins `m`; the primary count; whether audited."""
    primary = (m > 0) & (m < threshold)
    hidden = primary.copy()
    axes = (1, 0) if two_d else (1,)
    audited = True
    for _ in range(m.size + 1):
        while _hide_singletons(m, hidden, axes):
            pass
        lines = m.shape[0] + (m.shape[1] if two_d else 0)
        if float(lines) ** 2 * float(hidden.sum()) > AUDIT_MAX_WORK:
            audited = False
            break
        pinned = _determined(m, hidden, two_d)
        if len(pinned) == 0:
            break
        # For each pinned cell hide the smallest visible non-zero cell in its row (else its
        # column), then audit again.
        for flat in pinned:
            i, j = np.divmod(int(flat), m.shape[1])
            row_cost = np.where(hidden[i] | (m[i] == 0), np.inf, m[i].astype(float))
            if np.isfinite(row_cost).any():
                hidden[i, int(row_cost.argmin())] = True
                continue
            col_cost = np.where(hidden[:, j] | (m[:, j] == 0), np.inf, m[:, j].astype(float))
            if np.isfinite(col_cost).any():
                hidden[int(col_cost.argmin()), j] = True
            else:  # nothing left to hide around it: publish no counts at all
                hidden[m > 0] = True
                return hidden, int(primary.sum()), audited
    return hidden, int(primary.sum()), audited


def small_cell_table(frame: pd.DataFrame, by: list[str], threshold: int = 5) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Counts of `frame`'s rows per group of `by`, small cells and their complements hidden.

    One `by` column: one line of cells plus a grand total. Two or more: a cross-table of the
    first column against the combination of the others, with row, column and grand totals.
    Returns the long table (the `by` columns and an Int64 `count`, null where hidden) and a
    summary for the manifest: groups, suppressed_primary, suppressed_complementary, threshold,
    cells and suppressed_cells (and audited: False only for tables too large for the
    linear-algebra check).
    """
    missing = [b for b in by if b not in frame.columns]
    if not by or missing:
        raise InputError(
            f"aggregate columns {missing or by} are not in the released table",
            fix="name released columns in aggregates[].by (a dropped column cannot be counted)",
        )
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or threshold < 1:
        raise InputError(f"small-cell threshold must be a positive integer (got {threshold!r})",
                         key="limits.small_cell", fix="e.g. small_cell: 5")
    labels = frame[by].astype("string")
    clash = [b for b in by if labels[b].isin([TOTAL, SUPPRESSED]).any()]
    if clash:
        raise InputError(
            f"column(s) {clash} hold the value {TOTAL!r} or {SUPPRESSED!r}, which mark the totals "
            "and hidden labels of an aggregate",
            fix="rename that category before release, or aggregate by another column",
        )
    two_d = len(by) > 1
    # Count by groupby (vectorised); the loops below run over groups, not rows.
    sizes = labels.groupby(by, dropna=False, sort=True, observed=True).size()
    keys = sizes.index.to_flat_index() if two_d else [(k,) for k in sizes.index]
    r_codes, r_uniq = pd.factorize(pd.Index([k[0] for k in keys], dtype=object), use_na_sentinel=False, sort=True)
    c_codes, c_uniq = pd.factorize(pd.Index([tuple(k[1:]) for k in keys], dtype=object, tupleize_cols=False),
                                   use_na_sentinel=False, sort=False)
    nr, nc = len(r_uniq), len(c_uniq)
    n = sizes.to_numpy(dtype=np.int64)
    if two_d:
        m = np.zeros((nr + 1, nc + 1), dtype=np.int64)
        np.add.at(m, (r_codes, c_codes), n)
        m[:nr, nc] = m[:nr, :nc].sum(axis=1)
        m[nr, :] = m[:nr, :].sum(axis=0)
    else:  # one line: the cells, then the grand total
        m = np.zeros((1, nr + 1), dtype=np.int64)
        np.add.at(m[0], r_codes, n)
        m[0, nr] = m[0, :nr].sum()
    hidden, n_primary, audited = _suppress(m, int(threshold), two_d)

    counts = pd.array(np.where(hidden, 0, m).ravel(), dtype="Int64")
    counts[hidden.ravel()] = pd.NA
    if two_d:
        r_lab = list(r_uniq) + [TOTAL]
        c_lab = [tuple(t) for t in c_uniq] + [tuple([TOTAL] * (len(by) - 1))]
        ri, ci = np.divmod(np.arange(m.size), m.shape[1])
        keep = (m.ravel() > 0) | (ri == nr) | (ci == nc)  # absent groups are not listed
        data = {by[0]: [r_lab[i] for i in ri[keep]]}
        for k, b in enumerate(by[1:]):
            data[b] = [c_lab[j][k] for j in ci[keep]]
        out = pd.DataFrame({k: pd.array(v, dtype="string") for k, v in data.items()})
        out["count"] = counts[keep]
        groups = int((m[:nr, :nc] > 0).sum())
    else:
        out = pd.DataFrame({by[0]: pd.array(list(r_uniq) + [TOTAL], dtype="string")})
        out["count"] = counts
        groups = nr
    summary = {
        "groups": groups,
        "suppressed_primary": n_primary,
        "suppressed_complementary": int(hidden.sum()) - n_primary,
        "threshold": int(threshold),
        # the names the review page reads: published cells (margins included) and hidden ones
        "cells": int(len(out)),
        "suppressed_cells": int(hidden.sum()),
    }
    if not audited:
        summary["audited"] = False
    return out, summary


def hide_disclosive_labels(table: pd.DataFrame, by: list[str]) -> tuple[pd.DataFrame, int]:
    """`table` (from `small_cell_table`) with each label seen only beside hidden counts, its
    margin included, replaced by "(suppressed)"; identical hidden lines are kept once. Returns
    the table and how many lines had a label hidden."""
    hidden = table["count"].isna().to_numpy()
    out = table.copy()
    first = table[by[0]]
    rest = table[by[1:]].astype("string").fillna("\x00").agg("\x1f".join, axis=1) if len(by) > 1 else None
    mask = np.zeros(len(table), dtype=bool)
    # first column's labels: every line with that value (cells and its row margin) hidden
    alone = pd.Series(hidden).groupby(first.fillna("\x00").to_numpy()).transform("all").to_numpy()
    row_alone = alone & first.ne(TOTAL).fillna(True).to_numpy()
    out.loc[row_alone, by[0]] = SUPPRESSED
    mask |= row_alone
    if rest is not None:
        alone = pd.Series(hidden).groupby(rest.to_numpy()).transform("all").to_numpy()
        col_alone = alone & ~table[by[1:]].eq(TOTAL).all(axis=1).to_numpy()
        for b in by[1:]:
            out.loc[col_alone, b] = SUPPRESSED
        mask |= col_alone
    if not mask.any():
        return table, 0
    dup = out.duplicated(keep="first").to_numpy() & mask
    return out.loc[~dup].reset_index(drop=True), int(mask.sum())


def published_table(frame: pd.DataFrame, by: list[str], threshold: int = 5) -> tuple[pd.DataFrame, dict[str, Any]]:
    """What a release writes for an aggregate: `small_cell_table` with disclosive labels hidden."""
    table, summary = small_cell_table(frame, by, threshold)
    table, n = hide_disclosive_labels(table, by)
    summary["labels_hidden"] = n
    summary["cells"] = int(len(table))
    return table, summary
