"""Scheduled re-check: find released subjects who have since withdrawn, write the deletion
notice for each affected release. Parameter: the policy path (never records)."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from deidflow.policy import load_policy
from deidflow.recheck import write_deletion_notices


@task(name="find withdrawals since release", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def notices(policy_path: str) -> list[str]:
    return [str(p) for p in write_deletion_notices(load_policy(policy_path))]


@flow(name="deidflow-withdrawal-recheck", persist_result=False)
def recheck_flow(policy_path: str) -> list[str]:
    written = notices(policy_path)
    lines = "\n".join(f"- `{p}`" for p in written) or "- none: no released subject has withdrawn since"
    create_markdown_artifact(key="withdrawal-recheck", markdown=f"# Deletion notices\n\n{lines}\n",
                             description="deletion notices written (paths only)")
    return written
