"""The release plan: the stage sequence after prepare, once, as data (`PLAN`). Each `Step` is a
whole-run function or per-partition functions with their merge; `run_step` runs one step
given a way to run a function over the partitions. The in-process executor
(`executor.run_release`) and the Prefect flow (`flows/release.py`) both execute this plan;
the kill hook fires before every step in both.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from deidflow.errors import DeidflowError
from deidflow.release.engines import engine_named
from deidflow.release.state import RunState
from deidflow.release.workdir import WorkDir
from deidflow.release.prepare import finish_prepare, gate_partition
from deidflow.release.search import frequency_partition, search
from deidflow.release.transform import begin_transform, finish_transform, transform_partition
from deidflow.release.validate import validate
from deidflow.release.publish import publish
from deidflow.reference_tables import reference_inputs, release_reference_tables


def discard(work: Path) -> None:
    """End of a run, however it ended: no staging directory and no private copies remain."""
    try:
        WorkDir.of(work).discard()
    except (OSError, ValueError, TypeError, DeidflowError):
        pass
    shutil.rmtree(work, ignore_errors=True)  # a state that cannot be read: the directory still goes


@dataclass(frozen=True)
class Step:
    """One step of a release after prepare. `each` runs once per partition (mapped on Dask by
    the flow), between `before` and `then` (which gets the partitions' results); `run` is a
    whole-run step. `gate`: a step that decides (never retried by the flow). `needs`: the
    name of an engine's capability (`release.engines.Engine`) without which the step is left
    out of that engine's plan."""

    name: str
    run: Callable[[Path], Any] | None = None
    before: Callable[[Path], Any] | None = None
    each: Callable[[Path, int], Any] | None = None
    then: Callable[[Path, list], Any] | None = None
    gate: bool = True
    needs: str | None = None


def _search_after_frequencies(work: Path, _parts: list) -> dict[str, Any]:
    return search(work)


def _finish_transform(work: Path, _parts: list) -> str:
    return finish_transform(work)


PLAN: tuple[Step, ...] = (
    # An engine that reads its input whole gates its one partition inside prepare, while the
    # snapshot is read.
    Step("consent gate", each=gate_partition, then=finish_prepare, needs="gate_per_partition"),
    Step("search", each=frequency_partition, then=_search_after_frequencies),
    # Reference tables (no subject column): read and hashed before transform fixes the
    # release id (their digests are in it), released after the gate (deidflow.reference_tables).
    Step("reference inputs", run=reference_inputs),
    Step("transform", before=begin_transform, each=transform_partition, then=_finish_transform, gate=False),
    Step("validate", run=validate),
    Step("reference tables", run=release_reference_tables),
    Step("publish", run=publish, gate=False),
)


def plan_for(engine: str) -> tuple[Step, ...]:
    """The steps the named engine runs after prepare, in order."""
    capable = engine_named(engine)
    return tuple(step for step in PLAN if step.needs is None or getattr(capable, step.needs))


def partitions(work: Path) -> int:
    return RunState.load(work).partitions


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
