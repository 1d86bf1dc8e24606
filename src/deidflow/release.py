"""One release, as a sequence of stages that pass a work directory, not data.

    prepare  → read & check inputs, derive columns, consent gate       (work/gated/*.parquet)
    search   → choose generalisation levels and suppressed subjects    (work/search.json)
    transform→ apply every column's technique, aggregates              (staging dir)
    validate → Great Expectations gate on the staged output            (staging/validation)
    publish  → review page, signed manifest, atomic rename             (release dir)

Each stage is a plain function of the work directory, so the Prefect flow (flows/release.py)
wraps each in a task that takes and returns paths and small summaries — never records — and
the same stages run without Prefect (`run_release`). The work directory lives in the policy's
private directory (hospital side) and is removed when the run ends, however it ends.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from deidflow.errors import DeidflowError, GateFailed
from deidflow.io import prepare_staging, publish, read_tables, staging_dir, write_frame
from deidflow.policy import LoadedPolicy, Role, load_policy

STATE = "state.json"


@dataclass
class RunState:
    """What later stages need to know about earlier ones; JSON in the work directory.

    It holds counts, digests and paths — no identities and no key material."""

    policy_path: str
    run_id: str
    started_at: str
    as_of: str
    flow_run_id: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    consent: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    columns: list[dict[str, Any]] = field(default_factory=list)
    aggregates: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    release_id: str | None = None
    release_dir: str | None = None

    def save(self, work: Path) -> None:
        tmp = work / (STATE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), ensure_ascii=False, indent=1, default=str))
        tmp.replace(work / STATE)

    @classmethod
    def load(cls, work: Path) -> "RunState":
        return cls(**json.loads((work / STATE).read_text()))


def _loaded(state: RunState) -> LoadedPolicy:
    return load_policy(state.policy_path)


def _private_dir(loaded: LoadedPolicy) -> Path:
    return loaded.resolve(loaded.policy.output.private_directory)


def _output_root(loaded: LoadedPolicy) -> Path:
    return loaded.resolve(loaded.policy.output.directory)


def _gated(work: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(work / "gated" / f"{table}.parquet")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


# --- stage 1: prepare ---------------------------------------------------------------------------


def prepare(policy_path: str | Path, *, as_of: datetime | None = None, flow_run_id: str | None = None) -> Path:
    """Load the policy, read and check every input, derive columns, apply the consent gate.

    Returns the run's private work directory holding the consented tables."""
    from deidflow.consent.gate import consent_gate
    from deidflow.consent.registry import ConsentRegistry
    from deidflow.techniques.derive import derive_columns

    loaded = load_policy(policy_path)
    policy = loaded.policy
    started = _now()
    as_of = as_of or started
    tables = read_tables(loaded)

    private = _private_dir(loaded)
    work = private / "work" / uuid.uuid4().hex[:16]
    (work / "gated").mkdir(parents=True)
    try:
        state = RunState(
            policy_path=str(loaded.path), run_id=work.name, started_at=started.isoformat(),
            as_of=as_of.isoformat(), flow_run_id=flow_run_id,
        )
        frames = {}
        for name, t in tables.items():
            frames[name] = derive_columns(t.frame, policy.tables[name], as_of=as_of.date())
            state.inputs.append({"table": name, "path": policy.tables[name].path,
                                 "sha256": t.sha256, "rows": t.rows})

        subj_spec = policy.tables[policy.subject_table]
        subject = frames[policy.subject_table]
        subjects = pd.DataFrame({"subject_id": subject[subj_spec.subject_column].astype(str)})
        bcol = policy.consent.birth_date_column
        subjects["birth_date"] = (
            pd.to_datetime(subject[bcol], errors="coerce") if bcol else pd.NaT
        )
        registry = ConsentRegistry(_registry_url(loaded))
        snapshot = registry.snapshot(as_of)
        gate = consent_gate(
            snapshot, subjects,
            purpose=policy.release.purpose,
            recipient_id=policy.release.recipient.id,
            categories=_categories(loaded),
            abroad=policy.release.recipient.abroad,
            as_of=as_of,
        )
        allowed = pd.Index(pd.Series(np.asarray(gate.allowed), dtype="string"))
        state.consent = dict(gate.snapshot_summary) | {
            "granted": int(len(allowed)),
            "excluded_by_reason": {k: int(v) for k, v in gate.counts.items()},
        }
        records_in = {}
        for name, frame in frames.items():
            col = policy.tables[name].subject_column
            keep = frame[col].isin(allowed)
            records_in[name] = int(len(frame))
            frame.loc[keep].reset_index(drop=True).to_parquet(work / "gated" / f"{name}.parquet")
        state.counts = {
            "subjects_in": int(len(subjects)),
            "excluded_for_consent": int(len(subjects) - len(allowed)),
            "records_in": records_in,
        }
        # The exclusion log names subjects: it stays with the hospital (0600), beside the work dir.
        gate.write_exclusion_log(work, "run")
        state.save(work)
        return work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _registry_url(loaded: LoadedPolicy) -> str:
    url = loaded.policy.consent.registry
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        path = loaded.resolve(url[len(prefix):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def _categories(loaded: LoadedPolicy) -> list[str]:
    return list(loaded.policy.release.data_categories)


# --- stage 2: search ----------------------------------------------------------------------------


def search(work: Path) -> dict[str, Any]:
    """Choose the quasi-identifiers' generalisation levels and the subjects to suppress."""
    from deidflow.risk.search import search as lattice_search
    from deidflow.techniques.hierarchies import encode_qi

    state = RunState.load(work)
    loaded = _loaded(state)
    policy = loaded.policy
    spec = policy.tables[policy.subject_table]
    subject = _gated(work, policy.subject_table)
    if subject.empty:
        raise GateFailed(
            "no subject has a valid consent for this purpose and recipient; nothing to release",
            key="release",
            fix="check the consent registry (deidflow consent status) and the policy's purpose, "
            "recipient and data categories",
        )
    qis = []
    for col in policy.quasi_identifiers():
        cspec = spec.columns[col]
        if cspec.technique != "generalise" or cspec.hierarchy is None:
            continue
        qis.append(encode_qi(col, subject[col], cspec.hierarchy, loaded.base_dir))
    sensitive = None
    if policy.limits.l is not None or policy.limits.t is not None:
        scol = policy.sensitive_columns()[0]
        sensitive = pd.factorize(subject[scol].astype("string").fillna("<NA>"), sort=True)[0]
    bounds = {
        q.name: (spec.columns[q.name].hierarchy.min_level,
                 min(q.n_levels - 1, spec.columns[q.name].hierarchy.max_level
                     if spec.columns[q.name].hierarchy.max_level is not None else q.n_levels - 1))
        for q in qis
    }
    result = lattice_search(
        qis,
        k=policy.limits.k,
        suppression_budget=policy.limits.suppression_budget,
        l=policy.limits.l,
        l_variant=policy.limits.l_variant,
        c=policy.limits.c,
        sensitive=sensitive,
        t=policy.limits.t,
        max_class_risk=policy.max_class_risk,
        max_overall_risk=policy.limits.max_overall_risk,
        release_model=policy.release.model.value,
        level_bounds=bounds,
    )
    suppressed_ids = subject.loc[np.asarray(result.suppressed, dtype=bool), spec.subject_column]
    suppressed_ids.to_frame("subject_id").to_parquet(work / "suppressed.parquet")
    state.search = {
        "levels": {k: int(v) for k, v in result.levels.items()},
        "suppressed_subjects": int(len(suppressed_ids)),
        "before": result.before.as_dict(),
        "after": result.after.as_dict(),
        "utility": _plain(getattr(result, "utility", {})),
        "nodes_evaluated": int(getattr(result, "nodes_evaluated", 0)),
    }
    state.save(work)
    return {"levels": state.search["levels"], "suppressed": state.search["suppressed_subjects"],
            "k_after": state.search["after"].get("k")}


def _plain(obj: Any) -> Any:
    """JSON-able copy of numbers/dicts/lists (numpy scalars to Python)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "as_dict"):
        return _plain(obj.as_dict())
    return obj


# --- stage 3: transform -------------------------------------------------------------------------


def transform(work: Path) -> Path:
    """Apply every column's technique to the consented, non-suppressed rows; write the release
    files and aggregates into the staging directory. Returns the staging directory."""
    from deidflow.keys import KeyRing
    from deidflow.techniques import ApplyContext, registry
    from deidflow.techniques.aggregate import small_cell_table

    state = RunState.load(work)
    loaded = _loaded(state)
    policy = loaded.policy
    keyring = KeyRing.from_policy(loaded)
    suppressed = pd.Index(pd.read_parquet(work / "suppressed.parquet")["subject_id"].astype("string"))

    subj_spec = policy.tables[policy.subject_table]
    subject_raw = _gated(work, policy.subject_table)
    subject_raw = subject_raw.loc[~subject_raw[subj_spec.subject_column].isin(suppressed)]
    known = known_identifiers(subject_raw, loaded)

    release_id = _release_id(loaded, state, keyring)
    state.release_id = release_id
    stage = prepare_staging(_output_root(loaded), release_id)
    fmt = policy.output.format
    columns_done: list[dict[str, Any]] = []
    released_rows: dict[str, int] = {}
    released: dict[str, pd.DataFrame] = {}
    for name, tspec in policy.tables.items():
        frame = _gated(work, name)
        frame = frame.loc[~frame[tspec.subject_column].isin(suppressed)].reset_index(drop=True)
        out = {}
        for col, cspec in tspec.columns.items():
            technique = registry.get(cspec.technique)
            ctx = ApplyContext(
                table=name, column=col, subject_ids=frame[tspec.subject_column],
                keyring=keyring, level=state.search.get("levels", {}).get(col),
                frame=frame, known_identifiers=known, base_dir=loaded.base_dir,
            )
            result = technique.apply(frame[col], cspec, ctx)
            entry = {"table": name, "column": col, "role": cspec.role.value,
                     **_plain(technique.describe(cspec, ctx))}
            if ctx.level is not None:
                entry["level"] = int(ctx.level)
            if ctx.counts:
                entry["counts"] = dict(ctx.counts)
            columns_done.append(entry)
            if result is not None:
                out[col] = result
        released[name] = pd.DataFrame(out)
        released_rows[name] = int(len(frame))
        write_frame(released[name], stage / "data" / f"{name}.{fmt}", fmt)

    for agg in policy.aggregates:
        table, summary = small_cell_table(released[agg.table], list(agg.by), policy.limits.small_cell)
        write_frame(table, stage / "aggregates" / f"{agg.name}.csv", "csv")
        state.aggregates.append({"name": agg.name, "table": agg.table, "by": list(agg.by),
                                 **_plain(summary)})

    # Which pseudonym each released subject got: the hospital's private record, used by the
    # consent-coverage expectation and the withdrawal re-check. Never published.
    sid = subj_spec.subject_column
    pseudo = released[policy.subject_table][sid] if sid in released[policy.subject_table] else None
    mapping = pd.DataFrame({"subject_id": subject_raw[sid].to_numpy()})
    if pseudo is not None:
        mapping["pseudonym"] = pseudo.to_numpy()
    mapping.to_parquet(work / "pseudonyms.parquet")

    state.columns = columns_done
    state.counts["suppressed_subjects"] = int(len(suppressed))
    state.counts["released_subjects"] = int(len(subject_raw))
    state.counts["released_rows"] = released_rows
    state.save(work)
    return stage


def known_identifiers(subject: pd.DataFrame, loaded: LoadedPolicy) -> pd.DataFrame:
    """Long table (subject_id, kind, value) of every direct identifier known for each subject:
    the scrubber removes them from that subject's notes, the validator from everything."""
    policy = loaded.policy
    spec = policy.tables[policy.subject_table]
    sid = spec.subject_column
    parts = []
    for col, cspec in spec.columns.items():
        if cspec.role is Role.direct_identifier and col in subject:
            part = pd.DataFrame({"subject_id": subject[sid].astype("string"),
                                 "kind": col, "value": subject[col].astype("string")})
            parts.append(part.dropna(subset=["value"]))
    if not parts:
        return pd.DataFrame({"subject_id": [], "kind": [], "value": []}, dtype="string")
    return pd.concat(parts, ignore_index=True)


def _release_id(loaded: LoadedPolicy, state: RunState, keyring: Any) -> str:
    """Content-addressed: the same policy, inputs, consent snapshot and key give the same id,
    so a rerun after success finds its release instead of publishing a second copy."""
    h = hashlib.sha256()
    h.update(loaded.sha256.encode())
    for inp in state.inputs:
        h.update(f"{inp['table']}:{inp['sha256']}".encode())
    h.update(str(state.consent.get("events_sha256", "")).encode())
    h.update(keyring.fingerprint().encode())
    agreement = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in loaded.policy.release.agreement_id)
    return f"{agreement}-{h.hexdigest()[:12]}"


# --- stage 4: validate --------------------------------------------------------------------------


def validate(work: Path) -> dict[str, Any]:
    """Run the Great Expectations suite on the staged release. Any failure stops the release."""
    from deidflow.validation.gate import validate_release

    state = RunState.load(work)
    loaded = _loaded(state)
    policy = loaded.policy
    stage = staging_dir(_output_root(loaded), state.release_id)
    fmt = policy.output.format
    tables = {}
    for name in policy.tables:
        path = stage / "data" / f"{name}.{fmt}"
        tables[name] = (pd.read_parquet(path) if fmt == "parquet"
                        else pd.read_csv(path, dtype="string", keep_default_na=False, na_values=[""]))
    subject = _gated(work, policy.subject_table)
    known = known_identifiers(subject, loaded)
    mapping = pd.read_parquet(work / "pseudonyms.parquet")
    consented = mapping["pseudonym"] if "pseudonym" in mapping else pd.Series([], dtype="string")
    report = validate_release(
        policy, tables,
        input_identifiers=known["value"].dropna().unique().tolist(),
        consented_pseudonyms=consented.astype(str).tolist(),
        out_dir=stage / "validation",
    )
    state.validation = _plain(report.as_dict())
    state.save(work)
    if not report.success:
        failed = [e for e in state.validation.get("expectations", []) if not e.get("success")]
        lines = "; ".join(e.get("explanation", e.get("type", "?")) for e in failed) or "see the validation report"
        raise GateFailed(
            f"the validation gate failed, nothing was published: {lines}",
            key="limits",
            fix="relax the policy only if the data-sharing agreement allows it; otherwise "
            "generalise or suppress more (see the validation report for the failing check)",
        )
    return {"success": True, "expectations": len(state.validation.get("expectations", []))}


# --- stage 5: publish ---------------------------------------------------------------------------


def publish_release(work: Path) -> Path:
    """Review page, signed manifest, atomic rename, and the hospital-side records."""
    from deidflow.consent.registry import ConsentRegistry
    from deidflow.manifest.review import render_review
    from deidflow.manifest.seal import write_manifest
    from deidflow.manifest.signing import ensure_signing_key

    state = RunState.load(work)
    loaded = _loaded(state)
    policy = loaded.policy
    root = _output_root(loaded)
    stage = staging_dir(root, state.release_id)
    final = root / state.release_id
    record = build_record(loaded, state, finished_at=_now())
    signing_key = ensure_signing_key(loaded.resolve(policy.keys.signing_key_file))
    sizes_after = _class_sizes(pd.read_parquet(stage / "data" / f"{policy.subject_table}.parquet")
                               if policy.output.format == "parquet"
                               else _read_csv(stage / "data" / f"{policy.subject_table}.csv"), loaded)
    sizes_before = _class_sizes(_gated(work, policy.subject_table), loaded)
    render_review(stage, record, signing_key_path=signing_key, class_sizes=sizes_after.tolist(),
                  class_sizes_before=sizes_before.tolist(), k=policy.limits.k)
    write_manifest(stage, record, signing_key)
    publish(stage, final)

    private = _private_dir(loaded)
    exclusions = private / "exclusions"
    exclusions.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(work / "consent-exclusions-run.csv", exclusions / f"{state.release_id}.csv")
    (exclusions / f"{state.release_id}.csv").chmod(0o600)
    mapping = pd.read_parquet(work / "pseudonyms.parquet")
    if "pseudonym" in mapping:
        ConsentRegistry(_registry_url(loaded)).record_release(
            state.release_id, mapping["subject_id"], mapping["pseudonym"], record.finished_at
        )
    state.release_dir = str(final)
    state.save(work)
    return final


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype="string", keep_default_na=False, na_values=[""])


