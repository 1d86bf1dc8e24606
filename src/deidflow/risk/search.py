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
from dataclasses import dataclass, field
from typing import Sequence

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
    subject_classes,
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

    @property
    def n_suppressed(self) -> int:
        return int(self.suppressed.sum())


@dataclass
class _Node:
    """One grouped node: class codes (per QI at the node's levels), sizes, sensitive pairs."""

    levels: np.ndarray
    codes: np.ndarray  # (J, q) int32
    sizes: np.ndarray  # (J,) int64
    pair_class: np.ndarray | None = None
    pair_value: np.ndarray | None = None
    pair_count: np.ndarray | None = None


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

    def __init__(self, qis: Sequence[EncodedQI], ft: FrequencyTable, lo: np.ndarray, hi: np.ndarray):
        self.qis = qis
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
                under = np.bincount(q.maps[lvl], minlength=q.cardinality(lvl))
                loss = (under - 1) / (leaves - 1) if leaves > 1 else np.zeros(len(under))
                per_level.append(loss)
                self.bound_terms[i, lvl] = float(leaf_counts @ loss[q.maps[lvl]])
            self.loss_of.append(per_level)
        grids = np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij")
        self.nodes = np.stack([g.ravel() for g in grids], axis=1).astype(np.int16)
        denom = max(self.n * self.q, 1)
        self.bound = self.bound_terms[np.arange(self.q), self.nodes].sum(axis=1) / denom

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
        n_values = int(base.pair_value.max()) + 1 if len(base.pair_value) else 1
        pkey = cls[base.pair_class] * n_values + base.pair_value
        if J * n_values <= 1 << 24:
            counts = np.bincount(pkey, weights=base.pair_count, minlength=J * n_values)
            present = np.flatnonzero(counts)
            node.pair_class, node.pair_value = present // n_values, present % n_values
            node.pair_count = counts[present].astype(np.int64)
        else:
            uniq, inv = np.unique(pkey, return_inverse=True)
            node.pair_class, node.pair_value = uniq // n_values, uniq % n_values
            node.pair_count = np.bincount(inv, weights=base.pair_count).astype(np.int64)
    return node


