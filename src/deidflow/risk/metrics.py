"""Re-identification risk of one generalisation: k, l, t, attacker models and GB/T 42460.

Every figure is computed from the equivalence classes of the frequency table
(`deidflow.risk.classes`), never from a groupby over rows.

Definitions (f_j = records in class j, n = records, J = classes):
- k-anonymity: min f_j. Share of uniques: records in classes with f_j = 1, over n.
- Distinct l: min over classes of the number of distinct sensitive values.
  Entropy l: exp(min over classes of the Shannon entropy, natural log), a real number
  (pycanon truncates it to an int). Recursive (c,l): with the class's value counts
  r_1 >= r_2 >= ... >= r_m, a class is (c,l)-diverse when r_1 < c (r_l + ... + r_m)
  (Machanavajjhala et al. 2007); we report the infimum c = max_j r_1 / (r_l + ... + r_m)
  (None when a class has fewer than l values), so the table is (c,l)-diverse for any c above it.
- t-closeness: max over classes of the earth mover's distance between the class's
  sensitive distribution and the table's, with the equal ground distance (half the L1
  distance) and the ordered distance (sum of |cumulative differences| / (m-1), values in sort
  order) of Li et al. 2007, as pycanon computes them.
- Prosecutor risk: max 1/f_j and average J/n. Journalist risk (needs a population table with
  the same quasi-identifiers): max 1/F_j and average (1/n) sum f_j/F_j, F_j the population
  class size. Marketer risk: expected share of records re-identified, J/n without a
  population, (1/n) sum f_j/F_j with one (El Emam 2013; ARX RiskModelSampleSummary).
- GB/T 42460-2023 Annex D (see `Gb42460`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from deidflow.errors import InputError
from deidflow.risk.classes import (
    FrequencyTable,
    Grouping,
    combine_keys,
    frequency_table,
    group,
    level_vector,
    row_classes,
    subject_classes,
)
from deidflow.risk.classes import _mix64
from deidflow.risk.encoding import EncodedQI

# GB/T 42460-2023 Annex D: class-risk threshold τ by release model, and the overall limit.
CLASS_RISK_THRESHOLD = {"public": 1 / 20, "controlled": 1 / 5, "enclave": 1 / 3}
OVERALL_RISK_LIMIT = 0.05

# Cells of one dense (class x sensitive value) block; bounds memory for any table size.
_BLOCK_CELLS = 1 << 22


def class_risk_threshold(release_model: str) -> float:
    """τ of GB/T 42460-2023 Annex D: 1/20 public, 1/5 controlled, 1/3 enclave."""
    model = getattr(release_model, "value", release_model)
    try:
        return CLASS_RISK_THRESHOLD[model]
    except KeyError:
        raise InputError(
            f"unknown release model {model!r}",
            key="release.model",
            fix="use one of: public, controlled, enclave (GB/T 37964 3.12-3.14)",
        ) from None


@dataclass(frozen=True)
class SensitiveProfile:
    """Per-class statistics of the sensitive attribute (arrays of length J)."""

    distinct: np.ndarray
    entropy: np.ndarray | None = None
    recursive_ratio: np.ndarray | None = None  # r_1 / (r_l + ... + r_m); inf if < l values
    emd_equal: np.ndarray | None = None
    emd_ordered: np.ndarray | None = None


def sensitive_profile(
    ft: FrequencyTable,
    g: Grouping,
    *,
    reference: np.ndarray | None = None,
    recursive_l: int = 2,
    full: bool = True,
) -> SensitiveProfile:
    """Sensitive-value statistics per class. `reference` is the distribution t-closeness
    compares against (default: the frequency table's own). `full=False` computes the
    distinct counts only (what the search needs for distinct l)."""
    n_values = max(ft.n_values, 1)
    pair_class = g.combo_class[ft.pair_combo]
    J = g.n_classes
    if not full and J * n_values <= _BLOCK_CELLS:
        present = np.bincount(pair_class * n_values + ft.pair_value, minlength=J * n_values) > 0
        return SensitiveProfile(distinct=present.reshape(J, n_values).sum(axis=1))
    if reference is None:
        reference = np.bincount(ft.pair_value, weights=ft.pair_count, minlength=n_values)
        reference = reference / max(reference.sum(), 1)
    order = np.argsort(pair_class, kind="stable")
    pc, pv, pn = pair_class[order], ft.pair_value[order], ft.pair_count[order]
    distinct = np.zeros(J, dtype=np.int64)
    if full:
        entropy, ratio, emd_eq, emd_ord = (np.zeros(J) for _ in range(4))
    step = max(1, _BLOCK_CELLS // n_values)
    cum_ref = np.cumsum(reference)
    for a in range(0, J, step):
        b = min(J, a + step)
        lo, hi = np.searchsorted(pc, [a, b])
        m = np.bincount(
            (pc[lo:hi] - a) * n_values + pv[lo:hi], weights=pn[lo:hi], minlength=(b - a) * n_values
        ).reshape(b - a, n_values)
        distinct[a:b] = (m > 0).sum(axis=1)
        if not full:
            continue
        f = m.sum(axis=1, keepdims=True)
        p = m / np.maximum(f, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy[a:b] = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
            ranked = -np.sort(-m, axis=1)
            tail = ranked[:, recursive_l - 1 :].sum(axis=1) if recursive_l <= n_values else 0.0
            ratio[a:b] = np.where(tail > 0, ranked[:, 0] / np.where(tail > 0, tail, 1), np.inf)
        emd_eq[a:b] = 0.5 * np.abs(p - reference).sum(axis=1)
        if n_values > 1:
            emd_ord[a:b] = np.abs(np.cumsum(p, axis=1) - cum_ref).sum(axis=1) / (n_values - 1)
    if not full:
        return SensitiveProfile(distinct=distinct)
    return SensitiveProfile(distinct, entropy, ratio, emd_eq, emd_ord)


@dataclass(frozen=True)
class RiskReport:
    """Risk of one release (after generalisation and suppression). Plain numbers only, so
    `as_dict()` goes straight into the manifest."""

    n_records: int
    n_suppressed: int
    n_classes: int
    k: int
    uniques_share: float
    prosecutor_max: float
    prosecutor_avg: float
    journalist_max: float | None
    journalist_avg: float | None
    marketer: float
    l_distinct: int | None
    l_entropy: float | None
    recursive_l: int | None
    recursive_c: float | None
    t_equal: float | None
    t_ordered: float | None
    # GB/T 42460-2023 Annex D
    release_model: str
    threshold: float  # τ
    ra: float  # share of records in classes with θ_j > τ
    ra_classes: float  # share of classes with θ_j > τ
    rb: float  # max θ_j
    rc: float  # record-weighted mean θ_j = J / n
    rc_classes: float  # class-weighted mean θ_j
    context_probability: float  # pr
    r: float  # overall risk
    r_limit: float
    meets_gbt42460: bool  # Ra = 0 and R <= limit

    def as_dict(self) -> dict:
        """Every field, plus the names the manifest, review page and gate read: classes,
        unique_share, max_class_risk (Rb = max θ_j) and overall_risk (R)."""
        out = asdict(self)
        out.update(classes=self.n_classes, unique_share=self.uniques_share,
                   max_class_risk=self.rb, overall_risk=self.r)
        for key, value in out.items():  # JSON has no inf / nan
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


@dataclass(frozen=True)
class Gb42460:
    """GB/T 42460-2023 Annex D (K-anonymity model) on class sizes f_j.

    θ_j = 1/f_j. Ra: records in classes with θ_j > τ over all records (El Emam 2013, from
    which Annex D is drawn; the class share is reported too, as `ra_classes`, because
    reference/standards.md paraphrases Ra as a share of classes: both are zero together, and
    only zero-ness gates). Rb = max θ_j. Rc = record-weighted mean θ_j = J/n (the average
    re-identification probability of a record; `rc_classes` is the class-weighted mean).
    pr = 1 for public release, otherwise max(deliberate attack, acquaintance, breach), which
    the caller supplies (default 1: the worst case). R = 1 if Ra > 0, else Rb·pr (public) or
    Rc·pr (controlled, enclave). Acceptable when R <= 0.05 (checklist items 6-8)."""

    threshold: float
    ra: float
    ra_classes: float
    rb: float
    rc: float
    rc_classes: float
    context_probability: float
    r: float

    @classmethod
    def of(cls, sizes: np.ndarray, release_model: str, context_probability: float | None) -> "Gb42460":
        tau = class_risk_threshold(release_model)
        model = getattr(release_model, "value", release_model)
        pr = 1.0 if model == "public" or context_probability is None else float(context_probability)
        if not 0 < pr <= 1:
            raise InputError(
                f"context probability pr={pr} is not in (0, 1]",
                key="context_probability",
                fix="GB/T 42460 Annex D: pr = max(deliberate attack, acquaintance, breach)",
            )
        n = int(sizes.sum())
        if n == 0:
            return cls(tau, 0.0, 0.0, 0.0, 0.0, 0.0, pr, 0.0)
        theta = 1.0 / sizes
        # θ > τ  <=>  f < 1/τ; compare sizes to avoid 1/20 vs 0.05 rounding.
        at_risk = sizes < (1.0 / tau) - 1e-9
        ra = float(sizes[at_risk].sum() / n)
        ra_classes = float(at_risk.mean())
        rb = float(theta.max())
        rc = len(sizes) / n
        rc_classes = float(theta.mean())
        if ra > 0:
            r = 1.0
        else:
            r = (rb if model == "public" else rc) * pr
        return cls(tau, ra, ra_classes, rb, rc, rc_classes, pr, r)


def _population_sizes(
    ft: FrequencyTable,
    g: Grouping,
    qis: Sequence[EncodedQI],
    levels: Sequence[int],
    population: Sequence[EncodedQI],
) -> np.ndarray:
    """F_j: population records in each sample class. Population values are matched to the
    sample by their labels at the node's level, so the population may be encoded separately
    (with the same hierarchies)."""
    by_name = {p.name: p for p in population}
    missing = [q.name for q in qis if q.name not in by_name]
    if missing:
        raise InputError(
            "the population table lacks a quasi-identifier",
            column=missing[0],
            fix="encode the population table with the same quasi-identifiers and hierarchies",
        )
    sample_cols, pop_cols, cards = [], [], []
    pop_ok = None
    for i, (q, lvl) in enumerate(zip(qis, levels)):
        p = by_name[q.name]
        if p.n_levels != q.n_levels:
            raise InputError(
                f"population hierarchy has {p.n_levels} levels, the sample's {q.n_levels}",
                column=q.name,
                fix="use the same hierarchy for the population table",
            )
        to_sample = pd.Index(q.labels[lvl]).get_indexer(p.labels[lvl])
        col = to_sample[p.at(lvl)]
        pop_ok = col >= 0 if pop_ok is None else pop_ok & (col >= 0)
        pop_cols.append(col)
        sample_cols.append(q.maps[lvl][ft.codes[:, i]])
        cards.append(q.cardinality(lvl))
    pop_key, _ = combine_keys([c[pop_ok] for c in pop_cols], cards)
    combo_key, _ = combine_keys(sample_cols, cards)
    class_key = np.zeros(g.n_classes, dtype=np.int64)
    class_key[g.combo_class] = combo_key
    keys, counts = np.unique(pop_key, return_counts=True)
    pos = np.clip(np.searchsorted(keys, class_key), 0, max(len(keys) - 1, 0))
    found = (keys[pos] == class_key) if len(keys) else np.zeros(g.n_classes, bool)
    big_f = np.where(found, counts[pos] if len(keys) else 0, 0)
    # The sample is part of the population: a smaller population class is a stale table.
    return np.maximum(big_f, g.sizes)


def report_from_sizes(
    sizes: np.ndarray,
    *,
    n_suppressed: int = 0,
    release_model: str = "controlled",
    context_probability: float | None = None,
    profile: SensitiveProfile | None = None,
    recursive_l: int | None = None,
    population_sizes: np.ndarray | None = None,
) -> RiskReport:
    """Assemble a RiskReport from class sizes (and, optionally, per-class sensitive stats)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    sizes = sizes[sizes > 0]
    n = int(sizes.sum())
    J = len(sizes)
    k = int(sizes.min()) if J else 0
    gb = Gb42460.of(sizes, release_model, context_probability)
    model = getattr(release_model, "value", release_model)
    if population_sizes is not None and J:
        journalist_max = float((1.0 / population_sizes).max())
        journalist_avg = float((sizes / population_sizes).sum() / n)
        marketer = journalist_avg
    else:
        journalist_max = journalist_avg = None
        marketer = J / n if n else 0.0
    has = profile is not None and J > 0
    return RiskReport(
        n_records=n,
        n_suppressed=int(n_suppressed),
        n_classes=J,
        k=k,
        uniques_share=float(sizes[sizes == 1].sum() / n) if n else 0.0,
        prosecutor_max=1.0 / k if k else 0.0,
        prosecutor_avg=J / n if n else 0.0,
        journalist_max=journalist_max,
        journalist_avg=journalist_avg,
        marketer=marketer,
        l_distinct=int(profile.distinct.min()) if has else None,
        l_entropy=float(np.exp(profile.entropy.min())) if has and profile.entropy is not None else None,
        recursive_l=recursive_l if has else None,
        recursive_c=float(profile.recursive_ratio.max())
        if has and profile.recursive_ratio is not None
        else None,
        t_equal=float(profile.emd_equal.max()) if has and profile.emd_equal is not None else None,
        t_ordered=float(profile.emd_ordered.max())
        if has and profile.emd_ordered is not None
        else None,
        release_model=model,
        threshold=gb.threshold,
        ra=gb.ra,
        ra_classes=gb.ra_classes,
        rb=gb.rb,
        rc=gb.rc,
        rc_classes=gb.rc_classes,
        context_probability=gb.context_probability,
        r=gb.r,
        r_limit=OVERALL_RISK_LIMIT,
        meets_gbt42460=bool(gb.ra == 0 and gb.r <= OVERALL_RISK_LIMIT),
    )


def measure_grouping(
    ft: FrequencyTable,
    g: Grouping,
    qis: Sequence[EncodedQI],
    levels: Sequence[int],
    *,
    n_suppressed: int = 0,
    release_model: str = "controlled",
    context_probability: float | None = None,
    recursive_l: int = 2,
    population: Sequence[EncodedQI] | None = None,
) -> RiskReport:
    """RiskReport of a grouping already computed (the search reuses its frequency table)."""
    profile = sensitive_profile(ft, g, recursive_l=recursive_l) if ft.has_sensitive else None
    pop = _population_sizes(ft, g, qis, levels, population) if population is not None else None
    return report_from_sizes(
        g.sizes,
        n_suppressed=n_suppressed,
        release_model=release_model,
        context_probability=context_probability,
        profile=profile,
        recursive_l=recursive_l if profile is not None else None,
        population_sizes=pop,
    )


def measure(
    qis: Sequence[EncodedQI],
    levels: Mapping[str, int] | None = None,
    *,
    sensitive: np.ndarray | pd.Series | None = None,
    keep: np.ndarray | None = None,
    release_model: str = "controlled",
    population: Sequence[EncodedQI] | None = None,
    context_probability: float | None = None,
    recursive_l: int = 2,
) -> RiskReport:
    """Risk of the table `qis` generalised to `levels` (default level 0), counting only the
    rows in `keep` (default all; the others are suppressed). One row per subject: for tables
    with several rows per subject use `measure_subjects`."""
    ft = frequency_table(qis, sensitive=sensitive, keep=keep)
    lv = level_vector(qis, levels)
    g = group(ft, qis, lv)
    return measure_grouping(
        ft,
        g,
        qis,
        lv,
        n_suppressed=len(ft.row_combo) - ft.n_records,
        release_model=release_model,
        context_probability=context_probability,
        recursive_l=recursive_l,
        population=population,
    )


def measure_subjects(
    qis: Sequence[EncodedQI],
    subject: np.ndarray | pd.Series,
    levels: Mapping[str, int] | None = None,
    *,
    keep: np.ndarray | None = None,
    release_model: str = "controlled",
    context_probability: float | None = None,
) -> RiskReport:
    """Patient-level risk of a table with several rows per subject: each subject counts once,
    and subjects are in the same class only when the sets of their generalised
    quasi-identifier combinations are equal (`classes.subject_classes`)."""
    _, sizes = subject_classes(qis, subject, levels, keep=keep)
    n_rows = len(np.asarray(subject))
    n_kept = n_rows if keep is None else int(np.asarray(keep, bool).sum())
    return report_from_sizes(
        sizes,
        n_suppressed=n_rows - n_kept,
        release_model=release_model,
        context_probability=context_probability,
    )


def measure_patients(
    tables: Sequence[tuple[np.ndarray | pd.Series, Sequence[EncodedQI], Mapping[str, int] | None]],
    *,
    release_model: str = "controlled",
    context_probability: float | None = None,
) -> RiskReport:
    """Patient-level risk over several tables, e.g. patients (birth date, sex, region) and
    encounters (department, admission month): each table is (subject id per row, its
    quasi-identifiers, their levels). A patient's footprint is, per table, the set of their
    generalised combinations; two patients are in one class only when every table's set is
    equal, and a patient absent from a table differs from one present. Each patient counts
    once, however many rows they have."""
    if not tables:
        raise InputError("no tables were given", fix="pass (subject, quasi_identifiers, levels) per table")
    subjects = [np.asarray(s) for s, _, _ in tables]
    for (s, qis, _), subj in zip(tables, subjects):
        n = len(qis[0].codes) if qis else 0
        if len(subj) != n:
            raise InputError(
                f"subject column has {len(subj)} values for {n} rows",
                column="subject",
                fix="pass the subject id of every row of each table",
            )
    ids, uniques = pd.factorize(pd.Series(np.concatenate(subjects)) if subjects else pd.Series([]))
    ids = ids.astype(np.int64)
    n_subj = len(uniques)
    signature = np.zeros((n_subj, len(tables)), dtype=np.uint64)
    start = 0
    for t, ((_, qis, levels), subj) in enumerate(zip(tables, subjects)):
        sid = ids[start : start + len(subj)]
        start += len(subj)
        rc = row_classes(qis, levels)
        width = int(rc.max()) + 1 if len(rc) else 1
        pairs = np.unique(sid * width + rc)
        # +1 so that "present with class 0" differs from "absent" (signature 0).
        np.add.at(signature[:, t], pairs // width, _mix64(pairs % width) | np.uint64(1))
    _, inverse = np.unique(signature, axis=0, return_inverse=True)
    sizes = np.bincount(inverse.ravel()).astype(np.int64)
    return report_from_sizes(sizes, release_model=release_model,
                             context_probability=context_probability)
