"""Verify a release directory against its signed manifest.

A release verifies only when its signature checks out under a key the hospital trusts
(`deidflow.manifest.trust`: a public key given separately, a trust file, or the policy's
key). Checked with the key shipped in the release (signer.pub) the files can be shown to match
what *someone* signed, not who: that is `integrity_ok`, never `ok`.

Every check runs even after one fails, so the report names everything that changed:
manifest format, signature, each changed / missing / extra file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deidflow.errors import DeidflowError, VerificationError
from deidflow.manifest.record import ReleaseRecord
from deidflow.manifest.seal import envelope_bytes
from deidflow.manifest.signing import (
    IN_TOTO_PAYLOAD_TYPE,
    check_signature,
    key_id,
    load_public_key,
    short_key_id,
    strict_b64decode,
)
from deidflow.manifest.trust import REQUIRED_ROLES, KeyRole, TrustAnchors, resolve_anchors
from deidflow.manifest.statement import (
    MANIFEST_NAME,
    PREDICATE_TYPE,
    PUBLIC_KEY_NAME,
    STATEMENT_TYPE,
    file_sha256,
    record_from_statement,
    release_files,
)


@dataclass(frozen=True)
class ChangedFile:
    name: str
    expected_sha256: str
    found_sha256: str


@dataclass
class VerifyReport:
    release_dir: Path
    signature_valid: bool = False
    trust_anchored: bool = False
    keyid: str | None = None
    signer_keyids: list[str] = field(default_factory=list)
    changed: list[ChangedFile] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    subjects_checked: int = 0
    record: ReleaseRecord | None = None
    signer_owner: str | None = None  # owner of the trusted key that signed, from the trust anchors
    trust_origin: str | None = None  # where the trusted keys came from
    untrusted: str | None = None  # why the signer is not trusted (None once it is)
    # Where the signed statement says approval was required: why the approval does not hold
    # (None when it holds or was not required), and the trusted approver's owner once it does.
    approval_problem: str | None = None
    approver_owner: str | None = None

    @property
    def integrity_ok(self) -> bool:
        """Files match a manifest whose signature is valid — under *some* key."""
        return (
            self.signature_valid
            and not self.problems
            and not self.changed
            and not self.missing
            and not self.extra
        )

    @property
    def untrusted_only(self) -> bool:
        """Nothing wrong with the files or the envelope except that no trusted key signed it
        (a forgery re-signed with its own key looks like this)."""
        return (
            not self.trust_anchored
            and self.untrusted is not None
            and not self.problems
            and not self.changed
            and not self.missing
            and not self.extra
        )

    @property
    def ok(self) -> bool:
        """Intact and signed by a key the hospital trusts (and, where approval was required,
        approved by a trusted approver): the only state to accept."""
        return self.integrity_ok and self.trust_anchored and self.approval_problem is None

    def messages(self) -> list[str]:
        """One line per finding, each naming the file it is about."""
        out = list(self.problems)
        if self.untrusted and not self.trust_anchored:
            out.append(self.untrusted)
        if self.approval_problem:
            out.append(self.approval_problem)
        out += [
            f"{c.name}: changed since signing (sha256 signed {c.expected_sha256[:16]}…, "
            f"found {c.found_sha256[:16]}…)"
            for c in self.changed
        ]
        out += [f"{name}: missing (listed in the signed manifest)" for name in self.missing]
        out += [f"{name}: extra file, not in the signed manifest" for name in self.extra]
        return out

    def summary(self) -> str:
        who = short_key_id(self.keyid or "")
        if self.ok:
            return (
                f"verified: {self.subjects_checked} files match manifest.json, signed by key "
                f"{who} ({self.signer_owner}), a trusted key from {self.trust_origin}"
            )
        if self.integrity_ok and self.trust_anchored:
            return "NOT verified: " + str(self.approval_problem)
        if self.integrity_ok:
            return (
                f"NOT verified: {self.subjects_checked} files match manifest.json signed by key "
                f"{who}, but that key was shipped inside the release (trust NOT anchored): who signed is "
                "unproven"
            )
        return "verification FAILED:\n  " + "\n  ".join(self.messages())

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise VerificationError(
                "release does not match its signed manifest:\n  " + "\n  ".join(self.messages()),
                file=str(self.release_dir),
                fix="do not use this release; ask the releasing hospital for a fresh copy",
            )


def verify_release(
    release_dir: Path,
    public_key_path: Path | None = None,
    *,
    anchors: TrustAnchors | None = None,
) -> VerifyReport:
    """Check `release_dir` against its manifest and the trusted keys: `anchors`, or the one
    key at `public_key_path`. With neither, the shipped signer.pub is used and the report can
    at best be `integrity_ok` (never `ok`). A trusted key file inside the release is refused
    (TrustError)."""
    release_dir = Path(release_dir)
    report = VerifyReport(release_dir=release_dir)
    if anchors is None and public_key_path is not None:
        anchors = resolve_anchors(public_keys=[Path(public_key_path)])
    if anchors is not None:
        anchors.refuse_inside(release_dir)
        report.trust_origin = anchors.origin
    manifest = release_dir / MANIFEST_NAME
    if not release_dir.is_dir():
        report.problems.append(f"{release_dir}: not a directory")
        return report
    if not manifest.is_file():
        report.problems.append(f"{MANIFEST_NAME}: missing; this release is not signed")
        return report

    envelope = _read_envelope(manifest, report)
    statement = _read_statement(envelope, report) if envelope else None

    if envelope is not None:
        if anchors is not None:
            _check_trusted_signature(release_dir, envelope, anchors, report)
        else:
            _check_signature(release_dir, envelope, None, report)
            report.untrusted = (
                f"{PUBLIC_KEY_NAME}: checked with the key shipped inside the release; a forger "
                "re-signs with their own key, so this proves nothing about who signed"
            )
    if statement is not None:
        _check_subjects(release_dir, statement, report)
        try:
            report.record = record_from_statement(statement)
        except (ValidationError, KeyError, TypeError) as exc:
            report.problems.append(f"{MANIFEST_NAME}: predicate is not a release record ({exc})")
    if report.record is not None and report.record.approval_required and envelope is not None:
        _check_approval(envelope, report.record, anchors, report)
    return report


def _check_approval(envelope: dict[str, Any], record: ReleaseRecord, anchors: TrustAnchors | None,
                    report: VerifyReport) -> None:
    """The statement says approval was required: a valid signature by a trusted approver key,
    another key and another owner than the executor's, naming itself in the approval block."""
    if record.approval is None:
        report.approval_problem = (
            f"{MANIFEST_NAME}: the release's policy required approval, but the signed statement "
            "holds no approval: it was never approved by the privacy officer"
        )
        return
    if anchors is None:
        report.approval_problem = f"{MANIFEST_NAME}: the approver's signature needs a trust file to be checked"
        return
    executor = anchors.by_id(report.keyid or "")
    approver = None
    for sig in envelope["signatures"]:
        trusted = anchors.by_id(str(sig.get("keyid")))
        if trusted is None or trusted.role is not KeyRole.approver:
            continue
        try:
            if check_signature(envelope, trusted.public_key).valid:
                approver = trusted
                break
        except (ValueError, KeyError, TypeError):
            continue
    a = record.approval
    if approver is None:
        report.approval_problem = (
            f"{MANIFEST_NAME}: approval required, but no valid signature by a key trusted as "
            f"approver (the statement names key {short_key_id(a.key_id)} of {a.approver!r}; "
            f"trusted keys from {anchors.origin}); pass the trust file that lists the approver"
        )
        return
    if executor is not None and (approver.key_id == executor.key_id
                                 or approver.owner.strip().casefold() == executor.owner.strip().casefold()):
        report.approval_problem = (
            f"{MANIFEST_NAME}: the approver ({approver.owner}) is the executor ({executor.owner}): "
            "approval needs another person's key"
        )
        return
    if a.key_id != approver.key_id or (report.keyid and a.executor_key_id != report.keyid):
        report.approval_problem = (
            f"{MANIFEST_NAME}: the approval block names key {short_key_id(a.key_id)}, but the "
            f"approver signature is by {short_key_id(approver.key_id)}"
        )
        return
    report.approver_owner = approver.owner


