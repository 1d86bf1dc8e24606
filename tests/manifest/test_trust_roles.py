"""Trust file roles: executor and approver, one key one role, `keys trust` idempotent."""

from __future__ import annotations

from pathlib import Path

import pytest

from deidflow.manifest.signing import generate_signing_keys, key_id, load_public_key
from deidflow.manifest.trust import KeyRole, TrustError, add_trusted_key, load_trust_file


def test_add_trusted_key_records_owner_role_and_pin(tmp_path: Path):
    _, exe = generate_signing_keys(tmp_path / "k" / "signing.key")
    _, off = generate_signing_keys(tmp_path / "o" / "approver.key")
    trust = tmp_path / "cfg" / "trust.yaml"
    assert add_trusted_key(trust, exe, owner="data office", role=KeyRole.executor)
    assert add_trusted_key(trust, off, owner="privacy officer", role=KeyRole.approver)
    assert not add_trusted_key(trust, off, owner="privacy officer", role=KeyRole.approver)  # once
    anchors = load_trust_file(trust)
    assert [(k.owner, k.role) for k in anchors.keys] == [("data office", KeyRole.executor),
                                                         ("privacy officer", KeyRole.approver)]
    assert anchors.by_id(key_id(load_public_key(off))).role is KeyRole.approver


def test_one_key_cannot_hold_two_roles(tmp_path: Path):
    _, exe = generate_signing_keys(tmp_path / "k" / "signing.key")
    trust = tmp_path / "trust.yaml"
    add_trusted_key(trust, exe, owner="data office", role=KeyRole.executor)
    with pytest.raises(TrustError, match="already trusted as executor"):
        add_trusted_key(trust, exe, owner="data office", role=KeyRole.approver)
    # written by hand, the same key twice is refused on load
    trust.write_text(trust.read_text() + f"- owner: someone\n  role: approver\n  public_key: {exe}\n")
    with pytest.raises(TrustError, match="listed twice"):
        load_trust_file(trust)


def test_keys_init_makes_an_officer_key_0600_and_lists_it(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from deidflow.cli import app

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["keys", "init", "--role", "approver", "--owner", "privacy officer",
                                   "--out", "officer", "--trust", "trust.yaml"])
    assert res.exit_code == 0, res.output
    key = tmp_path / "officer" / "approver.key"
    assert key.stat().st_mode & 0o777 == 0o600 and (tmp_path / "officer" / "approver.pub").is_file()
    (entry,) = load_trust_file(tmp_path / "trust.yaml").keys
    assert entry.owner == "privacy officer" and entry.role is KeyRole.approver
    bad = CliRunner().invoke(app, ["keys", "init", "--role", "auditor", "--out", "x"])
    assert bad.exit_code == 2 and "unknown role" in bad.output
