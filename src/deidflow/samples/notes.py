"""notes.csv: one Chinese clinical note per encounter that names its patient the way real
notes do, so a free-text scrubber has work: the name (sometimes twice), the resident ID and
the mobile in several spellings (plain, grouped with spaces or dashes, lower-case x, +86),
dates in four formats, and sometimes the address, the insurance number or a relative (家属)
with their own mobile.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deidflow.samples._codes import (
    CHILD_RELATIONS,
    DEPARTMENTS,
    DIAGNOSES,
    DURATIONS,
    EXAMS,
    HISTORIES,
    MOBILE_PREFIXES,
    PLANS,
    RELATIONS,
)
from deidflow.samples.clinical import EncounterChunk
from deidflow.samples.composition import choose, digits, join, pick, pool, slice_, text, when
from deidflow.samples.patients import PatientChunk
from deidflow.samples.pools import Pools
from deidflow.samples.population import DAYS_PER_YEAR, Population

NOTE_COLUMNS = ("note_id", "encounter_id", "patient_id", "note_date", "text")


def date_text(days: np.ndarray, form: np.ndarray) -> pa.Array:
    """Dates as 2025-03-07, 2025年3月7日, 2025/03/07 or 2025.3.7 (form 0-3)."""
    years = days.astype("datetime64[Y]")
    months = days.astype("datetime64[M]")
    y = digits(years.astype(np.int64) + 1970, 4)
    m = (months - years).astype(np.int64) + 1
    d = (days - months).astype(np.int64) + 1
    return choose(
        form,
        join(y, "-", digits(m, 2), "-", digits(d, 2)),
        join(y, "年", digits(m), "月", digits(d), "日"),
        join(y, "/", digits(m, 2), "/", digits(d, 2)),
        join(y, ".", digits(m), ".", digits(d)),
    )


def resident_id_text(ids: pa.Array, form: np.ndarray) -> pa.Array:
    """Plain, grouped 6-8-4 with spaces or dashes, or with a lower-case check x (form 0-3)."""
    head, birth, tail = slice_(ids, 0, 6), slice_(ids, 6, 14), slice_(ids, 14, 18)
    return choose(form, ids, join(head, " ", birth, " ", tail), join(head, "-", birth, "-", tail), pc.utf8_lower(ids))


def mobile_text(mobiles: pa.Array, form: np.ndarray) -> pa.Array:
    """Plain, 3-4-4 with dashes or spaces, or +86-prefixed (form 0-4)."""
    a, b, c = slice_(mobiles, 0, 3), slice_(mobiles, 3, 7), slice_(mobiles, 7, 11)
    return choose(
        form, mobiles, join(a, "-", b, "-", c), join(a, " ", b, " ", c), join("+86 ", mobiles), join("+86-", mobiles)
    )


def _forms(rng: np.random.Generator, n: int, shares: tuple[float, ...]) -> np.ndarray:
    return rng.choice(len(shares), size=n, p=np.array(shares) / sum(shares))


def build_notes(
    pop: Population,
    patients: PatientChunk,
    enc: EncounterChunk,
    pools: Pools,
    lo: int,
    first_id: int,
    rng: np.random.Generator,
) -> pa.Table:
    m = len(enc.patient_row)
    local = enc.patient_row - lo
    row = enc.patient_row
    name = pick(patients.name, local)
    male = pop.male[row]
    sex = choose(male.astype(np.int8), "女", "男")
    age_days = (enc.admit - pop.birth[row]).astype(np.int64)
    years = np.floor(age_days / DAYS_PER_YEAR).astype(np.int64)
    age = choose((years >= 1).astype(np.int8), join(digits(np.maximum(age_days // 30, 1)), "个月"), join(digits(years), "岁"))
    rid = resident_id_text(text(pop.resident_id[row]), _forms(rng, m, (0.6, 0.15, 0.15, 0.1)))
    mobile = mobile_text(text(pop.mobile[row]), _forms(rng, m, (0.5, 0.15, 0.15, 0.1, 0.1)))
    admit = date_text(enc.admit, _forms(rng, m, (0.4, 0.3, 0.2, 0.1)))

    header = choose(
        _forms(rng, m, (0.45, 0.3, 0.25)),
        join("患者", name, "，", sex, "，", age, "，身份证号", rid, "，联系电话", mobile, "。"),
        join("姓名：", name, "  性别：", sex, "  年龄：", age, "  身份证号码：", rid, "  手机：", mobile, "  "),
        join(name, "（", sex, "，", age, "）于", admit, "就诊，证件号", rid, "，电话", mobile, "。"),
    )
    dx = enc.diagnosis
    inpatient = (enc.discharge > enc.admit) & (enc.department != DEPARTMENTS.index("急诊科"))
    visit = choose(
        np.where(enc.department == DEPARTMENTS.index("急诊科"), 2, inpatient.astype(np.int8)),
        "门诊就诊。",
        "收入院治疗。",
        "急诊就诊。",
    )
    visit = join(
        admit,
        "因“",
        pick(pool([d[3] for d in DIAGNOSES]), dx),
        pick(pool(DURATIONS), rng.integers(0, len(DURATIONS), m)),
        "”至",
        pick(pool(DEPARTMENTS), enc.department),
        visit,
    )
    history = join("现病史：", pick(pool(HISTORIES), rng.integers(0, len(HISTORIES), m)))
    exam = pick(pool(EXAMS), rng.integers(0, len(EXAMS), m))

    child = pop.minor[row]
    has_relative = np.where(child, rng.random(m) < 0.9, rng.random(m) < 0.4)
    relative_pool = np.where(rng.random(m) < 0.5, 1, 0)
    relative_given = slice_(
        choose(relative_pool, pick(pools.female_names, rng.integers(0, len(pools.female_names), m)),
               pick(pools.male_names, rng.integers(0, len(pools.male_names), m))),
        1,
        3,
    )
    relative = join(slice_(name, 0, 1), relative_given)
    relation = choose(
        child.astype(np.int8),
        pick(pool(RELATIONS), rng.integers(0, len(RELATIONS), m)),
        pick(pool(CHILD_RELATIONS), rng.integers(0, len(CHILD_RELATIONS), m)),
    )
    relative_mobile = mobile_text(
        join(pick(pool(MOBILE_PREFIXES), rng.integers(0, len(MOBILE_PREFIXES), m)), digits(rng.integers(0, 10**8, m), 8)),
        _forms(rng, m, (0.6, 0.2, 0.2, 0, 0)),
    )
    family = when(has_relative, join("家属", relative, "（", relation, "）陪同，联系电话", relative_mobile, "。"))
    address = when(rng.random(m) < 0.3, join("现住址：", pick(patients.address, local), "。"))
    insurance = when(rng.random(m) < 0.15, join("医保卡号：", text(pop.insurance_no[row]), "。"))
    course = when(inpatient, join("住院经过：", pick(pool(HISTORIES), rng.integers(0, len(HISTORIES), m)), "出院情况：好转。"))
    diagnosis = join(
        "初步诊断：", pick(pool([d[1] for d in DIAGNOSES]), dx), "（", pick(pool([d[0] for d in DIAGNOSES]), dx), "）。"
    )
    plan = pick(pool(PLANS), rng.integers(0, len(PLANS), m))
    signed = when((rng.random(m) < 0.25) & ~child, join("患者", name, "本人知情并签字确认。"))
    signature = join(
        "记录医师：", enc.doctor, "  ", date_text(enc.discharge, _forms(rng, m, (0.4, 0.3, 0.2, 0.1)))
    )
    body = join(header, visit, history, exam, family, address, insurance, course, diagnosis, plan, signed, signature)
    return pa.table(
        {
            "note_id": join("N", digits(np.arange(first_id, first_id + m), 8)),
            "encounter_id": enc.table["encounter_id"].combine_chunks(),
            "patient_id": enc.table["patient_id"].combine_chunks(),
            "note_date": pa.array(enc.discharge, pa.date32()),
            "text": body,
        }
    )
