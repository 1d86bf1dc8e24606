"""Stage 1, prepare: read and check every input, derive columns, and apply the consent gate.
This is where a record is dropped for consent: `_gate_staged` writes each partition's
consented subject rows and, beside every other table, the verdict per row, which transform
applies. The run's engine (`engines`) reads the inputs: the in-process engine reads each
table whole while the consent snapshot is read on another core (`read_whole`); the
partitioned engine splits the snapshot by partition (`read_partitioned`) and gates each
partition as a step of its own (`gate_partition`). `finish_prepare` adds up the counts and
writes the private exclusion log.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from deidflow.consent.registry import registry_url_for
from deidflow.errors import InputError
from deidflow.io import InputTable, check_links, check_subject_ids, read_table, read_work, write_work
from deidflow.policy import LoadedPolicy, load_policy
from deidflow.manifest.record import InputFile
from deidflow.release.state import (
    PINNED, ConsentOutcome, GateOutcome, PrepareCounts, RunState, now_utc, pinned_policy,
)
from deidflow.release.engines import engine_named
from deidflow.release.workdir import WorkDir


def prepare(policy_path: str | Path, *, as_of: datetime | None = None, flow_run_id: str | None = None,
            engine: str = "memory", dry_run: bool = False) -> Path:
    """Load the policy, read the consent snapshot as of the run's start, read and check every
    input with the run's engine (which may also derive columns and apply the gate). Consent is
    judged now; a past `as_of` only for a dry run (`deidflow consent check`,
    `consent.moment.run_as_of`).

    Returns the run's private work directory."""
    from deidflow.consent.registry import ConsentRegistry

    engine_ = engine_named(engine)
    loaded = load_policy(policy_path)
    PINNED[(str(loaded.path), loaded.sha256)] = loaded
    started = now_utc()
    from deidflow.consent.moment import run_as_of

    as_of = run_as_of(as_of, started, dry_run=dry_run)  # now; a past date only for a dry run
    from deidflow.keys import KeyRing
    from deidflow.manifest.signing import check_signing_files

    check_signing_files(loaded)  # both signing files, now: not at publish after the whole run
    KeyRing.from_policy(loaded)  # a bad or open key file fails now, not after the gate and search
    partitions = engine_.partitions(loaded)
    wd = WorkDir.new(loaded)
    work = wd.root
    try:
        state = RunState(
            policy_path=str(loaded.path), policy_text=loaded.text, policy_sha256=loaded.sha256,
            run_id=work.name, started_at=started.isoformat(),
            as_of=as_of.isoformat(), flow_run_id=flow_run_id, engine=engine_.name,
            pid=os.getpid(), host=socket.gethostname(), partitions=partitions,
        )
        state.save(work)
        engine_.read_inputs(wd, state, loaded, ConsentRegistry(registry_url(loaded)))
        return work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def read_whole(work: WorkDir, state: RunState, loaded: LoadedPolicy, registry: Any) -> None:
    """The in-process engine's prepare: every input table read whole as one partition, and
    its consent gate applied.

    The snapshot is mostly SQLite (or PostgreSQL) work that releases the GIL and keeps one
    core busy. This thread reads, checks, derives and stages every input table on the other
    meanwhile: the gate itself needs only the subject table and each row's subject, so what
    is left once the snapshot is in is a lookup per row."""
    from concurrent.futures import ThreadPoolExecutor

    as_of = datetime.fromisoformat(state.as_of)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="consent-snapshot") as pool:
        pending = pool.submit(registry.snapshot, as_of)
        inputs = _InputTables(loaded)
        staged = _stage_tables(work, 0, inputs, state, loaded, pending)
        if not pending.done():
            # This thread would only wait for the snapshot now: import the validation
            # gate (Great Expectations, a slow import) meanwhile, instead of at the validate
            # stage. `preload` says why that cannot race (and does nothing where it could).
            from deidflow.validation import preload

            preload(quiet="consent-snapshot")
        snapshot = pending.result()
    state.consent = ConsentOutcome(**snapshot.summary())
    state.inputs = [InputFile(**d) for d in inputs.digests()]
    state.save(work.root)
    done = _gate_staged(work, 0, state, loaded, staged, snapshot.events)
    del snapshot, staged
    finish_prepare(work.root, [done])


