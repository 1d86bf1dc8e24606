"""Fixtures for the sample-extract tests: the committed data_samples/ read once, and a fresh
generation of the same command in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from deidflow.samples import DEFAULT_SEED, TABLES, generate_samples

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "data_samples"
COMMITTED_PATIENTS = 2000  # the Makefile's `samples` target and data_samples/README.md


@pytest.fixture(scope="session")
def committed_dir() -> Path:
    if not (COMMITTED / "patients.csv").is_file():
        pytest.fail(f"{COMMITTED} is missing; run `make samples` and commit it")
    return COMMITTED


@pytest.fixture(scope="session")
def fresh_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fresh_samples")
    generate_samples(out, COMMITTED_PATIENTS, DEFAULT_SEED)
    return out


@pytest.fixture(scope="session")
def extract(committed_dir) -> dict[str, pd.DataFrame]:
    """Every committed table as strings (what a reader of the CSVs sees, no dtype guessing)."""
    return {
        name: pd.read_csv(committed_dir / f"{name}.csv", dtype=str, keep_default_na=False)
        for name in TABLES
    }
