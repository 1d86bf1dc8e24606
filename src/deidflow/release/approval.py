"""The privacy officer's approval (GB/T 37964 5.5): staged releases, approve, reject, expiry.

A release whose policy requires approval (`release.approval`, required by default for the
public and controlled models) does not publish at the end of its run: the publish step stages
it instead (`stage_release`). A staged release is sealed and signed by the executor exactly as
a release would be, with an "awaiting approval" banner on its review page, and kept under the
policy's private directory, never in the output directory:

    <private>/approvals/staged/<staged_id>/staged.json   what `StagedRelease` holds
                                          /release/      the sealed release (review page, manifest)
                                          /private/      hospital-side: pseudonym mapping, run
                                                         state and exclusion log, for the
                                                         registry record made at publication
    <private>/approvals/records/<staged_id>.<decision>.<time>.json
                                          one record per decision: approved and rejected ones
                                          carry a DSSE envelope signed by the approver's key;
                                          expired ones the removal's time

The staged id is the release id: a rerun of the same release finds its staged copy and
reports it instead of staging twice.

`approve` checks the staged release against the trust anchor (seal and executor signature),
that the officer's key is trusted as an approver and belongs to another key and another owner
than the executor's, then builds the final statement: the staged record plus an `approval`
block (approver, key, time, comment, the staged review page's and staged manifest's SHA-256),
over the files with the review page's approval section filled in. The executor's key (the
policy's, on the release host) and the approver's key both sign that one payload, so the
envelope carries exactly two signatures over one statement and the manifest keeps the chain:
who ran, who approved, what they saw. It is published with the same atomic rename as any
release. `reject` discards the staged data and keeps a signed rejection record. A staged
release older than the policy's `approval_days` is removed, and the removal recorded, by
whichever command next touches the approvals (release, releases list, approve, reject).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from deidflow.errors import DeidflowError, GateFailed, VerificationError

if TYPE_CHECKING:
    from deidflow.release.workdir import FileLock

log = logging.getLogger(__name__)

Decision = Literal["approved", "rejected", "expired"]
_ID = r"^[A-Za-z0-9._\-]+$"
DECISION_PAYLOAD_TYPE = "application/vnd.deidflow.approval-decision+json"


class ApprovalError(DeidflowError):
    """An approval or rejection that cannot be made: nothing was published or discarded."""


class StagedRelease(BaseModel):
    """One release awaiting the privacy officer's decision (its staged.json)."""

    model_config = ConfigDict(extra="forbid")

    staged_id: str = Field(pattern=_ID)
    release_id: str = Field(pattern=_ID)
    created_at: datetime
    expires_at: datetime
    recipient: str
    purpose: str
    agreement_id: str
    policy_path: str
    policy_sha256: str
    executor_key_id: str
    staged_dir: Path
    review_page: Path
    flow_run_id: str | None = None
    prefect_api_url: str | None = None

    @property
    def release_dir(self) -> Path:
        return self.staged_dir / "release"

    @property
    def private_files(self) -> Path:
        return self.staged_dir / "private"


# --- where things are --------------------------------------------------------------------------

def approvals_root(private_dir: Path) -> Path:
    return Path(private_dir) / "approvals"


def _staged_root(private_dir: Path) -> Path:
    return approvals_root(private_dir) / "staged"


def _records_root(private_dir: Path) -> Path:
    return approvals_root(private_dir) / "records"


def _check_id(staged_id: str) -> str:
    import re

    if not re.fullmatch(_ID, staged_id or ""):
        raise ApprovalError(f"not a staged release id: {staged_id!r}", key="STAGED_ID",
                            fix="copy the id from `deidflow releases list --policy POLICY`")
    return staged_id


