"""The release record: everything the manifest says about one release.

The pipeline fills one `ReleaseRecord` as it runs (inputs, consent snapshot, per-column
treatment, risk before and after, validation, counts) and hands it to `write_manifest` and
`render_review`. It is plain data (JSON-able, frozen) so that the signed predicate, the review
page and the release index are all views of the same object.

Two guards live here because every output passes through this model:
- no secrets: a technique parameter whose name says it is a key, secret, password or token is
  refused (the manifest carries key *fingerprints*, never keys), and a registry URL is stored
  with its password redacted;
- retention: `retention_until` must be at least 3 years after `created_at` (PIPL art. 56,
  network data regulations art. 12).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deidflow.utility.record import UtilityEvidence

#: PIPL art. 73(3) vs 73(4): de-identified data is still personal information (checklist 20).
DEIDENTIFIED_LABEL = "de-identified (PIPL art. 73(3)) — still personal information"

#: PIPL art. 56 and network data regulations art. 12: keep at least this long.
MIN_RETENTION_YEARS = 3

# Parameter names that would carry key material. `key_fingerprint`, `key_id` are fine.
_SECRET_NAME = re.compile(
    r"(secret|password|passwd|passphrase|token|private|(^|_)key$|(^|_)salt$|pepper)", re.I
)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecipientInfo(_Frozen):
    id: str
    name: str
    country: str = "CN"


class PlanInfo(_Frozen):
    """GB/T 37964 5.2.4 de-identification plan, as approved."""

    objective: str
    attacker_model: str
    approver: str
    executor: str
    version: str


class InputFile(_Frozen):
    table: str
    path: str = Field(description="as given in the policy, not resolved")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    rows: int = Field(ge=0)


class ConsentSummary(_Frozen):
    """What the record keeps of the consent snapshot the gate read (the snapshot itself, the
    events, is `consent.registry.ConsentSnapshot`): counts and digests, no ids."""

    registry: str = Field(description="SQLAlchemy URL, password redacted")
    as_of: datetime
    events: int = Field(ge=0, description="consent events in the snapshot")
    granted: int = Field(ge=0, description="subjects with a valid separate consent")
    excluded_by_reason: dict[str, int] = Field(default_factory=dict)
    consent_ids_digest: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 over the sorted consent event ids the gate relied on "
        "(ConsentSnapshot.digest); required: without it the snapshot cannot be reproduced",
    )
    # Issue 17: consent that cannot be bypassed.
    orphan_withdrawals: int = Field(
        0, ge=0, description="withdrawals in the snapshot whose subject id matches no subject of "
        "the extract (misspelt ids, or subjects not in this extract); listed in the private log")
    no_minors_attested: bool = Field(
        False, description="the policy attests that the data holds no minors "
        "(consent.birth_date_column: null): the under-14 guardian rule was not applied")

    @field_validator("registry")
    @classmethod
    def _redact(cls, url: str) -> str:
        from deidflow.redaction import redact_url

        return redact_url(url)

    @property
    def excluded(self) -> int:
        return sum(self.excluded_by_reason.values())


class ColumnTreatment(_Frozen):
    table: str
    column: str
    role: str
    technique: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_secrets(self) -> "ColumnTreatment":
        for path, value in _walk(self.params):
            name = path.rsplit(".", 1)[-1]
            if _SECRET_NAME.search(name) and not name.endswith(("fingerprint", "_id", "_file")):
                raise ValueError(
                    f"column {self.table}.{self.column}: parameter '{path}' looks like key "
                    "material; the manifest carries key fingerprints only "
                    "(put it under 'key_fingerprint')"
                )
            if isinstance(value, (bytes, bytearray)):
                raise ValueError(
                    f"column {self.table}.{self.column}: parameter '{path}' is raw bytes; "
                    "record a fingerprint or a number instead"
                )
        return self


class RiskSummary(_Frozen):
    """Plain numbers from the risk engine (θ, Ra/Rb/Rc, k, l, t, ...)."""

    before: dict[str, Any] = Field(default_factory=dict)
    after: dict[str, Any] = Field(default_factory=dict)
    levels: dict[str, Any] = Field(default_factory=dict, description="level chosen per QI")
    suppressed_records: int = Field(0, ge=0)
    utility: dict[str, Any] = Field(default_factory=dict)


class Counts(_Frozen):
    # extra counts (e.g. subjects vs rows) are allowed: they are numbers, never identities
    model_config = ConfigDict(extra="allow", frozen=True)

    records_in: int = Field(ge=0)
    excluded_for_consent: int = Field(ge=0)
    suppressed: int = Field(ge=0)
    released: dict[str, int] = Field(default_factory=dict, description="rows per table")


class Software(_Frozen):
    deidflow: str
    python: str
    packages: dict[str, str] = Field(default_factory=dict)


class Approval(_Frozen):
    """The privacy officer's approval (GB/T 37964 5.5), inside the statement both the executor
    and the approver sign (`deidflow.release.approval`): who approved, with which key, when,
    their comment, and what they saw: the staged review page's and the executor-signed staged
    manifest's SHA-256."""

    approver: str = Field(min_length=1, description="owner of the approver key (trust file)")
    key_id: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    executor_key_id: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    approved_at: datetime
    comment: str = ""
    staged_at: datetime
    review_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the staged review.html")
    staged_manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("approved_at", "staged_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class ReleaseRecord(_Frozen):
    release_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._\-]+$")
    created_at: datetime
    started_at: datetime
    finished_at: datetime
    label: str = DEIDENTIFIED_LABEL
    policy_text: str
    policy_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    agreement_id: str = Field(min_length=1)
    pipia_id: str = Field(min_length=1, description="PIPL art. 55 impact assessment")
    recipient: RecipientInfo
    purpose: str
    release_model: str
    data_categories: list[str] = Field(default_factory=list)
    retention_until: datetime
    plan: PlanInfo
    inputs: list[InputFile]
    consent: ConsentSummary
    columns: list[ColumnTreatment]
    risk: RiskSummary
    aggregates: list[dict[str, Any]] = Field(default_factory=list)
    validation: dict[str, Any] = Field(default_factory=dict)
    counts: Counts
    software: Software
    flow_run_id: str | None = None
    # Limits weaker than GB/T 42460 accepted by the policy's limits.override: its reason,
    # approver and each departure ("limits.k: 1 < 2"). None when the limits meet the floors.
    limits_override: dict[str, Any] | None = None
    # per column loss, suppression by group, the model comparison (aggregates only)
    utility_evidence: UtilityEvidence | None = None
    # Reference tables (providers, organisations, payers; deidflow.reference_tables): rows in
    # and out, keep rule, columns' treatments. Not consent-filtered, not in the patient risk.
    reference_tables: list[dict[str, Any]] = Field(default_factory=list)
    # The policy's release.approval: when True, `deidflow verify` requires a trusted approver's
    # signature beside the executor's, and `approval` says who approved (set at approval).
    approval_required: bool = False
    approval: Approval | None = None

    @field_validator("created_at", "started_at", "finished_at", "retention_until")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        # Naive times are ambiguous across the hospital's and the recipient's clocks.
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    @model_validator(mode="after")
    def _coherent(self) -> "ReleaseRecord":
        actual = hashlib.sha256(self.policy_text.encode("utf-8")).hexdigest()
        if actual != self.policy_sha256:
            raise ValueError(
                f"policy_sha256 {self.policy_sha256[:12]}… is not the sha256 of policy_text "
                f"({actual[:12]}…); pass LoadedPolicy.text and LoadedPolicy.sha256 together"
            )
        earliest = add_years(self.created_at, MIN_RETENTION_YEARS)
        if self.retention_until < earliest:
            raise ValueError(
                f"retention_until {self.retention_until.date()} is less than "
                f"{MIN_RETENTION_YEARS} years after created_at {self.created_at.date()} "
                "(PIPL art. 56; network data regulations art. 12)"
            )
        return self

    @property
    def validation_passed(self) -> bool:
        return bool(self.validation.get("success"))

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def add_years(when: datetime, years: int) -> datetime:
    """`when` plus whole calendar years (29 Feb → 28 Feb in a non-leap year)."""
    try:
        return when.replace(year=when.year + years)
    except ValueError:
        return when.replace(year=when.year + years, day=28)


def _walk(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            out.append((path, v))
            out.extend(_walk(v, path))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out.extend(_walk(v, f"{prefix}[{i}]"))
    return out
