"""One release, as a sequence of stages that pass a work directory, not data.

    prepare  → read & check inputs, derive columns, consent gate       (work/gated/*)
    search   → choose generalisation levels and suppressed subjects    (work/search.json)
    transform→ apply every column's technique, aggregates              (staging dir)
    validate → Great Expectations gate on the staged output            (staging/validation)
    publish  → review page, signed manifest, atomic rename             (release dir)

Each stage is a plain function of the work directory, so the Prefect flow (flows/release.py)
wraps each in a task that takes and returns paths and small summaries — never records — and
the same stages run without Prefect (`run_release`). The work directory lives in the policy's
private directory (hospital side) and is removed when the run ends, however it ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from deidflow.consent.registry import registry_url_for
from deidflow.errors import DeidflowError, GateFailed, InputError
from deidflow.io import (
    InputTable, as_arrow, check_links, check_subject_ids, read_released_csv, read_table, read_work,
    write_frame, write_work,
)
from deidflow.io import publish as rename_into_place
from deidflow.policy import LoadedPolicy, Role, load_policy

STATE = "state.json"


@dataclass
class RunState:
    """What later stages need to know about earlier ones; JSON in the work directory.

    It holds counts, digests and paths — no identities and no key material."""

    policy_path: str
    policy_text: str
    policy_sha256: str
    run_id: str
    started_at: str
    as_of: str
    flow_run_id: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    consent: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    columns: list[dict[str, Any]] = field(default_factory=list)
    aggregates: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    release_id: str | None = None
    release_dir: str | None = None
    engine: str = "memory"
    partitions: int = 1
    pid: int = 0
    host: str = ""

    def save(self, work: Path) -> None:
        tmp = work / (STATE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), ensure_ascii=False, indent=1, default=str))
        tmp.replace(work / STATE)

    @classmethod
    def load(cls, work: Path) -> "RunState":
        return cls(**json.loads((work / STATE).read_text()))


_PINNED: dict[tuple[str, str], LoadedPolicy] = {}


def _loaded(state: RunState) -> LoadedPolicy:
    """The policy this run pinned at prepare (its text and SHA-256 in the run state), parsed
    once per process: later stages never read the file again, so an edit during the run
    cannot change what a stage does (`check_contract` refuses to publish after one)."""
    key = (state.policy_path, state.policy_sha256)
    loaded = _PINNED.get(key)
    if loaded is None:
        from deidflow.policy import parse_policy

        if hashlib.sha256(state.policy_text.encode("utf-8")).hexdigest() != state.policy_sha256:
            raise GateFailed("the run state's policy text does not match its pinned SHA-256",
                             key="policy", fix="rerun the release")
        loaded = LoadedPolicy(policy=parse_policy(state.policy_text, source=state.policy_path),
                              path=Path(state.policy_path), text=state.policy_text,
                              sha256=state.policy_sha256)
        _PINNED[key] = loaded
    return loaded


def check_contract(state: RunState) -> None:
    """Stop before publishing if the policy file no longer holds the text this run pinned: the
    release would be signed under a contract its own file no longer states."""
    from deidflow.errors import PolicyError

    try:
        now = hashlib.sha256(Path(state.policy_path).read_bytes()).hexdigest()
    except OSError:
        now = "(unreadable)"
    if now != state.policy_sha256:
        raise PolicyError(
            "the policy file changed while the release ran; nothing was published",
            file=state.policy_path,
            fix=f"rerun the release with the policy as it now stands (this run pinned sha256 "
            f"{state.policy_sha256[:12]}…, the file now has {now[:12]}…)",
        )


def _private_dir(loaded: LoadedPolicy) -> Path:
    return loaded.resolve(loaded.policy.output.private_directory)


def _output_root(loaded: LoadedPolicy) -> Path:
    return loaded.resolve(loaded.policy.output.directory)


def _staging(loaded: LoadedPolicy, state: RunState) -> Path:
    """This run's staging directory: named by the release id *and* the run, so two runs into
    one output directory never share (or delete) one."""
    return _output_root(loaded) / f".staging-{state.release_id}.{state.run_id}"


def _prepare_staging(loaded: LoadedPolicy, state: RunState) -> Path:
    """A fresh staging directory for this run. Staging left by runs that are over (their work
    directory reaped or removed) is removed; a live run's is never touched."""
    root = _output_root(loaded)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output directory: {exc.strerror}", file=str(root),
                         fix="choose a writable output.directory in the policy") from None
    if not os.access(root, os.W_OK):
        raise InputError("the output directory is not writable", file=str(root),
                         fix="fix its permissions or choose another output.directory")
    work_root = _private_dir(loaded) / "work"
    with output_lock(loaded):
        for stale in root.glob(".staging-*"):
            run = stale.name.rsplit(".", 1)[-1]
            if "." not in stale.name[len(".staging-"):] or not (work_root / run).is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        stage = _staging(loaded, state)
        stage.mkdir()
    return stage


class output_lock:
    """An exclusive lock on one output directory, held while a run creates its staging or
    publishes: the check that a release id is free and the rename into it are one step for
    every run writing there. The lock file (flock) is in the private directory, named by the
    output directory's resolved path, so nothing but releases appears in the output."""

    def __init__(self, loaded: LoadedPolicy) -> None:
        root = str(_output_root(loaded).resolve())
        locks = _private_dir(loaded) / "locks"
        locks.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = locks / (hashlib.sha256(root.encode()).hexdigest()[:16] + ".lock")

    def __enter__(self) -> "output_lock":
        import fcntl

        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


NA = "<NA>"  # how a missing quasi-identifier value is encoded (risk/encoding.py)


def _part(i: int) -> str:
    return f"part-{i:05d}.parquet"


def _gated_path(work: Path, table: str, i: int) -> Path:
    return work / "gated" / table / _arrow_part(i)


def _consented_path(work: Path, table: str, i: int) -> Path:
    """Per row of a non-subject table's gated part: whether its subject passed the gate."""
    return work / "gated" / table / f"part-{i:05d}.consented.npy"


def _gated_part(work: Path, table: str, i: int, columns: list[str] | None = None) -> pd.DataFrame:
    return read_work(_gated_path(work, table, i), columns)


