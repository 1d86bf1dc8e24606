"""The optimal generalisation search: the least information loss that meets the limits.

The lattice is every combination of hierarchy levels (within the policy's bounds). A node
*passes* when the classes that break a limit (k, l, t, class risk) hold at most the
suppression budget's rows, and the overall risk after suppressing them (plus, if needed, the
smallest remaining classes) is within its limit. Among passing nodes the search returns the
one with the least loss (Iyengar's loss metric, suppressed rows counting as fully
generalised), ties broken by the lattice order, so the answer is deterministic.

Why it is fast (DESIGN.md, "Search on the frequency table"):
- The rows are reduced once to distinct level-0 combinations (`classes.frequency_table`);
  a node costs one mixed-radix key and one bincount over that table, not a groupby on rows.
- A node is grouped from the smallest already-grouped node below it (roll-up), because a
  hierarchy level is a function of any lower level.
- Branch and bound: without suppression the loss of a node is a sum of one term per
  quasi-identifier, which is a lower bound of its loss with suppression and grows with every
  level. A greedy descent from the most general node finds a good passing node; then only
  nodes whose bound is below its loss are visited (`_explore`): the rest cannot be better.
- Monotonicity pruning: k, distinct/entropy/recursive l, t (with a fixed reference
  distribution, EMD being convex) and class risk only improve when a node is generalised, so
  when a node fails on them, every node below it fails too and is never evaluated. Visiting
  the most general candidates first makes each failure remove as much as possible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from deidflow.errors import GateFailed, InputError, PolicyError
from deidflow.risk.classes import (
    FrequencyTable,
    Grouping,
    check_qis,
    combine_keys,
    dense_ids,
    frequency_table,
    group,
    restrict,
)
from deidflow.risk.encoding import EncodedQI
from deidflow.risk.metrics import (
    RiskReport,
    class_risk_threshold,
    measure_grouping,
    report_from_sizes,
    sensitive_profile,
)

# Above this many lattice nodes the node table itself would not fit comfortably in memory.
_MAX_NODES = 2_000_000
# Grouped nodes kept for roll-up (each holds at most one row per distinct combination).
_CACHE = 128
L_VARIANTS = ("distinct", "entropy", "recursive")
# How per-quasi-identifier losses are combined: deidflow's arithmetic mean, or ARX's default.
LOSS_AGGREGATES = ("arithmetic", "geometric")
# Iyengar counts the hierarchy's whole domain; "data" counts only the values present.
LOSS_DOMAINS = ("hierarchy", "data")


@dataclass(frozen=True)
class SearchResult:
    """What the search chose and what it achieved. `suppressed` is per input row."""

    levels: dict[str, int]
    suppressed: np.ndarray
    before: RiskReport
    after: RiskReport
    utility: dict
    nodes_evaluated: int
    lattice_size: int = 0
    limits: dict = field(default_factory=dict)
    # l and t of each sensitive attribute after the search (the report holds the worst)
    sensitive_after: dict = field(default_factory=dict)
    # patient level: the subjects' record signatures (risk.signatures), cached at the chosen
    # levels, for figures over the same records (risk.record's per-table k)
    signatures: Any = field(default=None, repr=False, compare=False)

    @property
    def n_suppressed(self) -> int:
        return int(self.suppressed.sum())


@dataclass
class _Node:
    """One grouped node: class codes (per QI at the node's levels), sizes, sensitive pairs."""

    levels: np.ndarray
    codes: np.ndarray  # (J, q) int32
    sizes: np.ndarray  # (J,) int64
    # One (class, value, count) triple of arrays per sensitive attribute measured.
    pairs: list = field(default_factory=list)


@dataclass
class _Outcome:
    passes: bool
    monotone_fail: bool  # failed on a criterion that also fails below this node
    bad: np.ndarray  # (J,) classes to suppress
    suppressed: int
    loss: float
    reason: str = ""


class _Lattice:
    """Level lookups, loss tables and the lower bound for one search."""

    def __init__(self, qis: Sequence[EncodedQI], ft: FrequencyTable, lo: np.ndarray, hi: np.ndarray,
                 *, domain: str = "hierarchy", aggregate: str = "arithmetic"):
        self.qis = qis
        self.aggregate_name = aggregate
        self.q = len(qis)
        self.n = ft.n_records
        self.lo, self.hi = lo, hi
        # lift[i][a][b][code at level a] -> code at level b (b >= a); a hierarchy is a tree.
        self.lift: list[dict[tuple[int, int], np.ndarray]] = []
        # loss_of[i][L][code at L] = (leaves under it - 1) / (leaves - 1)
        self.loss_of: list[list[np.ndarray]] = []
        self.bound_terms = np.zeros((self.q, max(q.n_levels for q in qis)))
        for i, q in enumerate(qis):
            leaves = q.cardinality(0)
            whole = domain == "hierarchy" and q.domain is not None
            domain_leaves = int(q.domain_size) if whole else leaves
            rep = []  # a level-0 representative of every code at each level
            for lvl in range(q.n_levels):
                r = np.zeros(q.cardinality(lvl), dtype=np.int64)
                r[q.maps[lvl][::-1]] = np.arange(leaves)[::-1]  # first leaf wins: deterministic
                rep.append(r)
            lift = {}
            for a in [0, *range(max(lo[i], 1), hi[i] + 1)]:
                for b in range(a, hi[i] + 1):
                    lift[(a, b)] = q.maps[b][rep[a]].astype(np.int64)
                    if not np.array_equal(lift[(a, b)][q.maps[a]], q.maps[b]):
                        raise InputError(
                            f"the hierarchy is not a tree: a value at level {a} generalises "
                            f"to two different values at level {b}",
                            column=q.name,
                            fix="give every value at one level a single parent at each "
                            "higher level",
                        )
            self.lift.append(lift)
            per_level = []
            leaf_counts = np.bincount(ft.codes[:, i], weights=ft.counts, minlength=leaves)
            for lvl in range(q.n_levels):
                # Iyengar: (leaves under the label - 1) / (leaves of the domain - 1), over the
                # hierarchy's whole domain when it is known, else over the data's values
                under = (q.domain[lvl] if whole
                         else np.bincount(q.maps[lvl], minlength=q.cardinality(lvl)))
                loss = ((under - 1) / (domain_leaves - 1) if domain_leaves > 1
                        else np.zeros(len(under)))
                per_level.append(loss)
                self.bound_terms[i, lvl] = float(leaf_counts @ loss[q.maps[lvl]])
            self.loss_of.append(per_level)
        grids = np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij")
        self.nodes = np.stack([g.ravel() for g in grids], axis=1).astype(np.int16)
        per_qi = self.bound_terms[np.arange(self.q), self.nodes] / max(self.n, 1)
        self.bound = self.aggregate_rows(per_qi)

    def aggregate_rows(self, per_qi: np.ndarray) -> np.ndarray:
        """Aggregate per-QI losses (last axis): the arithmetic mean, or ARX's default, the
        geometric mean of (loss + 1) minus 1. Both grow with every per-QI loss, so a bound
        aggregated the same way stays a lower bound."""
        per_qi = np.asarray(per_qi, dtype=float)
        if self.aggregate_name == "geometric":
            return np.exp(np.log1p(per_qi).mean(axis=-1)) - 1.0
        return per_qi.mean(axis=-1)

    def aggregate(self, per_qi: np.ndarray) -> float:
        return float(self.aggregate_rows(np.asarray(per_qi, dtype=float)[None, :])[0])

    def class_loss_per_qi(self, node: _Node) -> np.ndarray:
        """(J, q): each class's loss per quasi-identifier."""
        out = np.zeros((len(node.sizes), self.q))
        for i in range(self.q):
            out[:, i] = self.loss_of[i][int(node.levels[i])][node.codes[:, i]]
        return out

    def class_loss(self, node: _Node) -> np.ndarray:
        out = np.zeros(len(node.sizes))
        for i in range(self.q):
            out += self.loss_of[i][int(node.levels[i])][node.codes[:, i]]
        return out


def _rollup(base: _Node, levels: np.ndarray, lat: _Lattice, with_pairs: bool) -> _Node:
    """Group `base` (a node at or below `levels`) to `levels`."""
    cols, cards = [], []
    for i, q in enumerate(lat.qis):
        a, b = int(base.levels[i]), int(levels[i])
        cols.append(lat.lift[i][(a, b)][base.codes[:, i]])
        cards.append(q.cardinality(b))
    key, radix = combine_keys(cols, cards)
    cls, J = dense_ids(key, radix)
    sizes = np.bincount(cls, weights=base.sizes, minlength=J).astype(np.int64)
    rep = np.zeros(J, dtype=np.int64)
    rep[cls] = np.arange(len(cls))
    codes = np.stack([c[rep] for c in cols], axis=1).astype(np.int32)
    node = _Node(levels=levels.copy(), codes=codes, sizes=sizes)
    if with_pairs:
        node.pairs = [_rollup_pairs(cls, J, p) for p in base.pairs]
    return node


def _rollup_pairs(cls: np.ndarray, J: int, pairs: tuple) -> tuple:
    """One sensitive attribute's (class, value, count) pairs regrouped to the classes `cls`."""
    pair_class, pair_value, pair_count = pairs
    n_values = int(pair_value.max()) + 1 if len(pair_value) else 1
    pkey = cls[pair_class] * n_values + pair_value
    if J * n_values <= 1 << 24:
        counts = np.bincount(pkey, weights=pair_count, minlength=J * n_values)
        present = np.flatnonzero(counts)
        return present // n_values, present % n_values, counts[present].astype(np.int64)
    uniq, inv = np.unique(pkey, return_inverse=True)
    return uniq // n_values, uniq % n_values, np.bincount(inv, weights=pair_count).astype(np.int64)


class _Criteria:
    """The limits, checked on one grouped node."""

    def __init__(self, *, k, l, l_variant, c, t, max_class_risk, max_overall_risk,
                 release_model, budget_rows, n, n_values=(), reference=()):
        self.k = k
        self.min_size = k
        if max_class_risk is not None:  # θ_j = 1/f_j <= max  <=>  f_j >= 1/max
            self.min_size = max(k, math.ceil(1.0 / max_class_risk - 1e-9))
        self.l, self.l_variant, self.c, self.t = l, l_variant, c, t
        self.max_overall_risk = max_overall_risk
        self.public = release_model == "public"
        self.budget_rows = budget_rows
        self.n = n
        # per sensitive attribute: its number of values and its whole-table distribution
        self.n_values = list(n_values)
        self.reference = list(reference)

    @property
    def needs_sensitive(self) -> bool:
        return self.l is not None or self.t is not None

    def check(self, node: _Node, lat: _Lattice) -> _Outcome:
        sizes = node.sizes
        bad = sizes < self.min_size
        if self.needs_sensitive:
            g = Grouping(combo_class=np.arange(len(sizes)), sizes=sizes)
            full = self.t is not None or self.l_variant != "distinct"
            # every sensitive attribute must meet l and t, not only the first (the gate
            # checks each one: risk/limits.py)
            for (pc, pv, pn), n_values, reference in zip(node.pairs, self.n_values,
                                                          self.reference):
                ft = FrequencyTable(
                    names=(), codes=node.codes, counts=sizes, row_combo=np.zeros(0, np.int64),
                    n_records=int(sizes.sum()), pair_combo=pc, pair_value=pv, pair_count=pn,
                    n_values=n_values,
                )
                prof = sensitive_profile(ft, g, reference=reference,
                                         recursive_l=self.l or 2, full=full)
                if self.l is not None:
                    if self.l_variant == "distinct":
                        bad |= prof.distinct < self.l
                    elif self.l_variant == "entropy":
                        bad |= prof.entropy < math.log(self.l) - 1e-12
                    else:
                        bad |= ~(prof.recursive_ratio < self.c)
                if self.t is not None:
                    bad |= prof.emd_equal > self.t + 1e-12
        suppressed = int(sizes[bad].sum())
        if suppressed > self.budget_rows:
            return _Outcome(False, True, bad, suppressed, math.inf,
                            f"{suppressed} rows break k/l/t/class risk; the budget is "
                            f"{self.budget_rows}")
        if self.max_overall_risk is not None:
            bad = self._overall(sizes, bad, suppressed)
            if bad is None:
                return _Outcome(False, False, np.zeros(0, bool), suppressed, math.inf,
                                "overall risk R stays above its limit within the budget")
            suppressed = int(sizes[bad].sum())
        kept = ~bad
        # per quasi-identifier: kept records' loss plus 1 per suppressed record, over n
        per_qi = (sizes[kept] @ lat.class_loss_per_qi(node)[kept] + suppressed) / max(self.n, 1)
        return _Outcome(True, False, bad, suppressed, lat.aggregate(per_qi))

    def _overall(self, sizes: np.ndarray, bad: np.ndarray, suppressed: int) -> np.ndarray | None:
        """GB/T 42460 overall risk after suppression (Ra = 0 once the at-risk classes are
        gone): Rb = max 1/f_j for public release, Rc = J/n otherwise (pr = 1, worst case).
        If it is above the limit, suppress the smallest remaining classes, as few as needed."""
        kept_idx = np.flatnonzero(~bad)
        order = kept_idx[np.argsort(sizes[kept_idx], kind="stable")]
        s = sizes[order]
        if len(s) == 0:
            return bad
        cum = np.concatenate([[0], np.cumsum(s)])  # rows removed after dropping i classes
        i = np.arange(len(s) + 1)
        n_kept = self.n - suppressed - cum
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.public:
                risk = np.where(i < len(s), 1.0 / np.concatenate([s, [1]]), 0.0)
            else:
                risk = np.where(n_kept > 0, (len(s) - i) / np.maximum(n_kept, 1), 0.0)
        ok = (risk <= self.max_overall_risk + 1e-12) & (suppressed + cum <= self.budget_rows)
        if not ok.any():
            return None
        drop = int(np.argmax(ok))
        out = bad.copy()
        out[order[:drop]] = True
        return out


def _bounds(qis: Sequence[EncodedQI], level_bounds) -> tuple[np.ndarray, np.ndarray]:
    level_bounds = dict(level_bounds or {})
    unknown = set(level_bounds) - {q.name for q in qis}
    if unknown:
        raise InputError(
            "level bounds are given for a column that is not a quasi-identifier",
            column=sorted(unknown)[0],
            fix=f"use one of: {', '.join(q.name for q in qis)}",
        )
    lo, hi = [], []
    for q in qis:
        a, b = level_bounds.get(q.name, (0, q.n_levels - 1))
        a, b = int(a), int(q.n_levels - 1 if b is None else b)
        if not 0 <= a <= b < q.n_levels:
            raise PolicyError(
                f"level bounds ({a}, {b}) are outside the hierarchy's levels 0..{q.n_levels - 1}",
                column=q.name,
                fix="set min_level <= max_level within the hierarchy",
            )
        lo.append(a)
        hi.append(b)
    return np.array(lo), np.array(hi)


def _validate(k, suppression_budget, l, l_variant, c, t, sensitive, max_class_risk,
              max_overall_risk) -> str:
    if int(k) < 1:
        raise PolicyError(f"k={k} must be at least 1", key="limits.k", fix="GB/T 39725: k > 5")
    if not 0 <= suppression_budget < 1:
        raise PolicyError(
            f"suppression budget {suppression_budget} is not in [0, 1)",
            key="limits.suppression_budget",
            fix="a share of rows, e.g. 0.02",
        )
    variant = l_variant or "distinct"
    if variant not in L_VARIANTS:
        raise PolicyError(f"unknown l-diversity variant {variant!r}", key="limits.l_variant",
                          fix=f"use one of: {', '.join(L_VARIANTS)}")
    if l is not None and int(l) < 1:
        raise PolicyError(f"l={l} must be at least 1", key="limits.l", fix="use l >= 2")
    if l is not None and variant == "recursive" and (c is None or c <= 0):
        raise PolicyError("recursive (c,l)-diversity needs c > 0", key="limits.c",
                          fix="set limits.c, e.g. 3")
    if (l is not None or t is not None) and sensitive is None:
        raise PolicyError(
            "l-diversity or t-closeness is required but no sensitive attribute was given",
            key="limits",
            fix="mark one column as sensitive, or remove limits.l and limits.t",
        )
    for name, v in (("max_class_risk", max_class_risk), ("max_overall_risk", max_overall_risk),
                    ("t", t)):
        if v is not None and not 0 < v <= 1:
            raise PolicyError(f"{name}={v} is not in (0, 1]", key=f"limits.{name}",
                              fix="a probability, e.g. 0.05")
    return variant


def search(
    qis: Sequence[EncodedQI],
    *,
    k: int,
    suppression_budget: float,
    l: int | None = None,
    l_variant: str | None = None,
    c: float | None = None,
    sensitive: np.ndarray | None = None,
    t: float | None = None,
    max_class_risk: float | None = None,
    max_overall_risk: float | None = None,
    release_model: str = "controlled",
    level_bounds: dict[str, tuple[int, int]] | None = None,
    subject_codes=None,
    sensitives: Mapping[str, np.ndarray] | None = None,
    subject_sensitives: Mapping[str, np.ndarray] | None = None,
    record_blocks: Sequence[tuple[int, int, Sequence[str]]] | None = None,
    loss_aggregate: str = "arithmetic",
    loss_domain: str = "hierarchy",
    loss=None,
) -> SearchResult:
    """The generalisation levels with the least loss that meet the limits, suppressing whole
    classes up to `suppression_budget` (a share of the rows, or of the subjects when
    `subject_codes` gives each row's subject: a subject with many rows then counts once).

    l and t hold on every sensitive attribute: `sensitive` (one, unnamed) and each of
    `sensitives` (by column name), as the validation gate checks them.
    `loss`: another loss to minimise than Iyengar's (risk/classification.py).
    `record_blocks`: with `subject_codes`, the stacked tables' row ranges and own
    quasi-identifiers (`risk.signatures`), so that each table's part of a subject's record is
    computed once per distinct levels of that table.

    Raises GateFailed, naming the limit, when no node within the bounds meets the limits."""
    n_rows = check_qis(qis)
    if n_rows == 0:
        raise InputError(
            "there are no rows to search: k-anonymity of an empty table means nothing",
            column=qis[0].name,
            fix="check the extract and the consent gate: no subject was left to release",
        )
    named = dict(sensitives or subject_sensitives or {})
    if sensitive is not None:
        named = {"sensitive": sensitive, **named}
    variant = _validate(k, suppression_budget, l, l_variant, c, t, named or None,
                        max_class_risk, max_overall_risk)
    if loss_aggregate not in LOSS_AGGREGATES:
        raise PolicyError(f"unknown loss aggregate {loss_aggregate!r}", key="utility.aggregate",
                          fix=f"use one of: {', '.join(LOSS_AGGREGATES)}")
    if loss_domain not in LOSS_DOMAINS:
        raise PolicyError(f"unknown loss domain {loss_domain!r}", key="utility.domain",
                          fix=f"use one of: {', '.join(LOSS_DOMAINS)}")
    loss_kw = dict(domain=loss_domain, aggregate=loss_aggregate)
    model = getattr(release_model, "value", release_model)
    class_risk_threshold(model)  # refuses an unknown release model
    lo, hi = _bounds(qis, level_bounds)
    n_nodes = int(np.prod((hi - lo + 1).astype(np.float64)))
    if n_nodes > _MAX_NODES:
        raise PolicyError(
            f"the lattice has {n_nodes} nodes, more than {_MAX_NODES}",
            key="hierarchy",
            fix="narrow the quasi-identifiers' min_level/max_level, or use fewer of them",
        )
    if subject_codes is not None:
        return _search_subjects(qis, subject_codes, k=int(k), budget=suppression_budget,
                                max_class_risk=max_class_risk,
                                max_overall_risk=max_overall_risk, model=model, lo=lo, hi=hi,
                                l=None if l is None else int(l), t=t, l_variant=variant, c=c,
                                sensitives=dict(subject_sensitives or {}), loss_kw=loss_kw,
                                blocks=record_blocks)
    measured = named if (l is not None or t is not None) else {}
    # One frequency table per sensitive attribute; their combinations are the same (the same
    # quasi-identifier codes give the same dense ids), only the pairs differ.
    fts = {name: frequency_table(qis, sensitive=values) for name, values in measured.items()}
    ft = next(iter(fts.values())) if fts else frequency_table(qis)
    lat = _Lattice(qis, ft, lo, hi, **loss_kw)
    if loss is not None:
        lat.bound = loss.prepare(ft, lat)
    references = []
    for f in fts.values():
        ref = np.bincount(f.pair_value, weights=f.pair_count, minlength=f.n_values)
        references.append(ref / max(ref.sum(), 1))
    crit = _Criteria(
        k=int(k), l=None if l is None else int(l), l_variant=variant, c=c, t=t,
        max_class_risk=max_class_risk, max_overall_risk=max_overall_risk, release_model=model,
        budget_rows=math.floor(suppression_budget * n_rows + 1e-9), n=ft.n_records,
        n_values=[max(f.n_values, 1) for f in fts.values()], reference=references,
    )
    with_pairs = crit.needs_sensitive
    root = _Node(levels=np.zeros(len(qis), dtype=np.int64), codes=ft.codes.astype(np.int64),
                 sizes=ft.counts)
    if with_pairs:
        root.pairs = [(f.pair_combo, f.pair_value, f.pair_count) for f in fts.values()]
    if (lo > 0).any():
        root = _rollup(root, lo.astype(np.int64), lat, with_pairs)
    cache: list[_Node] = [root]
    cache_levels = root.levels[None, :].copy()

    def evaluate(idx: int):
        nonlocal cache_levels
        levels = lat.nodes[idx].astype(np.int64)
        below = np.flatnonzero((cache_levels <= levels).all(axis=1))
        base = cache[below[np.argmin([len(cache[j].sizes) for j in below])]]
        node = base if (base.levels == levels).all() else _rollup(base, levels, lat, with_pairs)
        if len(cache) < _CACHE:
            cache.append(node)
            cache_levels = np.vstack([cache_levels, levels])
        out = crit.check(node, lat)
        if loss is not None and out.passes:
            out.loss = loss.of(node, out.bad, out.loss, lat)
        return out, node

    best, evaluated, first_fail = _explore(lat, evaluate)
    if best is None:
        _fail(qis, lat, crit, hi, with_pairs, root, first_fail, suppression_budget)

    _, idx, out, node = best
    levels = {q.name: int(v) for q, v in zip(qis, lat.nodes[idx])}
    # Back to rows: classes of the chosen node over the level-0 table, once.
    lv = [int(v) for v in lat.nodes[idx]]
    g = group(ft, qis, lv)
    # The roll-up's class ids differ from `g`'s; match them by the classes' codes.
    bad_key, _ = combine_keys([node.codes[:, i] for i in range(len(qis))],
                              [q.cardinality(v) for q, v in zip(qis, lv)])
    cls_codes = np.zeros((g.n_classes, len(qis)), dtype=np.int64)
    for i, q in enumerate(qis):
        cls_codes[g.combo_class, i] = q.maps[lv[i]][ft.codes[:, i]]
    g_key, _ = combine_keys([cls_codes[:, i] for i in range(len(qis))],
                            [q.cardinality(v) for q, v in zip(qis, lv)])
    g_bad = np.isin(g_key, bad_key[out.bad])
    combo_bad = g_bad[g.combo_class]
    suppressed = combo_bad[ft.row_combo]

    before = _measure_all(fts, ft, qis, [0] * len(qis), None, 0, model, l)
    after, per_sensitive = _measure_all(fts, ft, qis, lv, ~combo_bad, int(suppressed.sum()),
                                        model, l, per_column=True)
    utility = _utility(lat, node, out, lv)
    if loss is not None:
        utility.update(loss.describe(node, out.bad, lat, out.loss))
    limits = dict(k=int(k), l=l, l_variant=variant if l is not None else None, c=c, t=t,
                  max_class_risk=max_class_risk, max_overall_risk=max_overall_risk,
                  suppression_budget=suppression_budget, release_model=model)
    return SearchResult(levels=levels, suppressed=suppressed, before=before, after=after,
                        utility=utility, nodes_evaluated=evaluated, lattice_size=len(lat.nodes),
                        limits=limits, sensitive_after=per_sensitive)


def _measure_all(fts, ft, qis, lv, keep_combo, n_suppressed, model, l, *, per_column=False):
    """The risk report at levels `lv`, with l and t taken over every sensitive attribute: the
    release's l is the smallest of theirs, its t the largest. With `per_column`, also each
    attribute's own l and t, for the manifest."""
    tables = list(fts.items()) or [(None, ft)]
    reports = {}
    for name, f in tables:
        if keep_combo is not None:
            f = restrict(f, keep_combo)
        reports[name] = measure_grouping(f, group(f, qis, lv), qis, lv, n_suppressed=n_suppressed,
                                         release_model=model, recursive_l=int(l or 2))
    first = next(iter(reports.values()))
    if len(reports) > 1:
        def pick(field_name, fn):
            vals = [getattr(r, field_name) for r in reports.values()]
            vals = [v for v in vals if v is not None]
            return fn(vals) if vals else None
        from dataclasses import replace as _replace
        first = _replace(first, l_distinct=pick("l_distinct", min), l_entropy=pick("l_entropy", min),
                         recursive_c=pick("recursive_c", max), t_equal=pick("t_equal", max),
                         t_ordered=pick("t_ordered", max))
    if not per_column:
        return first
    per = {name: {"l_distinct": r.l_distinct, "l_entropy": r.l_entropy,
                  "recursive_c": r.recursive_c, "t_equal": r.t_equal}
           for name, r in reports.items() if name is not None}
    return first, per


def _explore(lat: _Lattice, evaluate) -> tuple[tuple | None, int, str | None]:
    """Find the passing node of least loss, evaluating as few nodes as possible.

    Phase 1 descends greedily from the most general node (which must pass, or nothing does)
    through passing children of smallest bound, to a locally minimal passing node: its loss is
    an upper bound U on the optimum. Phase 2 visits the remaining nodes whose lower bound is
    below U, most general first, so that one failure removes every node below it; each pass
    may lower U and so shrink what is left. A node never evaluated either fails (it lies below
    a failure) or cannot beat U. Ties in loss go to the node first in lattice order.
    Returns ((loss, index, outcome, payload) or None, nodes evaluated, first failure reason)."""
    nodes, bound = lat.nodes, lat.bound
    n_nodes = len(nodes)
    span = (lat.hi - lat.lo + 1).astype(np.int64)
    stride = np.concatenate([np.cumprod(span[::-1])[::-1][1:], [1]]).astype(np.int64)
    status = np.zeros(n_nodes, dtype=np.int8)  # 0 unknown, 1 passes, -1 fails
    best: list = [None]
    evaluated = 0
    reason: list = [None]

    def visit(idx: int) -> bool:
        nonlocal evaluated
        out, payload = evaluate(int(idx))
        evaluated += 1
        if out.passes:
            status[idx] = 1
            cand = (out.loss, int(idx), out, payload)
            b = best[0]
            if b is None or out.loss < b[0] - 1e-12 or (abs(out.loss - b[0]) <= 1e-12 and idx < b[1]):
                best[0] = cand
            return True
        reason[0] = reason[0] or out.reason
        if out.monotone_fail:
            status[(nodes <= nodes[idx]).all(axis=1) & (status == 0)] = -1
        status[idx] = -1
        return False

    current = n_nodes - 1  # the most general node
    if not visit(current):
        return None, evaluated, reason[0]
    while True:
        rel = nodes[current].astype(np.int64) - lat.lo
        children = [current - stride[i] for i in range(lat.q) if rel[i] > 0]
        children.sort(key=lambda j: (bound[j], j))
        moved = False
        for child in children:
            if status[child] == -1:
                continue
            if status[child] == 1 or visit(child):
                current, moved = child, True
                break
        if not moved:
            break
    height = nodes.sum(axis=1, dtype=np.int64)
    for idx in np.lexsort((np.arange(n_nodes), bound, -height)):
        if status[idx] != 0 or bound[idx] > best[0][0] + 1e-12:
            continue
        visit(idx)
    return best[0], evaluated, reason[0]


UTILITY_DEFINITIONS = {
    "loss": "Iyengar's loss: per quasi-identifier, the mean over records of (leaves under the "
            "released label - 1) / (leaves of the hierarchy - 1), a suppressed record counting "
            "1; combined over quasi-identifiers by the aggregate stated",
    "precision": "deidflow: 1 - mean over quasi-identifiers of level / height, over all records, "
                 "a suppressed record counting as fully generalised",
    "precision_arx": "ARX (Sweeney): 1 - mean over quasi-identifiers of level / height, over the "
                     "released records only",
    "discernibility": "sum of squared class sizes, plus n for each suppressed record",
    "average_class_size": "released records / classes",
}


def _utility(lat: _Lattice, node: _Node, out: _Outcome, lv: Sequence[int]) -> dict:
    """Loss (Iyengar), precision as deidflow and as ARX define it, discernibility and AECS of
    the chosen node, each with its definition."""
    sizes = node.sizes
    kept = ~out.bad
    n = lat.n
    heights = np.array([max(q.n_levels - 1, 1) for q in lat.qis], dtype=float)
    gen = float(np.mean(np.asarray(lv) / heights))
    precision = 1.0 - (gen * (n - out.suppressed) + out.suppressed) / max(n, 1)
    per_qi = (sizes[kept] @ lat.class_loss_per_qi(node)[kept] + out.suppressed) / max(n, 1)
    return {
        "metric": "loss",
        "loss": out.loss,
        "loss_aggregate": lat.aggregate_name,
        "loss_arithmetic": float(np.mean(per_qi)),
        "loss_geometric": float(np.exp(np.log1p(per_qi).mean()) - 1.0),
        "loss_per_quasi_identifier": {q.name: float(v) for q, v in zip(lat.qis, per_qi)},
        "precision": precision,
        "precision_arx": 1.0 - gen,
        "discernibility": int((sizes[kept] ** 2).sum() + out.suppressed * n),
        "average_class_size": float(sizes[kept].sum() / max(kept.sum(), 1)),
        "suppressed_rows": int(out.suppressed),
        "classes": int(kept.sum()),
        "definitions": dict(UTILITY_DEFINITIONS),
    }


def _fail(qis, lat, crit, hi, with_pairs, root, reason, budget) -> None:
    """Explain, from the most general node allowed, which limit cannot be met."""
    top = _rollup(root, hi.astype(np.int64), lat, with_pairs)
    out = crit.check(top, lat)
    detail = out.reason or reason or "no node meets the limits"
    raise GateFailed(
        f"no generalisation within the hierarchies' bounds meets the limits: even at the most "
        f"general levels ({', '.join(f'{q.name}={int(v)}' for q, v in zip(qis, hi))}), {detail} "
        f"(k={crit.k}, l={crit.l}, t={crit.t}, overall risk <= {crit.max_overall_risk}, "
        f"suppression budget {budget:.2%})",
        key="limits.max_overall_risk" if _overall_blocks(detail) else "limits",
        fix=_fail_fix(detail, crit.max_overall_risk),
    )


def _overall_blocks(detail: str) -> bool:
    return "overall risk" in detail


def _fail_fix(detail: str, max_overall_risk) -> str:
    """What to change, naming the limit that blocked: the overall-risk limit has its own key,
    which a user cannot guess from 'lower k'."""
    if _overall_blocks(detail):
        return (f"the overall risk limit limits.max_overall_risk ({max_overall_risk}) cannot be "
                "met: raise it if the data-sharing agreement allows (GB/T 42460 uses 0.05 for "
                "public release), raise limits.suppression_budget, or allow higher max_level")
    return ("raise limits.suppression_budget, lower k/l or raise t, allow higher max_level in "
            "the quasi-identifiers' hierarchies, or release to an enclave/controlled model")


def _dense_subjects(subject: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's subject as codes 0..n-1 in order of first appearance (pd.factorize's), and
    n. Codes already in that form (risk.record passes them) are taken as they are: the hash
    over millions of rows is skipped."""
    if subject.dtype.kind in "iu" and len(subject):
        s = subject.astype(np.int64, copy=False)
        seen = np.maximum.accumulate(s)
        if s[0] == 0 and s.min() >= 0 and (np.diff(seen) <= 1).all():
            return s, int(seen[-1]) + 1
    codes, uniques = pd.factorize(pd.Series(subject))
    return codes.astype(np.int64), len(uniques)


def _search_subjects(qis, subject_codes, *, k, budget, max_class_risk, max_overall_risk, model,
                     lo, hi, l, t, l_variant="distinct", c=None, sensitives=None,
                     loss_kw=None, blocks=None) -> SearchResult:
    """Patient-level search: a subject's footprint is the set of its generalised combinations,
    each subject counts once, and suppression removes whole subjects. The lattice is explored
    the same way (`_explore`); a node costs one grouping of the subjects' record signatures
    (`risk.signatures`: each block's part computed once per distinct levels of that block).

    l and t are measured on `sensitives`: one value code per subject (in order of first
    appearance in `subject_codes`), over the subjects' classes."""
    from deidflow.risk.signatures import RecordSignatures

    sensitives = dict(sensitives or {})
    if (l is not None or t is not None) and not sensitives:
        raise PolicyError(
            "l-diversity or t-closeness at patient level needs one sensitive value per subject",
            key="limits",
            fix="mark a subject-table column as sensitive, or drop limits.l/limits.t",
        )
    subject = np.asarray(subject_codes)
    subj_codes, n_subj = _dense_subjects(subject)
    signatures = RecordSignatures(qis, subj_codes, n_subj, blocks)
    # the stacked rows' combinations, put together from the blocks' (no pass over the rows)
    lat = _Lattice(qis, signatures.frequency_table(), lo, hi, **(loss_kw or {}))
    budget_subj = math.floor(budget * n_subj + 1e-9)
    measured = {name: np.asarray(v, dtype=np.int64) for name, v in sensitives.items()} \
        if (l is not None or t is not None) else {}
    references = [np.bincount(v, minlength=int(v.max()) + 1 if len(v) else 1) / max(len(v), 1)
                  for v in measured.values()]
    crit = _Criteria(k=k, l=l, l_variant=l_variant, c=c, t=t,
                     max_class_risk=max_class_risk, max_overall_risk=max_overall_risk,
                     release_model=model, budget_rows=budget_subj, n=n_subj,
                     n_values=[len(r) for r in references], reference=references)

    def subject_pairs(cls: np.ndarray, n_classes: int) -> list:
        out = []
        for v in measured.values():
            nv = int(v.max()) + 1 if len(v) else 1
            key = cls * nv + v
            uniq, counts = np.unique(key, return_counts=True)
            out.append((uniq // nv, uniq % nv, counts.astype(np.int64)))
        return out

    # rows per level-0 code of each quasi-identifier: the loss of a node is then a dot product
    # per quasi-identifier, not a gather over every row for every level
    all_counts = [np.bincount(q.codes, minlength=q.cardinality(0)) for q in qis]

    def evaluate(idx: int):
        lv = [int(v) for v in lat.nodes[idx]]
        cls, sizes = signatures.classes(lv)
        node = _Node(levels=lat.nodes[idx].astype(np.int64),
                     codes=np.zeros((len(sizes), len(qis)), np.int32), sizes=sizes,
                     pairs=subject_pairs(cls, len(sizes)) if measured else [])
        out = crit.check(node, lat)
        if out.passes:
            # Loss over the rows: each kept row's generalisation loss; suppressed rows count 1.
            # The kept rows per level-0 code are all rows' less the suppressed ones' (few).
            bad_rows = np.flatnonzero(out.bad[cls][subj_codes])
            n_bad = len(bad_rows)
            per_qi = []
            for i, q in enumerate(qis):
                lvl = lv[i]
                counts = all_counts[i] if not n_bad else all_counts[i] - np.bincount(
                    q.codes[bad_rows], minlength=q.cardinality(0))
                per_qi.append(float(counts @ lat.loss_of[i][lvl][q.maps[lvl]]) + n_bad)
            out.loss = lat.aggregate(np.array(per_qi) / max(len(subject), 1))
        return out, (cls, sizes)

    best, evaluated, reason = _explore(lat, evaluate)
    if best is None:
        raise GateFailed(
            f"no generalisation within the hierarchies' bounds meets the limits at patient "
            f"level: {reason} (k={k}, suppression budget {budget:.2%} of {n_subj} subjects)",
            key="limits.max_overall_risk" if _overall_blocks(reason or "") else "limits",
            fix=_fail_fix(reason or "", max_overall_risk),
        )
    loss, idx, out, (cls, sizes) = best
    levels = {q.name: int(v) for q, v in zip(qis, lat.nodes[idx])}
    subj_bad = out.bad[cls]
    suppressed = subj_bad[subj_codes]
    _, before_sizes = signatures.classes([0] * len(qis))
    before = report_from_sizes(before_sizes, release_model=model)
    after = report_from_sizes(sizes[~out.bad], n_suppressed=int(subj_bad.sum()),
                              release_model=model)
    kept = ~out.bad
    sensitive_after = {}
    for name, v in measured.items():
        kept_subj = ~subj_bad
        per = pd.DataFrame({"c": cls[kept_subj], "v": v[kept_subj]}).groupby("c")["v"].nunique()
        sensitive_after[name] = {"l_distinct": int(per.min()) if len(per) else None}
    if sensitive_after:
        after = replace(after, l_distinct=min(
            (d["l_distinct"] for d in sensitive_after.values() if d["l_distinct"] is not None),
            default=None))
    utility = {
        "metric": "loss",
        "loss": loss,
        "loss_aggregate": lat.aggregate_name,
        "definitions": {"loss": UTILITY_DEFINITIONS["loss"] + "; over the stacked rows of the "
                        "subjects' records"},
        "discernibility": int((sizes[kept] ** 2).sum() + int(subj_bad.sum()) * n_subj),
        "average_class_size": float(sizes[kept].sum() / max(kept.sum(), 1)),
        "suppressed_subjects": int(subj_bad.sum()),
        "classes": int(kept.sum()),
    }
    return SearchResult(levels=levels, suppressed=suppressed, before=before, after=after,
                        utility=utility, nodes_evaluated=evaluated, lattice_size=len(lat.nodes),
                        limits=dict(k=k, l=l, t=t, max_class_risk=max_class_risk,
                                    max_overall_risk=max_overall_risk, suppression_budget=budget,
                                    release_model=model, unit="subject"),
                        sensitive_after=sensitive_after, signatures=signatures)
