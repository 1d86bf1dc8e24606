"""Every released subject's pseudonym maps to a consented subject of the snapshot."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.validation.expectations import ExpectSubjectsToBeConsented, runtime_set

from .gxhelp import raised

CONSENTED = ["Pa1", "Pb2", "Pc3"]


def check(gx_validate, subjects: list, consented=CONSENTED):
    df = pd.DataFrame({"patient_id": subjects, "x": range(len(subjects))})
    with runtime_set(consented) as ref:
        [res] = gx_validate(df, ExpectSubjectsToBeConsented(
            subject_column="patient_id", consented_ref=ref, n_consented=len(consented)))
    assert not raised(res), res.exception_info
    return res


def test_all_consented_passes(gx_validate):
    res = check(gx_validate, ["Pa1", "Pb2", "Pa1", "Pc3"])  # rows, not subjects, repeat
    assert res.success is True
    assert res.result == {"observed_value": 0, "n_subjects": 3}


def test_unconsented_pseudonym_fails(gx_validate):
    res = check(gx_validate, ["Pa1", "Pb2", "Pzz", "Pzz"])
    assert res.success is False
    assert res.result == {"observed_value": 1, "n_subjects": 3}
    expl = ExpectSubjectsToBeConsented.explain(res.expectation_config.kwargs, res.result, False)
    assert expl.startswith("consent coverage: 1 of 3 released subject(s)")
    assert "Pzz" not in expl


def test_missing_subject_counts_as_unconsented(gx_validate):
    assert check(gx_validate, ["Pa1", None]).success is False


def test_empty_snapshot_consents_nobody(gx_validate):
    assert check(gx_validate, ["Pa1"], consented=[]).success is False


def test_pseudonyms_stay_out_of_the_suite():
    """Only a reference goes into the expectation's configuration."""
    with runtime_set(CONSENTED) as ref:
        exp = ExpectSubjectsToBeConsented(subject_column="patient_id", consented_ref=ref,
                                          n_consented=3)
        text = str(exp.configuration.to_json_dict())
    assert ref in text and not any(p in text for p in CONSENTED)


_SUBJECT = st.one_of(st.none(), st.sampled_from(["Pa1", "Pb2", "Pc3", "", "张伟"]))


@settings(max_examples=80, deadline=None)
@given(st.lists(_SUBJECT, max_size=30), st.integers(0, 30), st.booleans())
def test_distinct_values_are_the_distinct_values(values, cut, collide):
    """Runs cut short and a hash check give exactly the distinct values (a missing one once),
    chunked or not, with repeats in runs or scattered, even when every hash collides."""
    import numpy as np
    import pyarrow as pa

    import deidflow.validation.sets as dx

    arr = pa.array(values, type=pa.string())
    arr = pa.chunked_array([arr.slice(0, cut), arr.slice(cut)], type=pa.string())
    real = dx._hash64
    try:
        if collide:
            dx._hash64 = lambda a: np.zeros(len(a), dtype=np.uint64)
        got = dx.distinct_values(arr).to_pylist()
    finally:
        dx._hash64 = real
    assert len(got) == len(set(values)) and set(got) == set(values)
