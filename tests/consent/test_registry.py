"""The registry on SQLite and PostgreSQL for real: append-only, idempotent imports, snapshots
as of a moment, the release history and the withdrawn-since-release check."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest
import sqlalchemy as sa
from consent_helpers import event, frame

from deidflow.consent.importers import import_consent_file, read_consent_file
from deidflow.consent.registry import ConsentRegistry
from deidflow.errors import ConsentError


@pytest.mark.parametrize("name", ["consents.csv", "consents_r4.json", "consents_r5.json"])
def test_importing_the_same_file_twice_changes_nothing(registry, fixtures, name):
    first = import_consent_file(registry, fixtures / name)
    assert first.read == first.new > 0
    before = registry.snapshot(datetime.now(timezone.utc))
    second = import_consent_file(registry, fixtures / name)
    assert (second.read, second.new, second.already_recorded) == (first.read, 0, first.read)
    after = registry.snapshot(datetime.now(timezone.utc))
    assert registry.count_events() == first.read
    assert after.digest == before.digest
    pd.testing.assert_frame_equal(after.current, before.current)


def test_events_round_trip_with_their_terms(registry, fixtures):
    src = read_consent_file(fixtures / "consents.csv")
    import_consent_file(registry, fixtures / "consents.csv")
    got = registry.snapshot(datetime.now(timezone.utc)).events.set_index("event_id").sort_index()
    src = src.set_index("event_id").sort_index()
    assert list(got.index) == list(src.index)
    assert (got["recorded_at"] == src["recorded_at"]).all()
    for col in ("valid_from", "valid_until"):
        assert (got[col] == src[col]).all()
    for col in ("subject_id", "consent_id", "event", "grantor", "purposes", "recipients",
                "data_categories", "notice_version", "form_sha256"):
        assert got[col].astype(str).tolist() == src[col].astype(str).tolist(), col
    assert got["separate"].tolist() == src["separate"].tolist()
    assert got["cross_border"].tolist() == src["cross_border"].tolist()
    guardian = got.loc["E00011"]
    assert (guardian["grantor"], guardian["guardian_name"], guardian["guardian_id"]) == (
        "guardian", "王芳", "110105198001011238")


def test_an_event_id_reused_for_other_content_is_refused(registry):
    registry.append_events(frame([event("E1", "P1")]))
    changed = frame([event("E1", "P1", purposes="marketing")])
    with pytest.raises(ConsentError, match="already recorded with different content") as err:
        registry.append_events(changed, source="edited.csv")
    assert err.value.file == "edited.csv" and err.value.column == "event_id"
    assert "amended" in err.value.fix
    assert registry.count_events() == 1


@pytest.mark.parametrize("statement", [
    "UPDATE consent_events SET purposes = 'marketing'",
    "DELETE FROM consent_events",
    "UPDATE release_subjects SET pseudonym = 'x'",
    "DELETE FROM release_subjects",
])
def test_the_database_refuses_to_rewrite_history(registry, statement):
    registry.append_events(frame([event("E1", "P1")]))
    registry.record_release("R1", ["P1"], ["ps-1"], datetime(2025, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with registry.engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert registry.count_events() == 1
    snap = registry.snapshot(datetime.now(timezone.utc))
    assert snap.events["purposes"].tolist() == ["ai-model-training"]
    assert len(registry.withdrawn_since_release()) == 0
    with registry.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT pseudonym FROM release_subjects")).scalar() == "ps-1"


@pytest.mark.postgres
def test_postgresql_refuses_truncate(pg_registry_url):
    reg = ConsentRegistry(pg_registry_url)
    reg.append_events(frame([event("E1", "P1")]))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with reg.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE consent_events"))
    assert reg.count_events() == 1
    reg.dispose()


def test_snapshot_as_of_the_run_start_ignores_a_later_withdrawal(registry, fixtures):
    import_consent_file(registry, fixtures / "consents.csv")
    run_start = pd.Timestamp("2026-01-10T08:00:00+08:00")
    before = registry.snapshot(run_start)
    assert registry.withdraw("P0000001", at=pd.Timestamp("2026-01-10T08:30:00+08:00"),
                             source="test") == 1
    again = registry.snapshot(run_start)
    assert again.digest == before.digest
    pd.testing.assert_frame_equal(again.current, before.current)
    later = registry.snapshot(pd.Timestamp("2026-01-10T09:00:00+08:00"))
    state = later.current.set_index("consent_id")["event"]
    assert state["P0000001"] == "withdrawn"
    assert before.current.set_index("consent_id")["event"]["P0000001"] == "granted"
    assert later.summary()["events"] == before.summary()["events"] + 1


def test_withdrawal_is_recorded_once_and_only_for_consents_in_force(registry, fixtures):
    import_consent_file(registry, fixtures / "consents.csv")
    at = pd.Timestamp("2026-02-01T10:00:00+08:00")
    assert registry.withdraw("P0000012", at=at) == 1
    assert registry.withdraw("P0000012", at=at) == 0  # same withdrawal again: nothing new
    assert registry.withdraw("P0000008", at=at) == 0  # already withdrawn in 2025
    assert registry.withdraw("P9999999", at=at) == 0  # no consent at all
    snap = registry.snapshot(at)
    mine = snap.events.loc[snap.events["subject_id"] == "P0000012"]
    assert mine["event"].tolist() == ["granted", "amended", "withdrawn"]
    # The withdrawal carries the terms it ends (the latest amendment's categories).
    assert mine["data_categories"].iloc[-1] == mine["data_categories"].iloc[1]


def test_withdrawn_since_release_names_the_pseudonym_in_each_release(registry):
    registry.append_events(frame([event(f"G{i}", f"P{i}") for i in range(4)]))
    t1 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    t2 = datetime(2025, 6, 1, tzinfo=timezone.utc)
    registry.record_release("R1", ["P0", "P1", "P2"], ["a0", "a1", "a2"], t1)
    registry.record_release("R1", ["P0", "P1", "P2"], ["a0", "a1", "a2"], t1)  # idempotent
    registry.record_release("R2", ["P1", "P3"], ["b1", "b3"], t2)
    registry.withdraw("P1", at=datetime(2025, 3, 1, tzinfo=timezone.utc))  # after R1, before R2
    registry.withdraw("P3", at=datetime(2025, 7, 1, tzinfo=timezone.utc))  # after R2
    found = registry.withdrawn_since_release()
    got = sorted(zip(found["release_id"], found["pseudonym"], found["subject_id"]))
    assert got == [("R1", "a1", "P1"), ("R2", "b3", "P3")]
    assert found["withdrawn_at"].dt.tz is not None


def test_record_release_refuses_mismatched_lengths(registry):
    with pytest.raises(ConsentError, match="2 subject ids but 1 pseudonyms"):
        registry.record_release("R", ["a", "b"], ["x"], datetime.now(timezone.utc))


def test_an_unreachable_postgresql_is_a_clear_error_without_the_password():
    url = "postgresql+psycopg://someone:s3cret-pw@127.0.0.1:1/nothing"
    with pytest.raises(ConsentError) as err:
        ConsentRegistry(url, connect_timeout=2)
    text = err.value.render()
    assert "s3cret-pw" not in text
    assert "cannot reach the consent registry" in text and err.value.key == "consent.registry"
    assert "PostgreSQL is running" in err.value.fix


@pytest.mark.parametrize("url, expect", [
    ("mysql://u@h/db", "unsupported consent registry backend"),
    ("not a url", "is not a database URL"),
])
def test_unsupported_urls_are_refused(url, expect):
    with pytest.raises(ConsentError, match=expect):
        ConsentRegistry(url)


def test_sqlite_in_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ConsentError, match="cannot reach the consent registry") as err:
        ConsentRegistry(f"sqlite:///{tmp_path}/no/such/dir/consent.db")
    assert "directory" in err.value.fix
