"""The privacy officer's approval (issue 20), through the installed `deidflow` command from a
working directory that is not the project's, on the in-process path (`--no-prefect`); the
default Prefect path is test_approval_prefect.py.

One staged release per module carries most assertions, in order: held back, rerun reports it,
refusals (executor's key, same owner, untrusted key, tampered file, tampered statement), then
approval, verify and the review page. A second and third policy (another plan version, so
another release id) are rejected and expired.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from .conftest import SECRET_HEX, _import_consents, write_policy

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
EXECUTOR = "Data engineering, Example Hospital"
OFFICER = "王丽 (Privacy Officer)"


@dataclass
class World:
    root: Path
    cwd: Path
    data: Path
    policy: Path
    trust: Path
    officer_key: Path
    same_owner_key: Path
    stranger_key: Path
    executor_key: Path
    outputs: list[str]

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def private(self) -> Path:
        return self.root / "private"


def deidflow(world: World, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DEIDFLOW_PSEUDONYM_KEY", "DEIDFLOW_TRUST_FILE")}
    env.update({"PATH": f"{BIN}:{env.get('PATH', '')}", "COLUMNS": "200",
                "PREFECT_HOME": str(world.root / "prefect")})
    proc = subprocess.run([str(BIN / "deidflow"), *args], cwd=world.cwd, env=env, input=input,
                          capture_output=True, text=True, timeout=600)
    world.outputs.append(proc.stdout + proc.stderr)
    return proc


def make_world(root: Path, extract: Path, *, version: str | None = None) -> World:
    """A hospital root: pseudonym key, executor key, officer key, trust file (executor, officer,
    a second approver key held by the executor's owner), and a policy requiring approval."""
    from deidflow.manifest.signing import generate_signing_keys
    from deidflow.manifest.trust import KeyRole, add_trusted_key

    keys = root / "keys"
    keys.mkdir(mode=0o700, parents=True)
    (keys / "pseudonym.key").write_text(SECRET_HEX + "\n")
    (keys / "pseudonym.key").chmod(0o600)
    trust = root / "trust.yaml"
    _, exe_pub = generate_signing_keys(keys / "signing.key")
    add_trusted_key(trust, exe_pub, owner=EXECUTOR, role=KeyRole.executor)
    officer, officer_pub = generate_signing_keys(root / "officer" / "approver.key")
    add_trusted_key(trust, officer_pub, owner=OFFICER, role=KeyRole.approver)
    same, same_pub = generate_signing_keys(root / "engineer" / "approver.key")
    add_trusted_key(trust, same_pub, owner=EXECUTOR.upper(), role=KeyRole.approver)
    stranger, _ = generate_signing_keys(root / "stranger" / "approver.key")
    edits = {r"(signing_key_file: [^\n]*)": r"\1\n  trust_file: trust.yaml"}
    if version:
        edits[r'version: "2026-11-r1"'] = f'version: "{version}"'
    policy = write_policy(root, extract, approval="required", edits=edits)
    _import_consents(policy, extract)
    cwd = root / "elsewhere"
    cwd.mkdir()
    return World(root, cwd, extract, policy, trust, officer, same, stranger, keys / "signing.key", [])


def visible(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if not p.name.startswith(".")] if root.is_dir() else []


@pytest.fixture(scope="module")
def world(tmp_path_factory, extract) -> World:
    w = make_world(tmp_path_factory.mktemp("approval"), extract)
    proc = deidflow(w, "release", str(w.policy), "--no-prefect")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    w.first = proc.stdout  # type: ignore[attr-defined]
    return w


def staged_of(world: World):
    from deidflow.release.approval import pending

    (staged,) = pending(world.private)
    return staged


# --- held back ----------------------------------------------------------------------------------

def test_required_approval_holds_the_release_back(world: World):
    staged = staged_of(world)
    out = world.first  # type: ignore[attr-defined]
    assert visible(world.releases) == [] and not list(world.releases.glob(".staging-*"))
    assert "awaiting approval" in out and staged.staged_id in out
    assert str(staged.review_page) in out.replace("\n", "")
    assert f"deidflow approve {staged.staged_id}" in out and f"deidflow reject {staged.staged_id}" in out
    # staged in the private directory, sealed and signed by the executor, review page readable
    assert staged.review_page.is_file() and world.private in staged.review_page.parents
    page = staged.review_page.read_text(encoding="utf-8")
    assert "Awaiting approval" in page and "Approved for release" not in page
    envelope = json.loads((staged.release_dir / "manifest.json").read_text())
    assert len(envelope["signatures"]) == 1
    assert staged.expires_at - staged.created_at == timedelta(days=14)
    listing = deidflow(world, "releases", "list", str(world.releases), "--policy", str(world.policy))
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if staged.staged_id in line and "awaiting" in line)
    assert staged.created_at.strftime("%Y-%m-%d") in row and staged.expires_at.strftime("%Y-%m-%d") in row
    assert "上海人工智能联合实验室" in row
    # verify refuses the staged (unapproved) release: its statement says approval was required
    check = deidflow(world, "verify", str(staged.release_dir), "--trust", str(world.trust))
    assert check.returncode == 1 and "never approved" in check.stderr.replace("\n", " ")


