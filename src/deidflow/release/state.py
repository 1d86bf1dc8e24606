"""The run state: what later stages need from earlier ones, JSON in the work directory, and
the run's contract. At prepare the policy's text and SHA-256 are pinned here; every later
stage parses the pinned text (`pinned_policy`), never the file, and `check_contract` refuses to
publish if the file changed during the run. Counts, digests and paths only: no identities,
no key material.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deidflow.errors import GateFailed
from deidflow.jsonsafe import plain
from deidflow.manifest.record import ColumnTreatment, InputFile
from deidflow.policy import LoadedPolicy
from deidflow.utility.record import UtilityEvidence


STATE = "state.json"


class Outcome(BaseModel):
    """A stage's outcome: typed, so a misspelled field is an error, never a silent 0."""

    model_config = ConfigDict(extra="forbid")


class ConsentOutcome(Outcome):
    """The consent snapshot the gate read (the registry's summary), and the gate's totals."""

    model_config = ConfigDict(extra="allow")  # the registry's further counts (consents, withdrawn, …)

    registry: str
    as_of: datetime
    events: int = Field(ge=0)
    events_sha256: str
    granted: int | None = None  # set when the gate has run (finish_prepare)
    excluded_by_reason: dict[str, int] = Field(default_factory=dict)
    # Which registry events the snapshot held, by arrival (`ConsentSnapshot.seq_coverage`):
    # recorded with the release for the withdrawal re-check.
    seq_high: int = 0
    seq_missing: list[list[int]] = Field(default_factory=list)
    # Withdrawals of ids that are in no subject row of the extract (reported, not dropped),
    # and whether the policy attests that the data holds no minors (no under-14 rule).
    orphan_withdrawals: int = Field(default=0, ge=0)
    no_minors_attested: bool = False

    def registry_snapshot(self) -> dict[str, Any]:
        """What the registry records of the snapshot a release's gate saw (as_of, seq_high,
        seq_missing), for the re-check by arrival."""
        return self.model_dump()


class GateOutcome(Outcome):
    """One partition's consent gate (counts only)."""

    subjects: int
    granted: int
    excluded_by_reason: dict[str, int]
    records_in: dict[str, int]
    orphan_withdrawals: int = 0
    no_minors_attested: bool = False


class PrepareCounts(Outcome):
    subjects_in: int
    excluded_for_consent: int
    records_in: dict[str, int]


class SearchOutcome(Outcome):
    """The search's choice. `levels` name a child table's quasi-identifier `table.column`
    (the whole-record search, `deidflow.whole_record`), which has no `combinations`."""

    levels: dict[str, int]
    suppressed_subjects: int
    combinations: int | None
    before: dict[str, Any]
    after: dict[str, Any]
    utility: dict[str, Any]
    nodes_evaluated: int
    sensitive_after: dict[str, Any] = Field(default_factory=dict)  # l and t per sensitive column


class TransformOutcome(Outcome):
    suppressed_subjects: int
    released_subjects: int
    released_rows: dict[str, int]
    columns: list[ColumnTreatment]
    aggregates: list[dict[str, Any]]


class WholeRecordCheck(Outcome):
    """k over the whole released record (subject row and each table's rows), recomputed by
    the validate stage from the released files (`validation.record_check`)."""

    k: int | None
    classes: int
    k_required: int
    ok: bool


class RunState(BaseModel):
    """What later stages need to know about earlier ones; JSON in the work directory. Each
    stage's outcome is its own typed model, absent until the stage has run.

    It holds counts, digests and paths — no identities and no key material."""

    policy_path: str
    policy_text: str
    policy_sha256: str
    run_id: str
    started_at: str
    as_of: str
    flow_run_id: str | None = None
    inputs: list[InputFile] = Field(default_factory=list)
    consent: ConsentOutcome | None = None
    counts: PrepareCounts | None = None
    search: SearchOutcome | None = None
    transform: TransformOutcome | None = None
    validation: dict[str, Any] | None = None
    whole_record: WholeRecordCheck | None = None  # only with quasi-identifiers beyond the subject table
    utility_evidence: UtilityEvidence | None = None  # set by validate once the gate passed
    release_id: str | None = None
    release_dir: str | None = None
    # Reference tables released (`deidflow.reference_tables`): counts and treatments, no values.
    reference_tables: list[dict[str, Any]] = Field(default_factory=list)
    engine: str = "memory"
    partitions: int = 1
    pid: int = 0
    host: str = ""

    def save(self, work: Path) -> None:
        tmp = work / (STATE + ".tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        tmp.replace(work / STATE)

    @classmethod
    def load(cls, work: Path) -> "RunState":
        return cls.model_validate_json((work / STATE).read_text())

    def outcome(self, name: str) -> Any:
        """A stage's outcome, which a later stage needs: its absence is a bug in the plan."""
        value = getattr(self, name)
        if value is None:
            raise GateFailed(f"the run state has no {name} outcome: that stage did not run",
                             key="release", fix="rerun the release; report this if it recurs")
        return value


PINNED: dict[tuple[str, str], LoadedPolicy] = {}


def pinned_policy(state: RunState) -> LoadedPolicy:
    """The policy this run pinned at prepare (its text and SHA-256 in the run state), parsed
    once per process: later stages never read the file again, so an edit during the run
    cannot change what a stage does (`check_contract` refuses to publish after one)."""
    key = (state.policy_path, state.policy_sha256)
    loaded = PINNED.get(key)
    if loaded is None:
        from deidflow.policy import parse_policy

        if hashlib.sha256(state.policy_text.encode("utf-8")).hexdigest() != state.policy_sha256:
            raise GateFailed("the run state's policy text does not match its pinned SHA-256",
                             key="policy", fix="rerun the release")
        loaded = LoadedPolicy(policy=parse_policy(state.policy_text, source=state.policy_path),
                              path=Path(state.policy_path), text=state.policy_text,
                              sha256=state.policy_sha256)
        PINNED[key] = loaded
    return loaded


def check_contract(state: RunState) -> None:
    """Stop before publishing if the policy file no longer holds the text this run pinned: the
    release would be signed under a contract its own file no longer states."""
    from deidflow.errors import PolicyError

    try:
        now = hashlib.sha256(Path(state.policy_path).read_bytes()).hexdigest()
    except OSError:
        now = "(unreadable)"
    if now != state.policy_sha256:
        raise PolicyError(
            "the policy file changed while the release ran; nothing was published",
            file=state.policy_path,
            fix=f"rerun the release with the policy as it now stands (this run pinned sha256 "
            f"{state.policy_sha256[:12]}…, the file now has {now[:12]}…)",
        )


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def dump_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain(obj), ensure_ascii=False, sort_keys=True))


