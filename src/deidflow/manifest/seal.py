"""Seal a release: write signer.pub, digest every file, sign the Statement into manifest.json.

Order matters: review.html (and validation results, data, ...) must already be in the release
directory, because the Statement's subjects are computed here and nothing may change after.
That is why the review page shows "signed by key <fingerprint>" (what the pipeline is about
to sign with) rather than a live signature check: the live check is `deidflow verify`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deidflow.errors import DeidflowError
from deidflow.manifest.record import ReleaseRecord
from deidflow.manifest.signing import (
    key_id,
    load_signing_key,
    public_key_pem,
    short_key_id,
    sign_envelope,
)
from deidflow.manifest.statement import (
    MANIFEST_NAME,
    PUBLIC_KEY_NAME,
    REVIEW_NAME,
    build_statement,
    file_sha256,
    statement_bytes,
    subjects_of,
)

_REVIEW_KEY_META = re.compile(rb'<meta name="deidflow-signing-key" content="([^"]*)"')


def envelope_bytes(envelope: dict[str, Any]) -> bytes:
    """The one canonical byte form of manifest.json. The verifier re-serialises the parsed
    envelope and compares bytes, so whitespace or key order outside the signed payload cannot
    change unnoticed either."""
    return (json.dumps(envelope, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode(
        "ascii"
    )


def write_manifest(release_dir: Path, record: ReleaseRecord, signing_key_path: Path, *,
                   digests: Callable[[Path], str] = file_sha256) -> Path:
    """Sign the release in `release_dir` and return the path of manifest.json. `digests`: how
    a file's SHA-256 is taken (a `FileDigests` shared with `render_review` reads each file once)."""
    release_dir = Path(release_dir)
    key = load_signing_key(signing_key_path)
    kid = key_id(key.public_key())
    _check_review_names_key(release_dir, kid)
    (release_dir / PUBLIC_KEY_NAME).write_bytes(public_key_pem(key.public_key()))
    statement = build_statement(record, subjects_of(release_dir, digests))
    envelope = sign_envelope(statement_bytes(statement), key)
    out = release_dir / MANIFEST_NAME
    tmp = out.with_name(MANIFEST_NAME + ".tmp")
    tmp.write_bytes(envelope_bytes(envelope))
    tmp.replace(out)
    return out


def _check_review_names_key(release_dir: Path, kid: str) -> None:
    review = release_dir / REVIEW_NAME
    if not review.is_file():
        return
    m = _REVIEW_KEY_META.search(review.read_bytes()[:4096])
    if m and m.group(1).decode() != kid:
        raise DeidflowError(
            f"review.html says it is signed by key {short_key_id(m.group(1).decode())} but the "
            f"signing key is {short_key_id(kid)}",
            file=str(review),
            fix="render the review page with signing_fingerprint=key_id of the key you sign with",
        )
