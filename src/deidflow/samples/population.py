"""Who the synthetic patients are: birth date, sex, region of registration and the
identifiers that must be unique across the whole extract (resident ID, mobile, insurance
number). Drawn once for all patients as numpy arrays (a few tens of MB at 1,000,000), so
uniqueness holds globally while the heavier tables are written chunk by chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache

import numpy as np
from faker.providers.ssn.zh_CN import Provider as ZhSsnProvider

from deidflow.identifiers import check_chars
from deidflow.samples._codes import (
    AGE_BRACKETS,
    MOBILE_PREFIXES,
    PROVINCES,
    SHANGHAI_DISTRICTS,
    SHANGHAI_SHARE,
)

DAYS_PER_YEAR = 365.25
# Keep every age at least this far from the 14th birthday, so "minor" does not depend on how
# a reader counts leap days, and adults' own consents can be dated after they turned 14.
MINOR_MARGIN_DAYS = 120
# Order codes (digits 15-17 of a resident ID) are 2*k + sex; patients use k < 250 and
# guardians k >= 250, so a guardian's ID never equals a patient's.
PATIENT_ORDER_SLOTS = 250


@cache
def county_codes() -> tuple[np.ndarray, np.ndarray]:
    """(Shanghai district codes, other county-level codes) from Faker's GB/T 2260 list.

    Province- and prefecture-level rows (…00), prefecture "市辖区" placeholders (…01 outside
    the municipalities) and Taiwan/Hong Kong/Macau (71, 81-83, residence-permit prefixes) are
    left out: a resident ID is registered at county level in the mainland.
    """
    municipalities = {p for p, (_, muni, _) in PROVINCES.items() if muni}
    codes = [
        c
        for c in ZhSsnProvider.area_codes
        if c[:2] in PROVINCES and c[4:] != "00" and (c[4:] != "01" or c[:2] in municipalities)
    ]
    shanghai = np.array(sorted(c for c in codes if c in SHANGHAI_DISTRICTS))
    other = np.array(sorted(c for c in codes if c[:2] != "31"))
    return shanghai, other


@dataclass(frozen=True)
class Population:
    """Per-patient arrays, row i is patient P{i+1:07d}."""

    as_of: date
    birth: np.ndarray  # datetime64[D]
    male: np.ndarray  # bool
    region: np.ndarray  # <U6 GB/T 2260 county code
    resident_id: np.ndarray  # <U18
    mobile: np.ndarray  # <U11
    insurance_no: np.ndarray  # <U16

    def __len__(self) -> int:
        return len(self.birth)

    @property
    def age_days(self) -> np.ndarray:
        return (np.datetime64(self.as_of, "D") - self.birth).astype(np.int64)

    @property
    def minor(self) -> np.ndarray:
        """Under 14 at the as-of date (PIPL art. 31: guardian consent required)."""
        return self.age_days < 14 * DAYS_PER_YEAR


def draw_population(patients: int, seed: int, as_of: date) -> Population:
    rng = np.random.default_rng([seed, 0])
    n = patients
    male = rng.random(n) < 0.49

    shares = np.array([b[2] for b in AGE_BRACKETS])
    bracket = rng.choice(len(AGE_BRACKETS), size=n, p=shares / shares.sum())
    low = np.array([b[0] for b in AGE_BRACKETS], dtype=float)[bracket] * DAYS_PER_YEAR
    high = np.array([b[1] for b in AGE_BRACKETS], dtype=float)[bracket] * DAYS_PER_YEAR
    low = np.where(low == 0, 60, np.where(low == 14 * DAYS_PER_YEAR, low + MINOR_MARGIN_DAYS, low))
    high = np.where(high == 14 * DAYS_PER_YEAR, high - MINOR_MARGIN_DAYS, high)
    age_days = np.floor(low + rng.random(n) * (high - low)).astype(np.int64)
    birth = np.datetime64(as_of, "D") - age_days

    shanghai, other = county_codes()
    in_shanghai = rng.random(n) < SHANGHAI_SHARE
    region = np.where(
        in_shanghai,
        shanghai[rng.integers(0, len(shanghai), n)],
        other[rng.integers(0, len(other), n)],
    )

    resident_id = compose_resident_ids(region, birth, male, order_k=_unique_order(rng, region, birth, male))

    # Unique 8-digit tails make mobiles unique whatever the prefix.
    tails = rng.choice(10**8, size=n, replace=False)
    prefixes = np.array(MOBILE_PREFIXES)[rng.integers(0, len(MOBILE_PREFIXES), n)]
    mobile = np.char.add(prefixes, np.char.zfill(tails.astype("U8"), 8))

    # Medical-insurance number: province code, enrolment year, unique serial.
    enrol = np.maximum(birth.astype("datetime64[Y]").astype(int) + 1970, 1998)
    enrol = np.minimum(enrol + rng.integers(0, 6, n), as_of.year)
    serial = rng.choice(10**10, size=n, replace=False)
    insurance_no = np.char.add(
        np.char.add(np.char.ljust(region.astype("U2"), 2), enrol.astype("U4")),
        np.char.zfill((serial % 10**10).astype("U10"), 10),
    )
    return Population(as_of, birth, male, region, resident_id, mobile, insurance_no)


def _unique_order(rng: np.random.Generator, region: np.ndarray, birth: np.ndarray, male: np.ndarray) -> np.ndarray:
    """Order numbers k in [0, 250) unique within each (region, birth date, sex) group.

    Each group starts at a random k and counts up from there (mod 250); groups hold a handful
    of people even at 1,000,000 patients, so the IDs are unique.
    """
    n = len(region)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, region_idx = np.unique(region, return_inverse=True)
    key = (region_idx.astype(np.int64) * 100_000 + birth.astype(np.int64) + 50_000) * 2 + male
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    rank = np.arange(n) - group_start
    offset = rng.integers(0, PATIENT_ORDER_SLOTS, n)[group_start]
    k = np.empty(n, dtype=np.int64)
    k[order] = (offset + rank) % PATIENT_ORDER_SLOTS
    return k


def compose_resident_ids(region: np.ndarray, birth: np.ndarray, male: np.ndarray, order_k: np.ndarray) -> np.ndarray:
    """GB 11643 resident IDs: region (6) + YYYYMMDD (8) + order (3, odd for men) + check."""
    n = len(region)
    digits = np.empty((n, 17), dtype=np.int64)
    digits[:, :6] = np.frombuffer(region.astype("S6").tobytes(), dtype=np.uint8).reshape(n, 6) - ord("0")
    years = birth.astype("datetime64[Y]")
    months = birth.astype("datetime64[M]")
    ymd = (
        (years.astype(np.int64) + 1970) * 10_000
        + (months - years).astype(np.int64) * 100 + 100
        + (birth - months).astype(np.int64) + 1
    )
    for i in range(8):
        digits[:, 6 + i] = ymd // 10 ** (7 - i) % 10
    order = 2 * order_k + male.astype(np.int64)
    for i in range(3):
        digits[:, 14 + i] = order // 10 ** (2 - i) % 10
    chars = np.concatenate([(digits + ord("0")).astype(np.uint8), check_chars(digits).astype("S1").view(np.uint8)[:, None]], axis=1)
    return np.ascontiguousarray(chars).view("S18").ravel().astype("U18")


def patient_ids(start: int, stop: int) -> np.ndarray:
    """P0000001-style patient (and consent subject) IDs for rows [start, stop)."""
    return np.char.add("P", np.char.zfill(np.arange(start + 1, stop + 1).astype("U7"), 7))