def test_the_interface_the_prefect_pause_uses(world: World):
    from deidflow.release.approval import decision_of, load_staged, record_flow_run

    staged = staged_of(world)
    assert decision_of(world.private, staged.staged_id) is None
    assert load_staged(world.private, staged.staged_id) == staged and staged.flow_run_id is None
    record_flow_run(world.private, staged.staged_id, "run-1234", "http://127.0.0.1:4200/api")
    noted = load_staged(world.private, staged.staged_id)
    assert (noted.flow_run_id, noted.prefect_api_url) == ("run-1234", "http://127.0.0.1:4200/api")
    record_flow_run(world.private, staged.staged_id, None, None)
    assert load_staged(world.private, staged.staged_id) == staged
    with pytest.raises(Exception, match="no staged release"):
        decision_of(world.private, "DSA-none")
    with pytest.raises(Exception, match="not a staged release id"):
        load_staged(world.private, "../x")


def test_a_rerun_reports_the_staged_release_and_stages_nothing_twice(world: World):
    before = staged_of(world)
    proc = deidflow(world, "release", str(world.policy), "--no-prefect")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "still awaiting approval" in proc.stdout and before.staged_id in proc.stdout
    after = staged_of(world)
    assert after == before and visible(world.releases) == []


# --- refusals -----------------------------------------------------------------------------------

def _approve(world: World, key: Path, *extra: str) -> subprocess.CompletedProcess:
    return deidflow(world, "approve", staged_of(world).staged_id, "--policy", str(world.policy),
                    "--key", str(key), "--yes", *extra)


def test_the_executors_key_or_owner_cannot_approve(world: World):
    same_key = _approve(world, world.executor_key)
    assert same_key.returncode == 2 and "executor's key" in same_key.stderr
    same_owner = _approve(world, world.same_owner_key)
    assert same_owner.returncode == 2 and "same owner" in same_owner.stderr
    stranger = _approve(world, world.stranger_key)
    assert stranger.returncode == 2 and "not in the trust file" in stranger.stderr
    assert visible(world.releases) == [] and staged_of(world)


def test_a_tampered_staged_release_cannot_be_approved(world: World):
    staged = staged_of(world)
    data = next((staged.release_dir / "data").glob("*"))
    original = data.read_bytes()
    data.write_bytes(original.replace(b"\n", b"\n ", 1))
    try:
        proc = _approve(world, world.officer_key)
        assert proc.returncode == 2 and "changed since signing" in proc.stderr, proc.stderr
    finally:
        data.write_bytes(original)
    manifest = staged.release_dir / "manifest.json"
    signed = manifest.read_bytes()
    envelope = json.loads(signed)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["counts"]["suppressed"] += 1
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    manifest.write_text(json.dumps(envelope, sort_keys=True, indent=2) + "\n")
    try:
        proc = _approve(world, world.officer_key)
        assert proc.returncode == 2 and "does not match" in proc.stderr, proc.stderr
    finally:
        manifest.write_bytes(signed)
    assert visible(world.releases) == []


