"""The release flow: a thin executor of the release plan (`deidflow.release.PLAN`).

Parameters are the policy *path*, an optional as-of time and the engine name: Prefect stores
flow parameters in clear text, so no record ever goes in. Tasks pass the private work
directory's path and return small summaries. I/O stages retry; gates (consent, search,
validation) never do, because a retried gate could only pass by accident. Nothing is cached:
inputs are files whose content the stages hash themselves.

Engines: `memory` reads each table whole (one partition). `dask` reads a co-partitioned
Parquet extract (`deidflow partition`) and maps the per-partition tasks — consent gate,
frequency counts, transform — over the partitions on a Dask cluster (prefect-dask); only the
small frequency table is merged for the search.
"""

from __future__ import annotations

import atexit
import gc
import time
from datetime import datetime
from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from deidflow import release as stages
from deidflow.redaction import no_values_in_failures, safe_task

task = safe_task(task)  # what a failed task leaves in Prefect's state and logs names no value

# A flow run's process exits when its run is over. With Prefect and Great Expectations loaded
# the interpreter's last garbage collection at exit walks and frees hundreds of thousands of
# objects, a pause of its own, only to free memory the OS takes back at exit anyway. Freezing them
# first (atexit runs before that collection) skips it; every file the run writes is closed by
# then, and atexit handlers (Prefect's event and log flushes among them) still run.
atexit.register(gc.freeze)

IO = dict(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, persist_result=False)
GATE = dict(retries=0, cache_policy=NO_CACHE, persist_result=False)


@task(name="prepare: read inputs, consent snapshot", **GATE)
def prepare(policy_path: str, as_of: datetime | None, engine: str) -> str:
    return str(stages.prepare(policy_path, as_of=as_of, flow_run_id=flow_run.get_id(), engine=engine))


def _as_task(fn, name: str, gate: bool, part: str):
    """A plan function as a task that takes the work directory's path (a string) and, per
    partition, its index, or, to merge, the partitions' small results."""
    if part == "each":
        def call(work: str, index: int):
            return fn(Path(work), index)
    elif part == "then":
        def call(work: str, results: list):
            return fn(Path(work), results)
    else:
        def call(work: str):
            return fn(Path(work))

    call.__name__ = call.__qualname__ = getattr(fn, "__name__", name).lstrip("_")
    return task(name=name, **(GATE if gate else IO))(call)


# One task per function of the plan (stages.PLAN), built once: the flow runs the same steps,
# in the same order, as the in-process executor (`stages.run_release`).
TASKS = {
    (step.name, part): _as_task(fn, f"{step.name}{suffix}", step.gate, part)
    for step in stages.PLAN
    for part, fn, suffix in (("run", step.run, ""), ("before", step.before, " (begin)"),
                              ("each", step.each, " (partition)"), ("then", step.then, " (merge)"))
    if fn is not None
}


def each_partition(fn, work: str, parts: list[int], engine: str) -> list:
    """A per-partition task over every partition. A distributed engine's partitions are
    mapped onto the cluster. Otherwise (the in-process engine has one partition) its task
    runs on the flow's own thread like every other stage (and like `run_release`), not
    through futures on a task-runner thread."""
    from deidflow.release.engines import engine_named

    if not engine_named(engine).distributed:
        return [fn(work, i) for i in parts]
    return list(fn.map(unmapped(work), parts).result())


@no_values_in_failures
def _release(policy_path: str, as_of: datetime | None, engine: str) -> dict:
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = round(now - clock[0], 3)
        clock[0] = now

    work = prepare(policy_path, as_of, engine)
    lap("prepare")
    try:
        summary = None
        for step in stages.plan_for(engine):
            stages.fault_injection(step.name)
            tasks = {part: TASKS[(step.name, part)] for part in ("run", "before", "each", "then")
                     if (step.name, part) in TASKS}
            shim = stages.Step(
                step.name,
                run=(lambda w, t=tasks.get("run"): t(str(w))) if "run" in tasks else None,
                before=(lambda w, t=tasks.get("before"): t(str(w))) if "before" in tasks else None,
                each=tasks.get("each"),
                then=(lambda w, r, t=tasks.get("then"): t(str(w), r)) if "then" in tasks else None,
            )
            summary = stages.run_step(shim, Path(work),
                                      lambda fn, parts: each_partition(fn, work, parts, engine))
            lap(step.name)
    finally:
        stages.discard(Path(work))
    create_markdown_artifact(key="release-summary", markdown=summary_markdown(summary),
                             description="deidflow release summary (counts only, no identities)")
    get_run_logger().info("release %s %s", summary.release_id, _outcome(summary))
    return summary.model_dump(mode="json") | {"timings": timings}


@flow(name="deidflow-release", log_prints=False, persist_result=False)
def release_flow(policy_path: str, as_of: datetime | None = None, engine: str = "memory") -> dict:
    result = _release(policy_path, as_of, engine)
    # A release staged for approval: on a real Prefect server the run pauses here until the
    # privacy officer decides (flows/approval_wait.py); elsewhere this returns it unchanged.
    return _await_approval(policy_path, result)


@no_values_in_failures
def _await_approval(policy_path: str, result: dict) -> dict:
    from flows.approval_wait import await_approval

    return await_approval(policy_path, result)


def dask_release_flow(n_workers: int = 2, cluster_address: str | None = None):
    """The release flow on a Dask cluster: a LocalCluster of `n_workers` processes, or an
    existing scheduler at `cluster_address`."""
    from prefect_dask import DaskTaskRunner

    runner = (DaskTaskRunner(address=cluster_address) if cluster_address else
              DaskTaskRunner(cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1,
                                             "processes": True, "dashboard_address": None}))
    return release_flow.with_options(task_runner=runner)


def _outcome(s: stages.ReleaseSummary) -> str:
    if s.staged_id:  # approval required: staged by the publish step, nothing in the output
        return (f"staged for approval as {s.staged_id} (review page {s.staged_review}); "
                "deidflow approve/reject decides")
    return "already published" if s.already_released else "published"


def summary_markdown(s: stages.ReleaseSummary) -> str:
    risk = s.risk_after
    rows = [
        ("Release", f"`{s.release_id}`"),
        ("Subjects in", s.subjects_in),
        ("Excluded for consent", s.excluded_for_consent),
        ("Suppressed (risk)", s.suppressed),
        ("Released subjects", s.released),
        ("k reached", s.k),
        ("Max class risk", risk.get("max_class_risk", risk.get("Rb", "n/a"))),
        ("Validation", s.validation_text),
        ("Manifest", f"`{s.manifest}`" if s.staged_id is None else
         f"awaiting approval: staged `{s.staged_id}`, review page `{s.staged_review}`"),
    ]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"# deidflow release\n\n| | |\n|---|---|\n{body}\n"
