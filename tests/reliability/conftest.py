"""Fixtures for the reliability tests: the integration extract and policy (loaded from
tests/integration/conftest.py by path, so this folder works whichever way pytest imports it),
a per-test copy of the extract that a test may damage, and helpers that list what a run left
behind."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

_spec = importlib.util.spec_from_file_location("deidflow_tests_integration_conftest",
                                               HERE.parent / "integration" / "conftest.py")
integration = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = integration  # dataclasses look their module up there
_spec.loader.exec_module(integration)

# Re-exported fixtures and helpers (pytest registers fixtures found in a conftest's namespace).
extract = integration.extract
env = integration.env
Env = integration.Env
write_policy = integration.write_policy
import_consents = integration._import_consents
SECRET_HEX = integration.SECRET_HEX


@pytest.fixture
def damaged(tmp_path, extract, monkeypatch) -> Env:
    """Like `env`, but the extract is a private copy the test may corrupt; consents are not
    imported (call `import_consents(env.policy, env.data)` when the case needs them)."""
    monkeypatch.delenv("DEIDFLOW_PSEUDONYM_KEY", raising=False)
    data = tmp_path / "extract"
    shutil.copytree(extract, data)
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    key = keys / "pseudonym.key"
    key.write_text(SECRET_HEX + "\n")
    os.chmod(key, 0o600)
    policy = write_policy(tmp_path, data)
    return Env(tmp_path, data, policy)


def leftovers(env: Env) -> list[Path]:
    """Whatever a failed or killed run may have left where it must not: release or staging
    directories in the output directory, private work directories."""
    out: list[Path] = []
    if env.releases.exists():
        out += sorted(env.releases.iterdir())
    work = env.private / "work"
    if work.exists():
        out += sorted(work.iterdir())
    return out


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())
