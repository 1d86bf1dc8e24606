"""One release: a plan of stages that pass a work directory, not data.

    prepare   → read & check inputs, derive columns, consent gate     prepare.py
    search    → frequency table, generalisation levels, suppression    search.py
    transform → every column's technique, aggregates (staging dir)     transform.py
    validate  → Great Expectations gate on the staged release          validate.py
    publish   → review page, signed manifest, atomic rename            publish.py

`plan.py` describes the sequence once, as data; `executor.py` runs it in this process and
`flows/release.py` runs it as a Prefect flow (per-partition steps mapped on Dask).
`state.py` holds the run state and its pinned policy; `workdir.py` owns every path of a run
(`WorkDir`); `engines.py` the engines behind one partition interface (in-process or
partitioned on Dask), which the stages ask instead of branching on the engine's name.

The stage functions are exported here under their stage names (`release.prepare(...)`,
`release.validate(...)`), so `from deidflow.release.validate import …` is how to reach a
stage module's own names.
"""

from __future__ import annotations

from deidflow.release.executor import run_release
from deidflow.release.plan import PLAN, Step, discard, fault_injection, plan_for, run_step
from deidflow.release.prepare import finish_prepare, gate_partition, prepare, registry_url, write_events
from deidflow.release.publish import ReleaseSummary, build_record, publish, publish_release, summarise
from deidflow.release.search import frequency_partition, search
from deidflow.release.state import RunState, check_contract, pinned_policy
from deidflow.release.transform import (
    begin_transform, finish_transform, known_identifiers, released_table, transform, transform_partition,
)
from deidflow.release.validate import validate
from deidflow.release.workdir import WorkDir

__all__ = [
    "PLAN", "ReleaseSummary", "RunState", "Step", "WorkDir", "begin_transform", "build_record",
    "check_contract", "discard", "fault_injection", "finish_prepare", "finish_transform",
    "frequency_partition", "gate_partition", "known_identifiers", "pinned_policy",
    "plan_for", "prepare", "publish", "publish_release", "registry_url", "released_table",
    "run_release", "run_step", "search", "summarise", "transform", "transform_partition",
    "validate", "write_events",
]
