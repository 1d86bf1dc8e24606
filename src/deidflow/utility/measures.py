"""Per column information loss and the distributions the review page plots.

Definitions (also printed on the review page, `DEFINITIONS`):

- *precision* of a generalised column (Sweeney): 1 - h/H, where h is the level released and H
  the hierarchy's top level, over the released records (ARX's reading); "with suppression"
  counts each suppressed record as fully generalised (h = H) and averages over the consented
  records.
- *non-uniform entropy* (de Waal and Willenborg; ARX's "non-uniform entropy"): a consented
  record whose value x is released as g loses log2(f(g) / f(x)) bits, where f counts the
  consented input (f(g): the records whose value generalises to g); a suppressed record loses
  log2(N / f(x)). Reported in bits per consented record, and normalised by the column's
  entropy (what it would lose if every record were suppressed): 0 = nothing lost, 1 = all.
- *total variation distance* between the distribution before (consented) and after (released)
  on the same bins: half the sum of absolute differences of the shares; for a generalised column
  the consented values are first generalised to the released level, so it measures what
  suppression changed.

Distributions never show a record: categories and bins under the small-cell limit are pooled
("other") or withheld, and numeric bins run between rounded 1st and 99th percentiles with
open-ended end bins, so no extreme value is printed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

NA = "<NA>"
TOP_CATEGORIES = 10
NUMERIC_BINS = 8

DEFINITIONS = {
    "precision": "1 − h/H for the level h released of a hierarchy of top level H (Sweeney), "
    "over released records; 'with suppression' counts a suppressed record as h = H",
    "non-uniform entropy": "a record with value x released as g loses log2(f(g)/f(x)) bits, f "
    "counting the consented input; a suppressed record loses log2(N/f(x)); shown per record "
    "and divided by the column's entropy (0 = nothing lost, 1 = everything)",
    "total variation distance": "½ Σ |share before − share after| over the plotted bins (a "
    "generalised column's consented values generalised to the released level first)",
    "record loss": "for one consented record, the mean over the generalised columns of "
    "log2(f(g)/f(x)) / log2(N/f(x)): the share of what its values said that was lost "
    "(1 when suppressed)",
}


@dataclass(frozen=True)
class Histogram:
    """Bars of a distribution: labels and counts (None where a count is withheld)."""

    labels: list[str]
    counts: list[int | None]

    def shares(self) -> np.ndarray:
        c = np.array([0 if v is None else v for v in self.counts], dtype=float)
        return c / c.sum() if c.sum() else c


def as_text(values: pd.Series) -> pd.Series:
    """Values as text, nulls as "<NA>" (as the search and the hierarchies see them)."""
    return values.astype("string").fillna(NA)


def precision(level: int, top: int, n: int, suppressed: int) -> tuple[float, float]:
    """(precision over released records, precision with suppression over consented ones)."""
    frac = level / top if top > 0 else 0.0
    released = 1.0 - frac
    with_sup = 1.0 - ((n - suppressed) * frac + suppressed) / n if n else released
    return released, with_sup


def nue_per_record(original: pd.Series, generalised: pd.Series, released: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bits each consented record loses (log2 f(g)/f(x), or log2 N/f(x) when suppressed) and
    the most it could lose (log2 N/f(x)). `original` and `generalised` are per consented record."""
    n = len(original)
    xc, _ = pd.factorize(as_text(original))
    gc, _ = pd.factorize(as_text(generalised))
    fx = np.bincount(xc)[xc].astype(float)
    fg = np.bincount(gc)[gc].astype(float)
    fg = np.where(released, fg, float(n))
    return np.log2(fg / fx), np.log2(n / fx)


def entropy_bits(values: pd.Series) -> float:
    counts = as_text(values).value_counts().to_numpy(dtype=float)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum()) if len(p) else 0.0


# --- distributions ------------------------------------------------------------------------


