"""The type each released column is written with.

Inputs are read as text (`io`), so that no technique meets a value it did not parse itself.
A column released as it came in (technique `keep`) or with its dates moved (`date_shift`)
should leave as what it is: numbers as numbers, dates as dates. The type is decided once per
column over every gated partition of the input, so that all partitions of a release agree:
integer when every value is a whole number without a leading zero (a code such as "02134"
stays text), number when every value is a decimal number, date when every value is an ISO
date, timestamp when every value is an ISO date and time, text otherwise (one "?" among
numbers keeps the column text: it is data, and deidflow does not decide what it means).

Parquet stores the type. CSV has none: the text is written as it came in, and the manifest
records the type of every column for either format. A generalised column is text: the label
of its hierarchy level ("40-44", "2019-Q3", "*").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable


import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Techniques whose output has the type of their input.
TYPED_TECHNIQUES = frozenset({"keep", "date_shift"})

_INTEGER = r"^[+-]?(?:0|[1-9][0-9]{0,17})$"
_NUMBER = r"^[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?Z?$"
_ORDER = ("integer", "number", "date", "timestamp")
_SAMPLE = 4096
_ARROW = {"integer": pa.int64(), "number": pa.float64(), "date": pa.date32(),
          "timestamp": pa.timestamp("s")}


def _fits(values: pa.Array, kind: str) -> bool:
    pattern = {"integer": _INTEGER, "number": _NUMBER, "date": _DATE, "timestamp": _TIMESTAMP}[kind]
    # Arrow's text-to-date cast accepts YYYY-MM-DD only: the cast alone decides a date (the
    # regular expression costs eight times the cast); numbers need the expression, because
    # the casts accept leading zeros, "nan" and "inf"
    if kind != "date" and not bool(pc.all(pc.match_substring_regex(values, pattern)).as_py()):
        return False
    try:
        _cast(values, kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OverflowError):
        return False
    return True


def _cast(values: pa.Array | pa.ChunkedArray, kind: str) -> pa.Array | pa.ChunkedArray:
    if kind == "timestamp":  # "Z" (UTC, as Synthea writes them) keeps its time zone
        utc = bool(pc.any(pc.ends_with(values, "Z")).as_py())
        naive = pc.cast(pc.replace_substring(pc.replace_substring(values, "Z", ""), "T", " "),
                        _ARROW[kind])
        return pc.assume_timezone(naive, "UTC") if utc else naive
    return pc.cast(values, _ARROW[kind])


def column_kind(parts: Iterable[pa.Array | pa.ChunkedArray]) -> str:
    """The one type that every part's non-missing text values fit, or "text"."""
    candidates = list(_ORDER)
    seen = False
    for values in parts:
        # a sample first: a text column fails every kind on its first values, without a
        # regular-expression pass over millions of rows, nor a copy of the whole column
        head, whole = _head(values)
        if not len(head):
            continue
        seen = True
        candidates = [k for k in candidates if _fits(head, k)]
        if not candidates:
            return "text"
        if whole is None:
            whole = _present_text(values)
        if len(whole) > _SAMPLE:
            candidates = [k for k in candidates if _fits(whole, k)]
        if not candidates:
            return "text"
    return candidates[0] if seen and candidates else "text"


def _present_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The non-missing values as one text array."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.large_string())
    return arr.filter(pc.is_valid(arr))


def _head(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array | None]:
    """The first `_SAMPLE` non-missing values as text, read from the column's first rows;
    and all of them when that read the whole column (else None)."""
    prefix = values.slice(0, 4 * _SAMPLE)
    present = _present_text(prefix)
    if len(prefix) == len(values):
        return present.slice(0, _SAMPLE), present
    if len(present) >= _SAMPLE:
        return present.slice(0, _SAMPLE), None
    whole = _present_text(values)  # a column that starts with many missing values
    return whole.slice(0, _SAMPLE), whole


def released_kinds(cache: Path, loaded: Any, gated_parts: Any) -> dict[str, dict[str, str]]:
    """Type of every released column, per table (cached in the run's work directory at
    `cache`, so that every partition of a run, on any worker, writes the same types).
    `gated_parts(table)` lists the table's gated work files."""
    if cache.is_file():
        return json.loads(cache.read_text())
    policy = loaded.policy
    out: dict[str, dict[str, str]] = {}
    for name, tspec in policy.tables.items():
        parts = list(gated_parts(name))
        kinds = {}
        for col, cspec in tspec.columns.items():
            if cspec.technique == "drop":
                continue
            if cspec.technique in TYPED_TECHNIQUES and parts:
                kinds[col] = column_kind(
                    pa.feather.read_table(p, columns=[col], memory_map=True).column(col)
                    for p in parts)
            else:
                kinds[col] = "text"
        out[name] = kinds
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out, sort_keys=True))
    os.replace(tmp, cache)  # concurrent writers write the same content
    return out


def with_kinds(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """`frame` with its typed columns converted from text (for formats that store types)."""
    out = {}
    for col in frame.columns:
        kind = kinds.get(col, "text")
        if kind == "text":
            out[col] = frame[col]
            continue
        arr = pa.chunked_array([frame[col].astype("string").array.__arrow_array__()]) \
            if not isinstance(frame[col].array, pd.arrays.ArrowStringArray) \
            else frame[col].array.__arrow_array__()
        typed = _cast(arr, kind)
        out[col] = pd.Series(pd.arrays.ArrowExtensionArray(typed), index=frame.index, name=col)
    return pd.DataFrame(out, index=frame.index)


def describe_kind(kind: str, technique: str) -> str:
    """The released type in words, for the manifest."""
    if technique == "generalise":
        return "text (the hierarchy's label at the chosen level)"
    return kind


__all__ = ["TYPED_TECHNIQUES", "column_kind", "released_kinds", "with_kinds", "describe_kind"]