def read_partitioned(work: WorkDir, state: RunState, loaded: LoadedPolicy, registry: Any) -> None:
    """The partitioned engine's prepare: the consent snapshot split by subject into the
    partitions' work files, and the input parts' digests; the gate is a step of its own
    (`gate_partition`). This process never holds the snapshot: it streams into the
    partitions' work files (it names subjects: private work dir) while this thread hashes
    the input parts."""
    from concurrent.futures import ThreadPoolExecutor

    as_of = datetime.fromisoformat(state.as_of)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="consent-snapshot") as pool:
        pending = pool.submit(write_events, work, registry, as_of, state.partitions)
        state.inputs = [InputFile(**d) for d in _parts_digests(loaded)]
        state.consent = ConsentOutcome(**pending.result())
    # What the snapshot's summary was computed from (large at 10M events) is no longer
    # needed: hand it back for the worker processes. (The in-process engine keeps freed
    # memory for its own next tables instead: on a VM with free-page reporting —
    # Firecracker, most clouds — memory given back and touched again is paid for again
    # in page faults; the README gives the figure.)
    _give_back_memory()
    state.save(work.root)


def _parts_digests(loaded: LoadedPolicy) -> list[dict[str, Any]]:
    """Path, SHA-256 over the parts and rows of each partitioned input table, in the policy's order."""
    from deidflow.partitions import parts_digest

    out = []
    for name, spec in loaded.policy.tables.items():
        digest, rows = parts_digest(loaded, name)
        out.append({"table": name, "path": spec.path, "sha256": digest, "rows": rows})
    return out


def _give_back_memory() -> None:
    """Return freed memory to the operating system now (Arrow's pool and the C heap keep it
    otherwise), so that the processes a Dask release starts next have it."""
    pa.default_memory_pool().release_unused()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def write_events(work: WorkDir, registry: Any, as_of: datetime, parts: int) -> dict[str, Any]:
    """The consent snapshot as of `as_of`, split by subject as the input partitions are, so
    each partition's gate reads its own subjects' events and not the whole registry's; returns
    the snapshot's summary. The events stream from the registry a chunk at a time, each
    chunk's rows appended to their partition's Arrow IPC file: no process holds the whole
    registry (10M events held whole, then split, were the run's memory peak; README)."""
    from deidflow.consent.registry import SNAPSHOT_SCHEMA
    from deidflow.partitions import subject_partition

    work.events(0).parent.mkdir(parents=True, exist_ok=True)
    writers: list[Any] = []

    def route(chunk: pa.Table) -> None:
        which = subject_partition(chunk.column("subject_id"), parts)
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(parts + 1))
        chunk = chunk.take(order)
        for i in range(parts):
            if bounds[i + 1] > bounds[i]:
                writers[i].write_table(chunk.slice(bounds[i], bounds[i + 1] - bounds[i]))

    try:
        for i in range(parts):
            writers.append(pa.ipc.new_file(str(work.events(i)), SNAPSHOT_SCHEMA))
        return registry.stream_snapshot(as_of, route)
    finally:
        for w in writers:
            w.close()


