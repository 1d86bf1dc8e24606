"""Provenance of a release: the record, its signed in-toto manifest, verification, the review
page and retention. The pipeline fills a `ReleaseRecord`, calls `render_review`, then
`write_manifest` (in that order: the manifest covers review.html)."""

from deidflow.manifest.record import DEIDENTIFIED_LABEL, ReleaseRecord
from deidflow.manifest.retention import ReleaseIndex
from deidflow.manifest.review import render_review
from deidflow.manifest.seal import write_manifest
from deidflow.manifest.signing import generate_signing_keys, key_id, load_signing_key
from deidflow.manifest.verify import VerifyReport, verify_release

__all__ = [
    "DEIDENTIFIED_LABEL",
    "ReleaseIndex",
    "ReleaseRecord",
    "VerifyReport",
    "generate_signing_keys",
    "key_id",
    "load_signing_key",
    "render_review",
    "verify_release",
    "write_manifest",
]
