"""A small generated hospital extract, its consents in a registry and a policy pointing at
them, for end-to-end release tests. Generated once per session (it is deterministic)."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_POLICY = REPO / "configs" / "release.yaml"
SECRET_HEX = "5f1c2a9e8b7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b"
PATIENTS = 800


@dataclass
class Env:
    root: Path
    data: Path
    policy: Path

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def private(self) -> Path:
        return self.root / "private"


def write_policy(root: Path, data: Path, *, registry: str | None = None, edits: dict[str, str] | None = None,
                 name: str = "policy.yaml", approval: str = "not_required") -> Path:
    """The example policy with its paths moved under `root`; `edits` replace text (regex → text).
    `approval`: the example requires the privacy officer's approval; tests whose subject is not
    the approval step publish directly (not_required), the approval tests pass "required"."""
    text = EXAMPLE_POLICY.read_text(encoding="utf-8")
    assert "  approval: required\n" in text
    text = text.replace("  approval: required\n", f"  approval: {approval}\n")
    text = text.replace("../data_samples/", f"{data}/")
    text = text.replace("file: hierarchies/", f"file: {REPO / 'configs' / 'hierarchies'}/")
    text = text.replace('"sqlite:///../.deidflow/consent.db"', f'"{registry or "sqlite:///" + str(root / "consent.db")}"')
    text = text.replace("../.deidflow/keys/", f"{root}/keys/")
    text = text.replace("directory: ../releases", f"directory: {root}/releases")
    text = text.replace("private_directory: ../.deidflow/private", f"private_directory: {root}/private")
    for pattern, repl in (edits or {}).items():
        text, n = re.subn(pattern, repl, text)
        assert n, f"policy edit {pattern!r} matched nothing"
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def extract(tmp_path_factory) -> Path:
    from deidflow.samples import generate_samples

    data = tmp_path_factory.mktemp("extract")
    generate_samples(data, PATIENTS, seed=7)
    return data


def _import_consents(policy: Path, data: Path) -> None:
    from deidflow.consent.importers import import_consent_file
    from deidflow.consent.registry import ConsentRegistry
    from deidflow.policy import load_policy
    from deidflow.release import registry_url

    loaded = load_policy(policy)
    import_consent_file(ConsentRegistry(registry_url(loaded)), data / "consents.csv")


@pytest.fixture
def env(tmp_path, extract, monkeypatch) -> Env:
    """A fresh root per test: its own registry, keys and output; the shared extract."""
    monkeypatch.delenv("DEIDFLOW_PSEUDONYM_KEY", raising=False)
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    key = keys / "pseudonym.key"
    key.write_text(SECRET_HEX + "\n")
    os.chmod(key, 0o600)
    policy = write_policy(tmp_path, extract)
    _import_consents(policy, extract)
    return Env(tmp_path, extract, policy)


def copy_extract(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