def _gated(work: Path, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The consented rows of a table, all partitions in order."""
    parts = sorted((work / "gated" / table).glob("part-*.arrow"))
    return pd.concat([read_work(p, columns) for p in parts], ignore_index=True)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _dump(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(obj), ensure_ascii=False, sort_keys=True))


# --- stage 1: prepare ---------------------------------------------------------------------------
#
# The memory engine reads each table whole and gates it as one partition. The Dask engine reads
# a co-partitioned Parquet extract (partitions.py) and the flow gates each partition in
# parallel with `gate_partition`, then `finish_prepare` adds up the counts.


def prepare(policy_path: str | Path, *, as_of: datetime | None = None, flow_run_id: str | None = None,
            engine: str = "memory") -> Path:
    """Load the policy, read the consent snapshot as of the run's start, read and check every
    input; with the memory engine also derive columns and apply the consent gate.

    Returns the run's private work directory."""
    from deidflow.consent.registry import ConsentRegistry

    if engine not in ("memory", "dask"):
        raise DeidflowError(f"unknown engine '{engine}'", key="engine", fix="use --engine memory or --engine dask")
    loaded = load_policy(policy_path)
    _PINNED[(str(loaded.path), loaded.sha256)] = loaded
    started = _now()
    as_of = as_of or started
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=timezone.utc)
    from deidflow.keys import KeyRing

    KeyRing.from_policy(loaded)  # a bad or open key file fails now, not after the gate and search
    if engine == "dask":
        from deidflow.partitions import partition_count

        n_parts = partition_count(loaded)
    from concurrent.futures import ThreadPoolExecutor

    _reap_stale_work(_private_dir(loaded) / "work")
    work = _private_dir(loaded) / "work" / uuid.uuid4().hex[:16]
    (work / "gated").mkdir(parents=True)
    work.chmod(0o700)
    try:
        state = RunState(
            policy_path=str(loaded.path), policy_text=loaded.text, policy_sha256=loaded.sha256,
            run_id=work.name, started_at=started.isoformat(),
            as_of=as_of.isoformat(), flow_run_id=flow_run_id, engine=engine,
            pid=os.getpid(), host=socket.gethostname(),
            partitions=1 if engine == "memory" else n_parts,
        )
        state.save(work)
        # The snapshot is mostly SQLite (or PostgreSQL) work that releases the GIL and keeps
        # one core busy. The memory engine reads, checks, derives and stages every input table
        # on the other meanwhile: the gate itself needs only the subject table and each row's
        # subject, so what is left once the snapshot is in is a lookup per row.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="consent-snapshot") as pool:
            registry = ConsentRegistry(_registry_url(loaded))
            if engine == "memory":
                pending = pool.submit(registry.snapshot, as_of)
                inputs = _InputTables(loaded)
                staged = _stage_tables(work, 0, inputs, state, loaded, pending)
                if not pending.done():
                    # This thread would only wait for the snapshot now: import the validation
                    # gate (~2.5 s of Great Expectations) meanwhile, instead of at the validate
                    # stage. `preload` says why that cannot race (and does nothing where it could).
                    from deidflow.validation import preload

                    preload(quiet="consent-snapshot")
                snapshot = pending.result()
            else:
                # The Dask engine never holds the snapshot: it streams into the partitions'
                # work files (it names subjects: private work dir) while this thread hashes
                # the input parts.
                pending = pool.submit(_write_events, work, registry, as_of, n_parts)
                state.inputs = _parts_digests(loaded)
                state.consent = pending.result()
        if engine == "memory":
            state.consent = snapshot.summary()
            state.inputs = inputs.digests()
            state.save(work)
            done = _gate_staged(work, 0, state, loaded, staged, snapshot.events)
            del snapshot, staged
            finish_prepare(work, [done])
        else:
            # What the snapshot's summary was computed from (~1 GB at 10M events) is no longer
            # needed: hand it back for the worker processes. (The memory engine keeps freed
            # memory for its own next tables instead: on a VM with free-page reporting —
            # Firecracker, most clouds — memory given back and touched again costs ~2.7 s per
            # GB in page faults.)
            _give_back_memory()
            state.save(work)
        return work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


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


def _write_events(work: Path, registry: Any, as_of: datetime, parts: int) -> dict[str, Any]:
    """The consent snapshot as of `as_of`, split by subject as the input partitions are, so
    each partition's gate reads its own subjects' events and not the whole registry's; returns
    the snapshot's summary. The events stream from the registry a chunk at a time, each
    chunk's rows appended to their partition's Arrow IPC file: no process holds the whole
    registry (10M events held whole, then split, peaked at ~6 GB)."""
    from deidflow.consent.registry import SNAPSHOT_SCHEMA
    from deidflow.partitions import subject_partition

    out = work / "consent"
    out.mkdir(parents=True, exist_ok=True)
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
            writers.append(pa.ipc.new_file(str(out / _arrow_part(i)), SNAPSHOT_SCHEMA))
        return registry.stream_snapshot(as_of, route)
    finally:
        for w in writers:
            w.close()


def _arrow_part(i: int) -> str:
    """File name of partition i of a run's private Arrow work files."""
    return f"part-{i:05d}.arrow"


def _reap_stale_work(root: Path) -> None:
    """Remove the work directories of runs that were killed (their process on this host is
    gone): they hold consented records and must not outlive their run. A directory without a
    readable state older than an hour is a run killed before it saved one."""
    if not root.is_dir():
        return
    import time

    host = socket.gethostname()
    for d in root.iterdir():
        try:
            st = json.loads((d / STATE).read_text())
            if st.get("host") != host or not st.get("pid"):
                continue
            try:
                os.kill(int(st["pid"]), 0)
                continue  # still running
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        except (OSError, ValueError):
            if time.time() - d.stat().st_mtime < 3600:
                continue
        shutil.rmtree(d, ignore_errors=True)


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


def gate_partition(work: Path, index: int) -> dict[str, Any]:
    """Derive columns and apply the consent gate to one partition of a partitioned extract
    (the Dask engine's map task); returns counts only."""
    from deidflow.partitions import read_partition

    state = RunState.load(work)
    loaded = _loaded(state)
    staged = _stage_tables(work, index, read_partition(loaded, index), state, loaded)
    events = read_work(work / "consent" / _arrow_part(index))
    return _gate_staged(work, index, state, loaded, staged, events)


@dataclass
class _Staged:
    """A partition's inputs once staged: the subject table (derived, in memory) and, for each
    other table (written whole to the work dir), each row's subject's row in the subject table."""

    subject: pd.DataFrame
    birth_dates: Any
    rows: dict[str, np.ndarray]
    records_in: dict[str, int]


