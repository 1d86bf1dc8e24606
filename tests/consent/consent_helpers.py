"""Building canonical consent events in tests without going through a file."""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd

from deidflow.consent.registry import EVENT_COLUMNS

ALL_CATEGORIES = "demographics;diagnoses;encounters;labs;notes"


def event(event_id: str, subject: str, **over: Any) -> dict[str, Any]:
    """A granted, separate, in-period, cross-border-permitted consent for the example release."""
    row = {
        "event_id": event_id,
        "consent_id": over.pop("consent_id", f"C-{subject}"),
        "subject_id": subject,
        "event": "granted",
        "recorded_at": pd.Timestamp("2024-03-01T09:00:00+08:00"),
        "grantor": "self",
        "guardian_name": None,
        "guardian_id": None,
        "separate": True,
        "purposes": "ai-model-training",
        "recipients": "shanghai-ai-lab",
        "data_categories": ALL_CATEGORIES,
        "cross_border": True,
        "valid_from": pd.Timestamp("2024-01-01"),
        "valid_until": pd.Timestamp("2027-12-31"),
        "notice_version": "v2.1",
        "form_sha256": hashlib.sha256(event_id.encode()).hexdigest(),
    }
    row.update(over)
    return row


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    out["recorded_at"] = pd.to_datetime(out["recorded_at"], utc=True)
    for col in ("valid_from", "valid_until"):
        out[col] = pd.to_datetime(out[col])
    return out


def bulk_grants(n: int, *, prefix: str = "S", start: int = 0, recorded_at: str = "2024-03-01T09:00:00+08:00") -> pd.DataFrame:
    """n granted consents for subjects prefix{start..start+n}, built column-wise."""
    ids = pd.Series([f"{prefix}{i:08d}" for i in range(start, start + n)])
    base = event("x", "x", recorded_at=pd.Timestamp(recorded_at))
    out = pd.DataFrame({c: [base[c]] * n for c in EVENT_COLUMNS})
    out["subject_id"] = ids
    out["consent_id"] = "C-" + ids
    out["event_id"] = "G-" + ids
    out["form_sha256"] = "0" * 64
    return _typed(out)


def _typed(out: pd.DataFrame) -> pd.DataFrame:
    out["recorded_at"] = pd.to_datetime(out["recorded_at"], utc=True)
    for col in ("valid_from", "valid_until"):
        out[col] = pd.to_datetime(out[col])
    return out
