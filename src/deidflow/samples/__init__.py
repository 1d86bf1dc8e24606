"""Deterministic synthetic hospital extract (zh_CN): patients, encounters, diagnoses, lab
results, clinical notes and the consent event log, with a known mix of consent failures."""

from deidflow.samples.consent_plan import (
    CROSS_BORDER_NOT_COVERED,
    OUTCOMES,
    consent_expectations,
    expected_reason_counts,
)
from deidflow.samples.generate import DEFAULT_AS_OF, DEFAULT_SEED, TABLES, generate_samples

__all__ = [
    "CROSS_BORDER_NOT_COVERED",
    "DEFAULT_AS_OF",
    "DEFAULT_SEED",
    "OUTCOMES",
    "TABLES",
    "consent_expectations",
    "expected_reason_counts",
    "generate_samples",
]
