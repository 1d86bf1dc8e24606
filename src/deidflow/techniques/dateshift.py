"""Date shifting per subject: every date of one subject moves by the same keyed offset.

Intervals within a subject (admission to discharge, diagnosis to lab result) are kept exactly,
which is what a model of a patient's course needs, while calendar dates no longer match an
outside record (a news report of an admission on a given day). The offset is derived from the
subject id with a key of this recipient and agreement, so it is the same in every table and
every run for one recipient, and differs between recipients (two recipients cannot align their
copies to undo it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deidflow.errors import InputError, KeyCustodyError
from deidflow.policy import Column, Role
from deidflow.techniques._params import int_param
from deidflow.techniques.base import ApplyContext, Technique
from deidflow.techniques.pseudonymise import hmac_digests

DEFAULT_SCOPE = "date_shift"  # one scope for every table, so one subject has one offset


def subject_offsets(subject_ids: pd.Series, key: bytes, max_days: int) -> np.ndarray:
    """Offsets in days, uniform over -max_days..max_days except 0, one per row, keyed per
    subject. Zero is excluded so that no subject's dates are left unshifted."""
    codes, uniques = pd.factorize(subject_ids.astype("str"), use_na_sentinel=True)
    digests = hmac_digests(key, uniques.tolist())
    # 64 bits reduced modulo 2*max_days: the bias (< 2^-50) is negligible.
    r = np.frombuffer(digests, dtype=">u8").reshape(-1, 4)[:, 0] % np.uint64(2 * max_days)
    per_subject = r.astype(np.int64) - max_days  # -max..max-1
    per_subject = np.where(per_subject >= 0, per_subject + 1, per_subject)  # skip 0 → -max..max
    out = np.zeros(len(codes), dtype=np.int64)
    present = codes >= 0
    out[present] = per_subject[codes[present]] if len(per_subject) else 0
    return out


def _bad_dates(bad: np.ndarray, column: str, table: str | None) -> InputError:
    return InputError(
        f"{int(bad.sum())} value(s) are not dates (first at row {int(np.argmax(bad))})",
        file=table,
        column=column,
        fix="write dates as YYYY-MM-DD or ISO 8601 timestamps (one time-zone convention per column)",
    )


def shift_dates(values: pd.Series, offsets: np.ndarray, *, column: str = "", table: str | None = None) -> pd.Series:
    """`values` moved by `offsets` days. Datetime columns stay datetime. Text that starts with
    an ISO date (YYYY-MM-DD, optionally followed by a time and offset) has only that date
    replaced, so every timestamp keeps its own time and UTC offset text whatever the mix in the
    column; other date spellings are parsed and written back as YYYY-MM-DD (with the time, if
    any, as HH:MM:SS)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if pd.api.types.is_datetime64_any_dtype(values):
        return values + pd.to_timedelta(offsets, unit="D")
    text = values.astype("string")
    present = (text.str.strip().fillna("") != "").to_numpy(dtype=bool)
    iso = text.str.match(r"\d{4}-\d{2}-\d{2}(?:$|[T ])").fillna(False).to_numpy(dtype=bool) & present
    out = pd.Series(pd.NA, index=values.index, dtype="string", name=values.name)
    if iso.any():
        head = pd.to_datetime(text.str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
        bad = iso & head.isna().to_numpy()
        if bad.any():
            raise _bad_dates(bad, column, table)
        days = head.to_numpy(dtype="datetime64[D]") + offsets.astype("timedelta64[D]")
        shifted = pd.Series(np.datetime_as_string(days, unit="D"), index=values.index, dtype="string")
        out = out.mask(iso, shifted + text.str.slice(10))
    rest = present & ~iso
    if rest.any():
        try:
            parsed = pd.to_datetime(text[rest], errors="coerce", format="mixed")
        except (ValueError, TypeError):  # e.g. a mix of time zones outside ISO form
            raise _bad_dates(rest, column, table) from None
        bad = np.zeros(len(text), dtype=bool)
        bad[np.flatnonzero(rest)] = parsed.isna().to_numpy()
        if bad.any():
            raise _bad_dates(bad, column, table)
        moved = parsed + pd.to_timedelta(offsets[rest], unit="D")
        timed = (moved != moved.dt.normalize()).any()
        out = out.mask(rest, moved.dt.strftime("%Y-%m-%dT%H:%M:%S" if timed else "%Y-%m-%d").astype("string"))
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
        key = ctx.keyring.derive(scope, purpose="date_shift")
        offsets = subject_offsets(ctx.subject_ids, key, max_days)
        ctx.count("dates_shifted", int(values.notna().sum()))
        return shift_dates(values, offsets, column=ctx.column, table=ctx.table)

    def describe(self, spec: Column, ctx: ApplyContext) -> dict[str, Any]:
        scope = spec.params.get("scope", DEFAULT_SCOPE)
        out: dict[str, Any] = {
            "technique": self.name,
            "params": {"max_days": spec.params.get("max_days", 180), "scope": scope},
        }
        if ctx.keyring is not None:
            out["key_fingerprint"] = ctx.keyring.fingerprint(scope, purpose="date_shift")
        return out