def _stage_tables(work: Path, index: int, frames: Mapping[str, pd.DataFrame], state: RunState,
                  loaded: LoadedPolicy, pending: Any = None) -> _Staged:
    """Derive every table's columns; write each table but the subject table whole to the work
    directory, keeping only where each row's subject is. `frames` is indexed once per table
    (the memory engine's mapping reads a table on access). `pending` (the consent snapshot
    being read) is checked between tables, so a registry that cannot be read stops the run
    at once."""
    from deidflow.consent.gate import subject_rows
    from deidflow.techniques.derive import derive_columns

    policy = loaded.policy
    as_of = datetime.fromisoformat(state.as_of).date()
    subj_spec = policy.tables[policy.subject_table]
    subject = derive_columns(frames[policy.subject_table], subj_spec, as_of=as_of)
    bcol = policy.consent.birth_date_column
    birth = _birth_dates(subject, bcol, loaded) if bcol in subject else pd.NaT  # a bad date stops us now
    # Each row's subject row, as the link check found it (`_InputTables.rows`,
    # `partitions.PartitionFrames.rows`); looked up here only for a mapping without them.
    known = getattr(frames, "rows", {})
    rows: dict[str, np.ndarray] = {}
    records_in = {policy.subject_table: int(len(subject))}
    for name, tspec in policy.tables.items():
        if name == policy.subject_table:
            continue
        if pending is not None and pending.done() and pending.exception() is not None:
            pending.result()  # raises the registry's error now
        frame = derive_columns(frames[name], tspec, as_of=as_of)
        rows[name] = known.pop(name) if name in known else subject_rows(
            frame[tspec.subject_column], subject[subj_spec.subject_column])
        records_in[name] = int(len(frame))
        # Written whole, with the gate's verdict per row beside it once the snapshot is in:
        # transform drops the excluded and the suppressed subjects' rows in one filter. The
        # work directory is private (0700) and removed when the run ends; no technique ever
        # sees those rows.
        write_work(frame, _gated_path(work, name, index))
        del frame
    return _Staged(subject=subject, birth_dates=birth, rows=rows,
                   records_in={name: records_in[name] for name in policy.tables})


def _gate_staged(work: Path, index: int, state: RunState, loaded: LoadedPolicy, staged: _Staged,
                 events: pd.DataFrame) -> dict[str, Any]:
    """The consent gate over a staged partition: the subject table's consented rows are
    written, and beside each other table the verdict for each of its rows."""
    from deidflow.consent.gate import consent_gate, subject_mask
    from deidflow.consent.registry import ConsentSnapshot

    policy = loaded.policy
    as_of = datetime.fromisoformat(state.as_of)
    subj_spec = policy.tables[policy.subject_table]
    subject = staged.subject
    subjects = pd.DataFrame({"subject_id": subject[subj_spec.subject_column].astype(str)})
    subjects["birth_date"] = staged.birth_dates
    events = events.loc[subject_mask(events["subject_id"], subjects["subject_id"])]
    snapshot = ConsentSnapshot.from_events(events, as_of, state.consent.get("registry", "registry"))
    gate = consent_gate(
        snapshot, subjects,
        purpose=policy.release.purpose,
        recipient_id=policy.release.recipient.id,
        categories=_categories(loaded),
        abroad=policy.release.recipient.abroad,
        as_of=as_of,
    )
    allowed = subject_mask(subjects["subject_id"], gate.allowed)  # per subject row
    write_work(subject, _gated_path(work, policy.subject_table, index), allowed)
    for name, rows in staged.rows.items():
        np.save(_consented_path(work, name, index), allowed[rows])
    excluded = work / "excluded" / _part(index)
    excluded.parent.mkdir(parents=True, exist_ok=True)
    gate.excluded.to_parquet(excluded)
    return {"subjects": int(len(subjects)), "granted": int(len(gate.allowed)),
            "excluded_by_reason": {k: int(v) for k, v in gate.counts.items()},
            "records_in": staged.records_in}


def _birth_dates(subject: pd.DataFrame, column: str, loaded: LoadedPolicy) -> pd.Series:
    """Birth dates for the consent gate's age test. A value that is present but not a date is
    refused: the gate would otherwise read it as "maybe a minor" and silently exclude an adult."""
    raw = subject[column].astype("string").str.strip()
    parsed = pd.to_datetime(raw, errors="coerce", format="ISO8601")
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