class _InputTables(Mapping[str, pd.DataFrame]):
    """The memory engine's input tables, each read and checked when it is asked for and not
    kept: the subject table first, then one table at a time, so a release needs memory for the
    subject table and one other table, not for the whole extract. `rows[name]` keeps, for each
    row of a table read, its subject's row in the subject table (found by the link check)."""

    def __init__(self, loaded: LoadedPolicy) -> None:
        self.loaded = loaded
        self.policy = loaded.policy
        self._subject: InputTable | None = None
        self._ids: Any = None
        self._inputs: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> pd.DataFrame:
        policy = self.policy
        if name == policy.subject_table and self._subject is not None:
            return self._subject.frame
        if name != policy.subject_table and self._subject is None:
            self[policy.subject_table]  # link keys are checked against the subject ids
        table = read_table(name, policy.tables[name], self.loaded)
        if name == policy.subject_table:
            self._ids = check_subject_ids(table, policy.tables[name].subject_column)
            self._subject = table
        else:
            self.rows[name] = check_links(table, policy.tables[name].subject_column, self._ids, self._subject)
        self._inputs[name] = {"table": name, "path": policy.tables[name].path,
                              "sha256": table.sha256, "rows": table.rows}
        return table.frame

    def __iter__(self):
        return iter(self.policy.tables)

    def __len__(self) -> int:
        return len(self.policy.tables)

    def digests(self) -> list[dict[str, Any]]:
        """Path, SHA-256 and rows of each table read, in the policy's order."""
        return [self._inputs[name] for name in self.policy.tables if name in self._inputs]


def gate_partition(work: Path, index: int) -> GateOutcome:
    """Derive columns and apply the consent gate to one partition of a partitioned extract
    (the Dask engine's map task); returns counts only."""
    from deidflow.partitions import read_partition

    state = RunState.load(work)
    loaded = pinned_policy(state)
    wd = WorkDir.of(work, state)
    staged = _stage_tables(wd, index, read_partition(loaded, index), state, loaded)
    events = read_work(wd.events(index))
    return _gate_staged(wd, index, state, loaded, staged, events)


@dataclass
class _Staged:
    """A partition's inputs once staged: the subject table (derived, in memory) and, for each
    other table (written whole to the work dir), each row's subject's row in the subject table."""

    subject: pd.DataFrame
    birth_dates: Any
    rows: dict[str, np.ndarray]
    records_in: dict[str, int]


def _stage_tables(work: WorkDir, index: int, frames: Mapping[str, pd.DataFrame], state: RunState,
                  loaded: LoadedPolicy, pending: Any = None) -> _Staged:
    """Derive every table's columns; write each table but the subject table whole to the work
    directory, keeping only where each row's subject is. `frames` is indexed once per table
    (the memory engine's mapping reads a table on access). `pending` (the consent snapshot
    being read) is checked between tables, so a registry that cannot be read stops the run
    at once."""
    from deidflow.consent.subject_ids import canonical_column
    from deidflow.idcolumns import subject_rows
    from deidflow.techniques.derive import derive_columns

    policy = loaded.policy
    as_of = datetime.fromisoformat(state.as_of).date()
    subj_spec = policy.tables[policy.subject_table]
    subject = derive_columns(frames[policy.subject_table], subj_spec, as_of=as_of)
    # Subject ids in their canonical form (`consent.subject_ids`), as the registry holds them.
    subject[subj_spec.subject_column] = canonical_column(subject[subj_spec.subject_column])
    bcol = policy.consent.birth_date_column
    birth = _birth_dates(subject, bcol, loaded) if bcol in subject else pd.NaT  # a bad date stops us now
    if bcol is None:  # the policy states the data holds no minors (policy.Consent): adults
        birth = pd.Timestamp("1900-01-01")
    # Each row's subject row, as the link check found it (`_InputTables.rows`,
    # `partitions.PartitionFrames.rows`); looked up here only for a mapping without them.
    known = getattr(frames, "rows", {})
    rows: dict[str, np.ndarray] = {}
    records_in = {policy.subject_table: int(len(subject))}
    with _WorkWriter() as writer:
        for name in _staging_order(policy):
            tspec = policy.tables[name]
            if pending is not None and pending.done() and pending.exception() is not None:
                pending.result()  # raises the registry's error now
            frame = derive_columns(frames[name], tspec, as_of=as_of)
            frame[tspec.subject_column] = canonical_column(frame[tspec.subject_column])
            rows[name] = known.pop(name) if name in known else subject_rows(
                frame[tspec.subject_column], subject[subj_spec.subject_column])
            records_in[name] = int(len(frame))
            # Written whole, with the gate's verdict per row beside it once the snapshot is in:
            # transform drops the excluded and the suppressed subjects' rows in one filter. The
            # work directory is private (0700) and removed when the run ends; no technique ever
            # sees those rows.
            writer.write(frame, work.gated(name, index))
            del frame
    return _Staged(subject=subject, birth_dates=birth, rows=rows,
                   records_in={name: records_in[name] for name in policy.tables})