def _read_envelope(manifest: Path, report: VerifyReport) -> dict[str, Any] | None:
    raw = manifest.read_bytes()
    try:
        envelope = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        report.problems.append(f"{MANIFEST_NAME}: not valid JSON ({exc}); it was altered")
        return None
    if not isinstance(envelope, dict) or set(envelope) != {"payload", "payloadType", "signatures"}:
        keys = sorted(envelope) if isinstance(envelope, dict) else type(envelope).__name__
        report.problems.append(
            f"{MANIFEST_NAME}: not a DSSE envelope (fields {keys}, expected payload, "
            "payloadType, signatures)"
        )
        return None
    if envelope["payloadType"] != IN_TOTO_PAYLOAD_TYPE:
        report.problems.append(
            f"{MANIFEST_NAME}: payloadType is {envelope['payloadType']!r}, "
            f"expected {IN_TOTO_PAYLOAD_TYPE!r}"
        )
    sigs = envelope["signatures"]
    if not isinstance(sigs, list) or not all(isinstance(s, dict) for s in sigs) or not sigs:
        report.problems.append(f"{MANIFEST_NAME}: signatures must be a non-empty list")
        return None
    report.signer_keyids = [str(s.get("keyid")) for s in sigs]
    try:
        canonical = envelope_bytes(envelope)
    except (TypeError, ValueError):
        canonical = b""
    if canonical != raw:
        # Bytes outside the signed payload (whitespace, escapes, duplicate keys) changed.
        report.problems.append(
            f"{MANIFEST_NAME}: bytes differ from the form deidflow writes; the file was edited "
            "after signing"
        )
    return envelope


