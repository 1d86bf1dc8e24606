"""`deidflow consent …`: import consent files, inspect the registry, record a withdrawal, and
list past releases that contain a subject who has since withdrawn.

These commands run at the hospital, on the hospital's own registry, so `status SUBJECT` and
`withdrawn --subjects` may show subject ids; nothing here writes to a release or a manifest.

The registry is named either directly (``--registry URL``) or through a release policy
(``--policy POLICY.yaml``, whose relative SQLite path is read relative to the policy file, the
same way the release reads it). The CLI helpers are imported lazily: ``deidflow.cli`` mounts
this module while it is itself being imported.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich.table import Table

from deidflow.errors import ConsentError

consent_app = typer.Typer(
    help="Consent registry: import, status, withdraw, re-check.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

REGISTRY_HELP = "Registry URL: sqlite:///consent.db or postgresql+psycopg://user:pass@host/db."
POLICY_HELP = "Release policy (YAML) whose consent.registry names the registry."


class FileFormat(str, Enum):
    auto = "auto"
    csv = "csv"
    fhir = "fhir"


def _cli():
    from deidflow import cli

    return cli


def open_registry(registry: str | None, policy: Path | None):
    """The registry named by exactly one of --registry and --policy."""
    from deidflow.consent.registry import ConsentRegistry, registry_url_for

    if (registry is None) == (policy is None):
        raise ConsentError(
            "name the consent registry with exactly one of --registry and --policy",
            key="--registry/--policy",
            fix="e.g. --policy configs/release.yaml, or --registry sqlite:///consent.db",
        )
    if registry is not None:
        return ConsentRegistry(registry)
    from deidflow.policy import load_policy

    return ConsentRegistry(registry_url_for(load_policy(policy)))


def _moment(text: str | None, option: str) -> pd.Timestamp:
    """A point in time from the command line; without an offset it is China time (+08:00),
    as for `deidflow release --as-of` (`consent.moment`)."""
    from deidflow.consent.registry import to_utc

    if text is None:
        return pd.Timestamp(datetime.now(timezone.utc))
    try:
        return to_utc(pd.Timestamp(text))
    except (ValueError, TypeError):
        raise ConsentError(
            f"'{text}' is not a date or date-time", key=option,
            fix="write e.g. 2026-11-27 or 2026-11-27T09:30:00+08:00 (no offset = Beijing time)",
        ) from None


@consent_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="Consent file: CSV event log or FHIR R4/R5 Bundle (JSON)."),
    fmt: FileFormat = typer.Option(FileFormat.auto, "--format", help="File format (auto: by extension)."),
    registry: Optional[str] = typer.Option(None, "--registry", help=REGISTRY_HELP),
    policy: Optional[Path] = typer.Option(None, "--policy", help=POLICY_HELP),
) -> None:
    """Validate a consent file and record its events (importing it again records nothing)."""
    from deidflow.consent.importers import import_consent_file

    def go():
        reg = open_registry(registry, policy)
        try:
            return reg.redacted_url, import_consent_file(reg, file, fmt.value)
        finally:
            reg.dispose()

    url, result = _cli()._run(go)
    _cli().out.print(
        f"{file}: {result.read:,} events read, {result.new:,} new, "
        f"{result.already_recorded:,} already recorded  → {url}",
        highlight=False,
    )


@consent_app.command()
def status(
    subject: Optional[str] = typer.Argument(None, help="A subject id: show its consents and events."),
    registry: Optional[str] = typer.Option(None, "--registry", help=REGISTRY_HELP),
    policy: Optional[Path] = typer.Option(None, "--policy", help=POLICY_HELP),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="State as of this time (default: now)."),
) -> None:
    """Summarise the registry, or show one subject's consents and their history."""

    def go():
        when = _moment(as_of, "--as-of")
        reg = open_registry(registry, policy)
        try:
            return reg.snapshot(when, subject_ids=None if subject is None else [_subject_argument(subject)])
        finally:
            reg.dispose()

    snap = _cli()._run(go)
    out = _cli().out
    if subject is None:
        t = Table(title="consent registry", show_header=False, title_justify="left")
        t.add_column(style="bold")
        t.add_column()
        for key, value in snap.summary().items():
            t.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) else str(value))
        out.print(t)
        return
    if snap.events.empty:
        out.print(f"no consent recorded for {subject} as of {snap.as_of.isoformat()}", highlight=False)
        return
    # One column per consent, one row per term: a subject has a handful of consents.
    t = Table(title=f"consents of {subject} as of {snap.as_of.isoformat()}", title_justify="left")
    t.add_column("", style="bold")
    cur = snap.current
    for consent_id in cur["consent_id"]:
        t.add_column(str(consent_id))
    terms = {
        "state": ["in force" if e != "withdrawn" else "withdrawn" for e in cur["event"]],
        "since": [_when(v) for v in cur["recorded_at"]],
        "grantor": [g if g != "guardian" else f"guardian {n or ''}".strip()
                    for g, n in zip(cur["grantor"], cur["guardian_name"])],
        "separate": [_yes(v) for v in cur["separate"]],
        "purposes": [str(v) for v in cur["purposes"]],
        "recipients": [str(v) for v in cur["recipients"]],
        "categories": [str(v) for v in cur["data_categories"]],
        "cross-border": [_yes(v) for v in cur["cross_border"]],
        "valid": [f"{_day(a)} … {_day(b)}" for a, b in zip(cur["valid_from"], cur["valid_until"])],
        "notice": [str(v) if pd.notna(v) else "—" for v in cur["notice_version"]],
    }
    for name, cells in terms.items():
        t.add_row(name, *cells)
    out.print(t)
    h = Table(title="events", title_justify="left")
    for col in ("recorded", "event", "event id", "consent"):
        h.add_column(col)
    for row in snap.events.itertuples(index=False):
        h.add_row(_when(row.recorded_at), str(row.event), str(row.event_id), str(row.consent_id))
    out.print(h)


