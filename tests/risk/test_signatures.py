"""Record signatures by block (risk.signatures) against an independent pandas grouping of each
subject's record: their subject row and the set of their child rows' generalised combinations.
Levels are drawn so that every way a block's part is computed is exercised (one row per
subject, bit mask of at most 64 classes, sorted sums beyond)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.risk.record import _tag, _with_absent
from deidflow.risk.search import search
from deidflow.risk.signatures import RecordSignatures
from tests.risk.helpers import encode_ints


def _stacked(seed: int, n: int, visits_max: int, spread: int = 1):
    """Patients (a, b) and one child table (c, d) stacked as risk.record stacks them; `spread`
    multiplies the child table's number of values (8 x 4 combinations at level 0 by default,
    so that records often coincide)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, n)
    b = rng.integers(0, 2, n)
    visits = rng.integers(0, visits_max + 1, n)  # some patients have no child row
    child_subject = np.repeat(np.arange(n), visits)
    c = rng.integers(0, 8 * spread, len(child_subject))
    d = rng.integers(0, 4 * spread, len(child_subject))
    own = [encode_ints("a", a, 3), encode_ints("b", b, 2)]
    kids = [encode_ints("c", c, 5), encode_ints("d", d, 4)]
    m = len(child_subject)
    qis = [_with_absent(q, 0, m, q.name) for q in own] + \
          [_with_absent(q, n, 0, "child." + q.name) for q in kids] + [_tag([n, m])]
    subject = np.concatenate([np.arange(n), child_subject])
    blocks = [(0, n, ["a", "b"]), (n, n + m, ["child.c", "child.d"])]
    return qis, subject, blocks, (own, kids, child_subject)


def _reference(parts, levels, n):
    """Each subject's record as text: their row's labels and the sorted set of their child
    rows' labels; classes numbered by first subject."""
    own, kids, child_subject = parts
    row = pd.Series(["|".join(x) for x in zip(*(q.decode(lv) for q, lv in zip(own, levels[:2])))])
    child = pd.DataFrame({"s": child_subject,
                          "v": ["|".join(x) for x in zip(*(q.decode(lv) for q, lv in zip(kids, levels[2:4])))]})
    sets = child.drop_duplicates().groupby("s")["v"].apply(lambda v: ";".join(sorted(v)))
    record = row + "#" + sets.reindex(range(n)).fillna("").to_numpy()
    return pd.factorize(record)[0]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.sampled_from([1, 4]),
       st.sampled_from([64, 0]), st.integers(0, 3), st.integers(0, 2), st.integers(0, 5),
       st.integers(0, 4))
def test_block_signatures_group_records_as_pandas_does(seed, visits_max, spread, mask_classes,
                                                       la, lb, lc, ld):
    import deidflow.risk.signatures as signatures

    n = 300
    qis, subject, blocks, parts = _stacked(seed, n, visits_max, spread)
    levels = [la, lb, lc, ld, 0]
    # mask_classes 0: every multi-row block takes the sorted sums, even with few classes
    signatures._MASK_CLASSES, before = mask_classes, signatures._MASK_CLASSES
    try:
        results = [_classes(qis, subject, n, b, levels) for b in (blocks, None)]
    finally:
        signatures._MASK_CLASSES = before
    ref = _reference(parts, levels, n)
    for cls, sizes, again in results:  # by table, and all rows as one block
        assert np.array_equal(cls, ref)
        assert np.array_equal(sizes, np.bincount(ref))
        assert np.array_equal(again, cls)  # the cached answer is the same answer


def _classes(qis, subject, n, blocks, levels):
    sig = RecordSignatures(qis, subject, n, blocks)
    cls, sizes = sig.classes(levels)
    return cls, sizes, sig.classes(levels)[0]


def test_a_child_table_alone_gives_its_own_classes():
    n = 120
    qis, subject, blocks, (own, kids, child_subject) = _stacked(3, n, 3)
    sig = RecordSignatures(qis, subject, n, blocks)
    has = sig.has_rows(1)
    assert np.array_equal(np.flatnonzero(has), np.unique(child_subject))
    _, sizes = sig.block_classes(1, [0, 0, 5, 4, 0], has)
    assert list(sizes) == [int(has.sum())]  # fully generalised: one class of all of them


def test_blocks_must_say_which_table_a_column_belongs_to():
    import pytest

    from deidflow.errors import InputError

    n = 50
    qis, subject, blocks, _ = _stacked(5, n, 2)
    wrong = [(blocks[0][0], blocks[0][1], ["a"]), blocks[1]]  # "b" varies but is not named
    with pytest.raises(InputError, match="varies"):
        RecordSignatures(qis, subject, n, wrong)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 6))
def test_search_by_blocks_equals_search_over_all_rows(seed, k):
    """The per-table shortcut changes nothing the search decides or reports."""
    from deidflow.errors import GateFailed

    qis, subject, blocks, _ = _stacked(seed, 200, 3)
    bounds = {"__table": (0, 0)}
    out = []
    for given_blocks in (blocks, None):
        try:
            out.append(search(qis, k=k, suppression_budget=0.1, max_overall_risk=1.0,
                              release_model="enclave", level_bounds=bounds,
                              subject_codes=subject, record_blocks=given_blocks))
        except GateFailed as exc:
            out.append(str(exc))
    a, b = out
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    assert a.levels == b.levels
    assert np.array_equal(a.suppressed, b.suppressed)
    assert a.before == b.before and a.after == b.after
    assert a.utility == b.utility and a.nodes_evaluated == b.nodes_evaluated
