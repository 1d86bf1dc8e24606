"""The two techniques that need no parameters: keep a column as is, or drop it."""

from __future__ import annotations

import pandas as pd

from deidflow.policy import Column, Role
from deidflow.techniques.base import ApplyContext, Technique


class Keep(Technique):
    """Release the column unchanged (sensitive or insensitive values only)."""

    name = "keep"
    roles = frozenset({Role.sensitive, Role.insensitive})

    def apply(self, values: pd.Series, spec: Column, ctx: ApplyContext) -> pd.Series:
        return values


class Drop(Technique):
    """GB/T 37964 suppression of a whole attribute: the column is not released."""

    name = "drop"

    def apply(self, values: pd.Series, spec: Column, ctx: ApplyContext) -> None:
        return None
