"""GB/T 37964 suppression: masking characters of a value, local (cell) suppression of rare
values, and record suppression. Each counts what it removed, for the manifest."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from deidflow.errors import PolicyError
from deidflow.policy import Column, Role
from deidflow.techniques._params import int_param
from deidflow.techniques.base import ApplyContext, Technique


def mask_values(values: pd.Series, keep_first: int = 0, keep_last: int = 0, char: str = "*") -> pd.Series:
    """Keep the first `keep_first` and last `keep_last` characters, mask the rest (same length).

    A value no longer than keep_first + keep_last is masked entirely: keeping "both ends" of it
    would release the whole value. So no output ever shows more than keep_first + keep_last
    characters of its input, and never all of them. Arrow string kernels throughout (no
    per-value Python).
    """
    arr = pa.array(values.astype("string").array, type=pa.large_string()) if len(values) else pa.array(
        [], type=pa.large_string())
    n = pc.utf8_length(arr)
    keep = keep_first + keep_last
    short = pc.less_equal(n, keep)
    head = pc.utf8_slice_codeunits(arr, 0, keep_first)
    tail = pc.utf8_slice_codeunits(arr, -keep_last) if keep_last else pc.utf8_slice_codeunits(arr, 0, 0)
    star = pa.scalar(char, type=pa.large_string())
    middle = pc.binary_repeat(star, pc.max_element_wise(pc.subtract(n, keep), 0))
    full = pc.binary_repeat(star, n)
    out = pc.if_else(short, full, pc.binary_join_element_wise(head, middle, tail, pa.scalar("", type=pa.large_string())))
    return pd.Series(pd.arrays.ArrowStringArray(out.cast(pa.large_string())), index=values.index,
                     name=values.name).astype("string")


class Mask(Technique):
    """Masking, e.g. a resident ID as its first 6 and last 2 characters ("110101**********1X")."""

    name = "mask"
    roles = frozenset({Role.direct_identifier, Role.quasi_identifier, Role.insensitive})
    allowed_params = frozenset({"keep_first", "keep_last", "char"})

    def check(self, column: str, spec: Column) -> None:
        super().check(column, spec)
        kf = int_param(column, spec.params, "keep_first", 0, lo=0, hi=64, example="keep_first: 6")
        kl = int_param(column, spec.params, "keep_last", 0, lo=0, hi=64, example="keep_last: 2")
        char = spec.params.get("char", "*")
        if not isinstance(char, str) or len(char) != 1:
            raise PolicyError(
                f"column '{column}': params.char must be a single character (got {char!r})",
                fix="e.g. char: '*'",
            )
        if spec.role is Role.direct_identifier and (kf or 0) + (kl or 0) > 8:
            raise PolicyError(
                f"column '{column}': a direct identifier may keep at most 8 characters "
                f"(keep_first {kf} + keep_last {kl})",
                fix="keep fewer characters (e.g. keep_first: 6, keep_last: 2), or pseudonymise",
            )

    def apply(self, values: pd.Series, spec: Column, ctx: ApplyContext) -> pd.Series:
        p = spec.params
        out = mask_values(values, p.get("keep_first", 0), p.get("keep_last", 0), p.get("char", "*"))
        ctx.count("cells_masked", int(values.notna().sum()))
        return out


class SuppressRare(Technique):
    """Local (cell) suppression: values held by fewer than `min_count` subjects become null
    (or `replacement`), so a rare category cannot single its holders out."""

    name = "suppress_rare"
    roles = frozenset({Role.quasi_identifier, Role.sensitive, Role.insensitive})
    allowed_params = frozenset({"min_count", "replacement"})

    def check(self, column: str, spec: Column) -> None:
        super().check(column, spec)
        int_param(column, spec.params, "min_count", 5, lo=2, example="min_count: 5")
        rep = spec.params.get("replacement")
        if rep is not None and not isinstance(rep, str):
            raise PolicyError(
                f"column '{column}': params.replacement must be text (got {rep!r})",
                fix="e.g. replacement: '其他' or omit it for an empty cell",
            )

    def apply(self, values: pd.Series, spec: Column, ctx: ApplyContext) -> pd.Series:
        min_count = spec.params.get("min_count", 5)
        rare = rare_mask(values, min_count, ctx.subject_ids)
        ctx.count("cells_suppressed", int(rare.sum()))
        rep = spec.params.get("replacement")
        if rep is None:
            return values.mask(rare)
        return values.astype("string").mask(rare, rep)

    def describe(self, spec: Column, ctx: ApplyContext) -> dict[str, Any]:
        return {"technique": self.name, "params": {"min_count": spec.params.get("min_count", 5),
                                                   **({"replacement": spec.params["replacement"]}
                                                      if "replacement" in spec.params else {})}}


def rare_mask(values: pd.Series, min_count: int, subject_ids: pd.Series | None = None) -> pd.Series:
    """True where the row's value is held by fewer than `min_count` distinct subjects (rows,
    when no subject ids are given: a subject with many rows must not make a value look common)."""
    codes, _ = pd.factorize(values, use_na_sentinel=True)
    present = codes >= 0
    if subject_ids is not None and len(subject_ids) == len(values):
        subj, _ = pd.factorize(pd.Series(np.asarray(subject_ids), dtype=object))
        pairs = pd.DataFrame({"v": codes[present], "s": subj[present]}).drop_duplicates()
        counts = np.bincount(pairs["v"].to_numpy(), minlength=codes.max() + 1 if present.any() else 0)
    else:
        counts = np.bincount(codes[present], minlength=codes.max() + 1 if present.any() else 0)
    rare = np.zeros(len(values), dtype=bool)
    rare[present] = counts[codes[present]] < min_count
    return pd.Series(rare, index=values.index)


def suppress_records(
    frame: pd.DataFrame, subject_column: str, subjects: Iterable[Any]
) -> tuple[pd.DataFrame, int]:
    """Record suppression: drop every row of the given subjects; return the rest and how many
    rows were dropped (the manifest counts both subjects and rows)."""
    drop = frame[subject_column].isin(pd.Index(list(subjects)))
    return frame.loc[~drop.to_numpy()], int(drop.sum())