def parsed(values: pd.Series, kind: str = "number") -> pd.Series:
    """Each value read as a number (NaN where it is not one) or, with kind="date", as a date
    (NaT). Only the distinct values are parsed (a million-row column has a few thousand)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    text = pd.Series(np.asarray(uniques, dtype=object)).astype("string")
    if kind == "date":
        u = pd.to_datetime(text, errors="coerce", format="ISO8601").to_numpy()
        out = np.where(codes < 0, np.datetime64("NaT"), u[np.maximum(codes, 0)]) if len(u) else \
            np.full(len(codes), np.datetime64("NaT"))
        return pd.Series(out.astype("datetime64[ns]"), index=values.index)
    u = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    out = np.where(codes < 0, np.nan, u[np.maximum(codes, 0)]) if len(u) else np.full(len(codes), np.nan)
    return pd.Series(out, index=values.index)


def numeric(values: pd.Series) -> pd.Series | None:
    """The values as numbers (dates as fractional years) when at least 95 % of the present
    ones read as such and there are more than a dozen distinct ones; else None (categorical)."""
    present = values.notna().to_numpy()
    if not present.any():
        return None
    num = parsed(values)
    if num.notna().to_numpy()[present].mean() < 0.95:
        dates = parsed(values, "date")
        if dates.notna().to_numpy()[present].mean() < 0.95:
            return None
        num = dates.dt.year + (dates.dt.day_of_year - 1) / 365.25
    num = num.astype(float)
    if num.nunique() <= 12:
        return None
    return num


def _nice_step(span: float, bins: int) -> float:
    raw = span / bins if span > 0 else 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def numeric_edges(num: pd.Series) -> np.ndarray:
    """Rounded bin edges between the 1st and 99th percentiles (never the extremes)."""
    present = num.dropna().to_numpy()
    lo, hi = np.percentile(present, [1, 99])
    step = _nice_step(hi - lo, NUMERIC_BINS)
    a = math.floor(lo / step) * step
    b = math.ceil(hi / step) * step
    if b <= a:
        b = a + step
    return np.arange(a, b + step / 2, step)


def _label_num(x: float) -> str:
    return f"{x:g}"


def numeric_histogram(num: pd.Series, edges: np.ndarray, small_cell: int, missing: int = 0) -> Histogram:
    vals = num.dropna().to_numpy()
    idx = np.searchsorted(edges, vals, side="right")  # 0: below the first edge
    counts = np.bincount(idx, minlength=len(edges) + 1)
    labels = [f"< {_label_num(edges[0])}"]
    labels += [f"{_label_num(a)}–{_label_num(b)}" for a, b in zip(edges[:-1], edges[1:])]
    labels += [f"≥ {_label_num(edges[-1])}"]
    counts = [int(c) for c in counts]
    # bins are [a, b); "< first" and "≥ last" are open-ended
    if missing:
        labels.append("missing")
        counts.append(int(missing))
    return Histogram(labels, [c if c == 0 or c >= small_cell else None for c in counts])


def categorical_histogram(text: pd.Series, small_cell: int, order: list[str] | None = None) -> Histogram:
    """The most frequent categories (or those of `order`), the rest pooled as "other"."""
    counts = text.value_counts(sort=False)
    if order is None:
        ranked = counts[counts >= small_cell].sort_values(ascending=False, kind="stable")
        ranked = ranked.iloc[:TOP_CATEGORIES].sort_index(kind="stable")
        order = [str(v) for v in ranked.index]
    shown = [int(counts.get(v, 0)) for v in order]
    rest = int(counts.sum()) - sum(shown)
    labels = [("missing" if v == NA else v) for v in order]
    out: list[int | None] = [c if c == 0 or c >= small_cell else None for c in shown]
    if rest:
        labels.append("other")
        out.append(rest if rest >= small_cell else None)
    return Histogram(labels, out)


def before_after(before: pd.Series, after: pd.Series, small_cell: int,
                 before_generalised: pd.Series | None = None) -> tuple[Histogram, Histogram, float]:
    """Histograms of a column before (consented) and after (released), and their total
    variation distance (on the released representation for a generalised column)."""
    nb = numeric(before)
    if before_generalised is None and nb is not None:
        na = numeric(after)
        if na is not None:
            edges = numeric_edges(nb)
            hb = numeric_histogram(nb, edges, small_cell, int(nb.isna().sum()))
            ha = numeric_histogram(na, edges, small_cell, int(na.isna().sum()))
            return hb, ha, _tvd(nb, na, edges)
    if nb is not None:
        edges = numeric_edges(nb)
        hb = numeric_histogram(nb, edges, small_cell, int(nb.isna().sum()))
    else:
        hb = categorical_histogram(as_text(before), small_cell)
    a_text = as_text(after)
    ha = categorical_histogram(a_text, small_cell)
    ref = as_text(before_generalised) if before_generalised is not None else as_text(before)
    return hb, ha, _tvd_text(ref, a_text)


def _tvd(b: pd.Series, a: pd.Series, edges: np.ndarray) -> float:
    def shares(x: pd.Series) -> np.ndarray:
        idx = np.where(x.isna().to_numpy(), len(edges) + 1,
                       np.searchsorted(edges, x.fillna(0).to_numpy(), side="right"))
        c = np.bincount(idx, minlength=len(edges) + 2).astype(float)
        return c / max(c.sum(), 1)
    return float(0.5 * np.abs(shares(b) - shares(a)).sum())


def _tvd_text(b: pd.Series, a: pd.Series) -> float:
    pb = b.value_counts(normalize=True)
    pa = a.value_counts(normalize=True)
    both = pb.index.union(pa.index)
    return float(0.5 * np.abs(pb.reindex(both, fill_value=0) - pa.reindex(both, fill_value=0)).sum())
