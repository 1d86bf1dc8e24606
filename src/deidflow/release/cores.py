"""Every core for the row-local techniques of the in-process (memory) engine: a free-text
column's scrubbing is per-row work in Python's `re`, which holds the GIL, so threads cannot
share it. Its rows are cut into contiguous chunks, scrubbed by one forked worker process per
core (which inherits the known identifiers and the key ring, and reads its chunk's notes from
the memory-mapped work file: nothing is pickled on the way in), and the scrubbed chunks come
back as Arrow arrays, joined in the original order with the technique's counts summed. A
column's chunks can be started (`start_on_cores`) and collected later, so that the parent
transforms the other tables while the workers scrub. The Dask engine already runs one
partition per core.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import itertools
import multiprocessing
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

ROW_LOCAL = frozenset({"scrub"})  # techniques whose output row depends on its input row only
MIN_ROWS = 20_000  # fewer rows: a fork costs more than it saves
CHUNKS_PER_CORE = 8  # no chunk is larger than its share of this many: bounds a worker's memory
MIN_CHUNK = 2_000  # the last, small chunks: a chunk's set-up and hand-back cost more below this
WARM_ROWS = 64  # rows applied in the parent first, so the workers inherit the technique's caches

# what the forked workers read, by job: a pool forks a new worker while its job runs if one
# dies, so a job stays here until its pool is done (and another may run meanwhile)
_JOBS: dict[int, tuple[Any, pd.Series, Any, Any, Any]] = {}
_JOB_IDS = itertools.count(1)  # next() is atomic under the GIL: two threads get two ids
_HANDLERS: dict[int, set[threading.Thread]] = {}  # each running job's pool threads (parent only)

# Held while a module is imported beside running workers (`import_beside_workers`): a fork
# waits for it, so no worker is forked while a module is half-imported by this process.
_FORK_GUARD = threading.RLock()


def _after_fork_in_child() -> None:
    _FORK_GUARD.release()
    # The parent's thread-exit hooks belong to threads the child does not have. Prefect's log
    # and event services register one that fails in a forked child (an assertion on state
    # its worker thread owns), so a scrub worker forked inside a flow run (or after one, in
    # the same process) ended with exit code 1 once its chunk was done.
    atexits = getattr(threading, "_threading_atexits", None)
    if atexits is not None:
        atexits.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_FORK_GUARD.acquire, after_in_parent=_FORK_GUARD.release,
                        after_in_child=_after_fork_in_child)

if TYPE_CHECKING:
    from deidflow.release.engines import Engine


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def spreads(technique_name: str, rows: int, engine: "Engine") -> bool:
    """Whether a column's technique runs on every core (an in-process engine: a distributed
    one already runs a partition per core; enough rows, a row-local technique, fork)."""
    return (not engine.distributed and technique_name in ROW_LOCAL and rows >= MIN_ROWS and cores() > 1
            and "fork" in multiprocessing.get_all_start_methods())


def _apply_chunk(task: tuple[int, int, int]) -> tuple[pa.Array, Any, dict[str, int]]:
    # A chunk's garbage is freed by reference counting as it goes: the cyclic collector
    # found nothing to free in one, but its passes over the chunk's millions of span tuples
    # cost a twentieth of the scrub. It runs once on the young objects after each chunk
    # instead (the worker scrubs chunk after chunk), for any cycle a chunk leaves.
    gc.disable()
    job, lo, hi = task
    technique, values, cspec, ctx, index = _JOBS[job]
    subjects = ctx.subject_ids.iloc[lo:hi]
    known = (_own_known(ctx.known_identifiers, subjects) if index is None
             else _chunk_known(ctx.known_identifiers, index, lo, hi))
    sub = dataclasses.replace(
        ctx, subject_ids=subjects, frame=None if ctx.frame is None else ctx.frame.iloc[lo:hi],
        known_identifiers=known, counts={}, memo={})
    out = technique.apply(_rows(values, lo, hi), cspec, sub)
    result = _as_arrow(out), out.dtype, sub.counts
    del out, sub, known, subjects
    gc.collect(0)
    return result


def _as_arrow(out: pd.Series) -> pa.Array:
    """A chunk's result as one Arrow large_string array: taken as it is where the column is
    already Arrow-backed (no Python string per note made again and encoded a second time)."""
    if isinstance(out.dtype, pd.StringDtype) and out.dtype.storage == "pyarrow":
        column = pa.array(out.array)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        return column.cast(pa.large_string())
    return pa.array(out.to_numpy(dtype=object, na_value=None), type=pa.large_string())


def _own_known(known: pd.DataFrame | None, subjects: pd.Series) -> pd.DataFrame | None:
    """The known identifiers a chunk's notes can use: their own subjects' and those known for
    every note (the scrubber looks up nothing else, `techniques.scrub.detect_spans`). Its
    per-subject table of every spelling of every value, built for all subjects in each
    worker, was 4.5 GB per worker at 1M subjects."""
    if known is None or not len(known) or "subject_id" not in known:
        return known
    from deidflow.techniques.scrub import EVERYONE

    wanted = pd.Index(subjects.astype("string").dropna().unique()).append(pd.Index([EVERYONE]))
    return known[known["subject_id"].astype("string").isin(wanted).to_numpy(dtype=bool)]


def known_index(known: pd.DataFrame | None, subjects: pd.Series) -> tuple[Any, ...] | None:
    """The known identifiers' subjects and each row's subject as codes of one factorisation,
    made once in the parent: a worker then finds its chunk's known rows (`_chunk_known`, the
    rows `_own_known` gives) with a numpy mask, not a string look-up of every known row (about
    0.8 CPU s per chunk at 1M subjects). None when there is nothing to index."""
    if known is None or not len(known) or "subject_id" not in known:
        return None
    from deidflow.techniques.scrub import EVERYONE

    codes, uniques = pd.factorize(known["subject_id"].astype("string"))
    uniques = pd.Index(uniques)
    rows = uniques.get_indexer(subjects.astype("string"))
    return codes, rows, len(uniques), int(uniques.get_indexer([EVERYONE])[0])


def _chunk_known(known: pd.DataFrame, index: tuple[Any, ...], lo: int, hi: int) -> pd.DataFrame:
    """`_own_known(known, subjects[lo:hi])` by the codes of `known_index`."""
    codes, rows, n, everyone = index
    wanted = np.zeros(n + 1, dtype=bool)  # slot n stays False: code -1 (missing) lands there
    mine = rows[lo:hi]
    wanted[mine[mine >= 0]] = True
    if everyone >= 0:
        wanted[everyone] = True
    return known[wanted[codes]]


class MappedText:
    """A text column of a run's work file, the rows `keep` selects, read where it is used: a
    forked worker takes its own chunk's rows from the memory-mapped file (`rows(lo, hi)`), so
    the release process holds no copy of the notes while they are scrubbed (at 1M patients
    1.7 GB, shared with every worker and counted in the tree's memory throughout). As a
    Series would give them: Arrow-backed text, the kept rows numbered from 0, as `read_work`
    reads a text column."""

    def __init__(self, path: Any, column: str, keep: np.ndarray) -> None:
        self.path, self.name = str(path), column
        self.positions = np.flatnonzero(np.asarray(keep, dtype=bool))
        self.index = pd.RangeIndex(len(self.positions))
        reader = self._reader()
        # where each of the file's record batches starts: a chunk reads only the batches its
        # rows lie in (reading the whole table's batches cost more than the chunk's rows)
        self.starts = np.cumsum([0] + [reader.get_batch(i).num_rows
                                       for i in range(reader.num_record_batches)])

    def _reader(self) -> Any:
        return pa.ipc.open_file(pa.memory_map(self.path))

    def __len__(self) -> int:
        return len(self.positions)

    def rows(self, lo: int, hi: int) -> pd.Series:
        reader = self._reader()
        at = reader.schema.get_field_index(self.name)
        kind = reader.schema.field(at).type
        wanted = self.positions[lo:hi]
        if len(wanted):
            # the positions are ascending: the batches from the first's to the last's, joined
            first, last = int(wanted[0]), int(wanted[-1])
            b0, b1 = np.searchsorted(self.starts, [first, last], side="right") - 1
            column = pa.chunked_array([reader.get_batch(i).column(at) for i in range(b0, b1 + 1)], type=kind)
            span = column.slice(first - int(self.starts[b0]), last + 1 - first).combine_chunks()
            taken = span.take(pa.array(wanted - first))
        else:
            taken = pa.array([], type=kind)
        return pd.Series(pd.arrays.ArrowStringArray(taken), index=self.index[lo:hi], name=self.name,
                         copy=False)

    @staticmethod
    def readable(path: Any, column: str) -> bool:
        """Whether `column` of the work file is text (read as `MappedText` reads it)."""
        kind = pa.ipc.open_file(pa.memory_map(str(path))).schema.field(column).type
        return pa.types.is_large_string(kind) or pa.types.is_string(kind)


def _rows(values: "pd.Series | MappedText", lo: int, hi: int) -> pd.Series:
    return values.rows(lo, hi) if isinstance(values, MappedText) else values.iloc[lo:hi]


def chunk_bounds(n: int, processes: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) row ranges covering n rows, largest first: each at most
    n / (processes * CHUNKS_PER_CORE) rows, and, once fewer rows are left than two such
    chunks per worker, a quarter of what is left per worker (at least MIN_CHUNK), so that the
    last chunks are small and no core waits long for the other to finish its last one."""
    cap = max(1, -(-n // (processes * CHUNKS_PER_CORE)))
    out, lo = [], 0
    while lo < n:
        size = min(cap, max(MIN_CHUNK, -(-(n - lo) // (2 * processes))))
        if n - lo - size < MIN_CHUNK and n - lo <= cap:  # a remainder too small to be a chunk
            size = n - lo
        out.append((lo, min(n, lo + size)))
        lo += size
    return out


def _warm(technique: Any, values: pd.Series, cspec: Any, ctx: Any, index: Any = None) -> None:
    """The technique applied to a few rows in the parent, the result and counts thrown away:
    what it compiles and caches on first use (regular expressions, name tables) is then
    inherited by every forked worker instead of built again in each."""
    rows = min(WARM_ROWS, len(values))
    if not rows:
        return
    subjects = ctx.subject_ids.iloc[:rows]
    known = (_own_known(ctx.known_identifiers, subjects) if index is None
             else _chunk_known(ctx.known_identifiers, index, 0, rows))
    sample = dataclasses.replace(
        ctx, subject_ids=subjects, frame=None if ctx.frame is None else ctx.frame.iloc[:rows],
        known_identifiers=known, counts={}, memo={})
    technique.apply(_rows(values, 0, rows), cspec, sample)


def apply_on_cores(technique: Any, values: pd.Series, cspec: Any, ctx: Any,
                   processes: int | None = None) -> pd.Series:
    """`technique.apply(values, cspec, ctx)`, the rows cut into chunks applied in forked
    worker processes; the same Series (order, index, dtype) and the same counts in `ctx`."""
    return start_on_cores(technique, values, cspec, ctx, processes).result()


class OnCores:
    """A technique's chunks being applied in forked workers (`start_on_cores`): the caller
    does other work meanwhile and collects the column with `result()`."""

    def __init__(self, job: int, pool: Any, pending: Any, values: pd.Series, ctx: Any) -> None:
        self.job, self.pool, self.pending, self.values, self.ctx = job, pool, pending, values, ctx

    def result(self) -> pd.Series:
        try:
            results = self.pending.get()
        except BaseException:
            self.close()
            raise
        # every chunk is back: the idle workers are let exit, not sent SIGTERM (inside a
        # Prefect flow run a forked worker has Prefect's handler, which raises on it)
        pool, self.pool = self.pool, None
        pool.close()
        pool.join()
        _JOBS.pop(self.job, None)
        _HANDLERS.pop(self.job, None)
        ctx, values = self.ctx, self.values
        for _, _, counts in results:
            for what, k in counts.items():
                ctx.count(what, k)
        joined = pa.chunked_array([r for r, _, _ in results], type=pa.large_string())
        dtype = results[0][1]
        if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
            # the Arrow arrays as they came back: no Python string per note
            array = pd.arrays.ArrowStringArray(joined)
            return pd.Series(array, index=values.index, name=values.name).astype(dtype)
        return pd.Series(joined.to_numpy(zero_copy_only=False), index=values.index, name=values.name,
                         dtype=dtype)

    def close(self) -> None:
        """End the workers (a failed or abandoned job too) and forget the job."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        _JOBS.pop(self.job, None)
        _HANDLERS.pop(self.job, None)


def start_on_cores(technique: Any, values: pd.Series, cspec: Any, ctx: Any,
                   processes: int | None = None) -> OnCores:
    """`apply_on_cores` begun: the chunks handed to forked workers, the column not waited
    for. The parent's part (the warm-up and the known identifiers' codes) is done here."""
    processes = processes or cores()
    pieces = chunk_bounds(len(values), processes)
    index = known_index(ctx.known_identifiers, ctx.subject_ids)
    _warm(technique, values, cspec, ctx, index)
    job = next(_JOB_IDS)
    _JOBS[job] = (technique, values, cspec, ctx, index)
    try:
        # one worker per core for every chunk, forked now: a worker forked per chunk (from a
        # release process of gigabytes) cost the fork, its exit, and the page faults of its
        # memory again for each chunk (stime and minor faults per chunk, README figures).
        # Forked before the other tables are transformed, the workers hold on to none of
        # those tables' memory; a worker's own memory is one chunk's, used again for the next.
        pool = multiprocessing.get_context("fork").Pool(processes)
    except BaseException:
        _JOBS.pop(job, None)
        raise
    _HANDLERS[job] = {pool._worker_handler, pool._task_handler, pool._result_handler}
    pending = pool.map_async(_apply_chunk, [(job, lo, hi) for lo, hi in pieces], chunksize=1)
    return OnCores(job, pool, pending, values, ctx)


def import_beside_workers(module: str, *, quiet: str) -> bool:
    """Import `module` now, on this thread, while workers of a running job scrub, if every
    other Python thread is one that loads no module meanwhile: a running job's pool threads
    (they fork, hand out chunk bounds and unpickle Arrow arrays of modules long loaded) and
    idle threads named `quiet…` that the caller has waited for. Returns whether it is imported.

    For the release process, which would otherwise wait idle for the workers and import the
    validation gate (Great Expectations, seconds of module code) later with the other core
    idle. Two threads importing at once can be handed a half-initialised module
    (`validation.preload`); so this does nothing beside any other thread (a Prefect flow run's
    own threads). And a worker forked mid-import would inherit module locks held by a thread
    it does not have: the pool forks a new worker if one ends, so the forks wait (`_FORK_GUARD`)."""
    if module in sys.modules:
        return True
    me = threading.current_thread()
    handlers = set().union(*_HANDLERS.values()) if _HANDLERS else set()
    if not handlers or any(t is not me and t not in handlers and not t.name.startswith(quiet)
                           for t in threading.enumerate()):
        return False
    with _FORK_GUARD:
        importlib.import_module(module)
    return True