def finish_prepare(work: Path, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up the partitions' counts; write the private exclusion log (0600)."""
    state = RunState.load(work)
    reasons: dict[str, int] = {}
    records_in: dict[str, int] = {}
    for p in parts:
        for k, v in p["excluded_by_reason"].items():
            reasons[k] = reasons.get(k, 0) + int(v)
        for k, v in p["records_in"].items():
            records_in[k] = records_in.get(k, 0) + int(v)
    subjects = sum(p["subjects"] for p in parts)
    granted = sum(p["granted"] for p in parts)
    state.consent = dict(state.consent) | {"granted": granted, "excluded_by_reason": reasons}
    state.counts = {"subjects_in": subjects, "excluded_for_consent": subjects - granted,
                    "records_in": records_in}
    excluded = pd.concat([pd.read_parquet(p) for p in sorted((work / "excluded").glob("part-*.parquet"))],
                         ignore_index=True)
    log = work / EXCLUSION_LOG
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        excluded.to_csv(fh, index=False)
    state.save(work)
    return {"subjects": subjects, "granted": granted}


EXCLUSION_LOG = "consent-exclusions.csv"


# The one reading of consent.registry (relative SQLite paths from the policy file), shared
# with `deidflow consent`; kept under this name for the modules that import it from here.
_registry_url = registry_url_for


def _categories(loaded: LoadedPolicy) -> list[str]:
    return list(loaded.policy.release.data_categories)


# --- stage 2: search ----------------------------------------------------------------------------
#
# Only the frequency table crosses partitions: each partition counts its distinct
# (quasi-identifier, sensitive value) combinations; the merged table, sorted, is what the
# search sees, so both engines search the very same table and choose the same levels.

COUNT = "__count"


def _search_columns(loaded: LoadedPolicy) -> tuple[list[str], str | None]:
    policy = loaded.policy
    spec = policy.tables[policy.subject_table]
    qis = [c for c in policy.quasi_identifiers()
           if spec.columns[c].technique == "generalise" and spec.columns[c].hierarchy is not None]
    scol = None
    if policy.limits.l is not None or policy.limits.t is not None:
        scol = policy.sensitive_columns()[0]
    return qis, scol


def frequency_partition(work: Path, index: int) -> str:
    """Distinct combinations of one partition's subjects with their counts (a distributed
    group-by's map side). Returns the path of the partial table."""
    state = RunState.load(work)
    loaded = _loaded(state)
    qis, scol = _search_columns(loaded)
    cols = qis + ([scol] if scol else [])
    subject = _gated_part(work, loaded.policy.subject_table, index, cols or None)
    frame = subject[cols].astype("string").fillna(NA) if cols else pd.DataFrame(index=subject.index)
    freq = (frame.groupby(cols, sort=True).size().rename(COUNT).reset_index() if cols and len(frame)
            else pd.DataFrame({**{c: pd.Series(dtype="string") for c in cols}, COUNT: pd.Series(dtype="int64")}))
    out = work / "freq" / _part(index)
    out.parent.mkdir(parents=True, exist_ok=True)
    freq.to_parquet(out)
    return str(out)


def _merged_frequencies(work: Path, state: RunState, cols: list[str]) -> pd.DataFrame:
    for i in range(state.partitions):
        if not (work / "freq" / _part(i)).exists():
            frequency_partition(work, i)
    parts = [pd.read_parquet(work / "freq" / _part(i)) for i in range(state.partitions)]
    freq = pd.concat(parts, ignore_index=True)
    if not cols:
        return pd.DataFrame({COUNT: [int(freq[COUNT].sum())]})
    if len(parts) == 1:  # one partition's table is already grouped and sorted
        return freq
    return freq.groupby(cols, sort=True)[COUNT].sum().reset_index()


def search(work: Path) -> dict[str, Any]:
    """Choose the quasi-identifiers' generalisation levels and the combinations to suppress."""
    from dataclasses import replace

    from deidflow.risk.search import search as lattice_search
    from deidflow.techniques.hierarchies import encode_qi

    state = RunState.load(work)
    loaded = _loaded(state)
    policy = loaded.policy
    spec = policy.tables[policy.subject_table]
    if state.consent.get("granted", 0) == 0:
        raise GateFailed(
            "no subject has a valid consent for this purpose and recipient; nothing to release",
            key="release",
            fix="check the consent registry (deidflow consent status) and the policy's purpose, "
            "recipient and data categories",
        )
    qi_cols, scol = _search_columns(loaded)
    freq = _merged_frequencies(work, state, qi_cols + ([scol] if scol else []))
    counts = freq[COUNT].to_numpy(dtype=np.int64)
    qis = []
    for col in qi_cols:
        enc = encode_qi(col, freq[col].mask(freq[col] == NA), spec.columns[col].hierarchy, loaded.base_dir)
        qis.append(replace(enc, codes=np.repeat(enc.codes, counts)))
    sensitive = None
    if scol:
        sensitive = np.repeat(pd.factorize(freq[scol], sort=True)[0], counts)
    bounds = {}
    for q in qis:
        h = spec.columns[q.name].hierarchy
        top = q.n_levels - 1
        bounds[q.name] = (h.min_level, top if h.max_level is None else min(top, h.max_level))
    result = lattice_search(
        qis,
        k=policy.limits.k,
        suppression_budget=policy.limits.suppression_budget,
        l=policy.limits.l,
        l_variant=policy.limits.l_variant,
        c=policy.limits.c,
        sensitive=sensitive,
        t=policy.limits.t,
        max_class_risk=policy.max_class_risk,
        max_overall_risk=policy.limits.max_overall_risk,
        release_model=policy.release.model.value,
        level_bounds=bounds,
    )
    # Back from rows to combinations: a combination is suppressed when the search suppressed
    # any of its rows (all rows of a combination share a class, so the search suppresses
    # whole combinations; "any" keeps it fail-closed if one ever did not).
    mask = np.asarray(result.suppressed, dtype=bool)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.array([], dtype=np.int64)
    sup_rows = np.add.reduceat(mask.astype(np.int64), starts) if len(counts) else np.array([], dtype=np.int64)
    sup_combo = sup_rows > 0
    freq.loc[sup_combo, qi_cols + ([scol] if scol else [])].to_parquet(work / "suppressed-combos.parquet")
    state.search = {
        "levels": {k: int(v) for k, v in result.levels.items()},
        "suppressed_subjects": int(counts[sup_combo].sum()),
        "combinations": int(len(freq)),
        "before": _plain(result.before.as_dict()),
        "after": _plain(result.after.as_dict()),
        "utility": _plain(getattr(result, "utility", {})),
        "nodes_evaluated": int(getattr(result, "nodes_evaluated", 0)),
    }
    state.save(work)
    return {"levels": state.search["levels"], "suppressed": state.search["suppressed_subjects"],
            "k_after": state.search["after"].get("k")}


def _plain(obj: Any) -> Any:
    """JSON-able copy of numbers/dicts/lists (numpy scalars to Python)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_plain(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "as_dict"):
        return _plain(obj.as_dict())
    return obj


# --- stage 3: transform -------------------------------------------------------------------------


def begin_transform(work: Path) -> str:
    """Fix the content-addressed release id and create its staging directory."""
    from deidflow.keys import KeyRing

    state = RunState.load(work)
    loaded = _loaded(state)
    state.release_id = _release_id(loaded, state, KeyRing.from_policy(loaded))
    _prepare_staging(loaded, state)
    state.save(work)
    return state.release_id


def _suppressed_subjects(subject: pd.DataFrame, work: Path, loaded: LoadedPolicy) -> pd.Series:
    """Boolean per subject row: its combination was suppressed by the search."""
    combos = pd.read_parquet(work / "suppressed-combos.parquet")
    if combos.empty:
        return pd.Series(False, index=subject.index)
    cols = list(combos.columns)
    left = subject[cols].astype("string").fillna(NA)
    marked = left.merge(combos.astype("string").assign(__hit=True), on=cols, how="left")
    return pd.Series(marked["__hit"].fillna(False).to_numpy(dtype=bool), index=subject.index)


def transform_partition(work: Path, index: int) -> dict[str, Any]:
    """Apply every column's technique to one partition's consented, non-suppressed rows and
    write its release files. Returns counts and the columns' descriptions (no data)."""
    from deidflow.keys import KeyRing
    from deidflow.techniques import ApplyContext, registry

    state = RunState.load(work)
    loaded = _loaded(state)
    policy = loaded.policy
    keyring = KeyRing.from_policy(loaded)
    stage = _staging(loaded, state)
    subj_spec = policy.tables[policy.subject_table]
    sid = subj_spec.subject_column
    subject_all = _gated_part(work, policy.subject_table, index)
    suppressed_mask = _suppressed_subjects(subject_all, work, loaded)
    suppressed = pd.Index(subject_all.loc[suppressed_mask.to_numpy(), sid].astype("string"))
    subject_raw = subject_all.loc[~suppressed_mask.to_numpy()]
    del subject_all
    # Each subject's known identifiers, for the scrubber: built only if a column is scrubbed.
    scrubbed = any(c.technique == "scrub" for t in policy.tables.values() for c in t.columns.values())
    known = known_identifiers(subject_raw, loaded) if scrubbed else None

    # The memory engine applies a table's columns on a few threads: the techniques' work is in
    # numpy, Arrow and cryptography calls that release the GIL (two CMAC columns on two threads
    # take half the time of one after the other). Each column gets its own memo, so no two
    # threads share mutable state. The Dask engine already runs one partition per core.
    from concurrent.futures import ThreadPoolExecutor

    threads = 1 if state.engine == "dask" else min(4, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="transform")

    def apply(name: str, frame: pd.DataFrame, col: str, cspec: Any) -> tuple[dict[str, Any], Any]:
        tspec = policy.tables[name]
        technique = registry.get(cspec.technique)
        ctx = ApplyContext(
            table=name, column=col, subject_ids=frame[tspec.subject_column],
            keyring=keyring, level=state.search.get("levels", {}).get(col),
            frame=frame, known_identifiers=known, base_dir=loaded.base_dir, memo={},
        )
        result = technique.apply(frame[col], cspec, ctx)
        entry = {"table": name, "column": col, "role": cspec.role.value,
                 **_plain(technique.describe(cspec, ctx))}
        if ctx.level is not None:
            entry["level"] = int(ctx.level)
        entry["counts"] = dict(ctx.counts)
        return entry, result

    try:
        return _transform_tables(work, index, state, policy, stage, subject_raw, suppressed, pool, apply)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _transform_tables(work: Path, index: int, state: RunState, policy: Any, stage: Path,
                      subject_raw: pd.DataFrame, suppressed: pd.Index, pool: Any,
                      apply: Callable[..., tuple[dict[str, Any], Any]]) -> dict[str, Any]:
    from deidflow.consent.gate import subject_mask

    from concurrent.futures import ThreadPoolExecutor

    sid = policy.tables[policy.subject_table].subject_column
    fmt = policy.output.format
    columns: list[dict[str, Any]] = []
    rows: dict[str, int] = {}
    released_subject = None
    # A table's files are written on their own threads while the next table is transformed
    # (the writers release the GIL): the stage is a pipeline, not read → apply → write in turn.
    writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="transform-writer")
    written: list[Any] = []
    try:
        for name, tspec in policy.tables.items():
            # The link column first, for the verdicts; then the table's kept rows only (an
            # Arrow filter per column over the memory-mapped work file, on the pool).
            link = _gated_part(work, name, index, [tspec.subject_column])[tspec.subject_column]
            keep = ~subject_mask(link, suppressed)
            del link
            consented = _consented_path(work, name, index)
            if consented.is_file():
                keep &= np.load(consented)
            frame = read_work(_gated_path(work, name, index), keep=keep, pool=pool)
            out = {}
            futures = [(col, pool.submit(apply, name, frame, col, cspec)) for col, cspec in tspec.columns.items()]
            for col, future in futures:  # in the policy's column order, whatever finished first
                entry, result = future.result()
                columns.append(entry)
                if result is not None:
                    out[col] = result
            released = pd.DataFrame(out, index=frame.index)
            rows[name] = int(len(frame))
            if name == policy.subject_table:
                released_subject = released
            if state.engine == "dask":
                written.append(writer.submit(write_frame, released, stage / "data" / name / _part(index), "parquet"))
            else:
                written.append(writer.submit(write_frame, released, stage / "data" / f"{name}.{fmt}", fmt))
                if name != policy.subject_table:
                    # The very Arrow table the writer serialises, for the validation gate and
                    # the aggregates: reading it back costs a tenth of parsing the CSV again.
                    written.append(writer.submit(write_work, released, _released_copy(work, name)))
            for done in [f for f in written if f.done()]:
                done.result()  # a failed write stops the stage now
            del frame, released, out
        for done in written:
            done.result()
    finally:
        writer.shutdown(wait=True, cancel_futures=True)

    # Which pseudonym each released subject got: the hospital's private record, used by the
    # consent-coverage expectation and the withdrawal re-check. Never published.
    mapping = pd.DataFrame({"subject_id": subject_raw[sid].astype("string").array})
    if released_subject is not None and sid in released_subject:
        mapping["pseudonym"] = released_subject[sid].astype("string").array
    out = work / "pseudonyms" / _part(index)
    out.parent.mkdir(parents=True, exist_ok=True)
    mapping.to_parquet(out)
    result = {"columns": columns, "rows": rows, "suppressed": int(len(suppressed)),
              "released": int(len(subject_raw))}
    _dump(work / "transform" / f"part-{index:05d}.json", result)
    return {"rows": rows, "released": result["released"]}


