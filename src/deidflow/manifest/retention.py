"""The index of past releases and the retention rule.

PIPL art. 56 and the network data regulations art. 12 require that impact assessments,
provision records and manifests be kept at least 3 years. A release directory (manifest,
validation results, review page) and the hospital-side exclusion log of the same release
(`<private_root>/exclusions/<release_id>.csv`, where the publish stage writes it, with
`output.private_directory` as private_root) are deleted only through `ReleaseIndex.purge`, which refuses
anything whose retention date has not passed, anything younger than 3 years whatever its
record says, and anything whose manifest does not verify (its dates cannot be trusted).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from deidflow.errors import DeidflowError
from deidflow.manifest.record import MIN_RETENTION_YEARS, add_years
from deidflow.manifest.statement import MANIFEST_NAME
from deidflow.manifest.trust import TrustAnchors
from deidflow.manifest.verify import VerifyReport, verify_release

#: `deidflow recheck` writes <output>/deletion-notices/<release_id>/ beside the releases
#: (deidflow.recheck.NOTICE_DIR; not imported, that module pulls in the consent registry).
NOTICE_DIR = "deletion-notices"


class RetentionError(DeidflowError):
    """A deletion the retention rule forbids."""


@dataclass(frozen=True)
class ReleaseEntry:
    release_id: str
    path: Path
    integrity: str  # verified | untrusted | tampered | unsigned | not-checked
    created_at: datetime | None = None
    recipient: str | None = None
    agreement_id: str | None = None
    retention_until: datetime | None = None
    retention_due: bool = False
    problems: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        if self.integrity in ("tampered", "unsigned", "untrusted"):
            return self.integrity
        if self.retention_due:
            return "expired-retention-due"
        return self.integrity


class ReleaseIndex:
    """Releases under an output directory (one sub-directory per release)."""

    def __init__(
        self,
        root: Path,
        private_root: Path | None = None,
        public_key_path: Path | None = None,
        anchors: "TrustAnchors | None" = None,
    ) -> None:
        self.root = Path(root)
        self.private_root = Path(private_root) if private_root else None
        self.public_key_path = public_key_path
        # "verified" needs a trusted key; without anchors a release is at best "untrusted"
        self.anchors = anchors

    def releases(self, now: datetime | None = None, *, verify: bool = True) -> list[ReleaseEntry]:
        now = _now(now)
        if not self.root.is_dir():
            return []
        entries = [
            self._entry(d, now, verify)
            for d in sorted(self.root.iterdir())
            # dot-dirs are staging; deletion-notices/ is where `deidflow recheck` writes
            if d.is_dir() and not d.name.startswith(".") and d.name != NOTICE_DIR
        ]
        return sorted(entries, key=lambda x: (x.created_at is None, x.created_at or now))

    def due(self, now: datetime | None = None) -> list[ReleaseEntry]:
        """Releases whose retention period has passed (they may be deleted)."""
        return [r for r in self.releases(now) if r.status == "expired-retention-due"]

    def purge(self, release_id: str, now: datetime | None = None) -> list[Path]:
        """Delete one release and its private exclusion log, if the retention rule allows."""
        now = _now(now)
        # By directory: the pipeline names each release directory after its release id, and
        # two directories may claim one id (a copy); the directory is what gets deleted.
        entry = next((r for r in self.releases(now) if r.path.name == release_id), None)
        if entry is None:
            raise RetentionError(
                f"no release '{release_id}'",
                file=str(self.root),
                fix="see `deidflow releases list` for release ids",
            )
        if entry.release_id != entry.path.name:
            raise RetentionError(
                f"directory '{entry.path.name}' holds release '{entry.release_id}': a renamed or "
                "copied release is kept",
                file=str(entry.path),
                fix="investigate; purge releases by the directory the pipeline wrote",
            )
        if entry.integrity != "verified" or entry.created_at is None or entry.retention_until is None:
            raise RetentionError(
                f"release '{release_id}' is {entry.status}: its dates cannot be trusted, so it "
                "is kept",
                file=str(entry.path),
                fix="investigate with `deidflow verify`; a tampered release is evidence",
            )
        earliest = max(entry.retention_until, add_years(entry.created_at, MIN_RETENTION_YEARS))
        if now < earliest:
            raise RetentionError(
                f"release '{release_id}' must be kept until {earliest.date()} "
                f"(PIPL art. 56, network data regulations art. 12: at least "
                f"{MIN_RETENTION_YEARS} years)",
                file=str(entry.path),
                fix=f"wait until {earliest.date()}",
            )
        removed = [entry.path]
        shutil.rmtree(entry.path)
        if self.private_root is not None:
            log = self.private_root / "exclusions" / f"{release_id}.csv"
            if log.is_file():
                log.unlink()
                removed.append(log)
            private = self.private_root / release_id  # any other per-release private records
            if private.is_dir():
                shutil.rmtree(private)
                removed.append(private)
        return removed

    def _entry(self, path: Path, now: datetime, verify: bool) -> ReleaseEntry:
        if not (path / MANIFEST_NAME).is_file():
            return ReleaseEntry(path.name, path, "unsigned", problems=("manifest.json missing",))
        report: VerifyReport | None = None
        if verify:
            report = verify_release(path, self.public_key_path, anchors=self.anchors)
            record = report.record
            integrity = "verified" if report.ok else "untrusted" if report.untrusted_only else "tampered"
        else:
            from deidflow.manifest.verify import read_record_unverified

            record = read_record_unverified(path)
            integrity = "not-checked"
        if record is None:
            return ReleaseEntry(
                path.name, path, integrity, problems=tuple(report.messages()) if report else ()
            )
        problems = tuple(report.messages()) if report else ()
        if record.release_id != path.name:
            problems += (f"directory name differs from the signed release id '{record.release_id}'",)
        return ReleaseEntry(
            release_id=record.release_id,
            path=path,
            integrity=integrity,
            created_at=record.created_at,
            recipient=f"{record.recipient.name} ({record.recipient.id})",
            agreement_id=record.agreement_id,
            retention_until=record.retention_until,
            retention_due=now >= max(
                record.retention_until, add_years(record.created_at, MIN_RETENTION_YEARS)
            ),
            problems=problems,
        )


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)