@consent_app.command()
def withdraw(
    subject: str = typer.Argument(..., help="The subject who withdraws consent."),
    reason: str = typer.Option(..., "--reason", help="Why / how the withdrawal was received (kept as evidence)."),
    at: Optional[str] = typer.Option(None, "--at", help="When it was received (default: now; not in the future)."),
    form_sha256: Optional[str] = typer.Option(None, "--form-sha256", help="sha256 of the signed withdrawal form."),
    registry: Optional[str] = typer.Option(None, "--registry", help=REGISTRY_HELP),
    policy: Optional[Path] = typer.Option(None, "--policy", help=POLICY_HELP),
) -> None:
    """Record the withdrawal of every consent of SUBJECT in force at --at (PIPL art. 15)."""

    def go():
        when = _moment(at, "--at")
        # A future date would let releases before it still contain the subject.
        if when > pd.Timestamp(datetime.now(timezone.utc)) + pd.Timedelta(minutes=5):
            raise ConsentError(
                f"--at {when.isoformat()} is in the future", key="--at",
                fix="give the time the withdrawal was received, or omit --at for now",
            )
        if not reason.strip():
            raise ConsentError("the reason is empty", key="--reason",
                               fix="say how the withdrawal was received, e.g. 'signed form at ward 3'")
        digest = form_sha256.lower() if form_sha256 else None
        if digest is not None and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
            raise ConsentError("is not a 64-hex SHA-256", key="--form-sha256",
                               fix="pass sha256 of the signed withdrawal form (64 hex characters)")
        who = _subject_argument(subject)
        reg = open_registry(registry, policy)
        try:
            known = reg.snapshot(_moment(None, "--at"), subject_ids=[who])
            if known.events.empty:
                raise ConsentError(
                    f"no consent is recorded for subject '{who}', so there is nothing to withdraw; "
                    "nothing was recorded" + _similar_ids_hint(reg, who),
                    key="SUBJECT",
                    fix="give the subject id exactly as the consent registry holds it "
                    "(deidflow consent status SUBJECT shows a subject's consents)",
                )
            n = reg.withdraw(who, at=when, form_sha256=digest,
                             source=f"deidflow consent withdraw: {reason.strip()}")
        finally:
            reg.dispose()
        return when, n

    when, n = _cli()._run(go)
    subject = _subject_argument(subject)
    if n:
        _cli().out.print(f"{subject}: {n} consent(s) withdrawn as of {when.isoformat()}", highlight=False)
    else:
        _cli().console.print(
            f"{subject}: nothing to withdraw (no consent in force at {when.isoformat()}, "
            "or this withdrawal is already recorded)", style="yellow", highlight=False)


