"""encounters, diagnoses and lab_results rows for one chunk of patients.

Encounters fall after birth and before the as-of date; the department depends on whether the
patient is a child, a man or a woman; diagnoses come from the department's ICD-10 codes plus
common chronic conditions; lab values are drawn per test around Chinese reference intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa

from deidflow.samples._codes import (
    COMORBIDITIES,
    DEPARTMENT_WEIGHTS,
    DEPARTMENTS,
    DIAGNOSES,
    ENCOUNTER_TYPES,
    LAB_TESTS,
)
from deidflow.samples.composition import choose, digits, join, pick, pool
from deidflow.samples.pools import faker_pools
from deidflow.samples.population import Population

ENCOUNTERS_PER_PATIENT = 3.0
DIAGNOSES_PER_ENCOUNTER = 1.5
LABS_PER_ENCOUNTER = 2.0
LOOKBACK_DAYS = 5 * 365
PATIENTS_PER_DOCTOR = 200

_DEPT_INDEX = {d: i for i, d in enumerate(DEPARTMENTS)}
_EMERGENCY = _DEPT_INDEX["急诊科"]
_ICD_BY_CODE = {row[0]: i for i, row in enumerate(DIAGNOSES)}
# Diagnoses sorted by department: the department's codes are a contiguous run.
_DX_DEPT = np.array([_DEPT_INDEX[row[2]] for row in DIAGNOSES])
_DX_ORDER = np.argsort(_DX_DEPT, kind="stable")
_DX_START = np.searchsorted(_DX_DEPT[_DX_ORDER], np.arange(len(DEPARTMENTS)))
_DX_COUNT = np.bincount(_DX_DEPT, minlength=len(DEPARTMENTS))
_CHILD_COMORBID = np.array([_ICD_BY_CODE[c] for c in COMORBIDITIES["child"]])
_ADULT_COMORBID = np.array([_ICD_BY_CODE[c] for c in COMORBIDITIES["adult"]])
_GROUP_CUMWEIGHTS = np.array(
    [np.cumsum(DEPARTMENT_WEIGHTS[g]) / sum(DEPARTMENT_WEIGHTS[g]) for g in ("child", "male", "female")]
)

ENCOUNTER_COLUMNS = (
    "encounter_id",
    "patient_id",
    "admit_date",
    "discharge_date",
    "department",
    "encounter_type",
    "attending_doctor",
)
DIAGNOSIS_COLUMNS = ("diagnosis_id", "encounter_id", "patient_id", "icd10", "diagnosis_name", "diagnosis_date")
LAB_COLUMNS = ("lab_id", "encounter_id", "patient_id", "test_code", "test_name", "value", "unit", "result_date")


@dataclass(frozen=True)
class Doctors:
    name: pa.Array
    start: np.ndarray  # per department: first doctor (doctors are sorted by department)
    count: np.ndarray


@cache
def staff(patients: int, seed: int) -> Doctors:
    """Attending doctors, each in one department, shared by every chunk."""
    pools = faker_pools(seed)
    rng = np.random.default_rng([seed, 3])
    n = max(2 * len(DEPARTMENTS), patients // PATIENTS_PER_DOCTOR)
    dept = np.sort(np.arange(n) % len(DEPARTMENTS))
    male = rng.random(n) < 0.5
    idx = rng.integers(0, len(pools.male_names), n)
    name = choose(male.astype(np.int8), pick(pools.female_names, idx), pick(pools.male_names, idx))
    return Doctors(name, np.searchsorted(dept, np.arange(len(DEPARTMENTS))), np.bincount(dept))


@dataclass(frozen=True)
class EncounterChunk:
    table: pa.Table
    patient_row: np.ndarray  # absolute population row of each encounter
    admit: np.ndarray  # datetime64[D]
    discharge: np.ndarray
    department: np.ndarray  # index into DEPARTMENTS
    doctor: pa.Array
    diagnosis: np.ndarray  # index into DIAGNOSES of the primary diagnosis


def build_encounters(
    pop: Population, doctors: Doctors, lo: int, hi: int, first_id: int, rng: np.random.Generator
) -> EncounterChunk:
    per_patient = np.minimum(1 + rng.poisson(ENCOUNTERS_PER_PATIENT - 1, hi - lo), 12)
    row = np.repeat(np.arange(lo, hi), per_patient)
    m = len(row)
    group = np.where(pop.minor[row], 0, np.where(pop.male[row], 1, 2))
    dept = (rng.random(m)[:, None] > _GROUP_CUMWEIGHTS[group]).sum(axis=1)
    dept = np.minimum(dept, len(DEPARTMENTS) - 1)

    kind = np.where(dept == _EMERGENCY, 2, np.where(rng.random(m) < 0.3, 1, 0))
    los = np.select(
        [kind == 1, kind == 2],
        [np.minimum(2 + rng.geometric(0.15, m), 45), (rng.random(m) < 0.3).astype(np.int64)],
        0,
    )
    age_days = pop.age_days[row]
    los = np.minimum(los, np.maximum(age_days - 3, 0))
    span = np.clip(np.minimum(LOOKBACK_DAYS, age_days - los - 2), 1, None)
    as_of = np.datetime64(pop.as_of, "D")
    admit = as_of - 1 - los - np.floor(rng.random(m) * span).astype(np.int64)
    # Encounter IDs increase with admission date within each patient, as a hospital's would.
    order = np.lexsort((admit, row))
    row, dept, kind, los, admit = row[order], dept[order], kind[order], los[order], admit[order]
    discharge = admit + los

    doctor_idx = doctors.start[dept] + np.floor(rng.random(m) * doctors.count[dept]).astype(np.int64)
    doctor = pick(doctors.name, doctor_idx)
    dx = _DX_ORDER[_DX_START[dept] + np.floor(rng.random(m) * _DX_COUNT[dept]).astype(np.int64)]

    table = pa.table(
        {
            "encounter_id": join("E", digits(np.arange(first_id, first_id + m), 8)),
            "patient_id": join("P", digits(row + 1, 7)),
            "admit_date": pa.array(admit, pa.date32()),
            "discharge_date": pa.array(discharge, pa.date32()),
            "department": pick(pool(DEPARTMENTS), dept),
            "encounter_type": pick(pool(ENCOUNTER_TYPES), kind),
            "attending_doctor": doctor,
        }
    )
    return EncounterChunk(table, row, admit, discharge, dept, doctor, dx)


def build_diagnoses(pop: Population, enc: EncounterChunk, first_id: int, rng: np.random.Generator) -> pa.Table:
    m = len(enc.patient_row)
    extra = np.minimum(rng.poisson(DIAGNOSES_PER_ENCOUNTER - 1, m), 3)
    child = pop.minor[enc.patient_row]
    # Secondary diagnoses: consecutive entries of the group's comorbidity list from a random
    # start, so one encounter never lists the same secondary code twice.
    e_row = np.repeat(np.arange(m), extra)
    k = np.arange(len(e_row)) - np.repeat(np.cumsum(extra) - extra, extra)
    base = rng.integers(0, 1 << 30, m)[e_row] + k
    e_child = child[e_row]
    secondary = np.where(
        e_child,
        _CHILD_COMORBID[base % len(_CHILD_COMORBID)],
        _ADULT_COMORBID[base % len(_ADULT_COMORBID)],
    )
    keep = secondary != enc.diagnosis[e_row]
    e_row, secondary = e_row[keep], secondary[keep]

    enc_row = np.concatenate([np.arange(m), e_row])
    code = np.concatenate([enc.diagnosis, secondary])
    primary_first = np.lexsort((np.r_[np.zeros(m), np.ones(len(e_row))], enc_row))
    enc_row, code = enc_row[primary_first], code[primary_first]
    n = len(enc_row)
    return pa.table(
        {
            "diagnosis_id": join("D", digits(np.arange(first_id, first_id + n), 9)),
            "encounter_id": enc.table["encounter_id"].combine_chunks().take(pa.array(enc_row, pa.int64())),
            "patient_id": enc.table["patient_id"].combine_chunks().take(pa.array(enc_row, pa.int64())),
            "icd10": pick(pool([d[0] for d in DIAGNOSES]), code),
            "diagnosis_name": pick(pool([d[1] for d in DIAGNOSES]), code),
            "diagnosis_date": pa.array(enc.admit[enc_row], pa.date32()),
        }
    )


_LAB_CENTER = np.array([t[4] for t in LAB_TESTS])
_LAB_SPREAD = np.array([t[5] for t in LAB_TESTS])
_LAB_LOG = np.array([t[3] == "lognormal" for t in LAB_TESTS])
_LAB_DECIMALS = np.array([t[6] for t in LAB_TESTS])
_LAB_FLOOR = np.array([t[7] for t in LAB_TESTS])


def build_labs(enc: EncounterChunk, first_id: int, rng: np.random.Generator) -> pa.Table:
    m = len(enc.patient_row)
    per_encounter = np.minimum(rng.poisson(LABS_PER_ENCOUNTER, m), 10)
    enc_row = np.repeat(np.arange(m), per_encounter)
    n = len(enc_row)
    test = rng.integers(0, len(LAB_TESTS), n)
    z = rng.standard_normal(n)
    center, spread = _LAB_CENTER[test], _LAB_SPREAD[test]
    value = np.where(_LAB_LOG[test], center * np.exp(spread * z), center + spread * z)
    scale = 10.0 ** _LAB_DECIMALS[test]
    value = np.round(np.maximum(value, _LAB_FLOOR[test]) * scale) / scale
    stay = (enc.discharge - enc.admit).astype(np.int64)[enc_row]
    result = enc.admit[enc_row] + np.floor(rng.random(n) * (stay + 1)).astype(np.int64)
    return pa.table(
        {
            "lab_id": join("L", digits(np.arange(first_id, first_id + n), 9)),
            "encounter_id": enc.table["encounter_id"].combine_chunks().take(pa.array(enc_row, pa.int64())),
            "patient_id": enc.table["patient_id"].combine_chunks().take(pa.array(enc_row, pa.int64())),
            "test_code": pick(pool([t[0] for t in LAB_TESTS]), test),
            "test_name": pick(pool([t[1] for t in LAB_TESTS]), test),
            "value": pa.array(value, pa.float64()),
            "unit": pick(pool([t[2] for t in LAB_TESTS]), test),
            "result_date": pa.array(result, pa.date32()),
        }
    )
