"""GB/T 37964 randomisation: noise addition and microaggregation of numeric values.

Noise is drawn from a generator seeded by a key of this recipient and column, so a rerun of the
same release gives the same output (releases are idempotent) and two recipients get different
noise (averaging their copies does not remove it). The manifest records the parameters and the
measured spread of the noise, never the seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deidflow.errors import InputError, KeyCustodyError, PolicyError
from deidflow.policy import Column, Role
from deidflow.techniques._params import choice_param, int_param, number_param, numeric_values
from deidflow.techniques.base import ApplyContext, Technique


def _numbers(values: pd.Series, ctx: ApplyContext) -> pd.Series:
    return numeric_values(
        values, ctx, what=" (first at row {row})",
        fix="randomisation applies to numeric columns; clean the column or choose another technique",
    ).astype("float64")


def add_noise(
    values: pd.Series, scale: float, rng: np.random.Generator, distribution: str = "normal",
    decimals: int | None = None,
) -> pd.Series:
    """values + noise of standard deviation `scale` (normal) or scale b (Laplace); nulls stay."""
    n = len(values)
    noise = rng.normal(0.0, scale, n) if distribution == "normal" else rng.laplace(0.0, scale, n)
    out = values + noise
    if decimals is not None:
        out = out.round(decimals)
    return out


def microaggregate(values: pd.Series, k: int, stat: str = "mean", decimals: int | None = None) -> pd.Series:
    """Univariate microaggregation: sort, cut into groups of k consecutive values (the last
    group takes the remainder, so every group has k to 2k-1 members) and replace each value by
    its group's mean or median. Optimal for one variable up to the remainder rule (Hansen &
    Mukherjee 2003); nulls stay null and are not grouped."""
    present = values.notna().to_numpy()
    x = values.to_numpy(dtype=float, na_value=np.nan)[present]
    n = len(x)
    out = np.full(len(values), np.nan)
    if n:
        order = np.argsort(x, kind="stable")
        groups = np.minimum(np.arange(n) // k, max(n // k - 1, 0))
        sorted_x = x[order]
        if stat == "mean":
            sums = np.bincount(groups, weights=sorted_x)
            agg = sums / np.bincount(groups)
        else:
            agg = pd.Series(sorted_x).groupby(groups).median().to_numpy()
        res = np.empty(n)
        res[order] = agg[groups]
        out[present] = res
    s = pd.Series(out, index=values.index, name=values.name)
    return s.round(decimals) if decimals is not None else s


class Noise(Technique):
    """Additive noise: `scale` in the column's units, or `relative_scale` times its standard
    deviation."""

    name = "noise"
    roles = frozenset({Role.quasi_identifier, Role.sensitive, Role.insensitive})
    allowed_params = frozenset({"scale", "relative_scale", "distribution", "decimals"})

    def check(self, column: str, spec: Column) -> None:
        super().check(column, spec)
        p = spec.params
        scale = number_param(column, p, "scale", positive=True, example="scale: 2.5")
        rel = number_param(column, p, "relative_scale", positive=True, example="relative_scale: 0.1")
        if (scale is None) == (rel is None):
            raise PolicyError(
                f"column '{column}': noise needs exactly one of params.scale (in the column's "
                "units) or params.relative_scale (a fraction of its standard deviation)",
                fix="e.g. relative_scale: 0.1",
            )
        choice_param(column, p, "distribution", "normal", ("normal", "laplace"))
        int_param(column, p, "decimals", None, lo=0, hi=12, example="decimals: 1")

    def _scale(self, nums: pd.Series, spec: Column) -> float:
        if "scale" in spec.params:
            return float(spec.params["scale"])
        sd = float(nums.std(ddof=1)) if nums.notna().sum() > 1 else 0.0
        return float(spec.params["relative_scale"]) * sd

    def apply(self, values: pd.Series, spec: Column, ctx: ApplyContext) -> pd.Series:
        if ctx.keyring is None:
            raise KeyCustodyError(
                "noise needs the key ring (its seed is keyed per recipient)", column=ctx.column,
                fix="load it with KeyRing.from_policy(loaded) and pass it in the ApplyContext",
            )
        nums = _numbers(values, ctx)
        seed = ctx.keyring.derive(f"{ctx.table}.{ctx.column}", purpose="noise", length=16)
        rng = np.random.default_rng(int.from_bytes(seed, "big"))
        scale = self._scale(nums, spec)
        out = add_noise(nums, scale, rng, spec.params.get("distribution", "normal"),
                        spec.params.get("decimals"))
        ctx.count("cells_noised", int(nums.notna().sum()))
        return out

    def describe(self, spec: Column, ctx: ApplyContext) -> dict[str, Any]:
        out: dict[str, Any] = {"technique": self.name, "params": dict(spec.params)}
        out["params"].setdefault("distribution", "normal")
        if ctx.frame is not None and ctx.column in ctx.frame:
            nums = pd.to_numeric(ctx.frame[ctx.column], errors="coerce")
            out["effective_scale"] = self._scale(nums, spec)
        out["seed"] = "derived per recipient and column from the pseudonym key (not recorded)"
        return out


class Microaggregate(Technique):
    """Microaggregation: each value replaced by the mean (or median) of its group of at least
    k similar values."""

    name = "microaggregate"
    roles = frozenset({Role.quasi_identifier, Role.sensitive, Role.insensitive})
    allowed_params = frozenset({"k", "stat", "decimals"})

    def check(self, column: str, spec: Column) -> None:
        super().check(column, spec)
        int_param(column, spec.params, "k", 3, lo=2, example="k: 3")
        choice_param(column, spec.params, "stat", "mean", ("mean", "median"))
        int_param(column, spec.params, "decimals", None, lo=0, hi=12, example="decimals: 1")

    def apply(self, values: pd.Series, spec: Column, ctx: ApplyContext) -> pd.Series:
        nums = _numbers(values, ctx)
        k = spec.params.get("k", 3)
        n = int(nums.notna().sum())
        if 0 < n < k:
            raise InputError(
                f"only {n} value(s) to microaggregate in groups of k={k}",
                file=ctx.table,
                column=ctx.column,
                fix="lower params.k or suppress the column",
            )
        ctx.count("cells_microaggregated", n)
        return microaggregate(nums, k, spec.params.get("stat", "mean"), spec.params.get("decimals"))

    def describe(self, spec: Column, ctx: ApplyContext) -> dict[str, Any]:
        return {
            "technique": self.name,
            "params": {"k": spec.params.get("k", 3), "stat": spec.params.get("stat", "mean"),
                       **({"decimals": spec.params["decimals"]} if "decimals" in spec.params else {})},
        }
