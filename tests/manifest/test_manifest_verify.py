"""Tamper evidence: any change to a signed release makes `verify_release` (and `deidflow verify`)
fail with a message naming what changed; an untouched release verifies."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from deidflow.cli import app
from deidflow.errors import VerificationError
from deidflow.manifest.seal import envelope_bytes
from deidflow.manifest.signing import generate_signing_keys, load_signing_key, sign_envelope
from deidflow.manifest.statement import release_files, statement_bytes
from deidflow.manifest.verify import read_statement, verify_release

runner = CliRunner()

RELEASED = ["data/encounters.csv", "data/patients.csv", "review.html", "signer.pub", "validation.json"]


def _flip(path: Path, pos: int, xor: int = 0x01) -> bytes:
    """Change one byte in place; return the original bytes so the caller can restore them."""
    original = path.read_bytes()
    data = bytearray(original)
    data[pos % len(data)] ^= xor
    path.write_bytes(bytes(data))
    return original


def _envelope(release: Path) -> dict:
    return json.loads((release / "manifest.json").read_text("utf-8"))


def _write_envelope(release: Path, env: dict) -> None:
    (release / "manifest.json").write_bytes(envelope_bytes(env))


def test_untouched_release_verifies_anchored_and_not(release: Path, signing_key: Path):
    pub = signing_key.with_suffix(".pub")
    anchored = verify_release(release, pub)
    assert anchored.ok and anchored.trust_anchored, anchored.messages()
    assert anchored.subjects_checked == len(RELEASED)
    assert anchored.record is not None and anchored.record.agreement_id == "DSA-2026-017"
    shipped = verify_release(release)  # integrity only: never "ok"
    assert shipped.integrity_ok and not shipped.trust_anchored and not shipped.ok
    assert "trust NOT anchored" in shipped.summary()


def test_subjects_are_every_file_but_the_manifest(release: Path):
    statement = read_statement(release)
    assert [s["name"] for s in statement["subject"]] == RELEASED
    assert list(release_files(release)) == RELEASED
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    pred = statement["predicate"]
    for field in ("policy_text", "policy_sha256", "agreement_id", "recipient", "purpose",
                  "release_model", "inputs", "consent", "columns", "risk", "validation",
                  "software", "flow_run_id", "started_at", "finished_at"):
        assert field in pred, field


@pytest.mark.parametrize("name", RELEASED)
def test_one_byte_of_a_released_file_fails_naming_it(release: Path, signing_key: Path, name: str):
    path = release / name
    _flip(path, len(path.read_bytes()) // 2)
    report = verify_release(release, signing_key.with_suffix(".pub"))
    assert not report.ok
    assert [c.name for c in report.changed] == [name]
    assert any(m.startswith(f"{name}: changed since signing") for m in report.messages())
    with pytest.raises(VerificationError, match=name.replace(".", r"\.")):
        report.raise_if_failed()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_change_anywhere_fails(release: Path, signing_key: Path, data):
    """Property: whichever file and byte, and whatever the new value, verification fails and
    names that file. (The file is restored after each example.)"""
    name = data.draw(st.sampled_from([*RELEASED, "manifest.json"]))
    path = release / name
    size = len(path.read_bytes())
    pos = data.draw(st.integers(0, size - 1))
    xor = data.draw(st.integers(1, 255))
    original = _flip(path, pos, xor)
    try:
        report = verify_release(release, signing_key.with_suffix(".pub"))
        assert not report.ok
        assert any(m.startswith(f"{name}:") for m in report.messages()), report.messages()
    finally:
        path.write_bytes(original)
    assert verify_release(release, signing_key.with_suffix(".pub")).ok


def test_edited_payload_fails_the_signature(release: Path, signing_key: Path):
    """Re-encoding an edited statement keeps manifest.json well-formed; the signature catches it."""
    env = _envelope(release)
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"]["counts"]["suppressed"] = 0
    env["payload"] = base64.b64encode(statement_bytes(statement)).decode("ascii")
    _write_envelope(release, env)
    report = verify_release(release, signing_key.with_suffix(".pub"))
    assert not report.ok and not report.signature_valid
    assert any(m.startswith("manifest.json:") and "does not match" in m for m in report.messages())


def test_swapping_data_and_its_digest_still_fails(release: Path, signing_key: Path):
    """An attacker who changes a file and puts its new digest in the statement breaks the signature."""
    target = release / "data" / "patients.csv"
    target.write_text(target.read_text("utf-8").replace("2型糖尿病", "1型糖尿病", 1), "utf-8")
    import hashlib

    env = _envelope(release)
    statement = json.loads(base64.b64decode(env["payload"]))
    for s in statement["subject"]:
        if s["name"] == "data/patients.csv":
            s["digest"]["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    env["payload"] = base64.b64encode(statement_bytes(statement)).decode("ascii")
    _write_envelope(release, env)
    report = verify_release(release, signing_key.with_suffix(".pub"))
    assert not report.changed  # the digests now agree ...
    assert not report.ok and not report.signature_valid  # ... but the signature does not


def test_replaced_signature_fails(release: Path, signing_key: Path):
    env = _envelope(release)
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[0] ^= 0x80
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode("ascii")
    _write_envelope(release, env)
    report = verify_release(release, signing_key.with_suffix(".pub"))
    assert not report.ok and not report.signature_valid
    assert any("manifest.json" in m and "does not match" in m for m in report.messages())


def test_resigned_by_another_key_fails_only_when_trust_is_anchored(
    release: Path, signing_key: Path, tmp_path: Path
):
    """Someone who rewrites a release and signs it with their own key (shipping their signer.pub)
    fools only a verifier who trusts the key inside the release."""
    other, _ = generate_signing_keys(tmp_path / "mallory" / "m.key")
    from deidflow.manifest.seal import write_manifest
    from deidflow.manifest.statement import record_from_statement

    record = record_from_statement(read_statement(release))
    (release / "data" / "patients.csv").write_text("patient_id\nx\n", "utf-8")
    os.remove(release / "review.html")  # review names the original key; seal would refuse
    write_manifest(release, record, other)
    assert verify_release(release).integrity_ok  # self-consistent...
    report = verify_release(release, signing_key.with_suffix(".pub"))
    assert not report.ok and not report.signature_valid
    assert any("not signed by a trusted executor key" in m for m in report.messages())


def test_removed_file_fails_naming_it(release: Path):
    os.remove(release / "data" / "encounters.csv")
    report = verify_release(release)
    assert not report.ok and report.missing == ["data/encounters.csv"]
    assert "data/encounters.csv: missing (listed in the signed manifest)" in report.messages()


@pytest.mark.parametrize("name", ["extra.csv", "data/more.csv", ".hidden"])
def test_added_file_fails_naming_it(release: Path, name: str):
    (release / name).write_text("a,b\n1,2\n", "utf-8")
    report = verify_release(release)
    assert not report.ok and report.extra == [name]
    assert f"{name}: extra file, not in the signed manifest" in report.messages()


def test_symlink_in_release_is_refused(release: Path, tmp_path: Path):
    outside = tmp_path / "outside.csv"
    outside.write_text("x\n", "utf-8")
    (release / "data" / "link.csv").symlink_to(outside)
    report = verify_release(release)
    assert not report.ok
    assert any("link.csv" in m and "symbolic link" in m for m in report.messages())


def test_missing_manifest_and_garbage_manifest(release: Path):
    raw = (release / "manifest.json").read_bytes()
    (release / "manifest.json").write_bytes(b"not json")
    assert any("not valid JSON" in m for m in verify_release(release).messages())
    (release / "manifest.json").write_bytes(b'{"payload": "", "signatures": []}')
    assert any("not a DSSE envelope" in m for m in verify_release(release).messages())
    (release / "manifest.json").write_bytes(raw + b" ")
    assert any("edited after signing" in m for m in verify_release(release).messages())
    os.remove(release / "manifest.json")
    report = verify_release(release)
    assert not report.ok and report.messages() == ["manifest.json: missing; this release is not signed"]


def test_countersigned_manifest_still_verifies(release: Path, signing_key: Path, tmp_path: Path):
    """An approver's countersignature (added after the pipeline signed) keeps the release valid
    for both keys."""
    from deidflow.manifest.signing import add_signature

    approver, approver_pub = generate_signing_keys(tmp_path / "approver" / "a.key")
    env = add_signature(_envelope(release), load_signing_key(approver))
    _write_envelope(release, env)
    assert verify_release(release, signing_key.with_suffix(".pub")).ok
    assert verify_release(release, approver_pub).ok


def test_signature_over_other_payload_type_is_refused(release: Path, signing_key: Path):
    env = _envelope(release)
    payload = base64.b64decode(env["payload"])
    forged = sign_envelope(payload, load_signing_key(signing_key), payload_type="text/plain")
    _write_envelope(release, forged)
    report = verify_release(release, signing_key.with_suffix(".pub"))
    assert not report.ok
    assert any("payloadType" in m for m in report.messages())


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_verify_ok_exits_0(release: Path, signing_key: Path):
    res = runner.invoke(app, ["verify", str(release), "--public-key", str(signing_key.with_suffix(".pub"))])
    assert res.exit_code == 0, res.output
    assert "verified: 5 files match manifest.json" in res.stdout
    assert "DSA-2026-017" in res.stdout


@pytest.mark.parametrize("name", ["data/patients.csv", "manifest.json"])
def test_cli_verify_tampered_exits_1_naming_the_file(release: Path, name: str, signing_key: Path):
    _flip(release / name, 200)
    res = runner.invoke(app, ["verify", str(release), "--public-key", str(signing_key.with_suffix(".pub"))])
    assert res.exit_code == 1
    assert "verification FAILED" in res.stderr
    assert f"{name}:" in res.stderr


def test_cli_verify_missing_public_key_is_a_user_error(release: Path, tmp_path: Path):
    res = runner.invoke(app, ["verify", str(release), "--public-key", str(tmp_path / "nope.pub")])
    assert res.exit_code == 2
    assert "public key not found" in res.stderr and "nope.pub" in res.stderr
    assert "the .pub file the releasing hospital gave you" in res.stderr
    assert "Traceback" not in res.output


def test_cli_verify_real_process_exit_code(release: Path, signing_key: Path):
    """The installed console script, not the in-process runner: exit status as a shell sees it."""
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("deidflow")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "deidflow.cli"]
    _flip(release / "validation.json", 10)
    proc = subprocess.run([*cmd, "verify", str(release), "-k", str(signing_key.with_suffix(".pub"))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "validation.json: changed since signing" in proc.stderr


def test_cli_verify_of_a_missing_directory_is_a_user_error(tmp_path: Path):
    res = runner.invoke(app, ["verify", str(tmp_path / "no-such-release")])
    assert res.exit_code == 2
    assert "no-such-release: not a directory" in res.stderr and "Fix:" in res.stderr
