"""A Synthea export released whole: direct identifiers gone, k over each patient's whole
record (their row and the set of their encounter classes), SNOMED CT codes exempted by format
from the identifier check (and recorded), and an attack: a newborn's first encounter is their
birth, so without protection its date-shifted start gives the birth date to within ±31 days
whatever the birth date's released level."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from tests.datasets.helpers import (consent_log, identifiers_left, import_consents,
                                    place_policy, recheck_k, released, setup_root)

SYNTHEA = "synthea/ma_113_burrows99"
QIS = ["BIRTHDATE", "MARITAL", "RACE", "ETHNICITY", "GENDER", "ZIP"]
DIRECT = ["SSN", "DRIVERS", "PASSPORT", "FIRST", "LAST", "MAIDEN", "ADDRESS"]
REFERENCE = ("organizations", "providers", "payers")  # lookup tables, no patient column


def _guardian_id(i: int) -> str:
    """A made-up but well-formed 18-character resident ID (the importer checks its digit)."""
    from deidflow.identifiers import check_chars

    first17 = f"110105198001{i:05d}"
    return first17 + str(check_chars(np.array([[int(c) for c in first17]]))[0])


@pytest.fixture
def synthea(tmp_path, datasets, monkeypatch):
    src = datasets / SYNTHEA
    patients = pd.read_csv(src / "patients.csv", dtype=str)
    setup_root(tmp_path, monkeypatch)
    policy = place_policy("synthea", tmp_path, {t: src / f"{t}.csv" for t in
                                                ("patients", "encounters", "conditions", *REFERENCE)})
    log = consent_log(tmp_path / "consents.csv", patients["Id"], purpose="ai-model-training",
                      recipient="pathway-lab",
                      categories=["demographics", "encounters", "conditions"])
    # minors: their guardian consents (PIPL art. 31)
    frame = pd.read_csv(log, dtype=str, keep_default_na=False)
    born = pd.to_datetime(patients.set_index("Id")["BIRTHDATE"])
    minor = (born.reindex(frame["subject_id"]) > pd.Timestamp.now() - pd.DateOffset(years=15)).to_numpy()
    frame.loc[minor, "grantor"] = "guardian"
    frame.loc[minor, "guardian_name"] = "Guardian"
    frame.loc[minor, "guardian_id"] = [_guardian_id(i) for i in range(int(minor.sum()))]
    frame.to_csv(log, index=False)
    import_consents(policy, log)
    return tmp_path, policy, src


def _mapping(root) -> pd.Series:
    with sqlite3.connect(root / "consent.db") as con:
        pairs = pd.read_sql("select subject_id, pseudonym from release_subjects", con)
    return pairs.set_index("pseudonym")["subject_id"]


def test_synthea_release_rechecked_and_birth_dates_not_recovered(synthea):
    from deidflow.manifest.verify import read_record_unverified
    from deidflow.release import run_release

    root, policy, src = synthea
    raw = {t: pd.read_csv(src / f"{t}.csv", dtype=str) for t in ("patients", "encounters")}
    summary = run_release(policy)
    p, e = released(summary, "patients"), released(summary, "encounters")
    c = released(summary, "conditions")
    assert len(p) >= 0.8 * len(raw["patients"])
    assert recheck_k(p, "Id", QIS, [(e.drop(columns="Id").rename(columns={"PATIENT": "Id"}),
                                                  ["ENCOUNTERCLASS"])]) >= 3
    assert not set(DIRECT) & set(p.columns)
    values = pd.concat([raw["patients"][col] for col in DIRECT + ["Id"]])
    assert identifiers_left({"patients": p, "encounters": e, "conditions": c}, values) == 0
    # ZIP codes of another country through the prefix hierarchy
    assert p["ZIP"].dropna().str.fullmatch(r"[0-9*]{5}|\*").all()

    # the attack: each released patient's earliest encounter start as their birth date
    truth = pd.to_datetime(raw["patients"].set_index("Id")["BIRTHDATE"])
    who = _mapping(root)
    first = (pd.to_datetime(e["START"], utc=True, errors="coerce").dt.tz_localize(None)
             .groupby(e["PATIENT"]).min())
    guess = first.rename(index=who).dropna()
    err = (guess - truth.reindex(guess.index)).abs()
    assert (err <= pd.Timedelta(days=31)).sum() == 0
    record = read_record_unverified(summary.release_dir)
    withheld = [col.params.get("counts", {}).get("event_dates_withheld", 0)
                for col in record.columns if col.table == "encounters" and col.column == "START"]
    assert sum(withheld) > 0  # the newborn visits were there, and withheld
    checks = [col.params.get("identifier_check") for col in record.columns if col.column == "CODE"]
    assert all(ch and ch["reason"].startswith("SNOMED") for ch in checks)
    assert "SNOMED CT concept ids" in (summary.release_dir / "review.html").read_text()
    _check_reference_tables(summary, record, src, e, _mapping(root))


def _check_reference_tables(summary, record, src, e: pd.DataFrame, who: pd.Series) -> None:
    """Organisations, providers and payers (no patient column) released beside the patient
    tables: joins on the pseudonymised keys work and lead to the right row, only referenced
    rows ship (providers: keep all, with its reason), and no name, address or phone is left.
    Recomputed from the input files, not from deidflow's own figures."""
    raw = {t: pd.read_csv(src / f"{t}.csv", dtype=str) for t in (*REFERENCE, "encounters")}
    out = {t: released(summary, t) for t in REFERENCE}
    orgs, provs, payers = out["organizations"], out["providers"], out["payers"]
    # every released foreign key finds its row
    assert e["PROVIDER"].isin(orgs["Id"]).all()  # this export's PROVIDER holds organisation ids
    assert e["PAYER"].isin(payers["Id"]).all()
    assert provs["ORGANIZATION"].isin(orgs["Id"]).all()
    assert not set(raw["organizations"]["Id"]) & set(orgs["Id"])  # pseudonymised, not kept
    # ... and the right row: the organisation reached through each released encounter is the
    # one the input encounter named (compared by columns released as they were)
    shown = ["REVENUE", "UTILIZATION"]
    got = e[["PROVIDER"]].merge(orgs[["Id", *shown]].astype(str), left_on="PROVIDER", right_on="Id")
    mine = raw["encounters"][raw["encounters"]["PATIENT"].isin(set(who))]
    want = mine[["PROVIDER"]].merge(raw["organizations"][["Id", *shown]], left_on="PROVIDER", right_on="Id")
    assert len(got) == len(e) == len(want)
    canon = lambda f: sorted(map(tuple, f[shown].astype(float).round(4).to_numpy().tolist()))  # noqa: E731
    assert canon(got) == canon(want)
    # data minimisation: exactly the rows a released row references (providers: all)
    referenced_orgs = set(mine["PROVIDER"]) | set(raw["providers"]["ORGANIZATION"])
    assert len(orgs) == len(referenced_orgs & set(raw["organizations"]["Id"]))
    assert len(payers) == mine["PAYER"].nunique()
    assert len(provs) == len(raw["providers"])
    entries = {r["table"]: r for r in record.reference_tables}
    assert entries["providers"]["keep"] == "all" and entries["providers"]["reason"]
    assert entries["payers"]["rows_out"] == len(payers)
    assert entries["organizations"]["rows_in"] == len(raw["organizations"])  # not consent-filtered
    city = [c for c in entries["providers"]["columns"] if c["column"] == "CITY"][0]
    assert city["not_in_patient_risk"]
    # no provider, organisation or payer name, address, phone or position left, in any cell
    direct = pd.concat([raw["providers"][c] for c in ("NAME", "ADDRESS", "LAT", "LON")]
                       + [raw["organizations"][c] for c in ("NAME", "ADDRESS", "PHONE", "LAT", "LON")]
                       + [raw["payers"][c] for c in ("ADDRESS", "PHONE")])
    assert identifiers_left({**out, "encounters": e}, direct) == 0
    names = set(raw["providers"]["NAME"]) | set(raw["organizations"]["NAME"])
    text = "\n".join(f[c].astype(str).str.cat(sep="\n") for f in out.values() for c in f.columns)
    assert not [n for n in names if n in text]
    review = (summary.release_dir / "review.html").read_text()
    assert "Reference tables" in review and "organizations" in review


