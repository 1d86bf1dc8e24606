"""Hierarchies whose level 0 already merges values (ages of 90 and over are "90+" at every
level): the search and the released labels must work on them, not crash."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.policy import Hierarchy
from deidflow.risk.search import search
from deidflow.techniques.hierarchies import encode_qi, generalise_values


def test_several_ages_over_90_search_and_release():
    ages = pd.Series([91, 97, 101, 90, 50, 51, 52, 53, 54, 55, 56, 57] * 3)
    h = Hierarchy(kind="age")
    q = encode_qi("age", ages, h)
    assert q.cardinality(0) == 9  # 91, 97, 101 and 90 are one value: "90+"
    assert np.array_equal(q.maps[0], np.arange(q.cardinality(0)))
    result = search([q], k=3, suppression_budget=0.0)
    released = generalise_values("age", ages, h, result.levels["age"])
    assert (released[ages >= 90] == "90+").all()
    assert released.value_counts().min() >= 3


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=120), min_size=1, max_size=60))
def test_any_ages_encode_as_a_tree(ages):
    q = encode_qi("age", pd.Series(ages), Hierarchy(kind="age"))
    for lvl in range(q.n_levels):
        # every level is a function of the level-0 label the row got
        frame = pd.DataFrame({"l0": q.decode(0), "l": q.decode(lvl)})
        assert (frame.groupby("l0")["l"].nunique() == 1).all()
    assert (q.decode(0)[np.asarray(ages) >= 90] == "90+").all()
