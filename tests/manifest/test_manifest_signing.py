from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from deidflow.errors import KeyCustodyError
from deidflow.manifest.signing import (
    add_signature,
    check_signature,
    ensure_signing_key,
    generate_signing_keys,
    load_public_key,
    load_signing_key,
    pae,
    sign_envelope,
    strict_b64decode,
)


def test_pae_matches_the_dsse_spec_vector():
    # DSSE protocol.md test vector.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters():
    assert pae("t", "王".encode()) == b"DSSEv1 1 t 3 " + "王".encode()


def test_keys_init_writes_0600_private_and_public(tmp_path: Path):
    private, public = generate_signing_keys(tmp_path / "k" / "signing.key")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public == tmp_path / "k" / "signing.pub"
    assert load_signing_key(private).public_key().public_bytes_raw() == (
        load_public_key(public).public_bytes_raw()
    )


def test_keys_init_refuses_to_overwrite(tmp_path: Path):
    private, _ = generate_signing_keys(tmp_path / "signing.key")
    before = private.read_bytes()
    with pytest.raises(KeyCustodyError, match="refusing to overwrite") as exc:
        generate_signing_keys(private)
    assert str(private) in exc.value.render()
    assert private.read_bytes() == before


def test_group_readable_key_is_refused_with_the_fix(tmp_path: Path):
    private, _ = generate_signing_keys(tmp_path / "signing.key")
    os.chmod(private, 0o644)
    with pytest.raises(KeyCustodyError) as exc:
        load_signing_key(private)
    text = exc.value.render()
    assert str(private) in text and "0644" in text and f"chmod 600 {private}" in text


def test_missing_key_says_how_to_make_one(tmp_path: Path):
    with pytest.raises(KeyCustodyError, match="keys init"):
        load_signing_key(tmp_path / "nope.key")


def test_ensure_signing_key_creates_once(tmp_path: Path):
    p = ensure_signing_key(tmp_path / "s.key")
    first = p.read_bytes()
    assert ensure_signing_key(p).read_bytes() == first


def test_envelope_round_trip_and_countersignature(tmp_path: Path):
    pipeline, _ = generate_signing_keys(tmp_path / "pipeline.key")
    approver, _ = generate_signing_keys(tmp_path / "approver.key")
    env = sign_envelope(b'{"a":1}', load_signing_key(pipeline))
    env = add_signature(env, load_signing_key(approver))
    assert len(env["signatures"]) == 2
    for k in (pipeline, approver):
        assert check_signature(env, load_signing_key(k).public_key()).valid
    tampered = {**env, "payload": base64.b64encode(b'{"a":2}').decode()}
    check = check_signature(tampered, load_signing_key(pipeline).public_key())
    assert not check.valid and "does not match" in check.reason


def test_non_canonical_base64_is_refused():
    # "YQ==" is b"a"; "YR==" decodes to the same byte with stray low bits set.
    assert strict_b64decode("YQ==") == b"a"
    with pytest.raises(ValueError, match="canonical"):
        strict_b64decode("YR==")
