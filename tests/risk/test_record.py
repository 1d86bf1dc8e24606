"""Risk over the subject's whole record: the subject row plus, per child table, the set of
their rows' quasi-identifier combinations. Checked against an independent pandas
re-computation of k over the record."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.policy import Hierarchy
from deidflow.risk.limits import RiskLimits
from deidflow.risk.record import record_search
from deidflow.techniques.hierarchies import encode_qi, generalise_values
from tests.datasets.helpers import recheck_k

HIER = {("patients", "sex"): Hierarchy(kind="mask"),
        ("patients", "age"): Hierarchy(kind="age"),
        ("encounters", "age"): Hierarchy(kind="interval", widths=[10, 20, 40]),
        ("encounters", "source"): Hierarchy(kind="mask")}


def _limits(k, l=None, sensitive=()):
    return RiskLimits(k=k, l=l, l_variant="distinct", c=None, t=None, max_class_risk=1.0,
                      max_overall_risk=1.0, suppression_budget=0.1,
                      release_model="enclave", quasi_identifiers=("sex", "age"),
                      sensitive_columns=tuple(sensitive))


def _cohort(seed, n=300):
    rng = np.random.default_rng(seed)
    pid = [f"P{i:04d}" for i in range(n)]
    patients = pd.DataFrame({"pid": pid, "sex": rng.choice(["F", "M"], n),
                             "age": rng.integers(20, 40, n).astype(str),
                             "outcome": rng.choice(["a", "b", "c"], n)})
    visits = rng.integers(1, 4, n)
    enc = pd.DataFrame({"pid": np.repeat(pid, visits)})
    enc["age"] = rng.integers(20, 80, len(enc)).astype(str)
    enc["source"] = rng.choice(["11", "12", "21", "22"], len(enc))
    return patients, enc


def _release(patients, enc, res):
    bad = set(res.suppressed_subjects)
    p = patients[~patients["pid"].isin(bad)].copy()
    e = enc[~enc["pid"].isin(bad)].copy()
    for col in ("sex", "age"):
        p[col] = generalise_values(col, p[col], HIER[("patients", col)], res.levels.get(col, 0))
    for col in ("age", "source"):
        e[col] = generalise_values(col, e[col], HIER[("encounters", col)],
                                   res.levels.get(f"encounters.{col}", 0))
    return p, e


def _search(patients, enc, limits):
    return record_search(
        {"patients": patients, "encounters": enc}, {"patients": "pid", "encounters": "pid"},
        "patients", {"patients": ["sex", "age"], "encounters": ["age", "source"]},
        lambda t, c, v: encode_qi(c, v, HIER[(t, c)]), limits,
        {"sex": (0, 1), "age": (0, 4), "encounters.age": (0, 4), "encounters.source": (0, 2)})


def test_child_table_quasi_identifiers_are_generalised_until_the_record_is_k_anonymous():
    patients, enc = _cohort(1)
    res = _search(patients, enc, _limits(5))
    p, e = _release(patients, enc, res)
    assert recheck_k(p, "pid", ["sex", "age"], [(e, ["age", "source"])]) >= 5
    # the child table's quasi-identifiers had to be generalised, not only the patients'
    assert res.levels["encounters.age"] + res.levels["encounters.source"] > 0
    assert res.after.k >= 5
    assert set(res.by_table) == {"patients", "encounters"}
    # before the search the encounter sets alone made most records unique
    assert res.before.k == 1


def test_l_over_record_classes():
    patients, enc = _cohort(2)
    res = _search(patients, enc, _limits(4, l=2, sensitive=("outcome",)))
    p, e = _release(patients, enc, res)
    rec = p.set_index("pid")[["sex", "age"]].astype(str).agg("|".join, axis=1)
    sets = (e.drop_duplicates().assign(c=lambda d: d["age"] + "/" + d["source"])
            .groupby("pid")["c"].apply(lambda s: ";".join(sorted(s))))
    key = rec + "#" + sets.reindex(rec.index).fillna("")
    per_class = p.set_index("pid")["outcome"].groupby(key).nunique()
    assert per_class.min() >= 2
    assert res.sensitive_after["outcome"]["l_distinct"] >= 2


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 1000), st.integers(2, 6))
def test_record_k_holds_for_any_cohort(seed, k):
    patients, enc = _cohort(seed, n=200)
    try:
        res = _search(patients, enc, _limits(k))
    except Exception as exc:
        assert type(exc).__name__ == "GateFailed"
        return
    p, e = _release(patients, enc, res)
    if len(p):
        assert recheck_k(p, "pid", ["sex", "age"], [(e, ["age", "source"])]) >= k
