"""patients.csv rows for one chunk of the population: names, addresses in the province
(and for Shanghai the district) that the resident ID's region code names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from deidflow.samples._codes import ETHNICITIES, PROVINCE_CITIES, PROVINCES, SHANGHAI_DISTRICTS
from deidflow.samples.composition import choose, digits, join, pick, pool, text, when
from deidflow.samples.pools import Pools
from deidflow.samples.population import Population, patient_ids

PATIENT_COLUMNS = (
    "patient_id",
    "name",
    "resident_id",
    "mobile",
    "birth_date",
    "sex",
    "region_code",
    "address",
    "postcode",
    "ethnicity",
    "insurance_no",
)

_PROVINCE_NAME = np.array([PROVINCES.get(f"{i:02d}", ("", False, ""))[0] for i in range(100)], dtype=object)
_MUNICIPALITY = np.array([PROVINCES.get(f"{i:02d}", ("", False, ""))[1] for i in range(100)])
_CITY = np.array(
    [PROVINCE_CITIES.get(f"{i // 3:02d}", ("", "", ""))[i % 3] for i in range(300)], dtype=object
)
_POSTCODE_PREFIX = np.array([int(PROVINCES.get(f"{i:02d}", ("", False, "0"))[2]) for i in range(100)])


@dataclass(frozen=True)
class PatientChunk:
    table: pa.Table
    name: pa.Array  # reused by notes and consents
    address: pa.Array


def build_patients(pop: Population, pools: Pools, lo: int, hi: int, rng: np.random.Generator) -> PatientChunk:
    n = hi - lo
    male = pop.male[lo:hi]
    region = pop.region[lo:hi]
    name_idx = rng.integers(0, len(pools.male_names), n)
    name = choose(male.astype(np.int8), pick(pools.female_names, name_idx), pick(pools.male_names, name_idx))

    province = region.astype("U2").astype(np.int64)
    shanghai = province == 31
    municipality = _MUNICIPALITY[province]
    sh_district = np.array([SHANGHAI_DISTRICTS.get(c, "") for c in np.unique(region)], dtype=object)
    district = pool(sh_district)
    district_idx = np.searchsorted(np.unique(region), region)
    address = join(
        text(_PROVINCE_NAME[province].astype(str)),
        when(~municipality, text(_CITY[province * 3 + rng.integers(0, 3, n)].astype(str))),
        when(shanghai, pick(district, district_idx)),
        when(~shanghai, join(pick(pools.districts, rng.integers(0, len(pools.districts), n)), "区")),
        pick(pools.streets, rng.integers(0, len(pools.streets), n)),
        when(shanghai, join(digits(rng.integers(1, 1200, n)), "弄")),
        digits(rng.integers(1, 300, n)),
        "号",
        when(shanghai, join(digits(rng.integers(1, 25, n) * 100 + rng.integers(1, 5, n)), "室")),
    )
    postcode = digits(_POSTCODE_PREFIX[province] * 10_000 + rng.integers(0, 10_000, n), 6)

    shares = np.array([e[1] for e in ETHNICITIES])
    ethnicity = pick(pool([e[0] for e in ETHNICITIES]), rng.choice(len(ETHNICITIES), size=n, p=shares / shares.sum()))

    table = pa.table(
        {
            "patient_id": text(patient_ids(lo, hi)),
            "name": name,
            "resident_id": text(pop.resident_id[lo:hi]),
            "mobile": text(pop.mobile[lo:hi]),
            "birth_date": pa.array(pop.birth[lo:hi], pa.date32()),
            "sex": text(np.where(male, "M", "F")),
            "region_code": text(region),
            "address": address,
            "postcode": postcode,
            "ethnicity": ethnicity,
            "insurance_no": text(pop.insurance_no[lo:hi]),
        }
    )
    return PatientChunk(table, name, address)