def test_without_protection_the_attack_recovers_newborn_birth_dates(synthea, monkeypatch):
    """The same release with the protection switched off: the attack works (so the test
    above measures the protection, not an attack that cannot succeed)."""
    import deidflow.risk.birth_dates as bd
    from deidflow.release import run_release

    monkeypatch.setattr(bd, "protect_birth_dates", lambda *a, **k: {})
    root, policy, src = synthea
    truth = pd.to_datetime(pd.read_csv(src / "patients.csv", dtype=str)
                           .set_index("Id")["BIRTHDATE"])
    summary = run_release(policy)
    e = released(summary, "encounters")
    first = (pd.to_datetime(e["START"], utc=True, errors="coerce").dt.tz_localize(None)
             .groupby(e["PATIENT"]).min())
    guess = first.rename(index=_mapping(root)).dropna()
    err = (guess - truth.reindex(guess.index)).abs()
    assert (err <= pd.Timedelta(days=31)).sum() >= 3


def _deidflow(cwd, *args):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = shutil.which("deidflow", path=str(Path(sys.executable).parent)) or "deidflow"
    env = {**os.environ, "COLUMNS": "220"}
    env.pop("DEIDFLOW_PSEUDONYM_KEY", None)
    return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_check_validates_the_reference_tables(synthea, tmp_path):
    """`deidflow check`, from another directory: the reference tables are read and listed;
    a referenced table whose key repeats stops the check with the file, column and row."""
    root, policy, src = synthea
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _deidflow(elsewhere, "check", str(policy))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reference tables" in proc.stdout
    for name in REFERENCE:
        assert name in proc.stdout
    assert "encounters.PROVIDER" in proc.stdout and "referenced rows only" in proc.stdout

    orgs = pd.read_csv(src / "organizations.csv", dtype=str)
    bad = tmp_path / "organizations.csv"
    pd.concat([orgs, orgs.iloc[[3]]]).to_csv(bad, index=False)
    text = policy.read_text(encoding="utf-8")
    broken = policy.with_name("broken.yaml")
    broken.write_text(text.replace(str(src / "organizations.csv"), str(bad)), encoding="utf-8")
    proc = _deidflow(elsewhere, "check", str(broken))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "organizations.csv" in out and "column 'Id'" in out and f"row {len(orgs) + 2}" in out
    assert "repeats" in out and "Traceback" not in out


