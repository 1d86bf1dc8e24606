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

from deidflow.consent.registry import registry_url_for
from deidflow.errors import DeidflowError, GateFailed, InputError
from deidflow.io import (
    InputTable, as_arrow, check_links, check_subject_ids, prepare_staging, publish, read_released_csv,
    read_table, read_work, staging_dir, write_frame, write_work,
)
from deidflow.policy import LoadedPolicy, Role, load_policy, override_record

STATE = "state.json"


@dataclass
class RunState:
    """What later stages need to know about earlier ones; JSON in the work directory.

    It holds counts, digests and paths — no identities and no key material."""

    policy_path: str
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
    utility: dict[str, Any] = field(default_factory=dict)  # issue 21: utility evidence
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


def _loaded(state: RunState) -> LoadedPolicy:
    return load_policy(state.policy_path)


def _private_dir(loaded: LoadedPolicy) -> Path:
    return loaded.resolve(loaded.policy.output.private_directory)


def _output_root(loaded: LoadedPolicy) -> Path:
    return loaded.resolve(loaded.policy.output.directory)


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
            engine: str = "memory", dry_run: bool = False) -> Path:
    """Load the policy, read the consent snapshot as of the run's start, read and check every
    input; with the memory engine also derive columns and apply the consent gate.

    Returns the run's private work directory."""
    from deidflow.consent.registry import ConsentRegistry

    if engine not in ("memory", "dask"):
        raise DeidflowError(f"unknown engine '{engine}'", key="engine", fix="use --engine memory or --engine dask")
    loaded = load_policy(policy_path)
    started = _now()
    from deidflow.consent.moment import run_as_of

    as_of = run_as_of(as_of, started, dry_run=dry_run)  # now; a past date only for a dry run
    from deidflow.keys import KeyRing

    from deidflow.manifest.signing import check_signing_files

    check_signing_files(loaded)  # both signing files, now: not at publish after the whole run
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
            policy_path=str(loaded.path), run_id=work.name, started_at=started.isoformat(),
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
    from deidflow.consent.subject_ids import canonical_column

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
    for name, tspec in policy.tables.items():
        if name == policy.subject_table:
            continue
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
    from deidflow.consent.gate import resident_ids_for

    subjects = resident_ids_for(subjects, subject, policy.consent)
    # The partition's subjects' events, and every withdrawal (one matching no subject is
    # reported as an orphan withdrawal, not dropped unseen).
    events = events.loc[subject_mask(events["subject_id"], subjects["subject_id"])
                        | (events["event"] == "withdrawn").to_numpy()]
    snapshot = ConsentSnapshot.from_events(events, as_of, state.consent.get("registry", "registry"))
    gate = consent_gate(
        snapshot, subjects,
        purpose=policy.release.purpose,
        recipient_id=policy.release.recipient.id,
        categories=_categories(loaded),
        abroad=policy.release.recipient.abroad,
        as_of=as_of,
        age_rule=policy.consent.birth_date_column is not None,
    )
    allowed = subject_mask(subjects["subject_id"], gate.allowed)  # per subject row
    write_work(subject, _gated_path(work, policy.subject_table, index), allowed)
    for name, rows in staged.rows.items():
        np.save(_consented_path(work, name, index), allowed[rows])
    excluded = work / "excluded" / _part(index)
    excluded.parent.mkdir(parents=True, exist_ok=True)
    gate.private_log().to_parquet(excluded)  # with the orphan withdrawals
    return {"subjects": int(len(subjects)), "granted": int(len(gate.allowed)),
            "excluded_by_reason": {k: int(v) for k, v in gate.counts.items()},
            "orphan_withdrawals": int(len(gate.orphan_withdrawals)),
            "no_minors_attested": gate.no_minors_attested,
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
    state.consent = dict(state.consent) | {"granted": granted, "excluded_by_reason": reasons,
                                           "orphan_withdrawals": sum(p.get("orphan_withdrawals", 0) for p in parts),
                                           "no_minors_attested": any(p.get("no_minors_attested") for p in parts)}
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


def _search_columns(loaded: LoadedPolicy) -> tuple[list[str], list[str]]:
    """The quasi-identifiers the search generalises and the sensitive columns it measures
    (every one the gate checks: `risk.limits`)."""
    from deidflow.risk.limits import RiskLimits

    policy = loaded.policy
    spec = policy.tables[policy.subject_table]
    qis = [c for c in policy.quasi_identifiers()
           if spec.columns[c].technique == "generalise" and spec.columns[c].hierarchy is not None]
    return qis, list(RiskLimits.from_policy(policy).measured_sensitive_columns())


def frequency_partition(work: Path, index: int) -> str:
    """Distinct combinations of one partition's subjects with their counts (a distributed
    group-by's map side). Returns the path of the partial table."""
    state = RunState.load(work)
    loaded = _loaded(state)
    qis, scols = _search_columns(loaded)
    cols = qis + scols
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
        from deidflow.consent.gate import reason_counts_text

        raise GateFailed(
            "no subject has a valid consent for this purpose and recipient; nothing to release "
            f"({reason_counts_text(state.consent.get('excluded_by_reason', {}))})",
            key="release",
            fix="check the consent registry (deidflow consent status) and the policy's purpose, "
            "recipient and data categories",
        )
    from deidflow.risk.record import child_quasi_identifiers

    if child_quasi_identifiers(policy):  # quasi-identifiers beyond the subject table
        from deidflow.whole_record import search_record

        return search_record(work, state, loaded)
    qi_cols, scols = _search_columns(loaded)
    freq = _merged_frequencies(work, state, qi_cols + scols)
    counts = freq[COUNT].to_numpy(dtype=np.int64)
    qis = []
    for col in qi_cols:
        enc = encode_qi(col, freq[col].mask(freq[col] == NA), spec.columns[col].hierarchy, loaded.base_dir)
        qis.append(replace(enc, codes=np.repeat(enc.codes, counts)))
    sensitives = {c: np.repeat(pd.factorize(freq[c], sort=True)[0], counts) for c in scols}
    bounds = {}
    for q in qis:
        h = spec.columns[q.name].hierarchy
        top = q.n_levels - 1
        bounds[q.name] = (h.min_level, top if h.max_level is None else min(top, h.max_level))
    from deidflow.risk.limits import RiskLimits

    loss = None  # the policy may ask the search to keep its utility target predictable
    if policy.utility is not None and policy.utility.search_loss == "classification":
        from deidflow.risk.classification import ClassificationLoss

        cols = qi_cols + scols
        loss = ClassificationLoss.for_frequencies(
            freq, cols, _gated(work, policy.subject_table, list(dict.fromkeys([*cols, policy.utility.target]))),
            policy.utility.target, count=COUNT, na=NA)
    result = lattice_search(qis, **RiskLimits.from_policy(policy).search_kwargs(),
                            sensitives=sensitives, level_bounds=bounds, loss=loss)
    # Back from rows to combinations: a combination is suppressed when the search suppressed
    # any of its rows (all rows of a combination share a class, so the search suppresses
    # whole combinations; "any" keeps it fail-closed if one ever did not).
    mask = np.asarray(result.suppressed, dtype=bool)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.array([], dtype=np.int64)
    sup_rows = np.add.reduceat(mask.astype(np.int64), starts) if len(counts) else np.array([], dtype=np.int64)
    sup_combo = sup_rows > 0
    freq.loc[sup_combo, qi_cols + scols].to_parquet(work / "suppressed-combos.parquet")
    state.search = {
        "levels": {k: int(v) for k, v in result.levels.items()},
        "suppressed_subjects": int(counts[sup_combo].sum()),
        "combinations": int(len(freq)),
        "before": _plain(result.before.as_dict()),
        "after": _plain(result.after.as_dict()),
        "utility": _plain(getattr(result, "utility", {})),
        "nodes_evaluated": int(getattr(result, "nodes_evaluated", 0)),
        "sensitive_after": _plain(result.sensitive_after),
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
    prepare_staging(_output_root(loaded), state.release_id)
    state.save(work)
    return state.release_id


def _suppressed_subjects(subject: pd.DataFrame, work: Path, loaded: LoadedPolicy) -> pd.Series:
    """Boolean per subject row: its combination was suppressed by the search."""
    if (work / "suppressed-subjects.parquet").is_file():  # the whole-record search's choice
        ids = pd.read_parquet(work / "suppressed-subjects.parquet")["subject_id"]
        sid = loaded.policy.tables[loaded.policy.subject_table].subject_column
        return pd.Series(subject[sid].astype("string").isin(ids).to_numpy(dtype=bool),
                         index=subject.index)
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
    stage = staging_dir(_output_root(loaded), state.release_id)
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
    if known is not None:  # every direct identifier of every table (attending doctors…)
        from deidflow.techniques.scrub import known_from_tables

        known = known_from_tables(known, policy, lambda t, cols, i: _gated_part(work, t, i, cols),
                                  index, state.partitions)

    # The memory engine applies a table's columns on a few threads: the techniques' work is in
    # numpy, Arrow and cryptography calls that release the GIL (two CMAC columns on two threads
    # take half the time of one after the other). Each column gets its own memo, so no two
    # threads share mutable state. The Dask engine already runs one partition per core.
    from concurrent.futures import ThreadPoolExecutor

    threads = 1 if state.engine == "dask" else min(4, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="transform")

    from deidflow.column_types import describe_kind, released_kinds

    kinds = released_kinds(work, loaded, lambda t: sorted((work / "gated" / t).glob("part-*.arrow")))

    def apply(name: str, frame: pd.DataFrame, col: str, cspec: Any) -> tuple[dict[str, Any], Any]:
        tspec = policy.tables[name]
        technique = registry.get(cspec.technique)
        ctx = ApplyContext(
            table=name, column=col, subject_ids=frame[tspec.subject_column],
            keyring=keyring, level=state.search.get("levels", {}).get(
                col if name == policy.subject_table else f"{name}.{col}"),
            frame=frame, known_identifiers=known, base_dir=loaded.base_dir, memo={},
        )
        result = technique.apply(frame[col], cspec, ctx)
        entry = {"table": name, "column": col, "role": cspec.role.value,
                 **_plain(technique.describe(cspec, ctx))}
        if cspec.identifier_check is not None:  # shown in the manifest and review page
            entry["identifier_check"] = cspec.identifier_check.model_dump()
        if col in kinds.get(name, {}):
            entry["released_type"] = describe_kind(kinds[name][col], cspec.technique)
        if ctx.level is not None:
            entry["level"] = int(ctx.level)
        entry["counts"] = dict(ctx.counts)
        return entry, result

    try:
        return _transform_tables(work, index, state, policy, stage, subject_raw, suppressed, pool, apply,
                                 kinds)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _transform_tables(work: Path, index: int, state: RunState, policy: Any, stage: Path,
                      subject_raw: pd.DataFrame, suppressed: pd.Index, pool: Any,
                      apply: Callable[..., tuple[dict[str, Any], Any]],
                      kinds: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    from deidflow.column_types import with_kinds
    from deidflow.risk.birth_dates import protect_birth_dates

    bcol = policy.consent.birth_date_column
    births = (pd.Series(subject_raw[bcol].to_numpy(), index=subject_raw[
        policy.tables[policy.subject_table].subject_column].astype(str).to_numpy())
        if bcol and bcol in subject_raw else pd.Series(dtype=object))

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
            # event dates that would narrow a birth date below its released level are withheld
            withheld = protect_birth_dates(released, frame[tspec.subject_column], tspec, policy,
                                           state.search.get("levels", {}), births)
            for entry in columns[-len(futures):]:
                if entry["column"] in withheld:
                    entry["counts"]["event_dates_withheld"] = withheld[entry["column"]]
            if state.engine == "dask" or fmt == "parquet":  # numbers and dates keep their type
                released = with_kinds(released, (kinds or {}).get(name, {}))
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
    from deidflow.techniques.aggregate import published_table

    state = RunState.load(work)
    loaded = _loaded(state)
    policy = loaded.policy
    stage = staging_dir(_output_root(loaded), state.release_id)
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
        table, summary = published_table(frame, list(agg.by), policy.limits.small_cell)
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
    from deidflow.validation.known_identifiers import identifying_values
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
                # values too short or too common to identify anyone are not looked for
                yield identifying_values(values, common=loaded.policy.limits.k)
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
    stage = staging_dir(_output_root(loaded), state.release_id)
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
    # k over the whole record, recomputed from the released files (validation.record_check)
    from deidflow.validation.record_check import check_whole_record

    whole = check_whole_record(policy, lambda t, cols: _released(
        work, stage, state.engine, policy.output.format, t, cols))
    passed = report.success and (not whole or whole["ok"])
    if whole:
        state.validation["whole_record"] = whole
        if not whole["ok"]:
            state.validation["success"] = False
            state.validation.setdefault("expectations", []).append({
                "type": "whole_record_k", "success": False,
                "explanation": f"k over the whole record is {whole['k']}, below "
                               f"k={whole['k_required']}"})
    state.save(work)
    if not passed:
        from deidflow.validation import direct  # identifiers left: the scrubber's to fix
        from deidflow.validation.advice import gate_failure, keep_report

        failed = [e for e in state.validation.get("expectations", []) if not e.get("success")]
        if direct.gate_fix(e.get("type", "") for e in failed):
            direct.write_leak_log(_private_dir(loaded) / "gate" / f"{state.release_id}.json",
                                  direct.leak_rows(tables, failed, known))
        kept = keep_report(stage / "validation" / "validation.json", _private_dir(loaded), state.run_id)
        raise gate_failure(policy, state.validation, kept)
    # Utility evidence from the consented input and the staged output: aggregates only.
    from deidflow.utility.evidence import utility_evidence

    state.utility = utility_evidence(
        loaded, _gated(work, policy.subject_table), tables[policy.subject_table], mapping["subject_id"],
        levels=state.search.get("levels", {}), search_loss=state.search.get("utility", {}).get("metric", "loss"),
        as_of=datetime.fromisoformat(state.as_of).date()).model_dump(mode="json")
    state.save(work)
    return {"success": True, "expectations": len(state.validation.get("expectations", []))}


# --- stage 5: publish ---------------------------------------------------------------------------


def publish_release(work: Path) -> Path:
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
    stage = staging_dir(root, state.release_id)
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
        publish(stage, final)

        private = _private_dir(loaded)
        exclusions = private / "exclusions"
        exclusions.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(work / EXCLUSION_LOG, exclusions / f"{state.release_id}.csv")
        (exclusions / f"{state.release_id}.csv").chmod(0o600)
        recording.commit()
    state.release_dir = str(final)
    state.save(work)
    return final


def _record_release(work: Path, loaded: LoadedPolicy, state: RunState, when: datetime | None = None) -> None:
    from deidflow.consent.registry import ConsentRegistry

    mapping = _pseudonyms(work)
    if "pseudonym" in mapping and state.release_id:
        ConsentRegistry(_registry_url(loaded)).record_release(
            state.release_id, mapping["subject_id"], mapping["pseudonym"], when or _now(),
            snapshot=state.consent)


def _begin_record_release(work: Path, loaded: LoadedPolicy, state: RunState, when: datetime) -> Any:
    """`_record_release` started on the registry's thread, uncommitted (see publish_release)."""
    from deidflow.consent.registry import ConsentRegistry

    mapping = _pseudonyms(work)
    if "pseudonym" not in mapping or not state.release_id:
        return _NothingToRecord()
    return ConsentRegistry(_registry_url(loaded)).begin_release_record(
        state.release_id, mapping["subject_id"], mapping["pseudonym"], when, snapshot=state.consent)


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
            orphan_withdrawals=int(c.get("orphan_withdrawals", 0)),
            no_minors_attested=bool(c.get("no_minors_attested", False)),
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
        limits_override=override_record(policy),
        utility_evidence=state.utility or None,
    )


def _deidflow_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("deidflow")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+source"


# --- the whole run without Prefect ---------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseSummary:
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

    @property
    def manifest(self) -> Path | None:
        return None if self.release_dir is None else self.release_dir / "manifest.json"

    @property
    def review(self) -> Path | None:
        return None if self.release_dir is None else self.release_dir / "review.html"


def summarise(work: Path) -> ReleaseSummary:
    state = RunState.load(work)
    return ReleaseSummary(
        release_id=state.release_id or "",
        release_dir=Path(state.release_dir) if state.release_dir else None,
        subjects_in=state.counts.get("subjects_in", 0),
        excluded_for_consent=state.counts.get("excluded_for_consent", 0),
        suppressed=state.counts.get("suppressed_subjects", 0),
        released=state.counts.get("released_subjects", 0),
        k=state.search.get("after", {}).get("k"),
        levels=state.search.get("levels", {}),
        risk_after=state.search.get("after", {}),
        validation_ok=bool(state.validation.get("success")),
    )


def discard(work: Path) -> None:
    """End of a run, however it ended: no staging directory and no private copies remain."""
    try:
        state = RunState.load(work)
        if state.release_id:
            loaded = _loaded(state)
            shutil.rmtree(staging_dir(_output_root(loaded), state.release_id), ignore_errors=True)
    except (OSError, ValueError, DeidflowError):
        pass
    shutil.rmtree(work, ignore_errors=True)


STAGES: tuple[tuple[str, Callable[[Path], Any]], ...] = (
    ("search", search),
    ("transform", transform),
    ("validate", validate),
    ("publish", publish_release),
)


def run_release(
    policy_path: str | Path,
    *,
    as_of: datetime | None = None,
    on_stage: Callable[[str], None] | None = None,
    engine: str = "memory",
) -> ReleaseSummary:
    """All stages in this process, without Prefect (partitions one after another). Fails
    closed: on any error the staging and work directories are removed and nothing appears in
    the output directory."""
    if on_stage:
        on_stage("prepare")
    work = prepare(policy_path, as_of=as_of, engine=engine)
    try:
        if engine == "dask":
            n = RunState.load(work).partitions
            finish_prepare(work, [gate_partition(work, i) for i in range(n)])
        for name, stage in STAGES:
            if on_stage:
                on_stage(name)
            _fault_injection(name)
            if name == "publish":
                existing = _existing_release(work)
                if existing is not None:
                    return existing
            stage(work)
        return summarise(work)
    finally:
        discard(work)


def _fault_injection(stage: str) -> None:
    """Reliability tests only: DEIDFLOW_TEST_KILL_AT=<stage> kills this process (SIGKILL, no
    cleanup) just before <stage>, to show that a killed run leaves no release behind."""
    if os.environ.get("DEIDFLOW_TEST_KILL_AT") == stage:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _existing_release(work: Path) -> ReleaseSummary | None:
    """A rerun with unchanged policy, inputs, consent and key: the release already exists."""
    state = RunState.load(work)
    loaded = _loaded(state)
    final = _output_root(loaded) / state.release_id
    if not final.exists():
        return None
    # A run killed between the rename and the registry write left the release unrecorded:
    # record it now (idempotent), or a later withdrawal could not be traced to it.
    _record_release(work, loaded, state)
    summary = summarise(work)
    return ReleaseSummary(**(asdict(summary) | {"release_dir": final, "already_released": True}))
