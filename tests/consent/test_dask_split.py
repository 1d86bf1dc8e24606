"""The Dask engine's consent split (release.write_events): the registry streamed into one
Arrow work file per input partition. Every event lands in its subject's partition (the same
hash as `deidflow partition`), nothing is lost or repeated, each part reads back as the frame
the snapshot would give its gate, and the summary is the snapshot's own."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from consent_helpers import event, frame

from deidflow.consent import registry as registry_module
from deidflow.consent.registry import SNAPSHOT_SCHEMA, ConsentSnapshot
from deidflow.io import read_work
from deidflow.partitions import subject_partition
from deidflow.release import WorkDir, write_events

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _registry_with_history(registry):
    rows = [event(f"E{i:03d}", f"P{i % 23:04d}", consent_id=f"C{i % 23}-{i % 3}") for i in range(120)]
    for i in range(0, 120, 11):
        rows[i].update(event="withdrawn", recorded_at=pd.Timestamp("2025-06-01T10:00:00+08:00"))
    rows[5].update(guardian_name="王\x1f芳", grantor="guardian")  # forces the row-by-row read
    registry.append_events(frame(rows))


@pytest.mark.parametrize("parts", [1, 5])
def test_split_puts_each_event_in_its_subjects_partition(registry, tmp_path, monkeypatch, parts):
    monkeypatch.setattr(registry_module, "_SQLITE_READ_CHUNK", 17)
    monkeypatch.setattr(registry_module, "_PG_READ_BLOCK", 1 << 11)
    _registry_with_history(registry)
    snap = registry.snapshot(NOW)
    work = WorkDir(tmp_path, private=tmp_path, output=tmp_path / "out")
    summary = write_events(work, registry, NOW, parts)
    assert summary == snap.summary()
    seen = []
    for i in range(parts):
        part = read_work(work.events(i))
        assert (subject_partition(pa.array(part["subject_id"].astype("str").array), parts) == i).all()
        seen.append(part)
        # What the partition's gate builds from its part is the snapshot restricted to it
        # (the order of the current rows may differ: the gate's verdict does not depend on it).
        mine = snap.events.loc[snap.events["subject_id"].isin(part["subject_id"])]
        want = ConsentSnapshot.from_events(mine.reset_index(drop=True), NOW).current
        got = ConsentSnapshot.from_events(part, NOW).current
        assert sorted(got["event_id"]) == sorted(want["event_id"])
        assert sorted(zip(got["consent_id"], got["event"])) == sorted(zip(want["consent_id"], want["event"]))
    both = pd.concat(seen, ignore_index=True).sort_values("seq")
    assert both["event_id"].tolist() == snap.events.sort_values("seq")["event_id"].tolist()


def test_split_of_an_empty_registry_writes_empty_readable_parts(registry, tmp_path):
    work = WorkDir(tmp_path, private=tmp_path, output=tmp_path / "out")
    summary = write_events(work, registry, NOW, 3)
    assert summary["events"] == 0
    for i in range(3):
        path = work.events(i)
        assert pa.feather.read_table(path).schema.equals(SNAPSHOT_SCHEMA)
        assert read_work(path).empty
    assert np.array_equal(sorted(p.name for p in (tmp_path / "consent").iterdir()),
                          [work.events(i).name for i in range(3)])
