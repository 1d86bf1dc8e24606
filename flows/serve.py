"""Deployments for `deidflow serve`: each flow on the cron its policy gives."""

from __future__ import annotations

from pathlib import Path

from deidflow.policy import LoadedPolicy


def deployments_for(loaded: LoadedPolicy, *, consent_drop: Path | None = None,
                    sync_cron: str = "*/15 * * * *") -> list:
    from flows.consent_sync import consent_sync_flow
    from flows.recheck import recheck_flow
    from flows.release import release_flow

    policy = loaded.policy
    tag = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in policy.release.agreement_id)
    params = {"policy_path": str(loaded.path)}
    deps = []
    if policy.schedule.release_cron:
        deps.append(release_flow.to_deployment(name=f"release-{tag}", cron=policy.schedule.release_cron,
                                               parameters=params))
    if policy.schedule.recheck_cron:
        deps.append(recheck_flow.to_deployment(name=f"recheck-{tag}", cron=policy.schedule.recheck_cron,
                                               parameters=params))
    if consent_drop is not None:
        deps.append(consent_sync_flow.to_deployment(
            name=f"consent-sync-{tag}", cron=sync_cron,
            parameters={"policy_path": str(loaded.path), "drop_dir": str(Path(consent_drop).resolve())}))
    return deps
