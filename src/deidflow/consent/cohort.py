"""A cohort that signed one broad-consent form, as consent events: one grant per subject.

A research cohort's participants sign the same form for the same purpose, recipient and data
categories; writing a 16-column event log by hand for them invites mistakes. `cohort_events`
builds that log from a list of subject ids and the form itself: every grant carries the
form's SHA-256 (the evidence), and goes through the very checks of a consents.csv
(`importers.events_from_frame`): ids, guardians, dates, future times. Event ids are derived
from the form's digest and the subject, so importing the same cohort twice records nothing new.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from deidflow.errors import ConsentError


def form_sha256(path: str | Path) -> str:
    """SHA-256 of the signed form's bytes, read in blocks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        raise ConsentError("file not found", file=str(path), key="--form",
                           fix="give the path of the signed consent form (PDF or scan)") from None
    return h.hexdigest()


def cohort_events(ids: str | Path, form: str | Path, *, purpose: str, recipient: str, categories: str,
                  notice_version: str, signed_at: str | None = None, valid_from: str | None = None,
                  valid_until: str | None = None, separate: bool = True,
                  cross_border: bool = False) -> pd.DataFrame:
    """The canonical grant events of the cohort in ``ids`` (a CSV with a subject_id column, or
    ids in its first column; guardian_name and guardian_id columns when children signed through
    a guardian)."""
    from deidflow.consent.importers import events_from_frame

    ids = Path(ids)
    try:
        raw = pd.read_csv(ids, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConsentError("file not found", file=str(ids), fix="give the CSV of the cohort's subject ids") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ConsentError(f"not a readable UTF-8 CSV file ({str(exc).splitlines()[0]})", file=str(ids),
                           fix="save the cohort list as UTF-8 CSV with a header row (subject_id)") from None
    raw.columns = [c.strip().lower() for c in raw.columns]
    if raw.shape[1] == 0:
        raise ConsentError("has no column", file=str(ids), fix="put the subject ids in a subject_id column")
    subjects = raw["subject_id"] if "subject_id" in raw.columns else raw.iloc[:, 0]
    digest = form_sha256(form)
    when = signed_at or pd.Timestamp.now(tz="UTC").isoformat()
    lists = {"purposes": purpose, "recipients": recipient,
             "data_categories": categories.replace(",", ";")}
    guardian_id = raw["guardian_id"] if "guardian_id" in raw.columns else pd.Series("", index=raw.index)
    guardian_name = raw["guardian_name"] if "guardian_name" in raw.columns else pd.Series("", index=raw.index)
    key = subjects.str.strip()
    log = pd.DataFrame({
        "event_id": "cohort:" + digest[:16] + ":" + key,
        "consent_id": "cohort:" + digest[:16] + ":" + key,
        "subject_id": subjects,
        "event": "granted",
        "recorded_at": when,
        "grantor": (guardian_id.str.strip() != "").map({True: "guardian", False: "self"}),
        "guardian_name": guardian_name,
        "guardian_id": guardian_id,
        "separate": "true" if separate else "false",
        "cross_border": "true" if cross_border else "false",
        **lists,
        "valid_from": valid_from or "",
        "valid_until": valid_until or "",
        "notice_version": notice_version,
        "form_sha256": digest,
    }, index=raw.index)
    return events_from_frame(log.astype(str), str(ids))