def _mkdir_private(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def _approvals_lock(private_dir: Path) -> "FileLock":
    """One decision at a time per private directory (flock), so that approve, reject, expiry
    and record_flow_run never interleave on one staged release."""
    from deidflow.release.workdir import FileLock

    return FileLock(_mkdir_private(approvals_root(private_dir)) / ".lock")


# --- the interface the Prefect pause/resume uses --------------------------------------------------

def load_staged(private_dir: Path, staged_id: str) -> StagedRelease:
    """The staged release, pending or decided (a decided one from its latest decision record)."""
    _check_id(staged_id)
    meta = _staged_root(private_dir) / staged_id / "staged.json"
    if meta.is_file():
        return StagedRelease.model_validate_json(meta.read_text(encoding="utf-8"))
    record = _latest_record(private_dir, staged_id)
    if record is not None:
        return StagedRelease.model_validate(record["staged"])
    raise ApprovalError(f"no staged release {staged_id}", file=str(_staged_root(private_dir)),
                        fix="list the releases awaiting approval with `deidflow releases list "
                        "--policy POLICY`")


def record_flow_run(private_dir: Path, staged_id: str, flow_run_id: str | None, api_url: str | None) -> None:
    """Note which Prefect flow run waits for this decision (and on which server)."""
    with _approvals_lock(private_dir):
        meta = _staged_root(private_dir) / _check_id(staged_id) / "staged.json"
        staged = StagedRelease.model_validate_json(meta.read_text(encoding="utf-8"))
        staged = staged.model_copy(update={"flow_run_id": flow_run_id, "prefect_api_url": api_url})
        _write_json(meta, staged.model_dump(mode="json"))


def decision_of(private_dir: Path, staged_id: str) -> Decision | None:
    """approved / rejected / expired, or None while the release still awaits a decision. A
    staged release past its expiry counts as expired (and is removed) here too."""
    expire_stale(private_dir)
    if (_staged_root(private_dir) / _check_id(staged_id) / "staged.json").is_file():
        return None
    record = _latest_record(private_dir, staged_id)
    if record is None:
        raise ApprovalError(f"no staged release {staged_id}", file=str(_staged_root(private_dir)),
                            fix="list the releases awaiting approval with `deidflow releases list "
                            "--policy POLICY`")
    return record["decision"]


# --- records ---------------------------------------------------------------------------------------

def _records_of(private_dir: Path, staged_id: str) -> list[Path]:
    root = _records_root(private_dir)
    if not root.is_dir():
        return []
    return sorted(root.glob(f"{staged_id}.*.json"), key=lambda p: p.name.rsplit(".", 2)[-2])


def _latest_record(private_dir: Path, staged_id: str) -> dict[str, Any] | None:
    found = [p for p in _records_of(private_dir, staged_id)
             if p.name[len(staged_id) + 1:].split(".", 1)[0] in ("approved", "rejected", "expired")]
    if not found:
        return None
    return json.loads(found[-1].read_text(encoding="utf-8"))


def _stamp(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%S%fZ")


def _write_record(private_dir: Path, staged: StagedRelease, decision: Decision, when: datetime,
                  body: dict[str, Any], signing_key=None) -> Path:
    """A decision record; approved and rejected ones signed (DSSE) by the approver's key."""
    from deidflow.manifest.signing import sign_envelope

    content = {"decision": decision, "staged_id": staged.staged_id, "release_id": staged.release_id,
               "decided_at": when.isoformat(), **body}
    record: dict[str, Any] = {"decision": decision, "staged": staged.model_dump(mode="json"),
                              "content": content}
    if signing_key is not None:
        payload = json.dumps(content, sort_keys=True, separators=(",", ":"),
                             ensure_ascii=False).encode("utf-8")
        record["envelope"] = sign_envelope(payload, signing_key, DECISION_PAYLOAD_TYPE)
    path = _mkdir_private(_records_root(private_dir)) / f"{staged.staged_id}.{decision}.{_stamp(when)}.json"
    _write_json(path, record)
    return path


def check_decision_record(path: Path, public_key) -> dict[str, Any]:
    """The signed content of a decision record, checked under `public_key` (the approver's)."""
    from deidflow.manifest.signing import check_signature, strict_b64decode

    record = json.loads(Path(path).read_text(encoding="utf-8"))
    envelope = record.get("envelope")
    if not envelope or envelope.get("payloadType") != DECISION_PAYLOAD_TYPE:
        raise VerificationError("the decision record is not signed", file=str(path),
                                fix="keep only records written by deidflow approve/reject")
    check = check_signature(envelope, public_key)
    if not check.valid:
        raise VerificationError(f"decision record: {check.reason}", file=str(path),
                                fix="the record was altered after it was signed")
    return json.loads(strict_b64decode(envelope["payload"]).decode("utf-8"))


# --- listing and expiry ---------------------------------------------------------------------------

def pending(private_dir: Path) -> list[StagedRelease]:
    """Staged releases awaiting a decision, oldest first (after removing expired ones)."""
    expire_stale(private_dir)
    root = _staged_root(private_dir)
    if not root.is_dir():
        return []
    out = []
    for meta in root.glob("*/staged.json"):
        try:
            out.append(StagedRelease.model_validate_json(meta.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            log.warning("unreadable staged release at %s", meta.parent)
    return sorted(out, key=lambda s: s.created_at)


def expire_stale(private_dir: Path, now: datetime | None = None) -> list[StagedRelease]:
    """Remove staged releases past their expiry, recording each removal."""
    from deidflow.release.state import now_utc

    root = _staged_root(private_dir)
    if not root.is_dir():
        return []
    now = now or now_utc()
    removed = []
    with _approvals_lock(private_dir):
        for meta in sorted(root.glob("*/staged.json")):
            try:
                staged = StagedRelease.model_validate_json(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if staged.expires_at > now:
                continue
            _write_record(private_dir, staged, "expired", now,
                          {"expired_at": staged.expires_at.isoformat(),
                           "note": "not decided within the policy's approval_days; staged data removed"})
            shutil.rmtree(meta.parent, ignore_errors=True)
            log.warning("staged release %s expired (not decided by %s) and was removed",
                        staged.staged_id, staged.expires_at.isoformat())
            removed.append(staged)
        for tmp in root.glob(".tmp-*"):  # a staging killed half-way
            shutil.rmtree(tmp, ignore_errors=True)
    return removed


# --- staging (the publish step, when approval is required) -------------------------------------

def awaiting_banner() -> str:
    from deidflow.manifest.review import approval_section

    return approval_section(None)


def stage_release(work: Path):
    """The publish step under a policy that requires approval: seal and sign the release as
    publish would, with the review page's "awaiting approval" banner, and keep it in the
    private directory; nothing reaches the output directory. A rerun finds the staged copy and
    reports it. Called by `publish` under the output directory's lock."""
    from deidflow.manifest.signing import ensure_signing_key, signing_key_id
    from deidflow.manifest.statement import REVIEW_NAME
    from deidflow.release.publish import build_record
    from deidflow.release.state import STATE, RunState, now_utc, pinned_policy
    from deidflow.release.workdir import EXCLUSION_LOG, WorkDir, private_dir

    state = RunState.load(work)
    loaded = pinned_policy(state)
    private = private_dir(loaded)
    expire_stale(private)
    staged_id = state.release_id
    existing = _staged_root(private) / staged_id / "staged.json"
    if existing.is_file():
        return _staged_summary(load_staged(private, staged_id), already=True)
    last = _latest_record(private, staged_id)
    if last is not None and last["decision"] == "rejected":
        c = last["content"]
        raise GateFailed(
            f"release {staged_id} was rejected by {c.get('approver')} on {c.get('decided_at', '')[:10]}; "
            "a rejected release is not staged again",
            key="release.approval",
            fix="change what the officer objected to (policy, inputs), which makes a new release, "
            "or ask the officer about the rejection record in the private directory",
        )

    record = build_record(loaded, state, finished_at=now_utc())
    stage = WorkDir.of(work, state).staging
    signing_key = ensure_signing_key(loaded.resolve(loaded.policy.keys.signing_key_file))
    _seal_staging(work, state, loaded, record, stage, signing_key)
    review = stage / REVIEW_NAME
    expires = record.finished_at + timedelta(days=loaded.policy.release.approval_days)

    root = _mkdir_private(_staged_root(private))
    tmp = root / f".tmp-{staged_id}.{state.run_id}"
    shutil.rmtree(tmp, ignore_errors=True)
    _mkdir_private(tmp)
    shutil.move(str(stage), str(tmp / "release"))
    keep = _mkdir_private(tmp / "private")
    if (work / "pseudonyms").is_dir():
        shutil.copytree(work / "pseudonyms", keep / "pseudonyms")
    shutil.copyfile(work / EXCLUSION_LOG, keep / EXCLUSION_LOG)
    shutil.copyfile(work / STATE, keep / STATE)
    final = root / staged_id
    staged = StagedRelease(
        staged_id=staged_id, release_id=state.release_id, created_at=record.finished_at,
        expires_at=expires, recipient=record.recipient.name, purpose=record.purpose,
        agreement_id=record.agreement_id, policy_path=str(loaded.path), policy_sha256=loaded.sha256,
        executor_key_id=signing_key_id(signing_key), staged_dir=final,
        review_page=final / "release" / review.name, flow_run_id=state.flow_run_id,
        prefect_api_url=_prefect_api_url() if state.flow_run_id else None,
    )
    _write_json(tmp / "staged.json", staged.model_dump(mode="json"))
    os.rename(tmp, final)
    log.info("release %s staged for approval until %s", staged_id, expires.isoformat())
    return _staged_summary(staged)


def _seal_staging(work: Path, state, loaded, record, stage: Path, signing_key: Path) -> None:
    """Review page (with its awaiting-approval banner) and executor-signed manifest, in the
    run's staging directory: what `publish_release` writes, before its rename."""
    from deidflow.manifest.review import render_review
    from deidflow.manifest.seal import write_manifest
    from deidflow.manifest.statement import REVIEW_NAME, FileDigests
    from deidflow.release.publish import _class_sizes
    from deidflow.release.transform import released_table
    from deidflow.release.workdir import WorkDir

    policy = loaded.policy
    sizes_after = _class_sizes(released_table(stage, policy.subject_table, policy.output.format,
                                              state.engine), loaded)
    sid = policy.tables[policy.subject_table].subject_column
    sizes_before = _class_sizes(WorkDir.of(work).gated_table(policy.subject_table,
                                            list(dict.fromkeys([sid, *policy.quasi_identifiers()]))), loaded)
    digests = FileDigests()
    render_review(stage, record, signing_key_path=signing_key, class_sizes=sizes_after.tolist(),
                  class_sizes_before=sizes_before.tolist(), k=policy.limits.k, digests=digests)
    review = stage / REVIEW_NAME
    review.write_text(_with_section(review.read_text(encoding="utf-8"), awaiting_banner()),
                      encoding="utf-8")
    write_manifest(stage, record, signing_key, digests=digests)


def _prefect_api_url() -> str | None:
    try:
        from prefect.settings import PREFECT_API_URL

        return PREFECT_API_URL.value() or None
    except Exception:  # Prefect absent or unconfigured: no server to resume
        return None


def _staged_summary(staged: StagedRelease, *, already: bool = False):
    from deidflow.manifest.verify import read_record_unverified
    from deidflow.release.publish import ReleaseSummary

    record = read_record_unverified(staged.release_dir)
    if record is None:
        raise GateFailed(f"staged release {staged.staged_id} has no readable manifest",
                         file=str(staged.release_dir),
                         fix="reject it (deidflow reject) or remove its directory, then rerun")
    summary = ReleaseSummary.from_record(record, None)
    return summary.model_copy(update={"staged_id": staged.staged_id, "staged_review": staged.review_page,
                                      "approval_expires": staged.expires_at, "already_released": already})


# --- the review page's approval section ---------------------------------------------------------

_SECTION_START = "<!-- deidflow:approval -->"
_SECTION_END = "<!-- /deidflow:approval -->"


def _with_section(page: str, section: str) -> str:
    """The review page with its approval section (banner or block) put in, or replaced."""
    block = f"{_SECTION_START}\n{section}\n{_SECTION_END}\n"
    start = page.find(_SECTION_START)
    if start >= 0:
        end = page.index(_SECTION_END, start) + len(_SECTION_END) + 1
        return page[:start] + block + page[end:]
    at = page.index("<main>") + len("<main>\n")
    return page[:at] + block + page[at:]


# --- deciding ----------------------------------------------------------------------------------------

class ApprovalSummary(BaseModel):
    """What the officer is shown before deciding (figures from the executor-signed record)."""

    model_config = ConfigDict(frozen=True)

    staged_id: str
    recipient: str
    purpose: str
    agreement_id: str
    release_model: str
    created_at: datetime
    expires_at: datetime
    subjects_in: int
    excluded_for_consent: int
    suppressed: int
    released_subjects: int
    released_rows: dict[str, int]  # per table
    k_required: int | None
    k_reached: int | None
    max_class_risk: Any
    validation_ok: bool
    limits_override: dict[str, Any] | None
    review_page: Path
    executor: str
    approver: str


class _Checked(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    loaded: Any
    staged: StagedRelease
    record: Any
    anchors: Any
    officer_key: Any
    officer: Any
    executor: Any


def _anchors_for(loaded, trust: Path | None):
    """The trust anchors an approval is checked against: --trust, else the policy's trust
    file, else $DEIDFLOW_TRUST_FILE, else trust.yaml in the directory above the policy's
    signing key (.deidflow/ of `.deidflow/keys/signing.key`), else .deidflow/trust.yaml in the
    working directory. A bare public key cannot name an approver, so it is not enough."""
    from deidflow.manifest.trust import TRUST_FILE_ENV, load_trust_file

    candidates = [trust] if trust else []
    if getattr(loaded.policy.keys, "trust_file", None):
        candidates.append(loaded.resolve(loaded.policy.keys.trust_file))
    if os.environ.get(TRUST_FILE_ENV):
        candidates.append(Path(os.environ[TRUST_FILE_ENV]))
    # the hospital's .deidflow/ (where `keys init` puts keys/), then the working directory's
    candidates.append(loaded.resolve(loaded.policy.keys.signing_key_file).parent.parent / "trust.yaml")
    candidates.append(Path(".deidflow/trust.yaml"))
    for c in candidates:
        if c is not None and Path(c).is_file() and Path(c).suffix != ".pub":
            return load_trust_file(Path(c))
    raise ApprovalError(
        "no trust file: an approval needs one listing the executor's and the approver's keys",
        key="--trust",
        fix="pass --trust FILE, or set keys.trust_file in the policy; add keys with "
        "`deidflow keys trust KEY.pub --owner NAME --role executor|approver --trust FILE`",
    )


def _check(policy_path: Path, staged_id: str, key_path: Path, trust: Path | None) -> _Checked:
    """Everything that must hold before a decision: a pending, unexpired, intact staged release
    of this policy, signed by a trusted executor; an officer key trusted as approver, another
    key and another owner than the executor's."""
    from deidflow.manifest.signing import key_id, load_signing_key, short_key_id
    from deidflow.manifest.trust import KeyRole
    from deidflow.manifest.verify import verify_release
    from deidflow.policy import load_policy
    from deidflow.release.state import now_utc
    from deidflow.release.workdir import private_dir

    loaded = load_policy(policy_path)
    private = private_dir(loaded)
    expire_stale(private)
    decided = decision_of(private, staged_id)
    if decided is not None:
        raise ApprovalError(f"staged release {staged_id} was already {decided}", key="STAGED_ID",
                            fix="see the records under " + str(_records_root(private)))
    staged = load_staged(private, staged_id)
    if staged.policy_sha256 != loaded.sha256:
        raise ApprovalError(
            "the policy changed since this release was staged: the officer would approve a "
            "release made under another text", file=str(loaded.path),
            fix="reject this staged release and rerun the release with the current policy",
        )
    anchors = _anchors_for(loaded, trust)
    report = verify_release(staged.release_dir, anchors=anchors)
    if not (report.integrity_ok and report.trust_anchored) or report.record is None:
        raise ApprovalError(
            "the staged release does not match its executor-signed manifest; it cannot be "
            "approved:\n  " + "\n  ".join(report.messages() or ["no release record"]),
            file=str(staged.release_dir),
            fix="reject it (deidflow reject) and rerun the release",
        )
    record = report.record
    if record.release_id != staged.release_id or not record.approval_required or record.approval:
        raise ApprovalError("the staged manifest is not this staged release's", file=str(staged.release_dir),
                            fix="reject it (deidflow reject) and rerun the release")
    # Expiry from the signed record, not only from staged.json (which is not signed).
    if record.finished_at + timedelta(days=loaded.policy.release.approval_days) <= now_utc():
        raise ApprovalError(f"staged release {staged_id} has expired", key="release.approval_days",
                            fix="rerun the release; it is staged afresh")
    executor = anchors.by_id(report.keyid or "")
    if executor is None or executor.role is not KeyRole.executor:
        raise ApprovalError("the staged release is not signed by a trusted executor key",
                            file=str(staged.release_dir), fix="rerun the release")
    officer_key = load_signing_key(key_path)
    kid = key_id(officer_key.public_key())
    officer = anchors.by_id(kid)
    if kid == executor.key_id:
        raise ApprovalError(
            "this is the executor's key (the one that signed the staged release): the approver "
            "must be another person with another key", file=str(key_path),
            fix="the privacy officer approves with their own key (deidflow keys init --role approver)",
        )
    if officer is None:
        raise ApprovalError(
            f"key {short_key_id(kid)} is not in the trust file ({anchors.origin})", file=str(key_path),
            fix="add the officer's .pub with `deidflow keys trust KEY.pub --owner NAME --role "
            "approver --trust FILE` (the hospital's key custodian does this)",
        )
    if officer.role is not KeyRole.approver:
        raise ApprovalError(
            f"key {short_key_id(kid)} is trusted as {officer.role.value} of {officer.owner!r}, not "
            "as an approver", file=str(key_path),
            fix="approve with a key the trust file lists with role approver",
        )
    if officer.owner.strip().casefold() == executor.owner.strip().casefold():
        raise ApprovalError(
            f"the approver key and the executor key have the same owner ({officer.owner!r}): "
            "GB/T 37964 5.5 needs an approver other than the executor", file=str(key_path),
            fix="the privacy officer, not the person who ran the release, approves",
        )
    return _Checked(loaded=loaded, staged=staged, record=record, anchors=anchors,
                    officer_key=officer_key, officer=officer, executor=executor)


def summary_of(c: _Checked) -> ApprovalSummary:
    r = c.record
    return ApprovalSummary(
        staged_id=c.staged.staged_id, recipient=f"{r.recipient.name} ({r.recipient.id}, {r.recipient.country})",
        purpose=r.purpose, agreement_id=r.agreement_id, release_model=r.release_model,
        created_at=c.staged.created_at, expires_at=c.staged.expires_at,
        subjects_in=r.counts.records_in, excluded_for_consent=r.counts.excluded_for_consent,
        suppressed=r.counts.suppressed, released_subjects=r.counts.released_subjects,
        released_rows=r.counts.released, k_required=r.risk.after.get("k_required"),
        k_reached=r.risk.after.get("k"),
        max_class_risk=r.risk.after.get("max_class_risk", r.risk.after.get("Rb")),
        validation_ok=r.validation_passed, limits_override=r.limits_override,
        review_page=c.staged.review_page, executor=c.executor.owner, approver=c.officer.owner,
    )


def approve(policy_path: Path, staged_id: str, key_path: Path, *, comment: str = "",
            trust: Path | None = None,
            confirm: Callable[[ApprovalSummary], bool] = lambda s: True):
    """Approve and publish a staged release (see the module docstring). `confirm` is shown the
    summary and returns False to stop with nothing done. Returns the ReleaseSummary."""
    from deidflow.io import publish as rename_into_place
    from deidflow.manifest.record import Approval, ReleaseRecord
    from deidflow.manifest.seal import envelope_bytes, write_manifest
    from deidflow.manifest.signing import add_signature, signing_key_id
    from deidflow.manifest.statement import MANIFEST_NAME, REVIEW_NAME, file_sha256
    from deidflow.manifest.review import approval_section
    from deidflow.release.publish import ReleaseSummary, _begin_record_release
    from deidflow.release.state import RunState, now_utc
    from deidflow.release.workdir import EXCLUSION_LOG, WorkDir, output_lock, output_root, private_dir

    c = _check(policy_path, staged_id, key_path, trust)
    if not confirm(summary_of(c)):
        raise ApprovalError("not approved: nothing was published", key="confirmation",
                            fix="rerun `deidflow approve` when ready (or --yes in scripts)")
    loaded, staged, private = c.loaded, c.staged, private_dir(c.loaded)
    executor_key_path = loaded.resolve(loaded.policy.keys.signing_key_file)
    if signing_key_id(executor_key_path) != c.executor.key_id:
        raise ApprovalError("the policy's signing key is not the key that signed the staged release",
                            file=str(executor_key_path), key="keys.signing_key_file",
                            fix="approve on the release host, with the policy the release ran under")
    now = now_utc()
    approval = Approval(
        approver=c.officer.owner, key_id=c.officer.key_id, executor_key_id=c.executor.key_id,
        approved_at=now, comment=comment, staged_at=staged.created_at,
        review_sha256=file_sha256(staged.release_dir / REVIEW_NAME),
        staged_manifest_sha256=file_sha256(staged.release_dir / MANIFEST_NAME),
    )
    record = ReleaseRecord.model_validate({**c.record.to_json(), "approval": approval.model_dump(mode="json")})
    root = output_root(loaded)
    root.mkdir(parents=True, exist_ok=True)
    # Lock order as in publish (output directory, then approvals): never the other way round.
    with output_lock(loaded), _approvals_lock(private):
        if decision_of_unlocked(private, staged_id) is not None:
            raise ApprovalError(f"staged release {staged_id} was decided meanwhile", key="STAGED_ID",
                                fix="see `deidflow releases list --policy POLICY`")
        final = root / staged.release_id
        if final.exists():
            raise ApprovalError("a release with this id is already published", file=str(final),
                                fix="reject the staged copy")
        stage = root / f".staging-{staged.release_id}.approve-{os.getpid()}"
        shutil.rmtree(stage, ignore_errors=True)
        try:
            shutil.copytree(staged.release_dir, stage)
            (stage / MANIFEST_NAME).unlink()
            review = stage / REVIEW_NAME
            review.write_text(_with_section(review.read_text(encoding="utf-8"), approval_section(approval)),
                              encoding="utf-8")
            manifest = write_manifest(stage, record, executor_key_path)
            envelope = add_signature(json.loads(manifest.read_bytes()), c.officer_key)
            manifest.write_bytes(envelope_bytes(envelope))
            state = RunState.load(staged.private_files)
            kept = WorkDir(staged.private_files, private, root, staged.release_id)  # the run's kept files
            with _begin_record_release(kept, loaded, state, now) as recording:
                recording.inserted()
                rename_into_place(stage, final)
                exclusions = _mkdir_private(private / "exclusions")
                shutil.copyfile(staged.private_files / EXCLUSION_LOG, exclusions / f"{staged.release_id}.csv")
                (exclusions / f"{staged.release_id}.csv").chmod(0o600)
                recording.commit()
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        _write_record(private, staged, "approved", now, {
            "approver": c.officer.owner, "key_id": c.officer.key_id, "comment": comment,
            "review_sha256": approval.review_sha256,
            "staged_manifest_sha256": approval.staged_manifest_sha256,
            "manifest_sha256": file_sha256(final / MANIFEST_NAME), "release_dir": str(final),
        }, c.officer_key)
        shutil.rmtree(staged.staged_dir, ignore_errors=True)
    _resume(staged)
    return ReleaseSummary.from_record(record, final)


def reject(policy_path: Path, staged_id: str, key_path: Path, *, reason: str,
           trust: Path | None = None) -> Path:
    """Discard a staged release, keeping a rejection record signed by the approver's key."""
    from deidflow.manifest.statement import MANIFEST_NAME, REVIEW_NAME, file_sha256
    from deidflow.release.state import now_utc
    from deidflow.release.workdir import private_dir

    if not reason.strip():
        raise ApprovalError("a rejection needs a reason", key="--reason",
                            fix="say what must change, e.g. --reason 'ages too fine for a public release'")
    c = _check(policy_path, staged_id, key_path, trust)
    private, staged, now = private_dir(c.loaded), c.staged, now_utc()
    with _approvals_lock(private):
        if decision_of_unlocked(private, staged_id) is not None:
            raise ApprovalError(f"staged release {staged_id} was decided meanwhile", key="STAGED_ID",
                                fix="see `deidflow releases list --policy POLICY`")
        path = _write_record(private, staged, "rejected", now, {
            "approver": c.officer.owner, "key_id": c.officer.key_id, "reason": reason,
            "review_sha256": file_sha256(staged.release_dir / REVIEW_NAME),
            "staged_manifest_sha256": file_sha256(staged.release_dir / MANIFEST_NAME),
        }, c.officer_key)
        shutil.rmtree(staged.staged_dir, ignore_errors=True)
    _resume(staged)
    return path


def verify_approved(release_dir: Path, loaded):
    """`verify_release` of a published release under the approval trust anchors of `loaded`."""
    from deidflow.manifest.verify import verify_release

    return verify_release(release_dir, anchors=_anchors_for(loaded, None))


def decision_of_unlocked(private_dir: Path, staged_id: str) -> Decision | None:
    if (_staged_root(private_dir) / staged_id / "staged.json").is_file():
        return None
    record = _latest_record(private_dir, staged_id)
    return None if record is None else record["decision"]


def _resume(staged: StagedRelease) -> None:
    """Resume the Prefect flow run paused on this decision, where that module is installed."""
    try:
        from deidflow.flows.approval_wait import resume_if_paused
    except ImportError:
        return
    resume_if_paused(staged)


__all__ = [
    "StagedRelease", "ApprovalSummary", "ApprovalError", "load_staged", "record_flow_run",
    "decision_of", "pending", "expire_stale", "stage_release", "approve", "reject",
    "check_decision_record",
]
