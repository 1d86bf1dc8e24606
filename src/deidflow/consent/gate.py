"""The PIPL separate-consent gate: which data subjects may be released.

A subject is released only if at least one of their consents, as of the run's start, is in
force and covers this release: separate consent (PIPL arts. 23, 29), this purpose, this
recipient, every data category released, cross-border transfer when the recipient is abroad
(art. 39), and guardian consent for a child under 14 (art. 31).

Consent is decided per subject, whatever format or consent id an event came in. A *consent*
is one consent id of one subject; its terms are those of its latest grant or amendment. A
*withdrawal* (CSV ``withdrawn``, FHIR ``inactive``/``rejected`` status or a deny provision)
ends every consent of its subject granted at or before it, when it covers this release: its
purposes (empty: all) include the release purpose, its recipients (empty: all) the recipient,
and its categories (empty: all) meet the released categories. An amendment never revives an
ended consent: only a new grant later than the withdrawal does (a tie at one instant goes to
the withdrawal: fail closed). Ids are compared in canonical form (`subject_ids`).

Each consent is tested against the checks in this order, and stops at the first it fails:

    1 withdrawn                  a covering withdrawal of its subject is not older than its
                                 latest grant
    2 expired                    the run date is outside valid_from … valid_until (inclusive;
                                 a consent not yet valid counts here too)
    3 not_separate               not a separate consent
    4 wrong_purpose              the release purpose is not among its purposes
    5 wrong_recipient            the recipient is not among its recipients
    6 category_not_covered       a released data category is not among its categories
    7 cross_border_not_allowed   the recipient is abroad and cross-border is not permitted
    8 minor_without_guardian     the subject is under 14 at the run date (or has no known
                                 birth date: fail closed) and the grantor is not a guardian

A subject without any grant is ``withdrawn`` if it has a withdrawal, else ``no_consent``.
A subject whose resident ID (when given) holds another birth date than its birth-date cell is
``birth_date_mismatch``, whatever its consents: its age cannot be trusted. Withdrawals of ids
that are not in the extract are returned as ``orphan_withdrawals`` for the private log. A subject with several consents gets
the reason of the consent that came furthest (the most specific explanation); a subject is
allowed when any consent passes every check. So each excluded subject has exactly one reason.

Everything is vectorised over all subjects (index look-ups, factorised set tests, one
``np.maximum.at``); no per-subject query. Identities stay out of ``counts`` and
``snapshot_summary`` (the manifest); ``excluded`` is for the hospital's private log only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from deidflow.consent.registry import CHINA_TZ, ConsentSnapshot, _event_rank, to_utc
from deidflow.consent.subject_ids import canonical_ids, canonical_series
from deidflow.errors import ConsentError
from deidflow.idcolumns import short_keys, subject_mask, subject_positions, subject_rows  # noqa: F401 (re-exported)

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
    "birth_date_mismatch",
)
_PASSED = REASONS.index("birth_date_mismatch")  # a consent that passed every check
_ALLOWED = len(REASONS)
MINOR_AGE = 14  # PIPL art. 28, 31
#: The private log's reason for a withdrawal that matches no subject of the extract.
ORPHAN_WITHDRAWAL = "orphan_withdrawal"


@dataclass(frozen=True)
class GateResult:
    allowed: pd.Index
    excluded: pd.DataFrame  # subject_id, reason — hospital-private, never in the release
    counts: dict[str, int]
    snapshot_summary: dict[str, Any]
    #: Ids of withdrawals that match no subject of the extract (hospital-private, like excluded).
    orphan_withdrawals: pd.Index = field(default_factory=lambda: pd.Index([], dtype=object))
    #: The policy attested that the data holds no minors (birth_date_column: null).
    no_minors_attested: bool = False

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
            "orphan_withdrawals": int(len(self.orphan_withdrawals)),
            "no_minors_attested": bool(self.no_minors_attested),
            "snapshot": dict(self.snapshot_summary),
        }

    def private_log(self) -> pd.DataFrame:
        """The hospital-private log: each excluded subject with its reason, then each orphan
        withdrawal (a withdrawal matching no subject of the extract: a misspelt id, or a
        subject not in this extract) with reason ``orphan_withdrawal``."""
        if not len(self.orphan_withdrawals):
            return self.excluded
        orphans = pd.DataFrame({"subject_id": self.orphan_withdrawals,
                                "reason": ORPHAN_WITHDRAWAL})
        return pd.concat([self.excluded.astype({"reason": str}), orphans], ignore_index=True)

    def admits(self, subject_ids: Any) -> np.ndarray:
        """Per row of a subject-id column: whether its subject passed the gate. A row whose
        subject is not in ``allowed`` (an excluded or an unknown subject) is not admitted:
        fail closed. The release keeps a table's rows by this mask (`release/prepare.py`)."""
        return subject_mask(subject_ids, self.allowed)

    def write_exclusion_log(self, directory: str | Path, release_id: str) -> Path:
        """The private exclusion log (subject_id, reason), readable by its owner only."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / f"consent-exclusions-{release_id}.csv"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            self.private_log().to_csv(fh, index=False)
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
    age_rule: bool = True,
) -> GateResult:
    """Decide, for every subject, release or the one reason for exclusion (see module doc).

    ``subjects`` has subject_id and birth_date, and optionally resident_id (a GB 11643 id whose
    birth date is compared with birth_date). ``age_rule=False`` is the policy's attestation
    that the data holds no minors (``consent.birth_date_column: null``): the under-14 rule is
    skipped and the result says so."""
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

    sub_all = canonical_ids(subjects["subject_id"])
    first = _first_occurrence(sub_all)
    sub_ids = pd.Index(sub_all.take(pa.array(first)).to_pandas()) if first is not None else \
        pd.Index(sub_all.to_pandas())
    sub_arrow = sub_all if first is None else sub_all.take(pa.array(first))
    pick = (lambda v: v) if first is None else (lambda v: v[first])
    birth = _birth_dates(pick(subjects["birth_date"].to_numpy()))
    mismatch = np.zeros(len(sub_ids), dtype=bool)
    if "resident_id" in subjects.columns:
        mismatch = _birth_mismatch(pick(subjects["resident_id"].to_numpy()), birth)

    events = snapshot.events
    want = _Wanted(purpose, recipient_id, categories)
    verdict = _subject_verdicts(events, np.asarray(snapshot.current_rows, dtype=np.intp), sub_arrow,
                                birth, run_date, as_of_local, want, abroad=abroad, age_rule=age_rule)
    stage, orphans = verdict

    code = stage.astype(np.int8)  # REASONS index of the reason, _ALLOWED = allowed
    code[code == _PASSED] = _ALLOWED
    code[mismatch] = REASONS.index("birth_date_mismatch")
    allowed_mask = code == _ALLOWED
    ex_code = code[~allowed_mask]
    excluded = pd.DataFrame({
        "subject_id": sub_ids[~allowed_mask],
        "reason": pd.Categorical.from_codes(ex_code, categories=list(REASONS)),
    })
    tally = np.bincount(ex_code, minlength=len(REASONS))
    counts = {reason: int(tally[i]) for i, reason in enumerate(REASONS)}
    summary = snapshot.summary()
    summary["gate_as_of"] = to_utc(as_of).isoformat()
    return GateResult(
        allowed=sub_ids[allowed_mask],
        excluded=excluded,
        counts=counts,
        snapshot_summary=summary,
        orphan_withdrawals=orphans,
        no_minors_attested=not age_rule,
    )


def resident_ids_for(subjects: pd.DataFrame, subject_table: pd.DataFrame, consent_policy: Any) -> pd.DataFrame:
    """``subjects`` with the resident_id column the gate compares with the birth date: the
    policy's consent.resident_id_column when it names one (and birth dates are used at all)."""
    col = getattr(consent_policy, "resident_id_column", None)
    if col is None or consent_policy.birth_date_column is None or col not in subject_table.columns:
        return subjects
    return subjects.assign(resident_id=subject_table[col].to_numpy())


