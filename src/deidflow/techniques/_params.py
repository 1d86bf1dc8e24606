"""Parameter checks shared by the techniques; each error names the column and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from deidflow.errors import InputError, PolicyError

if TYPE_CHECKING:  # pragma: no cover
    from deidflow.techniques.base import ApplyContext


def int_param(
    column: str, params: dict[str, Any], key: str, default: int | None, *, lo: int, hi: int | None = None,
    example: str = "",
) -> int | None:
    value = params.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bound = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        raise PolicyError(
            f"column '{column}': params.{key} must be an integer {bound} (got {value!r})",
            fix=example or f"e.g. {key}: {max(lo, default or lo)}",
        )
    return value


def number_param(
    column: str, params: dict[str, Any], key: str, default: float | None = None, *, positive: bool = False,
    example: str = "",
) -> float | None:
    value = params.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0):
        kind = "a positive number" if positive else "a number"
        raise PolicyError(
            f"column '{column}': params.{key} must be {kind} (got {value!r})",
            fix=example or f"e.g. {key}: 1",
        )
    return float(value)


def choice_param(column: str, params: dict[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = params.get(key, default)
    if value not in choices:
        raise PolicyError(
            f"column '{column}': params.{key} must be one of {', '.join(choices)} (got {value!r})",
            fix=f"e.g. {key}: {default}",
        )
    return value


def numeric_values(values: pd.Series, ctx: "ApplyContext", *, what: str, fix: str) -> pd.Series:
    """`values` parsed as numbers; a value that is present but not a number is refused,
    naming the table, the column, how many and the first row (numeric techniques share this)."""
    nums = pd.to_numeric(values, errors="coerce")
    bad = nums.isna() & values.notna()
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} row(s) are not numbers{what.format(row=int(np.argmax(bad.to_numpy())))}",
            file=ctx.table,
            column=ctx.column,
            fix=fix,
        )
    return nums
