"""The utility figures on small tables checked by hand: precision, non-uniform entropy,
distributions that withhold small cells, group shares and the flag rule, the classification
loss and what the search does with it, and a model that cannot change when nothing changes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.risk.classification import ClassificationLoss
from deidflow.risk.search import search
from deidflow.utility import groups as grp
from deidflow.utility import measures as ms
from deidflow.utility.model import compare_models
from risk.helpers import encode_ints


def test_precision_by_hand():
    # level 1 of a hierarchy of top level 3, 10 consented records of which 2 suppressed
    released, with_sup = ms.precision(1, 3, 10, 2)
    assert released == pytest.approx(1 - 1 / 3)
    assert with_sup == pytest.approx(1 - (8 * (1 / 3) + 2) / 10)  # 0.5333…
    assert ms.precision(0, 3, 10, 0) == (1.0, 1.0)
    assert ms.precision(3, 3, 10, 0) == (0.0, 0.0)


def test_non_uniform_entropy_by_hand():
    # a, a, b, c with a and b released as X, c as Y: f(a)=2, f(b)=1, f(c)=1, f(X)=3, f(Y)=1
    original = pd.Series(["a", "a", "b", "c"])
    gen = pd.Series(["X", "X", "X", "Y"])
    lost, most = ms.nue_per_record(original, gen, np.array([True, True, True, True]))
    assert lost == pytest.approx([math.log2(3 / 2), math.log2(3 / 2), math.log2(3), 0.0])
    # the most a record can lose is log2(N / f(x)); summed it is N times the column's entropy
    assert most == pytest.approx([1.0, 1.0, 2.0, 2.0])
    assert most.sum() == pytest.approx(4 * ms.entropy_bits(original))
    # suppressing c costs log2(N / f(c)) = 2 bits instead of 0
    lost, _ = ms.nue_per_record(original, gen, np.array([True, True, True, False]))
    assert lost[3] == pytest.approx(2.0)
    # nothing generalised, nothing suppressed: nothing lost
    lost, _ = ms.nue_per_record(original, original, np.ones(4, bool))
    assert lost.sum() == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=2, max_size=60), st.integers(1, 4), st.data())
def test_nue_is_between_nothing_and_everything(values, width, data):
    original = pd.Series(values).astype(str)
    gen = pd.Series([str(v // width) for v in values])
    released = np.array(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))))
    lost, most = ms.nue_per_record(original, gen, released)
    assert (lost >= -1e-12).all() and (lost <= most + 1e-12).all()


def test_distributions_withhold_small_cells_and_extremes():
    values = pd.Series(["A"] * 20 + ["B"] * 7 + ["C"] * 3 + ["D"] * 1)
    h = ms.categorical_histogram(ms.as_text(values), small_cell=5)
    assert h.labels == ["A", "B", "other"] and h.counts == [20, 7, None]  # C + D = 4 < 5: withheld
    ages = pd.Series(list(range(20, 80)) * 3 + [104])  # one centenarian
    hb, ha, tvd = ms.before_after(ages, ages, small_cell=5)
    assert not any("104" in label for label in hb.labels)  # no extreme value is printed
    assert hb == ha and tvd == 0.0
    assert sum(c for c in hb.counts if c) <= len(ages)


def test_total_variation_of_suppression():
    before = pd.Series(["x"] * 6 + ["y"] * 4)
    after = pd.Series(["x"] * 6)  # every y suppressed
    _, _, tvd = ms.before_after(before, after, small_cell=1)
    assert tvd == pytest.approx(0.4)



def test_dates_are_fractional_years_without_a_deprecation(recwarn):
    # 1 January is the year itself, 31 December 2021 is 364/365.25 of the year later; the
    # day of year is read through the accessor pandas keeps (dt.dayofyear warns in pandas 3)
    days = pd.date_range("2020-01-01", periods=30, freq="13D").strftime("%Y-%m-%d").tolist()
    values = pd.Series(days + ["2021-12-31", None], dtype="string")
    num = ms.numeric(values)
    assert num.iloc[0] == pytest.approx(2020.0)
    assert num.iloc[1] == pytest.approx(2020 + 13 / 365.25)
    assert num.iloc[30] == pytest.approx(2021 + 364 / 365.25)
    assert math.isnan(num.iloc[31])
    assert not [w for w in recwarn if "dayofyear" in str(w.message)]

def test_group_shares_and_flag_by_hand():
    labels = pd.Series(["A"] * 5 + ["B"] * 20 + ["C"] * 3)
    suppressed = np.array([1, 1, 1, 1, 0] + [1] + [0] * 19 + [0, 0, 0], dtype=bool)
    loss = np.where(suppressed, 1.0, 0.1)
    rows = {r.label: r for r in grp.breakdown(labels, suppressed, loss, small_cell=5)}
    # overall 5/28; A 4/5 = 0.8 (>= twice and 1 point above: flagged); B 1/20 = 0.05
    assert rows["A"].subjects == 5 and rows["A"].suppressed_share == pytest.approx(0.8)
    assert rows["A"].flag_suppression and rows["A"].flag_loss
    assert rows["B"].suppressed_share == pytest.approx(0.05) and not rows["B"].flag_suppression
    assert rows["B"].loss == pytest.approx((1.0 + 19 * 0.1) / 20)
    assert set(rows) == {"A", "B"}  # C (3 subjects) pooled as "other", itself a small cell: withheld


def test_flag_rule_needs_both_ratio_and_margin():
    assert not grp.flagged(0.002, 0.001)  # twice, but 0.1 point
    assert not grp.flagged(0.05, 0.03)  # 2 points, but not twice
    assert grp.flagged(0.06, 0.03)


def test_group_labels_band_ages_and_provinces():
    from datetime import date

    ages = grp.group_labels(pd.Series(["34", "39", "40", "95", None]), "age band", date(2026, 1, 1))
    assert ages.tolist() == ["30–39", "30–39", "40–49", "90+", "missing"]
    born = grp.group_labels(pd.Series(["1990-06-01", "1930-01-01"]), "age band", date(2026, 1, 1))
    assert born.tolist() == ["30–39", "90+"]
    regions = grp.group_labels(pd.Series(["310101", "110105"]), "region", date(2026, 1, 1), "region")
    assert regions.tolist() == ["31xxxx", "11xxxx"]


# --- the classification loss ------------------------------------------------------------------


def _two_qis():
    # B (noise) first, A second; the target is A's parity, so only A predicts it.
    a = np.repeat(np.arange(4), 4)
    b = np.tile(np.arange(4), 4)
    target = a % 2
    return [encode_ints("B", b, depth=1), encode_ints("A", a, depth=1)], target


def test_classification_loss_by_hand():
    qis, target = _two_qis()
    default = search(qis, k=2, suppression_budget=0.0)
    # Iyengar's loss ties the two single generalisations; the lattice order picks A's, which
    # merges A=0 (even) with A=1 (odd): every class is a 1-1 tie, every record costs 1.
    assert default.levels == {"B": 0, "A": 1}
    loss = ClassificationLoss(target, "parity")
    chosen = search(qis, k=2, suppression_budget=0.0, loss=loss)
    assert chosen.levels == {"B": 1, "A": 0}
    assert chosen.utility["metric"] == "classification"
    assert chosen.utility["classification_loss"] == 0.0
    forced = search(qis, k=2, suppression_budget=0.0, loss=ClassificationLoss(target, "parity"),
                    level_bounds={"B": (0, 0)})
    assert forced.levels == {"B": 0, "A": 1}
    assert forced.utility["classification_loss"] == 1.0


def test_classification_loss_counts_minority_and_suppressed():
    # one QI, classes at level 0: {0: labels 1,1,0}, {1: labels 0,0}; level 1 merges them
    v = np.array([0, 0, 0, 1, 1])
    labels = np.array([1, 1, 0, 0, 0])
    q = encode_ints("v", v, depth=1)
    level0 = search([q], k=1, suppression_budget=0.0, loss=ClassificationLoss(labels))
    assert level0.levels == {"v": 0}
    assert level0.utility["classification_loss"] == pytest.approx(1 / 5)  # one minority record
    top = search([q], k=1, suppression_budget=0.0, loss=ClassificationLoss(labels),
                 level_bounds={"v": (1, 1)})
    assert top.utility["classification_loss"] == pytest.approx(2 / 5)  # majority 0 of 3:2
    # k=3 at level 0: class {1} (2 records) is suppressed and costs 2; class {0} costs 1
    sup = search([q], k=3, suppression_budget=0.5, loss=ClassificationLoss(labels),
                 level_bounds={"v": (0, 0)})
    assert sup.n_suppressed == 2
    assert sup.utility["classification_loss"] == pytest.approx(3 / 5)


# --- the model ----------------------------------------------------------------------------


def _cohort(n: int = 600, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 90, n)
    sex = rng.choice(["F", "M"], n)
    score = rng.normal(0, 1, n) + (age - 55) / 15 + (sex == "F") * 0.8
    return pd.DataFrame({"age": age.astype(str), "sex": sex,
                         "outcome": np.where(score > 0.3, "yes", "no")})


def test_model_unchanged_when_nothing_is_generalised():
    frame = _cohort()
    scores = compare_models(frame, frame.copy(), "outcome", np.ones(len(frame), bool), sample=50_000)
    assert scores is not None and not scores.sampled
    assert scores.accuracy_original > 0.7  # the model learns something
    assert scores.accuracy_released == scores.accuracy_original
    assert scores.auc_released == scores.auc_original
    assert scores.train_released == scores.train_original


def test_model_loses_when_the_predictor_is_removed():
    frame = _cohort()
    blind = frame.assign(age="*", sex="*")
    scores = compare_models(frame, blind, "outcome", np.ones(len(frame), bool), sample=50_000)
    assert scores.accuracy_released < scores.accuracy_original - 0.1
    assert scores.auc_released == pytest.approx(0.5)


def test_model_samples_large_cohorts():
    frame = _cohort(4000)
    scores = compare_models(frame, frame.copy(), "outcome", np.ones(len(frame), bool), sample=1000)
    assert scores.sampled and scores.train_original == 1000 and scores.test == 250


def _reference_cm(qis, levels, labels) -> float:
    """ARX's classification metric by pandas groupby, sharing no code with deidflow.risk."""
    frame = pd.DataFrame({q.name: q.decode(levels[q.name]) for q in qis}).assign(__t=labels)
    cost = 0
    for _, g in frame.groupby([q.name for q in qis]):
        counts = g["__t"].value_counts().to_numpy()
        tie = len(counts) > 1 and counts[0] == counts[1]
        cost += len(g) if tie else len(g) - counts[0]
    return cost / len(frame)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_classification_loss_matches_a_groupby(data):
    n = data.draw(st.integers(4, 80))
    a = np.array(data.draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)))
    b = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    labels = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    qis = [encode_ints("a", a, depth=2), encode_ints("b", b, depth=1)]
    la = data.draw(st.integers(0, 2))
    lb = data.draw(st.integers(0, 1))
    result = search(qis, k=1, suppression_budget=0.0, loss=ClassificationLoss(labels),
                    level_bounds={"a": (la, la), "b": (lb, lb)})
    expected = _reference_cm(qis, {"a": la, "b": lb}, labels)
    assert result.utility["classification_loss"] == pytest.approx(expected)
    assert 0.0 <= expected <= 1.0
