"""Releasing adult and diabetes (../shared/datasets) for the utility tests and benchmarks: the
subject table built from the public file (a row-number id for adult, the first encounter of
each patient for diabetes), a consent log granting every subject, and the policy under
configs/datasets/utility-*.yaml with its paths moved under a scratch directory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from tests.datasets.helpers import place_policy

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "datasets"
SHARED = Path(os.environ.get("DEIDFLOW_SHARED", REPO.parent / "shared"))
DATASETS = SHARED / "datasets"
SECRET_HEX = "3b1f2e4d5c6a7988a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d6e7f801"

# The public files carry no birth date; the consent gate needs one (the under-14 guardian rule),
# so every subject gets an adult one, which the policies drop from the release.
ADULT_BIRTH_DATE = "1970-01-01"
DIABETES_COLUMNS = [
    "encounter_id", "patient_nbr", "race", "gender", "age", "admission_type_id", "time_in_hospital",
    "num_lab_procedures", "num_procedures", "num_medications", "number_outpatient",
    "number_emergency", "number_inpatient", "number_diagnoses", "diag_1", "A1Cresult", "insulin",
    "readmitted",
]


def adult_table(root: Path) -> Path:
    frame = pd.read_csv(DATASETS / "adult" / "adult.csv", sep=";", dtype=str, keep_default_na=False)
    frame.insert(0, "id", "A" + pd.Series(range(1, len(frame) + 1)).astype(str).str.zfill(6))
    frame["consent_birth_date"] = ADULT_BIRTH_DATE
    out = root / "data" / "adult.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, sep=";", index=False)
    return out


def diabetes_table(root: Path) -> Path:
    frame = pd.read_csv(DATASETS / "diabetes_130_us_hospitals" / "diabetic_data.csv", dtype=str,
                        keep_default_na=False, usecols=DIABETES_COLUMNS)
    frame = frame.drop_duplicates("patient_nbr", keep="first")[DIABETES_COLUMNS]
    frame["consent_birth_date"] = ADULT_BIRTH_DATE
    out = root / "data" / "diabetes-patients.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    return out


def consent_log(path: Path, subject_ids, *, purpose: str, recipient: str, categories: list[str]) -> Path:
    """One separate, self-given 'granted' event per subject, in the hospital CSV format."""
    ids = pd.Series(pd.unique(pd.Series(subject_ids).astype(str)))
    pd.DataFrame({
        "event_id": "E" + pd.Series(range(1, len(ids) + 1)).astype(str).str.zfill(8),
        "subject_id": ids, "event": "granted", "recorded_at": "2024-01-02T09:00:00+08:00",
        "grantor": "self", "guardian_name": "", "guardian_id": "", "separate": "true",
        "purposes": purpose, "recipients": recipient, "data_categories": ";".join(categories),
        "cross_border": "false", "valid_from": "2024-01-02", "valid_until": "",
        "notice_version": "v1", "form_sha256": hashlib.sha256(b"fixture consent form").hexdigest(),
    }).to_csv(path, index=False)
    return path


def prepare_dataset(name: str, root: Path, *, search_loss: str = "default") -> Path:
    """Input table, key, policy and imported consents for `adult` or `diabetes` under `root`;
    returns the policy path."""
    from deidflow.consent.importers import import_consent_file
    from deidflow.consent.registry import ConsentRegistry, registry_url_for
    from deidflow.policy import load_policy

    root.mkdir(parents=True, exist_ok=True)
    keys = root / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    (keys / "pseudonym.key").write_text(SECRET_HEX + "\n")
    os.chmod(keys / "pseudonym.key", 0o600)
    if name == "adult":
        table, sid, tname = adult_table(root), "id", "adult"
        ids = pd.read_csv(table, sep=";", dtype=str, usecols=[sid])[sid]
    else:
        table, sid, tname = diabetes_table(root), "patient_nbr", "patients"
        ids = pd.read_csv(table, dtype=str, usecols=[sid])[sid]
    policy = place_policy(f"utility-{name}", root, {tname: table},
                          edits={r"search_loss: default": f"search_loss: {search_loss}"})
    loaded = load_policy(policy)
    rel = loaded.policy.release
    log = consent_log(root / "consents.csv", ids, purpose=rel.purpose, recipient=rel.recipient.id,
                      categories=list(rel.data_categories))
    import_consent_file(ConsentRegistry(registry_url_for(loaded)), log)
    return policy
