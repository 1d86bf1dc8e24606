"""GB/T 37964 generalisation: a quasi-identifier released at one level of its hierarchy, and
top/bottom coding of extreme numeric values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deidflow.errors import PolicyError
from deidflow.policy import Column, Role
from deidflow.techniques._params import int_param, number_param, numeric_values
from deidflow.techniques.base import ApplyContext, Technique
from deidflow.techniques.hierarchies import NA_LABEL, decode_level, encode_qi, level_range


class Generalise(Technique):
    """Release the column at the level the search chose (`ctx.level`), or at `params.level`
    when the policy fixes it. Level numbers are those of the hierarchy (see hierarchies.py)."""

    name = "generalise"
    roles = frozenset({Role.quasi_identifier})
    allowed_params = frozenset({"level"})

    def check(self, column: str, spec: Column) -> None:
        super().check(column, spec)
        if spec.hierarchy is None:
            raise PolicyError(
                f"column '{column}' is generalised but has no hierarchy",
                fix="add e.g. 'hierarchy: {kind: date}' (kinds: interval, age, date, region, "
                "postcode, prefix, csv, mask)",
            )
        level = int_param(column, spec.params, "level", None, lo=0, example="level: 1")
        h = spec.hierarchy
        if level is not None and (level < h.min_level or (h.max_level is not None and level > h.max_level)):
            raise PolicyError(
                f"column '{column}': params.level {level} is outside the hierarchy's "
                f"min_level..max_level ({h.min_level}..{h.max_level})",
                fix="choose a level inside that range or widen it",
            )
        if h.kind in ("interval", "age") and h.widths:
            from deidflow.techniques.hierarchies import _check_widths

            _check_widths(column, list(h.widths))

    def _level(self, spec: Column, ctx: ApplyContext) -> int:
        level = ctx.level if ctx.level is not None else spec.params.get("level")
        if level is None:
            raise PolicyError(
                f"column '{ctx.column}' has no generalisation level: the search did not choose "
                "one and the policy does not fix one",
                column=ctx.column,
                fix="run the release through the search, or set params.level",
            )
        return int(level)

    def apply(self, values: pd.Series, spec: Column, ctx: ApplyContext) -> pd.Series:
        assert spec.hierarchy is not None  # check() refuses a generalised column without one
        encoded = encode_qi(ctx.column, values, spec.hierarchy, ctx.base_dir)
        level = self._level(spec, ctx)
        allowed = level_range(spec.hierarchy, encoded.n_levels, column=ctx.column)
        if level not in allowed:
            raise PolicyError(
                f"column '{ctx.column}': level {level} is outside the allowed levels "
                f"{allowed.start}..{allowed.stop - 1} of its {spec.hierarchy.kind} hierarchy",
                column=ctx.column,
                fix="choose a level inside hierarchy.min_level..max_level",
            )
        out = decode_level(encoded, level, values.index, values.name)
        # A cell changed when its label at `level` differs from its own text (level 0 holds
        # each value's text): decided once per distinct value, then counted over the rows.
        base = encoded.labels[0][encoded.maps[0]]
        top = encoded.labels[level][encoded.maps[level]]
        changed = (top != base) & (base != NA_LABEL)
        ctx.count("cells_generalised", int(np.bincount(encoded.codes, minlength=len(changed))[changed].sum()))
        return out

    def describe(self, spec: Column, ctx: ApplyContext) -> dict[str, Any]:
        h = spec.hierarchy
        out: dict[str, Any] = {"technique": self.name, "params": dict(spec.params)}
        if h is not None:
            out["hierarchy"] = h.model_dump(exclude_none=True)
        level = ctx.level if ctx.level is not None else spec.params.get("level")
        if level is not None:
            out["level"] = int(level)
        return out


class TopBottomCode(Technique):
    """Top and bottom coding: numeric values above `top` become `top` (below `bottom` become
    `bottom`), so that extreme values, which single people out, are not released as such."""

    name = "top_bottom_code"
    roles = frozenset({Role.quasi_identifier, Role.sensitive, Role.insensitive})
    allowed_params = frozenset({"top", "bottom"})

    def check(self, column: str, spec: Column) -> None:
        super().check(column, spec)
        top = number_param(column, spec.params, "top")
        bottom = number_param(column, spec.params, "bottom")
        if top is None and bottom is None:
            raise PolicyError(
                f"column '{column}': top_bottom_code needs params.top, params.bottom or both",
                fix="e.g. params: {top: 200, bottom: 0}",
            )
        if top is not None and bottom is not None and bottom >= top:
            raise PolicyError(
                f"column '{column}': params.bottom ({bottom}) must be below params.top ({top})",
                fix="swap or correct them",
            )

    def apply(self, values: pd.Series, spec: Column, ctx: ApplyContext) -> pd.Series:
        nums = numeric_values(values, ctx, what=", e.g. row {row}",
                              fix="top/bottom coding applies to numeric columns; clean the column")
        top, bottom = spec.params.get("top"), spec.params.get("bottom")
        out = nums
        if top is not None:
            ctx.count("cells_top_coded", int((nums > top).sum()))
            out = out.where(~(nums > top), top)
        if bottom is not None:
            ctx.count("cells_bottom_coded", int((nums < bottom).sum()))
            out = out.where(~(nums < bottom), bottom)
        return out.rename(values.name)
