"""The only place Faker runs: a few thousand zh_CN names and street names per seed, which
numpy then resamples for any number of rows."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pyarrow as pa
from faker import Faker

from deidflow.samples.composition import pool

NAMES_PER_SEX = 4000
STREETS = 1500
DISTRICTS = 300


@dataclass(frozen=True)
class Pools:
    male_names: pa.Array
    female_names: pa.Array
    streets: pa.Array
    districts: pa.Array


@cache
def faker_pools(seed: int) -> Pools:
    fake = Faker("zh_CN")
    fake.seed_instance(seed)
    return Pools(
        # zh_CN name formats ignore sex, so compose surname + sex-specific given name.
        male_names=pool([fake.last_name() + fake.first_name_male() for _ in range(NAMES_PER_SEX)]),
        female_names=pool([fake.last_name() + fake.first_name_female() for _ in range(NAMES_PER_SEX)]),
        streets=pool([fake.street_name() for _ in range(STREETS)]),
        districts=pool([fake.district() for _ in range(DISTRICTS)]),
    )
