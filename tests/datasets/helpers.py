"""Releasing the public datasets in ../shared/datasets as a user would: a consent event log
generated in the fixture (these datasets come without consent records) imported through the
ordinary CSV importer, the example policy under configs/datasets/ with its paths moved into
the test's directory, and an independent re-check of what was released.

The re-check shares no code with deidflow's risk engine: it reads the released files with
pandas and recomputes k over the subject's whole record, l on every sensitive column and looks
for the input's direct identifiers."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "datasets"
SHARED = Path(os.environ.get("DEIDFLOW_SHARED", REPO.parent / "shared"))
SECRET_HEX = "6a1c2a9e8b7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b"


def consent_log(path: Path, subject_ids, *, purpose: str, recipient: str,
                categories: list[str]) -> Path:
    """One separate 'granted' event per subject, self-given, in the hospital CSV format."""
    ids = pd.Series(pd.unique(pd.Series(subject_ids).astype(str)))
    form = hashlib.sha256(b"fixture consent form").hexdigest()
    frame = pd.DataFrame({
        "event_id": "E" + pd.Series(range(1, len(ids) + 1)).astype(str).str.zfill(8),
        "subject_id": ids,
        "event": "granted",
        "recorded_at": "2024-01-02T09:00:00+08:00",
        "grantor": "self",
        "guardian_name": "",
        "guardian_id": "",
        "separate": "true",
        "purposes": purpose,
        "recipients": recipient,
        "data_categories": ";".join(categories),
        "cross_border": "false",
        "valid_from": "2024-01-02",
        "valid_until": "",
        "notice_version": "v1",
        "form_sha256": form,
    })
    frame.to_csv(path, index=False)
    return path


def setup_root(root: Path, monkeypatch) -> None:
    monkeypatch.delenv("DEIDFLOW_PSEUDONYM_KEY", raising=False)
    keys = root / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    key = keys / "pseudonym.key"
    key.write_text(SECRET_HEX + "\n")
    os.chmod(key, 0o600)


def place_policy(name: str, root: Path, tables: dict[str, Path], *, edits: dict[str, str] | None = None) -> Path:
    """configs/datasets/<name>.yaml with its table paths, hierarchies, registry, keys and
    output moved under `root`; `edits` replace text (regex -> text)."""
    text = (CONFIGS / f"{name}.yaml").read_text(encoding="utf-8")
    for table, path in tables.items():
        text, n = re.subn(rf"(?m)^(\s+path: ).*# table:{table}$", rf"\g<1>{path}", text)
        assert n == 1, f"no path line for table {table}"
    text = text.replace("file: ../hierarchies/", f"file: {REPO / 'configs' / 'hierarchies'}/")
    text = text.replace("file: ../../../shared/", f"file: {SHARED}/")
    text = text.replace("file: utility/", f"file: {CONFIGS / 'utility'}/")
    text = re.sub(r'registry: ".*"', f'registry: "sqlite:///{root / "consent.db"}"', text)
    text = re.sub(r"pseudonym_key_file: .*", f"pseudonym_key_file: {root}/keys/pseudonym.key", text)
    text = re.sub(r"signing_key_file: .*", f"signing_key_file: {root}/keys/signing.key", text)
    text = re.sub(r"(?m)^  directory: .*", f"  directory: {root}/releases", text)
    text = re.sub(r"private_directory: .*", f"private_directory: {root}/private", text)
    for pattern, repl in (edits or {}).items():
        text, n = re.subn(pattern, repl, text)
        assert n, f"policy edit {pattern!r} matched nothing"
    path = root / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def import_consents(policy: Path, log: Path) -> None:
    from deidflow.consent.importers import import_consent_file
    from deidflow.consent.registry import ConsentRegistry
    from deidflow.policy import load_policy
    from deidflow.release import registry_url as _registry_url

    import_consent_file(ConsentRegistry(_registry_url(load_policy(policy))), log)


def released(summary, table: str) -> pd.DataFrame:
    data = Path(summary.release_dir) / "data"
    pq = data / f"{table}.parquet"
    if pq.exists():
        return pd.read_parquet(pq)
    return pd.read_csv(data / f"{table}.csv", dtype=str, keep_default_na=False, na_values=[""])


def recheck_k(subject: pd.DataFrame, subject_col: str, qis: list[str],
              children: list[tuple[pd.DataFrame, list[str]]] = ()) -> int:
    """k over each subject's whole record: the subject row's QIs plus, per child table, the
    set of (distinct) child-row QI combinations. Two subjects are alike only if all agree."""
    rec = subject[[subject_col, *qis]].astype("string").fillna("<NA>").set_index(subject_col)
    sig = rec.apply(lambda r: "\x1f".join(r), axis=1)
    for frame, cols in children:
        if not cols:
            continue
        combos = frame[[subject_col, *cols]].astype("string").fillna("<NA>").drop_duplicates()
        combos["__c"] = combos[cols].apply(lambda r: "\x1f".join(r), axis=1)
        sets = combos.groupby(subject_col)["__c"].apply(lambda s: "\x1e".join(sorted(s)))
        sig = sig + "\x1d" + sets.reindex(sig.index).fillna("")
    return int(sig.value_counts().min())


def recheck_l(subject: pd.DataFrame, qis: list[str], sensitive: list[str]) -> dict[str, int]:
    """Distinct l of each sensitive column over the classes of `qis` (missing is a value)."""
    out = {}
    for col in sensitive:
        g = subject[qis].astype("string").fillna("<NA>").assign(
            __s=subject[col].astype("string").fillna("<NA>"))
        out[col] = int(g.groupby(qis, dropna=False)["__s"].nunique().min())
    return out


def identifiers_left(frames: dict[str, pd.DataFrame], identifiers: pd.Series) -> int:
    """How many released cells equal an input direct-identifier value (long enough to mean
    something: 6 characters or more)."""
    known = set(identifiers.dropna().astype(str))
    known = {v for v in known if len(v) >= 6}
    hits = 0
    for frame in frames.values():
        for col in frame.columns:
            hits += int(frame[col].astype(str).isin(known).sum())
    return hits
