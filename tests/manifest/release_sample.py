"""Sample release for the manifest tests, built without the pipeline: Chinese clinical tables, a consent snapshot
with exclusions, per-column treatment with a key fingerprint, risk before/after, GX results."""

from __future__ import annotations

import hashlib
import hmac
import json
import platform
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from deidflow.manifest.record import ReleaseRecord, add_years
from deidflow.manifest.review import render_review
from deidflow.manifest.seal import write_manifest
from deidflow.manifest.signing import generate_signing_keys, signing_key_id

# A pseudonymisation secret the record must never contain (only its fingerprint).
PSEUDONYM_SECRET = bytes.fromhex("8f3b1c0d9e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c")
KEY_FINGERPRINT = "hmac-sha256:" + hmac.new(PSEUDONYM_SECRET, b"deidflow key fingerprint v1", hashlib.sha256).hexdigest()[:32]

POLICY_TEXT = """version: 1
plan:
  objective: 训练糖尿病再入院预测模型
  attacker_model: prosecutor
  approver: 王芳 (隐私官)
  executor: 李强 (数据工程师)
  version: "2026-03"
release:
  agreement_id: DSA-2026-017
  pipia_id: PIPIA-2026-009
  purpose: ai_training
  recipient: {id: ACME-AI, name: 某某智能医疗科技有限公司, country: CN}
  model: controlled
  data_categories: [demographics, diagnoses]
subject_table: patients
tables:
  patients:
    path: data/patients.csv
    subject_column: patient_id
    columns:
      patient_id: {role: link_key, technique: pseudonymise}
      name: {role: direct_identifier, technique: drop}
      birth_date: {role: quasi_identifier, technique: generalise, hierarchy: {kind: date}}
      region: {role: quasi_identifier, technique: generalise, hierarchy: {kind: region}}
      diagnosis: {role: sensitive, technique: keep}
"""

RELEASED_PATIENTS = (
    "patient_id,birth_date,region,diagnosis\n"
    "p_7f3a9c,1956,3301,2型糖尿病\n"
    "p_1b2c3d,1956,3301,高血压\n"
    "p_9e8d7c,1961,3302,2型糖尿病\n"
)
RELEASED_ENCOUNTERS = "patient_id,visit_month,department\np_7f3a9c,2025-03,内分泌科\np_1b2c3d,2025-04,心内科\n"