def test_declining_at_the_prompt_publishes_nothing(world: World):
    proc = deidflow(world, "approve", staged_of(world).staged_id, "--policy", str(world.policy),
                    "--key", str(world.officer_key), input="n\n")
    assert proc.returncode == 1 and "not approved" in proc.stdout
    assert "上海人工智能联合实验室" in proc.stdout and "k required / reached" in proc.stdout
    assert visible(world.releases) == [] and staged_of(world)


# --- approval -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def approved(world: World) -> Path:
    staged = staged_of(world)
    world.staged_review_sha = __import__("hashlib").sha256(staged.review_page.read_bytes()).hexdigest()  # type: ignore[attr-defined]
    world.staged = staged  # type: ignore[attr-defined]
    proc = _approve(world, world.officer_key, "--comment", "checked ages and regions")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (release,) = visible(world.releases)
    assert str(release) in proc.stdout.replace("\n", "")
    return release


def test_approve_publishes_with_two_signatures_that_verify_checks(world: World, approved: Path):
    from deidflow.manifest.signing import load_public_key, check_signature

    envelope = json.loads((approved / "manifest.json").read_text())
    assert len(envelope["signatures"]) == 2
    for pub in (world.executor_key.with_suffix(".pub"), world.officer_key.with_suffix(".pub")):
        assert check_signature(envelope, load_public_key(pub)).valid
    statement = json.loads(base64.b64decode(envelope["payload"]))
    a = statement["predicate"]["approval"]
    assert statement["predicate"]["approval_required"] is True
    assert a["approver"] == OFFICER and a["comment"] == "checked ages and regions"
    assert a["review_sha256"] == world.staged_review_sha  # type: ignore[attr-defined]
    proc = deidflow(world, "verify", str(approved), "--trust", str(world.trust))
    assert proc.returncode == 0, proc.stderr
    assert f"approved by {OFFICER}" in proc.stdout and "checked ages and regions" in proc.stdout
    # nothing left staged; the decision record is signed by the officer
    from deidflow.release.approval import check_decision_record, decision_of, pending

    assert pending(world.private) == [] and decision_of(world.private, world.staged.staged_id) == "approved"  # type: ignore[attr-defined]
    (record,) = (world.private / "approvals" / "records").glob("*.approved.*.json")
    content = check_decision_record(record, load_public_key(world.officer_key.with_suffix(".pub")))
    assert content["comment"] == "checked ages and regions" and content["approver"] == OFFICER
    assert not world.staged.staged_dir.exists()  # type: ignore[attr-defined]
    # a rerun reports the published release
    rerun = deidflow(world, "release", str(world.policy), "--no-prefect")
    assert rerun.returncode == 0 and "already released" in rerun.stdout, rerun.stdout + rerun.stderr


def _trust_without_approver(world: World, owner: str | None) -> Path:
    """The trust file with the officer's entry dropped (owner None) or re-owned."""
    import yaml

    raw = yaml.safe_load(world.trust.read_text(encoding="utf-8"))
    keep = []
    for entry in raw["keys"]:
        entry["public_key"] = str((world.trust.parent / entry["public_key"]).resolve())
        if entry["owner"] == OFFICER:
            if owner is None:
                continue
            entry["owner"] = owner
        if entry["owner"] == EXECUTOR.upper():
            continue
        keep.append(entry)
    path = world.root / f"trust-{len(list(world.root.glob('trust-*')))}.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "keys": keep}, allow_unicode=True), encoding="utf-8")
    return path


def test_verify_refuses_a_missing_or_untrusted_approval(world: World, approved: Path, tmp_path: Path):
    untrusted = deidflow(world, "verify", str(approved), "--trust", str(_trust_without_approver(world, None)))
    assert untrusted.returncode == 1 and "trusted as approver" in untrusted.stderr.replace("\n", " ")
    same_owner = deidflow(world, "verify", str(approved), "--trust", str(_trust_without_approver(world, EXECUTOR)))
    assert same_owner.returncode == 1 and "is the executor" in same_owner.stderr.replace("\n", " ")
    # the approver's signature stripped: the executor alone cannot stand in for the officer
    copy = tmp_path / approved.name
    shutil.copytree(approved, copy)
    envelope = json.loads((copy / "manifest.json").read_text())
    from deidflow.manifest.seal import envelope_bytes
    from deidflow.manifest.signing import key_id, load_signing_key

    exe = key_id(load_signing_key(world.executor_key).public_key())
    envelope["signatures"] = [s for s in envelope["signatures"] if s["keyid"] == exe]
    (copy / "manifest.json").write_bytes(envelope_bytes(envelope))
    stripped = deidflow(world, "verify", str(copy), "--trust", str(world.trust))
    assert stripped.returncode == 1 and "trusted as approver" in stripped.stderr.replace("\n", " ")


