"""Consent sync: import every new consent file from the hospital's drop folder.

Parameters are paths only (Prefect stores them in clear text). Each file is one task: a
malformed file is moved to rejected/ and does not stop the others; an unreachable registry
fails the task (retried) and leaves the file for the next run. The work is in
deidflow.consent.sync, which the tests also call without Prefect.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from deidflow.consent.registry import ConsentRegistry, registry_url_for
from deidflow.consent.sync import import_dropped_file, pending_files, summarise
from deidflow.policy import load_policy


@task(name="import a consent file", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE,
      persist_result=False)
def import_file(policy_path: str, path: str) -> dict:
    registry = ConsentRegistry(registry_url_for(load_policy(policy_path)))
    try:
        return import_dropped_file(registry, Path(path))
    finally:
        registry.dispose()


@flow(name="deidflow-consent-sync", persist_result=False)
def consent_sync_flow(drop_dir: str, policy_path: str) -> dict:
    load_policy(policy_path)  # a bad policy fails the run before any file is touched
    results = [import_file(policy_path, str(p)) for p in pending_files(drop_dir)]
    summary = summarise(results)
    if summary["rejected"]:
        get_run_logger().warning("rejected consent files (see rejected/*.error.txt): %s",
                                 ", ".join(summary["rejected_files"]))
    lines = "\n".join(f"| {k} | {v} |" for k, v in summary.items() if k != "rejected_files")
    create_markdown_artifact(key="consent-sync", description="consent files imported (counts only)",
                             markdown=f"# Consent sync\n\n| | |\n|---|---|\n{lines}\n")
    return summary
