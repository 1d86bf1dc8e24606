"""data_samples/ is exactly what `deidflow samples --patients 2000` writes today, and matches
the schema configs/release.yaml reads, so the committed sample never drifts from the code."""

from __future__ import annotations

from deidflow.io import read_tables
from deidflow.policy import load_policy
from deidflow.samples import TABLES
from deidflow.samples.generate import table_schema_columns

from .conftest import COMMITTED_PATIENTS, REPO


def test_committed_sample_equals_a_fresh_generation(committed_dir, fresh_dir):
    differ = [
        name
        for name in TABLES
        if (committed_dir / f"{name}.csv").read_bytes() != (fresh_dir / f"{name}.csv").read_bytes()
    ]
    assert not differ, f"data_samples/ is stale for {differ}: run `make samples` and commit it"


def test_committed_sample_has_the_documented_size(extract):
    assert len(extract["patients"]) == COMMITTED_PATIENTS
    # Small enough to ship in the repository.
    assert sum(p.stat().st_size for p in (REPO / "data_samples").glob("*.csv")) < 8_000_000


def test_the_generated_columns_are_the_schema(extract):
    for name, columns in table_schema_columns().items():
        assert tuple(extract[name].columns) == columns, name


def test_the_example_policy_reads_the_committed_sample():
    loaded = load_policy(REPO / "configs" / "release.yaml")
    tables = read_tables(loaded)  # raises on a missing column, bad link key or duplicate subject
    assert set(tables) == set(loaded.policy.tables) == set(TABLES) - {"consents"}
    for name, spec in loaded.policy.tables.items():
        assert set(spec.columns) == set(table_schema_columns()[name]), name
    assert len(tables["patients"].frame) == COMMITTED_PATIENTS
