"""The moment a release's consent is judged at, and how a time without a zone is read.

A release publishes data *now*, so its consent must be valid now: a past ``--as-of`` would
release subjects who have since withdrawn or whose consent has since expired, and a future
one subjects who are not yet 14 or whose consent is not yet valid. So the run's consent moment
is its start; a past moment is allowed only for a dry run, which publishes nothing; a future
one is refused.

Every time written without a zone — ``release --as-of``, ``consent status --as-of``,
``consent withdraw --at``, a consent file's ``recorded_at`` — is China time (+08:00), the
hospital's clock, so that the same text means the same instant everywhere.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from deidflow.consent.registry import to_utc
from deidflow.errors import ConsentError

#: How far a given moment may differ from this machine's clock and still count as "now"
#: (the command line's own start, clocks of two machines).
TOLERANCE = pd.Timedelta(minutes=5)


def run_as_of(as_of: datetime | pd.Timestamp | str | None, started: datetime, *,
              dry_run: bool = False) -> datetime:
    """The run's consent moment as an aware UTC datetime: ``started`` when ``as_of`` is not
    given; a given ``as_of`` without a zone is China time. Refused: a future moment, and a
    past one unless this is a dry run."""
    start = to_utc(started if started.tzinfo else started.replace(tzinfo=timezone.utc))
    if as_of is None:
        return start.to_pydatetime()
    try:
        moment = to_utc(as_of)
    except (ValueError, TypeError):
        raise ConsentError(
            f"'{as_of}' is not a date or date-time", key="--as-of",
            fix="write e.g. 2026-11-27T09:30:00+08:00 (no offset = China time), or leave it out",
        ) from None
    if moment > start + TOLERANCE:
        raise ConsentError(
            f"--as-of {moment.isoformat()} is in the future (the run started {start.isoformat()})",
            key="--as-of",
            fix="leave --as-of out: a release judges consent as of now (a future date would "
            "release consents not yet valid and children not yet 14)",
        )
    if moment < start - TOLERANCE and not dry_run:
        raise ConsentError(
            f"--as-of {moment.isoformat()} is in the past; a release judges consent as of now",
            key="--as-of",
            fix="leave --as-of out to release, or see who a past date would have let through "
            "with a dry run that publishes nothing: deidflow consent check --policy … --as-of …",
        )
    return moment.to_pydatetime()
