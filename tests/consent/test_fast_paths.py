"""The column-wise registry read/write and the id look-ups the gate uses, against plain
reference readings: awkward values (the read's own separators, line breaks, '' beside NULL),
reads split into many chunks, duplicate and missing ids, short and long ids."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from consent_helpers import event, frame
from hypothesis import given, settings
from hypothesis import strategies as st

from deidflow.consent import registry as registry_module
from deidflow.idcolumns import subject_mask, subject_positions
from deidflow.consent.registry import EVENT_COLUMNS, ConsentSnapshot
from deidflow.consent.subject_ids import canonical_id
from deidflow.errors import ConsentError

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _plain_read(registry) -> dict[str, list]:
    """The events as SQLAlchemy reads them row by row (column -> values), for comparison."""
    t = registry_module.consent_events
    with registry.engine.connect() as conn:
        rows = conn.execute(sa.select(*[t.c[c] for c in EVENT_COLUMNS]).order_by(t.c.seq)).all()
    return {c: [r._mapping[c] for r in rows] for c in EVENT_COLUMNS}


def test_snapshot_reads_awkward_values_exactly(registry, monkeypatch):
    monkeypatch.setattr(registry_module, "_SQLITE_READ_CHUNK", 3)  # many chunks
    rows = [event(f"E{i}", f"P{i}") for i in range(10)]
    rows[1].update(guardian_name="王\x1f芳", grantor="guardian")    # the SQLite read's separator
    rows[2].update(guardian_name="line\nbreak", guardian_id="")    # a line break; '' is not NULL
    rows[3].update(notice_version=None, form_sha256=None, valid_from=None, valid_until=None)
    rows[4].update(purposes="a,\"quoted\";b", recipients="x\\y")  # CSV/COPY escapes
    rows[5].update(recorded_at=pd.Timestamp("2024-03-01T09:00:00.123456+08:00"))
    registry.append_events(frame(rows))
    snap = registry.snapshot(NOW)
    got = snap.events.sort_values("seq").reset_index(drop=True)
    want = _plain_read(registry)
    assert got["event_id"].tolist() == want["event_id"]
    for col in EVENT_COLUMNS:
        if col == "recorded_at":
            assert got[col].tolist() == pd.to_datetime(pd.Series(want[col]), utc=True).tolist()
        elif col in ("valid_from", "valid_until"):
            assert [None if pd.isna(v) else v.date() for v in got[col]] == want[col], col
        else:
            assert [None if pd.isna(v) else v for v in got[col]] == want[col], col
    assert got.loc[2, "guardian_id"] == "" and pd.isna(got.loc[3, "notice_version"])
    assert snap.summary()["events_sha256"] == hashlib.sha256(
        "\n".join(sorted(want["event_id"])).encode()).hexdigest()


def test_snapshot_of_an_empty_registry_and_of_one_subject(registry):
    assert registry.snapshot(NOW).events.empty
    registry.append_events(frame([event("E1", "P1"), event("E2", "P2")]))
    snap = registry.snapshot(NOW, subject_ids=["P2", "nobody"])
    assert snap.events["event_id"].tolist() == ["E2"] and snap.current["subject_id"].tolist() == ["P2"]


def test_record_release_first_pseudonym_wins_and_reruns_add_nothing(registry):
    registry.append_events(frame([event("E1", "P1")]))
    assert registry.record_release("R", ["P1", "P2", "P1"], ["a", "b", "c"], NOW) == 3
    registry.record_release("R", pd.Series(["P1", "P2"], dtype="str"), pd.Series(["z", "z"]), NOW)
    with registry.engine.connect() as conn:
        got = conn.execute(sa.text(
            "SELECT subject_id, pseudonym FROM release_subjects ORDER BY subject_id")).all()
    assert [tuple(r) for r in got] == [("P1", "a"), ("P2", "b")]


def test_record_release_refuses_a_missing_pseudonym_and_records_nothing(registry):
    with pytest.raises(ConsentError, match="1 missing pseudonym.*position 1") as err:
        registry.record_release("R", ["P1", "P2"], ["a", None], NOW)
    assert "nothing was recorded" in str(err.value)
    with registry.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM release_subjects")).scalar() == 0


ids = st.one_of(
    st.none(),
    st.sampled_from(["P001", "P002", "P003", "Q001", "P00", "P0001", "患者1"]),
    st.text(min_size=0, max_size=12),
)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(ids, max_size=40), subjects=st.lists(ids.filter(lambda v: v is not None), max_size=10),
       runs=st.booleans())
def test_subject_mask_is_plain_set_membership(values, subjects, runs):
    if runs:  # rows of one subject together, as extracts usually are
        values = [v for v in values for _ in range(3)]
    # Ids are compared in canonical form (deidflow.consent.subject_ids).
    members = {canonical_id(s) for s in subjects}
    want = np.array([v is not None and canonical_id(v) in members for v in values], dtype=bool)
    got = subject_mask(pd.Series(values, dtype="str"), pd.Index(pd.Series(subjects, dtype="str")))
    assert got.tolist() == want.tolist()


@settings(max_examples=200, deadline=None)
@given(values=st.lists(ids, max_size=40), subjects=st.lists(ids.filter(lambda v: v is not None), max_size=10, unique=True))
def test_positions_are_plain_index_lookups(values, subjects):
    where: dict[str, int] = {}
    for i, s in enumerate(subjects):
        where.setdefault(canonical_id(s), i)  # the first of ids that are spelled alike
    want = [where.get(canonical_id(v), -1) if v is not None else -1 for v in values]
    got = subject_positions(pd.Series(values, dtype="str"), pd.Index(pd.Series(subjects, dtype="str")))
    assert got.tolist() == want


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=10), unique=True, max_size=30))
def test_digest_is_sha256_of_the_sorted_ids_one_per_line(event_ids):
    events = frame([event(e, f"S{i}") for i, e in enumerate(event_ids)]) if event_ids else None
    if events is None:
        return
    snap = ConsentSnapshot.from_events(events, NOW)
    want = hashlib.sha256("\n".join(sorted(event_ids)).encode("utf-8")).hexdigest()
    assert snap.digest == want and snap.summary()["subjects"] == len(event_ids)


_ID_CHARS = st.sampled_from(list("P0123456789xX \t\u3000\uff10ab\u200b\x1f\x7f"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(_ID_CHARS, max_size=20),
                          st.from_regex(r"[0-9]{17}[xX]", fullmatch=True)), max_size=30),
       st.integers(0, 3))
def test_canonical_ids_agrees_with_one_id_at_a_time(values, offset):
    """The buffer-level "already canonical" shortcut never skips an id that needs a change
    (edge white space, a lower-case check character, non-ASCII), also in a sliced array."""
    import pyarrow as pa

    from deidflow.consent.subject_ids import canonical_ids

    arr = pa.array(values, pa.string())[min(offset, len(values)):]
    want = [None if v is None else canonical_id(v) for v in arr.to_pylist()]
    assert canonical_ids(arr).to_pylist() == want
