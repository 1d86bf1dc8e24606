"""The PIPL separate-consent gate: which data subjects may be released.

A subject is released only if at least one of their consents, as of the run's start, is in
force and covers this release: separate consent (PIPL arts. 23, 29), this purpose, this
recipient, every data category released, cross-border transfer when the recipient is abroad
(art. 39), and guardian consent for a child under 14 (art. 31).

Each consent is tested against the checks in this order, and stops at the first it fails:

    1 withdrawn                  its latest event is a withdrawal
    2 expired                    the run date is outside valid_from … valid_until (inclusive;
                                 a consent not yet valid counts here too)
    3 not_separate               not a separate consent
    4 wrong_purpose              the release purpose is not among its purposes
    5 wrong_recipient            the recipient is not among its recipients
    6 category_not_covered       a released data category is not among its categories
    7 cross_border_not_allowed   the recipient is abroad and cross-border is not permitted
    8 minor_without_guardian     the subject is under 14 at the run date (or has no known
                                 birth date: fail closed) and the grantor is not a guardian

A subject without any consent event is ``no_consent``. A subject with several consents gets
the reason of the consent that came furthest (the most specific explanation); a subject is
allowed when any consent passes every check. So each excluded subject has exactly one reason.

Everything is vectorised over all subjects (index look-ups, factorised set tests, one
``np.maximum.at``); no per-subject query. Identities stay out of ``counts`` and
``snapshot_summary`` (the manifest); ``excluded`` is for the hospital's private log only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from deidflow.consent.registry import CHINA_TZ, ConsentSnapshot, _event_rank, to_utc
from deidflow.errors import ConsentError, InputError
from deidflow.idcolumns import id_strings, subject_mask, subject_positions

#: Exclusion reason codes, stable for manifests, in order of precedence.
REASONS: tuple[str, ...] = (
    "no_consent",
    "withdrawn",
    "expired",
    "not_separate",
    "wrong_purpose",
    "wrong_recipient",
    "category_not_covered",
    "cross_border_not_allowed",
    "minor_without_guardian",
)
_PASSED = len(REASONS)
MINOR_AGE = 14  # PIPL art. 28, 31


@dataclass(frozen=True)
class GateResult:
    allowed: pd.Index
    excluded: pd.DataFrame  # subject_id, reason — hospital-private, never in the release
    counts: dict[str, int]
    snapshot_summary: dict[str, Any]

    @property
    def subjects(self) -> int:
        return int(len(self.allowed) + len(self.excluded))

    def manifest_entry(self) -> dict[str, Any]:
        """What the provenance manifest may carry: counts and the snapshot digest, no ids."""
        return {
            "subjects": self.subjects,
            "allowed": int(len(self.allowed)),
            "excluded": int(len(self.excluded)),
            "excluded_by_reason": dict(self.counts),
            "snapshot": dict(self.snapshot_summary),
        }

    def filter_tables(
        self, tables: Mapping[str, pd.DataFrame], subject_columns: Mapping[str, str]
    ) -> dict[str, pd.DataFrame]:
        """Every table with the rows of excluded subjects dropped (a row whose subject is not
        in ``allowed`` — including an unknown subject — is dropped: fail closed)."""
        out = {}
        for name, frame in tables.items():
            col = subject_columns.get(name)
            if col is None or col not in frame.columns:
                raise InputError(
                    f"table '{name}' has no subject column for the consent gate",
                    key=f"tables.{name}.subject_column", column=col,
                    fix="name the column that holds the patient id in subject_column",
                )
            out[name] = frame.loc[subject_mask(frame[col], self.allowed)]
        return out

    def write_exclusion_log(self, directory: str | Path, release_id: str) -> Path:
        """The private exclusion log (subject_id, reason), readable by its owner only."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / f"consent-exclusions-{release_id}.csv"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            self.excluded.to_csv(fh, index=False)
        os.chmod(path, 0o600)
        return path


