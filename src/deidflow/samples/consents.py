"""consents.csv: the append-only consent event log (granted, withdrawn, amended) that
realises each subject's planned outcome (consent_plan.py) as evidence a gate must read.

Every event is recorded before the as-of date. Adults' own consents are dated after their
14th birthday, so a self-granted consent is only invalid for subjects under 14 at as-of.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from deidflow.samples.composition import choose, digits, join, pick, pool, slice_, text, when
from deidflow.samples.consent_plan import (
    CATEGORY_NOT_COVERED,
    EXPIRED,
    NO_CONSENT,
    NOT_SEPARATE,
    OUTCOMES,
    PURPOSE_NOT_COVERED,
    RECIPIENT_NOT_COVERED,
    RELEASE_CATEGORIES,
    RELEASE_PURPOSE,
    RELEASE_RECIPIENT,
    VALID,
    WITHDRAWN,
    ConsentPlan,
)
from deidflow.samples.pools import Pools
from deidflow.samples.population import DAYS_PER_YEAR, PATIENT_ORDER_SLOTS, Population, compose_resident_ids

CONSENT_COLUMNS = (
    "event_id",
    "subject_id",
    "event",
    "recorded_at",
    "grantor",
    "guardian_name",
    "guardian_id",
    "separate",
    "purposes",
    "recipients",
    "data_categories",
    "cross_border",
    "valid_from",
    "valid_until",
    "notice_version",
    "form_sha256",
)

LOOKBACK_DAYS = 3 * 365
_CODE = {name: np.int8(i) for i, name in enumerate(OUTCOMES)}
_ALL = ";".join(RELEASE_CATEGORIES)
_WITHOUT_NOTES = ";".join(c for c in RELEASE_CATEGORIES if c != "notes")
_WITHOUT_LABS = ";".join(c for c in RELEASE_CATEGORIES if c != "labs")
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def form_hashes(rng: np.random.Generator, n: int) -> pa.Array:
    """64-hex stand-ins for the SHA-256 of each signed consent form."""
    raw = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    hexed = np.empty((n, 64), dtype=np.uint8)
    hexed[:, 0::2], hexed[:, 1::2] = _HEX[raw >> 4], _HEX[raw & 15]
    return text(hexed.view("S64").ravel().astype("U64"))


def timestamps(days: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """ISO 8601 datetimes in office hours, China Standard Time."""
    seconds = rng.integers(8 * 3600, 18 * 3600, len(days))
    date = pa.array(days, pa.date32()).cast(pa.string())
    return join(
        date, "T", digits(seconds // 3600, 2), ":", digits(seconds // 60 % 60, 2), ":", digits(seconds % 60, 2), "+08:00"
    )


def build_consents(
    pop: Population,
    plan: ConsentPlan,
    patient_name: pa.Array,
    pools: Pools,
    lo: int,
    hi: int,
    first_id: int,
    rng: np.random.Generator,
) -> pa.Table:
    outcome = plan.outcome[lo:hi]
    local = np.flatnonzero(outcome != _CODE[NO_CONSENT])
    row = local + lo
    g = len(row)
    outcome = outcome[local]
    guardian = plan.guardian[row]
    as_of = np.datetime64(pop.as_of, "D")

    # Consent dates: within the last three years, after birth, and after the 14th birthday
    # for everyone who is 14 or older today (see module docstring).
    earliest = np.maximum(as_of - LOOKBACK_DAYS, pop.birth[row] + 1)
    adult = ~pop.minor[row]
    earliest = np.where(adult, np.maximum(earliest, pop.birth[row] + int(np.ceil(14 * DAYS_PER_YEAR)) + 2), earliest)
    expired = outcome == _CODE[EXPIRED]
    latest = np.where(expired, np.maximum(as_of - 400, earliest + 1), as_of - 30)
    recorded = earliest + np.floor(rng.random(g) * np.maximum((latest - earliest).astype(np.int64), 1)).astype(np.int64)
    until = np.where(
        expired,
        recorded + np.minimum(365, (as_of - 1 - recorded).astype(np.int64)),
        np.datetime64("2030-01-01") + rng.integers(0, 365, g),
    )

    separate = outcome != _CODE[NOT_SEPARATE]
    purposes = choose(
        np.select(
            [outcome == _CODE[PURPOSE_NOT_COVERED], ~separate],
            [2 + rng.integers(0, 3, g), np.full(g, 5)],
            (rng.random(g) < 0.3).astype(np.int64),
        ),
        RELEASE_PURPOSE,
        f"{RELEASE_PURPOSE};clinical-research",
        "clinical-research",
        "clinical-research;quality-improvement",
        "teaching",
        f"treatment;{RELEASE_PURPOSE};clinical-research",
    )
    recipients = choose(
        np.where(outcome == _CODE[RECIPIENT_NOT_COVERED], 2 + rng.integers(0, 3, g), (rng.random(g) < 0.2).astype(np.int64)),
        RELEASE_RECIPIENT,
        f"{RELEASE_RECIPIENT};fudan-med-ai",
        "beijing-health-ai",
        "zhejiang-med-data-lab",
        "fudan-med-ai",
    )
    amended = plan.amended[row]
    category_gap = outcome == _CODE[CATEGORY_NOT_COVERED]
    # Valid subjects with an amendment were first granted without notes; the amendment adds it.
    granted_categories = choose(
        np.where(category_gap, 1 + (rng.random(g) < 0.4), np.where(amended, 1, 0)),
        _ALL,
        _WITHOUT_NOTES,
        _WITHOUT_LABS,
    )

    guardian_male = rng.random(g) < 0.45
    guardian_given = slice_(
        choose(guardian_male.astype(np.int8),
               pick(pools.female_names, rng.integers(0, len(pools.female_names), g)),
               pick(pools.male_names, rng.integers(0, len(pools.male_names), g))),
        1,
        3,
    )
    guardian_birth = pop.birth[row] - np.floor((22 + rng.random(g) * 18) * DAYS_PER_YEAR).astype(np.int64)
    guardian_id = compose_resident_ids(
        pop.region[row], guardian_birth, guardian_male,
        PATIENT_ORDER_SLOTS + rng.integers(0, PATIENT_ORDER_SLOTS, g),
    )
    subject = join("P", digits(row + 1, 7))
    notice = choose(np.where(separate, rng.integers(0, 3, g), 3), "v2.0", "v2.1", "v2.2", "v1.0")
    granted = pa.table(
        {
            "subject_id": subject,
            "event": pa.array(["granted"] * g, pa.string()),
            "recorded_at": timestamps(recorded, rng),
            "grantor": choose(guardian.astype(np.int8), "self", "guardian"),
            "guardian_name": when(guardian, join(slice_(pick(patient_name, local), 0, 1), guardian_given)),
            "guardian_id": when(guardian, text(guardian_id)),
            "separate": pa.array(separate, pa.bool_()),
            "purposes": purposes,
            "recipients": recipients,
            "data_categories": granted_categories,
            "cross_border": pa.array(plan.cross_border[row], pa.bool_()),
            "valid_from": pa.array(recorded, pa.date32()),
            "valid_until": pa.array(until, pa.date32()),
            "notice_version": notice,
            "form_sha256": form_hashes(rng, g),
        }
    )

    # Follow-up events: withdrawals, and amendments (valid: add notes; category failures:
    # add an unrelated category, so notes stay uncovered).
    follow = np.flatnonzero((outcome == _CODE[WITHDRAWN]) | amended)
    later = recorded[follow] + 1 + np.floor(rng.random(len(follow)) * (as_of - 1 - recorded[follow]).astype(np.int64)).astype(np.int64)
    withdrawn = outcome[follow] == _CODE[WITHDRAWN]
    follow_categories = choose(
        np.where(withdrawn, 0, np.where(outcome[follow] == _CODE[VALID], 1, 2)),
        granted_categories.take(pa.array(follow, pa.int64())),
        _ALL,
        join(granted_categories.take(pa.array(follow, pa.int64())), ";imaging"),
    )
    followup = granted.take(pa.array(follow, pa.int64()))
    followup = followup.set_column(1, "event", choose(withdrawn.astype(np.int8), "amended", "withdrawn"))
    followup = followup.set_column(2, "recorded_at", timestamps(later, rng))
    followup = followup.set_column(followup.schema.get_field_index("data_categories"), "data_categories", follow_categories)
    followup = followup.set_column(
        followup.schema.get_field_index("form_sha256"), "form_sha256", form_hashes(rng, len(follow))
    )

    events = pa.concat_tables([granted, followup])
    subject_row = np.concatenate([row, row[follow]])
    when_recorded = np.concatenate([recorded, later])
    order = np.lexsort((when_recorded, subject_row))
    events = events.take(pa.array(order, pa.int64()))
    ids = join("C", digits(np.arange(first_id, first_id + len(order)), 8))
    return events.add_column(0, "event_id", ids)