def _read_statement(envelope: dict[str, Any], report: VerifyReport) -> dict[str, Any] | None:
    try:
        payload = strict_b64decode(envelope["payload"])
    except ValueError as exc:
        report.problems.append(f"{MANIFEST_NAME}: payload is {exc}; it was altered")
        return None
    try:
        statement = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        report.problems.append(f"{MANIFEST_NAME}: payload is not a JSON statement; it was altered")
        return None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        report.problems.append(f"{MANIFEST_NAME}: payload is not an in-toto Statement v1")
        return None
    if statement.get("predicateType") != PREDICATE_TYPE:
        report.problems.append(
            f"{MANIFEST_NAME}: predicateType {statement.get('predicateType')!r} is not "
            f"{PREDICATE_TYPE!r}"
        )
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not all(
        isinstance(s, dict) and isinstance(s.get("digest"), dict) for s in subjects
    ):
        report.problems.append(f"{MANIFEST_NAME}: statement subjects are malformed")
        return None
    return statement


def _check_signature(
    release_dir: Path,
    envelope: dict[str, Any],
    public_key_path: Path | None,
    report: VerifyReport,
) -> None:
    try:
        if public_key_path is not None:
            public_key = load_public_key(public_key_path)
            report.trust_anchored = True
        else:
            public_key = load_public_key(release_dir / PUBLIC_KEY_NAME)
    except DeidflowError as exc:
        report.problems.append(f"{exc.file}: {exc.message}")
        return
    report.keyid = key_id(public_key)
    try:
        check = check_signature(envelope, public_key)
    except (ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"{MANIFEST_NAME}: signature cannot be checked ({exc})")
        return
    report.signature_valid = check.valid
    if not check.valid:
        source = str(public_key_path) if public_key_path else PUBLIC_KEY_NAME
        report.problems.append(
            f"{MANIFEST_NAME}: {check.reason} (key from {source}); the manifest was changed "
            "after signing or was signed by another key"
        )


def _check_trusted_signature(
    release_dir: Path, envelope: dict[str, Any], anchors: TrustAnchors, report: VerifyReport
) -> None:
    """Valid signatures by trusted keys, one per required role; an untrusted signer is named."""
    valid_roles: set[KeyRole] = set()
    for sig in envelope["signatures"]:
        trusted = anchors.by_id(str(sig.get("keyid")))
        if trusted is None:
            continue
        try:
            check = check_signature(envelope, trusted.public_key)
        except (ValueError, KeyError, TypeError) as exc:
            report.problems.append(f"{MANIFEST_NAME}: signature cannot be checked ({exc})")
            return
        if not check.valid:
            report.problems.append(
                f"{MANIFEST_NAME}: {check.reason} (trusted key of {trusted.owner}); the manifest "
                "was changed after signing"
            )
            return
        valid_roles.add(trusted.role)
        if report.keyid is None or trusted.role is KeyRole.executor:
            report.keyid, report.signer_owner = trusted.key_id, trusted.owner
    report.signature_valid = bool(valid_roles)
    missing = [r for r in REQUIRED_ROLES if r not in valid_roles]
    if not missing:
        report.trust_anchored = True
        return
    signers = ", ".join(short_key_id(k) for k in report.signer_keyids) or "none"
    trusted = ", ".join(f"{short_key_id(k.key_id)} ({k.owner}, {k.role.value})" for k in anchors.keys)
    report.untrusted = (
        f"{MANIFEST_NAME}: not signed by a trusted {'/'.join(r.value for r in missing)} key: "
        f"signed by {signers}; trusted keys from {anchors.origin}: {trusted}"
    )


def _check_subjects(release_dir: Path, statement: dict[str, Any], report: VerifyReport) -> None:
    expected = {str(s.get("name")): s["digest"].get("sha256") for s in statement["subject"]}
    try:
        present = release_files(release_dir)
    except VerificationError as exc:
        report.problems.append(f"{exc.file}: {exc.message}")
        return
    for name, want in expected.items():
        path = present.get(name)
        if path is None:
            report.missing.append(name)
            continue
        found = file_sha256(path)
        report.subjects_checked += 1
        if found != want:
            report.changed.append(ChangedFile(name, str(want), found))
    report.extra.extend(name for name in present if name not in expected)


def read_record_unverified(release_dir: Path) -> ReleaseRecord | None:
    """The release record in manifest.json without checking anything (for fast listings)."""
    scratch = VerifyReport(release_dir=Path(release_dir))
    envelope = _read_envelope(Path(release_dir) / MANIFEST_NAME, scratch)
    statement = _read_statement(envelope, scratch) if envelope else None
    if statement is None:
        return None
    try:
        return record_from_statement(statement)
    except (ValidationError, KeyError, TypeError):
        return None


def read_statement(release_dir: Path) -> dict[str, Any]:
    """The in-toto Statement in manifest.json, unverified (for summaries of a signed release)."""
    scratch = VerifyReport(release_dir=Path(release_dir))
    envelope = _read_envelope(Path(release_dir) / MANIFEST_NAME, scratch)
    statement = _read_statement(envelope, scratch) if envelope else None
    if statement is None:
        raise VerificationError(
            "; ".join(scratch.problems) or "no statement",
            file=str(Path(release_dir) / MANIFEST_NAME),
            fix="run `deidflow verify` on the release directory",
        )
    return statement
