"""Consent benchmarks: the gate over 1,000,000 subjects, and importing a large consent CSV.

    .venv/bin/python benchmarks/bench_consent.py                  # defaults below
    .venv/bin/python benchmarks/bench_consent.py --release-only   # only the 1M-registry steps
    .venv/bin/python benchmarks/bench_consent.py --gate-only      # only the in-memory gate
    .venv/bin/python benchmarks/bench_consent.py --subjects 200000 --import-rows 50000
    DEIDFLOW_TEST_PG_URL=postgresql+psycopg://… .venv/bin/python benchmarks/bench_consent.py

Data are synthetic and built column-wise: ~1.1 events per subject with every exclusion reason
represented. The gate times are the in-memory part of a release (derive current state, the
vectorised rule checks, dropping rows of a 3-rows-per-subject child table); the import times
include validation of every row and the database insert. Prints a table; rerunnable.

With the cached 1M-patient extract and registry (benchmarks/.cache, made by bench_release.py)
it also times the three consent steps of a full release, best of --repeat, wall and CPU
seconds (the machine is shared: CPU time excludes waiting for a core): the registry snapshot
(on a copy of the registry), the gate as release.gate_partition runs it (filter the snapshot's
events to the subjects, derive current state, the rules, subject_mask over every table's
link column) and record_release of the allowed subjects.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from deidflow.consent.gate import consent_gate  # noqa: E402
from deidflow.idcolumns import subject_mask  # noqa: E402
from deidflow.consent.importers import events_from_csv  # noqa: E402
from deidflow.consent.registry import ConsentRegistry, ConsentSnapshot  # noqa: E402

RUN = pd.Timestamp("2026-06-15T10:00:00+08:00")
CATS = "demographics;diagnoses;encounters;labs;notes"


def synthetic_events(n_subjects: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = pd.Series(np.char.add("P", np.char.zfill(np.arange(n_subjects).astype(str), 9)))
    has = rng.random(n_subjects) < 0.9
    sid = ids[has].reset_index(drop=True)
    n = len(sid)
    kind = rng.integers(0, 20, n)  # 0..11 → ok, 12.. → one failure each
    ev = pd.DataFrame({
        "event_id": "G-" + sid, "consent_id": "C-" + sid, "subject_id": sid,
        "event": "granted",
        "recorded_at": pd.Timestamp("2024-03-01T01:00:00Z") + pd.to_timedelta(rng.integers(0, 500, n), unit="D"),
        "grantor": np.where(kind == 19, "guardian", "self"),
        "guardian_name": np.where(kind == 19, "王芳", None),
        "guardian_id": np.where(kind == 19, "110105198001011238", None),
        "separate": kind != 12,
        "purposes": np.where(kind == 13, "clinical-care", "ai-model-training"),
        "recipients": np.where(kind == 14, "beijing-ai-lab", "shanghai-ai-lab"),
        "data_categories": np.where(kind == 15, "demographics;labs", CATS),
        "cross_border": kind != 16,
        "valid_from": pd.Timestamp("2024-01-01"),
        "valid_until": np.where(kind == 17, pd.Timestamp("2025-12-31"), pd.Timestamp("2027-12-31")),
        "notice_version": "v2.1",
        "form_sha256": "0" * 64,
    })
    ev["valid_until"] = pd.to_datetime(ev["valid_until"])
    wd = ev.loc[kind == 18].assign(
        event="withdrawn", event_id=lambda d: "W-" + d["subject_id"],
        recorded_at=pd.Timestamp("2026-01-01T01:00:00Z"))
    events = pd.concat([ev, wd], ignore_index=True)
    birth = pd.Timestamp("1950-01-01") + pd.to_timedelta(rng.integers(0, 27_000, n_subjects), unit="D")
    subjects = pd.DataFrame({"subject_id": ids, "birth_date": birth})
    return events, subjects


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def with_variant_spellings(events: pd.DataFrame, share: float = 0.01, seed: int = 2) -> pd.DataFrame:
    """The events with ``share`` of their subject ids spelled as other systems write them
    (full-width digits, padding) and as many withdrawals of ids no subject has (orphans):
    the gate's non-ASCII path (NFKC per distinct id) and its orphan report."""
    rng = np.random.default_rng(seed)
    out = events.copy()
    pick = rng.random(len(out)) < share
    full = str.maketrans("0123456789", "０１２３４５６７８９")
    out.loc[pick, "subject_id"] = [s.translate(full) if i % 2 else f" {s} "
                                   for i, s in enumerate(out.loc[pick, "subject_id"])]
    orphans = out.loc[pick].assign(event="withdrawn", event_id=lambda d: "O-" + d["event_id"],
                                   consent_id=lambda d: "O-" + d["consent_id"],
                                   subject_id=lambda d: "X" + d["subject_id"].str.strip())
    return pd.concat([out, orphans], ignore_index=True)


