"""Date shifting per subject: every date of one subject moves by the same keyed offset.

Intervals within a subject (admission to discharge, diagnosis to lab result) are kept exactly,
which is what a model of a patient's course needs, while calendar dates no longer match an
outside record (a news report of an admission on a given day). The offset is derived from the
subject id with a key of this recipient and agreement, so it is the same in every table and
every run for one recipient, and differs between recipients (two recipients cannot align their
copies to undo it).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from deidflow.errors import InputError, KeyCustodyError
from deidflow.idcolumns import run_heads, run_lengths
from deidflow.policy import Column, Role
from deidflow.techniques._params import int_param
from deidflow.techniques.base import ApplyContext, Technique
from deidflow.techniques.pseudonymise import STR_DTYPE, _arrow_text, cmac_tags

DEFAULT_SCOPE = "date_shift"  # one scope for every table, so one subject has one offset
ALGORITHM = "aes-cmac"  # bound into the offset key's derivation (KeyRing.derive)


def _per_subject(r: np.ndarray, max_days: int) -> np.ndarray:
    """64 keyed bits → an offset uniform over -max_days..max_days except 0. The modulo bias
    (< 2^-50) is negligible; zero is skipped so that no subject's dates are left unshifted."""
    off = (r % np.uint64(2 * max_days)).astype(np.int64) - max_days  # -max..max-1
    return np.where(off >= 0, off + 1, off)  # skip 0 → -max..max


def subject_offsets(
    subject_ids: pd.Series, key: bytes, max_days: int, *, memo: dict[Any, Any] | None = None
) -> np.ndarray:
    """Offsets in days, one per row, keyed per subject: the first 64 bits of the AES-CMAC of
    the subject id. Null subject ids get 0.

    The MAC is computed per row, not per distinct subject: one AES block per id costs less
    than the string hash table that finding the distinct ids (or looking them up in a memo)
    would. With a `memo`, a second date column of the same table (the same subject-id array)
    reuses the first column's offsets.
    """
    arr = _arrow_text(subject_ids)
    held = None
    if memo is not None:
        # Identity of the Arrow data (immutable, and kept alive by the memo) and a one-way digest
        # of the key: never the key itself.
        held = getattr(getattr(subject_ids, "array", None), "_pa_array", None)
        mkey = ("date_shift", hashlib.sha256(b"deidflow/memo/v1" + key).hexdigest(), max_days)
        cached = memo.get(mkey)
        if cached is not None and held is not None and cached[0] is held:
            return cached[1]
    starts = run_heads(arr)  # one MAC per run of rows of one subject
    probe = arr if starts is None else arr.take(pa.array(starts))
    r = np.ascontiguousarray(cmac_tags(probe, key)[:, :8]).view(">u8").ravel()
    out = _per_subject(r, max_days)
    if starts is not None:
        out = np.repeat(out, run_lengths(starts, len(arr)))
    if arr.null_count:
        out[~np.asarray(arr.is_valid())] = 0
    if memo is not None and held is not None:
        memo[mkey] = (held, out)
    return out


def _bad_dates(bad: np.ndarray, column: str, table: str | None) -> InputError:
    return InputError(
        f"{int(bad.sum())} value(s) are not dates (first at row {int(np.argmax(bad))})",
        file=table,
        column=column,
        fix="write dates as YYYY-MM-DD or ISO 8601 timestamps (one time-zone convention per column)",
    )


def _move(days: pa.Array, offsets: np.ndarray, column: str, table: str | None,
          mask: np.ndarray | None = None) -> pa.Array:
    """date32 `days` moved by `offsets`, as YYYY-MM-DD text (Arrow's cast, no Python objects).
    Rows outside `mask` (and null days) come out null."""
    valid = np.asarray(days.is_valid())
    if mask is not None:
        valid &= mask
    moved = days.cast(pa.int32()).fill_null(0).to_numpy() + offsets
    outside = valid & ((moved > 2932896) | (moved < -719162))  # years 1..9999 (ISO 8601 basic)
    if outside.any():
        raise InputError(
            f"{int(outside.sum())} date(s) would move outside the years 1 to 9999 "
            f"(first at row {int(np.argmax(outside))})",
            file=table, column=column, fix="correct the implausible dates in the source",
        )
    return _iso_text(moved.astype(np.int32), valid)


