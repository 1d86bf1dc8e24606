"""Recording which subject went out under which pseudonym: the bulk insert (ids that JSON must
escape, chunks, repeats), and the pending record that publish_release keeps open while it
seals the release: invisible to everyone until committed, gone if rolled back or if the
insert fails, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from deidflow.consent.subject_ids import canonical_id
import sqlalchemy as sa

from deidflow.consent import registry as registry_module
from deidflow.errors import ConsentError

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)

AWKWARD = ['P"1', "P\\2", "P\n3", "患者4", "P\x005", "P,6]", "", "P 8\t"]


def _recorded(url: str) -> list[tuple[str, str, str]]:
    """What another connection sees (a plain engine, so only the rows are read)."""
    other = sa.create_engine(url)
    try:
        with other.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT release_id, subject_id, pseudonym FROM release_subjects "
                "ORDER BY release_id, subject_id"))]
    finally:
        other.dispose()


@pytest.mark.parametrize("chunk", [2, 250_000])
def test_ids_that_json_must_escape_are_recorded_exactly(registry, registry_url, monkeypatch, chunk):
    monkeypatch.setattr(registry_module, "_SQLITE_RECORD_CHUNK", chunk)
    pseudonyms = [f"ps-{i}-{s}" for i, s in enumerate(AWKWARD)]
    if registry.backend == "postgresql":  # PostgreSQL text cannot hold NUL at all
        subjects = [s.replace("\x00", "0") for s in AWKWARD]
        pseudonyms = [p.replace("\x00", "0") for p in pseudonyms]
    else:
        subjects = AWKWARD
    assert registry.record_release("R", subjects, pseudonyms, NOW) == len(subjects)
    # Recorded in canonical form (trimmed, NFKC), otherwise exactly.
    assert _recorded(registry_url) == sorted(("R", canonical_id(s), p) for s, p in zip(subjects, pseudonyms))


@pytest.mark.parametrize("chunk", [2, 3, 250_000])
def test_plain_ids_across_chunks_keep_the_first_pseudonym(registry, registry_url, monkeypatch, chunk):
    monkeypatch.setattr(registry_module, "_SQLITE_RECORD_CHUNK", chunk)
    subjects = ["P1", "P2", "P3", "P1", "P4", "P2", "P5"]
    pseudonyms = ["a1", "a2", "a3", "b1", "a4", "b2", "a5"]
    registry.record_release("R", subjects, pseudonyms, NOW)
    registry.record_release("R", ["P5", "P6"], ["c5", "c6"], NOW)  # a rerun adds only what is new
    assert _recorded(registry_url) == [("R", "P1", "a1"), ("R", "P2", "a2"), ("R", "P3", "a3"),
                                       ("R", "P4", "a4"), ("R", "P5", "a5"), ("R", "P6", "c6")]


def test_a_pending_record_is_invisible_until_committed(registry, registry_url):
    with registry.begin_release_record("R", ["P1", "P2"], ["a", "b"], NOW) as pending:
        pending.inserted()
        assert _recorded(registry_url) == []  # inserted, not committed: no one else sees it
        pending.commit()
        assert _recorded(registry_url) == [("R", "P1", "a"), ("R", "P2", "b")]
    assert pending.rows == 2


def test_leaving_without_commit_rolls_the_record_back(registry, registry_url):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with registry.begin_release_record("R", ["P1", "P2"], ["a", "b"], NOW) as pending:
            pending.inserted()
            raise Boom()  # e.g. the rename failed: the release was not published
    assert _recorded(registry_url) == []
    # the connection went back to the pool clean: the next record works and commits alone
    registry.record_release("R2", ["P3"], ["c"], NOW)
    assert _recorded(registry_url) == [("R2", "P3", "c")]


def test_a_failed_insert_is_reported_before_anything_is_committed(registry, registry_url):
    with registry.engine.begin() as conn:  # the table is gone: the insert cannot succeed
        conn.execute(sa.text("DROP TABLE release_subjects"))
    with pytest.raises(ConsentError, match="cannot reach the consent registry"):
        with registry.begin_release_record("R", ["P1"], ["a"], NOW) as pending:
            pending.inserted()
            pytest.fail("inserted() must raise what the insert raised")


def test_bad_arguments_are_refused_before_any_thread(registry):
    with pytest.raises(ConsentError, match="2 subject ids but 1 pseudonyms"):
        registry.begin_release_record("R", ["P1", "P2"], ["a"], NOW)
    with pytest.raises(ConsentError, match="missing pseudonym"):
        registry.begin_release_record("R", ["P1", "P2"], ["a", None], NOW)


def test_a_registry_opened_while_a_record_is_pending_does_not_wait_for_it(registry, registry_url):
    """Opening a registry checks its schema; on PostgreSQL re-creating the append-only triggers
    would need a lock the pending insert holds (in the same process: a deadlock). They are only
    created where missing, so a second registry opens at once and sees nothing pending."""
    from concurrent.futures import ThreadPoolExecutor

    with registry.begin_release_record("R", ["P1", "P2"], ["a", "b"], NOW) as pending:
        pending.inserted()
        with ThreadPoolExecutor(1) as pool:
            other = pool.submit(registry_module.ConsentRegistry, registry_url)
            opened = other.result(timeout=30)  # before the fix: waited for ever on PostgreSQL
        assert _recorded(registry_url) == []
        opened.dispose()
        pending.commit()
    assert _recorded(registry_url) == [("R", "P1", "a"), ("R", "P2", "b")]
