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


def shift_dates(values: pd.Series, offsets: np.ndarray, *, column: str = "", table: str | None = None) -> pd.Series:
    """`values` moved by `offsets` days. Text dates stay text in their own form (a date stays
    YYYY-MM-DD; a timestamp keeps its time and UTC offset); datetime columns stay datetime."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values + pd.to_timedelta(offsets, unit="D")
    text = values.astype("string")
    parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    bad = parsed.isna() & text.notna() & (text.str.strip() != "")
    if bad.any():
        first = int(np.argmax(bad.to_numpy()))
        raise InputError(
            f"{int(bad.sum())} value(s) are not dates (first at row {first})",
            file=table,
            column=column,
            fix="write dates as YYYY-MM-DD or ISO 8601 timestamps",
        )
    shifted = parsed + pd.to_timedelta(offsets, unit="D")
    date_only = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}").fillna(False)
    out = pd.Series(pd.NA, index=values.index, dtype="string", name=values.name)
    if date_only.any():
        out = out.mask(date_only, shifted.dt.strftime("%Y-%m-%d").astype("string"))
    rest = ~date_only & parsed.notna()
    if rest.any():
        # Timestamps: shift the wall-clock date, keep the original text's time and offset.
        stamped = shifted[rest].map(lambda t: t.isoformat())
        out = out.mask(rest, stamped.astype("string"))
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