def _iso_text(days: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Days since 1970-01-01 as YYYY-MM-DD text. A column's dates span a few hundred thousand
    days at most, so each distinct day is formatted once (Arrow's cast) into a table of
    10-byte rows and the column is one gather from it, straight into Arrow's data buffer."""
    n = len(days)
    live = days[valid] if not valid.all() else days
    if not len(live):
        return pa.nulls(n, pa.large_string())
    lo, hi = int(live.min()), int(live.max())
    if hi - lo > 4 * n + 1000:  # sparse: the table would be larger than the column
        return pa.array(days, mask=~valid).cast(pa.date32()).cast(pa.large_string())
    table = pa.array(np.arange(lo, hi + 1, dtype=np.int32)).cast(pa.date32()).cast(pa.large_string())
    rows = np.frombuffer(table.buffers()[2], dtype=np.uint8)[: 10 * (hi - lo + 1)].reshape(-1, 10)
    mat = rows[np.where(valid, days - lo, 0)]
    offsets = np.arange(0, 10 * (n + 1), 10, dtype=np.int64)
    bitmap = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.Array.from_buffers(pa.large_string(), n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(mat)],
                                 null_count=int(n - valid.sum()))


def shift_dates(values: pd.Series, offsets: np.ndarray, *, column: str = "", table: str | None = None) -> pd.Series:
    """`values` moved by `offsets` days. Datetime columns stay datetime. Text that starts with
    an ISO date (YYYY-MM-DD, optionally followed by a time and offset) has only that date
    replaced, so every timestamp keeps its own time and UTC offset text whatever the mix in the
    column; other date spellings are parsed and written back as YYYY-MM-DD (with the time, if
    any, as HH:MM:SS). Text comes back as Arrow-backed "str"."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if pd.api.types.is_datetime64_any_dtype(values):
        return values + pd.to_timedelta(offsets, unit="D")
    arr = _arrow_text(values)
    try:  # the usual column: every value a plain YYYY-MM-DD (Arrow's cast is strict)
        out = _move(arr.cast(pa.date32()), offsets, column, table)
    except pa.ArrowInvalid:
        blank = pc.equal(pc.utf8_trim_whitespace(arr), "")
        try:  # plain dates and blanks (blanks are missing dates: null, as always)
            if not pc.any(blank).as_py():
                raise pa.ArrowInvalid("no blanks: not plain dates")
            out = _move(pc.if_else(blank, pa.scalar(None, pa.large_string()), arr).cast(pa.date32()),
                        offsets, column, table)
        except pa.ArrowInvalid:
            out = _shift_mixed(arr, offsets, column, table)
    return pd.Series(pd.array(out, dtype=STR_DTYPE), index=values.index, name=values.name, copy=False)


def _shift_mixed(arr: pa.Array, offsets: np.ndarray, column: str, table: str | None) -> pa.Array:
    """Columns with timestamps, other spellings or blanks: ISO-dated values get their first
    ten characters replaced; the rest are parsed by pandas (a minority, usually none)."""
    n = len(arr)
    present = np.asarray(pc.not_equal(pc.utf8_trim_whitespace(arr), "").fill_null(False))
    iso = np.asarray(pc.match_substring_regex(arr, r"^\d{4}-\d{2}-\d{2}(?:$|[T ])").fill_null(False)) & present
    out = pa.nulls(n, pa.large_string())
    if iso.any():
        text = pc.if_else(pa.array(iso), pc.utf8_slice_codeunits(arr, 0, 10), pa.scalar(None, pa.large_string()))
        head = pc.strptime(text, format="%Y-%m-%d", unit="s", error_is_null=True).cast(pa.date32())
        # strptime rolls 2024-02-30 over to March: a date is real only if it reads back the same
        same = pc.equal(head.cast(pa.large_string()), text).fill_null(False)
        bad = iso & ~np.asarray(same)
        if bad.any():
            raise _bad_dates(bad, column, table)
        shifted = _move(head, offsets, column, table, iso)
        out = pc.binary_join_element_wise(shifted, pc.utf8_slice_codeunits(arr, 10), pa.scalar("", pa.large_string()))
    rest = present & ~iso
    if rest.any():
        text = pd.Series(arr.filter(pa.array(rest)).to_pylist(), dtype="object")
        try:
            parsed = pd.to_datetime(text, errors="coerce", format="mixed")
        except (ValueError, TypeError):  # e.g. a mix of time zones outside ISO form
            raise _bad_dates(rest, column, table) from None
        bad = np.zeros(n, dtype=bool)
        bad[np.flatnonzero(rest)] = parsed.isna().to_numpy()
        if bad.any():
            raise _bad_dates(bad, column, table)
        moved = parsed + pd.to_timedelta(offsets[rest], unit="D")
        timed = (moved != moved.dt.normalize()).any()
        formatted = moved.dt.strftime("%Y-%m-%dT%H:%M:%S" if timed else "%Y-%m-%d").to_numpy(dtype=object)
        out = pc.replace_with_mask(out, pa.array(rest), pa.array(formatted, type=pa.large_string()))
    return out


class DateShift(Technique):
    name = "date_shift"
    roles = frozenset({Role.quasi_identifier, Role.sensitive, Role.insensitive})
    allowed_params = frozenset({"max_days", "scope"})

    def check(self, column: str, spec: Column) -> None:
        super().check(column, spec)
        int_param(column, spec.params, "max_days", 180, lo=1, hi=3650, example="max_days: 180")
        scope = spec.params.get("scope", DEFAULT_SCOPE)
        if not isinstance(scope, str) or not scope:
            from deidflow.errors import PolicyError

            raise PolicyError(
                f"column '{column}': params.scope must be a non-empty string",
                fix=f"omit it (default '{DEFAULT_SCOPE}': one offset per subject in all tables)",
            )

    def apply(self, values: pd.Series, spec: Column, ctx: ApplyContext) -> pd.Series:
        if ctx.keyring is None:
            raise KeyCustodyError(
                "date shifting needs the key ring", column=ctx.column,
                fix="load it with KeyRing.from_policy(loaded) and pass it in the ApplyContext",
            )
        max_days = spec.params.get("max_days", 180)
        scope = spec.params.get("scope", DEFAULT_SCOPE)
        key = ctx.keyring.derive(scope, purpose="date_shift", algorithm=ALGORITHM)
        offsets = subject_offsets(ctx.subject_ids, key, max_days, memo=ctx.memo)
        ctx.count("dates_shifted", int(values.notna().sum()))
        return shift_dates(values, offsets, column=ctx.column, table=ctx.table)

    def describe(self, spec: Column, ctx: ApplyContext) -> dict[str, Any]:
        scope = spec.params.get("scope", DEFAULT_SCOPE)
        out: dict[str, Any] = {
            "technique": self.name,
            "params": {"max_days": spec.params.get("max_days", 180), "scope": scope,
                       "algorithm": "offset from AES-CMAC (NIST SP 800-38B) of the subject id, "
                       "key derived with HKDF-SHA256 per recipient/agreement/scope/algorithm"},
        }
        if ctx.keyring is not None:
            out["key_fingerprint"] = ctx.keyring.fingerprint(scope, purpose="date_shift", algorithm=ALGORITHM)
        return out
