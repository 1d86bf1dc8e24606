"""Which rows of a child table transform releases: by each row's subject position from
prepare, exactly the rows the link-key lookup (the path without positions) keeps, whatever
the gate let through and the search suppressed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.io import write_work
from deidflow.release.transform import _kept_rows


class _Work:
    """The three paths `_kept_rows` reads, in a temporary directory."""

    def __init__(self, root):
        self.root = root

    def subject_positions(self, name, i):
        return self.root / f"{name}-{i}.subject-rows.npy"

    def consented(self, name, i):
        return self.root / f"{name}-{i}.consented.npy"

    def gated_part(self, name, i, columns=None):
        from deidflow.io import read_work

        return read_work(self.root / f"{name}-{i}.arrow", columns)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_positions_keep_what_the_id_lookup_keeps(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("kept")
    n = data.draw(st.integers(1, 30))
    ids = [f"P{i:04d}" for i in range(n)]
    allowed = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    rows = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=60)), dtype=np.intp)
    consented_ids = [s for s, a in zip(ids, allowed) if a]
    suppressed_rows = np.array(data.draw(st.lists(st.booleans(), min_size=len(consented_ids),
                                                  max_size=len(consented_ids))), dtype=bool)
    suppressed = pd.Index([s for s, x in zip(consented_ids, suppressed_rows) if x], dtype="string")
    # what prepare writes (release.prepare._gate_staged) for the child table
    work = _Work(root)
    link = pd.DataFrame({"patient_id": pd.Series([ids[r] for r in rows], dtype="string")})
    write_work(link, root / "visits-0.arrow")
    np.save(work.consented("visits", 0), allowed[rows])
    gated_row = np.where(allowed, np.cumsum(allowed) - 1, -1).astype(np.int32)
    np.save(work.subject_positions("visits", 0), gated_row[rows])
    tspec = SimpleNamespace(subject_column="patient_id")

    by_position = _kept_rows(work, "visits", 0, tspec, suppressed, suppressed_rows, False)
    by_lookup = _kept_rows(work, "visits", 0, tspec, suppressed, None, False)
    expected = np.array([allowed[r] and ids[r] not in set(suppressed) for r in rows], dtype=bool)
    assert by_position.tolist() == expected.tolist()
    assert by_lookup.tolist() == expected.tolist()
    # the subject table's own rows: the gated rows that were not suppressed
    assert _kept_rows(work, "patients", 0, tspec, suppressed, suppressed_rows, True).tolist() == \
        (~suppressed_rows).tolist()


def test_each_kept_row_points_at_its_released_subject(tmp_path):
    # the positions transform hands to the birth-date protection: a kept row's subject among
    # the released subject rows (gated rows that were not suppressed)
    from deidflow.release.transform import _kept_and_subjects

    ids = ["A", "B", "C", "D", "E"]
    allowed = np.array([True, False, True, True, True])  # gated: A C D E
    suppressed_rows = np.array([False, True, False, False])  # C suppressed: released A D E
    rows = np.array([4, 1, 0, 2, 3, 4, 0])
    work = _Work(tmp_path)
    gated_row = np.where(allowed, np.cumsum(allowed) - 1, -1).astype(np.int32)
    np.save(work.subject_positions("visits", 0), gated_row[rows])
    keep, subject = _kept_and_subjects(work, "visits", 0, None, pd.Index(["C"]), suppressed_rows, False)
    released = ["A", "D", "E"]
    assert keep.tolist() == [True, False, True, False, True, True, True]
    assert [released[s] for s in subject] == [ids[r] for r, k in zip(rows, keep) if k]