def test_the_published_review_page_shows_the_approval(world: World, approved: Path):
    page = (approved / "review.html").read_text(encoding="utf-8")
    assert "Approved for release" in page and "Awaiting approval" not in page
    assert OFFICER in page and "checked ages and regions" in page
    assert world.staged_review_sha in page  # type: ignore[attr-defined]


# --- reject and expiry (a release each: another plan version, another release id) ---------------

def test_expiry_removes_and_records_then_reject_keeps_a_signed_record(tmp_path_factory, extract):
    """One release (another plan version): staged, expired (removed, recorded), staged afresh
    by a rerun, then rejected (nothing published, a signed record, never staged again)."""
    from deidflow.manifest.signing import load_public_key
    from deidflow.release.approval import check_decision_record, decision_of

    w = make_world(tmp_path_factory.mktemp("reject"), extract, version="2026-11-r2")
    assert deidflow(w, "release", str(w.policy), "--no-prefect").returncode == 0
    staged = staged_of(w)
    # time passes: the staged release is now older than approval_days
    meta = staged.staged_dir / "staged.json"
    raw = json.loads(meta.read_text())
    raw["expires_at"] = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    meta.write_text(json.dumps(raw))
    listing = deidflow(w, "releases", "list", str(w.releases), "--policy", str(w.policy))
    assert listing.returncode == 0
    assert f"{staged.staged_id} expired" in listing.stdout and "no release is awaiting approval" in listing.stdout
    assert not staged.staged_dir.exists() and decision_of(w.private, staged.staged_id) == "expired"
    assert list((w.private / "approvals" / "records").glob(f"{staged.staged_id}.expired.*.json"))
    late = deidflow(w, "approve", staged.staged_id, "--policy", str(w.policy), "--key", str(w.officer_key), "--yes")
    assert late.returncode == 2 and "already expired" in late.stderr
    assert visible(w.releases) == []

    # a rerun stages it afresh; this time the officer rejects it
    assert deidflow(w, "release", str(w.policy), "--no-prefect").returncode == 0
    staged = staged_of(w)
    assert decision_of(w.private, staged.staged_id) is None
    no_reason = deidflow(w, "reject", staged.staged_id, "--policy", str(w.policy), "--key",
                         str(w.officer_key), "--reason", " ")
    assert no_reason.returncode == 2
    proc = deidflow(w, "reject", staged.staged_id, "--policy", str(w.policy), "--key", str(w.officer_key),
                    "--reason", "ages too fine for this recipient")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert visible(w.releases) == [] and not staged.staged_dir.exists()
    assert decision_of(w.private, staged.staged_id) == "rejected"
    (record,) = (w.private / "approvals" / "records").glob("*.rejected.*.json")
    content = check_decision_record(record, load_public_key(w.officer_key.with_suffix(".pub")))
    assert content["reason"] == "ages too fine for this recipient" and content["approver"] == OFFICER
    again = deidflow(w, "approve", staged.staged_id, "--policy", str(w.policy), "--key", str(w.officer_key), "--yes")
    assert again.returncode == 2 and "already rejected" in again.stderr
    rerun = deidflow(w, "release", str(w.policy), "--no-prefect")
    assert rerun.returncode == 2 and "rejected" in rerun.stdout + rerun.stderr
    assert visible(w.releases) == []
    _no_secrets_or_values(w)


# --- nothing secret anywhere -----------------------------------------------------------------------

