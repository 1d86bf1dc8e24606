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
from deidflow.identifiers import resident_id_parts, valid_resident_ids
from deidflow.policy import Table


def _ages(birth: pd.Series, as_of: date) -> pd.Series:
    """Whole years from `birth` to `as_of` (a birthday on as_of counts), nulls stay null."""
    year = birth.dt.year
    not_yet = (birth.dt.month > as_of.month) | (
        (birth.dt.month == as_of.month) & (birth.dt.day > as_of.day)
    )
    age = as_of.year - year - not_yet.astype("Int64")
    return age.astype("Int64")


def id_parts(ids: pd.Series, as_of: date, *, file: str | None = None, column: str | None = None) -> pd.DataFrame:
    """birth_date (YYYY-MM-DD text), sex (M/F), region_code (6 digits) and age (whole years at
    `as_of`) of each resident ID; a null ID gives nulls.

    A present value that is not a valid ID (wrong form, wrong check character, impossible birth
    date, or born after `as_of`) is an error naming the first such row: deriving nothing
    silently would release a record without the quasi-identifiers the search assumed it has.
    """
    present = ids.notna().to_numpy() & (ids.astype("string").str.strip() != "").fillna(False).to_numpy()
    parts = resident_id_parts(ids)
    birth = parts["birth_date"]
    valid = valid_resident_ids(ids).to_numpy() & birth.notna().to_numpy()
    if as_of is not None:
        valid &= ~(birth > pd.Timestamp(as_of)).fillna(False).to_numpy()
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
    keep = pd.Series(present, index=ids.index)
    birth = birth.where(keep)
    return pd.DataFrame(
        {
            "birth_date": birth.dt.strftime("%Y-%m-%d").astype("string"),
            "sex": parts["sex"].where(keep),
            "region_code": parts["region_code"].where(keep).astype("string"),
            "age": _ages(birth, as_of),
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
