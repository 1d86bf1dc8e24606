"""The release flow run's wait for the privacy officer (issue 20), on a Prefect server.

A release whose policy requires approval ends its plan as a *staged* release
(`deidflow.release.approval`). On a real Prefect server the flow run then pauses where it is:
the UI shows it Paused, with a state message and a `release-approval` artifact naming the
staged id, the staged review page's path and the approve/reject commands. `deidflow approve`
or `deidflow reject` records the decision and resumes the run (`resume_if_paused`); the run
then reports the published release, or ends saying the release was rejected or expired.

Pause, not suspend. `suspend_flow_run` exits the process and needs a deployment to
reschedule the run from, and persisted results to resume into; `deidflow release` runs the
flow in its own process with no deployment and no worker, and the flow persists no results
(house rule: parameters and results are paths, ids and small summaries). A pause keeps the
process alive and polling, which works the same for the CLI and for `deidflow serve`.

On Prefect's temporary (ephemeral) server nobody could see or resume a paused run, and the
server dies with the process: there the flow ends at once, reporting "awaiting approval", and
the officer's decision is taken from the command line alone. Which server the run is attached
to is asked of the Prefect client the run itself uses (`server_type`), not guessed from the
environment.

The wait is ours rather than `pause_flow_run`'s, for three reasons: the Paused state carries a
message (Prefect's own pause has none) so the UI names the review page; the decision is read
from the staged record (`decision_of`) at every poll, so a decision recorded while the server
was unreachable still ends the wait; and the UI's own Resume button cannot publish anything:
a run resumed with no decision recorded pauses again. The server's pause deadline is set a
grace period after the staged release's expiry, so that the run itself finds the expiry,
removes the staged release and ends saying so; the server's deadline only fails a run whose
process has died.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from deidflow.errors import GateFailed

#: How often a paused run looks for the decision (the staged record, then the server).
POLL_SECONDS = 3.0
#: The server fails a paused run this long after the staged release's expiry: only when the
#: process that should have found the expiry itself is gone.
SERVER_GRACE = timedelta(minutes=15)
#: A decision found in the staged record while the run is still paused: approve/reject resume
#: it right after recording; the run resumes itself only when that has not come by then.
SELF_RESUME_AFTER = 20.0
ARTIFACT_KEY = "release-approval"
_KEY_PREFIX = "deidflow-approval:"

log = logging.getLogger(__name__)


class ApprovalEnded(GateFailed):
    """The staged release was rejected, expired, or the run stopped waiting: nothing published."""


# --- in the flow run --------------------------------------------------------------------------

def attached_server() -> str | None:
    """The API URL of the real Prefect server (or Cloud) this flow run reports to, or None on
    the temporary ephemeral server (and outside a flow run)."""
    from prefect.client.base import ServerType
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return None
    with get_client(sync_client=True) as client:
        if client.server_type in (ServerType.SERVER, ServerType.CLOUD):
            return str(client.api_url).rstrip("/")
    return None


def commands(staged_id: str, policy_path: str | Path) -> tuple[str, str]:
    """The officer's two commands for this staged release, as the CLI spells them."""
    return (f"deidflow approve {staged_id} --policy {policy_path} --key OFFICER.key",
            f"deidflow reject {staged_id} --policy {policy_path} --key OFFICER.key --reason TEXT")


def pause_message(staged, policy_path: str | Path) -> str:
    approve, reject = commands(staged.staged_id, policy_path)
    return (f"awaiting approval of staged release {staged.staged_id} until "
            f"{staged.expires_at.isoformat(timespec='minutes')}; review page: {staged.review_page}; "
            f"approve: {approve}; reject: {reject}")


def approval_markdown(staged, policy_path: str | Path) -> str:
    approve, reject = commands(staged.staged_id, policy_path)
    rows = [
        ("Staged release", f"`{staged.staged_id}`"),
        ("Review page", f"`{staged.review_page}`"),
        ("Expires", staged.expires_at.isoformat(timespec="minutes")),
        ("Approve", f"`{approve} [--comment TEXT]`"),
        ("Reject", f"`{reject}`"),
    ]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return ("# Awaiting the privacy officer's approval\n\n"
            "This run is paused. The staged release is sealed and signed by the executor and "
            "kept in the private directory; nothing is in the output directory yet. Read the "
            "review page, then approve or reject it from the command line: that resumes this "
            "run. The UI's Resume button does not approve: a run resumed without a decision "
            f"pauses again.\n\n| | |\n|---|---|\n{body}\n")


