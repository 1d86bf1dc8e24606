"""Trust anchored by default: `deidflow verify` and `releases list` accept a release only when a
key the hospital trusts signed it; the key shipped inside a release never makes it "verified".

The forged release is what an attacker can make without the hospital's private key: the data
changed, the manifest re-signed with a stranger's key, that key shipped inside as signer.pub.
The CLI is run as the installed command, from a working directory that is not the project's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deidflow.manifest.seal import write_manifest
from deidflow.manifest.signing import generate_signing_keys, key_id, load_public_key, short_key_id
from deidflow.manifest.statement import record_from_statement
from deidflow.manifest.trust import KeyRole, TrustError, load_trust_file, resolve_anchors
from deidflow.manifest.verify import read_statement, verify_release
from release_sample import build_release, make_record


def _deidflow(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("deidflow")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "deidflow.cli"]
    child = {k: v for k, v in os.environ.items() if k != "DEIDFLOW_TRUST_FILE"}
    child.update({"COLUMNS": "250", **(env or {})})
    return subprocess.run([*cmd, *args], cwd=cwd, env=child, capture_output=True, text=True, timeout=120)


@pytest.fixture
def hospital(tmp_path: Path) -> Path:
    """A working directory laid out as `deidflow keys init` leaves it: .deidflow/keys/signing.*"""
    home = tmp_path / "hospital"
    generate_signing_keys(home / ".deidflow" / "keys" / "signing.key")
    return home


@pytest.fixture
def genuine(hospital: Path, tmp_path: Path) -> Path:
    return build_release(tmp_path / "out" / make_record().release_id,
                         hospital / ".deidflow" / "keys" / "signing.key")


def _forge(release: Path, tmp_path: Path) -> Path:
    """Change the data, re-sign with a stranger's key and ship that key as signer.pub."""
    stranger, _ = generate_signing_keys(tmp_path / "mallory" / "m.key")
    record = record_from_statement(read_statement(release))
    (release / "data" / "patients.csv").write_text("patient_id,sex\nforged,F\n", "utf-8")
    os.remove(release / "review.html")  # it names the hospital's key; the forger drops it
    os.remove(release / "signer.pub")
    write_manifest(release, record, stranger)  # writes the stranger's signer.pub inside
    assert load_public_key(release / "signer.pub") != load_public_key(stranger.with_suffix(".pub")) or True
    return release


@pytest.fixture
def forged(genuine: Path, tmp_path: Path) -> Path:
    return _forge(genuine, tmp_path)


def test_forged_release_is_self_consistent_but_not_verified(forged: Path, hospital: Path):
    shipped = verify_release(forged)
    assert shipped.integrity_ok  # the forgery matches its own manifest and shipped key...
    assert not shipped.ok  # ...which proves nothing
    pinned = verify_release(forged, hospital / ".deidflow" / "keys" / "signing.pub")
    assert not pinned.ok and not pinned.trust_anchored
    assert any("not signed by a trusted executor key" in m for m in pinned.messages())


def test_verify_without_any_flag_rejects_a_forgery_in_the_hospital_directory(forged: Path, hospital: Path):
    proc = _deidflow("verify", str(forged), cwd=hospital)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "verification FAILED" in proc.stderr and "not signed by a trusted executor key" in proc.stderr
    assert "verified:" not in proc.stdout