def reason_counts_text(counts: Mapping[str, int]) -> str:
    """'withdrawn: 3, expired: 2' — the exclusion reasons that occurred, most frequent first."""
    seen = sorted(((int(n), r) for r, n in counts.items() if int(n)), key=lambda x: (-x[0], x[1]))
    return ", ".join(f"{r}: {n:,}" for n, r in seen) or "no subject in the extract"


class _Wanted:
    """The release's purpose, recipient and categories, casefolded as the importers store them."""

    def __init__(self, purpose: str, recipient_id: str, categories: list[str]) -> None:
        self.purpose = purpose.strip().casefold()
        self.recipient = recipient_id.strip().casefold()
        self.categories = frozenset(c.strip().casefold() for c in categories)


def _first_occurrence(ids: pa.Array) -> np.ndarray | None:
    """Positions of each id's first occurrence, None when every id is distinct already."""
    keys = short_keys(ids)
    if keys is not None:
        k = keys[0]
        if len(k) < 2 or (k[1:] > k[:-1]).all():
            return None
    dup = pd.Series(ids.to_pandas()).duplicated().to_numpy()
    return None if not dup.any() else np.flatnonzero(~dup)


def _birth_mismatch(resident_ids: np.ndarray, birth: pd.DatetimeIndex) -> np.ndarray:
    """True where a valid resident ID's birth date and the birth-date cell are both known and
    differ: the record cannot be trusted for the age rule (nor, likely, for anything else)."""
    from deidflow.identifiers import resident_id_parts, valid_resident_ids

    ids = canonical_series(pd.Series(resident_ids, dtype=object).astype("string").fillna(""))
    valid = valid_resident_ids(ids).fillna(False).astype(bool).to_numpy()
    if not valid.any():
        return np.zeros(len(ids), dtype=bool)
    from_id = resident_id_parts(ids)["birth_date"].to_numpy(dtype="datetime64[D]")
    cell = birth.to_numpy(dtype="datetime64[D]")
    return valid & ~np.isnat(cell) & ~np.isnat(from_id) & (cell != from_id)


