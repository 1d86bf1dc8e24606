"""Generalisation hierarchies: for each kind, the table of levels over a column's distinct values.

A level table has one row per distinct value and one column per level (level 0 = the value as
released at its most specific), exactly as ARX stores hierarchies, so ARX users can bring their
CSV files. `encode_qi` turns a column and its policy hierarchy into the integer-coded form the
search works on (`deidflow.risk.encoding.EncodedQI`); `generalise_values` releases a column at
one level. Both use the same tables, so what the search measured is what is released.

Levels are numbered over the *whole* hierarchy, whatever `min_level`/`max_level` say: level 2
of a date is always the quarter, in the policy, the search, the manifest and an ARX file. The
search restricts itself to `level_range(hierarchy, encoded.n_levels)`.

Every level is a function of the level below it (no level is more specific than the one under
it): `check_monotone` enforces this for user CSV files and the property tests for the built-in
kinds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from deidflow.errors import InputError, PolicyError
from deidflow.policy import Hierarchy
from deidflow.risk.encoding import EncodedQI, LevelTable, encode, read_arx_hierarchy

NA_LABEL = "<NA>"  # what `encode` turns a null into; a null stays null at every level
SUPPRESSED = "*"
DEFAULT_AGE_WIDTHS = (5, 10, 20)
DEFAULT_AGE_TOP = 90  # HIPAA Safe Harbor / GB/T 39725 practice: ages over 89 grouped as "90+"


def _fmt(x: float) -> str:
    """Compact number for labels: 20 not 20.0, 2.5 as 2.5."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _numeric(name: str, uniques: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """Numbers of the distinct values and the mask of nulls; a non-number is an error."""
    is_na = np.asarray(uniques == NA_LABEL)
    nums = pd.to_numeric(pd.Series(uniques.where(~is_na, None), dtype=object), errors="coerce")
    bad = nums.isna().to_numpy() & ~is_na
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} distinct value(s) are not numbers",
            column=name,
            fix="clean the column, or use a csv hierarchy for coded values",
        )
    return nums.to_numpy(dtype=float, na_value=np.nan), is_na


def _check_widths(name: str, widths: list[float]) -> None:
    """Each band width must be a multiple of the one below, or a band of the upper level could
    straddle two of the lower one (an upper level more specific than the lower)."""
    if any(w <= 0 for w in widths):
        raise PolicyError(f"column '{name}': hierarchy widths must be positive", fix="e.g. [5, 10, 20]")
    for lo, hi in zip(widths, widths[1:]):
        ratio = hi / lo
        if hi <= lo or abs(ratio - round(ratio)) > 1e-9:
            raise PolicyError(
                f"column '{name}': hierarchy widths {widths} are not nested ({hi} is not a "
                f"multiple of {lo} greater than it)",
                fix="use increasing widths where each is a multiple of the previous, e.g. "
                "[5, 10, 20]",
            )


def _band_labels(x: np.ndarray, width: float, *, inclusive_int: bool) -> np.ndarray:
    lo = np.floor(x / width) * width
    hi = lo + width
    if inclusive_int:
        return np.array([f"{_fmt(a)}-{_fmt(b - 1)}" for a, b in zip(lo, hi)], dtype=object)
    return np.array([f"[{_fmt(a)}, {_fmt(b)})" for a, b in zip(lo, hi)], dtype=object)


def _coded(
    x: np.ndarray, labels: np.ndarray, bottom: float | None, top: float | None, top_label: str
) -> np.ndarray:
    out = labels.copy()
    if top is not None:
        out[x >= top] = top_label
    if bottom is not None:
        out[x < bottom] = f"<{_fmt(bottom)}"
    return out


def interval_levels(name: str, uniques: pd.Index, h: Hierarchy) -> LevelTable:
    """Numeric bands of `widths` (aligned at 0), values >= top / < bottom coded at every level,
    then '*'."""
    widths = list(h.widths or [])
    _check_widths(name, widths)
    x, is_na = _numeric(name, uniques)
    top_label = f">={_fmt(h.top)}" if h.top is not None else ""
    base = np.array([_fmt(v) if not np.isnan(v) else NA_LABEL for v in x], dtype=object)
    cols = [_coded(x, base, h.bottom, h.top, top_label)]
    for w in widths:
        cols.append(_coded(x, _band_labels(np.nan_to_num(x), w, inclusive_int=False), h.bottom, h.top, top_label))
    cols.append(np.full(len(x), SUPPRESSED, dtype=object))
    return _table(uniques, cols, is_na)


def age_levels(name: str, uniques: pd.Index, h: Hierarchy) -> LevelTable:
    """Age in whole years; ages >= top (default 90) are "90+" at every level, including level 0,
    because a single very old age identifies; then bands of `widths` (default 5, 10, 20)
    clipped below the top; then '*'."""
    widths = list(h.widths or DEFAULT_AGE_WIDTHS)
    _check_widths(name, widths)
    top = float(h.top if h.top is not None else DEFAULT_AGE_TOP)
    x, is_na = _numeric(name, uniques)
    years = np.floor(np.nan_to_num(x))
    if ((years < 0) & ~is_na).any():
        raise InputError(f"{int(((years < 0) & ~is_na).sum())} negative age value(s)", column=name,
                         fix="correct the ages or the column's hierarchy kind")
    top_label = f"{_fmt(top)}+"
    cols = [_coded(years, np.array([_fmt(v) for v in years], dtype=object), h.bottom, top, top_label)]
    for w in widths:
        lo = np.floor(years / w) * w
        hi = np.minimum(lo + w, top)  # the band below the top ends at top-1 ("80-89")
        labels = np.array([f"{_fmt(a)}-{_fmt(b - 1)}" for a, b in zip(lo, hi)], dtype=object)
        cols.append(_coded(years, labels, h.bottom, top, top_label))
    cols.append(np.full(len(x), SUPPRESSED, dtype=object))
    return _table(uniques, cols, is_na)


def date_levels(name: str, uniques: pd.Index, h: Hierarchy) -> LevelTable:
    """day → month → quarter → year → ('decade', if asked) → '*'. Any time of day is dropped
    at level 0."""
    is_na = np.asarray(uniques == NA_LABEL)
    d = pd.to_datetime(pd.Series(uniques.where(~is_na, None), dtype=object), errors="coerce",
                       format="mixed")
    bad = d.isna().to_numpy() & ~is_na
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} distinct value(s) are not dates",
            column=name,
            fix="write dates as YYYY-MM-DD (ISO 8601), or clean the column",
        )
    d = d.fillna(pd.Timestamp("2000-01-01"))
    cols = [
        d.dt.strftime("%Y-%m-%d").to_numpy(dtype=object),
        d.dt.strftime("%Y-%m").to_numpy(dtype=object),
        (d.dt.year.astype(str) + "-Q" + d.dt.quarter.astype(str)).to_numpy(dtype=object),
        d.dt.year.astype(str).to_numpy(dtype=object),
    ]
    if h.decade:
        cols.append(((d.dt.year // 10) * 10).astype(str).add("s").to_numpy(dtype=object))
    cols.append(np.full(len(d), SUPPRESSED, dtype=object))
    return _table(uniques, cols, is_na)


def _digit_codes(name: str, uniques: pd.Index, width: int, what: str) -> tuple[pd.Series, np.ndarray]:
    is_na = np.asarray(uniques == NA_LABEL)
    s = pd.Series(uniques, dtype=object).str.strip()
    ok = s.str.fullmatch(rf"\d{{{width}}}").fillna(False).to_numpy(dtype=bool)
    bad = ~ok & ~is_na
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} distinct value(s) are not {width}-digit {what}",
            column=name,
            fix=f"write {what} as {width} digits (a leading zero kept: read the column as text)",
        )
    return s.where(ok, "0" * width), is_na


def region_levels(name: str, uniques: pd.Index, h: Hierarchy) -> LevelTable:
    """GB/T 2260 administrative division: county (6 digits) → prefecture (4) → province (2) →
    country ("CN"). Nothing coarser is useful in a Chinese dataset."""
    s, is_na = _digit_codes(name, uniques, 6, "GB/T 2260 region codes")
    cols = [s.to_numpy(dtype=object), s.str.slice(0, 4).to_numpy(dtype=object),
            s.str.slice(0, 2).to_numpy(dtype=object), np.full(len(s), "CN", dtype=object)]
    return _table(uniques, cols, is_na)


def postcode_levels(name: str, uniques: pd.Index, h: Hierarchy) -> LevelTable:
    """Chinese postcodes: 6 → 4 → 2 → 0 digits kept ("200031" → "2000**" → "20****" → "*")."""
    is_na = np.asarray(uniques == NA_LABEL)
    bad = ~pd.Series(uniques, dtype=object).str.strip().str.fullmatch(r"\d{6}").fillna(False).to_numpy(dtype=bool) & ~is_na
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} distinct value(s) are not 6-digit Chinese postcodes",
            column=name,
            fix="for postcodes of another country use the prefix hierarchy, e.g. US ZIP "
            "codes: 'hierarchy: {kind: prefix, keep: [3, 1]}' (read the column as text to "
            "keep leading zeros)",
        )
    s, is_na = _digit_codes(name, uniques, 6, "postcodes")
    cols = [s.to_numpy(dtype=object), (s.str.slice(0, 4) + "**").to_numpy(dtype=object),
            (s.str.slice(0, 2) + "****").to_numpy(dtype=object), np.full(len(s), SUPPRESSED, dtype=object)]
    return _table(uniques, cols, is_na)


def prefix_levels(name: str, uniques: pd.Index, h: Hierarchy) -> LevelTable:
    """Codes generalised by their leading characters (postcodes of any country, ICD codes):
    level i keeps `keep[i-1]` leading characters and stars the rest ("02134" -> "021**"),
    then '*'. Without `keep`, one character fewer per level down to one. Values may differ in
    length; a value no longer than the characters kept is kept whole at that level."""
    is_na = np.asarray(uniques == NA_LABEL)
    s = pd.Series(uniques, dtype=object).where(~is_na, "").astype(str)
    lengths = s.str.len().to_numpy()
    longest = int(lengths.max()) if len(lengths) else 0
    keep = list(h.keep) if h.keep is not None else list(range(longest - 1, 0, -1))
    cols = [s.to_numpy(dtype=object)]
    for k in keep:
        stars = np.maximum(lengths - k, 0)
        cols.append((s.str.slice(0, k) + pd.Series(stars).map(lambda n: "*" * n).to_numpy()
                     ).to_numpy(dtype=object))
    cols.append(np.full(len(s), SUPPRESSED, dtype=object))
    return _table(uniques, cols, is_na)


def mask_levels(name: str, uniques: pd.Index, h: Hierarchy) -> LevelTable:
    """Level i replaces the last i characters by '*' (all of them for shorter values)."""
    is_na = np.asarray(uniques == NA_LABEL)
    s = pd.Series(uniques, dtype=object).where(~is_na, "")
    lengths = s.str.len().to_numpy()
    longest = int(lengths.max()) if len(lengths) else 0
    cols = []
    for i in range(longest + 1):
        keep = np.maximum(lengths - i, 0)
        cols.append(np.array([v[:k] + "*" * (len(v) - k) for v, k in zip(s, keep)], dtype=object))
    return _table(uniques, cols, is_na)


def csv_levels(name: str, uniques: pd.Index, h: Hierarchy, base_dir: Path | None) -> LevelTable:
    """An ARX hierarchy file (no header; one row per value, one column per level)."""
    path = Path(h.file or "")
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    table = read_arx_hierarchy(str(path), delimiter=h.delimiter)
    check_monotone(table, source=str(path), column=name)
    table = table.astype(object)
    if (uniques == NA_LABEL).any() and NA_LABEL not in table.index:
        # nulls are not in ARX files; they stay null at every level
        na_row = pd.DataFrame([[NA_LABEL] * table.shape[1]], index=[NA_LABEL], columns=table.columns)
        table = pd.concat([table, na_row])
    return table


def check_monotone(table: LevelTable, *, source: str | None = None, column: str | None = None) -> None:
    """Refuse a hierarchy in which some level splits a group of the level below (a value
    generalising to two different labels): that level would be more specific than its input."""
    for lvl in range(1, table.shape[1]):
        below, above = table.iloc[:, lvl - 1].astype(str), table.iloc[:, lvl].astype(str)
        per_group = above.groupby(below.to_numpy()).nunique()
        split = per_group[per_group > 1]
        if len(split):
            raise InputError(
                f"level {lvl} splits the level-{lvl - 1} group {split.index[0]!r} into "
                f"{int(split.iloc[0])} labels, so it is not a generalisation of level {lvl - 1}",
                file=source,
                column=column,
                fix="every value with the same label at one level must have the same label at "
                "every higher level",
            )


def _table(uniques: pd.Index, cols: list[np.ndarray], is_na: np.ndarray) -> LevelTable:
    data = {}
    for i, c in enumerate(cols):
        c = np.asarray(c, dtype=object).copy()
        c[is_na] = NA_LABEL
        data[i] = c
    return pd.DataFrame(data, index=pd.Index(uniques, dtype=object))


_BUILDERS: dict[str, Callable[[str, pd.Index, Hierarchy], LevelTable]] = {
    "interval": interval_levels,
    "age": age_levels,
    "date": date_levels,
    "region": region_levels,
    "postcode": postcode_levels,
    "prefix": prefix_levels,
    "mask": mask_levels,
}


def hierarchy_levels(
    name: str, uniques: pd.Index, hierarchy: Hierarchy, base_dir: Path | None = None
) -> LevelTable:
    """The level table of `hierarchy` over the distinct values `uniques` (as text, nulls as
    "<NA>")."""
    if hierarchy.kind == "csv":
        return csv_levels(name, uniques, hierarchy, base_dir)
    return _BUILDERS[hierarchy.kind](name, uniques, hierarchy)


def encode_qi(
    name: str, values: pd.Series, hierarchy: Hierarchy, base_dir: Path | None = None
) -> EncodedQI:
    """A quasi-identifier column as integer codes with one map per level of its hierarchy.

    The maps span every level of the hierarchy (level numbers keep their meaning); the search
    must only consider `level_range(hierarchy, encoded.n_levels)`.
    """
    source = None
    if hierarchy.kind == "csv" and hierarchy.file:
        p = Path(hierarchy.file)
        source = str(p if p.is_absolute() or base_dir is None else Path(base_dir) / p)
    return encode(
        name,
        values,
        lambda uniques: hierarchy_levels(name, uniques, hierarchy, base_dir),
        source=source,
    )


def level_range(hierarchy: Hierarchy, n_levels: int, *, column: str | None = None) -> range:
    """The levels the search may choose: min_level..max_level (max_level clipped to the top)."""
    top = n_levels - 1
    lo = hierarchy.min_level
    hi = top if hierarchy.max_level is None else min(hierarchy.max_level, top)
    if lo > top:
        raise PolicyError(
            f"hierarchy min_level {lo} is above the top level {top} of this hierarchy",
            key=f"hierarchy.min_level" if column is None else None,
            column=column,
            fix=f"use a min_level from 0 to {top}",
        )
    return range(lo, hi + 1)


def decode_level(encoded: EncodedQI, level: int, index: pd.Index, name: str | None = None) -> pd.Series:
    """The released column at `level`: labels per row, nulls back to null."""
    # The level's labels once each (a few hundred strings), then one Arrow gather per row:
    # no Python string per row. The missing-value label goes back to null.
    import pyarrow as pa

    labels = pd.array(encoded.labels[level], dtype="string")
    labels = labels.__arrow_array__(pa.large_string())
    labels = pa.array([None if v == NA_LABEL else v for v in labels.to_pylist()], pa.large_string())
    rows = labels.take(pa.array(encoded.at(level)))
    return pd.Series(pd.arrays.ArrowStringArray(rows), index=index, name=name, copy=False)


def generalise_values(
    name: str, values: pd.Series, hierarchy: Hierarchy, level: int, base_dir: Path | None = None
) -> pd.Series:
    """`values` generalised to `level` of `hierarchy`."""
    encoded = encode_qi(name, values, hierarchy, base_dir)
    if not 0 <= level < encoded.n_levels:
        raise PolicyError(
            f"column '{name}': level {level} does not exist; this {hierarchy.kind} hierarchy has "
            f"levels 0 to {encoded.n_levels - 1}",
            column=name,
            fix=f"choose a level from 0 to {encoded.n_levels - 1}",
        )
    return decode_level(encoded, level, values.index, values.name)
