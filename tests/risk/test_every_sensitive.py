"""l and t hold on every sensitive attribute, as the gate checks them, not on the first only."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.risk.search import search
from tests.risk.helpers import decoded, encode_ints


def _min_distinct(qis, levels, suppressed, values):
    frame = decoded(qis, levels)[~suppressed]
    frame = frame.assign(__s=np.asarray(values)[~suppressed])
    return int(frame.groupby(list(frame.columns[:-1]))["__s"].nunique().min())


def test_second_sensitive_column_forces_generalisation():
    rng = np.random.default_rng(3)
    age = rng.integers(0, 16, 400)
    a = np.arange(400) % 2  # diverse in every class at level 0
    b = age % 2  # one value per level-0 class: only generalising makes it diverse
    qis = [encode_ints("age", age)]
    only_a = search(qis, k=2, suppression_budget=0.0, l=2, sensitives={"a": a})
    both = search(qis, k=2, suppression_budget=0.0, l=2, sensitives={"a": a, "b": b})
    assert only_a.levels["age"] == 0
    assert both.levels["age"] >= 1
    for values in (a, b):
        assert _min_distinct(qis, both.levels, both.suppressed, values) >= 2
    assert both.sensitive_after["b"]["l_distinct"] >= 2
    assert both.after.l_distinct == min(v["l_distinct"] for v in both.sensitive_after.values())


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 3))
def test_every_sensitive_column_meets_l(seed, l):
    rng = np.random.default_rng(seed)
    n = 300
    x, y = rng.integers(0, 8, n), rng.integers(0, 8, n)
    cols = {f"s{i}": rng.integers(0, 2 + i, n) for i in range(3)}
    qis = [encode_ints("x", x), encode_ints("y", y)]
    try:
        res = search(qis, k=3, suppression_budget=0.05, l=l, sensitives=cols)
    except Exception as exc:  # no node meets it: must be the documented failure
        assert type(exc).__name__ == "GateFailed"
        return
    for values in cols.values():
        if (~res.suppressed).any():
            assert _min_distinct(qis, res.levels, res.suppressed, values) >= l


def test_failing_overall_risk_names_its_limit():
    import pytest

    from deidflow.errors import GateFailed

    age = np.arange(200) % 40  # 40 classes of 5 at level 0; at most 2 classes at the top
    qis = [encode_ints("age", age, depth=1)]
    with pytest.raises(GateFailed) as err:
        search(qis, k=1, suppression_budget=0.0, max_overall_risk=0.001,
               release_model="controlled")
    assert err.value.key == "limits.max_overall_risk"
    assert "limits.max_overall_risk" in err.value.fix
