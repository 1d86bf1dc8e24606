"""The streamed snapshot (the Dask engine's read of the registry, which must never hold it
whole) is the snapshot: the same events, in chunks, and exactly the same summary — counts,
current state and the events digest the release id depends on — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from consent_helpers import event, frame

from deidflow.consent import registry as registry_module
from deidflow.consent.registry import SNAPSHOT_SCHEMA
from deidflow.errors import ConsentError
from deidflow.partitions import subject_partition

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _history() -> pd.DataFrame:
    """Grants, an amendment, withdrawals (one tied with its grant: the withdrawal wins), a
    consent recorded after the run's as-of, awkward text and NULLs, out-of-order times."""
    rows = [event(f"E{i:02d}", f"P{i % 7}", consent_id=f"C{i % 7}-{i % 2}") for i in range(30)]
    rows[3].update(event="amended", data_categories="demographics")
    rows[4].update(event="withdrawn", recorded_at=rows[4]["recorded_at"])  # tie with its grant
    rows[10].update(event="withdrawn", recorded_at=pd.Timestamp("2025-06-01T10:00:00+08:00"))
    rows[11].update(recorded_at=pd.Timestamp("2023-01-01T00:00:00+08:00"))  # older, arrives later
    rows[12].update(guardian_name="王\x1f芳", grantor="guardian", guardian_id="")
    rows[13].update(guardian_name="line\nbreak", notice_version=None, valid_from=None)
    rows[14].update(purposes="a,\"quoted\";b", recipients="x\\y")
    rows[15].update(guardian_name="长\n" * 2000)  # one row longer than a PostgreSQL read block
    rows[20].update(recorded_at=pd.Timestamp("2031-01-01T00:00:00+08:00"))  # after the as-of
    return frame(rows)


def _streamed(registry, as_of=NOW):
    chunks: list[pa.Table] = []
    summary = registry.stream_snapshot(as_of, chunks.append)
    return summary, chunks


@pytest.mark.parametrize("chunk", [4, 1000])
def test_streamed_chunks_are_the_snapshot_and_give_its_summary(registry, monkeypatch, chunk):
    monkeypatch.setattr(registry_module, "_SQLITE_READ_CHUNK", chunk)
    monkeypatch.setattr(registry_module, "_PG_READ_BLOCK", 1 << 10 if chunk == 4 else 1 << 24)
    registry.append_events(_history())
    snap = registry.snapshot(NOW)
    summary, chunks = _streamed(registry)
    assert summary == snap.summary()
    assert summary["events"] == 29 and summary["withdrawn"] >= 1
    if chunk == 4:
        assert len(chunks) > 2  # really streamed in pieces (SQLite by seq, PostgreSQL by block)
    assert all(c.schema == SNAPSHOT_SCHEMA for c in chunks)
    got = pa.concat_tables(chunks).to_pandas()
    assert (np.diff(got["seq"].to_numpy()) > 0).all()  # arrival order
    want = snap.events.sort_values("seq").reset_index(drop=True)
    for col in want.columns:
        a, b = want[col], got[col]
        assert (a.isna() == b.isna()).all(), col
        assert a[a.notna()].astype(str).tolist() == b[b.notna()].astype(str).tolist(), col


def test_streamed_summary_keeps_the_as_of(registry):
    registry.append_events(_history())
    early = pd.Timestamp("2024-01-01T00:00:00+08:00")
    summary, chunks = _streamed(registry, early)
    assert summary == registry.snapshot(early).summary()
    assert summary["events"] == sum(c.num_rows for c in chunks) == 1  # only the 2023 event


def test_streaming_an_empty_registry(registry):
    summary, chunks = _streamed(registry)
    assert chunks == [] and summary == registry.snapshot(NOW).summary()
    assert summary["events"] == 0 and summary["consents"] == 0


def test_a_failing_sink_ends_the_read_and_leaves_the_registry_usable(registry, monkeypatch):
    monkeypatch.setattr(registry_module, "_SQLITE_READ_CHUNK", 4)
    monkeypatch.setattr(registry_module, "_PG_READ_BLOCK", 1 << 10)
    registry.append_events(_history())

    def sink(chunk: pa.Table) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        registry.stream_snapshot(NOW, sink)
    # The read transaction was ended: writers and readers carry on.
    registry.append_events(frame([event("late", "P9")]))
    assert registry.snapshot(NOW).summary()["events"] == 30


def test_an_unreachable_registry_is_a_clear_error_when_streaming(tmp_path):
    reg = registry_module.ConsentRegistry(f"sqlite:///{tmp_path / 'c.db'}")
    reg.engine.dispose()
    (tmp_path / "c.db").unlink()
    (tmp_path / "c.db").mkdir()  # a directory where the database was: unreadable
    with pytest.raises(ConsentError, match="cannot reach the consent registry"):
        reg.stream_snapshot(NOW, lambda chunk: None)


def test_subject_partition_reads_arrow_text_as_the_extract_does():
    ids = ["P0000001", "P0000002", "", "患者1", None, "P0000001", "x" * 70]
    arrow = pa.array(ids)
    want = subject_partition(np.asarray(ids, dtype=object), 7)  # how partition_extract calls it
    assert subject_partition(arrow, 7).tolist() == want.tolist()
    assert subject_partition(pa.chunked_array([arrow[:3], arrow[3:]]), 7).tolist() == want.tolist()
    assert subject_partition(arrow.cast(pa.large_string()), 7).tolist() == want.tolist()
    assert subject_partition(pd.Series(ids, dtype="str"), 7).tolist() == want.tolist()
    assert want[0] == want[5] and want[2] == want[4]  # same id, same part; missing reads as ''
