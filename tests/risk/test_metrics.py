"""Risk metrics against hand-computed answers and an independent pandas groupby."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.errors import InputError
from deidflow.risk.classes import class_sizes, frequency_table, group, restrict, subject_classes
from deidflow.risk.encoding import encode
from deidflow.risk.metrics import Gb42460, measure, measure_subjects

from .helpers import decoded, encode_ints, reference_classes

AGE = pd.DataFrame({0: ["30", "40"], 1: ["*", "*"]}, index=["30", "40"])
SEX = pd.DataFrame({0: ["F", "M"], 1: ["*", "*"]}, index=["F", "M"])


def hand_table():
    """8 rows, classes (M,30)x3 [flu,flu,cold], (F,40)x4 [flu,cancer,cold,cold], (M,40)x1."""
    frame = pd.DataFrame(
        {
            "sex": list("MMMFFFFM"),
            "age": ["30", "30", "30", "40", "40", "40", "40", "40"],
            "disease": ["flu", "flu", "cold", "flu", "cancer", "cold", "cold", "cancer"],
        }
    )
    qis = [encode("sex", frame["sex"], SEX), encode("age", frame["age"], AGE)]
    return frame, qis


def test_hand_computed_record_level():
    frame, qis = hand_table()
    r = measure(qis, sensitive=frame["disease"], recursive_l=2)
    assert (r.n_records, r.n_classes, r.k) == (8, 3, 1)
    assert r.uniques_share == pytest.approx(1 / 8)
    assert r.prosecutor_max == 1.0
    assert r.prosecutor_avg == pytest.approx(3 / 8)
    assert r.marketer == pytest.approx(3 / 8)
    assert r.journalist_max is None
    assert r.l_distinct == 1
    assert r.l_entropy == pytest.approx(1.0)  # the singleton class has entropy 0
    assert math.isinf(r.recursive_c)  # (M,40) has one value: no c makes it (c,2)-diverse
    assert r.as_dict()["recursive_c"] is None
    # Reference (cancer, cold, flu) = (2, 3, 3)/8; worst class is (M,40) = (1, 0, 0).
    assert r.t_equal == pytest.approx(0.5 * (0.75 + 0.375 + 0.375))
    assert r.t_ordered == pytest.approx((0.75 + 0.375) / 2)
    # GB/T 42460, controlled: τ = 1/5, every class is below 5, so Ra = 1 and R = 1.
    assert r.threshold == pytest.approx(0.2)
    assert (r.ra, r.ra_classes, r.rb, r.r) == (1.0, 1.0, 1.0, 1.0)
    assert r.rc == pytest.approx(3 / 8)
    assert r.rc_classes == pytest.approx((1 / 3 + 1 / 4 + 1) / 3)
    assert not r.meets_gbt42460


def test_recursive_c_and_generalised_level():
    frame, qis = hand_table()
    r = measure(qis, {"age": 1}, sensitive=frame["disease"], recursive_l=2)
    # (M,*) = [flu,flu,cold,cancer] -> 2/(1+1) = 1; (F,*) = [flu,cancer,cold,cold] -> 1.
    assert (r.n_classes, r.k, r.l_distinct) == (2, 4, 3)
    assert r.recursive_c == pytest.approx(1.0)
    assert r.rc == pytest.approx(2 / 8)
    assert r.r == 1.0  # classes of 4 are still above τ = 1/5
    enclave = measure(qis, {"age": 1}, release_model="enclave")  # τ = 1/3: 1/4 is fine
    assert enclave.ra == 0 and enclave.r == pytest.approx(0.25)
    assert not enclave.meets_gbt42460  # 0.25 > 0.05


def test_journalist_with_population():
    frame, qis = hand_table()
    pop = pd.concat(
        [frame, pd.DataFrame({"sex": ["M", "M", "M"], "age": ["40", "40", "30"], "disease": "x"})],
        ignore_index=True,
    )
    pop_qis = [encode("sex", pop["sex"], SEX), encode("age", pop["age"], AGE)]
    r = measure(qis, population=pop_qis)
    # Population classes: (M,30)=4, (F,40)=4, (M,40)=3.
    assert r.journalist_max == pytest.approx(1 / 3)
    assert r.journalist_avg == pytest.approx((3 / 4 + 4 / 4 + 1 / 3) / 8)
    assert r.marketer == pytest.approx(r.journalist_avg)


def test_public_release_uses_max_risk():
    sizes = np.array([20, 25, 40])
    pub = Gb42460.of(sizes, "public", None)
    assert pub.ra == 0 and pub.r == pytest.approx(1 / 20)
    ctl = Gb42460.of(sizes, "controlled", 0.5)
    assert ctl.r == pytest.approx(3 / 85 * 0.5)
    with pytest.raises(InputError, match="release model"):
        Gb42460.of(sizes, "internet", None)


def test_patient_level_counts_each_subject_once():
    # Subject a has three rows in one combination; b and c share their two combinations;
    # d has one of b's combinations only, so it is a class of its own.
    sex = ["M", "M", "M", "F", "F", "F", "F", "F"]
    age = ["30", "30", "30", "30", "40", "30", "40", "40"]
    subject = ["a", "a", "a", "b", "b", "c", "c", "d"]
    qis = [encode("sex", pd.Series(sex), SEX), encode("age", pd.Series(age), AGE)]
    cls, sizes = subject_classes(qis, subject)
    assert sorted(sizes.tolist()) == [1, 1, 2]
    assert cls[1] == cls[2] and cls[0] != cls[1] and cls[3] not in (cls[0], cls[1])
    r = measure_subjects(qis, subject)
    assert (r.n_records, r.n_classes, r.k) == (4, 3, 1)
    # Counting rows hides both: subject a's three rows look like a class of 3, and d's row
    # sits in b and c's (F,40) rows, so row-level k is 2 although d is unique.
    row_level = measure(qis)
    assert row_level.n_records == 8 and row_level.k == 2
    # Generalising age to '*' makes every F subject's set {(F,*)}: one class of 3.
    r1 = measure_subjects(qis, subject, {"age": 1})
    assert (r1.n_classes, r1.k) == (2, 1)


def test_bad_input_is_a_clear_error():
    _, qis = hand_table()
    with pytest.raises(InputError, match="level 5 does not exist"):
        measure(qis, {"age": 5})
    with pytest.raises(InputError, match="not a quasi-identifier"):
        measure(qis, {"weight": 1})
    with pytest.raises(InputError, match="sensitive attribute has 3 values"):
        measure(qis, sensitive=["a", "b", "c"])
    with pytest.raises(InputError, match="missing from the hierarchy"):
        encode("age", pd.Series(["30", "55"]), AGE)
    with pytest.raises(InputError, match="no quasi-identifiers"):
        measure([])


tables = st.integers(min_value=1, max_value=120).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 5), min_size=n, max_size=n),
        st.lists(st.integers(0, 11), min_size=n, max_size=n),
        st.lists(st.integers(0, 3), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.tuples(st.integers(0, 2), st.integers(0, 3)),
    )
)


@settings(max_examples=60, deadline=None)
@given(tables)
def test_metrics_match_pandas_groupby(data):
    a, b, s, keep, (la, lb) = data
    keep = np.asarray(keep)
    if not keep.any():
        keep[0] = True
    qis = [encode_ints("a", a, depth=2), encode_ints("b", b, depth=3)]
    levels = {"a": la, "b": lb}
    r = measure(qis, levels, sensitive=np.asarray(s), keep=keep)
    frame = decoded(qis, levels)[keep]
    sens = pd.Series(np.asarray(s)[keep])
    sizes, distinct, entropy = reference_classes(frame.reset_index(drop=True), ["a", "b"], sens)
    assert r.n_records == keep.sum() and r.n_suppressed == (~keep).sum()
    assert r.n_classes == len(sizes)
    assert r.k == sizes.min()
    assert r.uniques_share == pytest.approx((sizes == 1).sum() / keep.sum())
    assert r.l_distinct == distinct.min()
    assert r.l_entropy == pytest.approx(math.exp(entropy.min()))
    assert sorted(class_sizes(qis, levels, keep=keep).tolist()) == sorted(sizes.tolist())
    # t with the equal distance, from the kept table's own distribution.
    ref = sens.value_counts(normalize=True)
    f = frame.reset_index(drop=True).assign(s=sens)
    emd = f.groupby(["a", "b"])["s"].apply(
        lambda x: 0.5 * (x.value_counts(normalize=True).reindex(ref.index, fill_value=0) - ref).abs().sum()
    )
    assert r.t_equal == pytest.approx(emd.max())


@settings(max_examples=30, deadline=None)
@given(tables)
def test_restrict_equals_rebuilding(data):
    a, b, s, keep, (la, lb) = data
    keep = np.asarray(keep)
    qis = [encode_ints("a", a, depth=2), encode_ints("b", b, depth=3)]
    ft = frequency_table(qis, sensitive=np.asarray(s))
    keep_combo = keep[: ft.n_combos] if len(keep) >= ft.n_combos else np.resize(keep, ft.n_combos)
    small = restrict(ft, keep_combo)
    rows_kept = keep_combo[ft.row_combo]
    direct = frequency_table(qis, sensitive=np.asarray(s), keep=rows_kept)
    assert small.n_records == direct.n_records
    g1 = group(small, qis, [la, lb])
    g2 = group(direct, qis, [la, lb])
    assert sorted(g1.sizes.tolist()) == sorted(g2.sizes.tolist())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(-3, 12), st.sampled_from(["a", "b", "10", "9", "中"]),
                       st.floats(allow_nan=False, allow_infinity=False, width=16)),
             min_size=0, max_size=40),
    st.sampled_from(["object", "category", "str", "Int64", "float"]),
)
def test_encoding_codes_are_the_sorted_texts(values, dtype):
    """encode factorises only the distinct values; its codes must be those of the rows' own
    texts (missing as "<NA>") in sorted order, whatever the column's dtype."""
    from deidflow.risk.encoding import _factorize_as_text

    series = pd.Series(values, dtype=object)
    if dtype == "str":
        series = series.map(lambda v: v if v is None else str(v)).astype("str")
    elif dtype == "category":
        series = series.map(lambda v: v if v is None else str(v)).astype("category")
    elif dtype == "Int64":
        series = pd.Series([v if isinstance(v, int) else None for v in values], dtype="Int64")
    elif dtype == "float":
        series = pd.Series([float(v) if isinstance(v, (int, float)) else None for v in values],
                           dtype="float64")
    text = series.astype("string").fillna("<NA>")
    codes, uniques = _factorize_as_text(series)
    assert list(uniques) == sorted(set(text))
    assert [uniques[c] for c in codes] == list(text)


