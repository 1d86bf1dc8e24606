"""CLI for provenance: `deidflow keys init`, `deidflow verify`, `deidflow releases list|due|purge`.

Mount with `register(app)` (adds the `keys` and `releases` groups and the `verify` command).
Exit status: 0 fine, 1 verification failed (the release does not match its manifest),
2 a user-fixable error (printed as where: what / Fix: how).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from deidflow.errors import DeidflowError

err = Console(stderr=True)
out = Console()
T = TypeVar("T")

keys_app = typer.Typer(help="Signing keys for release manifests.", no_args_is_help=True)
releases_app = typer.Typer(help="Past releases and their retention.", no_args_is_help=True)


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except DeidflowError as exc:
        err.print("[bold red]error:[/] ", end="")
        err.print(exc.render(), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None


@keys_app.command("init")
def keys_init(
    key: Optional[Path] = typer.Option(
        None, "--key", help="Where to write the private key (0600); default "
        ".deidflow/keys/signing.key (executor) or DIR/approver.key (approver)."
    ),
    role: str = typer.Option("executor", "--role", help="executor (signs releases; the flow's "
                             "key) or approver (the privacy officer's key, for deidflow approve)."),
    owner: Optional[str] = typer.Option(None, "--owner", help="Who holds the key (for the trust file)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Directory for the key pair "
                                           "(<role>.key and <role>.pub)."),
    trust: Optional[Path] = typer.Option(None, "--trust", help="Also list the new key, with its "
                                         "owner and role, in this trust file (created if missing)."),
) -> None:
    """Make an Ed25519 key pair: the release signing key, or a privacy officer's approver key.
    Refuses to overwrite."""
    from deidflow.manifest.signing import key_id, load_signing_key, short_key_id
    from deidflow.manifest.signing import generate_signing_keys
    from deidflow.manifest.trust import KeyRole, add_trusted_key

    def go() -> tuple[Path, Path, str]:
        try:
            kind = KeyRole(role)
        except ValueError:
            raise DeidflowError(f"unknown role {role!r}", key="--role",
                                fix="use executor or approver") from None
        if trust is not None and not owner:
            raise DeidflowError("a trust file entry needs the key's owner", key="--owner",
                                fix='add --owner "who holds this key"')
        path = key or ((out_dir / f"{kind.value}.key") if out_dir else
                       Path(".deidflow/keys/signing.key" if kind is KeyRole.executor else
                            ".deidflow/keys/approver.key"))
        private, public = generate_signing_keys(path)
        if trust is not None:
            add_trusted_key(trust, public, owner=owner or "", role=kind)
        return private, public, key_id(load_signing_key(private).public_key())

    private, public, kid = _guard(go)
    out.print(f"private key  {private}  (mode 0600: keep it with "
              f"{'the hospital' if role == 'executor' else (owner or 'its owner') + ', off the flow machine'})",
              soft_wrap=True)
    out.print(f"public key   {public}  (give this to recipients so they can verify)", soft_wrap=True)
    out.print(f"key id       {kid}", soft_wrap=True)
    out.print(f"fingerprint  {short_key_id(kid)}", soft_wrap=True)
    if role != "executor":
        out.print(f"role         {role}" + (f" ({owner})" if owner else ""), soft_wrap=True)
    if trust is not None:
        out.print(f"trusted in   {trust}", soft_wrap=True)
    elif role != "executor":
        out.print(f"next         deidflow keys trust {public} --owner \"{owner or 'NAME'}\" "
                  f"--role {role} --trust TRUST_FILE", soft_wrap=True, markup=False)
    out.print("backup       copy the private key to the hospital's key custodian, offline (never "
              "beside the releases); without it no new release verifies under this key", soft_wrap=True)


@keys_app.command("trust")
def keys_trust(
    public_key: Path = typer.Argument(..., help="The key's .pub file."),
    owner: str = typer.Option(..., "--owner", help="Who holds the private key."),
    role: str = typer.Option(..., "--role", help="executor or approver."),
    trust: Path = typer.Option(..., "--trust", help="The trust file (created if missing)."),
) -> None:
    """List a public key with its owner and role in a trust file (once; one key, one role)."""
    from deidflow.manifest.trust import KeyRole, add_trusted_key

    def go() -> bool:
        try:
            kind = KeyRole(role)
        except ValueError:
            raise DeidflowError(f"unknown role {role!r}", key="--role",
                                fix="use executor or approver") from None
        return add_trusted_key(trust, public_key, owner=owner, role=kind)

    added = _guard(go)
    out.print(f"{'added' if added else 'already listed'}: {public_key} as {role} of {owner} in {trust}",
              soft_wrap=True, highlight=False, markup=False)


_PUBLIC_KEY_HELP = "The hospital's public key (.pub), given to you separately; repeatable."
_TRUST_HELP = "A trust file listing the hospital's signing keys with their owners and roles."
_POLICY_HELP = "A release policy: trust its keys.trust_file, else its signing key's .pub."


def _anchors(public_key: list[Path] | None, trust: Path | None, policy: Path | None):
    from deidflow.manifest.trust import resolve_anchors

    return resolve_anchors(public_keys=public_key or (), trust_file=trust, policy=policy)


def verify(
    release_dir: Path = typer.Argument(..., help="A release directory (holding manifest.json)."),
    public_key: Optional[list[Path]] = typer.Option(None, "--public-key", "-k", help=_PUBLIC_KEY_HELP),
    trust: Optional[Path] = typer.Option(None, "--trust", help=_TRUST_HELP),
    policy: Optional[Path] = typer.Option(None, "--policy", help=_POLICY_HELP),
    shipped_key: bool = typer.Option(
        False, "--shipped-key",
        help="Check integrity with the key shipped inside the release (signer.pub). Proves "
        "nothing about who signed: exits 1 even when every file matches.",
    ),
) -> None:
    """Recompute every file's SHA-256 and check that a key the hospital trusts signed it.

    Trusted keys come from --public-key, --trust, --policy, $DEIDFLOW_TRUST_FILE, or
    .deidflow/trust.yaml / .deidflow/keys/signing.pub in the working directory. Exit 0 only
    for an intact release signed by a trusted key; 1 otherwise; 2 for an operator error."""
    from deidflow.manifest.signing import short_key_id
    from deidflow.manifest.verify import verify_release

    if not release_dir.is_dir():
        _guard(lambda: _raise(DeidflowError(
            "not a directory", file=str(release_dir),
            fix="pass the release directory (the one holding manifest.json)")))
    if shipped_key:
        if public_key or trust or policy:
            _guard(lambda: _raise(DeidflowError(
                "--shipped-key checks with the release's own key; it cannot be combined with "
                "trusted keys", key="--shipped-key", fix="drop --shipped-key to verify who signed")))
        report = _guard(lambda: verify_release(release_dir))
        colour = "yellow" if report.integrity_ok else "bold red"
        err.print(f"[{colour}]{report.summary() if report.integrity_ok else 'verification FAILED'}[/]",
                  highlight=False, soft_wrap=True)
        for line in report.messages():
            err.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    # A missing or malformed trust anchor, or one inside the release, is the operator's to fix
    # (exit 2), not evidence about the release (exit 1).
    anchors = _guard(lambda: _anchors(public_key, trust, policy))
    report = _guard(lambda: verify_release(release_dir, anchors=anchors))
    if report.ok:
        out.print(f"[green]{report.summary()}[/]", highlight=False, soft_wrap=True)
        if report.record is not None:
            r = report.record
            out.print(
                f"release {r.release_id} for {r.recipient.name}, agreement {r.agreement_id}, "
                f"purpose {r.purpose}",
                highlight=False,
                markup=False,
            )
        if report.record is not None and report.record.approval is not None:
            a = report.record.approval
            out.print(f"approved by {report.approver_owner} (key {short_key_id(a.key_id)}) at "
                      f"{a.approved_at.isoformat(timespec='seconds')}; comment: {a.comment or '(none)'}",
                      highlight=False, markup=False, soft_wrap=True)
        elif report.record is not None:
            out.print("approval: not required by the release's policy", highlight=False)
        return
    err.print("[bold red]verification FAILED[/]")
    for line in report.messages():
        # soft_wrap: one finding per line, file names unbroken (people grep these)
        err.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(1)


def _index_anchors(public_key, trust, policy):
    """Trusted keys for a listing; none found lists releases as untrusted (never verified)."""
    from deidflow.manifest.trust import TrustError

    try:
        return _anchors(public_key, trust, policy), None
    except TrustError as exc:
        if public_key or trust or policy:
            raise
        return None, exc.message


@releases_app.command("list")
def releases_list(
    root: Path = typer.Argument(Path("releases"), help="The output directory of releases."),
    public_key: Optional[list[Path]] = typer.Option(None, "--public-key", "-k", help=_PUBLIC_KEY_HELP),
    trust: Optional[Path] = typer.Option(None, "--trust", help=_TRUST_HELP),
    policy: Optional[Path] = typer.Option(None, "--policy", help=_POLICY_HELP),
    check: bool = typer.Option(True, "--verify/--no-verify", help="Recompute digests (slower on large releases)."),
) -> None:
    """Past releases with their integrity and retention status ("verified" = intact and signed
    by a trusted key)."""
    from deidflow.manifest.retention import ReleaseIndex

    anchors, no_anchor = _guard(lambda: _index_anchors(public_key, trust, policy)) if check else (None, None)

    def entries_of():
        return ReleaseIndex(root, anchors=anchors).releases(verify=check)

    entries = _guard(entries_of)
    t = Table(title=f"releases under {root}", title_justify="left")
    for col in ("release", "created", "recipient", "agreement", "status", "keep until"):
        # fold, never truncate: a release id cut to "dsa-2026-0…" identifies nothing
        t.add_column(col, overflow="fold")
    for x in entries:
        colour = {"verified": "green", "tampered": "bold red", "unsigned": "red",
                  "untrusted": "bold red"}.get(x.status, "yellow")
        t.add_row(
            x.path.name,  # what `releases purge` takes; a differing signed id is listed below
            _day(x.created_at),
            x.recipient or "?",
            x.agreement_id or "?",
            f"[{colour}]{x.status}[/]",
            _day(x.retention_until),
        )
    out.print(t)
    for x in entries:
        for problem in x.problems:
            out.print(f"{x.path.name}: {problem}", highlight=False, markup=False, soft_wrap=True)
    if not entries:
        out.print("no releases found")
    elif no_anchor:
        out.print(
            f"[yellow]{no_anchor}.[/] No release is shown as verified; pass --public-key, "
            "--trust or --policy with the hospital's keys.", soft_wrap=True, highlight=False,
        )
    elif anchors is not None:
        out.print(f"signatures checked against trusted keys from {anchors.origin}",
                  soft_wrap=True, highlight=False, markup=False)
    if policy is not None:
        _list_awaiting(policy)
    else:
        out.print("releases awaiting approval: pass --policy POLICY to list them", style="dim")


def _list_awaiting(policy: Path) -> None:
    """Releases staged for the privacy officer (deidflow.release.approval), after expiry."""
    from deidflow.policy import load_policy
    from deidflow.release.approval import expire_stale, pending
    from deidflow.release.workdir import private_dir

    def go():
        private = private_dir(load_policy(policy))
        return expire_stale(private), pending(private)

    expired, staged = _guard(go)
    for x in expired:
        out.print(f"staged release {x.staged_id} expired (not decided by {_day(x.expires_at)}) "
                  "and was removed; the removal is recorded", highlight=False, markup=False, soft_wrap=True)
    if not staged:
        out.print("no release is awaiting approval")
        return
    t = Table(title="awaiting approval", title_justify="left")
    for col in ("staged id", "recipient", "created", "expires", "status"):
        t.add_column(col, overflow="fold")
    for x in staged:
        t.add_row(x.staged_id, x.recipient, _day(x.created_at), _day(x.expires_at),
                  "[yellow]awaiting approval[/]")
    out.print(t)
    for x in staged:
        out.print(f"{x.staged_id}: review page {x.review_page}", highlight=False, markup=False,
                  soft_wrap=True)


@releases_app.command("due")
def releases_due(
    root: Path = typer.Argument(Path("releases"), help="The output directory of releases."),
    public_key: Optional[list[Path]] = typer.Option(None, "--public-key", "-k", help=_PUBLIC_KEY_HELP),
    trust: Optional[Path] = typer.Option(None, "--trust", help=_TRUST_HELP),
    policy: Optional[Path] = typer.Option(None, "--policy", help=_POLICY_HELP),
) -> None:
    """Releases whose retention period (at least 3 years) has passed (signed by a trusted key:
    the dates of any other release cannot be trusted)."""
    from deidflow.manifest.retention import ReleaseIndex

    due = _guard(lambda: ReleaseIndex(root, anchors=_anchors(public_key, trust, policy)).due())
    for x in due:
        out.print(f"{x.release_id}\tkept until {_day(x.retention_until)}\t{x.path}")
    if not due:
        out.print("nothing is due for deletion")


@releases_app.command("purge")
def releases_purge(
    release_id: str = typer.Argument(..., help="The release to delete."),
    root: Path = typer.Option(Path("releases"), "--root", help="The output directory of releases."),
    private_root: Optional[Path] = typer.Option(
        None, "--private", help="The policy's output.private_directory (its exclusions/<release_id>.csv is deleted too)."
    ),
    public_key: Optional[list[Path]] = typer.Option(None, "--public-key", "-k", help=_PUBLIC_KEY_HELP),
    trust: Optional[Path] = typer.Option(None, "--trust", help=_TRUST_HELP),
    policy: Optional[Path] = typer.Option(None, "--policy", help=_POLICY_HELP),
) -> None:
    """Delete a release whose retention period has passed; refuses anything younger, and any
    release not signed by a trusted key (its dates cannot be trusted)."""
    from deidflow.manifest.retention import ReleaseIndex

    def go():
        anchors = _anchors(public_key, trust, policy)
        return ReleaseIndex(root, private_root, anchors=anchors).purge(release_id)

    removed = _guard(go)
    for p in removed:
        out.print(f"deleted {p}")


def register(app: typer.Typer) -> None:
    """Mount these commands on the main `deidflow` app."""
    app.add_typer(keys_app, name="keys")
    app.add_typer(releases_app, name="releases")
    app.command("verify")(verify)


def _raise(exc: DeidflowError) -> None:
    raise exc


def _day(dt: datetime | None) -> str:
    return "?" if dt is None else dt.astimezone(timezone.utc).strftime("%Y-%m-%d")
