"""Derived identifiers: the birth date, sex, region and age carried inside an 18-digit resident ID.

A resident ID (GB 11643-1999) is a direct identifier, but it also spells out three
quasi-identifiers: digits 1-6 are the GB/T 2260 region of registration, 7-14 the birth date and
digit 17 the sex. A policy that drops the ID can still keep those as generalised
quasi-identifiers by declaring columns with `derived_from: {column: resident_id, part: ...}`.
They are computed here, before the consent gate and the search, so the search measures the risk
of the columns that are actually released and the ID itself never reaches a technique that
keeps it.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from deidflow.errors import InputError, PolicyError
from deidflow.identifiers import _digit_matrix, check_chars
from deidflow.policy import Table


def id_parts(ids: pd.Series, as_of: date, *, file: str | None = None, column: str | None = None) -> pd.DataFrame:
    """birth_date (YYYY-MM-DD text), sex (M/F), region_code (6 digits) and age (whole years at
    `as_of`) of each resident ID; a null or blank ID gives nulls.

    A present value that is not a valid ID (wrong form, wrong check character, impossible birth
    date, or born after `as_of`) is an error naming the first such row: deriving nothing
    silently would release a record without the quasi-identifiers the search assumed it has.
    The IDs are parsed once into an (n, 18) digit matrix and everything is read from it with
    integer arithmetic (the same layout `identifiers.resident_id_parts` documents).
    """
    text = ids.astype("string")
    present = (text.str.strip().fillna("") != "").to_numpy(dtype=bool)
    mat, well_formed = _digit_matrix(ids)
    digits = mat.astype(np.int64) - ord("0")
    expected = check_chars(digits[:, :17]).astype("S1").view(np.uint8)
    year = digits[:, 6:10] @ np.array([1000, 100, 10, 1])
    month = digits[:, 10] * 10 + digits[:, 11]
    day = digits[:, 12] * 10 + digits[:, 13]
    # a real calendar date: build it from year and month, add the day, check the month held
    ok_month = (month >= 1) & (month <= 12) & (day >= 1) & (year >= 1800)
    ym = ((year - 1970) * 12 + np.clip(month, 1, 12) - 1).astype("datetime64[M]")
    birth = ym.astype("datetime64[D]") + (np.clip(day, 1, 31) - 1).astype("timedelta64[D]")
    real = ok_month & (birth.astype("datetime64[M]") == ym) & (birth <= np.datetime64(as_of, "D"))
    valid = well_formed & (expected == mat[:, 17]) & real
    bad = present & ~valid
    if bad.any():
        first = int(np.argmax(bad))
        raise InputError(
            f"{int(bad.sum())} value(s) are not valid 18-digit resident IDs (wrong length, check "
            f"character or birth date), so birth date, sex and region cannot be derived; the "
            f"first is at row {first}",
            file=file,
            column=column,
            row=first,
            fix="correct or blank those IDs in the extract (a blank ID derives empty values), "
            "or remove the derived_from columns from the policy",
        )
    not_yet = (month > as_of.month) | ((month == as_of.month) & (day > as_of.day))
    age = as_of.year - year - not_yet
    upper = text.str.upper()
    birth_text = upper.str.slice(6, 10) + "-" + upper.str.slice(10, 12) + "-" + upper.str.slice(12, 14)
    sex = np.where(digits[:, 16] % 2 == 1, "M", "F")
    keep = pd.Series(present, index=ids.index)
    return pd.DataFrame(
        {
            "birth_date": birth_text.where(keep),
            "sex": pd.Series(sex, index=ids.index, dtype="string").where(keep),
            "region_code": upper.str.slice(0, 6).where(keep),
            "age": pd.Series(pd.array(age, dtype="Int64"), index=ids.index).where(keep),
        },
        index=ids.index,
    )


def derive_columns(frame: pd.DataFrame, table: Table, as_of: date) -> pd.DataFrame:
    """`frame` with every column the table spec derives (and the frame lacks) added.

    A column already present in the extract is left alone: the hospital's own value wins over
    one recomputed from the ID. Each source column is parsed once however many parts it feeds.
    """
    wanted = {
        name: spec.derived_from
        for name, spec in table.columns.items()
        if spec.derived_from is not None and name not in frame.columns
    }
    if not wanted:
        return frame
    out = frame.copy()
    cache: dict[str, pd.DataFrame] = {}
    for name, src in wanted.items():
        if src.column not in frame.columns:
            raise PolicyError(
                f"column '{name}' is derived from column '{src.column}', which the table "
                f"{table.path} does not have",
                column=name,
                file=table.path,
                fix=f"name the resident-ID column of {table.path} in derived_from.column "
                f"(columns: {', '.join(map(str, frame.columns))})",
            )
        if src.column not in cache:
            cache[src.column] = id_parts(frame[src.column], as_of, file=table.path, column=src.column)
        out[name] = cache[src.column][src.part]
    return out
