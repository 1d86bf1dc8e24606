"""Equivalence classes on the frequency table of quasi-identifier combinations.

Rows are never grouped on strings. The rows are reduced once to the table of *distinct*
level-0 combinations with their counts (and, when a sensitive attribute is measured, the
distinct (combination, sensitive value) pairs with their counts). Generalising to a lattice
node then maps that small table through each quasi-identifier's integer level map and groups
the resulting mixed-radix keys with one bincount (or one hash factorisation when the key space
is large). DESIGN.md, "Search on the frequency table".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from deidflow.errors import InputError
from deidflow.risk.encoding import EncodedQI

# A bincount pays for the whole key space; above 4 keys per row (or this cap) hash instead.
_BINCOUNT_LIMIT = 1 << 22
# Mixed-radix keys stay below this so that int64 arithmetic cannot overflow.
_RADIX_LIMIT = 1 << 62


@dataclass(frozen=True)
class FrequencyTable:
    """Distinct level-0 quasi-identifier combinations of the (kept) rows, with counts."""

    names: tuple[str, ...]
    codes: np.ndarray  # (m, q) int32: level-0 code of each QI for each distinct combination
    counts: np.ndarray  # (m,) int64: rows per combination
    row_combo: np.ndarray  # (n,) int64: combination of each row; -1 for rows not kept
    n_records: int  # rows kept
    # Sensitive attribute, as distinct (combination, value) pairs; None when not measured.
    pair_combo: np.ndarray | None = None  # (p,) int64
    pair_value: np.ndarray | None = None  # (p,) int64, codes in the attribute's sort order
    pair_count: np.ndarray | None = None  # (p,) int64
    n_values: int = 0  # distinct sensitive values

    @property
    def n_combos(self) -> int:
        return len(self.counts)

    @property
    def has_sensitive(self) -> bool:
        return self.pair_combo is not None


@dataclass(frozen=True)
class Grouping:
    """The equivalence classes of one lattice node over a frequency table."""

    combo_class: np.ndarray  # (m,) class of each distinct combination
    sizes: np.ndarray  # (J,) int64 records per class

    @property
    def n_classes(self) -> int:
        return len(self.sizes)


def combine_keys(columns: Sequence[np.ndarray], cardinalities: Sequence[int]) -> tuple[np.ndarray, int]:
    """One int64 key per row from several integer columns (mixed radix). When the radix
    would overflow, the partial key is factorised first, so any number of columns works.
    Returns the keys and the size of the key space."""
    n = len(columns[0]) if columns else 0
    key = np.zeros(n, dtype=np.int64)
    radix = 1
    for col, card in zip(columns, cardinalities):
        card = max(int(card), 1)
        if radix * card >= _RADIX_LIMIT:
            codes, uniques = pd.factorize(key)
            key = codes.astype(np.int64)
            radix = len(uniques)
        key = key * card + col
        radix *= card
    return key, radix


def dense_ids(key: np.ndarray, radix: int) -> tuple[np.ndarray, int]:
    """Map keys to dense ids 0..J-1. Small key spaces use a bincount (ids in key order),
    large ones a hash factorisation (ids in order of first appearance): both deterministic."""
    if radix <= max(1 << 16, 4 * len(key)) and radix <= _BINCOUNT_LIMIT:
        present = np.bincount(key, minlength=radix) > 0
        lookup = np.cumsum(present) - 1
        return lookup[key], int(present.sum())
    codes, uniques = pd.factorize(key)
    return codes.astype(np.int64), len(uniques)


def _sensitive_codes(
    sensitive: np.ndarray | pd.Series, n: int, idx: np.ndarray | None
) -> tuple[np.ndarray, int]:
    """Codes of the kept rows' sensitive values in sort order (numeric order for numbers)."""
    values = pd.Series(np.asarray(sensitive)).reset_index(drop=True)
    if len(values) != n:
        raise InputError(
            f"the sensitive attribute has {len(values)} values but the quasi-identifiers have "
            f"{n} rows",
            column="sensitive",
            fix="pass one sensitive value per row of the table being measured",
        )
    if idx is not None:
        values = values.iloc[idx]
    codes, uniques = pd.factorize(values, sort=True, use_na_sentinel=True)
    codes = codes.astype(np.int64)
    n_values = len(uniques)
    missing = codes < 0
    if missing.any():  # a missing value is a value an attacker can see: its own category, last
        codes[missing] = n_values
        n_values += 1
    return codes, n_values


