"""Date shifting: one keyed offset per subject in every table (intervals kept), never zero,
within max_days, different per recipient; text forms kept; bad dates refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.errors import InputError, PolicyError
from deidflow.techniques import registry
from deidflow.techniques.dateshift import shift_dates, subject_offsets

from .helpers import col, ctx, ring


@settings(max_examples=60, deadline=None)
@given(subjects=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=40),
       max_days=st.integers(1, 400), key=st.binary(min_size=32, max_size=32))
def test_offsets_per_subject_nonzero_and_bounded(subjects, max_days, key):
    s = pd.Series(subjects)
    off = subject_offsets(s, key, max_days)
    assert ((off != 0) & (np.abs(off) <= max_days)).all()
    assert pd.Series(off).groupby(s.to_numpy()).nunique().eq(1).all()
    again = subject_offsets(s.iloc[::-1].reset_index(drop=True), key, max_days)[::-1]
    assert (again == off).all()


def test_consistent_across_tables_and_intervals_kept():
    tech = registry.get("date_shift")
    spec = col("quasi_identifier", "date_shift", {"max_days": 90})
    tech.check("admit_date", spec)
    pid = pd.Series(["p1", "p2", "p3"])
    admit = pd.Series(["2024-01-10", "2024-03-01", None])
    discharge = pd.Series(["2024-01-20", "2024-03-04", "2024-05-05"])
    r = ring()
    a = tech.apply(admit, spec, ctx(admit, subjects=pid, keyring=r))
    d = tech.apply(discharge, spec, ctx(discharge, subjects=pid, keyring=r))
    days = (pd.to_datetime(d) - pd.to_datetime(a)).dt.days
    assert days.iloc[:2].tolist() == [10, 3] and pd.isna(a[2])
    assert (a.iloc[:2] != admit.iloc[:2]).all()
    shift = (pd.to_datetime(a) - pd.to_datetime(admit)).dt.days.dropna().abs()
    assert (shift <= 90).all()
    # a lab table with the subjects in another order moves each subject's date by the same offset
    lab = tech.apply(pd.Series(["2024-01-10"]), spec, ctx(pd.Series(["2024-01-10"]), subjects=pd.Series(["p1"]), keyring=r))
    assert lab[0] == a[0]
    other = tech.apply(admit, spec, ctx(admit, subjects=pid, keyring=ring(recipient="rcp-b")))
    assert not (other.iloc[:2] == a.iloc[:2]).all()
    assert tech.describe(spec, ctx(admit, keyring=r))["key_fingerprint"] == r.fingerprint("date_shift", purpose="date_shift")


def test_text_forms_kept_and_datetime_dtype_kept():
    off = np.array([3, -2])
    assert shift_dates(pd.Series(["2024-02-28", "2024-03-01"]), off).tolist() == ["2024-03-02", "2024-02-28"]
    stamps = shift_dates(pd.Series(["2024-02-28T08:30:00+08:00", "2024-03-01T23:00:00+08:00"]), off)
    assert stamps.tolist() == ["2024-03-02T08:30:00+08:00", "2024-02-28T23:00:00+08:00"]
    dt = shift_dates(pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02"])), off)
    assert pd.api.types.is_datetime64_any_dtype(dt) and dt.dt.strftime("%Y-%m-%d").tolist() == ["2024-01-04", "2023-12-31"]


def test_bad_dates_and_parameters_refused():
    with pytest.raises(InputError, match="not dates") as exc:
        shift_dates(pd.Series(["2024-01-01", "yesterday"]), np.array([1, 1]), column="admit_date", table="t")
    assert "admit_date" in str(exc.value) and "row 1" in str(exc.value)
    for params in ({"max_days": 0}, {"max_days": 10_000}, {"scope": ""}):
        with pytest.raises(PolicyError, match="'admit_date'"):
            registry.get("date_shift").check("admit_date", col("quasi_identifier", "date_shift", params))


def test_mixed_time_zones_keep_their_own_text():
    out = shift_dates(pd.Series(["2024-12-31T08:00:00+08:00", "2024-01-01 08:00", "2024-03-01T23:59:59Z", "20240101"]),
                      np.array([1, 1, -1, 1]))
    assert out.tolist() == ["2025-01-01T08:00:00+08:00", "2024-01-02 08:00", "2024-02-29T23:59:59Z", "2024-01-02"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.dates(pd.Timestamp("1900-03-01").date(), pd.Timestamp("2099-10-01").date()),
                          st.integers(-3650, 3650), st.booleans()), min_size=1, max_size=30))
def test_shift_moves_each_date_by_exactly_its_offset(rows):
    text = pd.Series([d.isoformat() + ("T10:30:00+08:00" if t else "") for d, _, t in rows])
    off = np.array([o for _, o, _ in rows])
    out = shift_dates(text, off)
    got = pd.to_datetime(out.str.slice(0, 10)) - pd.to_datetime(text.str.slice(0, 10))
    assert (got.dt.days.to_numpy() == off).all()
    assert (out.str.slice(10) == text.str.slice(10)).all()
