"""Derived identifiers: birth date, sex, region and age read out of 18-digit resident IDs so the
ID can be dropped; invalid IDs refused naming the first bad row."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.errors import InputError, PolicyError
from deidflow.identifiers import resident_id_check_char
from deidflow.policy import Table
from deidflow.techniques.derive import derive_columns


def rid(region: str, birth: str, seq: str) -> str:
    first17 = region + birth + seq
    return first17 + resident_id_check_char(first17)


def table(**derived: str) -> Table:
    cols = {"patient_id": {"role": "link_key", "technique": "pseudonymise"},
            "resident_id": {"role": "direct_identifier", "technique": "drop"}}
    for name, part in derived.items():
        cols[name] = {"role": "quasi_identifier", "technique": "generalise", "hierarchy": {"kind": "date"},
                      "derived_from": {"column": "resident_id", "part": part}}
    return Table.model_validate({"path": "patients.csv", "subject_column": "patient_id", "columns": cols})


def test_parts_derived_and_age_at_as_of():
    ids = pd.Series([rid("110105", "19491231", "002"), rid("440305", "20100615", "011"), None])
    frame = pd.DataFrame({"patient_id": ["a", "b", "c"], "resident_id": ids})
    spec = table(birth_date="birth_date", sex="sex", region_code="region_code", age="age")
    out = derive_columns(frame, spec, as_of=date(2024, 6, 15))
    assert out["birth_date"].tolist()[:2] == ["1949-12-31", "2010-06-15"]
    assert out["sex"].tolist()[:2] == ["F", "M"]
    assert out["region_code"].tolist()[:2] == ["110105", "440305"]
    assert out["age"].tolist()[:2] == [74, 14]  # birthday on as_of counts
    assert derive_columns(frame, spec, as_of=date(2024, 6, 14))["age"][1] == 13
    assert out.iloc[2][["birth_date", "sex", "region_code", "age"]].isna().all()
    assert "resident_id" in out and "birth_date" not in frame  # input untouched


@settings(max_examples=60, deadline=None)
@given(born=st.dates(date(1900, 1, 1), date(2024, 12, 31)), as_of=st.dates(date(2025, 1, 1), date(2030, 12, 31)),
       seq=st.integers(0, 999))
def test_age_matches_calendar_arithmetic(born, as_of, seq):
    frame = pd.DataFrame({"patient_id": ["a"], "resident_id": [rid("310101", born.strftime("%Y%m%d"), f"{seq:03d}")]})
    out = derive_columns(frame, table(age="age", sex="sex", birth_date="birth_date", region_code="region_code"),
                         as_of=as_of)
    assert out["birth_date"][0] == born.isoformat() and out["region_code"][0] == "310101"
    expected = as_of.year - born.year - ((as_of.month, as_of.day) < (born.month, born.day))
    assert out["age"][0] == expected
    assert out["sex"][0] == ("M" if seq % 2 else "F")


def test_existing_column_is_kept():
    frame = pd.DataFrame({"patient_id": ["a"], "resident_id": [rid("110105", "19800101", "001")],
                          "birth_date": ["1980-01-02"]})
    assert derive_columns(frame, table(birth_date="birth_date"), date(2024, 1, 1))["birth_date"][0] == "1980-01-02"


GOOD = rid("110105", "19800101", "001")
WRONG_CHECK = GOOD[:-1] + ("0" if GOOD[-1] != "0" else "1")


@pytest.mark.parametrize("bad", ["11010519800101001", WRONG_CHECK, "110105198013010011", "110105198002300011",
                                 rid("110105", "20300101", "001")])
def test_invalid_ids_refused_naming_the_first_row(bad):
    frame = pd.DataFrame({"patient_id": ["a", "b", "c"],
                          "resident_id": [rid("110105", "19800101", "001"), None, bad]})
    with pytest.raises(InputError) as exc:
        derive_columns(frame, table(sex="sex"), date(2024, 1, 1))
    msg = str(exc.value)
    assert "patients.csv" in msg and "resident_id" in msg and "row 2" in msg and "Fix:" in msg


def test_missing_source_column_is_a_policy_error():
    with pytest.raises(PolicyError, match="'resident_id'"):
        derive_columns(pd.DataFrame({"patient_id": ["a"]}), table(sex="sex"), date(2024, 1, 1))


def test_derived_parts_released_generalised_while_the_id_is_dropped():
    from deidflow.techniques import registry

    from .helpers import col, ctx

    ids = pd.Series([rid("110105", "19491231", "002"), rid("440305", "20100615", "011")])
    frame = derive_columns(pd.DataFrame({"patient_id": ["a", "b"], "resident_id": ids}),
                           table(birth_date="birth_date", region_code="region_code"), date(2024, 6, 15))
    gen = registry.get("generalise")
    birth = gen.apply(frame["birth_date"], col("quasi_identifier", "generalise", {"level": 3}, {"kind": "date"}),
                      ctx(frame["birth_date"]))
    region = gen.apply(frame["region_code"], col("quasi_identifier", "generalise", {"level": 2}, {"kind": "region"}),
                       ctx(frame["region_code"]))
    assert birth.tolist() == ["1949", "2010"] and region.tolist() == ["11", "44"]
    assert registry.get("drop").apply(frame["resident_id"], col("direct_identifier", "drop"), ctx(ids)) is None


def test_keep_and_drop_refuse_parameters_naming_the_column():
    from deidflow.techniques import registry

    from .helpers import col

    for name, role in (("keep", "sensitive"), ("drop", "direct_identifier")):
        with pytest.raises(PolicyError, match="'diagnosis_name'.*unknown parameters"):
            registry.get(name).check("diagnosis_name", col(role, name, {"level": 1}))
    with pytest.raises(PolicyError, match="'resident_id'"):
        registry.get("keep").check("resident_id", col("direct_identifier", "keep"))
