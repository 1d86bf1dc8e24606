"""Randomisation: keyed, reproducible noise that differs per recipient with the stated spread;
microaggregation groups of at least k (property); parameters recorded and checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.errors import InputError, KeyCustodyError, PolicyError
from deidflow.techniques import registry
from deidflow.techniques.randomise import microaggregate

from .helpers import MASTER, col, ctx, ring


def test_noise_reproducible_per_recipient_with_stated_spread():
    tech = registry.get("noise")
    spec = col("sensitive", "noise", {"scale": 2.0})
    tech.check("value", spec)
    x = pd.Series(np.linspace(0, 100, 20_000))
    a = tech.apply(x, spec, ctx(x, column="value", keyring=ring()))
    b = tech.apply(x, spec, ctx(x, column="value", keyring=ring()))
    other = tech.apply(x, spec, ctx(x, column="value", keyring=ring(recipient="rcp-b")))
    assert (a == b).all() and not np.allclose(a, other)
    noise = a - x
    assert abs(noise.mean()) < 0.1 and 1.9 < noise.std() < 2.1
    with pytest.raises(KeyCustodyError):
        tech.apply(x, spec, ctx(x))


def test_noise_relative_scale_recorded_without_seed():
    tech = registry.get("noise")
    spec = col("sensitive", "noise", {"relative_scale": 0.5, "decimals": 1, "distribution": "laplace"})
    x = pd.Series([1.0, 2.0, 3.0, None, 5.0])
    c = ctx(x, keyring=ring(), frame=pd.DataFrame({"c": x}))
    out = tech.apply(x, spec, c)
    assert pd.isna(out[3]) and (out.dropna() == out.dropna().round(1)).all()
    d = tech.describe(spec, c)
    assert d["effective_scale"] == pytest.approx(0.5 * x.std())
    assert MASTER.hex() not in repr(d) and c.counts["cells_noised"] == 4
    with pytest.raises(InputError, match="not numbers"):
        tech.apply(pd.Series(["1", "x"]), spec, ctx(pd.Series(["1", "x"]), keyring=ring()))


@pytest.mark.parametrize(
    "params, fragment",
    [({}, "exactly one"), ({"scale": 1, "relative_scale": 0.1}, "exactly one"),
     ({"scale": -1}, "params.scale"), ({"scale": 1, "distribution": "uniform"}, "params.distribution"),
     ({"scale": 1, "decimals": 20}, "params.decimals")],
)
def test_noise_check_names_the_column(params, fragment):
    with pytest.raises(PolicyError) as exc:
        registry.get("noise").check("value", col("sensitive", "noise", params))
    assert "value" in str(exc.value) and fragment in str(exc.value)


@settings(max_examples=80, deadline=None)
@given(xs=st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=3, max_size=80),
       k=st.integers(2, 6))
def test_microaggregation_groups_have_at_least_k(xs, k):
    s = pd.Series(xs, dtype="Float64")
    n = int(s.notna().sum())
    out = microaggregate(s, k)
    assert (out.isna() == s.isna()).all()
    if n >= k:
        # each released value is the mean of the original values it replaced
        grp = pd.DataFrame({"x": s.dropna().to_numpy(dtype=float), "m": out.dropna().to_numpy()})
        groups = grp.groupby("m")["x"]
        assert np.allclose(groups.mean().to_numpy(), groups.mean().index.to_numpy(), rtol=1e-9, atol=1e-6)
        assert grp.groupby("m").size().min() >= k


def test_microaggregate_technique_checks_and_counts():
    tech = registry.get("microaggregate")
    spec = col("sensitive", "microaggregate", {"k": 3, "stat": "median"})
    tech.check("bmi", spec)
    s = pd.Series([1, 2, 3, 10, 11, 12, 13])
    c = ctx(s)
    out = tech.apply(s, spec, c)
    assert out.tolist() == [2, 2, 2, 11.5, 11.5, 11.5, 11.5] and c.counts["cells_microaggregated"] == 7
    assert tech.describe(spec, c)["params"] == {"k": 3, "stat": "median"}
    with pytest.raises(InputError, match="k=3"):
        tech.apply(s.iloc[:2], spec, ctx(s.iloc[:2]))
    for params in ({"k": 1}, {"stat": "mode"}):
        with pytest.raises(PolicyError, match="'bmi'"):
            tech.check("bmi", col("sensitive", "microaggregate", params))