def make_record(**overrides) -> ReleaseRecord:
    created = datetime(2026, 3, 14, 9, 30, tzinfo=timezone.utc)
    data = dict(
        release_id="dsa-2026-017-20260314T0930Z",
        created_at=created,
        started_at=created - timedelta(minutes=4),
        finished_at=created,
        policy_text=POLICY_TEXT,
        policy_sha256=hashlib.sha256(POLICY_TEXT.encode("utf-8")).hexdigest(),
        agreement_id="DSA-2026-017",
        pipia_id="PIPIA-2026-009",
        recipient={"id": "ACME-AI", "name": "某某智能医疗科技有限公司", "country": "CN"},
        purpose="ai_training",
        release_model="controlled",
        data_categories=["demographics", "diagnoses"],
        retention_until=add_years(created, 3),
        plan={
            "objective": "训练糖尿病再入院预测模型",
            "attacker_model": "prosecutor",
            "approver": "王芳 (隐私官)",
            "executor": "李强 (数据工程师)",
            "version": "2026-03",
        },
        inputs=[
            {"table": "patients", "path": "data/patients.csv", "sha256": "a" * 64, "rows": 2000},
            {"table": "encounters", "path": "data/encounters.csv", "sha256": "b" * 64, "rows": 9120},
        ],
        consent={
            "registry": "postgresql+psycopg://deid:s3cr3t-pw@db.hospital.local/consent",
            "as_of": created - timedelta(minutes=5),
            "events": 4311,
            "granted": 1712,
            "excluded_by_reason": {
                "no separate consent (PIPL art. 29)": 171,
                "withdrawn": 64,
                "purpose not covered": 31,
                "under 14 without guardian consent (art. 31)": 12,
                "expired": 10,
            },
            "consent_ids_digest": hashlib.sha256(b"c-000001\nc-000002").hexdigest(),
        },
        columns=[
            {"table": "patients", "column": "patient_id", "role": "link_key", "technique": "pseudonymise",
             "params": {"algorithm": "HMAC-SHA256", "key_fingerprint": KEY_FINGERPRINT, "derivation": "HKDF per recipient"}},
            {"table": "patients", "column": "name", "role": "direct_identifier", "technique": "drop", "params": {}},
            {"table": "patients", "column": "birth_date", "role": "quasi_identifier", "technique": "generalise",
             "params": {"hierarchy": "date", "level": 3, "level_name": "year"}},
            {"table": "patients", "column": "region", "role": "quasi_identifier", "technique": "generalise",
             "params": {"hierarchy": "region", "level": 1, "level_name": "city (4 digits)"}},
            {"table": "patients", "column": "diagnosis", "role": "sensitive", "technique": "keep", "params": {}},
            {"table": "encounters", "column": "visit_date", "role": "quasi_identifier", "technique": "date_shift",
             "params": {"max_days": 30, "key_fingerprint": KEY_FINGERPRINT}},
        ],
        risk={
            "before": {"k": 1, "classes": 1688, "Ra": 0.912, "Rb": 1.0, "Rc": 0.843, "R": 0.843, "l": 1},
            "after": {"k": 7, "k_required": 6, "classes": 96, "Ra": 0.0, "Rb": 0.1429, "Rc": 0.0561, "R": 0.0412, "l": 3, "level": "L3"},
            "levels": {"birth_date": 3, "region": 1},
            "suppressed_records": 23,
            "utility": {"information_loss": 0.318, "discernibility": 48211.0},
        },
        aggregates=[{"name": "dx_by_region", "table": "patients", "by": ["region", "diagnosis"], "cells": 140, "suppressed_cells": 9}],
        validation={
            "success": True,
            "expectations": [
                {"expectation_type": "expect_min_class_size", "column": "birth_date, region", "success": True, "observed": 7, "description": "k ≥ 6 (GB/T 39725)"},
                {"expectation_type": "expect_max_class_risk", "success": True, "observed": 0.1429, "description": "Ra = 0 with τ = 1/5"},
                {"expectation_type": "expect_overall_risk_below", "success": True, "observed": 0.0412, "description": "R ≤ 0.05"},
                {"expectation_type": "expect_no_resident_id", "column": "diagnosis", "success": True, "observed": 0, "description": "no GB 11643 IDs"},
            ],
        },
        counts={"records_in": 2000, "excluded_for_consent": 288, "suppressed": 23,
                "released": {"patients": 1689, "encounters": 7710}},
        software={"deidflow": "0.1.0", "python": platform.python_version(),
                  "packages": {"pandas": "3.1.1", "numpy": "2.4.6", "great-expectations": "1.24.1", "cryptography": "50.0.2"}},
        flow_run_id="0c7d5e2a-9b1f-4c3e-8a6d-2f4b1e9c7a50",
    )
    data.update(overrides)
    return ReleaseRecord.model_validate(data)


def class_sizes(seed: int = 1) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(6, 60, size=96)]



def build_release(release_dir: Path, key: Path, record: ReleaseRecord | None = None, *,
                  digests=None) -> Path:
    """What the pipeline does at publish: data + validation, then review.html, then seal
    (`digests`: a FileDigests shared by the review and the manifest, as publish_release does)."""
    record = record or make_record()
    (release_dir / "data").mkdir(parents=True)
    (release_dir / "data" / "patients.csv").write_text(RELEASED_PATIENTS, encoding="utf-8")
    (release_dir / "data" / "encounters.csv").write_text(RELEASED_ENCOUNTERS, encoding="utf-8")
    (release_dir / "validation.json").write_text(
        json.dumps(record.validation, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    before = [1] * 900 + [2] * 300 + [3] * 120 + [5] * 40
    render_review(
        release_dir,
        record,
        class_sizes=class_sizes(),
        class_sizes_before=before,
        signing_fingerprint=signing_key_id(key),
        **({"digests": digests} if digests else {}),
    )
    write_manifest(release_dir, record, key, **({"digests": digests} if digests else {}))
    return release_dir
