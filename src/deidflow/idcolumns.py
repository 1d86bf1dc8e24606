"""The one reading and comparison of id columns: subject ids, link keys, consent subjects.

Ids are read as text (`id_strings`: Arrow strings, non-string ids as their str(),
missing stays missing and is never a member: fail closed) and compared as subjects in their
canonical form (`subject_ids`, `consent.subject_ids.canonical_ids`: NFKC, trimmed, a resident
ID's check character upper-cased). Extracts usually hold each
subject's rows together, so lookups are made once per run of equal ids (`run_heads`), and
short fixed-width ids are compared as 64-bit integers read from the Arrow buffer
(`short_keys`). The consent gate, the registry, the input checks (`io`), pseudonyms and date
shifting all read ids here, so they agree on what "the same subject" means. A floor module:
it imports nothing from deidflow but `consent.subject_ids` (itself a floor module), where
the canonical spelling of an id is defined.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def run_heads(values: pa.Array, min_run: float = 2) -> np.ndarray | None:
    """Where each run of equal values starts, or None when runs are shorter than `min_run` on
    average (too short to pay off).

    Child tables usually hold each subject's rows together (an extract ordered by patient or
    encounter), so a per-value answer (a lookup, a MAC) need only be computed for the first
    row of each run and repeated over the run: a neighbour comparison costs a fraction of a
    hash lookup. A missing value is a run of its own."""
    n = len(values)
    if n < 2:
        return None
    differs = pc.not_equal(values[1:], values[:-1]).fill_null(True)
    head = np.empty(n, dtype=bool)
    head[0] = True
    head[1:] = differs.to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(head)
    return None if len(starts) * min_run > n else starts


def run_lengths(starts: np.ndarray, n: int) -> np.ndarray:
    """Length of each run, from `run_heads`' starts and the number of values."""
    return np.diff(np.append(starts, n))


def id_strings(values: Sequence[str] | pd.Series | pd.Index | np.ndarray | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Ids as one Arrow string array (non-string ids as their str(); missing stays missing).
    Arrow text is taken as it is (no copy unless it is chunked)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)) and (
            pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    series = values if isinstance(values, (pd.Series, pd.Index)) else pd.Series(
        np.asarray(values, dtype=object))
    series = pd.Series(series, copy=False)
    if not (isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow"):
        series = series.astype("str") if series.dtype != object else series.astype("string[pyarrow]")
    arr = pa.array(series.array)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def short_keys(ids: pa.Array) -> tuple[np.ndarray, int] | None:
    """Ids that all have the same length of at most 8 bytes (and none missing), as one
    uint64 per id read straight from the Arrow buffer, big-endian so that ids in string order
    give keys in numeric order: equal ids, equal keys. None otherwise."""
    if ids.null_count or len(ids) == 0 or ids.type not in (pa.string(), pa.large_string()):
        return None
    lengths = pc.min_max(pc.binary_length(ids))
    width = lengths["min"].as_py()
    if width != lengths["max"].as_py() or not 0 < width <= 8:
        return None
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32 if ids.type == pa.string() else np.int64)
    raw = np.frombuffer(ids.buffers()[2], dtype=np.uint8, count=len(ids) * width,
                        offset=int(offsets[ids.offset]))
    if width < 8:
        padded = np.zeros((len(ids), 8), dtype=np.uint8)
        padded[:, :width] = raw.reshape(-1, width)
        raw = padded.ravel()
    return raw.view(">u8").astype(np.uint64), width


def key_positions(keys: np.ndarray, set_keys: np.ndarray, *, unique: bool) -> np.ndarray | None:
    """Position in set_keys of each key, -1 where absent, by binary search (an extract in id
    order gives sorted keys: no sort, and cache-friendly searches). With ``unique`` a set with
    a repeated key gives None."""
    order = None
    sorted_keys = set_keys
    if len(set_keys) > 1 and not (set_keys[1:] > set_keys[:-1]).all():
        order = np.argsort(set_keys, kind="stable")
        sorted_keys = set_keys[order]
        if unique and not (sorted_keys[1:] > sorted_keys[:-1]).all():
            return None
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    found = sorted_keys[at] == keys
    pos = at if order is None else order[at]
    return np.where(found, pos, -1)


def count_distinct(ids: pa.Array) -> int:
    """Distinct non-missing ids (as integer keys when they are short, see short_keys)."""
    keys = short_keys(ids)
    if keys is not None:
        k = keys[0]
        return len(k) if (k[1:] > k[:-1]).all() else int(len(np.unique(k)))
    return int(pc.count_distinct(ids).as_py())


def subject_ids(values: Sequence[str] | pd.Series | pd.Index | np.ndarray | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Subject ids as one Arrow string array in their canonical form, as the importers and
    the registry store them (`consent.subject_ids.canonical_ids`): the form in which
    `subject_mask`, `subject_rows` and `subject_positions` compare them."""
    from deidflow.consent.subject_ids import canonical_ids

    return canonical_ids(values)


def subject_mask(values: pd.Series | pd.Index | np.ndarray, subjects: pd.Index | pd.Series) -> np.ndarray:
    """True where a row's subject id is one of ``subjects`` (ids compared in canonical form; a
    missing id is never a member: fail closed). Vectorised in Arrow, one lookup per run of
    equal ids (`run_heads`)."""
    vals = subject_ids(values)
    value_set = subject_ids(subjects)
    n = len(vals)
    starts = run_heads(vals)
    probe = vals if starts is None else vals.take(pa.array(starts))
    keys, set_keys = short_keys(probe), short_keys(value_set)
    if keys is not None and set_keys is not None and keys[1] == set_keys[1]:
        hit = key_positions(keys[0], set_keys[0], unique=False) >= 0
    else:
        found = pc.is_in(probe, value_set=value_set)
        hit = np.asarray(found.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    return hit if starts is None else np.repeat(hit, run_lengths(starts, n))


def subject_rows(values: pd.Series | pd.Index | np.ndarray, subjects: pd.Index | pd.Series | pa.Array) -> np.ndarray:
    """For each row, the position of its subject id in ``subjects`` (unique ids), -1 where the
    id is not there or missing. One lookup per run of equal ids, like `subject_mask`; a
    release looks each link key up once and answers both "does it resolve?" and "did its
    subject consent?" from the positions."""
    vals = subject_ids(values)
    n = len(vals)
    starts = run_heads(vals)
    probe = vals if starts is None else vals.take(pa.array(starts))
    pos = subject_positions(probe, subjects)
    return pos if starts is None else np.repeat(pos, run_lengths(starts, n))


def subject_positions(values: pd.Series, subjects: pd.Index) -> np.ndarray:
    """Index of each value in ``subjects`` (unique), -1 where absent."""
    vals, value_set = subject_ids(values), subject_ids(subjects)
    keys, set_keys = short_keys(vals), short_keys(value_set)
    if keys is not None and set_keys is not None and keys[1] == set_keys[1]:
        pos = key_positions(keys[0], set_keys[0], unique=True)
        if pos is not None:
            return pos.astype(np.intp, copy=False)
    pos = pc.index_in(vals, value_set=value_set)
    return np.asarray(pos.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.intp)
