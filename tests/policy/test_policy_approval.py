"""release.approval and release.approval_days: defaults by release model, strict values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deidflow.errors import PolicyError
from deidflow.policy import load_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "release.yaml"


def _policy(tmp_path: Path, **release) -> Path:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for key in ("approval", "approval_days"):
        raw["release"].pop(key, None)
    raw["release"].update(release)
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return p


@pytest.mark.parametrize("model, required", [("public", True), ("controlled", True), ("enclave", False)])
def test_approval_defaults_by_release_model(tmp_path: Path, model: str, required: bool):
    release = load_policy(_policy(tmp_path, model=model)).policy.release
    assert release.approval is None and release.approval_required is required
    assert release.approval_days == 14


def test_an_explicit_setting_wins_over_the_models_default(tmp_path: Path):
    assert not load_policy(_policy(tmp_path, model="public", approval="not_required")).policy.release.approval_required
    assert load_policy(_policy(tmp_path, model="enclave", approval="required")).policy.release.approval_required


def test_the_example_policy_requires_approval():
    release = load_policy(EXAMPLE).policy.release
    assert release.approval == "required" and release.approval_required


@pytest.mark.parametrize("bad", [{"approval": "yes"}, {"approval_days": 0}, {"approval_dayz": 3}])
def test_bad_or_unknown_approval_settings_are_refused(tmp_path: Path, bad: dict):
    with pytest.raises(PolicyError) as exc:
        load_policy(_policy(tmp_path, **bad))
    assert "release." + next(iter(bad)) in str(exc.value)
