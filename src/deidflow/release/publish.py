"""Stage 5, publish: where the manifest is signed. Review page, signed manifest, atomic rename
into the output directory, the private exclusion log, and the registry's record of whom the
release holds. A rerun that finds its release verifies it against its manifest and reports
it. Either way the stage returns one `ReleaseSummary`, read from the release's record.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from deidflow.errors import GateFailed
from deidflow.io import publish as rename_into_place
from deidflow.policy import LoadedPolicy, override_record
from deidflow.release.state import RunState, pinned_policy, now_utc, check_contract
from deidflow.release.workdir import WorkDir
from deidflow.release.engines import engine_of
from deidflow.release.prepare import registry_url


def publish(work: Path) -> "ReleaseSummary":
    """The publish stage, the same for every executor: refuse if the policy file changed
    during the run; report the existing release if this id was published before (verified
    against its signed manifest first); otherwise publish this run's. Under the output
    directory's lock, so that no two runs publish one id."""
    state = RunState.load(work)
    check_contract(state)
    loaded = pinned_policy(state)
    wd = WorkDir.of(work, state)
    final = wd.final
    with wd.lock():
        if final.exists():
            return _existing_release(work, state, loaded, final)
        if loaded.policy.release.approval_required:  # the privacy officer decides: stage it
            from deidflow.release.approval import stage_release

            return stage_release(work)
        record = publish_release(work)
    return ReleaseSummary.from_record(record, final)


def publish_release(work: Path):
    """Review page, signed manifest, atomic rename, and the hospital-side records.

    The registry inserts the release's subjects on its own thread (the database holds no GIL)
    while this one counts classes, digests and signs; the insert is committed only after the
    rename, so a release is never recorded unless it was published. A registry that cannot take
    the record stops the release before the rename; a run killed between the rename and the
    commit leaves the release unrecorded, and the next run records it (`_existing_release`)."""
    from deidflow.manifest.review import render_review
    from deidflow.manifest.seal import write_manifest
    from deidflow.manifest.signing import ensure_signing_key
    from deidflow.manifest.statement import FileDigests

    state = RunState.load(work)
    loaded = pinned_policy(state)
    policy = loaded.policy
    wd = WorkDir.of(work, state)
    stage, final = wd.staging, wd.final
    record = build_record(loaded, state, finished_at=now_utc())
    signing_key = ensure_signing_key(loaded.resolve(policy.keys.signing_key_file))
    with _begin_record_release(wd, loaded, state, record.finished_at) as recording:
        sizes_after = _class_sizes(engine_of(state).read_released(stage, policy.subject_table,
                                                                  policy.output.format), loaded)
        sid = policy.tables[policy.subject_table].subject_column
        sizes_before = _class_sizes(wd.gated_table(policy.subject_table,
                                           list(dict.fromkeys([sid, *policy.quasi_identifiers()]))), loaded)
        digests = FileDigests()  # the review's file table and the manifest read each file once
        render_review(stage, record, signing_key_path=signing_key, class_sizes=sizes_after.tolist(),
                      class_sizes_before=sizes_before.tolist(), k=policy.limits.k, digests=digests)
        write_manifest(stage, record, signing_key, digests=digests)
        recording.inserted()
        rename_into_place(stage, final)

        wd.kept_exclusions.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(wd.exclusion_log, wd.kept_exclusions)
        wd.kept_exclusions.chmod(0o600)
        recording.commit()
    state.release_dir = str(final)
    state.save(work)
    return record


def _record_release(work: WorkDir, loaded: LoadedPolicy, state: RunState, when: datetime | None = None) -> None:
    from deidflow.consent.registry import ConsentRegistry

    mapping = work.pseudonym_mapping()
    if "pseudonym" in mapping and state.release_id:
        ConsentRegistry(registry_url(loaded)).record_release(
            state.release_id, mapping["subject_id"], mapping["pseudonym"], when or now_utc(),
            snapshot=state.outcome("consent").registry_snapshot())


def _begin_record_release(work: WorkDir, loaded: LoadedPolicy, state: RunState, when: datetime) -> Any:
    """`_record_release` started on the registry's thread, uncommitted (see publish_release)."""
    from deidflow.consent.registry import ConsentRegistry

    mapping = work.pseudonym_mapping()
    if "pseudonym" not in mapping or not state.release_id:
        return _NothingToRecord()
    return ConsentRegistry(registry_url(loaded)).begin_release_record(
        state.release_id, mapping["subject_id"], mapping["pseudonym"], when,
        snapshot=state.outcome("consent").registry_snapshot())


