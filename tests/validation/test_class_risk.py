"""GB/T 42460 class risk θ = 1/f against the release model's τ, and the overall risk R."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.validation.expectations import (
    ExpectMaxClassRiskToBeAtMost,
    ExpectOverallRiskToBeAtMost,
    class_size_summary,
    overall_risk,
)

from .gxhelp import raised

QI = ["region"]


def table(sizes: list[int]) -> pd.DataFrame:
    rows = [(f"{j}-{i}", f"R{j}") for j, n in enumerate(sizes) for i in range(n)]
    return pd.DataFrame(rows, columns=["pid", "region"])


def max_risk(tau: float) -> ExpectMaxClassRiskToBeAtMost:
    return ExpectMaxClassRiskToBeAtMost(subject_column="pid", quasi_identifiers=QI,
                                        max_class_risk=tau)


def overall(model: str, tau: float, limit: float) -> ExpectOverallRiskToBeAtMost:
    return ExpectOverallRiskToBeAtMost(subject_column="pid", quasi_identifiers=QI,
                                       release_model=model, tau=tau, pr=1.0,
                                       max_overall_risk=limit)


def test_class_risk_fails_when_a_class_is_below_one_over_tau(gx_validate):
    [res] = gx_validate(table([5, 5, 4]), max_risk(1 / 5))
    assert not raised(res)
    assert res.success is False
    assert res.result["observed_value"] == pytest.approx(1 / 4)
    assert res.result["share_of_classes_above"] == pytest.approx(1 / 3)
    expl = ExpectMaxClassRiskToBeAtMost.explain(res.expectation_config.kwargs, res.result, False)
    assert "a class of 4 patients" in expl and "threshold 0.2" in expl


@pytest.mark.parametrize("tau,size", [(1 / 20, 20), (1 / 5, 5), (1 / 3, 3)])
def test_class_risk_passes_at_exactly_one_over_tau(gx_validate, tau, size):
    """τ = 1/20 and a class of 20 must not be split by floating-point rounding."""
    [res] = gx_validate(table([size, size + 1]), max_risk(tau))
    assert res.success is True


def test_overall_risk_is_one_when_any_class_exceeds_tau(gx_validate):
    [res] = gx_validate(table([50, 50, 2]), overall("controlled", 1 / 5, 0.5))
    assert res.success is False
    assert res.result["observed_value"] == 1.0 and res.result["ra"] > 0
    expl = ExpectOverallRiskToBeAtMost.explain(res.expectation_config.kwargs, res.result, False)
    assert "R = 1" in expl and "exceed" in expl


def test_overall_risk_controlled_is_classes_per_subject(gx_validate):
    """Controlled release: R = Rc·pr with Rc = J/n; 2 classes of 20 and 30 → 2/50 = 0.04."""
    [good] = gx_validate(table([20, 30]), overall("controlled", 1 / 5, 0.05))
    assert good.success is True and good.result["observed_value"] == pytest.approx(0.04)
    [bad] = gx_validate(table([10, 10, 10]), overall("controlled", 1 / 5, 0.05))
    assert bad.success is False and bad.result["observed_value"] == pytest.approx(0.1)


def test_overall_risk_public_is_the_largest_class_risk(gx_validate):
    [res] = gx_validate(table([20, 400]), overall("public", 1 / 20, 0.05))
    assert res.success is True and res.result["observed_value"] == pytest.approx(1 / 20)
    [res] = gx_validate(table([25, 400]), overall("public", 1 / 20, 0.03))
    assert res.success is False and res.result["observed_value"] == pytest.approx(1 / 25)


def test_risk_of_an_empty_table_fails_closed(gx_validate):
    empty = pd.DataFrame({"pid": [], "region": []}, dtype="str")
    a, b = gx_validate(empty, max_risk(1 / 5), overall("controlled", 1 / 5, 0.05))
    assert a.success is False and b.success is False


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30),
       st.sampled_from([1 / 20, 1 / 5, 1 / 3]))
def test_summary_matches_the_definitions(sizes, tau):
    s = class_size_summary(np.array(sizes))
    assert s["rb"] == pytest.approx(1 / min(sizes))
    assert s["rc"] == pytest.approx(len(sizes) / sum(sizes))
    above = any(1 / f > tau + 1e-12 for f in sizes)
    r = overall_risk(s, tau, "controlled", 1.0)
    assert r == (1.0 if above else pytest.approx(len(sizes) / sum(sizes)))
    # the risk search's own definition agrees wherever it is importable
    metrics = pytest.importorskip("deidflow.risk.metrics")
    model = {1 / 20: "public", 1 / 5: "controlled", 1 / 3: "enclave"}[tau]
    g = metrics.Gb42460.of(np.array(sizes), model, None)
    assert overall_risk(s, tau, model, 1.0) == pytest.approx(g.r)
