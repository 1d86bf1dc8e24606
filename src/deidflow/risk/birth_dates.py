"""Event dates must not narrow a birth date below the level released for it.

A birth date released as a year (or withheld) is recovered when the subject's records carry
an event at birth: Synthea's first encounter of a newborn is their birth, so its date-shifted
start gives the birth date to within the shift (±30 days), whatever the birth date's level.
In general a released event date E, shifted by at most `max_days`, tells that the subject was
born before E + max_days, and, to one who knows that a first visit is at birth, when. So an
event date is released only when its true date (E - max_days at the earliest) lies after the
end of the subject's released birth interval: no released event can then be the birth event,
nor bound the birth date inside its interval. The others are withheld (released as missing):
only events from the subject's birth period (a newborn's first visits) are affected.

The released interval of a birth date generalised to a date hierarchy level ends at the end
of its day, month, quarter, year or decade; a birth date withheld ('*') is protected to its
year (HIPAA Safe Harbor keeps years; a finer rule would withhold every event date).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# date hierarchy levels (techniques.hierarchies.date_levels): day, month, quarter, year,
# [decade], '*'
_PERIODS = ("day", "month", "quarter", "year")


def interval_end(birth: pd.Series, level: int, *, decade: bool, top: int) -> pd.Series:
    """The last day of each birth date's released interval at `level`."""
    b = pd.to_datetime(birth, errors="coerce", format="mixed", utc=True).dt.tz_localize(None)
    b = b.dt.normalize()
    if level >= top:  # '*': protected to the year
        level = 3
    if decade and level == 4:
        start = pd.to_datetime((b.dt.year // 10 * 10).astype("Int64").astype(str) + "-01-01",
                               errors="coerce")
        return start + pd.DateOffset(years=10) - pd.Timedelta(days=1)
    period = _PERIODS[min(level, 3)]
    if period == "day":
        return b
    freq = {"month": "M", "quarter": "Q", "year": "Y"}[period]
    return b.dt.to_period(freq).dt.end_time.dt.normalize()


def narrowing(event: pd.Series, end: pd.Series, max_days: int) -> np.ndarray:
    """Which released (shifted) event dates could fall inside the birth interval ending at
    `end` (their true date, E - max_days at the earliest, not after it)."""
    e = pd.to_datetime(event, errors="coerce", format="mixed", utc=True).dt.tz_localize(None)
    return ((e.dt.normalize() - pd.Timedelta(days=int(max_days))) <= end).fillna(False).to_numpy(
        dtype=bool)


def birth_level(policy, levels: dict) -> tuple[int, bool, int] | None:
    """(level released, decade level present, top level) of the policy's birth-date column
    when it is a generalised date quasi-identifier; None otherwise."""
    bcol = policy.consent.birth_date_column
    spec = policy.tables[policy.subject_table].columns.get(bcol) if bcol else None
    if spec is None or spec.hierarchy is None or spec.hierarchy.kind != "date":
        return None
    if spec.technique == "drop":
        return (99, spec.hierarchy.decade, 5 if spec.hierarchy.decade else 4)
    level = levels.get(bcol, spec.params.get("level", 0)) if spec.technique == "generalise" else 0
    top = 5 if spec.hierarchy.decade else 4
    return int(level), bool(spec.hierarchy.decade), top


def protect_birth_dates(released: pd.DataFrame, subject_ids: pd.Series, table_spec, policy,
                        levels: dict, births: pd.Series, *, memo: dict | None = None,
                        subject_rows: np.ndarray | None = None) -> dict[str, int]:
    """Withhold, in place, the date-shifted event dates of `released` (one table's rows, with
    `subject_ids` their raw subjects) that would narrow each subject's released birth date.
    `births` maps raw subject id -> birth date. Returns withheld dates per column. `memo`, a
    dict kept across the tables of one partition (same `births`, policy and levels), holds
    the subjects' thresholds so they are computed once, not once per table.

    Vectorised as text: ISO dates order as their text, so an event narrows when its first ten
    characters sort before the subject's threshold (interval end - max_days); only the
    subjects whose threshold is later than the table's earliest event are looked up, once
    per run of equal ids (`idcolumns.run_heads`). `subject_rows`, when the caller knows it:
    each row's position in `births` (no id is looked up then)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = birth_level(policy, levels)
    if found is None or not len(births):
        return {}
    level, decade, top = found
    cols = [(c, int(spec.params.get("max_days", 30))) for c, spec in table_spec.columns.items()
            if spec.technique == "date_shift" and c in released]
    if not cols:
        return {}
    memo = {} if memo is None else memo
    counts = {}
    row_ids = None
    for col, max_days in cols:
        # released only when its true date (E - max_days at the earliest) is after the end
        # of the birth interval: no released event can then be the birth event
        ids, threshold = _thresholds(births, level, decade, top, max_days, memo)
        text = pa.chunked_array([pa.array(released[col].astype("string").array)]) \
            if not hasattr(released[col].array, "__arrow_array__") \
            else released[col].array.__arrow_array__()
        day = pc.utf8_slice_codeunits(text, 0, 10)
        earliest = pc.min(day).as_py()
        if earliest is None:
            continue
        at_risk = pc.fill_null(pc.greater(threshold, earliest), False)
        if not pc.any(at_risk).as_py():
            continue
        if subject_rows is not None:
            risky = np.asarray(at_risk.to_numpy(zero_copy_only=False), dtype=bool)
            idx = np.flatnonzero(risky[subject_rows])
            if not len(idx):
                continue
            limit = threshold.take(pa.array(subject_rows[idx]))
        else:
            if row_ids is None:
                row_ids = _row_ids(subject_ids)
            pos = _positions(row_ids, ids.filter(at_risk))
            idx = np.flatnonzero(pos >= 0)
            if not len(idx):
                continue
            limit = threshold.filter(at_risk).take(pa.array(pos[idx]))
        take = pa.array(idx)
        row_days = day.take(take)
        narrows = pc.fill_null(pc.less(row_days, limit), False)
        bad_rows = idx[np.asarray(narrows.to_numpy(zero_copy_only=False), dtype=bool)]
        if len(bad_rows):
            mask = np.zeros(len(released), dtype=bool)
            mask[bad_rows] = True
            released[col] = _withhold(released[col], mask)
            counts[col] = int(len(bad_rows))
    return counts


def _withhold(values: pd.Series, mask: np.ndarray) -> pd.Series:
    """`values` missing where `mask`, same dtype (for Arrow text, one Arrow kernel: pandas'
    mask goes through a general element setter that costs many times more)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(values.array, pd.arrays.ArrowStringArray):
        return values.mask(pd.Series(mask, index=values.index))
    arr = values.array.__arrow_array__()
    out = pc.if_else(pa.array(mask), pa.scalar(None, arr.type), arr)
    return pd.Series(pd.arrays.ArrowStringArray(out, dtype=values.dtype), index=values.index,
                     name=values.name, copy=False)


def _thresholds(births: pd.Series, level: int, decade: bool, top: int, max_days: int,
                memo: dict):
    """(subject ids, first event day released for each) as Arrow text, for one max_days."""
    import pyarrow as pa

    from deidflow.idcolumns import id_strings

    if max_days not in memo:
        if "end" not in memo:
            # per distinct birth date (tens of thousands for a million subjects): parsing
            # and formatting dates is the cost, and each value's answer is its own
            codes, uniques = pd.factorize(births, use_na_sentinel=True)
            memo["end"] = interval_end(pd.Series(np.asarray(uniques, dtype=object)), level,
                                       decade=decade, top=top)
            memo["rows"] = pa.array(codes, mask=codes < 0)
            memo["ids"] = id_strings(pd.Index(births.index.astype(str)))
        threshold = (memo["end"] + pd.Timedelta(days=max_days + 1)).dt.strftime("%Y-%m-%d")
        distinct = pa.array(threshold.to_numpy(dtype=object), pa.string(), from_pandas=True)
        memo[max_days] = (memo["ids"], distinct.take(memo["rows"]))
    return memo[max_days]


def _row_ids(subject_ids: pd.Series):
    """A table's subject ids as Arrow text, spelled as `births`' index is (str())."""
    from deidflow.idcolumns import id_strings

    if isinstance(subject_ids.dtype, pd.StringDtype) or pd.api.types.is_string_dtype(subject_ids.dtype):
        return id_strings(subject_ids)
    return id_strings(subject_ids.astype(str))


def _positions(row_ids, ids) -> np.ndarray:
    """Position of each row's id in `ids` (unique subject ids), -1 where absent: exact text
    comparison, one lookup per run of equal ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from deidflow.idcolumns import key_positions, run_heads, run_lengths, short_keys

    starts = run_heads(row_ids)
    probe = row_ids if starts is None else row_ids.take(pa.array(starts))
    pos = None
    keys, set_keys = short_keys(probe), short_keys(ids)
    if keys is not None and set_keys is not None and keys[1] == set_keys[1]:
        pos = key_positions(keys[0], set_keys[0], unique=True)
    if pos is None:
        pos = np.asarray(pc.index_in(probe, value_set=ids).fill_null(-1).to_numpy(
            zero_copy_only=False), dtype=np.int64)
    return pos if starts is None else np.repeat(pos, run_lengths(starts, len(row_ids)))