def bench_gate(n_subjects: int, rows: list[tuple[str, str, str]]) -> None:
    (events, subjects), t_build = timed(lambda: synthetic_events(n_subjects))
    bench_gate_on(events, subjects, rows, "gate")
    variants = with_variant_spellings(events)
    bench_gate_on(variants, subjects, rows, "gate/1% variant ids")
    rows.insert(0, ("gate", "build synthetic events (not part of a run)", f"{t_build:.2f}"))


def bench_gate_on(events: pd.DataFrame, subjects: pd.DataFrame, rows: list[tuple[str, str, str]], area: str) -> None:
    n_subjects = len(subjects)
    snap, t_snap = timed(lambda: ConsentSnapshot.from_events(events, RUN))
    gate, t_gate = timed(lambda: consent_gate(
        snap, subjects, purpose="ai-model-training", recipient_id="shanghai-ai-lab",
        categories=["demographics", "labs", "notes"], abroad=True, as_of=RUN))
    child = pd.DataFrame({"patient_id": np.repeat(subjects["subject_id"].to_numpy(), 3),
                          "value": np.arange(3 * n_subjects)})
    kept, t_filter = timed(lambda: {"encounters": child.loc[gate.admits(child["patient_id"])]})
    label = f"{n_subjects:,} subjects, {len(events):,} events"
    rows.append((area, f"derive current state: {label}", f"{t_snap:.2f}"))
    rows.append((area, f"consent_gate: {len(gate.allowed):,} allowed, {len(gate.excluded):,} excluded, "
                 f"{len(gate.orphan_withdrawals):,} orphan withdrawals", f"{t_gate:.2f}"))
    rows.append((area, f"drop rows of excluded subjects: {len(child):,} → {len(kept['encounters']):,}", f"{t_filter:.2f}"))
    rows.append((area, "total snapshot → gate → filter", f"{t_snap + t_gate + t_filter:.2f}"))
    print("  excluded by reason:", {k: v for k, v in gate.counts.items() if v}, file=sys.stderr)


CACHE = Path(__file__).resolve().parent / ".cache"
RELEASE_TABLES = ("patients", "encounters", "diagnoses", "lab_results")
RELEASE = dict(purpose="ai-model-training", recipient_id="shanghai-ai-lab",
               categories=["demographics", "encounters", "diagnoses", "labs", "notes"], abroad=False)


