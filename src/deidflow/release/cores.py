"""Every core for the row-local techniques of the in-process (memory) engine: a free-text
column's scrubbing is per-row work in Python's `re`, which holds the GIL, so threads cannot
share it. Its rows are cut into contiguous chunks, each scrubbed in a forked worker process
(which inherits the column, the known identifiers and the key ring: nothing is pickled on the
way in), and the scrubbed chunks come back as Arrow arrays, joined in the original order with
the technique's counts summed. The Dask engine already runs one partition per core.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

ROW_LOCAL = frozenset({"scrub"})  # techniques whose output row depends on its input row only
MIN_ROWS = 20_000  # fewer rows: a fork costs more than it saves
CHUNKS_PER_CORE = 8  # smaller pieces even out the workers and bound their memory

_JOB: tuple[Any, pd.Series, Any, Any] | None = None  # what the forked workers read

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


def _apply_chunk(bounds: tuple[int, int]) -> tuple[pa.Array, Any, dict[str, int]]:
    technique, values, cspec, ctx = _JOB
    lo, hi = bounds
    subjects = ctx.subject_ids.iloc[lo:hi]
    sub = dataclasses.replace(
        ctx, subject_ids=subjects, frame=None if ctx.frame is None else ctx.frame.iloc[lo:hi],
        known_identifiers=_own_known(ctx.known_identifiers, subjects), counts={}, memo={})
    out = technique.apply(values.iloc[lo:hi], cspec, sub)
    texts = pa.array(out.to_numpy(dtype=object, na_value=None), type=pa.large_string())
    return texts, out.dtype, sub.counts


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


def apply_on_cores(technique: Any, values: pd.Series, cspec: Any, ctx: Any,
                   processes: int | None = None) -> pd.Series:
    """`technique.apply(values, cspec, ctx)`, the rows cut into chunks applied in forked
    worker processes; the same Series (order, index, dtype) and the same counts in `ctx`."""
    global _JOB
    processes = processes or cores()
    n = len(values)
    bounds = np.linspace(0, n, processes * CHUNKS_PER_CORE + 1).astype(np.int64)
    pieces = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    _JOB = (technique, values, cspec, ctx)
    try:
        # one chunk per worker process: a worker's memory (the scrubber's tables, Python
        # strings of its notes) is returned when it exits, not held until the last chunk
        with multiprocessing.get_context("fork").Pool(processes, maxtasksperchild=1) as pool:
            results = pool.map(_apply_chunk, pieces, chunksize=1)
    finally:
        _JOB = None
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
