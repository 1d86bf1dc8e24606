"""The in-toto Statement of a release: subjects = released files, predicate = the record.

Coverage, decided once here so that writer and verifier agree:
- every regular file under the release directory is a subject (data files, validation
  results, review.html, signer.pub, ...), named by its POSIX path relative to the directory;
- the only exception is `manifest.json` itself, the DSSE envelope whose signature covers the
  Statement. So the envelope covers the Statement, and the Statement covers everything else.
Symbolic links are refused: a link could point outside the release and change under it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deidflow.errors import VerificationError
from deidflow.manifest.record import ReleaseRecord

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://deidflow.dev/attestation/release-provenance/v1"
MANIFEST_NAME = "manifest.json"
PUBLIC_KEY_NAME = "signer.pub"
REVIEW_NAME = "review.html"

COVERAGE = (
    "subject lists the sha256 of every file in the release directory except manifest.json, "
    "the DSSE envelope that signs this statement"
)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class FileDigests:
    """`file_sha256` for the sealing of one release, reading each file once: the review page's
    file table and the manifest's subjects digest the same data files (~1 GB at 1M patients).
    A digest is reused only while the file is the same file, unchanged since it was read
    (device, inode, size, modification and change times, taken from the open file before and
    after reading); anything else is read again. Sealing only: `deidflow verify` reads every
    file itself."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[int, ...], str]] = {}

    def __call__(self, path: Path) -> str:
        key = os.fspath(Path(path).absolute())
        known = self._known.get(key)
        if known is not None and known[0] == _identity(os.stat(path)):
            return known[1]
        with open(path, "rb") as fh:
            before = _identity(os.fstat(fh.fileno()))
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
            if _identity(os.fstat(fh.fileno())) == before:  # not written to while it was read
                self._known[key] = (before, digest)
        return digest


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def release_files(release_dir: Path) -> dict[str, Path]:
    """Every file a release's subjects must cover, by relative POSIX name."""
    release_dir = Path(release_dir)
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(release_dir, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames):
            if (base / name).is_symlink():
                raise VerificationError(
                    "release directories must not contain symbolic links",
                    file=str(base / name),
                    fix="copy the data into the release directory instead of linking it",
                )
        for name in filenames:
            p = base / name
            rel = p.relative_to(release_dir).as_posix()
            if rel == MANIFEST_NAME:
                continue
            if p.is_symlink() or not p.is_file():
                raise VerificationError(
                    "not a regular file (symbolic link or special file) in a release",
                    file=str(p),
                    fix="copy the data into the release directory instead of linking it",
                )
            found[rel] = p
    return dict(sorted(found.items()))


def subjects_of(release_dir: Path, digests: Callable[[Path], str] = file_sha256) -> list[dict[str, Any]]:
    return [
        {"name": name, "digest": {"sha256": digests(path)}}
        for name, path in release_files(release_dir).items()
    ]


def build_statement(record: ReleaseRecord, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    predicate = record.to_json()
    predicate["coverage"] = COVERAGE
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def statement_bytes(statement: dict[str, Any]) -> bytes:
    """Deterministic serialisation: the same record and files sign to the same bytes."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def record_from_statement(statement: dict[str, Any]) -> ReleaseRecord:
    predicate = {k: v for k, v in statement["predicate"].items() if k != "coverage"}
    return ReleaseRecord.model_validate(predicate)

