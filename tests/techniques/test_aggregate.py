"""Aggregation with small-cell suppression, attacked as a recipient would: from the published
long table alone (cells and margins), solve every row/column equation with one unknown, then
bound each hidden cell by linear programming. No hidden cell may be recovered."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from deidflow.errors import InputError
from deidflow.techniques.aggregate import TOTAL, small_cell_table


def attack(table: pd.DataFrame, by: list[str]) -> tuple[dict, dict]:
    """What a recipient learns from the published table: values recovered by elimination, and
    (min, max) of each hidden cell over all non-negative tables that agree with it."""
    rows = table[by[0]].astype(object).tolist()
    cols = [tuple(r) for r in table[by[1:]].astype(object).itertuples(index=False)] if len(by) > 1 else [()] * len(table)
    cells = {(r, c): (None if pd.isna(v) else int(v)) for r, c, v in zip(rows, cols, table["count"])}
    tot_c = tuple([TOTAL] * (len(by) - 1))
    lines = []  # (members, margin)
    rlabels = {r for r, _ in cells if r != TOTAL}
    clabels = {c for _, c in cells if c != tot_c}
    if len(by) == 1:
        lines.append(([(r, ()) for r in rlabels], (TOTAL, ())))
    else:
        for r in rlabels | {TOTAL}:
            lines.append(([(r, c) for c in clabels if (r, c) in cells], (r, tot_c)))
        for c in clabels | {tot_c}:
            lines.append(([(r, c) for r in rlabels if (r, c) in cells], (TOTAL, c)))
    known = {k: v for k, v in cells.items() if v is not None}
    hidden = [k for k, v in cells.items() if v is None]
    recovered = {}
    changed = True
    while changed:  # elimination: a line with one unknown gives it away
        changed = False
        for members, margin in lines:
            unknown = [m for m in members + [margin] if m not in known]
            if len(unknown) == 1:
                u = unknown[0]
                s = sum(known[m] for m in members if m in known)
                known[u] = s - known[margin] if u not in members else known[margin] - s
                recovered[u] = known[u]
                changed = True
    bounds = {}
    if hidden:
        idx = {h: i for i, h in enumerate(hidden)}
        a_eq, b_eq = [], []
        for members, margin in lines:
            coef = np.zeros(len(hidden))
            rhs = 0.0
            for m, sign in [(m, 1) for m in members] + [(margin, -1)]:
                if m in idx:
                    coef[idx[m]] += sign
                else:
                    rhs -= sign * cells[m]
            if coef.any():
                a_eq.append(coef)
                b_eq.append(rhs)
        for h, i in idx.items():
            c = np.zeros(len(hidden))
            c[i] = 1
            lo = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=(0, None)).fun
            top = linprog(-c, A_eq=a_eq, b_eq=b_eq, bounds=(0, None))
            hi = np.inf if top.status == 3 else -top.fun  # 3: unbounded (no margin binds it)
            bounds[h] = (lo, hi)
    return recovered, bounds


def counts_frame(matrix: np.ndarray) -> pd.DataFrame:
    """Rows of a record table whose cross-tab of (a, b) is `matrix`."""
    a, b = np.nonzero(matrix)
    reps = matrix[a, b]
    return pd.DataFrame({"a": np.repeat([f"r{i}" for i in a], reps), "b": np.repeat([f"c{j}" for j in b], reps)})


def test_hidden_cell_cannot_be_recovered_from_margins():
    m = np.array([[20, 3, 15], [12, 30, 9], [7, 8, 25]])
    table, summary = small_cell_table(counts_frame(m), ["a", "b"], 5)
    assert summary["groups"] == 9 and summary["suppressed_primary"] == 1 and summary["threshold"] == 5
    assert summary["suppressed_complementary"] >= 3  # a hidden rectangle at the least
    assert table["count"].isna().sum() == 1 + summary["suppressed_complementary"] == summary["suppressed_cells"]
    assert summary["cells"] == len(table) == 9 + 3 + 3 + 1
    hidden = table.loc[table["count"].isna(), ["a", "b"]].apply(tuple, axis=1).tolist()
    assert ("r0", "c1") in hidden
    recovered, bounds = attack(table, ["a", "b"])
    assert recovered == {}
    lo, hi = bounds[("r0", ("c1",))]
    assert hi - lo >= 1  # the small cell is not pinned down
    # the margins are all published and right
    assert table.loc[(table["a"] == TOTAL) & (table["b"] == TOTAL), "count"].item() == m.sum()


def test_without_complementary_suppression_the_attack_works():
    """The attack is real: with only the primary cell hidden it recovers it exactly."""
    m = np.array([[20, 3, 15], [12, 30, 9]])
    table, _ = small_cell_table(counts_frame(m), ["a", "b"], 5)
    truth = {(f"r{i}", f"c{j}"): m[i, j] for i in range(2) for j in range(3)}
    truth |= {(f"r{i}", TOTAL): m[i].sum() for i in range(2)}
    truth |= {(TOTAL, f"c{j}"): m[:, j].sum() for j in range(3)} | {(TOTAL, TOTAL): m.sum()}
    naive = table[["a", "b"]].copy()
    naive["count"] = [pd.NA if k == ("r0", "c1") else truth[k] for k in zip(table["a"], table["b"])]
    recovered, _ = attack(naive, ["a", "b"])
    assert recovered == {("r0", ("c1",)): 3}


def test_one_dimensional_with_total():
    f = pd.DataFrame({"dept": ["A"] * 40 + ["B"] * 2 + ["C"] * 9 + ["D"] * 30})
    table, summary = small_cell_table(f, ["dept"], 5)
    assert summary["suppressed_primary"] == 1 and summary["suppressed_complementary"] == 1
    assert table.set_index("dept")["count"].isna().to_dict() == {"A": False, "B": True, "C": True, "D": False, TOTAL: False}
    recovered, bounds = attack(table, ["dept"])
    assert recovered == {} and bounds[("B", ())][1] - bounds[("B", ())][0] >= 1
    big, s = small_cell_table(pd.DataFrame({"x": ["a"] * 5 + ["b"] * 7}), ["x"], 5)
    assert s["suppressed_primary"] == 0 and big["count"].tolist() == [5, 7, 12]


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 5).flatmap(lambda r: st.integers(2, 5).flatmap(
    lambda c: st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 8, 13, 40]), min_size=r * c, max_size=r * c).map(
        lambda v: np.array(v).reshape(r, c)))), st.integers(2, 10))
def test_no_hidden_cell_is_ever_pinned_down(m, threshold):
    if m.sum() == 0:
        return
    table, summary = small_cell_table(counts_frame(m), ["a", "b"], threshold)
    recovered, bounds = attack(table, ["a", "b"])
    assert recovered == {}
    for lo, hi in bounds.values():
        assert hi - lo > 1e-6
    # every published count is the true count; every true small count is hidden
    truth = counts_frame(m).groupby(["a", "b"]).size()
    inner = table[(table["a"] != TOTAL) & (table["b"] != TOTAL)].set_index(["a", "b"])["count"]
    shown = inner.dropna()
    assert (shown == truth[shown.index]).all()
    assert not ((shown > 0) & (shown < threshold)).any()
    assert summary["suppressed_primary"] >= int(((truth > 0) & (truth < threshold)).sum())
    assert summary["groups"] == int((m > 0).sum())


def test_three_columns_and_nulls_are_groups():
    f = pd.DataFrame({"a": ["x"] * 10 + ["y"] * 10, "b": ["p", None] * 10, "c": ["u"] * 20})
    table, summary = small_cell_table(f, ["a", "b", "c"], 5)
    assert summary["groups"] == 4 and summary["suppressed_primary"] == 0
    assert table["b"].isna().sum() == 3  # (x, NA), (y, NA) and the column total for NA


def test_bad_input_refused():
    f = pd.DataFrame({"a": ["x", TOTAL]})
    with pytest.raises(InputError, match="'b'"):
        small_cell_table(f, ["b"], 5)
    with pytest.raises(InputError, match="totals"):
        small_cell_table(f, ["a"], 5)
    with pytest.raises(InputError, match="small_cell"):
        small_cell_table(f, ["a"], 0)


def test_tables_too_large_to_audit_say_so():
    """Every cell is 1: all are hidden; the table is too large for the SVD audit, and the
    summary says so instead of claiming an audit that did not run."""
    grid = pd.DataFrame({"a": np.repeat([f"r{i}" for i in range(300)], 300), "b": np.tile([f"c{j}" for j in range(300)], 300)})
    table, summary = small_cell_table(grid, ["a", "b"], 5)
    assert summary.get("audited") is False
    inner = table[(table["a"] != TOTAL) & (table["b"] != TOTAL)]
    assert inner["count"].isna().all()
    small, s = small_cell_table(grid.iloc[:90], ["a", "b"], 5)
    assert "audited" not in s


def test_audit_catches_what_the_classic_rule_leaves_pinned():
    """In this table the one-hidden-cell-per-line rule alone leaves a hidden cell that the
    published cells and margins determine (found by random search: ~1 % of small tables); the
    linear-algebra audit hides more until the attacker learns nothing."""
    from deidflow.techniques import aggregate as agg

    inner = np.array([[0, 40, 5], [0, 0, 40], [40, 1, 40]])
    m = np.zeros((4, 4), dtype=np.int64)
    m[:3, :3] = inner
    m[:3, 3] = inner.sum(axis=1)
    m[3] = m[:3].sum(axis=0)
    classic = (m > 0) & (m < 5)
    while agg._hide_singletons(m, classic, (1, 0)):
        pass
    assert len(agg._determined(m, classic, True)) > 0  # the classic rule alone leaks
    hidden, primary, audited = agg._suppress(m, 5, True)
    assert audited and primary == 1 and (hidden >= classic).all() and hidden.sum() > classic.sum()
    assert len(agg._determined(m, hidden, True)) == 0
    table, _ = small_cell_table(counts_frame(inner), ["a", "b"], 5)
    recovered, bounds = attack(table, ["a", "b"])
    assert recovered == {} and all(hi - lo > 1e-6 for lo, hi in bounds.values())
