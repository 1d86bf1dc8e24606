"""Key custody: HKDF derivation per recipient/agreement/scope, fingerprints, 0600 key files
(an open one refused), rotation keeping the retired key, and the secret never shown."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from deidflow.errors import KeyCustodyError
from deidflow.keys import (
    KeyRing,
    create_key_file,
    fingerprint_of,
    read_key_file,
    rotate_master_key,
)
from deidflow.techniques.pseudonymise import pseudonyms

from .helpers import MASTER, ring


def test_derived_keys_are_bound_to_recipient_agreement_scope_and_purpose():
    base = ring().derive("patient")
    assert ring().derive("patient") == base  # same inputs, same key: stable across runs
    others = {
        ring(recipient="rcp-b").derive("patient"),
        ring(agreement="dsa-2").derive("patient"),
        ring().derive("encounter"),
        ring().derive("patient", purpose="date_shift"),
        ring(master=bytes(32)).derive("patient"),
    }
    assert base not in others and len(others) == 5
    # length-prefixed info: ("ab","c") and ("a","bc") cannot collide
    assert ring(recipient="ab", agreement="c").derive("s") != ring(recipient="a", agreement="bc").derive("s")


def test_algorithm_is_bound_into_the_derivation_and_the_unbound_key_is_unchanged():
    from deidflow.keys import _encode_info, hkdf

    r = ring()
    cmac, unbound = r.derive("patient", algorithm="aes-cmac"), r.derive("patient")
    assert cmac != unbound and r.derive("patient", algorithm="aes-cmac") == cmac
    assert r.derive("patient", algorithm="other") not in {cmac, unbound}
    assert r.fingerprint("patient", algorithm="aes-cmac") == fingerprint_of(cmac) != r.fingerprint("patient")
    # the key without an algorithm is derived exactly as before algorithms were bound, so the
    # HMAC pseudonyms of earlier releases are reproduced
    legacy = hkdf(MASTER, _encode_info(("purpose", "pseudonym"), ("recipient", "rcp-a"),
                                       ("agreement", "dsa-1"), ("scope", "patient")))
    assert unbound == legacy


def test_fingerprint_identifies_without_revealing():
    r = ring()
    fp = r.fingerprint()
    assert fp == fingerprint_of(MASTER) and fp.startswith("sha256:")
    assert MASTER.hex() not in fp and r.derive("patient").hex() not in r.fingerprint("patient")
    assert r.fingerprint("patient") != r.fingerprint("encounter")
    assert MASTER.hex() not in repr(r) and MASTER.hex() not in str(r)


def test_short_master_refused_without_echo():
    with pytest.raises(KeyCustodyError) as exc:
        KeyRing(b"\x01" * 16, recipient_id="r", agreement_id="a")
    assert "16 bytes" in str(exc.value) and ("01" * 16) not in str(exc.value)


def test_key_file_created_0600_and_refused_when_open(tmp_path):
    path = tmp_path / "keys" / "pseudonym.key"
    key = create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == key
    with pytest.raises(KeyCustodyError, match="already exists"):
        create_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyCustodyError) as exc:
        read_key_file(path)
    msg = str(exc.value)
    assert "644" in msg and "chmod 600" in msg and key.hex() not in msg


def test_bad_key_text_refused_without_echo(tmp_path):
    path = tmp_path / "k"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not-hex-secret-material")
    os.close(fd)
    with pytest.raises(KeyCustodyError) as exc:
        read_key_file(path)
    assert "not-hex-secret-material" not in str(exc.value)


def test_rotation_changes_pseudonyms_and_keeps_the_retired_key(tmp_path):
    path = tmp_path / "pseudonym.key"
    old = create_key_file(path)
    ids = pd.Series(["P001", "P002", "P003"])
    before = pseudonyms(ids, ring(master=old).derive("patient"))

    old_fp, new_fp = rotate_master_key(path)
    new = read_key_file(path)
    assert old_fp == fingerprint_of(old) and new_fp == fingerprint_of(new) and new != old
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    retired = [p for p in tmp_path.iterdir() if ".retired-" in p.name]
    assert len(retired) == 1 and old_fp.split(":")[1] in retired[0].name
    assert stat.S_IMODE(retired[0].stat().st_mode) == 0o600
    assert read_key_file(retired[0]) == old
    assert not list(tmp_path.glob("*.new"))

    after = pseudonyms(ids, ring(master=new).derive("patient"))
    assert not (before == after).any()  # a recipient cannot link across the rotation
    # the hospital can still recompute the old release's pseudonyms from the retired key
    again = pseudonyms(ids, ring(master=read_key_file(retired[0])).derive("patient"))
    assert (again == before).all()


def test_rotation_of_an_open_key_file_is_refused(tmp_path):
    path = tmp_path / "pseudonym.key"
    create_key_file(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyCustodyError, match="chmod 600"):
        rotate_master_key(path)


def test_reidentification_key_needs_its_file(tmp_path):
    with pytest.raises(KeyCustodyError, match="reidentification_key_file"):
        ring().reidentification_key("patient")
    kf = tmp_path / "reid.key"
    create_key_file(kf, 64)
    r = ring(reidentification_key_file=kf)
    k = r.reidentification_key("patient")
    assert len(k) == 64 and k != ring(recipient="rcp-b", reidentification_key_file=kf).reidentification_key("patient")


def test_keyring_refuses_pickling():
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(ring())


def _policy(tmp_path):
    import yaml

    from deidflow.policy import load_policy

    from .helpers import REPO_CONFIG

    doc = yaml.safe_load(REPO_CONFIG.read_text(encoding="utf-8"))
    doc["keys"]["pseudonym_key_file"] = "keys/pseudonym.key"
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return load_policy(path)


def test_from_policy_creates_0600_file_then_reuses_it_and_env_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("DEIDFLOW_PSEUDONYM_KEY", raising=False)
    loaded = _policy(tmp_path)
    first = KeyRing.from_policy(loaded)
    key_file = tmp_path / "keys" / "pseudonym.key"
    assert first.created and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.recipient_id == loaded.policy.release.recipient.id
    again = KeyRing.from_policy(loaded)
    assert not again.created and again.derive("patient") == first.derive("patient")
    monkeypatch.setenv("DEIDFLOW_PSEUDONYM_KEY", "ab" * 32)
    env = KeyRing.from_policy(loaded)
    assert env.source == "env:DEIDFLOW_PSEUDONYM_KEY" and env.derive("patient") != first.derive("patient")
    monkeypatch.setenv("DEIDFLOW_PSEUDONYM_KEY", "zz-secret")
    with pytest.raises(KeyCustodyError) as exc:
        KeyRing.from_policy(loaded)
    assert "zz-secret" not in str(exc.value) and "DEIDFLOW_PSEUDONYM_KEY" in str(exc.value)
    monkeypatch.delenv("DEIDFLOW_PSEUDONYM_KEY")
    os.chmod(key_file, 0o604)
    with pytest.raises(KeyCustodyError, match="chmod 600"):
        KeyRing.from_policy(loaded)