@consent_app.command()
def withdrawn(
    registry: Optional[str] = typer.Option(None, "--registry", help=REGISTRY_HELP),
    policy: Optional[Path] = typer.Option(None, "--policy", help=POLICY_HELP),
    subjects: bool = typer.Option(False, "--subjects", help="Also show the subject ids (hospital only)."),
) -> None:
    """List past releases containing subjects who withdrew after it, with each one's pseudonym
    in that release (what a deletion request to the recipient names; PIPL arts. 15, 47)."""

    def go():
        reg = open_registry(registry, policy)
        try:
            return reg.withdrawn_since_release()
        finally:
            reg.dispose()

    found = _cli()._run(go)
    out = _cli().out
    if found.empty:
        out.print("no released subject has withdrawn since their release")
        return
    t = Table(title=f"{len(found):,} released subject(s) withdrew later, in "
              f"{found['release_id'].nunique():,} release(s)", title_justify="left")
    t.add_column("release")
    t.add_column("pseudonym")
    t.add_column("withdrawn at")
    if subjects:
        t.add_column("subject")
    for row in found.itertuples(index=False):
        cells = [str(row.release_id), str(row.pseudonym), _when(row.withdrawn_at)]
        t.add_row(*(cells + [str(row.subject_id)] if subjects else cells))
    out.print(t)


def _subject_argument(text: str) -> str:
    """A subject id typed on the command line, in canonical form; refused if unusable."""
    from deidflow.consent.subject_ids import canonical_id, id_problems

    problems = id_problems([text])
    if problems:
        raise ConsentError(f"the subject id {problems[0]}", key="SUBJECT",
                           fix="retype the id without invisible characters and in one script")
    return canonical_id(text)


def _similar_ids_hint(reg, who: str) -> str:
    """' (the registry holds P0000001, which differs only in letter case)' when it does."""
    import sqlalchemy as sa

    from deidflow.consent.registry import consent_events

    c = consent_events.c
    with reg.engine.connect() as conn:
        rows = conn.execute(sa.select(c.subject_id).distinct()
                            .where(sa.func.lower(c.subject_id) == who.lower()).limit(3)).fetchall()
    others = [r[0] for r in rows if r[0] != who]
    return f" (the registry holds {', '.join(others)}, which differs only in letter case)" if others else ""


def _when(ts) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").isoformat() if pd.notna(ts) else "—"


def _day(ts) -> str:
    return pd.Timestamp(ts).date().isoformat() if pd.notna(ts) else "open"


def _yes(flag) -> str:
    return "yes" if bool(flag) else "no"