def test_reference_tables_on_the_prefect_flow_verified_by_the_command(synthea, tmp_path,
                                                                    prefect_harness):
    """The Prefect flow releases the reference tables too, and the installed `deidflow
    verify` (another directory) finds every file, reference tables included, as signed; a
    reference file changed after signing is caught."""
    from pathlib import Path

    from deidflow.manifest.verify import read_record_unverified
    from flows.release import release_flow

    root, policy, src = synthea
    state = release_flow(policy_path=str(policy), return_state=True)
    assert state.is_completed(), state.message
    release_dir = Path(state.result()["release_dir"])
    record = read_record_unverified(release_dir)
    entries = {r["table"]: r for r in record.reference_tables}
    assert set(entries) == set(REFERENCE)
    e = pd.read_parquet(release_dir / "data" / "encounters.parquet")
    orgs = pd.read_parquet(release_dir / "data" / "organizations.parquet")
    assert len(orgs) == entries["organizations"]["rows_out"] and e["PROVIDER"].isin(orgs["Id"]).all()
    assert {i.table for i in record.inputs} >= set(REFERENCE)  # their digests are in the id

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    key = root / "keys" / "signing.pub"
    proc = _deidflow(elsewhere, "verify", str(release_dir), "--public-key", str(key))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    payers = release_dir / "data" / "payers.parquet"
    pd.read_parquet(payers).iloc[:-1].to_parquet(payers)  # one payer row removed
    proc = _deidflow(elsewhere, "verify", str(release_dir), "--public-key", str(key))
    assert proc.returncode == 1 and "payers.parquet" in proc.stdout + proc.stderr


