"""`deidflow …`: the command line. Heavy libraries (Prefect, Great Expectations) load lazily,
so `deidflow --help` answers at once. Every user-fixable error is printed as
"where: what / Fix: how" with exit status 2, never as a traceback."""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from deidflow.errors import DeidflowError

console = Console(stderr=True)
out = stdout = Console()

app = typer.Typer(
    name="deidflow",
    help=(
        "Prepare clinical datasets for release to AI-training partners: keep only subjects "
        "with a valid PIPL separate consent, de-identify with GB/T 37964 techniques, prove the "
        "re-identification risk is under the agreed limit, and sign a provenance manifest.\n\n"
        "Start with:  deidflow samples --out data_samples  |  deidflow consent import "
        "data_samples/consents.csv --policy configs/release.yaml  |  deidflow release "
        "configs/release.yaml"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

VERBOSE = {"on": False}

# Skip the interpreter's last garbage collection at exit (a pause of its own after a release
# with Great Expectations loaded), as the release flow does (flows/release.py): every file is closed by
# then, atexit handlers still run, and the OS takes the memory back anyway.
atexit.register(gc.freeze)


def quiet_environment(verbose: bool = False) -> None:
    """Prefect's and Dask's defaults for a machine with no network and a human at the
    terminal: no telemetry, no server banners, no progress bars (ecosystem.md section 2, 5).
    Prefect's home is set per policy (`prefect_home`), not from the working directory."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_UI_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "info" if verbose else "warning")
    if not verbose:
        import logging

        # GX announces its temporary docs directory at INFO through Prefect's handler.
        logging.getLogger("great_expectations").setLevel(logging.WARNING)


def prefect_home(loaded) -> Path:
    """Prefect's home for runs of this policy: under its private directory (hospital side),
    created here, so the default path works from any working directory. An operator's own
    PREFECT_HOME is kept. Call before Prefect is imported: it reads its settings once."""
    home = Path(os.environ.get("PREFECT_HOME") or loaded.resolve(loaded.policy.output.private_directory) / "prefect")
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise DeidflowError(
            f"cannot create Prefect's home directory: {exc.strerror}", file=str(home),
            key="output.private_directory",
            fix="point output.private_directory at a writable place, or run with --no-prefect",
        ) from None
    os.environ["PREFECT_HOME"] = str(home)
    from deidflow.prefect_server import mark_run, stop_orphaned_servers

    stop_orphaned_servers(home)  # left by a killed run of this home (SIGKILL: no clean-up)
    mark_run()
    return home


class _QuietFlowLogs:
    """Without -v, Prefect's own loggers say nothing while a flow runs: a user error is then
    deidflow's message alone (as with --no-prefect), not ~90 lines of task-failure traceback,
    and an internal error is reported by `_run` the same way on both paths."""

    def __enter__(self) -> "_QuietFlowLogs":
        import logging

        self._saved = []
        if not VERBOSE["on"]:
            for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.server",
                         "prefect.client", "prefect.events", "uvicorn", "uvicorn.error",
                         "distributed", "great_expectations"):
                logger = logging.getLogger(name)
                self._saved.append((logger, logger.level, logger.disabled))
                logger.setLevel(logging.CRITICAL + 1)
        return self

    def __exit__(self, *exc: object) -> None:
        for logger, level, disabled in self._saved:
            logger.setLevel(level)
            logger.disabled = disabled


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show detail and Prefect logs.")) -> None:
    VERBOSE["on"] = verbose
    quiet_environment(verbose)


def _run(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except DeidflowError as exc:
        console.print("[bold red]error:[/] ", end="")
        console.print(exc.render(), highlight=False, markup=False)
        console.print("Nothing was released.", style="dim")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("interrupted; nothing was released.", style="yellow")
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug in deidflow, not the user's input
        storage = _storage_error(exc)
        if storage is not None:
            console.print("[bold red]error:[/] ", end="")
            console.print(storage.render(), highlight=False, markup=False)
            console.print("Nothing was released.", style="dim")
            raise typer.Exit(2) from None
        if VERBOSE["on"]:
            raise
        # The message of a library exception may quote data values; print its type and where
        # it happened only. -v shows the full traceback on the operator's own terminal.
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb else "?"
        console.print(f"[bold red]internal error:[/] {type(exc).__name__} at {where}. "
                      "Nothing was released. Rerun with -v for the traceback and report it.")
        raise typer.Exit(3) from None


def _storage_error(exc: BaseException) -> DeidflowError | None:
    """A full disk, a quota or file-size limit, a read-only filesystem: the operator's to fix,
    not a bug in deidflow, wherever the write happened (pyarrow, SQLite, GX, our own files)."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        # not a full disk: say so, or the operator frees space and gets the same failure
        return DeidflowError(
            f"cannot write: {os.strerror(exc.errno)} (a read-only or not-writable directory)",
            file=exc.filename,
            fix="make the policy's output.directory and output.private_directory writable for "
            "this user (or point the policy at writable ones), then rerun; nothing partial was kept",
        )
    if not isinstance(exc, OSError) or exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return None
    return DeidflowError(
        f"cannot write: {os.strerror(exc.errno)}",
        file=exc.filename,
        fix="free space (or raise the quota or file-size limit) where the policy's output.directory "
        "and output.private_directory live, then rerun; nothing partial was kept",
    )


@app.command()
def release(
    policy: Path = typer.Argument(..., help="The release policy (YAML), e.g. configs/release.yaml."),
    as_of: Optional[str] = typer.Option(None, help="Consent moment: now (the default); a past one only "
                                        "for a dry run (deidflow consent check), a time without "
                                        "an offset is China time (+08:00)."),
    prefect: bool = typer.Option(True, "--prefect/--no-prefect", help="Run as a Prefect flow (default) or in-process."),
    engine: str = typer.Option("memory", help="memory: tables read whole; dask: a partitioned Parquet "
                               "extract (deidflow partition) processed on a Dask cluster."),
    workers: int = typer.Option(2, help="Dask engine: worker processes of the local cluster."),
    cluster: Optional[str] = typer.Option(None, help="Dask engine: address of an existing scheduler."),
) -> None:
    """Run one release: consent gate → de-identify → risk search → GX gate → signed manifest."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from deidflow import release as stages

    def go() -> stages.ReleaseSummary:
        from deidflow.consent.moment import run_as_of
        from deidflow.policy import load_policy
        from deidflow.release.state import now_utc

        # Refused before any flow starts (future, past); without --as-of the run's start.
        moment = run_as_of(as_of, now_utc()) if as_of is not None else None
        if engine not in ("memory", "dask"):
            raise DeidflowError(f"unknown engine '{engine}'", key="--engine", fix="use memory or dask")
        # The policy is loaded and checked before Prefect starts: a typo costs no start-up.
        loaded = load_policy(policy)
        if prefect:
            prefect_home(loaded)
            with console.status(f"running the release flow (Prefect, {engine} engine)…"):
                from flows.release import dask_release_flow, release_flow

                fl = dask_release_flow(workers, cluster) if engine == "dask" else release_flow
                with _QuietFlowLogs():
                    result = fl(policy_path=str(loaded.path), as_of=moment, engine=engine)
            return stages.ReleaseSummary.model_validate(result)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("starting", total=None)
            return stages.run_release(loaded.path, as_of=moment, engine=engine,
                                      on_stage=lambda s: progress.update(task, description=s))

    summary = _run(go)
    if summary.staged_id:  # the privacy officer decides (deidflow.release.approval)
        from deidflow.release.approval_commands import print_staged

        print_staged(summary, policy)
        return
    _print_summary(summary)


def _print_summary(s) -> None:
    t = Table(title="release " + s.release_id + (" (already released; nothing new)" if s.already_released else ""),
              show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for row in s.figure_rows():
        t.add_row(*row)
    out.print(t)
    # Paths on their own lines, never wrapped or cut, so they can be copied.
    for label, path in (("release", s.release_dir), ("manifest", s.manifest), ("review page", s.review)):
        out.print(f"{label + ':':<13}{path}", soft_wrap=True, highlight=False)


@app.command()
def scrub(
    source: Path = typer.Argument(..., metavar="INPUT.csv", help="A CSV file with a free-text column."),
    column: str = typer.Option(..., "--column", help="The free-text column to scrub."),
    out: Path = typer.Option(..., "--out", help="Where to write the scrubbed copy (CSV, UTF-8)."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Scrub as this release policy does "
                                          "(default: every detector, placeholders, dates to the month)."),
    encoding: str = typer.Option("auto", "--encoding", help="utf-8, gb18030, gbk or auto."),
) -> None:
    """Scrub one column of a CSV file as a release would; every other column and the row order kept."""
    from deidflow.techniques.scrub import scrub_csv

    counts = _run(lambda: scrub_csv(source, column, out, policy=policy, encoding=encoding))
    found = ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "nothing"
    console.print(f"scrubbed '{column}' → {out}  (replaced: {found})", highlight=False, markup=False)


@app.command()
def check(policy: Path = typer.Argument(..., help="The release policy (YAML).")) -> None:
    """Check a policy and its input tables without releasing anything."""
    from deidflow.io import read_tables
    from deidflow.policy import load_policy

    def go():
        loaded = load_policy(policy)
        tables = read_tables(loaded)
        return loaded, tables

    loaded, tables = _run(go)
    t = Table(title=f"policy {policy} is valid (sha256 {loaded.sha256[:12]}…)", title_justify="left")
    t.add_column("table")
    t.add_column("rows", justify="right")
    t.add_column("file")
    for name, table in tables.items():
        t.add_row(name, f"{table.rows:,}", str(table.path))
    out.print(t)
    _check_reference_tables(loaded, tables)
    if not _preflight(loaded, tables):
        raise typer.Exit(2)


def _check_reference_tables(loaded, tables) -> None:
    """Reference tables (deidflow.reference_tables): read and checked like any input (a bad
    file or key stops the check with the usual error); foreign-key values that name no row of
    them are counted (they will join nothing)."""
    if not loaded.policy.reference_tables:
        return
    from deidflow.reference_tables import check_reference_inputs

    found = _run(lambda: check_reference_inputs(loaded, {n: t.frame for n, t in tables.items()}))
    r = Table("reference table", "rows", "key", "referenced by", "unknown references", "released",
              title="reference tables (no patient column; not consent-filtered)", title_justify="left")
    for f in found:
        r.add_row(f["table"], f"{f['rows']:,}", f["key"], ", ".join(f["referenced_by"]) or "—",
                  f"{f['unknown_references']:,}",
                  "all rows" if f["keep"] == "all" else "referenced rows only")
    out.print(r)


def _preflight(loaded, tables) -> bool:
    """Hierarchies against the data and consent coverage (deidflow.preflight); True if both
    would let a release through."""
    from deidflow.preflight import check_consent, check_hierarchies

    frames = {name: table.frame for name, table in tables.items()}
    findings = _run(lambda: check_hierarchies(loaded, frames))
    h = Table("table", "column", "hierarchy", "levels", "distinct values", "check",
              title="hierarchies against the data", title_justify="left")
    for f in findings:
        h.add_row(f.table, f.column, f.kind, str(f.levels or "—"), f"{f.distinct_values:,}",
                  "ok" if f.ok else "[red]fails[/]")
    if findings:
        out.print(h)
    for f in findings:
        if not f.ok:
            console.print(f"[bold red]error:[/] {f.table}.{f.column}: ", end="")
            console.print(f.problem, highlight=False, markup=False)
    cov = _run(lambda: check_consent(loaded, frames[loaded.policy.subject_table]))
    reasons = ", ".join(f"{k}: {v:,}" for k, v in cov.excluded_by_reason.items()) or "none"
    out.print(f"consent coverage: {cov.allowed:,} of {cov.subjects:,} subjects would be "
              f"released (excluded: {reasons})", highlight=False)
    if cov.problem:
        console.print("[bold red]error:[/] ", end="")
        console.print(cov.problem, highlight=False, markup=False)
    return all(f.ok for f in findings) and cov.ok


@app.command()
def samples(
    out_dir: Path = typer.Option(Path("data_samples"), "--out", help="Directory to write the CSVs into."),
    patients: int = typer.Option(2000, "--patients", min=1, help="Number of patients."),
    seed: int = typer.Option(20261125, "--seed", help="Random seed (same seed ⇒ same files)."),
) -> None:
    """Generate a deterministic synthetic hospital extract (Faker zh_CN) with consent events."""
    from deidflow.samples import generate_samples

    with console.status(f"generating {patients:,} patients…"):
        paths = _run(lambda: generate_samples(out_dir, patients, seed))
    for name, path in paths.items():
        out.print(f"{name:12} {path}")


@app.command()
def techniques() -> None:
    """List the de-identification techniques a policy can name."""
    from deidflow.techniques import registry

    t = Table("technique", "roles", "parameters", title="GB/T 37964 techniques")
    for name in registry.names():
        tech = registry.get(name)
        t.add_row(name, ", ".join(sorted(r.value for r in tech.roles)),
                  ", ".join(sorted(tech.allowed_params)) or "—")
    out.print(t)


@app.command()
def partition(
    policy: Path = typer.Argument(..., help="The release policy whose CSV inputs to partition."),
    out_dir: Path = typer.Option(..., "--out", help="Directory for <table>/part-*.parquet."),
    partitions: int = typer.Option(8, help="Number of partitions (by subject)."),
) -> None:
    """Convert the policy's CSV inputs into a Parquet extract co-partitioned by subject, for
    `deidflow release --engine dask`. Streams in batches: memory for one batch, not one table."""
    from deidflow.partitions import partition_extract
    from deidflow.policy import load_policy

    written = _run(lambda: partition_extract(load_policy(policy), out_dir, partitions))
    for name, path in written.items():
        stdout.print(f"{name}: {path} ({partitions} parts)", highlight=False, soft_wrap=True)
    stdout.print("point each table's path at its directory and set 'format: parquet'")


@app.command()
def recheck(policy: Path = typer.Argument(..., help="The release policy (YAML).")) -> None:
    """Find released subjects who have since withdrawn; write a deletion notice per release."""
    from deidflow.policy import load_policy
    from deidflow.recheck import write_deletion_notices

    written = _run(lambda: write_deletion_notices(load_policy(policy)))
    if not written:
        out.print("no released subject has withdrawn since their release; no notice written")
    for p in written:
        out.print(f"deletion notice: {p}")


@app.command()
def serve(
    policy: Path = typer.Argument(..., help="The release policy (YAML); its schedule section sets the crons."),
    consent_drop: Optional[Path] = typer.Option(None, help="Folder to import new consent files from."),
    sync_cron: str = typer.Option("*/15 * * * *", help="Cron for the consent-sync flow."),
) -> None:
    """Serve the release, re-check and consent-sync flows on their schedules.

    Needs a real Prefect server (schedules never fire on the temporary local one): run
    `make server` and export PREFECT_API_URL=http://127.0.0.1:4200/api first."""
    from deidflow.policy import load_policy

    def go():
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            from deidflow.errors import DeidflowError

            raise DeidflowError(
                "schedules need a Prefect server; the temporary local one never runs scheduled flows",
                key="PREFECT_API_URL",
                fix="run `make server` in another terminal, then "
                "`export PREFECT_API_URL=http://127.0.0.1:4200/api`",
            )
        return load_policy(policy)

    loaded = _run(go)
    from flows.serve import deployments_for
    from prefect import serve as prefect_serve

    deps = deployments_for(loaded, consent_drop=consent_drop, sync_cron=sync_cron)
    console.print(f"serving {len(deps)} flow(s): " + ", ".join(d.name for d in deps))
    prefect_serve(*deps, print_starting_message=False)


@app.command()
def utility(
    release_dir: Path = typer.Argument(..., help="A published release directory."),
    policy: Path = typer.Option(..., "--policy", help="The release policy (YAML); its utility block names the target."),
) -> None:
    """Recompute a release's utility evidence on the hospital side (issue 21)."""
    from deidflow.utility.recompute import recompute_utility

    done = _run(lambda: recompute_utility(release_dir, policy))
    u = done.evidence
    out.print(f"utility of release {done.release_id}")
    out.print(f" subjects consented / released   {u.subjects:,} / {u.released:,} "
              f"({100 * u.suppressed_share:.2f} % suppressed)")
    out.print(f" search minimised                {u.search_loss}")
    flagged = [f"{g.column}={x.label}" for g in u.groups for x in g.groups if x.flag_suppression or x.flag_loss]
    out.print(f" groups flagged                  {', '.join(flagged) or 'none'}")
    if u.model is not None:
        m = u.model
        out.print(f" accuracy original → released   {m.accuracy_original:.4f} → {m.accuracy_released:.4f} "
                  f"({m.accuracy_difference:+.4f}) predicting {m.target}")
    else:
        out.print(f" model                           {u.model_note}")
    if not done.same_policy:
        out.print(" note: this policy differs from the one the release was signed with")
    out.print(f" evidence                        {done.json_path}")
    out.print(f" page                            {done.html_path}")


def _mount(module: str, attr: str, name: str, help_text: str) -> None:
    """Mount a sub-app when its module exists (each area owns its commands)."""
    try:
        sub = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return
    app.add_typer(sub, name=name, help=help_text)


_mount("deidflow.consent.commands", "consent_app", "consent", "Consent registry: import, status, withdraw, re-check.")
importlib.import_module("deidflow.manifest.commands").register(app)  # keys, verify, releases
importlib.import_module("deidflow.release.approval_commands").register(app)  # approve, reject


def run() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
