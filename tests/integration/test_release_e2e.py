"""One release end to end on a generated extract: what it keeps, what it proves, what it never
writes, and that it fails closed."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deidflow.errors import DeidflowError, GateFailed
from deidflow.policy import load_policy
from deidflow.release import run_release

from .conftest import SECRET_HEX, Env, _import_consents, write_policy

QIS = ["birth_date", "sex", "region_code", "ethnicity"]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _data_digests(release_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(release_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in _files(release_dir)
            if p.parts[len(release_dir.parts)] in ("data", "aggregates")}


def _leftovers(env) -> list[Path]:
    """Anything a failed run may have left: staging dirs, work dirs, partial releases."""
    out = []
    if env.releases.exists():
        out += [p for p in env.releases.iterdir()]
    work = env.private / "work"
    if work.exists():
        out += list(work.iterdir())
    return out


@pytest.fixture(scope="module")
def released(tmp_path_factory, extract):
    """One release of the shared extract in its own root (as the `env` fixture builds it),
    for the tests below that only read what it wrote: one run instead of one per test."""
    import os

    root = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DEIDFLOW_PSEUDONYM_KEY", raising=False)
        keys = root / "keys"
        keys.mkdir(mode=0o700)
        (keys / "pseudonym.key").write_text(SECRET_HEX + "\n")
        os.chmod(keys / "pseudonym.key", 0o600)
        policy = write_policy(root, extract)
        _import_consents(policy, extract)
        env = Env(root, extract, policy)
        return env, run_release(env.policy)


def test_release_end_to_end(released):
    from deidflow.manifest.verify import verify_release

    env, summary = released
    rel = summary.release_dir
    assert rel is not None and rel.is_dir()
    assert (rel / "manifest.json").is_file() and (rel / "review.html").is_file()
    assert verify_release(rel, env.root / "keys" / "signing.pub").ok

    loaded = load_policy(env.policy)
    k = loaded.policy.limits.k
    patients = pd.read_csv(rel / "data" / "patients.csv", dtype="string", keep_default_na=False)
    # k-anonymity on the released subject table, recomputed here independently of the engine
    sizes = patients.groupby(QIS, dropna=False).size()
    assert sizes.min() >= k, sizes.sort_values().head()
    assert summary.k is not None and summary.k >= k
    # direct identifiers are gone; the link key is a pseudonym, consistent across tables
    for col in ("name", "resident_id", "mobile", "address", "insurance_no", "postcode"):
        assert col not in patients.columns
    raw = pd.read_csv(env.data / "patients.csv", dtype="string")
    assert not patients["patient_id"].isin(raw["patient_id"]).any()
    enc = pd.read_csv(rel / "data" / "encounters.csv", dtype="string")
    assert enc["patient_id"].isin(patients["patient_id"]).all()
    # counts add up: in = excluded + suppressed + released
    assert summary.subjects_in == len(raw)
    assert summary.excluded_for_consent + summary.suppressed + summary.released == summary.subjects_in
    assert summary.released == len(patients)
    assert 0 < summary.excluded_for_consent < summary.subjects_in
    assert summary.suppressed <= 0.02 * (summary.subjects_in - summary.excluded_for_consent) + 1e-9


def test_excluded_subjects_are_absent_from_every_table(released):
    """The private exclusion log names who was excluded; none of their pseudonyms is released."""
    from deidflow.keys import KeyRing
    from deidflow.techniques.pseudonymise import pseudonyms

    env, summary = released
    loaded = load_policy(env.policy)
    excluded = pd.read_csv(env.private / "exclusions" / f"{summary.release_id}.csv", dtype="string")
    assert len(excluded) == summary.excluded_for_consent
    assert set(excluded["reason"]) >= {"no_consent", "withdrawn", "expired"}
    # the pseudonyms the excluded subjects would have had
    from deidflow.techniques import ApplyContext, registry

    spec = loaded.policy.tables["patients"].columns["patient_id"]
    ids = excluded["subject_id"]
    ctx = ApplyContext(table="patients", column="patient_id", subject_ids=ids,
                       keyring=KeyRing.from_policy(loaded))
    would_be = set(registry.get("pseudonymise").apply(ids, spec, ctx).astype(str))
    for table in loaded.policy.tables:
        released = pd.read_csv(summary.release_dir / "data" / f"{table}.csv", dtype="string")
        assert not released["patient_id"].isin(would_be).any(), table


def test_nothing_secret_or_identifying_in_what_a_run_writes(released):
    env, summary = released
    secret = bytes.fromhex(SECRET_HEX)
    needles = [SECRET_HEX.encode(), SECRET_HEX.upper().encode(), base64.b64encode(secret),
               base64.urlsafe_b64encode(secret).rstrip(b"=")]
    raw = pd.read_csv(env.data / "patients.csv", dtype="string")
    ident = set()
    for col in ("name", "resident_id", "mobile", "insurance_no"):
        ident |= set(raw[col].dropna())
    written = _files(summary.release_dir)
    assert len(written) >= 8
    for path in written:
        blob = path.read_bytes()
        for n in needles:
            assert n not in blob, f"key material in {path}"
        text = blob.decode("utf-8", errors="ignore")
        # names are 2-3 characters: look for them as whole cell values or in note text
        if path.suffix in (".csv", ".json", ".html"):
            hits = [v for v in ident if len(v) >= 8 and v in text]
            assert not hits, f"{path.name} holds input identifiers ({len(hits)})"
    notes = pd.read_csv(summary.release_dir / "data" / "notes.csv", dtype="string")
    names = set(raw["name"].dropna())
    joined = "\n".join(notes["text"].dropna())
    leaked = [n for n in names if len(n) >= 3 and n in joined]
    assert not leaked, f"{len(leaked)} patient names survive in notes"


def test_rerun_is_idempotent_and_byte_identical(env):
    first = run_release(env.policy)
    digests = _data_digests(first.release_dir)
    again = run_release(env.policy)
    assert again.already_released and again.release_id == first.release_id
    # a run from scratch (the release removed) gives the same bytes
    import shutil

    shutil.rmtree(first.release_dir)
    third = run_release(env.policy)
    assert third.release_id == first.release_id
    assert _data_digests(third.release_dir) == digests


def test_impossible_k_fails_closed(env):
    policy = write_policy(env.root, env.data, edits={r"k: 6 ": "k: 1000 "}, name="k1000.yaml")
    with pytest.raises(GateFailed) as info:
        run_release(policy)
    assert "k" in info.value.message
    assert _leftovers(env) == []


def test_note_keeping_a_phone_number_fails_the_gate_points_at_the_scrubber_and_logs_rows(env):
    """The gate fails closed on a phone number left in a note; it names table, column, kind
    and count; its fix is about scrubbing, never the risk limits; the row numbers go to the
    private gate log, no value anywhere. (One failing run for both checks: it costs a whole
    release up to the gate.)"""
    import json

    from deidflow.policy import load_policy

    policy = write_policy(env.root, env.data, name="keepnotes.yaml", edits={
        r"technique: scrub, params: \{[^}]*\}": "technique: scrub, params: {kinds: [name]}"})
    with pytest.raises(GateFailed) as info:
        run_release(policy)
    assert "identifier" in info.value.message.lower()
    assert _leftovers(env) == []
    err = info.value
    assert "'text'" in err.message and "mobile" in err.message
    assert "scrub" in (err.fix or "") and "relax" not in (err.fix or "") and err.key != "limits"
    loaded = load_policy(policy)
    logs = list((loaded.resolve(loaded.policy.output.private_directory) / "gate").glob("*.json"))
    assert len(logs) == 1 and (logs[0].stat().st_mode & 0o777) == 0o600
    rows = json.loads(logs[0].read_text())["rows_with_direct_identifiers"]
    assert rows["notes"]["text"] and all(isinstance(r, int) for r in rows["notes"]["text"])


def test_child_tables_hold_exactly_the_released_subjects_rows(released):
    """Every input row of a released subject is in its table, and no other row: no excluded
    subject's (transform keeps rows by their subject's position, found once in prepare;
    tests/release/test_kept_rows.py has the suppressed subjects)."""
    from deidflow.keys import KeyRing
    from deidflow.techniques import ApplyContext, registry

    env, summary = released
    loaded = load_policy(env.policy)
    spec = loaded.policy.tables["patients"].columns["patient_id"]
    keyring = KeyRing.from_policy(loaded)
    patients = pd.read_csv(summary.release_dir / "data" / "patients.csv", dtype="string")
    kept = set(patients["patient_id"])
    for table in loaded.policy.tables:
        if table == loaded.policy.subject_table or table == "notes":
            continue
        raw = pd.read_csv(env.data / f"{table}.csv", dtype="string")["patient_id"]
        ctx = ApplyContext(table=table, column="patient_id", subject_ids=raw, keyring=keyring)
        pseudonym = registry.get("pseudonymise").apply(raw, spec, ctx).astype(str)
        out = pd.read_csv(summary.release_dir / "data" / f"{table}.csv", dtype="string")
        assert len(out) == int(pseudonym.isin(kept).sum()), table
        assert dict(out["patient_id"].astype(str).value_counts()) == dict(
            pseudonym[pseudonym.isin(kept)].value_counts()), table