def test_reference_tables_with_the_partitioned_engine(synthea):
    """The Dask engine's plan, run in this process over a partitioned extract (no cluster):
    the reference tables, which are not partitioned, are released as one part each, and the
    partitioned encounters still join them."""
    from deidflow.partitions import partition_extract
    from deidflow.policy import load_policy
    from deidflow.release import run_release
    from deidflow.release.transform import released_table

    root, policy, src = synthea
    parted = root / "parted"
    partition_extract(load_policy(policy), parted, 2, block_bytes=1 << 16)
    text = policy.read_text(encoding="utf-8")
    for table in ("patients", "encounters", "conditions"):
        text = text.replace(f"path: {src / f'{table}.csv'}", f"path: {parted / table}\n    format: parquet")
    dask_policy = policy.with_name("dask.yaml")
    dask_policy.write_text(text, encoding="utf-8")
    summary = run_release(dask_policy, engine="dask")
    data = summary.release_dir / "data"
    assert len(list((data / "encounters").glob("part-*.parquet"))) == 2
    e = released_table(summary.release_dir, "encounters", "parquet", "dask")
    orgs = released_table(summary.release_dir, "organizations", "parquet", "dask")
    payers = released_table(summary.release_dir, "payers", "parquet", "dask")
    assert e["PROVIDER"].isin(orgs["Id"]).all() and e["PAYER"].isin(payers["Id"]).all()
    assert len(payers) == e["PAYER"].nunique()
    names = pd.read_csv(src / "organizations.csv", dtype=str)["NAME"]
    assert not orgs.astype(str).isin(set(names)).any().any()  # pseudonymised in parts too


def test_reference_identifiers_reach_the_scrubber_and_the_gate(datasets, tmp_path):
    """The export's own providers and organisations as notes would name them (name, the
    organisation's address and phone): the generic readers leave the names and phones; the
    reference tables' identifying values (as the reference-inputs step keeps them) scrub them,
    and the gate's known-value search finds every unscrubbed one and none scrubbed."""
    import yaml

    from deidflow.policy import parse_policy
    from deidflow.reference_tables import (IDENTIFIERS_FILE, identifying_rows,
                                           reference_identifier_values, with_reference_identifiers)
    from deidflow.techniques.scrub import scrub_texts
    from deidflow.validation.direct import known_hits
    from deidflow.validation.sets import Chunks, StringSet
    from tests.datasets.helpers import REPO

    src = datasets / SYNTHEA
    raw = yaml.safe_load((REPO / "configs" / "datasets" / "synthea.yaml").read_text(encoding="utf-8"))
    policy = parse_policy(yaml.safe_dump(raw, allow_unicode=True), source="synthea.yaml")
    frames = {t: pd.read_csv(src / f"{t}.csv", dtype="string") for t in REFERENCE}
    rows = [r for t in REFERENCE
            for r in identifying_rows(t, policy.reference_tables[t], frames[t], policy.limits.k)]
    kept = pd.concat(rows, ignore_index=True)
    kept.to_parquet(tmp_path / IDENTIFIERS_FILE)
    # the gate's rule on the real directory: a name that k or more providers share is not
    # looked for (this export repeats some providers), every other one is
    held = frames["providers"]["NAME"].value_counts()
    names = set(kept.loc[(kept["table"] == "providers") & (kept["column"] == "NAME"), "value"])
    assert names == set(held[held < policy.limits.k].index) and (held >= policy.limits.k).any()

    rare = frames["providers"][frames["providers"]["NAME"].isin(names)]
    provs = rare.merge(frames["organizations"], left_on="ORGANIZATION", right_on="Id",
                       suffixes=("", "_ORG")).dropna(subset=["ADDRESS_ORG", "PHONE"])
    org_values = set(kept.loc[kept["table"] == "organizations", "value"])
    provs = provs[provs["ADDRESS_ORG"].isin(org_values) & provs["PHONE"].isin(org_values)]
    provs = provs.sample(40, random_state=3)
    notes = ("Referred to " + provs["NAME"] + " at " + provs["ADDRESS_ORG"] + "; call "
             + provs["PHONE"] + ".").astype("string")
    subjects = pd.Series([f"P{i}" for i in range(len(notes))], dtype="string")
    none_known = pd.DataFrame({"subject_id": [], "kind": [], "value": []}, dtype="string")

    generic, _ = scrub_texts(notes, subject_ids=subjects, known=none_known)
    for col in ("NAME", "PHONE"):  # no detector of its own finds the names and phones
        assert all(v in t for v, t in zip(provs[col], generic)), col
    known = with_reference_identifiers(none_known, tmp_path)
    scrubbed, counts = scrub_texts(notes, subject_ids=subjects, known=known)
    for col in ("NAME", "ADDRESS_ORG", "PHONE"):
        assert not any(v in t for v, t in zip(provs[col], scrubbed)), col
    assert counts.get("name", 0) >= len(notes)

    gate = StringSet(Chunks(lambda: reference_identifier_values(tmp_path)))
    assert known_hits(notes.to_numpy(dtype=object), gate).all()
    assert not known_hits(scrubbed.to_numpy(dtype=object), gate).any()