def _class_sizes(frame: pd.DataFrame, loaded: LoadedPolicy) -> np.ndarray:
    """Size (in subjects) of each equivalence class of the subject table over the QIs."""
    policy = loaded.policy
    sid = policy.tables[policy.subject_table].subject_column
    qis = [c for c in policy.quasi_identifiers() if c in frame.columns]
    if not qis or frame.empty:
        return np.array([len(frame)] if len(frame) else [], dtype=np.int64)
    cols = frame[qis].astype("string").fillna("<NA>")
    if sid in frame.columns:
        cols = cols.loc[~frame[sid].duplicated().to_numpy()]
    codes = np.zeros(len(cols), dtype=np.int64)
    for c in qis:
        k, u = pd.factorize(cols[c], sort=True)
        codes = codes * (len(u) + 1) + k
    return np.bincount(pd.factorize(codes)[0]).astype(np.int64)


def build_record(loaded: LoadedPolicy, state: RunState, *, finished_at: datetime):
    """The manifest's ReleaseRecord from the run state: counts, digests, parameters — no ids."""
    from importlib import metadata
    import platform

    from deidflow.manifest.record import (
        ColumnTreatment, ConsentSnapshot, Counts, InputFile, PlanInfo, RecipientInfo,
        ReleaseRecord, RiskSummary, Software, add_years,
    )

    policy = loaded.policy
    rel = policy.release
    started = datetime.fromisoformat(state.started_at)
    c = state.consent
    versions = {}
    for pkg in ("pandas", "numpy", "pyarrow", "great-expectations", "prefect", "cryptography",
                "pydantic", "sqlalchemy", "faker"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:  # pragma: no cover - optional
            continue
    columns = []
    for entry in state.columns:
        params = {k: v for k, v in entry.items()
                  if k not in ("table", "column", "role", "technique")}
        flat = params.pop("params", {}) or {}
        columns.append(ColumnTreatment(table=entry["table"], column=entry["column"],
                                       role=entry["role"], technique=entry.get("technique", "?"),
                                       params=_plain({**flat, **params})))
    after = dict(state.search.get("after", {}))
    after.setdefault("k_required", policy.limits.k)
    return ReleaseRecord(
        release_id=state.release_id,
        created_at=finished_at,
        started_at=started,
        finished_at=finished_at,
        policy_text=loaded.text,
        policy_sha256=loaded.sha256,
        agreement_id=rel.agreement_id,
        pipia_id=rel.pipia_id,
        recipient=RecipientInfo(id=rel.recipient.id, name=rel.recipient.name,
                                country=rel.recipient.country),
        purpose=rel.purpose,
        release_model=rel.model.value,
        data_categories=list(rel.data_categories),
        retention_until=add_years(finished_at, max(rel.retention_years, 3)),
        plan=PlanInfo(objective=policy.plan.objective, attacker_model=policy.plan.attacker_model,
                      approver=policy.plan.approver, executor=policy.plan.executor,
                      version=str(policy.plan.version)),
        inputs=[InputFile(table=i["table"], path=i["path"], sha256=i["sha256"], rows=i["rows"])
                for i in state.inputs],
        consent=ConsentSnapshot(
            registry=str(c.get("registry", policy.consent.registry)),
            as_of=datetime.fromisoformat(str(c.get("as_of", state.as_of))),
            events=int(c.get("events", 0)),
            granted=int(c.get("granted", 0)),
            excluded_by_reason={k: int(v) for k, v in c.get("excluded_by_reason", {}).items()},
            consent_ids_digest=str(c.get("events_sha256", "")),
        ),
        columns=columns,
        risk=RiskSummary(before=_plain(state.search.get("before", {})), after=_plain(after),
                         levels=dict(state.search.get("levels", {})),
                         suppressed_records=int(state.counts.get("suppressed_subjects", 0)),
                         utility=_plain(state.search.get("utility", {}))),
        aggregates=_plain(state.aggregates),
        validation=_plain(state.validation),
        counts=Counts(records_in=int(state.counts.get("subjects_in", 0)),
                      excluded_for_consent=int(state.counts.get("excluded_for_consent", 0)),
                      suppressed=int(state.counts.get("suppressed_subjects", 0)),
                      released=dict(state.counts.get("released_rows", {})),
                      released_subjects=int(state.counts.get("released_subjects", 0)),
                      rows_in=dict(state.counts.get("records_in", {}))),
        software=Software(deidflow=_deidflow_version(), python=platform.python_version(),
                          packages=versions),
        flow_run_id=state.flow_run_id,
    )


def _deidflow_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("deidflow")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+source"


# --- the whole run without Prefect ---------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseSummary:
    release_id: str
    release_dir: Path | None
    subjects_in: int
    excluded_for_consent: int
    suppressed: int
    released: int
    k: int | None
    levels: dict[str, int]
    risk_after: dict[str, Any]
    validation_ok: bool
    already_released: bool = False

    @property
    def manifest(self) -> Path | None:
        return None if self.release_dir is None else self.release_dir / "manifest.json"

    @property
    def review(self) -> Path | None:
        return None if self.release_dir is None else self.release_dir / "review.html"


def summarise(work: Path) -> ReleaseSummary:
    state = RunState.load(work)
    return ReleaseSummary(
        release_id=state.release_id or "",
        release_dir=Path(state.release_dir) if state.release_dir else None,
        subjects_in=state.counts.get("subjects_in", 0),
        excluded_for_consent=state.counts.get("excluded_for_consent", 0),
        suppressed=state.counts.get("suppressed_subjects", 0),
        released=state.counts.get("released_subjects", 0),
        k=state.search.get("after", {}).get("k"),
        levels=state.search.get("levels", {}),
        risk_after=state.search.get("after", {}),
        validation_ok=bool(state.validation.get("success")),
    )


def discard(work: Path) -> None:
    """End of a run, however it ended: no staging directory and no private copies remain."""
    try:
        state = RunState.load(work)
        if state.release_id:
            loaded = _loaded(state)
            shutil.rmtree(staging_dir(_output_root(loaded), state.release_id), ignore_errors=True)
    except (OSError, ValueError, DeidflowError):
        pass
    shutil.rmtree(work, ignore_errors=True)


STAGES: tuple[tuple[str, Callable[[Path], Any]], ...] = (
    ("search", search),
    ("transform", transform),
    ("validate", validate),
    ("publish", publish_release),
)


def run_release(
    policy_path: str | Path,
    *,
    as_of: datetime | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> ReleaseSummary:
    """All stages in this process, without Prefect. Fails closed: on any error the staging and
    work directories are removed and nothing appears in the output directory."""
    if on_stage:
        on_stage("prepare")
    work = prepare(policy_path, as_of=as_of)
    try:
        for name, stage in STAGES:
            if on_stage:
                on_stage(name)
            if name == "publish":
                existing = _existing_release(work)
                if existing is not None:
                    return existing
            stage(work)
        return summarise(work)
    finally:
        discard(work)


def _existing_release(work: Path) -> ReleaseSummary | None:
    """A rerun with unchanged policy, inputs, consent and key: the release already exists."""
    state = RunState.load(work)
    loaded = _loaded(state)
    final = _output_root(loaded) / state.release_id
    if not final.exists():
        return None
    summary = summarise(work)
    return ReleaseSummary(**(asdict(summary) | {"release_dir": final, "already_released": True}))
