"""An independent reference evaluator of the consent rules, for tests only.

Written from the rules as the issue and the gate's module docstring state them, one subject and
one event at a time in plain Python, sharing no code with `deidflow.consent.gate` (nor its
canonical-id function): if both read the rules the same way, they agree subject by subject.

The rules:
* Ids are compared after Unicode NFKC, trimming, and upper-casing the check character of an
  18-character resident ID.
* Only events recorded at or before the run's moment count.
* A withdrawal of a subject covers the release when each of its lists (purposes, recipients,
  categories) is empty or matches (purpose in purposes, recipient in recipients, categories
  meet the released ones). It ends each consent of the subject whose latest grant is not
  later than it (an amendment is not a grant).
* A consent is one consent id of one subject with at least one grant; its terms are those of
  its latest grant or amendment (latest by time, then a grant before an amendment at one
  instant, then arrival).
* Each consent goes through: not ended, in period on the China date, separate, purpose,
  recipient, every category, cross-border when abroad, guardian when the subject is under 14
  on the China date (unknown birth date: under 14) unless the policy attests no minors.
  Its stage is the number of the first check it fails (1-based), 9 if none.
* A subject's stage is the highest of its consents' stages, at least 1 if it has any
  withdrawal, 0 (no consent) otherwise. 9 = allowed. A subject whose resident ID gives
  another birth date than its birth-date cell is excluded as birth_date_mismatch.
"""

from __future__ import annotations

import unicodedata
from datetime import date, datetime, timedelta, timezone

import pandas as pd

CHINA = timezone(timedelta(hours=8))
NAMES = ["no_consent", "withdrawn", "expired", "not_separate", "wrong_purpose", "wrong_recipient",
         "category_not_covered", "cross_border_not_allowed", "minor_without_guardian"]
ALLOWED_STAGE = 9
_RANK = {"granted": 0, "amended": 1, "withdrawn": 2}
_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def canon(text) -> str:
    s = unicodedata.normalize("NFKC", str(text)).strip()
    if len(s) == 18 and s.endswith("x") and all("0" <= c <= "9" for c in s[:17]):
        s = s[:17] + "X"
    return s


def _resident_birth(rid) -> date | None:
    """The birth date a valid GB 11643 resident ID carries, None if it is not one."""
    if rid is None or (isinstance(rid, float) and rid != rid):
        return None
    s = canon(rid)
    if len(s) != 18 or not s[:17].isdigit():
        return None
    check = "10X98765432"[sum(int(c) * w for c, w in zip(s[:17], _WEIGHTS)) % 11]
    if s[17] != check:
        return None
    try:
        return date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return None


def china(ts) -> pd.Timestamp:
    """A moment; without a zone it is China time (+08:00)."""
    t = pd.Timestamp(ts)
    return t.tz_localize(CHINA) if t.tzinfo is None else t


def _utc(ts) -> datetime:
    return china(ts).tz_convert("UTC").to_pydatetime()


def _items(value) -> set[str]:
    if value is None or (isinstance(value, float) and value != value):
        return set()
    return {x for x in str(value).split(";") if x}


def _day(value) -> date | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    ts = pd.Timestamp(value)
    return None if pd.isna(ts) else ts.date()


def evaluate(events: list[dict], subjects: list[dict], *, as_of, purpose: str, recipient: str,
             categories, abroad: bool, age_rule: bool = True) -> dict[str, str]:
    """Canonical subject id → 'allowed' or the exclusion reason. ``events`` in arrival order."""
    now = _utc(as_of)
    today = now.astimezone(CHINA).date()
    wanted = {c.casefold() for c in categories}
    visible = [dict(e, _arrival=i, _when=_utc(e["recorded_at"]), _who=canon(e["subject_id"]))
               for i, e in enumerate(events) if _utc(e["recorded_at"]) <= now]
    out: dict[str, str] = {}
    for s in subjects:
        sid = canon(s["subject_id"])
        if sid in out:
            continue
        born = _day(s.get("birth_date"))
        from_id = _resident_birth(s.get("resident_id"))
        if from_id is not None and born is not None and from_id != born:
            out[sid] = "birth_date_mismatch"
            continue
        mine = [e for e in visible if e["_who"] == sid]
        withdrawals = [e for e in mine if e["event"] == "withdrawn"]
        covering = [
            w["_when"] for w in withdrawals
            if (not _items(w["purposes"]) or purpose in _items(w["purposes"]))
            and (not _items(w["recipients"]) or recipient in _items(w["recipients"]))
            and (not _items(w["data_categories"]) or _items(w["data_categories"]) & wanted)
        ]
        last_withdrawal = max(covering) if covering else None
        if born is None:
            minor = True
        else:
            minor = (today.year - born.year - ((today.month, today.day) < (born.month, born.day))) < 14
        best = 1 if withdrawals else 0
        for cid in {e["consent_id"] for e in mine}:
            history = [e for e in mine if e["consent_id"] == cid and e["event"] in ("granted", "amended")]
            grants = [e["_when"] for e in history if e["event"] == "granted"]
            if not grants:
                continue
            granted = max(grants)
            terms = max(history, key=lambda e: (e["_when"], _RANK[e["event"]], e["_arrival"]))
            start, end = _day(terms["valid_from"]), _day(terms["valid_until"])
            checks = [
                last_withdrawal is None or last_withdrawal < granted,
                (start is None or start <= today) and (end is None or today <= end),
                bool(terms["separate"]),
                purpose in _items(terms["purposes"]),
                recipient in _items(terms["recipients"]),
                wanted <= _items(terms["data_categories"]),
                (not abroad) or bool(terms["cross_border"]),
                (not age_rule) or (not minor) or terms["grantor"] == "guardian",
            ]
            stage = next((i + 1 for i, ok in enumerate(checks) if not ok), ALLOWED_STAGE)
            best = max(best, stage)
        out[sid] = "allowed" if best == ALLOWED_STAGE else NAMES[best]
    return out


def gate_verdicts(gate) -> dict[str, str]:
    """A GateResult as the same mapping."""
    got = {str(s): "allowed" for s in gate.allowed}
    got |= dict(zip(gate.excluded["subject_id"].astype(str), gate.excluded["reason"].astype(str)))
    return got