def consent_gate(
    snapshot: ConsentSnapshot,
    subjects: pd.DataFrame,
    *,
    purpose: str,
    recipient_id: str,
    categories: list[str],
    abroad: bool,
    as_of: datetime | pd.Timestamp,
) -> GateResult:
    """Decide, for every subject, release or the one reason for exclusion (see module doc)."""
    for col in ("subject_id", "birth_date"):
        if col not in subjects.columns:
            raise ConsentError(
                f"the subjects table for the consent gate lacks column '{col}'",
                column=col,
                fix="pass a frame with subject_id and birth_date (YYYY-MM-DD) per subject",
            )
    if not purpose or not recipient_id or not categories:
        raise ConsentError(
            "the consent gate needs a purpose, a recipient and at least one data category",
            key="release", fix="set release.purpose, release.recipient.id and release.data_categories",
        )
    as_of_local = to_utc(as_of).tz_convert(CHINA_TZ)
    run_date = np.datetime64(as_of_local.date(), "D")

    sub = subjects.loc[:, ["subject_id", "birth_date"]]
    sub_ids = sub["subject_id"].astype(str)
    first = ~sub_ids.duplicated().to_numpy()
    sub_ids = pd.Index(sub_ids.to_numpy()[first])
    birth = _birth_dates(sub["birth_date"].to_numpy()[first])

    # Every test runs on whole event columns (no copy of the current rows' strings) and is
    # then read at the current consents of the subjects at hand.
    events = snapshot.events
    rows = np.asarray(snapshot.current_rows, dtype=np.intp)
    pos = subject_positions(events["subject_id"], sub_ids)[rows] if len(rows) else np.array([], dtype=np.intp)
    mine = pos >= 0
    pos = pos[mine]
    cur = _Columns(events, rows[mine])

    ok = _consent_checks(cur, pos, birth, run_date, as_of_local,
                         purpose=purpose, recipient_id=recipient_id,
                         categories=categories, abroad=abroad)
    # Stage of each consent: index of its first failed check (1-based), or _PASSED.
    cstage = np.full(len(cur), _PASSED, dtype=np.int8)
    for i in range(len(ok) - 1, -1, -1):
        cstage[~ok[i]] = i + 1
    stage = np.zeros(len(sub_ids), dtype=np.int8)  # 0 = no_consent
    np.maximum.at(stage, pos, cstage)

    allowed_mask = stage == _PASSED
    ex_stage = stage[~allowed_mask]
    excluded = pd.DataFrame({
        "subject_id": sub_ids[~allowed_mask],
        "reason": pd.Categorical.from_codes(ex_stage, categories=list(REASONS)),
    })
    tally = np.bincount(ex_stage, minlength=_PASSED)
    counts = {reason: int(tally[i]) for i, reason in enumerate(REASONS)}
    summary = snapshot.summary()
    summary["gate_as_of"] = to_utc(as_of).isoformat()
    return GateResult(
        allowed=sub_ids[allowed_mask],
        excluded=excluded,
        counts=counts,
        snapshot_summary=summary,
    )


class _Columns:
    """Per-consent arrays: a function of a whole event column, read at the given rows."""

    def __init__(self, events: pd.DataFrame, rows: np.ndarray) -> None:
        self._events = events
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, column: str, test=None) -> np.ndarray:
        values = self._events[column]
        out = test(values) if test is not None else values.to_numpy()
        return np.asarray(out)[self._rows]


def _birth_dates(values: np.ndarray) -> pd.DatetimeIndex:
    """Birth dates as naive local dates; unparseable or missing → NaT (treated as a minor)."""
    series = pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(series):
        birth = pd.DatetimeIndex(series)
    else:
        birth = pd.DatetimeIndex(pd.to_datetime(series.astype("string"), errors="coerce",
                                                format="ISO8601"))
    if birth.tz is not None:
        birth = birth.tz_convert(CHINA_TZ).tz_localize(None)
    return birth


def _consent_checks(
    cur: "_Columns",
    pos: np.ndarray,
    birth: pd.DatetimeIndex,
    run_date: np.datetime64,
    as_of_local: pd.Timestamp,
    *,
    purpose: str,
    recipient_id: str,
    categories: list[str],
    abroad: bool,
) -> list[np.ndarray]:
    """One boolean array per check (in REASONS order after no_consent): True = passes."""
    n = len(cur)
    in_force = np.isin(cur.get("event", _event_rank), (0, 1))
    vf = cur.get("valid_from", lambda v: v.to_numpy(dtype="datetime64[D]"))
    vu = cur.get("valid_until", lambda v: v.to_numpy(dtype="datetime64[D]"))
    in_period = (np.isnat(vf) | (vf <= run_date)) & (np.isnat(vu) | (run_date <= vu))
    separate = cur.get("separate", lambda v: v.to_numpy(dtype=bool))
    want_purpose = purpose.strip().casefold()
    want_recipient = recipient_id.strip().casefold()
    want_categories = {c.strip().casefold() for c in categories}
    purpose_ok = cur.get("purposes", lambda v: _set_test(v, lambda s: want_purpose in s))
    recipient_ok = cur.get("recipients", lambda v: _set_test(v, lambda s: want_recipient in s))
    category_ok = cur.get("data_categories", lambda v: _set_test(v, lambda s: want_categories <= s))
    cross_ok = np.ones(n, dtype=bool) if not abroad else cur.get("cross_border", lambda v: v.to_numpy(dtype=bool))

    b = birth[pos] if n else birth[:0]
    age = as_of_local.year - b.year.to_numpy(dtype=float)
    before_birthday = (b.month.to_numpy(dtype=float) > as_of_local.month) | (
        (b.month.to_numpy(dtype=float) == as_of_local.month) & (b.day.to_numpy(dtype=float) > as_of_local.day)
    )
    age = age - before_birthday
    minor = ~(age >= MINOR_AGE)  # NaN (unknown birth date) counts as a minor: fail closed
    guardian_ok = ~minor | cur.get("grantor", lambda v: pc.equal(id_strings(v), "guardian")
                                   .fill_null(False).to_numpy(zero_copy_only=False))
    return [in_force, in_period, separate, purpose_ok, recipient_ok, category_ok, cross_ok, guardian_ok]


def _set_test(values: pd.Series, test) -> np.ndarray:
    """Apply a set predicate once per distinct ';'-list, then broadcast by factor codes."""
    codes, uniques = pd.factorize(values)
    per_unique = np.fromiter(
        (test(frozenset(t for t in str(u).split(";") if t)) for u in uniques),
        dtype=bool, count=len(uniques),
    )
    out = np.zeros(len(values), dtype=bool)
    has = codes >= 0
    out[has] = per_unique[codes[has]]
    return out