class _Criteria:
    """The limits, checked on one grouped node."""

    def __init__(self, *, k, l, l_variant, c, t, max_class_risk, max_overall_risk,
                 release_model, budget_rows, n, n_values, reference):
        self.k = k
        self.min_size = k
        if max_class_risk is not None:  # θ_j = 1/f_j <= max  <=>  f_j >= 1/max
            self.min_size = max(k, math.ceil(1.0 / max_class_risk - 1e-9))
        self.l, self.l_variant, self.c, self.t = l, l_variant, c, t
        self.max_overall_risk = max_overall_risk
        self.public = release_model == "public"
        self.budget_rows = budget_rows
        self.n = n
        self.n_values = n_values
        self.reference = reference

    @property
    def needs_sensitive(self) -> bool:
        return self.l is not None or self.t is not None

    def check(self, node: _Node, lat: _Lattice) -> _Outcome:
        sizes = node.sizes
        bad = sizes < self.min_size
        if self.needs_sensitive:
            ft = FrequencyTable(
                names=(), codes=node.codes, counts=sizes, row_combo=np.zeros(0, np.int64),
                n_records=int(sizes.sum()), pair_combo=node.pair_class,
                pair_value=node.pair_value, pair_count=node.pair_count, n_values=self.n_values,
            )
            g = Grouping(combo_class=np.arange(len(sizes)), sizes=sizes)
            full = self.t is not None or self.l_variant != "distinct"
            prof = sensitive_profile(ft, g, reference=self.reference,
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
        loss = float((sizes[kept] * lat.class_loss(node)[kept]).sum() + suppressed * lat.q)
        return _Outcome(True, False, bad, suppressed, loss / max(self.n * lat.q, 1))

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
    loss=None,
) -> SearchResult:
    """The generalisation levels with the least loss that meet the limits, suppressing whole
    classes up to `suppression_budget` (a share of the rows, or of the subjects when
    `subject_codes` gives each row's subject: a subject with many rows then counts once).

    `loss`: another loss to minimise than Iyengar's (risk/classification.py).

    Raises GateFailed, naming the limit, when no node within the bounds meets the limits."""
    n_rows = check_qis(qis)
    if n_rows == 0:
        raise InputError(
            "there are no rows to search: k-anonymity of an empty table means nothing",
            column=qis[0].name,
            fix="check the extract and the consent gate: no subject was left to release",
        )
    variant = _validate(k, suppression_budget, l, l_variant, c, t, sensitive, max_class_risk,
                        max_overall_risk)
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
                                l=l, t=t)
    ft = frequency_table(qis, sensitive=sensitive)
    lat = _Lattice(qis, ft, lo, hi)
    if loss is not None:
        lat.bound = loss.prepare(ft, lat)
    reference = None
    if ft.has_sensitive:
        reference = np.bincount(ft.pair_value, weights=ft.pair_count, minlength=ft.n_values)
        reference = reference / max(reference.sum(), 1)
    crit = _Criteria(
        k=int(k), l=None if l is None else int(l), l_variant=variant, c=c, t=t,
        max_class_risk=max_class_risk, max_overall_risk=max_overall_risk, release_model=model,
        budget_rows=math.floor(suppression_budget * n_rows + 1e-9), n=ft.n_records,
        n_values=max(ft.n_values, 1), reference=reference,
    )
    with_pairs = crit.needs_sensitive
    root = _Node(levels=np.zeros(len(qis), dtype=np.int64), codes=ft.codes.astype(np.int64),
                 sizes=ft.counts)
    if with_pairs:
        root.pair_class, root.pair_value, root.pair_count = (
            ft.pair_combo, ft.pair_value, ft.pair_count)
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

    before = measure_grouping(ft, group(ft, qis, [0] * len(qis)), qis, [0] * len(qis),
                              release_model=model, recursive_l=int(l or 2))
    kept_ft = restrict(ft, ~combo_bad)
    after = measure_grouping(kept_ft, group(kept_ft, qis, lv), qis, lv,
                             n_suppressed=int(suppressed.sum()), release_model=model,
                             recursive_l=int(l or 2))
    utility = _utility(lat, node, out, lv)
    if loss is not None:
        utility.update(loss.describe(node, out.bad, lat, out.loss))
    limits = dict(k=int(k), l=l, l_variant=variant if l is not None else None, c=c, t=t,
                  max_class_risk=max_class_risk, max_overall_risk=max_overall_risk,
                  suppression_budget=suppression_budget, release_model=model)
    return SearchResult(levels=levels, suppressed=suppressed, before=before, after=after,
                        utility=utility, nodes_evaluated=evaluated, lattice_size=len(lat.nodes),
                        limits=limits)


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


def _utility(lat: _Lattice, node: _Node, out: _Outcome, lv: Sequence[int]) -> dict:
    """Loss (Iyengar), precision (Sweeney), discernibility and AECS of the chosen node, with
    suppressed rows counting as fully generalised."""
    sizes = node.sizes
    kept = ~out.bad
    n = lat.n
    heights = np.array([max(q.n_levels - 1, 1) for q in lat.qis], dtype=float)
    gen = float(np.mean(np.asarray(lv) / heights))
    precision = 1.0 - (gen * (n - out.suppressed) + out.suppressed) / max(n, 1)
    return {
        "metric": "loss",
        "loss": out.loss,
        "precision": precision,
        "discernibility": int((sizes[kept] ** 2).sum() + out.suppressed * n),
        "average_class_size": float(sizes[kept].sum() / max(kept.sum(), 1)),
        "suppressed_rows": int(out.suppressed),
        "classes": int(kept.sum()),
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
        key="limits",
        fix="raise limits.suppression_budget, lower k/l or raise t, allow higher max_level in "
        "the quasi-identifiers' hierarchies, or release to an enclave/controlled model",
    )


