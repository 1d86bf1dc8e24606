"""The in-process executor: prepare, then every step of the plan in this process, partitions
one after another, without Prefect. The Prefect flow (`flows/release.py`) is the other
executor of the same plan.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable

from deidflow.release.prepare import prepare
from deidflow.release.publish import ReleaseSummary
from deidflow.release.plan import discard, fault_injection, plan_for, run_step


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
