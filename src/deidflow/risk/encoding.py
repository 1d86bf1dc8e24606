"""Quasi-identifiers as integer codes, generalised by lookup.

A hierarchy is a table over the *distinct* values of a column: one row per value, one column
per level (level 0 is the value itself), as ARX stores them. Encoding factorises the column
once; each level is then an integer array indexed by the level-0 code, so generalising a whole
column to level L is `maps[L][codes]`: one gather, no strings (STYLE.md: ARX's integer codes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from deidflow.errors import InputError

LevelTable = pd.DataFrame  # index: distinct values; columns: levels 0..n-1 (labels as str)


@dataclass(frozen=True)
class EncodedQI:
    """One quasi-identifier, integer-coded, with its generalisation levels."""

    name: str
    codes: np.ndarray  # int32, per row: the code of the row's value at level 0
    maps: tuple[np.ndarray, ...]  # maps[L][code0] -> code at level L (int32); maps[0] identity
    labels: tuple[np.ndarray, ...]  # labels[L][codeL] -> label (object array of str)
    # The hierarchy's whole domain (Iyengar's loss counts it, not only the values present):
    # domain[L][codeL] = leaves of the hierarchy under that label; None = only the data's.
    domain: tuple[np.ndarray, ...] | None = None
    domain_size: int | None = None

    @property
    def n_levels(self) -> int:
        return len(self.maps)

    def cardinality(self, level: int) -> int:
        return len(self.labels[level])

    def at(self, level: int) -> np.ndarray:
        """Codes of every row at `level`."""
        return self.maps[level][self.codes]

    def decode(self, level: int) -> np.ndarray:
        """Labels of every row at `level`."""
        return self.labels[level][self.at(level)]


def encode(
    name: str,
    values: pd.Series,
    level_table: LevelTable | Callable[[pd.Index], LevelTable],
    *,
    source: str | None = None,
) -> EncodedQI:
    """Encode `values` with a level table (or a function that builds one for the distinct
    values). A value the table lacks is an error naming the column and how many values are
    missing — never the values: a cell typed into the wrong column may be a name or an ID."""
    codes, uniques = _factorize_as_text(values)
    table = level_table(uniques) if callable(level_table) else level_table
    table = table.copy()
    table.index = table.index.astype(str)
    missing = uniques.difference(table.index)
    if len(missing):
        raise InputError(
            f"{len(missing)} distinct value(s) of the column are missing from the hierarchy "
            "(not shown here: a value in the wrong column may identify a person)",
            file=source,
            column=name,
            fix=f"compare the distinct values of column '{name}' in the input with the hierarchy "
            "and add a row for each (one row per value, one column per level), or correct the data",
        )
    rows = table.loc[uniques]
    per_value, labels = [], []
    for col in rows.columns:
        lvl_codes, lvl_labels = pd.factorize(rows[col].astype(str).to_numpy(), sort=True)
        per_value.append(lvl_codes.astype(np.int32))
        labels.append(np.asarray(lvl_labels, dtype=object))
    # Level 0 may already merge distinct values (ages 91 and 97 are both "90+" at every
    # level): the codes are those of level 0, so that maps[0] is the identity and every
    # level is a function of the level-0 code, which the search's lattice relies on.
    level0 = per_value[0]
    maps = []
    for lvl, lvl_codes in enumerate(per_value):
        m = np.zeros(len(labels[0]), dtype=np.int32)
        m[level0] = lvl_codes
        if not np.array_equal(m[level0], lvl_codes):
            raise InputError(
                f"values with the same level-0 label get different labels at level {lvl}",
                file=source,
                column=name,
                fix="every value with the same label at one level must have the same label "
                "at every higher level",
            )
        maps.append(m)
    domain, domain_size = _domain(table, rows, labels)
    return EncodedQI(
        name=name,
        codes=level0[codes].astype(np.int32),
        maps=tuple(maps),
        labels=tuple(labels),
        domain=domain,
        domain_size=domain_size,
    )


def _domain(table: LevelTable, rows: LevelTable, labels: list[np.ndarray]):
    """Leaves of the whole hierarchy under each label present, when the hierarchy knows
    values the data lacks (an ARX file covering ages 1 to 100); None when it knows only the
    data's values (built-in kinds build their tables from the data)."""
    full = table[~table.index.duplicated()]
    if len(full) <= len(rows):
        return None, None
    out = []
    for lvl, col in enumerate(full.columns):
        counts = full[col].astype(str).value_counts()
        out.append(counts.reindex(labels[lvl]).fillna(1).to_numpy(dtype=np.int64))
    return tuple(out), int(len(full))


def _factorize_as_text(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes of `values` by their text (missing as "<NA>"), in sorted text order.

    Same answer as factorising `values.astype("string").fillna("<NA>")` with sort=True, but
    only the distinct values are turned into text and sorted: a million-row column costs one
    hash factorisation (or none, for a categorical), not a million string conversions. Only
    for dtypes where equal values have one text (strings, integers, booleans); others (object,
    floats) take the row-by-row path."""
    dtype = values.dtype.categories.dtype if isinstance(values.dtype, pd.CategoricalDtype) else values.dtype
    exact = dtype != object and (
        pd.api.types.is_string_dtype(dtype)
        or pd.api.types.is_integer_dtype(dtype)
        or pd.api.types.is_bool_dtype(dtype)
    )
    if not exact:  # equal values with different texts (0 and 0.0, 0.0 and -0.0): rows' own text
        codes, uniques = pd.factorize(values.astype("string").fillna("<NA>"), sort=True)
        return codes, pd.Index(uniques, dtype=object)
    raw, raw_uniques = pd.factorize(values, use_na_sentinel=True)
    text = pd.Series(np.asarray(raw_uniques, dtype=object)).astype("string")
    if (raw < 0).any():
        text = pd.concat([text, pd.Series(["<NA>"], dtype="string")], ignore_index=True)
        raw = np.where(raw < 0, len(text) - 1, raw)
    # Distinct raw values can share a text (1 and "1"): factorising the texts merges them.
    text_codes, uniques = pd.factorize(text.fillna("<NA>"), sort=True)
    return text_codes[raw], pd.Index(uniques, dtype=object)


def read_arx_hierarchy(path: str, delimiter: str = ";") -> LevelTable:
    """An ARX hierarchy CSV (no header; one row per value, one column per level)."""
    try:
        table = pd.read_csv(path, sep=delimiter, header=None, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(
            f"cannot read hierarchy: {exc}",
            file=path,
            fix="an ARX hierarchy is a CSV with one row per value and one column per level",
        ) from None
    if table.empty:
        raise InputError("hierarchy is empty", file=path, fix="add one row per value")
    # A row repeated exactly says nothing new (ARX's own FARS hierarchies have one): kept once.
    # A value with two different rows is ambiguous and refused below.
    repeat = table.duplicated()
    conflict = table[0].duplicated() & ~repeat
    if conflict.any():
        value = table[0][conflict].iloc[0]
        raise InputError(
            f"value {value!r} appears in two rows that differ",
            file=path,
            row=int(conflict.to_numpy().argmax()) + 1,
            fix="give each value one row (identical repeated rows are accepted)",
        )
    table = table[~repeat].reset_index(drop=True)
    table.columns = range(table.shape[1])
    return table.set_index(table[0], drop=False)
