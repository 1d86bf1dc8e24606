"""`deidflow utility RELEASE_DIR --policy POLICY`: the utility evidence of a published
release, computed again on the hospital side.

A published release is signed and cannot change, so the evidence is recomputed beside it,
under the policy's private directory (`utility/<release id>.json` and `.html`): for a target
the lab names later, say, or after the release was made without one. It is computed from the
same inputs as the release, and refuses to run when they are not: the release must verify
against its manifest, the subject table's input file must have the SHA-256 the manifest
recorded, the consented subjects are the input's minus those in the release's private
exclusion log, and the released subjects are those the consent registry recorded for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from deidflow.errors import DeidflowError, InputError
from deidflow.policy import LoadedPolicy, load_policy
from deidflow.utility.record import UtilityEvidence


@dataclass(frozen=True)
class Recomputed:
    release_id: str
    evidence: UtilityEvidence
    json_path: Path
    html_path: Path
    same_policy: bool


def recompute_utility(release_dir: Path, policy_path: Path) -> Recomputed:
    from deidflow.manifest.trust import anchors_from_policy
    from deidflow.manifest.verify import verify_release

    release_dir = Path(release_dir)
    loaded = load_policy(policy_path)
    # checked against the hospital's own keys (the policy's trust file or signing key), never
    # against the key the release ships
    report = verify_release(release_dir, anchors=anchors_from_policy(Path(policy_path)))
    report.raise_if_failed()
    record = report.record
    if record is None:  # pragma: no cover - raise_if_failed covers an unreadable record
        raise DeidflowError("the manifest holds no release record", file=str(release_dir),
                            fix="run `deidflow verify` on the release directory")
    policy = loaded.policy
    name = policy.subject_table
    consented = _consented(loaded, record)
    released = _released_table(release_dir, name, policy.output.format)
    ids = _released_ids(loaded, record.release_id)
    from deidflow.utility.evidence import utility_evidence

    evidence = utility_evidence(
        loaded, consented, released, ids, levels=dict(record.risk.levels),
        search_loss=str(record.risk.utility.get("metric", "loss")), as_of=record.consent.as_of.date())
    out = loaded.resolve(policy.output.private_directory) / "utility"
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    json_path = out / f"{record.release_id}.json"
    json_path.write_text(evidence.model_dump_json(indent=1), encoding="utf-8")
    html_path = out / f"{record.release_id}.html"
    html_path.write_text(_page(record, evidence), encoding="utf-8")
    return Recomputed(record.release_id, evidence, json_path, html_path,
                      same_policy=loaded.sha256 == record.policy_sha256)


def _consented(loaded: LoadedPolicy, record) -> pd.DataFrame:
    from deidflow.io import read_table
    from deidflow.techniques.derive import derive_columns

    policy = loaded.policy
    name = policy.subject_table
    spec = policy.tables[name]
    recorded = {i.table: i for i in record.inputs}
    table = read_table(name, spec, loaded)
    if name not in recorded or recorded[name].sha256 != table.sha256:
        raise InputError(
            "the subject table is not the file this release was made from (its SHA-256 differs "
            "from the manifest's)", file=str(table.path), key=f"tables.{name}.path",
            fix="point the policy at the input the release was made from")
    frame = derive_columns(table.frame, spec, as_of=record.consent.as_of.date())
    log = loaded.resolve(policy.output.private_directory) / "exclusions" / f"{record.release_id}.csv"
    if not log.is_file():
        raise InputError(
            "the release's private consent-exclusion log is missing", file=str(log),
            fix="run this command with the policy (and private directory) the release was made with")
    excluded = pd.read_csv(log, dtype=str, usecols=["subject_id"], keep_default_na=False)["subject_id"]
    from deidflow.utility.evidence import released_mask

    keep = ~released_mask(frame[spec.subject_column], excluded)
    return frame.loc[keep].reset_index(drop=True)


def _released_table(release_dir: Path, name: str, fmt: str) -> pd.DataFrame:
    from deidflow.io import read_released_csv

    data = release_dir / "data"
    if (data / name).is_dir():  # the Dask engine's parts
        parts = sorted((data / name).glob("part-*.parquet"))
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True).astype("string")
    for ext in (fmt, "csv", "parquet"):
        path = data / f"{name}.{ext}"
        if path.is_file():
            return read_released_csv(path) if ext == "csv" else pd.read_parquet(path).astype("string")
    raise InputError(f"the release has no file for the subject table '{name}'", file=str(data),
                     fix="give the release directory of a release made with this policy")


def _released_ids(loaded: LoadedPolicy, release_id: str) -> pd.Series:
    import sqlalchemy as sa

    from deidflow.consent.registry import ConsentRegistry, registry_url_for, release_subjects

    registry = ConsentRegistry(registry_url_for(loaded))
    try:
        with registry.engine.connect() as conn:
            rows = conn.execute(sa.select(release_subjects.c.subject_id)
                                .where(release_subjects.c.release_id == release_id)).scalars().all()
    finally:
        registry.dispose()
    if not rows:
        raise InputError(
            f"the consent registry has no record of which subjects release {release_id} holds",
            key="consent.registry",
            fix="use the registry the release was made with (the hospital's own)")
    return pd.Series(rows, dtype="string")


def _page(record, evidence: UtilityEvidence) -> str:
    """A self-contained page with the utility section alone (same styles as review.html)."""
    from importlib import resources
    from string import Template

    from deidflow.manifest.review import e, utility_section

    body = utility_section(record.model_copy(update={"utility_evidence": evidence}))
    template = Template(resources.files("deidflow.manifest").joinpath("templates/review.html").read_text("utf-8"))
    return template.substitute(
        title=e(f"Utility of release {record.release_id} (recomputed at the hospital)"),
        label=e(record.label), signing_key="", verdicts="", nav="",
        sections=f'<section id="utility"><h2>Utility for the recipient\'s model</h2>\n{body}</section>',
        deidflow_version=e(record.software.deidflow), generated_at=e(record.finished_at.isoformat()))
