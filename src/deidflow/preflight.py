"""What `deidflow check` verifies before anything is released.

Beyond the policy and the input tables (`policy`, `io`), two things that otherwise surface
only deep in a run: each quasi-identifier's hierarchy against the values of its column (a
value the hierarchy lacks, a 5-digit ZIP code given to the Chinese postcode kind, a level
that splits its parent), and how many of the subjects the consent registry would let through
for this recipient, purpose and data categories, with the reasons for the rest. Nothing is
written, and only counts are reported: no subject id or value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from deidflow.errors import DeidflowError
from deidflow.policy import LoadedPolicy, Role


@dataclass(frozen=True)
class HierarchyFinding:
    table: str
    column: str
    kind: str
    ok: bool
    levels: int = 0
    distinct_values: int = 0
    problem: str = ""  # the error's text (names file, column and fix; never a value)


@dataclass(frozen=True)
class ConsentCoverage:
    subjects: int
    allowed: int
    excluded_by_reason: dict[str, int] = field(default_factory=dict)
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem and self.allowed > 0


def check_hierarchies(loaded: LoadedPolicy, frames: Mapping[str, pd.DataFrame]) -> list[HierarchyFinding]:
    """Encode every quasi-identifier with its hierarchy over the column's whole data."""
    from deidflow.techniques.hierarchies import encode_qi

    out = []
    for tname, tspec in loaded.policy.tables.items():
        frame = _derived(frames[tname], tspec)
        for col, cspec in tspec.columns.items():
            if cspec.hierarchy is None or cspec.role is not Role.quasi_identifier:
                continue
            if col not in frame:
                continue  # read_tables already refused a column the data lacks
            values = frame[col]
            try:
                enc = encode_qi(col, values, cspec.hierarchy, loaded.base_dir)
            except DeidflowError as exc:
                out.append(HierarchyFinding(tname, col, cspec.hierarchy.kind, False,
                                            problem=exc.render()))
                continue
            out.append(HierarchyFinding(tname, col, cspec.hierarchy.kind, True,
                                        levels=enc.n_levels, distinct_values=enc.cardinality(0)))
    return out


def check_consent(loaded: LoadedPolicy, subject: pd.DataFrame,
                  as_of: datetime | None = None) -> ConsentCoverage:
    """The consent gate's verdict on the subject table, as a release now would reach it."""
    from deidflow.consent.gate import consent_gate
    from deidflow.consent.registry import ConsentRegistry, registry_url_for

    policy = loaded.policy
    spec = policy.tables[policy.subject_table]
    subject = _derived(subject, spec)
    ids = subject[spec.subject_column].astype(str)
    as_of = as_of or datetime.now(timezone.utc)
    url = registry_url_for(loaded)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return ConsentCoverage(int(ids.nunique()), 0, problem=(
            f"the consent registry {url[len('sqlite:///'):]} does not exist yet: import the "
            "consent events with `deidflow consent import` (or `deidflow import-cohort`)"))
    try:
        registry = ConsentRegistry(url)
        try:
            snapshot = registry.snapshot(as_of)
        finally:
            registry.dispose()
    except DeidflowError as exc:
        return ConsentCoverage(int(ids.nunique()), 0, problem=exc.render())
    bcol = policy.consent.birth_date_column
    if bcol is None:  # the policy states the data holds no minors
        birth = pd.Series("1900-01-01", index=subject.index)
    else:
        birth = subject[bcol]
    subjects = pd.DataFrame({"subject_id": ids, "birth_date": birth.astype("string")})
    gate = consent_gate(snapshot, subjects, purpose=policy.release.purpose,
                        recipient_id=policy.release.recipient.id,
                        categories=list(policy.release.data_categories),
                        abroad=policy.release.recipient.abroad, as_of=as_of)
    problem = ""
    if len(gate.allowed) == 0:
        problem = ("no subject has a valid consent for this purpose and recipient: a release "
                   "would stop at the consent gate (import the consent events with "
                   "`deidflow consent import`)")
    return ConsentCoverage(subjects=gate.subjects, allowed=int(len(gate.allowed)),
                           excluded_by_reason={k: int(v) for k, v in gate.counts.items() if v},
                           problem=problem)


def _derived(frame: pd.DataFrame, spec: Any) -> pd.DataFrame:
    """The table with its derived columns (birth date from a resident ID, ...) added, as a
    release computes them before any technique."""
    from deidflow.techniques.derive import derive_columns

    return derive_columns(frame, spec, as_of=datetime.now(timezone.utc).date())


def as_rows(findings: list[HierarchyFinding]) -> list[dict[str, Any]]:
    return [f.__dict__.copy() for f in findings]