def _released_copy(work: Path, name: str) -> Path:
    return work / "released" / f"{name}.arrow"


def _released(work: Path, stage: Path, engine: str, fmt: str, name: str,
              columns: list[str] | None = None) -> pd.DataFrame:
    """A staged released table for the later stages: the memory engine's Arrow copy of what
    it wrote (the subject table is read from its file), or the Dask engine's parts."""
    copy = _released_copy(work, name)
    if engine != "dask" and copy.is_file():
        return read_work(copy, columns)
    return released_table(stage, name, fmt, engine, columns)


def released_table(stage: Path, name: str, fmt: str, engine: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A released table read back (all partitions in order for the Dask engine)."""
    if engine == "dask":
        parts = sorted((stage / "data" / name).glob("part-*.parquet"))
        return pd.concat([pd.read_parquet(p, columns=columns) for p in parts], ignore_index=True)
    path = stage / "data" / f"{name}.{fmt}"
    if fmt == "parquet":
        return pd.read_parquet(path, columns=columns)
    return read_released_csv(path, columns)


def finish_transform(work: Path) -> str:
    """Add up the partitions' counts, write the aggregates. Returns the staging directory."""
    from deidflow.techniques.aggregate import small_cell_table

    state = RunState.load(work)
    loaded = _loaded(state)
    policy = loaded.policy
    stage = _staging(loaded, state)
    parts = [json.loads(p.read_text()) for p in sorted((work / "transform").glob("part-*.json"))]
    if len(parts) != state.partitions:
        raise GateFailed(f"{state.partitions - len(parts)} partition(s) were not transformed",
                         key="engine", fix="rerun the release")
    columns = []
    for j, entry in enumerate(parts[0]["columns"]):
        merged = dict(entry)
        total: dict[str, int] = {}
        for p in parts:
            for k, v in p["columns"][j].get("counts", {}).items():
                total[k] = total.get(k, 0) + int(v)
        merged.pop("counts", None)
        if total:
            merged["counts"] = total
        columns.append(merged)
    rows: dict[str, int] = {}
    for p in parts:
        for k, v in p["rows"].items():
            rows[k] = rows.get(k, 0) + int(v)
    state.aggregates = []
    for agg in policy.aggregates:
        frame = _released(work, stage, state.engine, policy.output.format, agg.table, list(agg.by))
        table, summary = small_cell_table(frame, list(agg.by), policy.limits.small_cell)
        write_frame(table, stage / "aggregates" / f"{agg.name}.csv", "csv")
        state.aggregates.append({"name": agg.name, "table": agg.table, "by": list(agg.by), **_plain(summary)})
    state.columns = columns
    state.counts["suppressed_subjects"] = sum(p["suppressed"] for p in parts)
    state.counts["released_subjects"] = sum(p["released"] for p in parts)
    state.counts["released_rows"] = rows
    state.save(work)
    return str(stage)


def transform(work: Path) -> Path:
    """The whole transform stage in this process (each partition in turn)."""
    begin_transform(work)
    state = RunState.load(work)
    for i in range(state.partitions):
        transform_partition(work, i)
    return Path(finish_transform(work))


def known_identifiers(subject: pd.DataFrame, loaded: LoadedPolicy) -> pd.DataFrame:
    """Long table (subject_id, kind, value) of every direct identifier known for each subject:
    the scrubber removes them from that subject's notes, the validator from everything."""
    policy = loaded.policy
    spec = policy.tables[policy.subject_table]
    sid = spec.subject_column
    parts = []
    for col, cspec in spec.columns.items():
        if cspec.role is Role.direct_identifier and col in subject:
            part = pd.DataFrame({"subject_id": subject[sid].astype("string"),
                                 "kind": col, "value": subject[col].astype("string")})
            parts.append(part.dropna(subset=["value"]))
    if not parts:
        return pd.DataFrame({"subject_id": [], "kind": [], "value": []}, dtype="string")
    return pd.concat(parts, ignore_index=True)


def _known_values(work: Path, loaded: LoadedPolicy) -> Any:
    """Every direct-identifier value of the consented subjects, for the validation gate, as a
    source it reads column by column from the memory-mapped gated subject table (repeats and
    nulls left in: the gate handles them). The gate keeps their 64-bit hashes, not the strings,
    and reads the strings again only to confirm a hash hit: at 10M subjects they are ~60M
    strings, which held in memory with their index took ~5 GB of the flow process."""
    from deidflow.validation.sets import Chunks

    spec = loaded.policy.tables[loaded.policy.subject_table]
    parts = sorted((work / "gated" / loaded.policy.subject_table).glob("part-*.arrow"))
    present = set(pa.ipc.open_file(parts[0]).schema.names) if parts else set()
    direct = [c for c, cs in spec.columns.items() if cs.role is Role.direct_identifier and c in present]

    def read():
        for part in parts:
            table = pa.feather.read_table(part, columns=direct, memory_map=True)
            for col in direct:
                values = table.column(col)
                if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                    # not text in the work file: its text as pandas gives it (as the gate
                    # would have read it), e.g. a mobile column read as integers
                    values = as_arrow(read_work(part, [col])[col])
                yield values
            del table  # unmaps the part before the next one is read

    return Chunks(read)


def _release_id(loaded: LoadedPolicy, state: RunState, keyring: Any) -> str:
    """Content-addressed: the same policy, inputs, consent snapshot and key give the same id,
    so a rerun after success finds its release instead of publishing a second copy."""
    h = hashlib.sha256()
    h.update(loaded.sha256.encode())
    for inp in state.inputs:
        h.update(f"{inp['table']}:{inp['sha256']}".encode())
    h.update(str(state.consent.get("events_sha256", "")).encode())
    # The day the consent was judged on: the gate's verdicts (expiry, age) depend on it.
    h.update(datetime.fromisoformat(state.as_of).date().isoformat().encode())
    h.update(keyring.fingerprint().encode())
    agreement = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in loaded.policy.release.agreement_id)
    return f"{agreement}-{h.hexdigest()[:12]}"