def best_of(repeat: int, fn):
    """(result, best wall s, best CPU s) over repeat runs."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return out, min(walls), min(cpus)


def bench_release_steps(repeat: int, tmp: Path, rows: list[tuple[str, str, str]]) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    db = CACHE / "consent-1000000.db"
    extract = CACHE / "extract-1000000"
    if not db.exists() or not (extract / "patients.csv").exists():
        print(f"  no {db} / {extract}: run benchmarks/bench_release.py first", file=sys.stderr)
        return
    copy = tmp / "consent-1000000.db"
    shutil.copy(db, copy)
    url = f"sqlite:///{copy}"
    as_of = pd.Timestamp.now(tz="UTC")
    reg = ConsentRegistry(url)
    snap, wall, cpu = best_of(repeat, lambda: reg.snapshot(as_of))
    summary = snap.summary()
    rows.append(("release/1M", f"snapshot: {summary['events']:,} events, {summary['consents']:,} consents",
                 f"{wall:.2f} ({cpu:.2f} CPU)"))

    t0 = time.perf_counter()
    links = {}
    for name in RELEASE_TABLES:
        cols = ["patient_id", "birth_date"] if name == "patients" else ["patient_id"]
        table = pacsv.read_csv(extract / f"{name}.csv", convert_options=pacsv.ConvertOptions(
            include_columns=cols, column_types={c: pa.string() for c in cols}))
        links[name] = table.to_pandas()
    subjects = pd.DataFrame({"subject_id": links["patients"]["patient_id"],
                             "birth_date": pd.to_datetime(links["patients"]["birth_date"], format="ISO8601")})
    n_rows = sum(len(f) for f in links.values())
    rows.append(("release/1M", f"read link columns of {len(RELEASE_TABLES)} tables, {n_rows:,} rows "
                 "(not part of the step)", f"{time.perf_counter() - t0:.2f}"))
    events = snap.events

    def gate_step():
        ev = events.loc[subject_mask(events["subject_id"], subjects["subject_id"])]
        gated = ConsentSnapshot.from_events(ev, as_of, url)
        gate = consent_gate(gated, subjects, as_of=as_of, **RELEASE)
        kept = {n: int(subject_mask(f["patient_id"], gate.allowed).sum()) for n, f in links.items()}
        return gate, kept

    (gate, kept), wall, cpu = best_of(repeat, gate_step)
    rows.append(("release/1M", f"gate: {len(gate.allowed):,} of {len(subjects):,} subjects allowed, "
                 f"{sum(kept.values()):,} of {n_rows:,} rows kept", f"{wall:.2f} ({cpu:.2f} CPU)"))
    allowed = pd.Series(gate.allowed.astype(str))
    pseudonyms = "P" + allowed.map(lambda s: hashlib.sha256(s.encode()).hexdigest()[:20])

    def record():
        shutil.copy(db, copy)  # a fresh registry each time: a repeat would insert nothing
        fresh = ConsentRegistry(url)
        t = (time.perf_counter(), time.process_time())
        fresh.record_release("BENCH-1M", allowed, pseudonyms, as_of.to_pydatetime())
        out = (time.perf_counter() - t[0], time.process_time() - t[1])
        fresh.dispose()
        return out

    times = [record() for _ in range(repeat)]
    rows.append(("release/1M", f"record_release: {len(allowed):,} subjects",
                 f"{min(t[0] for t in times):.2f} ({min(t[1] for t in times):.2f} CPU)"))
    reg.dispose()
    print("  excluded by reason:", {k: v for k, v in gate.counts.items() if v},
          "events_sha256:", summary["events_sha256"], file=sys.stderr)


def bench_import(n_rows: int, url: str, backend: str, tmp: Path, rows: list[tuple[str, str, str]]) -> None:
    events, _ = synthetic_events(n_rows, seed=2)
    events = events.iloc[:n_rows].copy()
    csv = tmp / f"consents-{backend}.csv"
    out = events.drop(columns=["consent_id"]).assign(
        event_id=lambda d: d["event_id"],
        recorded_at=events["recorded_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        valid_from=events["valid_from"].dt.strftime("%Y-%m-%d"),
        valid_until=events["valid_until"].dt.strftime("%Y-%m-%d"),
        separate=events["separate"].map({True: "true", False: "false"}),
        cross_border=events["cross_border"].map({True: "true", False: "false"}),
    )
    out.to_csv(csv, index=False)
    parsed, t_parse = timed(lambda: events_from_csv(csv))
    reg = ConsentRegistry(url)
    result, t_insert = timed(lambda: reg.append_events(parsed, source=str(csv)))
    again, t_again = timed(lambda: reg.append_events(parsed, source=str(csv)))
    snap, t_read = timed(lambda: reg.snapshot(RUN))
    reg.dispose()
    mb = csv.stat().st_size / 1e6
    rows.append((f"import/{backend}", f"parse + validate CSV: {len(parsed):,} rows, {mb:.1f} MB", f"{t_parse:.2f}"))
    rows.append((f"import/{backend}", f"insert {result.new:,} new events (one transaction)", f"{t_insert:.2f}"))
    rows.append((f"import/{backend}", f"re-import same file: {again.new} new", f"{t_again:.2f}"))
    rows.append((f"import/{backend}", f"snapshot read: {len(snap.events):,} events", f"{t_read:.2f}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=1_000_000)
    ap.add_argument("--import-rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs (1M release steps)")
    ap.add_argument("--release-only", action="store_true", help="only the 1M release steps")
    ap.add_argument("--gate-only", action="store_true", help="only the in-memory gate (synthetic events)")
    args = ap.parse_args()
    rows: list[tuple[str, str, str]] = []
    if args.gate_only:
        bench_gate(args.subjects, rows)
        print_rows(rows)
        return
    with tempfile.TemporaryDirectory() as d:
        bench_release_steps(args.repeat, Path(d), rows)
    if args.release_only:
        print_rows(rows)
        return
    bench_gate(args.subjects, rows)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_import(args.import_rows, f"sqlite:///{tmp / 'consent.db'}", "sqlite", tmp, rows)
        pg = os.environ.get("DEIDFLOW_TEST_PG_URL")
        if pg:
            import uuid

            import sqlalchemy as sa

            schema = "bench_" + uuid.uuid4().hex[:8]
            admin = sa.create_engine(pg)
            with admin.begin() as c:
                c.execute(sa.text(f"CREATE SCHEMA {schema}"))
            try:
                sep = "&" if "?" in pg else "?"
                bench_import(args.import_rows, f"{pg}{sep}options=-csearch_path%3D{schema}", "postgresql", tmp, rows)
            finally:
                with admin.begin() as c:
                    c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
                admin.dispose()
    print_rows(rows)


def print_rows(rows: list[tuple[str, str, str]]) -> None:
    table = Table(title="deidflow consent benchmarks", title_justify="left")
    table.add_column("area")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for r in rows:
        table.add_row(*r)
    Console().print(table)


if __name__ == "__main__":
    main()