def check_qis(qis: Sequence[EncodedQI]) -> int:
    """Number of rows shared by the quasi-identifiers; refuses an empty or ragged set."""
    if not qis:
        raise InputError(
            "no quasi-identifiers were given",
            fix="mark at least one column as a quasi_identifier with a hierarchy",
        )
    n = len(qis[0].codes)
    names = [q.name for q in qis]
    if len(set(names)) != len(names):
        raise InputError("a quasi-identifier is listed twice", column=names[0], fix="list each once")
    for q in qis:
        if len(q.codes) != n:
            raise InputError(
                f"has {len(q.codes)} rows, but '{qis[0].name}' has {n}",
                column=q.name,
                fix="encode every quasi-identifier from the same table",
            )
    return n


def frequency_table(
    qis: Sequence[EncodedQI],
    *,
    sensitive: np.ndarray | pd.Series | None = None,
    keep: np.ndarray | None = None,
) -> FrequencyTable:
    """Reduce the rows (those in `keep`, default all) to distinct level-0 combinations."""
    n = check_qis(qis)
    kept = np.ones(n, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if len(kept) != n:
        raise InputError(
            f"keep mask has {len(kept)} entries for {n} rows",
            key="keep",
            fix="pass one boolean per row",
        )
    all_kept = bool(kept.all())
    idx = None if all_kept else np.flatnonzero(kept)
    cols = [q.codes if all_kept else q.codes[idx] for q in qis]
    key, radix = combine_keys(cols, [q.cardinality(0) for q in qis])
    combo, m = dense_ids(key, radix)
    counts = np.bincount(combo, minlength=m).astype(np.int64)
    # Any row of a combination carries its codes; with duplicate indices one write wins.
    representative = np.zeros(m, dtype=np.int64)
    representative[combo] = np.arange(len(combo))
    codes = np.stack([c[representative] for c in cols], axis=1).astype(np.int32) if m else np.zeros(
        (0, len(qis)), dtype=np.int32
    )
    if all_kept:
        row_combo = combo
    else:
        row_combo = np.full(n, -1, dtype=np.int64)
        row_combo[idx] = combo
    result = dict(
        names=tuple(q.name for q in qis),
        codes=codes,
        counts=counts,
        row_combo=row_combo,
        n_records=int(kept.sum()),
    )
    if sensitive is not None:
        s_kept, n_values = _sensitive_codes(sensitive, n, idx)
        pair_key = combo * max(n_values, 1) + s_kept
        uniq, pair_count = np.unique(pair_key, return_counts=True)
        result.update(
            pair_combo=uniq // max(n_values, 1),
            pair_value=uniq % max(n_values, 1),
            pair_count=pair_count.astype(np.int64),
            n_values=n_values,
        )
    return FrequencyTable(**result)


def level_vector(qis: Sequence[EncodedQI], levels: Mapping[str, int] | None) -> list[int]:
    """Levels in QI order; a missing name means level 0. Unknown names and levels beyond a
    hierarchy are errors naming the column."""
    levels = dict(levels or {})
    unknown = set(levels) - {q.name for q in qis}
    if unknown:
        name = sorted(unknown)[0]
        raise InputError(
            "a level is given for a column that is not a quasi-identifier",
            column=name,
            fix=f"use one of: {', '.join(q.name for q in qis)}",
        )
    out = []
    for q in qis:
        lvl = int(levels.get(q.name, 0))
        if not 0 <= lvl < q.n_levels:
            raise InputError(
                f"level {lvl} does not exist; the hierarchy has levels 0..{q.n_levels - 1}",
                column=q.name,
                fix="choose a level within the hierarchy",
            )
        out.append(lvl)
    return out


def group(ft: FrequencyTable, qis: Sequence[EncodedQI], levels: Sequence[int]) -> Grouping:
    """Equivalence classes of the frequency table generalised to `levels` (one per QI)."""
    cols = [q.maps[lvl][ft.codes[:, i]] for i, (q, lvl) in enumerate(zip(qis, levels))]
    key, radix = combine_keys(cols, [q.cardinality(lvl) for q, lvl in zip(qis, levels)])
    combo_class, n_classes = dense_ids(key, radix)
    sizes = np.bincount(combo_class, weights=ft.counts, minlength=n_classes).astype(np.int64)
    return Grouping(combo_class=combo_class, sizes=sizes)


def class_sizes(
    qis: Sequence[EncodedQI],
    levels: Mapping[str, int] | None = None,
    *,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """Sizes of the equivalence classes (ascending), for the review page's histogram."""
    ft = frequency_table(qis, keep=keep)
    return np.sort(group(ft, qis, level_vector(qis, levels)).sizes)


def row_classes(
    qis: Sequence[EncodedQI],
    levels: Mapping[str, int] | None = None,
    *,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """Equivalence class of every row (-1 for rows not kept)."""
    ft = frequency_table(qis, keep=keep)
    g = group(ft, qis, level_vector(qis, levels))
    out = np.full(len(ft.row_combo), -1, dtype=np.int64)
    ok = ft.row_combo >= 0
    out[ok] = g.combo_class[ft.row_combo[ok]]
    return out


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads ids so that a sum of them identifies a set."""
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def subject_classes(
    qis: Sequence[EncodedQI],
    subject: np.ndarray | pd.Series,
    levels: Mapping[str, int] | None = None,
    *,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Patient-level classes for a table with several rows per subject.

    A subject's quasi-identifying footprint is the *set* of generalised combinations over
    all their rows; two subjects are indistinguishable only when their sets are equal. The
    set is identified by a sum of 64-bit mixes of its members (order-free, collisions
    negligible). Returns (class of each subject, size of each class in subjects)."""
    n = check_qis(qis)
    subject = np.asarray(subject)
    if len(subject) != n:
        raise InputError(
            f"subject column has {len(subject)} values for {n} rows",
            column="subject",
            fix="pass the subject id of every row",
        )
    rc = row_classes(qis, levels, keep=keep)
    ok = rc >= 0
    subj_codes, subjects = pd.factorize(pd.Series(subject[ok]))
    width = int(rc.max()) + 1 if ok.any() else 1
    # distinct (subject, class) pairs by a sort and a neighbour comparison: np.unique's hash
    # took ten times as long on millions of rows
    pairs = np.sort(subj_codes.astype(np.int64) * width + rc[ok])
    if len(pairs):
        pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
    pair_subject, pair_class = pairs // width, pairs % width
    signature = np.zeros(len(subjects), dtype=np.uint64)
    if len(pairs):  # pairs are sorted by subject: one wrapping sum per subject
        starts = np.flatnonzero(np.concatenate([[True], pair_subject[1:] != pair_subject[:-1]]))
        signature[pair_subject[starts]] = np.add.reduceat(_mix64(pair_class), starts)
    cls, n_cls = pd.factorize(signature)
    sizes = np.bincount(cls, minlength=len(n_cls)).astype(np.int64)
    return cls.astype(np.int64), sizes


def restrict(ft: FrequencyTable, keep_combo: np.ndarray) -> FrequencyTable:
    """The frequency table of the kept combinations only (suppression removes whole classes,
    hence whole combinations), without going back to the rows."""
    keep_combo = np.asarray(keep_combo, dtype=bool)
    new_id = np.cumsum(keep_combo) - 1
    row_combo = np.where(ft.row_combo >= 0, ft.row_combo, 0)
    row_keep = keep_combo[row_combo] & (ft.row_combo >= 0)
    fields = dict(
        names=ft.names,
        codes=ft.codes[keep_combo],
        counts=ft.counts[keep_combo],
        row_combo=np.where(row_keep, new_id[row_combo], -1),
        n_records=int(ft.counts[keep_combo].sum()),
    )
    if ft.has_sensitive:
        pair_keep = keep_combo[ft.pair_combo]
        # Values that no kept row has leave the domain, as they would in the released file.
        present = np.zeros(max(ft.n_values, 1), dtype=bool)
        present[ft.pair_value[pair_keep]] = True
        value_id = np.cumsum(present) - 1
        fields.update(
            pair_combo=new_id[ft.pair_combo[pair_keep]],
            pair_value=value_id[ft.pair_value[pair_keep]],
            pair_count=ft.pair_count[pair_keep],
            n_values=int(present.sum()),
        )
    return FrequencyTable(**fields)