class _NothingToRecord:
    """No pseudonym was released (the subject column is not in the release): nothing to trace."""

    def __enter__(self) -> "_NothingToRecord":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def inserted(self) -> None:
        return None

    def commit(self) -> None:
        return None


def _class_sizes(frame: pd.DataFrame, loaded: LoadedPolicy) -> np.ndarray:
    """Size (in subjects) of each equivalence class of the subject table over the QIs, counted
    as the validation gate counts them (one row per subject)."""
    from deidflow.validation.expectations import class_sizes

    policy = loaded.policy
    sid = policy.tables[policy.subject_table].subject_column
    qis = [c for c in policy.quasi_identifiers() if c in frame.columns]
    if sid not in frame.columns:  # the subject table has one row per subject anyway
        frame = frame.assign(**{sid: np.arange(len(frame))})
    return class_sizes(frame, sid, qis)


def build_record(loaded: LoadedPolicy, state: RunState, *, finished_at: datetime):
    """The manifest's ReleaseRecord from the run state: counts, digests, parameters — no ids."""
    from importlib import metadata
    import platform

    from deidflow.manifest.record import (
        ConsentSummary, Counts, PlanInfo, RecipientInfo, ReleaseRecord, RiskSummary, Software, add_years,
    )

    policy = loaded.policy
    rel = policy.release
    started = datetime.fromisoformat(state.started_at)
    # Every outcome must be there: a stage that did not run is an error, never a silent 0.
    consent, prepared = state.outcome("consent"), state.outcome("counts")
    searched, transformed = state.outcome("search"), state.outcome("transform")
    versions = {}
    for pkg in ("pandas", "numpy", "pyarrow", "great-expectations", "prefect", "cryptography",
                "pydantic", "sqlalchemy", "faker"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:  # pragma: no cover - optional
            continue
    after = dict(searched.after)
    after.setdefault("k_required", policy.limits.k)
    return ReleaseRecord(
        release_id=state.release_id,
        created_at=finished_at,
        started_at=started,
        finished_at=finished_at,
        policy_text=loaded.text,
        policy_sha256=loaded.sha256,
        agreement_id=rel.agreement_id,
        pipia_id=rel.pipia_id,
        recipient=RecipientInfo(id=rel.recipient.id, name=rel.recipient.name,
                                country=rel.recipient.country),
        purpose=rel.purpose,
        release_model=rel.model.value,
        data_categories=list(rel.data_categories),
        retention_until=add_years(finished_at, max(rel.retention_years, 3)),
        plan=PlanInfo(objective=policy.plan.objective, attacker_model=policy.plan.attacker_model,
                      approver=policy.plan.approver, executor=policy.plan.executor,
                      version=str(policy.plan.version)),
        inputs=state.inputs,
        consent=ConsentSummary(
            registry=consent.registry, as_of=consent.as_of, events=consent.events,
            granted=state.outcome("consent").granted, excluded_by_reason=consent.excluded_by_reason,
            consent_ids_digest=consent.events_sha256,
            orphan_withdrawals=consent.orphan_withdrawals,
            no_minors_attested=consent.no_minors_attested,
        ),
        columns=transformed.columns,
        risk=RiskSummary(before=searched.before, after=after, levels=searched.levels,
                         suppressed_records=transformed.suppressed_subjects, utility=searched.utility),
        aggregates=transformed.aggregates,
        validation=state.outcome("validation"),
        counts=Counts(records_in=prepared.subjects_in,
                      excluded_for_consent=prepared.excluded_for_consent,
                      suppressed=transformed.suppressed_subjects,
                      released=transformed.released_rows,
                      released_subjects=transformed.released_subjects,
                      rows_in=prepared.records_in),
        software=Software(deidflow=_deidflow_version(), python=platform.python_version(),
                          packages=versions),
        flow_run_id=state.flow_run_id,
        limits_override=override_record(policy),
        utility_evidence=state.utility_evidence,
        reference_tables=state.reference_tables,
        approval_required=policy.release.approval_required,
    )


def _deidflow_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("deidflow")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+source"


class ReleaseSummary(BaseModel):
    """What every executor reports, new release or existing: figures read from the release's
    record (the one the manifest signs), never from the run that happened to find it."""

    model_config = ConfigDict(frozen=True)

    release_id: str
    release_dir: Path | None
    subjects_in: int
    excluded_for_consent: int
    suppressed: int
    released: int
    k: int | None
    levels: dict[str, int]
    risk_after: dict[str, Any]
    validation_ok: bool
    already_released: bool = False
    # Set when the release was staged for the privacy officer (deidflow.release.approval)
    # instead of published: release_dir is then None and nothing is in the output directory.
    staged_id: str | None = None
    staged_review: Path | None = None
    approval_expires: datetime | None = None
    # The limits weaker than GB/T 42460 that the policy's `limits.override` approved (the
    # record's `limits_override.departures`); empty when the limits met it.
    limits_override: list[str] = []

    @classmethod
    def from_record(cls, record: Any, release_dir: Path | None, *, already_released: bool = False) -> "ReleaseSummary":
        counts = record.counts
        return cls(release_id=record.release_id, release_dir=release_dir,
                   subjects_in=counts.records_in, excluded_for_consent=counts.excluded_for_consent,
                   suppressed=counts.suppressed, released=counts.released_subjects,
                   k=record.risk.after.get("k"), levels=dict(sorted(record.risk.levels.items())),
                   risk_after=record.risk.after, validation_ok=record.validation_passed,
                   already_released=already_released,
                   limits_override=list((record.limits_override or {}).get("departures") or []))

    @property
    def validation_text(self) -> str:
        """What the CLI and the flow's artifact say of validation: never a bare "passed" for
        a release whose limits needed an approved override (as the review page's headline)."""
        if not self.validation_ok:
            return "FAILED"
        if self.limits_override:
            return "passed under an approved override of " + "; ".join(self.limits_override)
        return "passed"

    def figure_rows(self) -> list[tuple[str, str]]:
        """The run's figures as the CLI shows them, published or staged: label, value."""
        rows = [("subjects in", f"{self.subjects_in:,}"),
                ("excluded for consent", f"{self.excluded_for_consent:,}"),
                ("suppressed (risk)", f"{self.suppressed:,}"),
                ("released", f"{self.released:,}"),
                ("k reached", str(self.k))]
        if self.levels:
            rows.append(("levels", ", ".join(f"{k}={v}" for k, v in self.levels.items())))
        rows.append(("validation", self.validation_text))
        return rows

    @property
    def manifest(self) -> Path | None:
        return None if self.release_dir is None else self.release_dir / "manifest.json"

    @property
    def review(self) -> Path | None:
        return None if self.release_dir is None else self.release_dir / "review.html"


def _existing_release(work: Path, state: RunState, loaded: LoadedPolicy, final: Path) -> ReleaseSummary:
    """A rerun with unchanged policy, inputs, consent (and its day) and key: the release is
    already there. It is verified against its signed manifest before it is reported (a
    deleted file or an added row is refused, never reported as released), its own record's
    figures are reported, and it is recorded in the registry only with the subjects it holds."""
    from deidflow.manifest.signing import public_key_path_for
    from deidflow.manifest.verify import verify_release

    # Checked under this hospital's own signing key (the one this run would sign with): the
    # key shipped inside the release proves nothing about who signed it.
    report = verify_release(final, public_key_path=public_key_path_for(
        loaded.resolve(loaded.policy.keys.signing_key_file)))
    if report.approval_problem and report.integrity_ok and report.trust_anchored:
        # An approved release: its approver's key is in the trust file, not the policy's .pub.
        from deidflow.release.approval import verify_approved

        report = verify_approved(final, loaded)
    if not report.ok or report.record is None or report.record.release_id != state.release_id:
        raise GateFailed(
            "a release with this id exists but does not match its signed manifest:\n  "
            + "\n  ".join(report.messages() or ["its record names another release"]),
            file=str(final),
            fix="move the damaged release directory aside (keep it for the audit), then rerun",
        )
    # A run killed between the rename and the registry write left the release unrecorded:
    # record it now (idempotent), or a later withdrawal could not be traced to it; but only the
    # subject set the release holds: the same count as its signed record, or nothing.
    wd = WorkDir.of(work, state)
    mapping = wd.pseudonym_mapping()
    if len(mapping) != report.record.counts.released_subjects:
        raise GateFailed(
            f"this run released {len(mapping):,} subjects under id {state.release_id}, the "
            f"existing release holds {report.record.counts.released_subjects:,}",
            file=str(final), fix="report this: a release id must name one subject set",
        )
    _record_release(wd, loaded, state)
    return ReleaseSummary.from_record(report.record, final, already_released=True)


def summarise(work: Path) -> ReleaseSummary:
    """The summary of a published run, from the release's signed record."""
    from deidflow.manifest.verify import read_record_unverified

    state = RunState.load(work)
    final = Path(state.release_dir)
    return ReleaseSummary.from_record(read_record_unverified(final), final)