def _subject_verdicts(events: pd.DataFrame, current_rows: np.ndarray, sub_ids: pa.Array,
                      birth: pd.DatetimeIndex, run_date: np.datetime64, as_of_local: pd.Timestamp,
                      want: _Wanted, *, abroad: bool, age_rule: bool) -> tuple[np.ndarray, pd.Index]:
    """The stage (REASONS index, _PASSED = allowed) of every subject, and the ids of the
    orphan withdrawals (withdrawals of subjects that are not in ``sub_ids``).

    Subject-level semantics (module doc): a consent is one (consent id, subject); its terms are
    its latest grant or amendment, and it stands only if a *grant* of it (not an amendment) is
    later than every withdrawal of the subject that covers this release."""
    n_sub = len(sub_ids)
    stage = np.zeros(n_sub, dtype=np.int8)  # 0 = no_consent
    n = len(events)
    if n == 0:
        return stage, pd.Index([], dtype=object)
    ev_ids = canonical_ids(events["subject_id"])
    pos = subject_positions(ev_ids, sub_ids)
    rank = _event_rank(events["event"])
    t = events["recorded_at"].to_numpy(dtype="datetime64[ns]").view(np.int64) if not isinstance(
        events["recorded_at"].dtype, pd.DatetimeTZDtype) else \
        events["recorded_at"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view(np.int64)
    withdrawal = rank == 2
    mine = pos >= 0

    # Orphan withdrawals: reported, never silently dropped.
    orphan_rows = np.flatnonzero(withdrawal & ~mine)
    orphans = pd.Index(pd.unique(ev_ids.take(pa.array(orphan_rows)).to_pandas())) if len(orphan_rows) \
        else pd.Index([], dtype=object)

    # The latest withdrawal of each subject that covers this release (empty list = all).
    lists = {c: _Sets(events[c]) for c in ("purposes", "recipients", "data_categories")}
    covers = (withdrawal & mine
              & (lists["purposes"].empty | lists["purposes"].test(lambda s: want.purpose in s))
              & (lists["recipients"].empty | lists["recipients"].test(lambda s: want.recipient in s))
              & (lists["data_categories"].empty
                 | lists["data_categories"].test(lambda s: not s.isdisjoint(want.categories))))
    last_withdrawal = np.full(n_sub, np.iinfo(np.int64).min, dtype=np.int64)
    if covers.any():
        np.maximum.at(last_withdrawal, pos[covers], t[covers])
    has_withdrawal = np.zeros(n_sub, dtype=bool)
    has_withdrawal[pos[withdrawal & mine]] = True

    # Consents: the snapshot's events come grouped by consent id (current_rows ends each group),
    # in time order; a group is split by subject if one consent id spans several (refused at
    # import; old registries may hold it).
    group = np.repeat(np.arange(len(current_rows)), np.diff(np.r_[-1, current_rows]))
    key = group.astype(np.int64)
    order = None
    if n > 1:
        same_group = group[1:] == group[:-1]
        if (same_group & (pos[1:] != pos[:-1])).any():
            key = group.astype(np.int64) * (n_sub + 1) + (pos + 1)
            order = np.argsort(key, kind="stable")
    rows = np.arange(n) if order is None else order
    k, r, ts, p = key[rows], rank[rows], t[rows], pos[rows]
    terms = (r == 0) | (r == 1)
    ok_rows = terms & (p >= 0)
    # The latest grant of each consent.
    uk, inv = np.unique(k[ok_rows], return_inverse=True)
    latest_grant = np.full(len(uk), np.iinfo(np.int64).min, dtype=np.int64)
    g = r[ok_rows] == 0
    if g.any():
        np.maximum.at(latest_grant, inv[g], ts[ok_rows][g])
    # Its terms: the last grant or amendment of the group (time order within a group).
    sel = rows[ok_rows]
    last = np.r_[inv[1:] != inv[:-1], True] if len(inv) else np.zeros(0, dtype=bool)
    term_rows = sel[last]
    granted_at = latest_grant[inv[last]] if len(inv) else latest_grant
    cons_pos = pos[term_rows]
    has_grant = granted_at > np.iinfo(np.int64).min
    term_rows, granted_at, cons_pos = term_rows[has_grant], granted_at[has_grant], cons_pos[has_grant]

    stage[has_withdrawal] = 1  # no standing grant, but a withdrawal: "withdrawn"
    if len(term_rows):
        cur = _Columns(events, term_rows)
        ok = _consent_checks(cur, cons_pos, birth, run_date, as_of_local, want=want,
                             abroad=abroad, age_rule=age_rule, lists=lists)
        ok[0] = last_withdrawal[cons_pos] < granted_at  # tie at one instant: the withdrawal wins
        cstage = np.full(len(cur), _PASSED, dtype=np.int8)
        for i in range(len(ok) - 1, -1, -1):
            cstage[~ok[i]] = i + 1
        np.maximum.at(stage, cons_pos, cstage)
    return stage, orphans


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
    want: _Wanted,
    abroad: bool,
    age_rule: bool,
    lists: dict[str, "_Sets"],
) -> list[np.ndarray]:
    """One boolean array per check (in REASONS order after no_consent): True = passes. The
    first (not withdrawn) is the caller's: it needs the subject's withdrawals."""
    n = len(cur)
    vf = cur.get("valid_from", lambda v: v.to_numpy(dtype="datetime64[D]"))
    vu = cur.get("valid_until", lambda v: v.to_numpy(dtype="datetime64[D]"))
    in_period = (np.isnat(vf) | (vf <= run_date)) & (np.isnat(vu) | (run_date <= vu))
    separate = cur.get("separate", lambda v: v.to_numpy(dtype=bool))
    purpose_ok = cur.get("purposes", lambda v: lists["purposes"].test(lambda s: want.purpose in s))
    recipient_ok = cur.get("recipients", lambda v: lists["recipients"].test(lambda s: want.recipient in s))
    category_ok = cur.get("data_categories",
                          lambda v: lists["data_categories"].test(lambda s: want.categories <= s))
    cross_ok = np.ones(n, dtype=bool) if not abroad else cur.get("cross_border", lambda v: v.to_numpy(dtype=bool))

    if not age_rule:  # the policy attests that the data holds no minors
        guardian_ok = np.ones(n, dtype=bool)
    else:
        b = birth[pos] if n else birth[:0]
        age = as_of_local.year - b.year.to_numpy(dtype=float)
        before_birthday = (b.month.to_numpy(dtype=float) > as_of_local.month) | (
            (b.month.to_numpy(dtype=float) == as_of_local.month) & (b.day.to_numpy(dtype=float) > as_of_local.day)
        )
        age = age - before_birthday
        minor = ~(age >= MINOR_AGE)  # NaN (unknown birth date) counts as a minor: fail closed
        guardian_ok = ~minor | cur.get("grantor", lambda v: pc.equal(canonical_ids(v), "guardian")
                                       .fill_null(False).to_numpy(zero_copy_only=False))
    return [np.ones(n, dtype=bool), in_period, separate, purpose_ok, recipient_ok, category_ok,
            cross_ok, guardian_ok]


class _Sets:
    """A ';'-list column factorised once: set predicates are evaluated per distinct list and
    broadcast by factor codes."""

    def __init__(self, values: pd.Series) -> None:
        self.codes, uniques = pd.factorize(values)
        self.uniques = [frozenset(t for t in str(u).split(";") if t) for u in uniques]
        self.empty = self.test(lambda s: not s, missing=True)

    def test(self, predicate, *, missing: bool = False) -> np.ndarray:
        per_unique = np.fromiter((predicate(u) for u in self.uniques), dtype=bool, count=len(self.uniques))
        out = np.full(len(self.codes), missing, dtype=bool)
        has = self.codes >= 0
        out[has] = per_unique[self.codes[has]]
        return out
