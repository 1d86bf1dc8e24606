"""Chinese personal identifiers: resident ID numbers (GB 11643-1999), mobile numbers and
GB/T 2260 administrative division codes. Vectorised where the data is a column."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# GB 11643-1999: weights 2^(17-i) mod 11 for the first 17 digits; check = map[sum mod 11].
ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
CHECK_CHARS = np.array(list("10X98765432"))

RESIDENT_ID_RE = re.compile(r"^\d{17}[\dXx]$")
MOBILE_RE = re.compile(r"^(?:\+?86[- ]?)?1[3-9]\d{9}$")


def resident_id_check_char(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident ID."""
    digits = np.frombuffer(first17.encode("ascii"), dtype=np.uint8) - ord("0")
    return str(CHECK_CHARS[int(digits @ ID_WEIGHTS) % 11])


def check_chars(first17: np.ndarray) -> np.ndarray:
    """Vectorised check characters for an (n, 17) array of digit values."""
    return CHECK_CHARS[(first17.astype(np.int64) @ ID_WEIGHTS) % 11]


def _digit_matrix(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(n, 18) uint8 matrix of the IDs' bytes, and the mask of well-formed rows."""
    s = ids.astype("string").fillna("").str.upper()
    well_formed = s.str.fullmatch(r"\d{17}[\dX]").fillna(False).to_numpy(dtype=bool)
    fixed = s.where(well_formed, "0" * 18).to_numpy(dtype="U18").astype("S18")
    return np.frombuffer(fixed.tobytes(), dtype=np.uint8).reshape(-1, 18), well_formed


def valid_resident_ids(ids: pd.Series) -> pd.Series:
    """True where the value is an 18-character resident ID with a correct check digit."""
    mat, well_formed = _digit_matrix(ids)
    expected = check_chars(mat[:, :17] - ord("0")).astype("S1").view(np.uint8)
    ok = well_formed & (expected == mat[:, 17])
    return pd.Series(ok, index=ids.index)


def resident_id_parts(ids: pd.Series) -> pd.DataFrame:
    """Birth date, sex and region code carried inside resident IDs.

    Digits 1-6 are the GB/T 2260 region of registration, 7-14 the birth date (YYYYMMDD),
    and digit 17 is odd for men and even for women. Rows that are not well formed get nulls.
    """
    s = ids.astype("string").str.upper()
    well_formed = s.str.fullmatch(r"\d{17}[\dX]").fillna(False)
    s = s.where(well_formed)
    birth = pd.to_datetime(s.str.slice(6, 14), format="%Y%m%d", errors="coerce")
    sex_digit = pd.to_numeric(s.str.slice(16, 17), errors="coerce")
    sex = pd.Series(pd.NA, index=ids.index, dtype="string")
    sex = sex.mask(sex_digit % 2 == 1, "M").mask(sex_digit % 2 == 0, "F")
    return pd.DataFrame(
        {"birth_date": birth, "sex": sex, "region_code": s.str.slice(0, 6)}, index=ids.index
    )


def valid_mobiles(values: pd.Series) -> pd.Series:
    """True where the value is a mainland China mobile number (optionally +86-prefixed)."""
    s = values.astype("string").str.replace(r"[\s-]", "", regex=True)
    return s.str.fullmatch(r"(?:\+?86)?1[3-9]\d{9}").fillna(False).astype(bool)
