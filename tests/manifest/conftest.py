from __future__ import annotations

from pathlib import Path

import pytest

from deidflow.manifest.signing import generate_signing_keys
from release_sample import build_release, make_record


@pytest.fixture
def signing_key(tmp_path: Path) -> Path:
    private, _ = generate_signing_keys(tmp_path / "keys" / "signing.key")
    return private


@pytest.fixture
def release(tmp_path: Path, signing_key: Path) -> Path:
    # named like the pipeline names it: the directory is the release id
    return build_release(tmp_path / "releases" / make_record().release_id, signing_key)
