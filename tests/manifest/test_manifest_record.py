from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from deidflow.manifest.record import DEIDENTIFIED_LABEL
from deidflow.redaction import redact_url
from release_sample import make_record


def test_sample_record_is_json_able_and_labelled_still_pi():
    r = make_record()
    assert r.label == DEIDENTIFIED_LABEL and "73(3)" in r.label
    assert type(r).model_validate(r.to_json()) == r


def test_registry_password_is_redacted():
    r = make_record()
    assert "s3cr3t-pw" not in r.model_dump_json()
    assert r.consent.registry == "postgresql+psycopg://deid:***@db.hospital.local/consent"
    assert redact_url("sqlite:///consent.db") == "sqlite:///consent.db"


@pytest.mark.parametrize("name", ["key", "secret", "hmac_key", "password", "salt", "token"])
def test_key_material_in_parameters_is_refused(name):
    base = make_record().to_json()
    base["columns"][0]["params"] = {name: "8f3b1c0d9e7a6b5c"}
    with pytest.raises(ValidationError, match="fingerprint"):
        type(make_record()).model_validate(base)


def test_retention_shorter_than_three_years_is_refused():
    r = make_record()
    with pytest.raises(ValidationError, match="PIPL art. 56"):
        make_record(retention_until=r.created_at + timedelta(days=365 * 2))


def test_policy_hash_must_match_its_text():
    with pytest.raises(ValidationError, match="policy_sha256"):
        make_record(policy_sha256="0" * 64)


@pytest.mark.parametrize("digest", ["", "abc", "A" * 64])
def test_consent_digest_is_a_sha256(digest):
    consent = make_record().consent.model_dump()
    with pytest.raises(ValidationError, match="consent_ids_digest"):
        make_record(consent={**consent, "consent_ids_digest": digest})
