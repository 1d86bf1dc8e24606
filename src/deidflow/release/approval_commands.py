"""CLI of the approval step: `deidflow approve`, `deidflow reject`, and what `deidflow release`
prints when it staged a release for the privacy officer (`deidflow.release.approval`).

Exit status: 0 done (or, for `approve` without an id, nothing awaiting approval); 2 a refusal
or user-fixable error (nothing was published or discarded); 1 the officer declined at the
confirmation prompt.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from deidflow.errors import DeidflowError

out = Console()
err = Console(stderr=True)


def _guard(fn):
    try:
        return fn()
    except DeidflowError as exc:
        err.print("[bold red]error:[/] ", end="")
        err.print(exc.render(), highlight=False, markup=False, soft_wrap=True)
        err.print("Nothing was published or discarded.", style="dim")
        raise typer.Exit(2) from None


def print_staged(s, policy: Path) -> None:
    """After a run that staged its release: where the review page is and what to run next."""
    title = f"release {s.release_id} " + ("is still awaiting approval (staged earlier; nothing new)"
                                          if s.already_released else "staged: awaiting approval")
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for row in s.figure_rows():
        t.add_row(*row)
    out.print(t)
    p = shlex.quote(str(policy))
    for label, value in (
        ("staged id", s.staged_id),
        ("review page", s.staged_review),
        ("expires", s.approval_expires.isoformat(timespec="minutes") if s.approval_expires else "?"),
        ("approve", f"deidflow approve {s.staged_id} --policy {p} --key OFFICER.key [--comment TEXT]"),
        ("reject", f"deidflow reject {s.staged_id} --policy {p} --key OFFICER.key --reason TEXT"),
    ):
        out.print(f"{label + ':':<13}{value}", soft_wrap=True, highlight=False, markup=False)
    out.print("Nothing is in the output directory until the privacy officer approves.", style="dim")


def _only_pending(policy: Path) -> str | None:
    from deidflow.policy import load_policy
    from deidflow.release.approval import pending
    from deidflow.release.workdir import private_dir

    staged = pending(private_dir(load_policy(policy)))
    if len(staged) > 1:
        raise DeidflowError(
            f"{len(staged)} releases await approval: " + ", ".join(s.staged_id for s in staged),
            key="STAGED_ID", fix="name the one to decide: deidflow approve STAGED_ID ...")
    return staged[0].staged_id if staged else None


def _show(summary) -> None:
    s = summary
    t = Table(title=f"staged release {s.staged_id}: approve?", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("recipient", s.recipient), ("purpose", s.purpose), ("agreement", s.agreement_id),
        ("release model", s.release_model), ("subjects in", f"{s.subjects_in:,}"),
        ("excluded for consent", f"{s.excluded_for_consent:,}"), ("suppressed (risk)", f"{s.suppressed:,}"),
        ("released subjects", f"{s.released_subjects:,}"),
        ("released rows", ", ".join(f"{t} {n:,}" for t, n in s.released_rows.items())),
        ("k required / reached", f"{s.k_required} / {s.k_reached}"),
        ("max class risk", str(s.max_class_risk)),
        ("validation", "passed" if s.validation_ok else "FAILED"),
        ("limits override", "none" if not s.limits_override else
         f"{s.limits_override.get('reason', '')} — " + "; ".join(map(str, s.limits_override.get('departures', [])))),
        ("staged", s.created_at.isoformat(timespec="minutes")),
        ("expires", s.expires_at.isoformat(timespec="minutes")),
        ("executor", s.executor), ("approver (you)", s.approver),
    ]
    for k, v in rows:
        t.add_row(k, str(v))
    out.print(t, highlight=False)
    out.print(f"review page: {s.review_page}", soft_wrap=True, highlight=False, markup=False)


def approve(
    staged_id: Optional[str] = typer.Argument(None, help="The staged release (deidflow releases list "
                                              "--policy POLICY); optional when exactly one awaits."),
    policy: Path = typer.Option(..., "--policy", help="The release policy the release ran under."),
    key: Path = typer.Option(..., "--key", help="The privacy officer's private key (role approver)."),
    comment: str = typer.Option("", "--comment", help="Kept, signed, in the manifest and on the review page."),
    trust: Optional[Path] = typer.Option(None, "--trust", help="Trust file (default: the policy's "
                                         "keys.trust_file, $DEIDFLOW_TRUST_FILE, .deidflow/trust.yaml)."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation (scripts)."),
) -> None:
    """Approve a staged release: check it, add the approver's signature, publish it."""
    from deidflow.release import approval

    if staged_id is None:
        staged_id = _guard(lambda: _only_pending(policy))
        if staged_id is None:
            out.print("no release is awaiting approval")
            return

    def ask(summary) -> bool:
        _show(summary)
        return True if yes else typer.confirm("Approve and publish this release?", default=False)

    def go():
        try:
            return approval.approve(policy, staged_id, key, comment=comment, trust=trust, confirm=ask)
        except approval.ApprovalError as exc:
            if exc.key == "confirmation":
                out.print("not approved; nothing was published")
                raise typer.Exit(1) from None
            raise

    s = _guard(go)
    out.print(f"[green]approved and published release {s.release_id}[/]", highlight=False)
    for label, path in (("release", s.release_dir), ("manifest", s.manifest), ("review page", s.review)):
        out.print(f"{label + ':':<13}{path}", soft_wrap=True, highlight=False, markup=False)


def reject(
    staged_id: str = typer.Argument(..., help="The staged release to discard."),
    policy: Path = typer.Option(..., "--policy", help="The release policy the release ran under."),
    key: Path = typer.Option(..., "--key", help="The privacy officer's private key (role approver)."),
    reason: str = typer.Option(..., "--reason", help="Why: kept, signed, in the rejection record."),
    trust: Optional[Path] = typer.Option(None, "--trust", help="Trust file (as for approve)."),
) -> None:
    """Reject a staged release: its data is discarded, a signed rejection record is kept."""
    from deidflow.release import approval

    record = _guard(lambda: approval.reject(policy, staged_id, key, reason=reason, trust=trust))
    out.print(f"rejected {staged_id}: staged data discarded, nothing published", highlight=False)
    out.print(f"record:      {record}", soft_wrap=True, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("approve")(approve)
    app.command("reject")(reject)
