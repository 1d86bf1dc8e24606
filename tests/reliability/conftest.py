"""Fixtures for the reliability tests: the integration extract and policy (loaded from
tests/integration/conftest.py by path, so this folder works whichever way pytest imports it),
a per-test copy of the extract that a test may damage, and helpers that list what a run left
behind."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
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
    if env.releases.is_dir():
        out += sorted(env.releases.iterdir())
    work = env.private / "work"
    if work.exists():
        out += sorted(work.iterdir())
    return out


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- one real release shared by the fault, secret and attack tests ------------------------------

SMALL_PATIENTS = 200  # the GX gate's time grows with the data; 200 subjects keep a run ~10 s


@pytest.fixture(scope="session")
def small_extract(tmp_path_factory) -> Path:
    from deidflow.samples import generate_samples

    data = tmp_path_factory.mktemp("small-extract")
    generate_samples(data, SMALL_PATIENTS, seed=7)
    return data


def make_env(root: Path, data: Path, **policy_kw) -> Env:
    """A root with its own key (0600), registry (consents imported) and output dirs."""
    root.mkdir(parents=True, exist_ok=True)
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    key = keys / "pseudonym.key"
    key.write_text(SECRET_HEX + "\n")
    os.chmod(key, 0o600)
    policy = write_policy(root, data, **policy_kw)
    import_consents(policy, data)
    return Env(root, data, policy)


def cli(env: Env, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 600):
    """`deidflow release POLICY --no-prefect` in a child process (what a scheduler runs)."""
    import subprocess

    child_env = {k: v for k, v in os.environ.items() if k != "DEIDFLOW_PSEUDONYM_KEY"}
    child_env.update({"PREFECT_HOME": str(env.root / "prefect"), "COLUMNS": "200"})
    child_env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "deidflow.cli", *args, "release", str(env.policy), "--no-prefect"],
        cwd=env.root, env=child_env, capture_output=True, text=True, timeout=timeout,
    )


@dataclass
class Baseline:
    env: Env
    release_dir: Path
    output: str  # everything the run printed (verbose)


@pytest.fixture(scope="session")
def baseline(tmp_path_factory, small_extract) -> Baseline:
    """An uninterrupted, verbose release of the small extract through the CLI."""
    env = make_env(tmp_path_factory.mktemp("baseline"), small_extract)
    proc = cli(env, "-v")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (release_dir,) = [p for p in env.releases.iterdir() if not p.name.startswith(".")]
    return Baseline(env, release_dir, proc.stdout + proc.stderr)


def data_digests(release_dir: Path) -> dict[str, str]:
    """SHA-256 of every released data and aggregate file, by relative path."""
    import hashlib

    return {str(p.relative_to(release_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files_under(release_dir)
            if p.relative_to(release_dir).parts[0] in ("data", "aggregates")}


# --- every bad-input case run to failure on both paths, once per session ------------------------


@pytest.fixture(scope="session")
def failed_runs(tmp_path_factory, extract):
    """The failing runs of test_failures_leak_nothing.py, which test_secrets.py scans too.
    Defined here, not imported into each test module: an imported fixture is a second fixture
    with its own session cache, and the runs (one Prefect server, every case twice) were paid
    twice."""
    from .test_failures_leak_nothing import run_failing_cases

    return run_failing_cases(tmp_path_factory, extract)
