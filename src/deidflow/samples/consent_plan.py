"""What each synthetic subject's consent should amount to for the default release
(purpose ai-model-training, recipient shanghai-ai-lab in CN, all five data categories).

The plan is drawn before any event is written, with exact counts per outcome, so tests can
compare a consent gate's exclusion counts with `expected_reason_counts`. It is for tests
and benchmarks only: the outcome never appears in the generated files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from deidflow.samples.population import Population, draw_population, patient_ids

VALID = "valid"
NO_CONSENT = "no_consent"
WITHDRAWN = "withdrawn"
EXPIRED = "expired"
PURPOSE_NOT_COVERED = "purpose_not_covered"
RECIPIENT_NOT_COVERED = "recipient_not_covered"
NOT_SEPARATE = "not_separate"
CATEGORY_NOT_COVERED = "category_not_covered"
MINOR_WITHOUT_GUARDIAN = "minor_without_guardian"  # PIPL art. 31: grantor=self under 14
CROSS_BORDER_NOT_COVERED = "cross_border_not_covered"  # only for a recipient abroad

OUTCOMES = (
    VALID,
    NO_CONSENT,
    WITHDRAWN,
    EXPIRED,
    PURPOSE_NOT_COVERED,
    RECIPIENT_NOT_COVERED,
    NOT_SEPARATE,
    CATEGORY_NOT_COVERED,
    MINOR_WITHOUT_GUARDIAN,
)

# Share of all subjects given each failure; everyone else starts valid.
FAILURE_SHARES: dict[str, float] = {
    NO_CONSENT: 0.03,
    WITHDRAWN: 0.02,
    EXPIRED: 0.02,
    PURPOSE_NOT_COVERED: 0.02,
    RECIPIENT_NOT_COVERED: 0.02,
    NOT_SEPARATE: 0.015,
    CATEGORY_NOT_COVERED: 0.015,
}
MINOR_SELF_SHARE = 0.2  # of minors otherwise valid: signed by the child, not a guardian
CROSS_BORDER_SHARE = 0.01  # of valid subjects: consent also covers transfer abroad
AMENDED_SHARE = 0.03  # of valid subjects: granted without one category, then amended
# Below this many subjects each failure still appears at least once, so small samples
# exercise every branch of a gate.
EVERY_FAILURE_FROM = 100

RELEASE_PURPOSE = "ai-model-training"
RELEASE_RECIPIENT = "shanghai-ai-lab"
RELEASE_CATEGORIES = ("demographics", "encounters", "diagnoses", "labs", "notes")


@dataclass(frozen=True)
class ConsentPlan:
    """Per-subject intended outcome (index into OUTCOMES) and the flags that shape events."""

    outcome: np.ndarray  # int8 index into OUTCOMES
    guardian: np.ndarray  # bool: grantor is a guardian (minors except MINOR_WITHOUT_GUARDIAN)
    cross_border: np.ndarray  # bool
    amended: np.ndarray  # bool: an amended event exists (VALID: adds the missing category)

    def names(self) -> np.ndarray:
        return np.array(OUTCOMES)[self.outcome]


def draw_consent_plan(population: Population, seed: int) -> ConsentPlan:
    rng = np.random.default_rng([seed, 2])
    n = len(population)
    code = {name: i for i, name in enumerate(OUTCOMES)}
    outcome = np.full(n, code[VALID], dtype=np.int8)
    counts = [
        (code[name], max(round(share * n), 1 if n >= EVERY_FAILURE_FROM else 0))
        for name, share in FAILURE_SHARES.items()
    ]
    filled = np.concatenate([np.full(c, i, dtype=np.int8) for i, c in counts] or [np.zeros(0, np.int8)])
    outcome[: len(filled)] = filled
    outcome = rng.permutation(outcome)

    minor = population.minor
    valid_minors = np.flatnonzero(minor & (outcome == code[VALID]))
    n_self = round(MINOR_SELF_SHARE * len(valid_minors))
    if n >= EVERY_FAILURE_FROM and len(valid_minors):
        n_self = max(n_self, 1)
    outcome[rng.choice(valid_minors, size=n_self, replace=False)] = code[MINOR_WITHOUT_GUARDIAN]
    guardian = minor & (outcome != code[MINOR_WITHOUT_GUARDIAN])

    valid = np.flatnonzero(outcome == code[VALID])
    picked = rng.permutation(valid)
    n_cross = round(CROSS_BORDER_SHARE * len(valid))
    n_amend = round(AMENDED_SHARE * len(valid))
    cross_border = np.zeros(n, dtype=bool)
    cross_border[picked[:n_cross]] = True
    amended = np.zeros(n, dtype=bool)
    amended[picked[n_cross : n_cross + n_amend]] = True
    # A third of the category failures carry an amendment too, one that adds an unrelated
    # category: a gate must read the amended scope, not merely notice an amendment.
    cat_fail = np.flatnonzero(outcome == code[CATEGORY_NOT_COVERED])
    amended[cat_fail[rng.random(len(cat_fail)) < 1 / 3]] = True
    return ConsentPlan(outcome, guardian, cross_border, amended)


def consent_expectations(patients: int, seed: int = 20261125, *, as_of: date = date(2026, 11, 1)) -> pd.DataFrame:
    """The intended consent outcome of every subject of `generate_samples(…, patients, seed)`.

    Columns: subject_id, outcome (one of OUTCOMES), minor, guardian, cross_border, amended.
    For tests and benchmarks; never written into the generated data.
    """
    population = draw_population(patients, seed, as_of)
    plan = draw_consent_plan(population, seed)
    return pd.DataFrame(
        {
            "subject_id": patient_ids(0, patients),
            "outcome": plan.names(),
            "minor": population.minor,
            "guardian": plan.guardian,
            "cross_border": plan.cross_border,
            "amended": plan.amended,
        }
    )


def expected_reason_counts(
    patients: int, seed: int = 20261125, *, as_of: date = date(2026, 11, 1), abroad: bool = False
) -> dict[str, int]:
    """How many subjects a correct consent gate passes (`valid`) and excludes per reason.

    With `abroad=True` (a recipient outside mainland China, PIPL art. 39) the otherwise valid
    subjects whose consent does not cover cross-border transfer count as
    `cross_border_not_covered`. Every reason is present as a key, zero if absent.
    """
    frame = consent_expectations(patients, seed, as_of=as_of)
    outcome = frame["outcome"].to_numpy(dtype=object)
    if abroad:
        outcome = np.where((outcome == VALID) & ~frame["cross_border"].to_numpy(), CROSS_BORDER_NOT_COVERED, outcome)
    names, counts = np.unique(outcome.astype(str), return_counts=True)
    result = {name: 0 for name in (*OUTCOMES, CROSS_BORDER_NOT_COVERED)}
    result.update({str(k): int(v) for k, v in zip(names, counts)})
    return result