def _staging_order(policy: Any) -> list[str]:
    """The tables `_stage_tables` stages (all but the subject table): those with free text
    first, so that the largest work file (a notes table's) is written while the other tables
    are read; otherwise in the policy's order."""
    from deidflow.policy import Role

    others = [n for n in policy.tables if n != policy.subject_table]

    def has_text(name: str) -> bool:
        return any(c.role is Role.free_text for c in policy.tables[name].columns.values())
    return [n for n in others if has_text(n)] + [n for n in others if not has_text(n)]


class _WorkWriter:
    """Writes a staged table's work file on a thread of its own while this thread reads the
    next table (Arrow's IPC writer releases the GIL; the write is a copy into the page cache,
    ~1/4 of a notes table's prepare). One write at a time: the next waits for the one before,
    so at most one table more is held. Leaving the block waits for the last write, and raises
    a write's error, also when the block itself raised (then its own error is raised)."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import pyarrow.pandas_compat  # noqa: F401  (loaded here, not by the writer's thread)

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="work-writer")
        self._pending: Any = None

    def write(self, frame: pd.DataFrame, path: Path) -> None:
        self.wait()
        self._pending = self._pool.submit(write_work, frame, path)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> "_WorkWriter":
        return self

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        try:
            if kind is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True)


def _gate_staged(work: WorkDir, index: int, state: RunState, loaded: LoadedPolicy, staged: _Staged,
                 events: pd.DataFrame) -> GateOutcome:
    """The consent gate over a staged partition: the subject table's consented rows are
    written, and beside each other table the verdict for each of its rows."""
    from deidflow.consent.gate import consent_gate, resident_ids_for
    from deidflow.idcolumns import subject_mask
    from deidflow.consent.registry import ConsentSnapshot

    policy = loaded.policy
    as_of = datetime.fromisoformat(state.as_of)
    subj_spec = policy.tables[policy.subject_table]
    subject = staged.subject
    subjects = pd.DataFrame({"subject_id": subject[subj_spec.subject_column].astype(str)})
    subjects["birth_date"] = staged.birth_dates
    subjects = resident_ids_for(subjects, subject, policy.consent)
    # The partition's subjects' events, and every withdrawal (one matching no subject is
    # reported as an orphan withdrawal, not dropped unseen).
    events = events.loc[subject_mask(events["subject_id"], subjects["subject_id"])
                        | (events["event"] == "withdrawn").to_numpy()]
    snapshot = ConsentSnapshot.from_events(events, as_of, state.outcome("consent").registry)
    gate = consent_gate(
        snapshot, subjects,
        purpose=policy.release.purpose,
        recipient_id=policy.release.recipient.id,
        categories=_categories(loaded),
        abroad=policy.release.recipient.abroad,
        as_of=as_of,
        age_rule=policy.consent.birth_date_column is not None,
    )
    allowed = gate.admits(subjects["subject_id"])  # per subject row
    write_work(subject, work.gated(policy.subject_table, index), allowed)
    # Each row's subject by position in the gated subject part (-1: not consented)
    gated_row = np.where(allowed, np.cumsum(allowed) - 1, -1).astype(np.int32)
    for name, rows in staged.rows.items():
        np.save(work.consented(name, index), allowed[rows])
        np.save(work.subject_positions(name, index), gated_row[rows])
    excluded = work.excluded(index)
    excluded.parent.mkdir(parents=True, exist_ok=True)
    gate.private_log().to_parquet(excluded)  # with the orphan withdrawals
    return GateOutcome(subjects=int(len(subjects)), granted=int(len(gate.allowed)),
                       excluded_by_reason={k: int(v) for k, v in gate.counts.items()},
                       records_in=staged.records_in,
                       orphan_withdrawals=int(len(gate.orphan_withdrawals)),
                       no_minors_attested=bool(gate.no_minors_attested))


def _birth_dates(subject: pd.DataFrame, column: str, loaded: LoadedPolicy) -> pd.Series:
    """Birth dates for the consent gate's age test. A value that is present but not a date is
    refused: the gate would otherwise read it as "maybe a minor" and silently exclude an adult."""
    raw = subject[column].astype("string").str.strip()
    parsed = _dates_once_each(raw)
    bad = (parsed.isna() & raw.notna() & (raw != "")).to_numpy()
    if bad.any():
        policy = loaded.policy
        raise InputError(
            f"{int(bad.sum())} value(s) of the birth-date column are not dates",
            file=str(loaded.resolve(policy.tables[policy.subject_table].path)), column=column,
            row=int(np.argmax(bad)) + 2,
            fix="correct them to real dates (YYYY-MM-DD); the consent gate needs each subject's "
            "age (PIPL art. 31)",
        )
    return parsed


def _dates_once_each(raw: pd.Series) -> pd.Series:
    """`pd.to_datetime(raw, errors="coerce", format="ISO8601")`, parsing each distinct value
    once (a million subjects have tens of thousands of birth dates)."""
    codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    if not len(uniques):
        return pd.to_datetime(raw, errors="coerce", format="ISO8601")
    distinct = pd.to_datetime(pd.Series(uniques), errors="coerce", format="ISO8601")
    values = distinct.to_numpy()[np.maximum(codes, 0)]
    values[codes < 0] = np.datetime64("NaT")
    return pd.Series(values, index=raw.index, dtype=distinct.dtype, name=raw.name)


def finish_prepare(work: Path, parts: list[GateOutcome]) -> PrepareCounts:
    """Add up the partitions' counts; write the private exclusion log (0600)."""
    state = RunState.load(work)
    reasons: dict[str, int] = {}
    records_in: dict[str, int] = {}
    for p in parts:
        for k, v in p.excluded_by_reason.items():
            reasons[k] = reasons.get(k, 0) + int(v)
        for k, v in p.records_in.items():
            records_in[k] = records_in.get(k, 0) + int(v)
    subjects = sum(p.subjects for p in parts)
    granted = sum(p.granted for p in parts)
    state.consent = state.outcome("consent").model_copy(update={
        "granted": granted, "excluded_by_reason": reasons,
        "orphan_withdrawals": sum(p.orphan_withdrawals for p in parts),
        "no_minors_attested": any(p.no_minors_attested for p in parts)})
    state.counts = PrepareCounts(subjects_in=subjects, excluded_for_consent=subjects - granted,
                                 records_in=records_in)
    wd = WorkDir.of(work, state)
    excluded = pd.concat([pd.read_parquet(p) for p in wd.excluded_parts()], ignore_index=True)
    log = wd.exclusion_log
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        excluded.to_csv(fh, index=False)
    state.save(work)
    return state.counts


# The one reading of consent.registry (relative SQLite paths from the policy file), shared
# with `deidflow consent`; kept under this name for the modules that import it from here.
registry_url = registry_url_for


def _categories(loaded: LoadedPolicy) -> list[str]:
    return list(loaded.policy.release.data_categories)