def _no_secrets_or_values(w: World) -> None:
    """The master key (hex, raw, base64) and the extract's long direct identifiers appear in no
    file under the release and approval directories (decoded manifests included) nor in any
    output. The private pseudonym mapping is hospital-side and holds ids by design."""
    secret = bytes.fromhex(SECRET_HEX)
    needles = [SECRET_HEX.encode(), secret, base64.b64encode(secret)]
    patients = pd.read_csv(w.data / "patients.csv", dtype=str, keep_default_na=False)
    for col in ("resident_id", "mobile", "insurance_no"):
        needles += [v.encode() for v in patients[col] if len(v) >= 8]
    files = [p for base in (w.releases, w.private / "approvals") if base.exists()
             for p in base.rglob("*") if p.is_file() and "private" not in p.relative_to(base).parts]
    blobs = [(str(p), p.read_bytes()) for p in files]
    for name, blob in list(blobs):
        if name.endswith(".json"):
            try:
                env = json.loads(blob)
            except ValueError:
                continue
            for e in (env, env.get("envelope") or {}):
                if isinstance(e, dict) and isinstance(e.get("payload"), str):
                    blobs.append((name + " (payload)", base64.b64decode(e["payload"])))
    blobs += [(f"output {i}", o.encode()) for i, o in enumerate(w.outputs)]
    import re

    keys, ids = needles[:3], set(needles[3:])
    lengths = sorted({len(n) for n in ids})
    for name, blob in blobs:
        assert not any(k in blob for k in keys), f"key material in {name}"
        # an identifier (letters and digits) can only sit inside a run of letters and digits
        for run in re.findall(rb"[0-9A-Za-z]{%d,}" % lengths[0], blob):
            hit = next((run[i:i + n] for n in lengths for i in range(len(run) - n + 1)
                        if run[i:i + n] in ids), None)
            assert hit is None, f"a direct identifier in {name}"


def test_nothing_written_or_printed_holds_a_secret_or_a_value(world: World, approved: Path):
    _no_secrets_or_values(world)


# --- the approved review page in headless Chromium ---------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
APPROVED_BG = (0xE8, 0xF5, 0xE9)  # the approval block's background (manifest/review.py)


def _png_pixels(path: Path):
    """(width, height, RGB rows) of an 8-bit RGB/RGBA PNG, decoded here (no imaging library)."""
    import struct
    import zlib

    import numpy as np

    raw = path.read_bytes()
    pos, idat, width = 8, b"", 0
    while pos < len(raw):
        (n,), kind = struct.unpack(">I", raw[pos:pos + 4]), raw[pos + 4:pos + 8]
        body = raw[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    data = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * bpp)
    out = np.zeros((height, width * bpp), dtype=np.int32)
    prev = np.zeros(width * bpp, dtype=np.int32)
    for y in range(height):
        f, line = data[y, 0], data[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 0xFF
        else:  # sub, average, paeth: byte by byte
            cur = np.zeros_like(line)
            for i in range(len(line)):
                a = cur[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (line[i] + pred) & 0xFF
        out[y], prev = cur, cur
    return width, height, out.reshape(height, width, bpp)[:, :, :3]


@pytest.mark.browser
def test_the_approval_block_is_visible_in_chromium(approved: Path, tmp_path: Path):
    import numpy as np

    from browser_proxy import RecordingProxy

    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        if os.environ.get("CI"):
            pytest.fail(f"headless chromium not found at {CHROMIUM}")
        pytest.skip("headless chromium not installed")

    def chromium(*extra: str) -> str:
        proxy = RecordingProxy()
        try:
            proc = subprocess.run(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                 f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
                 "--virtual-time-budget=3000", *extra, (approved / "review.html").as_uri()],
                capture_output=True, text=True, timeout=120, check=False)
        finally:
            proxy.close()
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    shot = tmp_path / "approved.png"
    chromium(f"--screenshot={shot}", "--window-size=900,700", "--hide-scrollbars")
    width, height, rgb = _png_pixels(shot)
    block = np.all(rgb == np.array(APPROVED_BG), axis=2)
    # the block is drawn in the first screen, across a good part of its width
    assert block.sum() > 0.05 * width * height, block.sum()
    assert block.any(axis=0).sum() > width // 2
