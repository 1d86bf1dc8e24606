"""Event dates that would narrow a birth date below its released level are withheld: every
event date left has a true date (shifted date - max_days at the earliest) after the end of
the subject's released birth interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.policy import parse_policy
from deidflow.risk.birth_dates import interval_end, protect_birth_dates
from tests.integration.conftest import EXAMPLE_POLICY

POLICY = parse_policy(EXAMPLE_POLICY.read_text(encoding="utf-8"))  # birth_date: date QI


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.dates(pd.Timestamp("1990-01-01").date(), pd.Timestamp("2024-12-31").date()),
                          st.integers(-400, 4000)), min_size=1, max_size=30),
       st.sampled_from([1, 2, 3, 4]))
def test_no_released_event_falls_in_the_birth_interval(rows, level):
    births = pd.Series([str(b) for b, _ in rows], index=[f"S{i}" for i in range(len(rows))])
    events = [str((pd.Timestamp(b) + pd.Timedelta(days=d)).date()) for b, d in rows]
    released = pd.DataFrame({"admit_date": pd.array(events, dtype="string")})
    ids = pd.Series(births.index)
    protect_birth_dates(released, ids, POLICY.tables["encounters"], POLICY,
                        {"birth_date": level}, births)
    end = interval_end(pd.Series(births.to_numpy()), level, decade=False, top=4)
    left = pd.to_datetime(released["admit_date"])
    kept = left.notna()
    assert ((left[kept] - pd.Timedelta(days=30)) > end[kept]).all()
    # and an event after the interval's end plus the shift is never withheld
    late = pd.to_datetime(pd.Series(events)) - pd.Timedelta(days=30) > end + pd.Timedelta(days=1)
    assert kept[late].all()


_BIRTHS = st.one_of(st.none(), st.sampled_from(
    ["1990-01-01", "1990-12-31", "2000-02-29", "2019-07-14T08:30:00Z", "2020-03-05", "2023-11-30"]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_BIRTHS, st.dates(pd.Timestamp("1989-06-01").date(),
                                            pd.Timestamp("2025-06-01").date())), min_size=1, max_size=40),
       st.sampled_from([1, 2, 3, 4]), st.sampled_from([object, "str", "string[pyarrow]"]))
def test_withheld_dates_are_those_before_each_subjects_own_threshold(rows, level, dtype):
    # repeated, missing and timestamped birth dates: the thresholds are computed once per
    # distinct birth date and each subject gets its own birth date's
    births = pd.Series([b for b, _ in rows], index=[f"S{i}" for i in range(len(rows))], dtype=dtype)
    events = [str(e) for _, e in rows]
    released = pd.DataFrame({"admit_date": pd.array(events, dtype=dtype if dtype != object else "string")})
    before = released["admit_date"].dtype
    by_position = released.copy()
    withheld = protect_birth_dates(released, pd.Series(births.index), POLICY.tables["encounters"],
                                   POLICY, {"birth_date": level}, births)
    # the same told each row's subject by position (as transform does), no id looked up
    assert protect_birth_dates(by_position, None, POLICY.tables["encounters"], POLICY,
                               {"birth_date": level}, births,
                               subject_rows=np.arange(len(rows))) == withheld
    assert by_position["admit_date"].equals(released["admit_date"])
    expected = []
    for b, e in rows:
        if b is None:
            expected.append(False)
            continue
        end = interval_end(pd.Series([b], dtype=object), level, decade=False, top=4).iloc[0]
        expected.append(str(e) < (end + pd.Timedelta(days=31)).strftime("%Y-%m-%d"))
    assert released["admit_date"].isna().tolist() == expected
    assert released["admit_date"].dtype == before  # withheld as missing, the column's type kept
    assert withheld.get("admit_date", 0) == sum(expected)
