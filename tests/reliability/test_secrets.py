"""Secrets never travel: after a real (verbose) release, every file the run wrote and everything
it printed is scanned for the pseudonymisation key — raw, hex, base64 and every key derived from
it — and for the input's direct identifiers and raw link keys.

tests/integration/test_release_e2e.py scans the release directory for the master key and for
long identifiers; test_flow.py scans Prefect's database. This adds what they do not cover: the
registry and the private directory, the run's console output at -v, the decoded manifest
payload (the DSSE envelope is base64, so a scan of manifest.json alone sees nothing), the derived
keys, exact-cell matches of short identifiers (two-character names, postcodes) in every released
table, raw subject and encounter ids, and error messages about bad keys.

Failing runs are scanned too: every case of the bad-input catalogue, on both paths, through one
Prefect server (`failed_runs`, conftest.py, shared with test_failures_leak_nothing.py), for the master key and every
key derived from it in Prefect's database, its decoded result storage, everything written and
everything printed.
"""

from __future__ import annotations

import base64
import json

import pandas as pd
import pytest

from deidflow.errors import KeyCustodyError
from deidflow.keys import KeyRing
from deidflow.policy import load_policy

from .conftest import SECRET_HEX, Baseline, files_under
from .test_failures_leak_nothing import _decoded, written_by

pytestmark = pytest.mark.slow

DIRECT = {"patients": ["name", "resident_id", "mobile", "address", "insurance_no", "postcode"],
          "encounters": ["attending_doctor"]}
SCOPES = ["patient", "encounter", "diagnosis", "lab", "note", "scrub"]
PURPOSES = ["pseudonym", "date_shift", "scrub", "noise"]


def _key_needles(baseline: Baseline) -> dict[str, bytes]:
    loaded = load_policy(baseline.env.policy)
    secret = bytes.fromhex(SECRET_HEX)
    ring = KeyRing(secret, recipient_id=loaded.policy.release.recipient.id,
                   agreement_id=loaded.policy.release.agreement_id)
    keys = {"master": secret}
    for purpose in PURPOSES:
        for scope in SCOPES:
            keys[f"{purpose}/{scope}"] = ring.derive(scope, purpose=purpose)
            # pseudonyms and date offsets use keys bound to their algorithm (AES-CMAC)
            keys[f"{purpose}/{scope}/aes-cmac"] = ring.derive(scope, purpose=purpose, algorithm="aes-cmac")
    needles = {}
    for name, key in keys.items():
        needles[f"{name} raw"] = key
        needles[f"{name} hex"] = key.hex().encode()
        needles[f"{name} HEX"] = key.hex().upper().encode()
        needles[f"{name} b64"] = base64.b64encode(key).rstrip(b"=")
        needles[f"{name} b64url"] = base64.urlsafe_b64encode(key).rstrip(b"=")
    return needles


def _written(baseline: Baseline) -> list:
    """Every file under the run's root except the key files themselves (the inputs are elsewhere)."""
    keys = baseline.env.root / "keys"
    return [p for p in files_under(baseline.env.root) if keys not in p.parents]


def _identifiers(baseline: Baseline) -> tuple[set[str], set[str]]:
    """(all direct-identifier values, raw link keys) of the input extract."""
    values: set[str] = set()
    for table, cols in DIRECT.items():
        frame = pd.read_csv(baseline.env.data / f"{table}.csv", dtype="string")
        for c in cols:
            values |= set(frame[c].dropna())
    links: set[str] = set()
    for table, col in (("patients", "patient_id"), ("encounters", "encounter_id")):
        links |= set(pd.read_csv(baseline.env.data / f"{table}.csv", dtype="string")[col].dropna())
    return values, links


def test_no_key_material_anywhere_the_run_wrote_or_printed(baseline: Baseline):
    needles = _key_needles(baseline)
    written = _written(baseline)
    names = {p.name for p in written}
    assert "manifest.json" in names and "validation.json" in names and "consent.db" in names
    blobs = [(str(p), p.read_bytes()) for p in written] + [("console output", baseline.output.encode())]
    for where, blob in blobs:
        for label, needle in needles.items():
            assert needle not in blob, f"{label} key material in {where}"


def test_no_direct_identifier_in_the_release_the_manifest_or_the_logs(baseline: Baseline):
    from deidflow.manifest.verify import read_statement

    values, links = _identifiers(baseline)
    rel = baseline.release_dir

    # 1. Exact cells: not one released cell equals an input identifier, however short.
    for path in sorted((rel / "data").glob("*.csv")) + sorted((rel / "aggregates").glob("*.csv")):
        frame = pd.read_csv(path, dtype="string", keep_default_na=False)
        for col in frame.columns:
            hits = frame[col].isin(values | links)
            assert not hits.any(), f"{path.name}.{col} releases {int(hits.sum())} input identifier(s)"

    # 2. Substrings: every text the run produced, with the manifest's payload decoded.
    statement = json.dumps(read_statement(rel), ensure_ascii=False)
    texts = [("manifest payload", statement), ("console output", baseline.output)]
    consent_db = baseline.env.root / "consent.db"
    for p in _written(baseline):
        if p.name.startswith(consent_db.name):
            continue  # the registry holds subject ids by design (it is the hospital's)
        texts.append((str(p.relative_to(baseline.env.root)), p.read_bytes().decode("utf-8", "ignore")))
    # Two-character names also occur as ordinary words, and six-digit postcodes inside hex
    # pseudonyms: those are checked as whole cells above, not as substrings.
    long_values = {v for v in values if len(v) >= (8 if v.isdigit() else 3)}
    for where, text in texts:
        leaked = sorted(v for v in long_values if v in text)
        assert not leaked, f"{where} holds {len(leaked)} input identifier(s), e.g. {leaked[:1]!r:.8}…"
        if "private" not in where.split("/")[0]:
            raw = sorted(v for v in links if v in text)
            assert not raw, f"{where} holds {len(raw)} raw subject/encounter id(s)"


def test_key_errors_never_echo_the_key(tmp_path, monkeypatch, baseline: Baseline):
    """A wrong key is reported by where it is and how long, never by what it holds."""
    loaded = load_policy(baseline.env.policy)
    almost = "ab" * 31 + "zz"  # 64 characters, one non-hex pair: looks like a key, is not
    for value in (almost, SECRET_HEX[:40]):
        monkeypatch.setenv(loaded.policy.keys.pseudonym_key_env, value)
        with pytest.raises(KeyCustodyError) as info:
            KeyRing.from_policy(loaded)
        text = info.value.render()
        assert value not in text and value[:16] not in text, text
    monkeypatch.setenv(loaded.policy.keys.pseudonym_key_env, SECRET_HEX)
    ring = KeyRing.from_policy(loaded)
    for shown in (repr(ring), str(ring)):
        assert SECRET_HEX not in shown and SECRET_HEX[:16] not in shown


def test_no_key_material_after_failing_runs(failed_runs, baseline: Baseline):
    """The same key scan after every bad-input case failed, on both paths: what Prefect stored
    (database, result storage decoded), what the runs wrote and what they printed."""
    base, policies, results, stderr = failed_runs
    needles = _key_needles(baseline)  # same recipient and agreement as every case's policy
    written = written_by(base, policies)
    assert any(p.suffix == ".db" for p in written)
    blobs = [(str(p.relative_to(base)), _decoded(p.read_bytes())) for p in written]
    blobs += [("console output", (stderr + "".join(r["output"] for r in results)).encode())]
    for where, blob in blobs:
        for label, needle in needles.items():
            assert needle not in blob, f"{label} key material in {where}"
