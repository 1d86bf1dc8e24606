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
    assert tech.describe(spec, ctx(admit, keyring=r))["key_fingerprint"] == r.fingerprint("date_shift", purpose="date_shift", algorithm="aes-cmac")


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


# --- AES-CMAC offsets, the partition memo, the Arrow path ----------------------------------------

from cryptography.hazmat.primitives import cmac  # noqa: E402
from cryptography.hazmat.primitives.ciphers import algorithms  # noqa: E402

from deidflow.techniques.base import ApplyContext  # noqa: E402


def test_offset_is_the_cmac_of_the_subject_id_under_a_key_bound_to_it():
    r = ring()
    key = r.derive("date_shift", purpose="date_shift", algorithm="aes-cmac")
    assert key != r.derive("date_shift", purpose="date_shift")
    ids = pd.Series(["P0000001", "患者7", None], dtype="str")
    off = subject_offsets(ids, key, 30)
    for sid, got in zip(ids[:2], off[:2]):
        c = cmac.CMAC(algorithms.AES(key))
        c.update(sid.encode("utf-8"))
        r64 = int.from_bytes(c.finalize()[:8], "big") % 60 - 30
        assert got == (r64 + 1 if r64 >= 0 else r64)
    assert off[2] == 0  # no subject, no offset (as before)


def test_memo_reuses_a_tables_offsets_for_its_next_date_column():
    tech = registry.get("date_shift")
    spec = col("insensitive", "date_shift", {"max_days": 30})
    frame = pd.DataFrame({"pid": pd.Series(["p1", "p2", "p1"], dtype="str"),
                          "admit": pd.Series(["2024-01-10", "2024-03-01", "2024-05-05"], dtype="str"),
                          "discharge": pd.Series(["2024-01-12", None, "2024-05-05"], dtype="str")})
    memo: dict = {}
    r = ring()
    outs = []
    for column in ("admit", "discharge"):
        c = ApplyContext(table="encounters", column=column, subject_ids=frame["pid"], keyring=r, memo=memo)
        outs.append(tech.apply(frame[column], spec, c))
    assert len(memo) == 1 and r.derive("date_shift", purpose="date_shift", algorithm="aes-cmac").hex() not in repr(memo)
    alone = tech.apply(frame["discharge"], spec, ctx(frame["discharge"], subjects=frame["pid"], keyring=r))
    assert outs[1].fillna("").tolist() == alone.fillna("").tolist()
    assert (pd.to_datetime(outs[1]) - pd.to_datetime(outs[0])).dt.days.tolist()[::2] == [2, 0]
    # another table's subject column (another array) is computed, not taken from the memo
    other = pd.Series(["p2", "p1", "p1"], dtype="str")
    c = ApplyContext(table="labs", column="d", subject_ids=other, keyring=r, memo=memo)
    lab = tech.apply(pd.Series(["2024-03-01", "2024-01-10", "2024-01-12"], dtype="str"), spec, c)
    assert lab.tolist() == [outs[0][1], outs[0][0], outs[1][0]]


@settings(max_examples=25, deadline=None)
@given(days=st.lists(st.integers(-25_000, 40_000), min_size=1, max_size=3000),
       blanks=st.integers(0, 3), seed=st.integers(0, 2**31))
def test_arrow_path_equals_calendar_arithmetic(days, blanks, seed):
    """Plain YYYY-MM-DD columns (with nulls) take Arrow's cast and the per-day text table; the
    result is the calendar date moved by exactly the offset, nulls kept."""
    rng = np.random.default_rng(seed)
    base = np.datetime64("1970-01-01") + np.array(days, dtype="timedelta64[D]")
    text = np.datetime_as_string(base, unit="D").astype(object)
    text[rng.integers(0, len(text), blanks)] = None
    off = rng.integers(-3650, 3651, len(text))
    out = shift_dates(pd.Series(text, dtype="str"), off)
    assert isinstance(out.dtype, pd.StringDtype) and out.dtype.storage == "pyarrow"
    want = np.datetime_as_string(base + off.astype("timedelta64[D]"), unit="D")
    for got, w, t in zip(out, want, text):
        assert (pd.isna(got) and t is None) or got == w


def test_long_column_uses_the_day_table():
    text = pd.Series(np.datetime_as_string(np.datetime64("2020-01-01") + np.arange(20_000) % 700, unit="D"), dtype="str")
    off = np.arange(20_000) % 61 - 30
    out = shift_dates(text, off)
    want = np.datetime_as_string(np.datetime64("2020-01-01") + np.arange(20_000) % 700 + off, unit="D")
    assert out.tolist() == want.tolist()


def test_blanks_become_null_and_out_of_range_dates_name_the_row():
    out = shift_dates(pd.Series(["2024-01-01", "", "  ", None, "2024-01-02T08:00"], dtype="str"), np.array([1, 1, 1, 1, 1]))
    assert out.tolist()[0] == "2024-01-02" and out.isna().tolist() == [False, True, True, True, False]
    assert out[4] == "2024-01-03T08:00"
    plain = shift_dates(pd.Series(["2024-01-01", "", " ", None, "2024-02-28"], dtype="str"), np.array([1, 1, 1, 1, 2]))
    assert plain.fillna("-").tolist() == ["2024-01-02", "-", "-", "-", "2024-03-01"]
    for impossible in ("2024-02-30", "2023-02-29T08:00", "2024-13-01"):  # never rolled over
        with pytest.raises(InputError, match="row 2"):
            shift_dates(pd.Series(["2024-01-01", "", impossible], dtype="str"), np.array([1, 1, 1]))
    with pytest.raises(InputError, match="outside the years 1 to 9999.*row 1") as exc:
        shift_dates(pd.Series(["2024-01-01", "9999-12-30"]), np.array([5, 5]), column="admit_date", table="t")
    assert "admit_date" in str(exc.value)


@settings(max_examples=60, deadline=None)
@given(runs=st.lists(st.tuples(st.one_of(st.sampled_from(["P1", "P2", "长者"]), st.text(max_size=5), st.none()),
                               st.integers(1, 6)), min_size=1, max_size=25))
def test_offsets_over_runs_of_one_subject_equal_each_row_alone(runs):
    """Offsets are computed once per run of one subject's rows and repeated: each row must get
    exactly the offset its subject id gets on its own (a missing id gets 0)."""
    ids = pd.Series([v for v, n in runs for _ in range(n)], dtype="str")
    key = ring().derive("date_shift", algorithm="aes-cmac")
    out = subject_offsets(ids, key, 30)
    alone = [0 if pd.isna(v) else int(subject_offsets(pd.Series([v], dtype="str"), key, 30)[0]) for v in ids]
    assert out.tolist() == alone