def test_patient_level_over_two_tables():
    """Patients table (sex, age) and encounters (department): patients p1 and p2 look alike in
    the patients table but p2 visited another department, so each is unique; p3 and p4 match
    in both tables although p4 has three encounters to p3's one."""
    from deidflow.risk.metrics import measure_patients

    pat_subject = ["p1", "p2", "p3", "p4"]
    pat = [encode("sex", pd.Series(["M", "M", "F", "F"]), SEX),
           encode("age", pd.Series(["30", "30", "40", "40"]), AGE)]
    enc_subject = ["p1", "p2", "p2", "p3", "p4", "p4", "p4"]
    dept = pd.DataFrame({0: ["ENT", "ICU"], 1: ["*", "*"]}, index=["ENT", "ICU"])
    enc = [encode("dept", pd.Series(["ENT", "ENT", "ICU", "ICU", "ICU", "ICU", "ICU"]), dept)]
    r = measure_patients([(pat_subject, pat, None), (enc_subject, enc, None)])
    assert (r.n_records, r.n_classes, r.k) == (4, 3, 1)
    assert r.uniques_share == pytest.approx(2 / 4)
    # Generalising the department merges p1 and p2: two classes of two patients.
    r2 = measure_patients([(pat_subject, pat, None), (enc_subject, enc, {"dept": 1})])
    assert (r2.n_classes, r2.k) == (2, 2)
    # A patient with no encounter differs from one with encounters.
    r3 = measure_patients([(pat_subject, pat, None), (enc_subject[:-3], enc_cut(enc, 4), {"dept": 1})])
    assert (r3.n_classes, r3.k) == (3, 1)


def enc_cut(qis, n):
    from dataclasses import replace

    return [replace(q, codes=q.codes[:n]) for q in qis]