def _search_subjects(qis, subject_codes, *, k, budget, max_class_risk, max_overall_risk, model,
                     lo, hi, l, t) -> SearchResult:
    """Patient-level search: a subject's footprint is the set of its generalised combinations,
    each subject counts once, and suppression removes whole subjects. The lattice is explored
    the same way (`_explore`); each node costs one subject grouping over the rows."""
    if l is not None or t is not None:
        raise PolicyError(
            "l-diversity and t-closeness are not measured at patient level",
            key="limits",
            fix="measure l and t on a one-row-per-subject table, or drop limits.l/limits.t",
        )
    subject = np.asarray(subject_codes)
    ft = frequency_table(qis)
    lat = _Lattice(qis, ft, lo, hi)
    subj_codes, subjects = pd.factorize(pd.Series(subject))
    n_subj = len(subjects)
    budget_subj = math.floor(budget * n_subj + 1e-9)
    crit = _Criteria(k=k, l=None, l_variant="distinct", c=None, t=None,
                     max_class_risk=max_class_risk, max_overall_risk=max_overall_risk,
                     release_model=model, budget_rows=budget_subj, n=n_subj, n_values=1,
                     reference=None)
    row_loss = [[lat.loss_of[i][lvl][q.at(lvl)] for lvl in range(q.n_levels)]
                for i, q in enumerate(qis)]

    def evaluate(idx: int):
        levels = {q.name: int(v) for q, v in zip(qis, lat.nodes[idx])}
        cls, sizes = subject_classes(qis, subject, levels)
        node = _Node(levels=lat.nodes[idx].astype(np.int64),
                     codes=np.zeros((len(sizes), len(qis)), np.int32), sizes=sizes)
        out = crit.check(node, lat)
        if out.passes:
            # Loss over the rows: each kept row's generalisation loss; suppressed rows count 1.
            lost = sum(row_loss[i][levels[q.name]] for i, q in enumerate(qis))
            row_bad = out.bad[cls][subj_codes]
            out.loss = float(lost[~row_bad].sum() + row_bad.sum() * lat.q) / max(
                len(subject) * lat.q, 1)
        return out, (cls, sizes)

    best, evaluated, reason = _explore(lat, evaluate)
    if best is None:
        raise GateFailed(
            f"no generalisation within the hierarchies' bounds meets the limits at patient "
            f"level: {reason} (k={k}, suppression budget {budget:.2%} of {n_subj} subjects)",
            key="limits",
            fix="raise limits.suppression_budget, lower k, or allow higher max_level in the "
            "quasi-identifiers' hierarchies",
        )
    loss, idx, out, (cls, sizes) = best
    levels = {q.name: int(v) for q, v in zip(qis, lat.nodes[idx])}
    subj_bad = out.bad[cls]
    suppressed = subj_bad[subj_codes]
    _, before_sizes = subject_classes(qis, subject, None)
    before = report_from_sizes(before_sizes, release_model=model)
    after = report_from_sizes(sizes[~out.bad], n_suppressed=int(subj_bad.sum()),
                              release_model=model)
    kept = ~out.bad
    utility = {
        "metric": "loss",
        "loss": loss,
        "discernibility": int((sizes[kept] ** 2).sum() + int(subj_bad.sum()) * n_subj),
        "average_class_size": float(sizes[kept].sum() / max(kept.sum(), 1)),
        "suppressed_subjects": int(subj_bad.sum()),
        "classes": int(kept.sum()),
    }
    return SearchResult(levels=levels, suppressed=suppressed, before=before, after=after,
                        utility=utility, nodes_evaluated=evaluated, lattice_size=len(lat.nodes),
                        limits=dict(k=k, max_class_risk=max_class_risk,
                                    max_overall_risk=max_overall_risk, suppression_budget=budget,
                                    release_model=model, unit="subject"))
