"""Writing the six CSVs of a synthetic hospital extract, chunk by chunk.

The population and the consent plan are drawn once for everyone; the per-row tables are then
built for CHUNK_PATIENTS patients at a time, each chunk with its own random stream, and
appended to the CSVs, so memory stays flat at 1,000,000 patients and a rerun with the same
(patients, seed, as_of) writes byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv

from deidflow.errors import InputError
from deidflow.samples.clinical import build_diagnoses, build_encounters, build_labs, staff
from deidflow.samples.consent_plan import draw_consent_plan
from deidflow.samples.consents import build_consents
from deidflow.samples.notes import build_notes
from deidflow.samples.patients import build_patients
from deidflow.samples.pools import faker_pools
from deidflow.samples.population import draw_population

TABLES = ("patients", "encounters", "diagnoses", "lab_results", "notes", "consents")
# 20,000 patients (~60,000 notes) per chunk: a lower memory peak than larger chunks for the
# same CPU time (benchmarks/bench_samples.py prints the figures).
CHUNK_PATIENTS = 20_000
MAX_PATIENTS = 9_999_999  # patient IDs are P + 7 digits
DEFAULT_SEED = 20261125
DEFAULT_AS_OF = date(2026, 11, 1)

# No quoting at all: every generated value is free of commas, quotes and line breaks, and
# Arrow raises if one is not, rather than writing a file that readers split differently.
_WRITE = pacsv.WriteOptions(quoting_style="none", quoting_header="none", batch_size=65_536)


def generate_samples(
    out_dir: Path,
    patients: int,
    seed: int = DEFAULT_SEED,
    *,
    as_of: date = DEFAULT_AS_OF,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """Write patients, encounters, diagnoses, lab_results, notes and consents CSVs to out_dir.

    Deterministic: the same (patients, seed, as_of) gives byte-identical files. `progress`, if
    given, is called with (patients done, patients) after each chunk. Returns table -> path.
    """
    if not isinstance(patients, int) or not 1 <= patients <= MAX_PATIENTS:
        raise InputError(
            f"number of patients must be between 1 and {MAX_PATIENTS:,}, got {patients!r}",
            key="patients",
            fix="pass --patients with a whole number such as 2000",
        )
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the output directory ({exc.strerror})",
            file=str(out_dir),
            fix="choose a writable directory with --out",
        ) from None

    population = draw_population(patients, seed, as_of)
    plan = draw_consent_plan(population, seed)
    pools = faker_pools(seed)
    doctors = staff(patients, seed)

    paths = {name: out_dir / f"{name}.csv" for name in TABLES}
    partial = {name: out_dir / f".{name}.csv.partial" for name in TABLES}
    writers: dict[str, pacsv.CSVWriter] = {}
    next_id = dict.fromkeys(TABLES, 1)
    try:
        for chunk, lo in enumerate(range(0, patients, CHUNK_PATIENTS)):
            hi = min(lo + CHUNK_PATIENTS, patients)
            rng = np.random.default_rng([seed, 1, chunk])
            people = build_patients(population, pools, lo, hi, rng)
            enc = build_encounters(population, doctors, lo, hi, next_id["encounters"], rng)
            tables = {
                "patients": people.table,
                "encounters": enc.table,
                "diagnoses": build_diagnoses(population, enc, next_id["diagnoses"], rng),
                "lab_results": build_labs(enc, next_id["lab_results"], rng),
                "notes": build_notes(population, people, enc, pools, lo, next_id["notes"], rng),
                "consents": build_consents(population, plan, people.name, pools, lo, hi, next_id["consents"], rng),
            }
            for name, table in tables.items():
                if name not in writers:
                    writers[name] = pacsv.CSVWriter(str(partial[name]), table.schema, write_options=_WRITE)
                writers[name].write_table(table)
                next_id[name] += table.num_rows
            if progress is not None:
                progress(hi, patients)
        for name in TABLES:
            writers.pop(name).close()
            os.replace(partial[name], paths[name])
    finally:
        # On failure no half-written table is left under its real name.
        for writer in writers.values():
            writer.close()
        for name in TABLES:
            partial[name].unlink(missing_ok=True)
    return paths


def table_schema_columns() -> dict[str, tuple[str, ...]]:
    """Column order of each generated table (the shared schema of data_samples/)."""
    from deidflow.samples.clinical import DIAGNOSIS_COLUMNS, ENCOUNTER_COLUMNS, LAB_COLUMNS
    from deidflow.samples.consents import CONSENT_COLUMNS
    from deidflow.samples.notes import NOTE_COLUMNS
    from deidflow.samples.patients import PATIENT_COLUMNS

    return {
        "patients": PATIENT_COLUMNS,
        "encounters": ENCOUNTER_COLUMNS,
        "diagnoses": DIAGNOSIS_COLUMNS,
        "lab_results": LAB_COLUMNS,
        "notes": NOTE_COLUMNS,
        "consents": CONSENT_COLUMNS,
    }

