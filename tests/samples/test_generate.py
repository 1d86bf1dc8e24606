"""The generator itself: deterministic per seed, chunked without seams, bad input refused
with a clear error, and the `deidflow samples` command."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import deidflow.samples.generate as generate_module
from deidflow.cli import app
from deidflow.errors import InputError
from deidflow.identifiers import valid_mobiles, valid_resident_ids
from deidflow.samples import TABLES, generate_samples


def digests(directory) -> dict[str, str]:
    return {name: hashlib.sha256((directory / f"{name}.csv").read_bytes()).hexdigest() for name in TABLES}


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    first, again, other = (generate_samples(tmp_path / d, 300, seed=s) for d, s in (("a", 5), ("b", 5), ("c", 6)))
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    changed = digests(tmp_path / "a").items() ^ digests(tmp_path / "c").items()
    assert {name for name, _ in changed} == set(TABLES)  # every table depends on the seed
    assert set(first) == set(TABLES) and not list(tmp_path.glob("*/.*partial"))


def test_chunks_join_without_seams(tmp_path, monkeypatch):
    """Three chunks: IDs continue across chunk boundaries and identifiers stay unique."""
    monkeypatch.setattr(generate_module, "CHUNK_PATIENTS", 100)
    generate_samples(tmp_path / "a", 250, seed=3)
    generate_samples(tmp_path / "b", 250, seed=3)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    t = {name: pd.read_csv(tmp_path / "a" / f"{name}.csv", dtype=str) for name in TABLES}
    assert list(t["patients"]["patient_id"]) == [f"P{i:07d}" for i in range(1, 251)]
    for name, key in (("encounters", "encounter_id"), ("diagnoses", "diagnosis_id"), ("lab_results", "lab_id"),
                      ("notes", "note_id"), ("consents", "event_id")):
        ids = t[name][key].str[1:].astype(int)
        assert list(ids) == list(range(1, len(ids) + 1)), name  # consecutive, no restart per chunk
    for column in ("resident_id", "mobile", "insurance_no"):
        assert t["patients"][column].is_unique


@settings(max_examples=8, deadline=None)
@given(patients=st.integers(1, 160), seed=st.integers(0, 2**32 - 1))
def test_any_size_and_seed_gives_valid_linked_identifiers(tmp_path_factory, patients, seed):
    out = tmp_path_factory.mktemp("any")
    generate_samples(out, patients, seed=seed)
    t = {name: pd.read_csv(out / f"{name}.csv", dtype=str, keep_default_na=False) for name in TABLES}
    p = t["patients"]
    assert len(p) == patients
    assert valid_resident_ids(p["resident_id"]).all() and p["resident_id"].is_unique
    assert valid_mobiles(p["mobile"]).all()
    for name in ("encounters", "diagnoses", "lab_results", "notes"):
        assert t[name]["patient_id"].isin(p["patient_id"]).all(), name
    assert t["consents"]["subject_id"].isin(p["patient_id"]).all()


@pytest.mark.parametrize("patients", [0, -5, 10_000_000, 2.5, "100"])
def test_a_bad_patient_count_is_an_input_error(tmp_path, patients):
    with pytest.raises(InputError, match="number of patients"):
        generate_samples(tmp_path, patients)
    assert not any(tmp_path.iterdir())


def test_an_unwritable_output_is_an_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="cannot create the output directory"):
        generate_samples(blocker / "out", 10)


def test_the_cli_command_writes_the_same_files(tmp_path):
    result = CliRunner().invoke(app, ["samples", "--patients", "120", "--seed", "9", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    printed = "".join(result.output.split())  # rich wraps long paths on a narrow terminal
    for name in TABLES:
        assert f"{name}.csv" in printed
    generate_samples(tmp_path / "api", 120, seed=9)
    assert digests(tmp_path / "cli") == digests(tmp_path / "api")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--patients", "0"], "patients"),
        (["--patients", "lots"], "patients"),
        (["--patients", "10000000"], "number of patients must be between"),
    ],
)
def test_the_cli_refuses_bad_input_without_a_traceback(tmp_path, args, message):
    result = CliRunner().invoke(app, ["samples", "--out", str(tmp_path / "x"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
