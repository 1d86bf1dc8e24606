"""Stage 3, transform: where each column's technique is applied. Per partition, the
consented, non-suppressed rows of every table go through their technique (`techniques/`)
and are written to the run's staging directory; `finish_transform` merges the partitions'
column descriptions and counts and writes the aggregates. The release id is fixed here.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from deidflow.errors import GateFailed
from deidflow.io import read_work, write_frame
from deidflow.policy import LoadedPolicy, Role
from deidflow.manifest.record import ColumnTreatment
from deidflow.jsonsafe import plain
from deidflow.release.state import TransformOutcome, RunState, dump_json, pinned_policy
from deidflow.release.engines import engine_named, engine_of
from deidflow.release.workdir import WorkDir
from deidflow.release.search import NA


def begin_transform(work: Path) -> str:
    """Fix the content-addressed release id and create its staging directory."""
    from deidflow.keys import KeyRing

    state = RunState.load(work)
    loaded = pinned_policy(state)
    state.release_id = _release_id(loaded, state, KeyRing.from_policy(loaded))
    WorkDir.of(work, state).prepare_staging()
    state.save(work)
    return state.release_id


def _suppressed_subjects(subject: pd.DataFrame, work: WorkDir, loaded: LoadedPolicy) -> pd.Series:
    """Boolean per subject row: its combination was suppressed by the search (or, after the
    whole-record search, the subject itself)."""
    if work.suppressed_subjects.is_file():  # the whole-record search's choice
        ids = pd.read_parquet(work.suppressed_subjects)["subject_id"]
        sid = loaded.policy.tables[loaded.policy.subject_table].subject_column
        return pd.Series(subject[sid].astype("string").isin(ids).to_numpy(dtype=bool),
                         index=subject.index)
    combos = pd.read_parquet(work.suppressed_combos)
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
    loaded = pinned_policy(state)
    policy = loaded.policy
    keyring = KeyRing.from_policy(loaded)
    wd = WorkDir.of(work, state)
    subj_spec = policy.tables[policy.subject_table]
    sid = subj_spec.subject_column
    subject_all = wd.gated_part(policy.subject_table, index)
    suppressed_mask = _suppressed_subjects(subject_all, wd, loaded)
    suppressed = pd.Index(subject_all.loc[suppressed_mask.to_numpy(), sid].astype("string"))
    subject_raw = subject_all.loc[~suppressed_mask.to_numpy()]
    del subject_all
    # Each subject's known identifiers, for the scrubber: built only if a column is scrubbed.
    scrubbed = any(c.technique == "scrub" for t in policy.tables.values() for c in t.columns.values())
    known = known_identifiers(subject_raw, loaded) if scrubbed else None
    if known is not None:  # every direct identifier of every table (attending doctors…)
        from deidflow.techniques.scrub import known_from_tables

        known = known_from_tables(known, policy, lambda t, cols, i: wd.gated_part(t, i, cols),
                                  index, state.partitions)
        from deidflow.reference_tables import with_reference_identifiers

        known = with_reference_identifiers(known, work)  # providers named in any note

    # A table's columns are applied on the engine's threads (`Engine.transform_threads`).
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=engine_of(state).transform_threads(), thread_name_prefix="transform")

    from deidflow.column_types import describe_kind, released_kinds
    from deidflow.note_consistency import note_ages, note_dates

    kinds = released_kinds(wd.column_types, loaded, wd.gated_parts)
    levels = state.outcome("search").levels

    def begin(name: str, frame: pd.DataFrame, col: str, cspec: Any, values: Any = None) -> "_Begun":
        """One column's technique begun: a row-local one on every core is started in forked
        workers (`release.cores`) and the returned call waits for it; any other is applied
        here and the call returns at once. The call gives (the column's entry, its values).
        `values`: the column where `frame` does not hold it (`cores.MappedText`)."""
        tspec = policy.tables[name]
        # a note states no finer age than the birth date's released level (note_consistency)
        cspec, ages_coupling = note_ages(cspec, policy, levels)
        # and cuts to the month only dates shifted as the structured dates are (note_dates)
        cspec, dates_coupling = note_dates(cspec, policy)
        technique = registry.get(cspec.technique)
        ctx = ApplyContext(
            table=name, column=col, subject_ids=frame[tspec.subject_column],
            # a child table's quasi-identifier is `table.column` (the whole-record search)
            keyring=keyring, level=levels.get(col if name == policy.subject_table else f"{name}.{col}"),
            frame=frame, known_identifiers=known, base_dir=loaded.base_dir, memo={},
        )
        running = _begin(technique, frame, col, cspec, ctx, engine_of(state), values)

        def finish() -> tuple[dict[str, Any], Any]:
            result = running.result()
            entry = {"table": name, "column": col, "role": cspec.role.value,
                     **plain(technique.describe(cspec, ctx))}
            if cspec.identifier_check is not None:  # shown in the manifest and review page
                entry["identifier_check"] = cspec.identifier_check.model_dump()
            if col in kinds.get(name, {}):
                entry["released_type"] = describe_kind(kinds[name][col], cspec.technique)
            if ctx.level is not None:
                entry["level"] = int(ctx.level)
            entry.update(ages_coupling)
            entry.update(dates_coupling)
            entry["counts"] = dict(ctx.counts)
            return entry, result

        return _Begun(finish, running.close)

    def apply(name: str, frame: pd.DataFrame, col: str, cspec: Any) -> tuple[dict[str, Any], Any]:
        return begin(name, frame, col, cspec)()

    try:
        return _transform_tables(wd, index, state, policy, subject_raw, suppressed, pool, apply, kinds,
                                 suppressed_mask.to_numpy(dtype=bool), begin=begin)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _begin(technique: Any, frame: pd.DataFrame, col: str, cspec: Any, ctx: Any, engine: Any,
           values: Any = None) -> Any:
    """One column's technique begun: a row-local one (the scrubber) is started on every core
    in forked workers (`release.cores.OnCores`); any other is applied now. Either has
    `result()` and `close()`."""
    from deidflow.release.cores import spreads, start_on_cores

    if spreads(cspec.technique, len(frame), engine):
        return start_on_cores(technique, frame[col] if values is None else values, cspec, ctx)
    result = technique.apply(frame[col], cspec, ctx)
    return _Begun(lambda: result)


class _Begun:
    """A column's technique begun: calling it (or `result()`) gives what it gives, `close()`
    ends what is still running (a failed stage's workers)."""

    def __init__(self, finish: Callable[[], Any], close: Callable[[], None] = lambda: None) -> None:
        self.finish, self.close = finish, close

    def __call__(self) -> Any:
        return self.finish()

    result = __call__


def _import_gate_meanwhile(futures: list[tuple[str, Any]], written: list[Any]) -> bool:
    """The validation gate imported while the scrub workers run, instead of at the validate
    stage with one core idle (`release.cores.import_beside_workers` says when it is safe:
    the pool's and the writers' threads, all waited for here, are then idle; beside any other
    thread, e.g. a Prefect flow run's, it is left to the validate stage)."""
    from concurrent.futures import Future, wait

    from deidflow.release.cores import import_beside_workers

    wait([f for _, f in futures if isinstance(f, Future)] + list(written))
    return import_beside_workers("deidflow.validation.gate", quiet="transform")


def _begun_ahead(work: WorkDir, index: int, policy: Any, engine: Any, suppressed: pd.Index,
                 suppressed_rows: np.ndarray | None, pool: Any, apply: Callable[..., Any],
                 begin: Callable[..., Any], out: dict[str, tuple[Any, ...]]) -> None:
    """The tables with a column whose technique runs on every core (the notes' scrubber,
    `release.cores`), begun before any other table: their kept rows read, that column's
    workers started and their other columns handed to the pool. The workers then scrub
    while this process transforms the other tables, instead of this process working with
    one core idle before the pool and the workers waiting for nothing after it. Into `out`,
    per table (as begun, so that a failure part-way leaves the caller what to end): (kept
    rows, their subjects, frame, [(column, its future or begun technique)])."""
    import pyarrow as pa

    from deidflow.release.cores import ROW_LOCAL, MappedText, spreads

    if engine.distributed:
        return
    for name, tspec in policy.tables.items():
        if not any(c.technique in ROW_LOCAL for c in tspec.columns.values()):
            continue
        keep, subject_rows = _kept_and_subjects(work, name, index, tspec, suppressed, suppressed_rows,
                                                name == policy.subject_table)
        rows = int(np.count_nonzero(keep))
        if not any(spreads(c.technique, rows, engine) for c in tspec.columns.values()):
            continue
        # the spread text columns are not read here: each worker reads its own rows
        path = work.gated(name, index)
        mapped = {col: MappedText(path, col, keep) for col, cspec in tspec.columns.items()
                  if spreads(cspec.technique, rows, engine) and MappedText.readable(path, col)}
        # the file's columns from its footer (feather.read_table would read every record batch)
        columns = [c for c in pa.ipc.open_file(path).schema.names if c not in mapped]
        frame = read_work(path, columns=columns, keep=keep, pool=pool)
        futures: list[tuple[str, Any]] = []
        out[name] = (keep, subject_rows, frame, futures)
        for col, cspec in tspec.columns.items():  # the workers first: theirs is the long part
            if spreads(cspec.technique, rows, engine):
                futures.append((col, begin(name, frame, col, cspec, mapped.get(col))))
        for col, cspec in tspec.columns.items():
            if not spreads(cspec.technique, rows, engine):
                futures.append((col, pool.submit(apply, name, frame, col, cspec)))
        order = list(tspec.columns)
        futures.sort(key=lambda cf: order.index(cf[0]))  # gathered in the policy's column order


def _kept_rows(work: WorkDir, name: str, index: int, tspec: Any, suppressed: pd.Index,
               suppressed_rows: np.ndarray | None, subject_table: bool) -> np.ndarray:
    """Which rows of a table's gated part are released: their subject passed the gate and was
    not suppressed. By each row's subject position from prepare (`WorkDir.subject_positions`)
    where there is one, a lookup of the link keys otherwise (the subject table itself, or a
    work directory without positions)."""
    return _kept_and_subjects(work, name, index, tspec, suppressed, suppressed_rows, subject_table)[0]


def _kept_and_subjects(work: WorkDir, name: str, index: int, tspec: Any, suppressed: pd.Index,
                       suppressed_rows: np.ndarray | None,
                       subject_table: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """`_kept_rows`, and each kept row's subject as its position among the released subject
    rows (the gated rows not suppressed) when prepare's positions give it (else None)."""
    if suppressed_rows is not None and subject_table:  # the very rows `suppressed_rows` is over
        return ~suppressed_rows, np.arange(int((~suppressed_rows).sum()))
    positions = work.subject_positions(name, index)
    if suppressed_rows is not None and positions.is_file():
        pos = np.load(positions)
        keep = pos >= 0
        keep[keep] = ~suppressed_rows[pos[keep]]
        released_row = np.cumsum(~suppressed_rows) - 1  # gated row -> released subject row
        return keep, released_row[pos[keep]]
    return _looked_up(work, name, index, tspec, suppressed), None


def _looked_up(work: WorkDir, name: str, index: int, tspec: Any, suppressed: pd.Index) -> np.ndarray:
    """The rows kept, by looking every link key up among the suppressed subjects."""
    from deidflow.idcolumns import subject_mask

    link = work.gated_part(name, index, [tspec.subject_column])[tspec.subject_column]
    keep = ~subject_mask(link, suppressed)
    del link
    consented = work.consented(name, index)
    if consented.is_file():
        keep &= np.load(consented)
    return keep


def _transform_tables(work: WorkDir, index: int, state: RunState, policy: Any,
                      subject_raw: pd.DataFrame, suppressed: pd.Index, pool: Any,
                      apply: Callable[..., tuple[dict[str, Any], Any]],
                      kinds: dict[str, dict[str, str]] | None = None,
                      suppressed_rows: np.ndarray | None = None,
                      begin: Callable[..., Any] | None = None) -> dict[str, Any]:
    from deidflow.column_types import with_kinds
    from deidflow.risk.birth_dates import protect_birth_dates

    bcol = policy.consent.birth_date_column
    births = (pd.Series(subject_raw[bcol].array, index=subject_raw[
        policy.tables[policy.subject_table].subject_column].astype(str).to_numpy())
        if bcol and bcol in subject_raw else pd.Series(dtype=object))
    levels = state.outcome("search").levels
    birth_memo: dict = {}  # the subjects' birth thresholds, computed for the first table only

    from concurrent.futures import ThreadPoolExecutor

    sid = policy.tables[policy.subject_table].subject_column
    fmt = policy.output.format
    engine = engine_of(state)
    columns: list[dict[str, Any]] = []
    rows: dict[str, int] = {}
    released_subject = None
    # A table's files are written on their own threads while the next table is transformed
    # (the writers release the GIL): the stage is a pipeline, not read → apply → write in turn.
    writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="transform-writer")
    written: list[Any] = []
    ahead: dict[str, tuple[Any, ...]] = {}
    try:
        if begin is not None:
            _begun_ahead(work, index, policy, engine, suppressed, suppressed_rows, pool, apply, begin, ahead)
        for name, tspec in policy.tables.items():
            if name in ahead:  # begun before the other tables (`_begun_ahead`)
                keep, subject_rows, frame, futures = ahead[name]
                if list(ahead) == [name]:  # nothing left to do here but wait for the workers
                    _import_gate_meanwhile(futures, written)
            else:
                # The verdicts first (gate and suppression, per row); then the table's kept rows
                # only (an Arrow filter per column over the memory-mapped work file, on the pool).
                keep, subject_rows = _kept_and_subjects(work, name, index, tspec, suppressed, suppressed_rows,
                                                        name == policy.subject_table)
                frame = read_work(work.gated(name, index), keep=keep, pool=pool)
                futures = [(col, pool.submit(apply, name, frame, col, cspec))
                           for col, cspec in tspec.columns.items()]
            out = {}
            for col, future in futures:  # in the policy's column order, whatever finished first
                entry, result = future.result()
                columns.append(entry)
                if result is not None:
                    out[col] = result
            ahead.pop(name, None)  # its workers are done
            released = pd.DataFrame(out, index=frame.index)
            # event dates that would narrow a birth date below its released level are withheld
            withheld = protect_birth_dates(released, frame[tspec.subject_column], tspec, policy,
                                           levels, births, memo=birth_memo, subject_rows=subject_rows)
            for entry in columns[-len(futures):]:
                if entry["column"] in withheld:
                    entry["counts"]["event_dates_withheld"] = withheld[entry["column"]]
            if engine.typed_output(fmt):  # numbers and dates keep their type
                released = with_kinds(released, (kinds or {}).get(name, {}))
            rows[name] = int(len(frame))
            if name == policy.subject_table:
                released_subject = released
            written += engine.write_released(writer, work, name, index, fmt, released,
                                             name == policy.subject_table)
            for done in [f for f in written if f.done()]:
                done.result()  # a failed write stops the stage now
            del frame, released, out
        for done in written:
            done.result()
    finally:
        for *_, futures in ahead.values():  # a failed stage: its workers ended, not awaited
            for _, running in futures:
                if hasattr(running, "close"):
                    running.close()
        writer.shutdown(wait=True, cancel_futures=True)

    # Which pseudonym each released subject got: the hospital's private record, used by the
    # consent-coverage expectation and the withdrawal re-check. Never published.
    mapping = pd.DataFrame({"subject_id": subject_raw[sid].astype("string").array})
    if released_subject is not None and sid in released_subject:
        mapping["pseudonym"] = released_subject[sid].astype("string").array
    out = work.pseudonyms(index)
    out.parent.mkdir(parents=True, exist_ok=True)
    mapping.to_parquet(out)
    result = {"columns": columns, "rows": rows, "suppressed": int(len(suppressed)),
              "released": int(len(subject_raw))}
    dump_json(work.transformed(index), result)
    return {"rows": rows, "released": result["released"]}


def _treatment(entry: dict[str, Any]) -> ColumnTreatment:
    """A column's entry as the manifest records it: the technique's description and counts
    as its parameters (the technique's own `params` flattened in)."""
    params = {k: v for k, v in entry.items() if k not in ("table", "column", "role", "technique")}
    flat = params.pop("params", None) or {}
    return ColumnTreatment(table=entry["table"], column=entry["column"], role=entry["role"],
                           technique=entry["technique"], params=plain({**flat, **params}))


def released_table(release_dir: Path, name: str, fmt: str, engine: str,
                   columns: list[str] | None = None) -> pd.DataFrame:
    """A released table read back from a release directory, as the named engine wrote it."""
    return engine_named(engine).read_released(release_dir, name, fmt, columns)


def finish_transform(work: Path) -> str:
    """Add up the partitions' counts, write the aggregates. Returns the staging directory."""
    from deidflow.techniques.aggregate import published_table

    state = RunState.load(work)
    loaded = pinned_policy(state)
    policy = loaded.policy
    wd = WorkDir.of(work, state)
    parts = [json.loads(p.read_text()) for p in wd.transformed_parts()]
    if len(parts) != state.partitions:
        raise GateFailed(f"{state.partitions - len(parts)} partition(s) were not transformed",
                         key="engine", fix="rerun the release")
    columns = []
    for j, entry in enumerate(parts[0]["columns"]):
        merged = dict(entry)
        total: dict[str, int] = {}
        for p in parts:
            for k, v in p["columns"][j]["counts"].items():
                total[k] = total.get(k, 0) + int(v)
        merged.pop("counts")
        if total:
            merged["counts"] = total
        columns.append(_treatment(merged))
    rows: dict[str, int] = {}
    for p in parts:
        for k, v in p["rows"].items():
            rows[k] = rows.get(k, 0) + int(v)
    aggregates = []
    for agg in policy.aggregates:
        frame = engine_of(state).released_for_checks(wd, agg.table, policy.output.format, list(agg.by))
        table, summary = published_table(frame, list(agg.by), policy.limits.small_cell)
        write_frame(table, wd.staging / "aggregates" / f"{agg.name}.csv", "csv")
        aggregates.append({"name": agg.name, "table": agg.table, "by": list(agg.by), **plain(summary)})
    state.transform = TransformOutcome(
        suppressed_subjects=sum(p["suppressed"] for p in parts),
        released_subjects=sum(p["released"] for p in parts),
        released_rows=rows, columns=columns, aggregates=aggregates,
    )
    state.save(work)
    return str(wd.staging)


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


def _release_id(loaded: LoadedPolicy, state: RunState, keyring: Any) -> str:
    """Content-addressed: the same policy, inputs, consent snapshot and key give the same id,
    so a rerun after success finds its release instead of publishing a second copy."""
    h = hashlib.sha256()
    h.update(loaded.sha256.encode())
    for inp in state.inputs:
        h.update(f"{inp.table}:{inp.sha256}".encode())
    h.update(state.outcome("consent").events_sha256.encode())
    # The day the consent was judged on: the gate's verdicts (expiry, age) depend on it.
    h.update(datetime.fromisoformat(state.as_of).date().isoformat().encode())
    h.update(keyring.fingerprint().encode())
    agreement = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in loaded.policy.release.agreement_id)
    return f"{agreement}-{h.hexdigest()[:12]}"
