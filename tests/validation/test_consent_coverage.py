"""Every released subject's pseudonym maps to a consented subject of the snapshot."""

from __future__ import annotations

import pandas as pd

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
