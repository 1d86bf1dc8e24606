"""A note's dates cut to the month (or year) beside shifted structured dates: shifted by the
subject's offset first, then cut, so the note's month is the shifted date's month
(`note_consistency.note_dates` adds the structured shift to the scrub column's params)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.keys import KeyRing
from deidflow.policy import Column
from deidflow.techniques import ApplyContext, registry
from deidflow.techniques.scrub import scrub_texts

DAYS = st.dates(min_value=pd.Timestamp("1950-01-01").date(), max_value=pd.Timestamp("2030-12-31").date())


@given(st.integers(-180, 180), DAYS)
@settings(max_examples=100, deadline=None)
def test_a_cut_date_is_the_cut_of_the_shifted_date_in_every_spelling(offset, day):
    moved = pd.Timestamp(day) + pd.Timedelta(days=offset)
    text = f"{day:%Y-%m-%d}入院，{day.year}年{day.month}月{day.day}日手术，{day:%Y%m%d}出院"
    month = scrub_texts(pd.Series([text]), dates="month", date_offsets=np.array([offset]),
                        kinds=["date"])[0][0]
    assert month == f"{moved:%Y-%m}入院，{moved.year}年{moved.month}月手术，{moved:%Y-%m}出院"
    year = scrub_texts(pd.Series([text]), dates="year", date_offsets=np.array([offset]),
                       kinds=["date"])[0][0]
    assert year == f"{moved.year}入院，{moved.year}年手术，{moved.year}出院"


def test_a_date_without_a_day_cannot_be_shifted_and_becomes_the_placeholder():
    # 2023年6月 cut as written would be the true month beside shifted structured dates
    out = scrub_texts(pd.Series(["2023年6月随访"]), dates="month", date_offsets=np.array([5]),
                      kinds=["date"])[0][0]
    assert out == "[日期]随访"
    assert scrub_texts(pd.Series(["2023年6月随访"]), dates="month", kinds=["date"])[0][0] == "2023年6月随访"


def test_the_technique_shifts_before_the_cut_with_the_structured_offset_and_says_so():
    from deidflow.techniques.dateshift import ALGORITHM, DEFAULT_SCOPE, subject_offsets

    ring = KeyRing(b"\x07" * 32, recipient_id="r", agreement_id="a")
    ids_ = pd.Series(["P1", "P2", "P3", "P4"], dtype="string")
    texts = pd.Series(["2024-03-20就诊"] * 4, dtype="string")
    off = subject_offsets(ids_, ring.derive(DEFAULT_SCOPE, purpose="date_shift", algorithm=ALGORITHM), 30)
    want = [(pd.Timestamp("2024-03-20") + pd.Timedelta(days=int(o))).strftime("%Y-%m") + "就诊" for o in off]
    assert set(want) != {"2024-03就诊"}  # some subject's shift leaves March
    scrub = registry.get("scrub")
    spec = Column(role="free_text", technique="scrub", params={"dates": "month", "shift_days": 30})
    ctx = ApplyContext(table="notes", column="text", subject_ids=ids_, keyring=ring)
    assert scrub.apply(texts, spec, ctx).tolist() == want
    described = scrub.describe(spec, ctx)
    assert described["params"]["shift_days"] == 30
    assert not any("true month" in x for x in described["not_covered_by_risk"])
    assert any("shifted by each subject's offset" in x for x in described["not_covered_by_risk"])
    # without the structured shift: the true month, and the manifest says so
    plain = Column(role="free_text", technique="scrub", params={"dates": "month"})
    assert scrub.apply(texts, plain, ctx).tolist() == ["2024-03就诊"] * 4
    assert any("true month" in x for x in scrub.describe(plain, ctx)["not_covered_by_risk"])


def test_dates_generalised_by_replace_are_cut_after_the_shift_too():
    from deidflow.techniques.dateshift import ALGORITHM, DEFAULT_SCOPE, subject_offsets
    from deidflow.techniques.scrub import date_cut

    assert date_cut({"replace": "generalise"}) == "month"
    assert date_cut({"replace": {"date": "generalise"}}) == "month"
    assert date_cut({"replace": {"address": "generalise"}}) is None
    assert date_cut({"dates": "year", "replace": "generalise"}) == "year"
    assert date_cut({"dates": "shift"}) is None and date_cut({"dates": "placeholder"}) is None

    ring = KeyRing(b"\x07" * 32, recipient_id="r", agreement_id="a")
    ids_ = pd.Series(["P1", "P2", "P3", "P4"], dtype="string")
    off = subject_offsets(ids_, ring.derive(DEFAULT_SCOPE, purpose="date_shift", algorithm=ALGORITHM), 30)
    want = [(pd.Timestamp("2024-03-20") + pd.Timedelta(days=int(o))).strftime("%Y-%m") + "就诊" for o in off]
    scrub = registry.get("scrub")
    spec = Column(role="free_text", technique="scrub",
                  params={"replace": {"date": "generalise"}, "shift_days": 30})
    ctx = ApplyContext(table="notes", column="text", subject_ids=ids_, keyring=ring)
    assert scrub.apply(pd.Series(["2024-03-20就诊"] * 4, dtype="string"), spec, ctx).tolist() == want
    plain = Column(role="free_text", technique="scrub", params={"replace": {"date": "generalise"}})
    # the true month, and said so (it was listed as "dates as written")
    assert any("true month" in x for x in scrub.describe(plain, ctx)["not_covered_by_risk"])
