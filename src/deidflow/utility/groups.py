"""Suppression and generalisation by group: who loses more than average.

For each group column (sex, age band, region, ethnicity, whichever the policy has, or the
columns `utility.groups` names), each group's share of consented subjects suppressed and the
mean information its records lost (`measures.DEFINITIONS["record loss"]`), beside the
overall figures. Groups under the small-cell limit are pooled into "other".

Flag rule (`FLAG_RULE`): a group is flagged when its figure is at least twice the overall one
*and* at least 1 percentage point above it: "twice" alone would flag 0.2 % against 0.1 %, a
difference no model would notice, and a fixed margin alone would miss a group losing 3 % where
the average is 1 %.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from deidflow.policy import Policy, Role
from deidflow.utility.measures import as_text, parsed

MAX_GROUPS = 20  # per column; the smaller groups beyond are pooled as "other groups"
FLAG_RATIO = 2.0
FLAG_MARGIN = 0.01
FLAG_RULE = (f"flagged when a group's figure is at least {FLAG_RATIO:g}× the overall figure and "
             f"at least {FLAG_MARGIN:.0%} (absolute) above it")

_SEX = re.compile(r"^(sex|gender|性别)$", re.I)
_AGE = re.compile(r"(^age$|^age[_ -]|birth|年龄|出生)", re.I)
_REGION = re.compile(r"(region|province|state|country|county|zip|地区|省)", re.I)
_ETHNIC = re.compile(r"(ethnic|race|nation|民族)", re.I)


@dataclass(frozen=True)
class GroupColumn:
    column: str
    kind: str  # sex | age band | region | ethnicity | group


def group_columns(policy: Policy) -> list[GroupColumn]:
    """The columns to break down by: `utility.groups` if given, else the subject table's
    non-identifying columns recognised by name or hierarchy kind (one per kind)."""
    spec = policy.tables[policy.subject_table]
    named = policy.utility.groups if policy.utility is not None else None
    out: list[GroupColumn] = []
    seen: set[str] = set()
    for col, cs in spec.columns.items():
        if cs.role in (Role.direct_identifier, Role.link_key, Role.free_text):
            continue
        if named is not None and col not in named:
            continue
        kind = _kind(col, cs.hierarchy.kind if cs.hierarchy else None)
        if kind is None and named is None:
            continue
        kind = kind or "group"
        if named is None and kind in seen:
            continue
        seen.add(kind)
        out.append(GroupColumn(col, kind))
    return out


def _kind(col: str, hierarchy: str | None) -> str | None:
    if _SEX.search(col):
        return "sex"
    if hierarchy == "age" or _AGE.search(col):
        return "age band"
    if hierarchy == "region" or _REGION.search(col):
        return "region"
    if _ETHNIC.search(col):
        return "ethnicity"
    return None


def group_labels(values: pd.Series, kind: str, as_of: date, hierarchy: str | None = None) -> pd.Series:
    """Each subject's group: ages (or birth dates) in 10-year bands with 90+ together;
    GB/T 2260 region codes by province (first two digits); anything else as it is."""
    text = as_text(values)
    if kind == "age band":
        present = values.notna().to_numpy()
        share = lambda x: x.notna().to_numpy()[present].mean() if present.any() else 0.0  # noqa: E731
        num = parsed(values)
        if share(num) < 0.95:
            born = parsed(values, "date")
            if share(born) >= 0.95:
                num = (pd.Timestamp(as_of) - born).dt.days / 365.25
        if share(num) >= 0.95:
            lo = (np.floor(num.clip(lower=0) / 10) * 10).astype("Int64")
            band = lo.astype("string") + "–" + (lo + 9).astype("string")
            band = band.mask((num >= 90).fillna(False).astype(bool), "90+")
            return band.fillna("missing")
        return text
    if kind == "region" and hierarchy == "region":
        return text.str.slice(0, 2).mask(text == "<NA>", "missing") + "xxxx"
    return text


@dataclass(frozen=True)
class GroupRow:
    label: str
    subjects: int
    suppressed_share: float
    loss: float
    flag_suppression: bool
    flag_loss: bool


def flagged(value: float, overall: float) -> bool:
    return value >= FLAG_RATIO * overall and value - overall >= FLAG_MARGIN


def breakdown(labels: pd.Series, suppressed: np.ndarray, record_loss: np.ndarray,
              small_cell: int) -> list[GroupRow]:
    """One row per group (largest first, small groups pooled as "other")."""
    codes, names = pd.factorize(labels.astype("string"), use_na_sentinel=False)
    names = [str(x) for x in names]
    n = np.bincount(codes, minlength=len(names))
    # pool: small groups, then everything beyond the MAX_GROUPS - 1 largest
    order = np.argsort(-n, kind="stable")
    pooled = n < small_cell
    pooled_label = np.where(pooled, "other (small groups)", "")
    big = order[~pooled[order]]
    if len(big) > MAX_GROUPS:
        pooled_label[big[MAX_GROUPS - 1:]] = "other groups"
        pooled[big[MAX_GROUPS - 1:]] = True
    final = np.array(names, dtype=object)
    final[pooled] = pooled_label[pooled]
    gcodes, gnames = pd.factorize(final[codes], use_na_sentinel=False)
    size = np.bincount(gcodes, minlength=len(gnames))
    s = np.bincount(gcodes, weights=suppressed.astype(float), minlength=len(gnames)) / np.maximum(size, 1)
    lo = np.bincount(gcodes, weights=record_loss.astype(float), minlength=len(gnames)) / np.maximum(size, 1)
    overall_s = float(suppressed.mean()) if len(suppressed) else 0.0
    overall_l = float(record_loss.mean()) if len(record_loss) else 0.0
    rows = []
    for i in np.argsort(-size, kind="stable"):  # one per group: a handful
        if size[i] < small_cell:  # a pooled "other" that is itself a small cell: withheld
            continue
        rows.append(GroupRow(str(gnames[i]), int(size[i]), float(s[i]), float(lo[i]),
                             flagged(float(s[i]), overall_s), flagged(float(lo[i]), overall_l)))
    return rows