def await_approval(policy_path: str, result: dict[str, Any]) -> dict[str, Any]:
    """After the release plan: a staged release on a real server waits, paused, for the
    officer's decision; anything else is returned unchanged. Approved: the published release's
    summary. Rejected, expired, or the run cancelled while waiting: `ApprovalEnded`."""
    staged_id = result.get("staged_id")
    if not staged_id:
        return result
    api_url = attached_server()
    if api_url is None:
        return result  # the temporary server: the flow ends "awaiting approval"

    from prefect.artifacts import create_markdown_artifact
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    from deidflow.policy import load_policy
    from deidflow.release.approval import load_staged, record_flow_run
    from deidflow.release.workdir import private_dir

    loaded = load_policy(policy_path)
    private = private_dir(loaded)
    run_id = flow_run.get_id()
    record_flow_run(private, staged_id, run_id, api_url)
    staged = load_staged(private, staged_id)
    message = pause_message(staged, loaded.path)
    create_markdown_artifact(key=ARTIFACT_KEY, markdown=approval_markdown(staged, loaded.path),
                             description=f"staged release {staged_id} awaits the privacy officer")
    approve, reject = commands(staged_id, loaded.path)
    _tell(f"release {staged_id} is staged and awaits the privacy officer: flow run {run_id} is "
          f"paused on the Prefect server {api_url} until it is decided (at the latest "
          f"{staged.expires_at.isoformat(timespec='minutes')}).\n"
          f"  review page: {staged.review_page}\n  approve:     {approve}\n  reject:      {reject}")
    with get_client(sync_client=True) as client:
        decision = _wait(client, run_id, staged, private, message)
    # as decided: the record's copy (an expiry, say, is the one the removal was judged by)
    return _finish(decision, load_staged(private, staged_id), loaded, result)


def _wait(client, run_id: str, staged, private: Path, message: str) -> str:
    """Pause the run and poll until a decision is recorded (or the staged release expires)
    and the run is resumed."""
    from deidflow.release.approval import decision_of

    away = [False]

    def server_state():
        try:
            state = client.read_flow_run(run_id).state
        except Exception as exc:  # noqa: BLE001 - a server restart must not end a days-long wait
            if not away[0]:
                log.warning("Prefect server unreachable while awaiting approval (%s); the staged "
                            "record is still checked", type(exc).__name__)
            away[0] = True
            return None
        away[0] = False
        return state

    pauses, decided_at = 0, None
    _pause(client, run_id, staged, message, pauses)
    while True:
        decision = decision_of(private, staged.staged_id)  # expires a stale one, too
        state = server_state()
        if decision is None and state is not None and state.is_running():
            decision = decision_of(private, staged.staged_id)  # approve records, then resumes
            if decision is None:
                # Resumed from the UI with no decision recorded: only approve/reject decides.
                pauses += 1
                _tell(f"flow run {run_id} was resumed without a decision on staged release "
                      f"{staged.staged_id}; paused again (deidflow approve/reject decides)")
                _pause(client, run_id, staged, message, pauses)
        if decision is not None:
            if state is None or not state.is_paused():
                return decision  # resumed by approve/reject (or the server is away)
            # Still paused: approve/reject resume the run right after recording; resume it
            # ourselves when that has not come (the server was unreachable for them), and at
            # once for an expiry, which nobody else acts on.
            decided_at = decided_at or time.monotonic()
            if decision == "expired" or time.monotonic() - decided_at >= SELF_RESUME_AFTER:
                _resume_self(client, run_id)
                return decision
        elif state is not None and (state.is_cancelling() or state.is_final()):
            raise ApprovalEnded(
                f"the flow run stopped waiting ({state.name}); staged release {staged.staged_id} "
                f"still awaits a decision until {staged.expires_at.isoformat(timespec='minutes')}",
                file=str(staged.review_page),
                fix="approve or reject it with deidflow approve/reject; nothing was published")
        left = (staged.expires_at - datetime.now(timezone.utc)).total_seconds()
        time.sleep(min(POLL_SECONDS, max(left, 0.0) + 0.5))


def _pause(client, run_id: str, staged, message: str, n: int) -> None:
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Paused

    state = Paused(pause_expiration_time=staged.expires_at + SERVER_GRACE, reschedule=False,
                   pause_key=f"{_KEY_PREFIX}{staged.staged_id}:{n}", message=message)
    answer = client.set_flow_run_state(run_id, state)
    if answer.status != SetStateStatus.ACCEPT:
        reason = getattr(answer.details, "reason", None) or answer.status.value
        raise ApprovalEnded(
            f"the Prefect server refused to pause the run: {reason}", file=str(staged.review_page),
            fix=f"staged release {staged.staged_id} awaits a decision all the same: deidflow "
            "approve/reject")


def _resume_self(client, run_id: str) -> None:
    """The decision is recorded but the run is still Paused (the approve command could not
    reach the server, or its resume raced ours): resume it so that it can finish."""
    try:
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_paused():
            client.resume_flow_run(run_id)
    except Exception as exc:  # noqa: BLE001 - the flow's own end will report the server
        log.warning("could not resume flow run %s itself (%s)", run_id, type(exc).__name__)


