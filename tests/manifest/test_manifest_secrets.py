"""No key in a release: neither the pseudonymisation secret (only its fingerprint) nor the
private signing key nor the registry password appears in any released byte, including the
decoded manifest payload."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from deidflow.manifest.record import ReleaseRecord
from deidflow.manifest.signing import load_signing_key
from release_sample import KEY_FINGERPRINT, PSEUDONYM_SECRET, make_record


def encodings(secret: bytes) -> list[bytes]:
    """The forms a leaked key usually takes in text: raw, hex, base64 (std and url-safe)."""
    forms = [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]
    # also any 12-byte window in hex: a truncated leak is still a leak
    forms += [secret[i : i + 12].hex().encode() for i in range(0, len(secret) - 11, 4)]
    return forms


def released_bytes(release: Path) -> dict[str, bytes]:
    blobs = {p.relative_to(release).as_posix(): p.read_bytes() for p in release.rglob("*") if p.is_file()}
    envelope = json.loads(blobs["manifest.json"])
    blobs["manifest.json#payload"] = base64.b64decode(envelope["payload"])
    return blobs


def test_no_form_of_the_pseudonymisation_secret_is_released(release: Path):
    blobs = released_bytes(release)
    for name, blob in blobs.items():
        for form in encodings(PSEUDONYM_SECRET):
            assert form not in blob, f"{name} holds the secret ({form[:8]!r}…)"
    # the fingerprint is what identifies the key, and it is there
    assert KEY_FINGERPRINT.encode() in blobs["manifest.json#payload"]
    assert KEY_FINGERPRINT.encode() in blobs["review.html"]


def test_the_private_signing_key_is_not_released(release: Path, signing_key: Path):
    key = load_signing_key(signing_key)
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    pem_body = b"".join(signing_key.read_bytes().splitlines()[1:-1])
    for name, blob in released_bytes(release).items():
        for form in [*encodings(raw), pem_body]:
            assert form not in blob, f"{name} holds the private signing key"
    assert b"PRIVATE KEY" not in (release / "signer.pub").read_bytes()


def test_the_registry_password_is_not_released(release: Path):
    for name, blob in released_bytes(release).items():
        assert b"s3cr3t-pw" not in blob, name
    payload = json.loads(released_bytes(release)["manifest.json#payload"])
    assert payload["predicate"]["consent"]["registry"] == "postgresql+psycopg://deid:***@db.hospital.local/consent"


@pytest.mark.parametrize(
    "params",
    [
        {"derivation": {"hkdf_salt": "00ff"}},  # nested
        {"keys": [{"private_key": "-----BEGIN"}]},  # inside a list
        {"hmac_secret": "x"},
        {"raw": b"\x8f\x3b"},  # bytes are never a fingerprint
    ],
)
def test_key_material_is_refused_wherever_it_sits_in_the_parameters(params):
    data = make_record().to_json()
    data["columns"][0]["params"] = params
    with pytest.raises(ValidationError, match="patients.patient_id"):
        ReleaseRecord.model_validate(data)


@pytest.mark.parametrize("name", ["key_fingerprint", "key_id", "signing_key_file", "keyed"])
def test_fingerprints_and_key_references_are_allowed(name):
    data = make_record().to_json()
    data["columns"][0]["params"] = {name: "hmac-sha256:0123"}
    assert ReleaseRecord.model_validate(data).columns[0].params == {name: "hmac-sha256:0123"}
