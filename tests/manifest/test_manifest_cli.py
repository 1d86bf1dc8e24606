"""`deidflow keys init` and `deidflow releases list|due|purge` (retention, PIPL art. 56)."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deidflow.cli import app
from deidflow.manifest.record import add_years
from deidflow.manifest.retention import ReleaseIndex, RetentionError
from deidflow.manifest.signing import load_public_key, load_signing_key
from release_sample import build_release, make_record

runner = CliRunner()

OLD_ID = "dsa-2022-003-20220110T0800Z"


def _old_record():
    created = datetime(2022, 1, 10, 8, 0, tzinfo=timezone.utc)
    return make_record(
        release_id=OLD_ID,
        agreement_id="DSA-2022-003",
        created_at=created,
        started_at=created - timedelta(minutes=3),
        finished_at=created,
        retention_until=add_years(created, 3),
    )


# --- keys init ---------------------------------------------------------------------------------


def test_keys_init_writes_a_0600_pair_and_prints_the_key_id(tmp_path: Path):
    key = tmp_path / "keys" / "signing.key"
    res = runner.invoke(app, ["keys", "init", "--key", str(key)])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) & 0o077 == 0
    pub = key.with_suffix(".pub")
    assert load_signing_key(key).public_key().public_bytes_raw() == load_public_key(pub).public_bytes_raw()
    assert "key id       sha256:" in res.stdout
    assert "key custodian, offline" in res.stdout  # where its backup belongs
    assert "PRIVATE" not in res.output  # the key itself is never printed


def test_keys_init_refuses_to_overwrite(tmp_path: Path):
    key = tmp_path / "signing.key"
    assert runner.invoke(app, ["keys", "init", "--key", str(key)]).exit_code == 0
    before = (key.read_bytes(), key.with_suffix(".pub").read_bytes())
    res = runner.invoke(app, ["keys", "init", "--key", str(key)])
    assert res.exit_code == 2
    assert "refusing to overwrite" in res.stderr and str(key) in res.stderr and "Fix:" in res.stderr
    assert "Traceback" not in res.output
    assert (key.read_bytes(), key.with_suffix(".pub").read_bytes()) == before


def test_keys_init_refuses_when_only_the_public_half_exists(tmp_path: Path):
    key = tmp_path / "signing.key"
    key.with_suffix(".pub").write_text("someone else's key\n")
    res = runner.invoke(app, ["keys", "init", "--key", str(key)])
    assert res.exit_code == 2 and "signing.pub" in res.stderr
    assert not key.exists()


# --- releases list / due / purge ---------------------------------------------------------------


@pytest.fixture
def releases(tmp_path: Path, signing_key: Path) -> Path:
    """Three signed releases (one from 2022, past retention; one tampered) and one unsigned dir."""
    root = tmp_path / "out"
    build_release(root / OLD_ID, signing_key, _old_record())
    current = build_release(root / make_record().release_id, signing_key)
    tampered = build_release(
        root / "dsa-2026-018-20260401T1000Z", signing_key,
        make_record(release_id="dsa-2026-018-20260401T1000Z", agreement_id="DSA-2026-018"),
    )
    (tampered / "data" / "patients.csv").write_text("patient_id\nx\n", "utf-8")
    (root / "half-written").mkdir()
    notices = root / "deletion-notices" / OLD_ID  # written by `deidflow recheck`, not a release
    notices.mkdir(parents=True)
    (notices / "notice-20240101T000000Z.json").write_text("{}", "utf-8")
    (root / ".staging-abc").mkdir()  # staging dirs are not releases
    assert current.is_dir()
    return root


def _rows(stdout: str) -> dict[str, str]:
    """First cell → whole table line, for lines of the rich table naming a release."""
    return {line.split("│")[1].strip(): line for line in stdout.splitlines() if line.startswith("│")}


def test_releases_list_shows_each_release_with_its_status(releases: Path, signing_key: Path):
    res = runner.invoke(
        app, ["releases", "list", str(releases), "--public-key", str(signing_key.with_suffix(".pub"))],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    rows = _rows(res.stdout)
    assert set(rows) == {OLD_ID, make_record().release_id, "dsa-2026-018-20260401T1000Z", "half-written"}
    assert "expired-retention-due" in rows[OLD_ID] and "2025-01-10" in rows[OLD_ID]
    assert "verified" in rows[make_record().release_id] and "2029-03-14" in rows[make_record().release_id]
    assert "tampered" in rows["dsa-2026-018-20260401T1000Z"]
    assert "unsigned" in rows["half-written"]
    assert "DSA-2022-003" in rows[OLD_ID]
    # the finding behind "tampered" is named
    assert "dsa-2026-018-20260401T1000Z: data/patients.csv: changed since signing" in res.stdout
    # oldest first
    order = [k for k in rows]
    assert order.index(OLD_ID) < order.index(make_record().release_id)


def test_the_notice_folder_matches_recheck():
    from deidflow.manifest.retention import NOTICE_DIR
    from deidflow.recheck import NOTICE_DIR as written_by_recheck

    assert NOTICE_DIR == written_by_recheck


def test_releases_list_of_an_empty_or_missing_root(tmp_path: Path):
    res = runner.invoke(app, ["releases", "list", str(tmp_path / "none")])
    assert res.exit_code == 0 and "no releases found" in res.stdout


def test_releases_list_without_verifying_reads_records_only(releases: Path):
    entries = {e.path.name: e for e in ReleaseIndex(releases).releases(verify=False)}
    assert entries["dsa-2026-018-20260401T1000Z"].status == "not-checked"  # not opened
    assert entries[OLD_ID].status == "expired-retention-due"


def _pin(signing_key: Path) -> list[str]:
    return ["--public-key", str(signing_key.with_suffix(".pub"))]


def _anchors(signing_key: Path):
    from deidflow.manifest.trust import resolve_anchors

    return resolve_anchors(public_keys=[signing_key.with_suffix(".pub")])


def test_releases_due_lists_only_what_passed_retention(releases: Path, signing_key: Path):
    res = runner.invoke(app, ["releases", "due", str(releases), *_pin(signing_key)], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(OLD_ID) and "2025-01-10" in lines[0]


def test_purge_refuses_a_release_inside_its_retention(releases: Path, signing_key: Path):
    rid = make_record().release_id
    res = runner.invoke(app, ["releases", "purge", rid, "--root", str(releases), *_pin(signing_key)])
    assert res.exit_code == 2
    assert "must be kept until 2029-03-14" in res.stderr and "PIPL art. 56" in res.stderr
    assert (releases / rid / "manifest.json").is_file()


def test_purge_refuses_a_tampered_release_whatever_its_dates(releases: Path, signing_key: Path):
    res = runner.invoke(app, ["releases", "purge", "dsa-2026-018-20260401T1000Z", "--root", str(releases),
                              *_pin(signing_key)])
    assert res.exit_code == 2 and "tampered" in res.stderr
    assert (releases / "dsa-2026-018-20260401T1000Z").is_dir()


def test_purge_refuses_an_unknown_release(releases: Path, signing_key: Path):
    res = runner.invoke(app, ["releases", "purge", "nope", "--root", str(releases), *_pin(signing_key)])
    assert res.exit_code == 2 and "no release 'nope'" in res.stderr


def test_purge_deletes_an_expired_release_and_its_exclusion_log(releases: Path, tmp_path: Path,
                                                                signing_key: Path):
    private = tmp_path / "private"
    (private / "exclusions").mkdir(parents=True)
    log = private / "exclusions" / f"{OLD_ID}.csv"
    log.write_text("subject_id,reason\nP1,withdrawn\n", "utf-8")
    other_log = private / "exclusions" / f"{make_record().release_id}.csv"
    other_log.write_text("subject_id,reason\n", "utf-8")
    res = runner.invoke(
        app, ["releases", "purge", OLD_ID, "--root", str(releases), "--private", str(private),
              *_pin(signing_key)],
        env={"COLUMNS": "300"},
    )
    assert res.exit_code == 0, res.output
    assert not (releases / OLD_ID).exists() and not log.exists()
    assert other_log.exists() and (releases / make_record().release_id).is_dir()
    assert f"deleted {releases / OLD_ID}" in res.stdout


def test_retention_counts_from_creation_even_if_the_record_says_less(releases: Path, signing_key: Path):
    """purge uses max(retention_until, created_at + 3 years): at 2025-01-09 the 2022 release is
    still kept, at 2025-01-10 it may go."""
    index = ReleaseIndex(releases, anchors=_anchors(signing_key))
    with pytest.raises(RetentionError, match="2025-01-10"):
        index.purge(OLD_ID, now=datetime(2025, 1, 9, 23, 59, tzinfo=timezone.utc))
    assert index.purge(OLD_ID, now=datetime(2025, 1, 10, 8, 0, tzinfo=timezone.utc)) == [releases / OLD_ID]


def test_a_copied_release_is_never_purged_by_its_signed_id(releases: Path, tmp_path: Path, signing_key: Path):
    """Two directories claiming one signed id: purge goes by directory and refuses the copy."""
    import shutil

    shutil.copytree(releases / OLD_ID, releases / "copy-of-old")
    entries = {e.path.name: e for e in ReleaseIndex(releases, anchors=_anchors(signing_key)).releases()}
    assert any("differs from the signed release id" in p for p in entries["copy-of-old"].problems)
    with pytest.raises(RetentionError, match="renamed or copied"):
        ReleaseIndex(releases, anchors=_anchors(signing_key)).purge("copy-of-old")
    assert (releases / "copy-of-old").is_dir()


def test_purge_without_a_trusted_key_refuses(releases: Path, tmp_path: Path, monkeypatch):
    """An expired release whose signer is not anchored cannot be purged: its dates are unproven."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEIDFLOW_TRUST_FILE", raising=False)
    res = runner.invoke(app, ["releases", "purge", OLD_ID, "--root", str(releases)])
    assert res.exit_code == 2 and "no trusted signing key" in res.stderr
    assert (releases / OLD_ID).is_dir()