def _finish(decision: str, staged, loaded, result: dict[str, Any]) -> dict[str, Any]:
    from prefect.artifacts import create_markdown_artifact

    from deidflow.manifest.verify import read_record_unverified
    from deidflow.release.publish import ReleaseSummary
    from deidflow.release.workdir import output_root

    if decision == "approved":
        final = output_root(loaded) / staged.release_id
        record = read_record_unverified(final)
        if record is None:
            raise ApprovalEnded(f"release {staged.release_id} was approved but is not where it was "
                                "published", file=str(final),
                                fix="run deidflow verify on the output directory; see the approval record")
        summary = ReleaseSummary.from_record(record, final)
        create_markdown_artifact(key=ARTIFACT_KEY, description=f"release {staged.release_id} approved",
                                 markdown=f"# Approved and published\n\nRelease `{staged.release_id}` "
                                 f"was approved and published at `{final}`.\n")
        _tell(f"release {staged.release_id} approved and published: {final}")
        return summary.model_dump(mode="json") | {"timings": result.get("timings", {})}
    create_markdown_artifact(key=ARTIFACT_KEY, description=f"staged release {staged.staged_id} {decision}",
                             markdown=f"# {decision.capitalize()}\n\nStaged release `{staged.staged_id}` "
                             f"was {decision}; nothing was published.\n")
    if decision == "rejected":
        raise ApprovalEnded(
            f"staged release {staged.staged_id} was rejected by the privacy officer; nothing was "
            "published", key="release.approval",
            fix="read the signed rejection record (deidflow releases list --policy POLICY), change "
            "what the officer objected to, and run the release again")
    raise ApprovalEnded(
        f"staged release {staged.staged_id} expired: not decided by "
        f"{staged.expires_at.isoformat(timespec='minutes')} (the policy's approval_days); it was "
        "removed and nothing was published", key="release.approval_days",
        fix="run the release again to stage it anew, and have the privacy officer decide in time")


def _tell(text: str) -> None:
    """To the run's log (the Prefect UI); and to the terminal when the CLI has quietened
    Prefect's loggers, so the operator sees that `deidflow release` is waiting, and why."""
    from prefect import get_run_logger

    logger = get_run_logger()
    logger.warning(text)
    if not logging.getLogger("prefect.flow_runs").isEnabledFor(logging.WARNING):
        print(text, file=sys.stderr, flush=True)


# --- from `deidflow approve` / `deidflow reject` ----------------------------------------------

def resume_if_paused(staged, *, warn: Callable[[str], None] | None = None,
                     say: Callable[[str], None] | None = None) -> str:
    """Resume the flow run paused on this staged release's decision, if any. The decision is
    already recorded when this is called, so a Prefect server that is down or refuses only
    costs a warning (the paused run also finds the decision in the staged record, and resumes
    itself after `SELF_RESUME_AFTER`). Returns what happened: no-run, resumed, not-paused, other-pause, unreachable,
    refused."""
    if not getattr(staged, "flow_run_id", None) or not getattr(staged, "prefect_api_url", None):
        return "no-run"
    warn, say = warn or _warn, say or _say
    url, run_id = staged.prefect_api_url, staged.flow_run_id
    try:
        from uuid import UUID

        from prefect.client.orchestration import SyncPrefectClient
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

        with SyncPrefectClient(url, api_key=PREFECT_API_KEY.value(),
                               auth_string=PREFECT_API_AUTH_STRING.value(),
                               httpx_settings={"timeout": 10}) as client:
            state = client.read_flow_run(UUID(run_id)).state
            if state is None or not state.is_paused():
                return "not-paused"  # already resumed (by the run itself) or ended
            key = state.state_details.pause_key or ""
            if not key.startswith(f"{_KEY_PREFIX}{staged.staged_id}:"):
                warn(f"flow run {run_id} is paused, but not on staged release {staged.staged_id}; "
                     "left paused")
                return "other-pause"
            answer = client.resume_flow_run(UUID(run_id))
            if answer.status != SetStateStatus.ACCEPT:
                reason = getattr(answer.details, "reason", None) or answer.status.value
                warn(f"the Prefect server did not resume flow run {run_id}: {reason}. The decision "
                     "is recorded all the same.")
                return "refused"
            say(f"resumed the release's paused flow run {run_id} on {url}")
            return "resumed"
    except Exception as exc:  # noqa: BLE001 - Prefect down must not undo a recorded decision
        warn(f"could not reach the Prefect server at {url} to resume flow run {run_id} "
             f"({type(exc).__name__}). The decision is recorded; the paused run finds it at its "
             "next check and resumes itself (or fails at its pause deadline if its process is gone).")
        return "unreachable"


def _say(text: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(text, style="dim", markup=False, highlight=False, soft_wrap=True)


def _warn(text: str) -> None:
    from rich.console import Console

    console = Console(stderr=True)
    console.print("warning: ", style="yellow", end="")
    console.print(text, markup=False, highlight=False, soft_wrap=True)