@consent_app.command("import-cohort")
def import_cohort(
    ids: Path = typer.Argument(..., help="CSV of the cohort's subject ids (a subject_id column, or the "
                               "first column); optional guardian_name and guardian_id columns."),
    form: Path = typer.Option(..., "--form", help="The signed broad-consent form (its SHA-256 is recorded)."),
    purpose: str = typer.Option(..., "--purpose", help="Purpose(s) consented to, ';'-separated."),
    recipient: str = typer.Option(..., "--recipient", help="Recipient id(s), ';'-separated."),
    categories: str = typer.Option(..., "--categories", help="Data categories, ';'- or ','-separated."),
    notice_version: str = typer.Option(..., "--notice-version", help="Version of the privacy notice shown."),
    signed_at: Optional[str] = typer.Option(None, "--signed-at", help="When the cohort signed (default: now; "
                                            "no offset = China time; not in the future)."),
    valid_from: Optional[str] = typer.Option(None, "--valid-from", help="YYYY-MM-DD (default: open)."),
    valid_until: Optional[str] = typer.Option(None, "--valid-until", help="YYYY-MM-DD (default: open)."),
    separate: bool = typer.Option(True, "--separate/--not-separate", help="A separate consent (PIPL art. 29)."),
    cross_border: bool = typer.Option(False, "--cross-border/--no-cross-border", help="Permits transfer abroad."),
    registry: Optional[str] = typer.Option(None, "--registry", help=REGISTRY_HELP),
    policy: Optional[Path] = typer.Option(None, "--policy", help=POLICY_HELP),
) -> None:
    """Record one grant per subject of a cohort that signed one broad-consent form (importing
    the same cohort and form again records nothing)."""
    from deidflow.consent.cohort import cohort_events

    def go():
        events = cohort_events(ids, form, purpose=purpose, recipient=recipient, categories=categories,
                               notice_version=notice_version, signed_at=signed_at,
                               valid_from=valid_from, valid_until=valid_until,
                               separate=separate, cross_border=cross_border)
        reg = open_registry(registry, policy)
        try:
            # A subject's grant under this form is recorded once, whenever the command runs
            # again (without --signed-at its time is now, so the content would differ).
            known = reg.recorded_event_ids(events["event_id"].tolist())
            fresh = events.loc[~events["event_id"].isin(known)]
            result = reg.append_events(fresh, source=str(ids))
            return reg.redacted_url, len(events), result.new
        finally:
            reg.dispose()

    url, read, new = _cli()._run(go)
    _cli().out.print(
        f"{ids}: {read:,} grants read, {new:,} new, {read - new:,} already recorded  → {url}",
        highlight=False,
    )


@consent_app.command("check")
def check(
    policy: Path = typer.Option(..., "--policy", help="The release policy (YAML)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Judge consent as of this moment (may be in "
                                        "the past; no offset = China time). Default: now."),
    engine: str = typer.Option("memory", help="memory or dask (a partitioned extract)."),
) -> None:
    """Dry run of the consent gate: who a release would let through, and why the others not.
    Reads the extract and the registry, publishes nothing, records nothing."""
    import shutil

    from deidflow import release as stages

    def go():
        work = stages.prepare(policy, as_of=_moment(as_of, "--as-of").to_pydatetime() if as_of else None,
                              engine=engine, dry_run=True)
        try:
            if engine == "dask":
                state = stages.RunState.load(work)
                parts = [stages.gate_partition(work, i) for i in range(state.partitions)]
                stages.finish_prepare(work, parts)
            state = stages.RunState.load(work)
            return state.as_of, dict(state.consent), dict(state.counts)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    when, consent, counts = _cli()._run(go)
    from deidflow.consent.gate import reason_counts_text

    out = _cli().out
    t = Table(title=f"consent gate (dry run, nothing published) as of {when}", show_header=False,
              title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("subjects", f"{counts.get('subjects_in', 0):,}")
    t.add_row("would be released", f"{consent.get('granted', 0):,}")
    t.add_row("excluded", reason_counts_text(consent.get("excluded_by_reason", {})))
    t.add_row("orphan withdrawals", f"{consent.get('orphan_withdrawals', 0):,}")
    if consent.get("no_minors_attested"):
        t.add_row("under-14 rule", "not applied (the policy attests no minors)")
    out.print(t)