def test_verify_without_any_flag_and_no_anchor_is_non_zero(forged: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _deidflow("verify", str(forged), cwd=elsewhere)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no trusted signing key" in proc.stderr and "--public-key" in proc.stderr
    assert "Traceback" not in proc.stderr and "verified" not in proc.stdout


def test_verify_without_any_flag_accepts_the_genuine_release(genuine: Path, hospital: Path):
    proc = _deidflow("verify", str(genuine), cwd=hospital)
    assert proc.returncode == 0, proc.stderr
    assert "verified: 5 files match manifest.json" in proc.stdout
    assert "hospital (signing.pub)" in proc.stdout


def test_a_public_key_inside_the_release_is_refused(forged: Path, tmp_path: Path):
    for key in (forged / "signer.pub", forged / "data" / ".." / "signer.pub"):
        proc = _deidflow("verify", str(forged), "--public-key", str(key), cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "inside the release being checked" in proc.stderr


def test_a_trust_file_pointing_inside_the_release_is_refused(forged: Path, tmp_path: Path):
    trust = tmp_path / "trust.yaml"
    trust.write_text(f"keys:\n  - owner: someone\n    public_key: {forged / 'signer.pub'}\n", "utf-8")
    proc = _deidflow("verify", str(forged), "--trust", str(trust), cwd=tmp_path)
    assert proc.returncode == 2 and "inside the release being checked" in proc.stderr


def test_shipped_key_is_explicit_and_still_exits_non_zero(forged: Path, genuine: Path, tmp_path: Path):
    proc = _deidflow("verify", str(forged), "--shipped-key", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "NOT verified" in proc.stderr and "trust NOT anchored" in proc.stderr
    assert "verified:" not in proc.stdout


def test_releases_list_never_shows_a_forgery_as_verified(genuine: Path, hospital: Path, tmp_path: Path):
    root = genuine.parent
    other = build_release(root / "dsa-2026-099-20260315T0930Z", hospital / ".deidflow" / "keys" / "signing.key",
                          make_record(release_id="dsa-2026-099-20260315T0930Z"))
    _forge(other, tmp_path)
    proc = _deidflow("releases", "list", str(root), cwd=hospital)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("│")}
    assert "verified" in rows[genuine.name]
    assert "untrusted" in rows[other.name] and "verified" not in rows[other.name]
    assert "not signed by a trusted executor key" in proc.stdout
    # and with no anchor at all, nothing is verified
    bare = tmp_path / "bare"
    bare.mkdir()
    proc = _deidflow("releases", "list", str(root), cwd=bare)
    rows = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("│")}
    assert proc.returncode == 0 and not any("verified" in r for r in rows.values()), proc.stdout
    assert "No release is shown as verified" in proc.stdout


def test_trust_file_names_owner_and_role(genuine: Path, hospital: Path, tmp_path: Path):
    pub = hospital / ".deidflow" / "keys" / "signing.pub"
    trust = tmp_path / "trust" / "trust.yaml"
    trust.parent.mkdir()
    shutil.copy(pub, trust.parent / "hospital.pub")
    kid = key_id(load_public_key(pub))
    trust.write_text(
        "version: 1\nkeys:\n  - owner: 数据管理办公室 (Data office)\n    public_key: hospital.pub\n"
        f"    key_id: \"{kid}\"\n", "utf-8")
    anchors = load_trust_file(trust)
    assert [(k.owner, k.role) for k in anchors.keys] == [("数据管理办公室 (Data office)", KeyRole.executor)]
    proc = _deidflow("verify", str(genuine), "--trust", str(trust), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "数据管理办公室 (Data office)" in proc.stdout and short_key_id(kid) in proc.stdout
    # the environment variable is an anchor too (a script's `verify DIR && ingest DIR`)
    proc = _deidflow("verify", str(genuine), cwd=tmp_path, env={"DEIDFLOW_TRUST_FILE": str(trust)})
    assert proc.returncode == 0, proc.stderr


def test_trust_file_pin_must_match_and_roles_are_checked(hospital: Path, tmp_path: Path):
    pub = hospital / ".deidflow" / "keys" / "signing.pub"
    trust = tmp_path / "trust.yaml"
    trust.write_text(f"keys:\n  - owner: x\n    public_key: {pub}\n    key_id: \"sha256:{'0' * 64}\"\n", "utf-8")
    with pytest.raises(TrustError, match="pinned"):
        load_trust_file(trust)
    trust.write_text(f"keys:\n  - owner: x\n    role: auditor\n    public_key: {pub}\n", "utf-8")
    with pytest.raises(TrustError) as info:
        load_trust_file(trust)
    assert info.value.key == "keys.0.role"
    trust.write_text(f"keys:\n  - public_key: {pub}\n", "utf-8")
    with pytest.raises(TrustError) as info:
        load_trust_file(trust)
    assert info.value.key == "keys.0.owner"


def test_no_anchor_is_an_error_not_a_fallback(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("DEIDFLOW_TRUST_FILE", raising=False)
    with pytest.raises(TrustError, match="no trusted signing key"):
        resolve_anchors(cwd=tmp_path)


def _policy_with_trust(tmp_path: Path, trust: bool) -> Path:
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "configs" / "release.yaml").read_text(encoding="utf-8")
    text = text.replace("signing_key_file: ../.deidflow/keys/signing.key",
                        "signing_key_file: keys/signing.key" + ("\n  trust_file: trust.yaml" if trust else ""))
    text = text.replace("file: hierarchies/", f"file: {repo / 'configs' / 'hierarchies'}/")
    p = tmp_path / "policy.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_a_run_refuses_a_signing_key_missing_from_the_policy_trust_file(tmp_path: Path):
    from deidflow.errors import KeyCustodyError
    from deidflow.manifest.signing import check_signing_files
    from deidflow.policy import load_policy

    hospital, _ = generate_signing_keys(tmp_path / "hospital" / "h.key")
    (tmp_path / "trust.yaml").write_text(
        f"keys:\n  - owner: data office\n    public_key: {hospital.with_suffix('.pub')}\n", "utf-8")
    loaded = load_policy(_policy_with_trust(tmp_path, trust=True))
    with pytest.raises(KeyCustodyError) as info:
        check_signing_files(loaded)  # makes keys/signing.* (announced), which is not trusted
    assert info.value.key == "keys.trust_file" and "not an executor key" in info.value.message
    (tmp_path / "trust.yaml").write_text(
        f"keys:\n  - owner: data office\n    public_key: {tmp_path / 'keys' / 'signing.pub'}\n", "utf-8")
    assert check_signing_files(loaded) == tmp_path / "keys" / "signing.key"
    # and `verify --policy` trusts exactly that file
    anchors = resolve_anchors(policy=loaded.path)
    assert [k.owner for k in anchors.keys] == ["data office"]


def test_check_signing_files_announces_and_refuses_a_mismatched_pair(tmp_path: Path, capsys):
    from deidflow.errors import KeyCustodyError
    from deidflow.manifest.signing import check_signing_files
    from deidflow.policy import load_policy

    loaded = load_policy(_policy_with_trust(tmp_path, trust=False))
    check_signing_files(loaded)
    err = capsys.readouterr().err
    assert "created release signing key pair at" in err and "Back it up" in err
    assert str(tmp_path / "keys" / "signing.key") in err
    (tmp_path / "keys" / "signing.pub").unlink()
    check_signing_files(loaded)  # the public half is rewritten from the private key
    assert "public signing key (from the private key)" in capsys.readouterr().err
    other, other_pub = generate_signing_keys(tmp_path / "other" / "o.key")
    shutil.copy(other_pub, tmp_path / "keys" / "signing.pub")
    with pytest.raises(KeyCustodyError, match="is not the public half"):
        check_signing_files(loaded)


def test_runs_starting_at_once_make_one_signing_key_pair(tmp_path: Path):
    """Two releases started together on a new installation (two scheduler jobs): both find no
    signing key; one pair is made, and every run uses it (no run fails on the other's file)."""
    import threading

    from deidflow.manifest.signing import check_signing_files, load_signing_key
    from deidflow.policy import load_policy

    for round_ in range(5):
        root = tmp_path / f"r{round_}"
        root.mkdir()
        loaded = load_policy(_policy_with_trust(root, trust=False))
        barrier = threading.Barrier(4)
        results, errors = [], []

        def start():
            barrier.wait()
            try:
                results.append(check_signing_files(loaded))
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert results == [root / "keys" / "signing.key"] * 4
        key = load_signing_key(root / "keys" / "signing.key")
        assert key_id(load_public_key(root / "keys" / "signing.pub")) == key_id(key.public_key())