class _ReleasedTables(Mapping[str, Any]):
    """The staged release's tables, each read from its file when asked for and not kept, so
    the validation gate holds one released table at a time (with the Dask engine, one
    partition of a table at a time, except the subject table)."""

    def __init__(self, work: Path, stage: Path, state: RunState, policy: Any) -> None:
        self.work, self.stage, self.policy = work, stage, policy
        self.engine = state.engine
        self.fmt = policy.output.format

    def _exists(self, name: str) -> bool:
        if self.engine == "dask":
            return any((self.stage / "data" / name).glob("part-*.parquet"))
        return (self.stage / "data" / f"{name}.{self.fmt}").is_file()

    def __getitem__(self, name: str) -> Any:
        if not self._exists(name):
            raise KeyError(name)
        if self.engine == "dask" and name != self.policy.subject_table:
            # Row-local checks: one partition at a time, so a 10M-patient release's largest
            # table is never in memory whole. The subject table's risk checks need it whole.
            from functools import partial

            from deidflow.validation.gate import Parts

            parts = sorted((self.stage / "data" / name).glob("part-*.parquet"))
            return Parts(tuple(partial(pd.read_parquet, p) for p in parts))
        # The subject table, on which k, l and risk are proved, is read from the file that
        # ships; the others from the Arrow table that the CSV writer serialised.
        return _released(self.work, self.stage, self.engine, self.fmt, name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._exists(name)

    def __iter__(self):
        """The policy's tables that are in the release, then anything else found there (which
        the gate refuses as undeclared)."""
        found = []
        data = self.stage / "data"
        if data.is_dir():
            found = sorted(p.name if p.is_dir() else p.name.split(".")[0] for p in data.iterdir())
        declared = [name for name in self.policy.tables if name in found]
        return iter(declared + [n for n in dict.fromkeys(found) if n not in self.policy.tables])

    def __len__(self) -> int:
        return sum(1 for _ in self)


# --- stage 4: validate --------------------------------------------------------------------------


def validate(work: Path) -> dict[str, Any]:
    """Run the Great Expectations suite on the staged release. Any failure stops the release."""
    from deidflow.validation.gate import validate_release

    state = RunState.load(work)
    loaded = _loaded(state)
    policy = loaded.policy
    stage = _staging(loaded, state)
    tables = _ReleasedTables(work, stage, state, policy)
    known = _known_values(work, loaded)
    mapping = _pseudonyms(work)
    consented = mapping["pseudonym"] if "pseudonym" in mapping else pd.Series([], dtype="string")
    report = validate_release(
        policy, tables,
        input_identifiers=known,  # the gate handles repeats and nulls itself
        consented_pseudonyms=consented.astype("string"),
        out_dir=stage / "validation",
    )
    state.validation = _plain(report.as_dict())
    state.save(work)
    if not report.success:
        failed = [e for e in state.validation.get("expectations", []) if not e.get("success")]
        lines = "; ".join(e.get("explanation", e.get("type", "?")) for e in failed) or "see the validation report"
        raise GateFailed(
            f"the validation gate failed, nothing was published: {lines}",
            key="limits",
            fix="relax the policy only if the data-sharing agreement allows it; otherwise "
            "generalise or suppress more (see the validation report for the failing check)",
        )
    return {"success": True, "expectations": len(state.validation.get("expectations", []))}


# --- stage 5: publish ---------------------------------------------------------------------------


def publish(work: Path) -> "ReleaseSummary":
    """The publish stage, the same for every executor: refuse if the policy file changed
    during the run; report the existing release if this id was published before (verified
    against its signed manifest first); otherwise publish this run's. Under the output
    directory's lock, so that no two runs publish one id."""
    state = RunState.load(work)
    check_contract(state)
    loaded = _loaded(state)
    root = _output_root(loaded)
    with output_lock(loaded):
        final = root / state.release_id
        if final.exists():
            return _existing_release(work, state, loaded, final)
        record = publish_release(work)
    return ReleaseSummary.from_record(record, final)


def publish_release(work: Path):
    """Review page, signed manifest, atomic rename, and the hospital-side records.

    The registry inserts the release's subjects on its own thread (the database holds no GIL)
    while this one counts classes, digests and signs; the insert is committed only after the
    rename, so a release is never recorded unless it was published. A registry that cannot take
    the record stops the release before the rename; a run killed between the rename and the
    commit leaves the release unrecorded, and the next run records it (`_existing_release`)."""
    from deidflow.manifest.review import render_review
    from deidflow.manifest.seal import write_manifest
    from deidflow.manifest.signing import ensure_signing_key
    from deidflow.manifest.statement import FileDigests

    state = RunState.load(work)
    loaded = _loaded(state)
    policy = loaded.policy
    root = _output_root(loaded)
    stage = _staging(loaded, state)
    final = root / state.release_id
    record = build_record(loaded, state, finished_at=_now())
    signing_key = ensure_signing_key(loaded.resolve(policy.keys.signing_key_file))
    with _begin_record_release(work, loaded, state, record.finished_at) as recording:
        sizes_after = _class_sizes(released_table(stage, policy.subject_table, policy.output.format,
                                                  state.engine), loaded)
        sid = policy.tables[policy.subject_table].subject_column
        sizes_before = _class_sizes(_gated(work, policy.subject_table,
                                           list(dict.fromkeys([sid, *policy.quasi_identifiers()]))), loaded)
        digests = FileDigests()  # the review's file table and the manifest read each file once
        render_review(stage, record, signing_key_path=signing_key, class_sizes=sizes_after.tolist(),
                      class_sizes_before=sizes_before.tolist(), k=policy.limits.k, digests=digests)
        write_manifest(stage, record, signing_key, digests=digests)
        recording.inserted()
        rename_into_place(stage, final)

        private = _private_dir(loaded)
        exclusions = private / "exclusions"
        exclusions.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(work / EXCLUSION_LOG, exclusions / f"{state.release_id}.csv")
        (exclusions / f"{state.release_id}.csv").chmod(0o600)
        recording.commit()
    state.release_dir = str(final)
    state.save(work)
    return record


def _record_release(work: Path, loaded: LoadedPolicy, state: RunState, when: datetime | None = None) -> None:
    from deidflow.consent.registry import ConsentRegistry

    mapping = _pseudonyms(work)
    if "pseudonym" in mapping and state.release_id:
        ConsentRegistry(_registry_url(loaded)).record_release(
            state.release_id, mapping["subject_id"], mapping["pseudonym"], when or _now())


def _begin_record_release(work: Path, loaded: LoadedPolicy, state: RunState, when: datetime) -> Any:
    """`_record_release` started on the registry's thread, uncommitted (see publish_release)."""
    from deidflow.consent.registry import ConsentRegistry

    mapping = _pseudonyms(work)
    if "pseudonym" not in mapping or not state.release_id:
        return _NothingToRecord()
    return ConsentRegistry(_registry_url(loaded)).begin_release_record(
        state.release_id, mapping["subject_id"], mapping["pseudonym"], when)


class _NothingToRecord:
    """No pseudonym was released (the subject column is not in the release): nothing to trace."""

    def __enter__(self) -> "_NothingToRecord":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def inserted(self) -> None:
        return None

    def commit(self) -> None:
        return None


def _pseudonyms(work: Path) -> pd.DataFrame:
    parts = sorted((work / "pseudonyms").glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def _class_sizes(frame: pd.DataFrame, loaded: LoadedPolicy) -> np.ndarray:
    """Size (in subjects) of each equivalence class of the subject table over the QIs, counted
    as the validation gate counts them (one row per subject)."""
    from deidflow.validation.expectations import class_sizes

    policy = loaded.policy
    sid = policy.tables[policy.subject_table].subject_column
    qis = [c for c in policy.quasi_identifiers() if c in frame.columns]
    if sid not in frame.columns:  # the subject table has one row per subject anyway
        frame = frame.assign(**{sid: np.arange(len(frame))})
    return class_sizes(frame, sid, qis)


def build_record(loaded: LoadedPolicy, state: RunState, *, finished_at: datetime):
    """The manifest's ReleaseRecord from the run state: counts, digests, parameters — no ids."""
    from importlib import metadata
    import platform

    from deidflow.manifest.record import (
        ColumnTreatment, ConsentSnapshot, Counts, InputFile, PlanInfo, RecipientInfo,
        ReleaseRecord, RiskSummary, Software, add_years,
    )

    policy = loaded.policy
    rel = policy.release
    started = datetime.fromisoformat(state.started_at)
    c = state.consent
    versions = {}
    for pkg in ("pandas", "numpy", "pyarrow", "great-expectations", "prefect", "cryptography",
                "pydantic", "sqlalchemy", "faker"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:  # pragma: no cover - optional
            continue
    columns = []
    for entry in state.columns:
        params = {k: v for k, v in entry.items()
                  if k not in ("table", "column", "role", "technique")}
        flat = params.pop("params", {}) or {}
        columns.append(ColumnTreatment(table=entry["table"], column=entry["column"],
                                       role=entry["role"], technique=entry.get("technique", "?"),
                                       params=_plain({**flat, **params})))
    after = dict(state.search.get("after", {}))
    after.setdefault("k_required", policy.limits.k)
    return ReleaseRecord(
        release_id=state.release_id,
        created_at=finished_at,
        started_at=started,
        finished_at=finished_at,
        policy_text=loaded.text,
        policy_sha256=loaded.sha256,
        agreement_id=rel.agreement_id,
        pipia_id=rel.pipia_id,
        recipient=RecipientInfo(id=rel.recipient.id, name=rel.recipient.name,
                                country=rel.recipient.country),
        purpose=rel.purpose,
        release_model=rel.model.value,
        data_categories=list(rel.data_categories),
        retention_until=add_years(finished_at, max(rel.retention_years, 3)),
        plan=PlanInfo(objective=policy.plan.objective, attacker_model=policy.plan.attacker_model,
                      approver=policy.plan.approver, executor=policy.plan.executor,
                      version=str(policy.plan.version)),
        inputs=[InputFile(table=i["table"], path=i["path"], sha256=i["sha256"], rows=i["rows"])
                for i in state.inputs],
        consent=ConsentSnapshot(
            registry=str(c.get("registry", policy.consent.registry)),
            as_of=datetime.fromisoformat(str(c.get("as_of", state.as_of))),
            events=int(c.get("events", 0)),
            granted=int(c.get("granted", 0)),
            excluded_by_reason={k: int(v) for k, v in c.get("excluded_by_reason", {}).items()},
            consent_ids_digest=str(c.get("events_sha256", "")),
        ),
        columns=columns,
        risk=RiskSummary(before=_plain(state.search.get("before", {})), after=_plain(after),
                         levels=dict(state.search.get("levels", {})),
                         suppressed_records=int(state.counts.get("suppressed_subjects", 0)),
                         utility=_plain(state.search.get("utility", {}))),
        aggregates=_plain(state.aggregates),
        validation=_plain(state.validation),
        counts=Counts(records_in=int(state.counts.get("subjects_in", 0)),
                      excluded_for_consent=int(state.counts.get("excluded_for_consent", 0)),
                      suppressed=int(state.counts.get("suppressed_subjects", 0)),
                      released=dict(state.counts.get("released_rows", {})),
                      released_subjects=int(state.counts.get("released_subjects", 0)),
                      rows_in=dict(state.counts.get("records_in", {}))),
        software=Software(deidflow=_deidflow_version(), python=platform.python_version(),
                          packages=versions),
        flow_run_id=state.flow_run_id,
    )


def _deidflow_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("deidflow")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+source"


# --- what a run reports -------------------------------------------------------------------------


class ReleaseSummary(BaseModel):
    """What every executor reports, new release or existing: figures read from the release's
    record (the one the manifest signs), never from the run that happened to find it."""

    model_config = ConfigDict(frozen=True)

    release_id: str
    release_dir: Path | None
    subjects_in: int
    excluded_for_consent: int
    suppressed: int
    released: int
    k: int | None
    levels: dict[str, int]
    risk_after: dict[str, Any]
    validation_ok: bool
    already_released: bool = False

    @classmethod
    def from_record(cls, record: Any, release_dir: Path, *, already_released: bool = False) -> "ReleaseSummary":
        counts = record.counts
        return cls(release_id=record.release_id, release_dir=release_dir,
                   subjects_in=counts.records_in, excluded_for_consent=counts.excluded_for_consent,
                   suppressed=counts.suppressed, released=counts.released_subjects,
                   k=record.risk.after.get("k"), levels=dict(sorted(record.risk.levels.items())),
                   risk_after=record.risk.after, validation_ok=record.validation_passed,
                   already_released=already_released)

    @property
    def manifest(self) -> Path | None:
        return None if self.release_dir is None else self.release_dir / "manifest.json"

    @property
    def review(self) -> Path | None:
        return None if self.release_dir is None else self.release_dir / "review.html"


def _existing_release(work: Path, state: RunState, loaded: LoadedPolicy, final: Path) -> ReleaseSummary:
    """A rerun with unchanged policy, inputs, consent (and its day) and key: the release is
    already there. It is verified against its signed manifest before it is reported (a
    deleted file or an added row is refused, never reported as released), its own record's
    figures are reported, and it is recorded in the registry only with the subjects it holds."""
    from deidflow.manifest.verify import verify_release

    report = verify_release(final)
    if not report.ok or report.record is None or report.record.release_id != state.release_id:
        raise GateFailed(
            "a release with this id exists but does not match its signed manifest:\n  "
            + "\n  ".join(report.messages() or ["its record names another release"]),
            file=str(final),
            fix="move the damaged release directory aside (keep it for the audit), then rerun",
        )
    # A run killed between the rename and the registry write left the release unrecorded:
    # record it now (idempotent), or a later withdrawal could not be traced to it; but only the
    # subject set the release holds: the same count as its signed record, or nothing.
    mapping = _pseudonyms(work)
    if len(mapping) != report.record.counts.released_subjects:
        raise GateFailed(
            f"this run released {len(mapping):,} subjects under id {state.release_id}, the "
            f"existing release holds {report.record.counts.released_subjects:,}",
            file=str(final), fix="report this: a release id must name one subject set",
        )
    _record_release(work, loaded, state)
    return ReleaseSummary.from_record(report.record, final, already_released=True)


def summarise(work: Path) -> ReleaseSummary:
    """The summary of a published run, from the release's signed record."""
    from deidflow.manifest.verify import read_record_unverified

    state = RunState.load(work)
    final = Path(state.release_dir)
    return ReleaseSummary.from_record(read_record_unverified(final), final)


def discard(work: Path) -> None:
    """End of a run, however it ended: no staging directory and no private copies remain."""
    try:
        state = RunState.load(work)
        if state.release_id:
            shutil.rmtree(_staging(_loaded(state), state), ignore_errors=True)
    except (OSError, ValueError, TypeError, DeidflowError):
        pass
    shutil.rmtree(work, ignore_errors=True)


# --- the plan: the stage sequence, once, as data ----------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a release after prepare. `each` runs once per partition (mapped on Dask by
    the flow), between `before` and `then` (which gets the partitions' results); `run` is a
    whole-run step. `gate`: a step that decides (never retried by the flow)."""

    name: str
    run: Callable[[Path], Any] | None = None
    before: Callable[[Path], Any] | None = None
    each: Callable[[Path, int], Any] | None = None
    then: Callable[[Path, list], Any] | None = None
    gate: bool = True
    engines: tuple[str, ...] = ("memory", "dask")


def _search_after_frequencies(work: Path, _parts: list) -> dict[str, Any]:
    return search(work)


def _finish_transform(work: Path, _parts: list) -> str:
    return finish_transform(work)


PLAN: tuple[Step, ...] = (
    # The memory engine gates its one partition inside prepare, while the snapshot is read.
    Step("consent gate", each=gate_partition, then=finish_prepare, engines=("dask",)),
    Step("search", each=frequency_partition, then=_search_after_frequencies),
    Step("transform", before=begin_transform, each=transform_partition, then=_finish_transform, gate=False),
    Step("validate", run=validate),
    Step("publish", run=publish, gate=False),
)


def plan_for(engine: str) -> tuple[Step, ...]:
    return tuple(step for step in PLAN if engine in step.engines)


def partitions(work: Path) -> int:
    return RunState.load(work).partitions


def run_release(
    policy_path: str | Path,
    *,
    as_of: datetime | None = None,
    on_stage: Callable[[str], None] | None = None,
    engine: str = "memory",
) -> ReleaseSummary:
    """The in-process executor of the plan (partitions one after another, no Prefect). Fails
    closed: on any error the staging and work directories are removed and nothing appears in
    the output directory. Returns the publish step's summary (new release or existing)."""
    if on_stage:
        on_stage("prepare")
    work = prepare(policy_path, as_of=as_of, engine=engine)
    try:
        summary = None
        for step in plan_for(engine):
            if on_stage:
                on_stage(step.name)
            fault_injection(step.name)
            summary = run_step(step, work, lambda fn, parts: [fn(work, i) for i in parts])
        return summary
    finally:
        discard(work)


def run_step(step: Step, work: Path, each: Callable[[Callable[[Path, int], Any], list[int]], list]) -> Any:
    """One step of the plan; `each(fn, parts)` runs a per-partition function over the parts
    (in turn in-process; mapped on the cluster by the flow)."""
    if step.run is not None:
        return step.run(work)
    if step.before is not None:
        step.before(work)
    results = each(step.each, list(range(partitions(work))))
    return step.then(work, results) if step.then is not None else results


def fault_injection(stage: str) -> None:
    """Reliability tests only: DEIDFLOW_TEST_KILL_AT=<stage> kills this process (SIGKILL, no
    cleanup) just before <stage>, to show that a killed run leaves no release behind. Both
    executors call it before every step."""
    if os.environ.get("DEIDFLOW_TEST_KILL_AT") == stage:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

