"""The release flow: the diagram of one release, one task per stage.

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
# the interpreter's last garbage collection at exit walks and frees ~400k objects for 1-1.5 s
# (3 s on a busy host), only to free memory the OS takes back at exit anyway. Freezing them
# first (atexit runs before that collection) skips it; every file the run writes is closed by
# then, and atexit handlers (Prefect's event and log flushes among them) still run.
atexit.register(gc.freeze)

IO = dict(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, persist_result=False)
GATE = dict(retries=0, cache_policy=NO_CACHE, persist_result=False)


@task(name="prepare: read inputs, consent snapshot", **GATE)
def prepare(policy_path: str, as_of: datetime | None, engine: str) -> str:
    return str(stages.prepare(policy_path, as_of=as_of, flow_run_id=flow_run.get_id(), engine=engine))


@task(name="consent gate (partition)", **GATE)
def gate_partition(work: str, index: int) -> dict:
    return stages.gate_partition(Path(work), index)


@task(name="frequency table (partition)", **IO)
def frequency_partition(work: str, index: int) -> str:
    return stages.frequency_partition(Path(work), index)


@task(name="search: generalisation and suppression", **GATE)
def search(work: str) -> dict:
    return stages.search(Path(work))


@task(name="transform: apply techniques (partition)", **IO)
def transform_partition(work: str, index: int) -> dict:
    return stages.transform_partition(Path(work), index)


@task(name="validate: Great Expectations gate", **GATE)
def validate(work: str) -> dict:
    return stages.validate(Path(work))


@task(name="publish: manifest, review, atomic rename", **IO)
def publish(work: str) -> str:
    existing = stages._existing_release(Path(work))
    if existing is not None:
        return str(existing.release_dir)
    return str(stages.publish_release(Path(work)))


def each_partition(fn, work: str, parts: list[int], engine: str) -> list:
    """A per-partition task over every partition. The Dask engine maps it onto the cluster.
    The memory engine has one partition: its task runs on the flow's own thread like every
    other stage (and like `run_release`), not through futures on a task-runner thread."""
    if engine != "dask":
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
        parts = list(range(stages.RunState.load(Path(work)).partitions))
        if engine == "dask":
            done = each_partition(gate_partition, work, parts, engine)
            stages.finish_prepare(Path(work), done)
            lap("consent gate (partitions)")
        each_partition(frequency_partition, work, parts, engine)
        lap("frequency table (partitions)")
        search(work)
        lap("search")
        stages.begin_transform(Path(work))
        each_partition(transform_partition, work, parts, engine)
        stages.finish_transform(Path(work))
        lap("transform (partitions)")
        validate(work)
        lap("validate")
        publish(work)
        lap("publish")
        summary = stages.summarise(Path(work))
    finally:
        stages.discard(Path(work))
    create_markdown_artifact(key="release-summary", markdown=summary_markdown(summary),
                             description="deidflow release summary (counts only, no identities)")
    get_run_logger().info("release %s published", summary.release_id)
    return {"release_id": summary.release_id, "release_dir": str(summary.release_dir),
            "released": summary.released, "k": summary.k, "timings": timings}


@flow(name="deidflow-release", log_prints=False, persist_result=False)
def release_flow(policy_path: str, as_of: datetime | None = None, engine: str = "memory") -> dict:
    return _release(policy_path, as_of, engine)


def dask_release_flow(n_workers: int = 2, cluster_address: str | None = None):
    """The release flow on a Dask cluster: a LocalCluster of `n_workers` processes, or an
    existing scheduler at `cluster_address`."""
    from prefect_dask import DaskTaskRunner

    runner = (DaskTaskRunner(address=cluster_address) if cluster_address else
              DaskTaskRunner(cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1,
                                             "processes": True, "dashboard_address": None}))
    return release_flow.with_options(task_runner=runner)


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
        ("Validation", "passed" if s.validation_ok else "FAILED"),
        ("Manifest", f"`{s.manifest}`"),
    ]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"# deidflow release\n\n| | |\n|---|---|\n{body}\n"
