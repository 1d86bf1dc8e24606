"""Canonical subject ids, the run's consent moment, and the re-check by arrival in the registry
(not by signing time), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from consent_helpers import event, frame
from hypothesis import given
from hypothesis import strategies as st

from deidflow.consent.moment import run_as_of
from deidflow.consent.subject_ids import canonical_id, canonical_ids, id_problems
from deidflow.errors import ConsentError

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


# --- canonical ids ---------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["P0000001", " P0000001", "P0000001\u3000", "Ｐ００００００１", "\tP0000001 "])
def test_spellings_of_one_id_are_one_canonical_id(spelling):
    assert canonical_id(spelling) == "P0000001"
    assert canonical_ids([spelling]).to_pylist() == ["P0000001"]


def test_the_resident_id_check_character_is_upper_cased_and_case_is_otherwise_kept():
    assert canonical_ids(["11010519900101103x", "p0000001", "ab12x", None]).to_pylist() == [
        "11010519900101103X", "p0000001", "ab12x", None]


@pytest.mark.parametrize("bad,kind", [("\ufeffP1", "U+FEFF"), ("P\u200b1", "U+200B"), ("P\x001", "U+0000"),
                                      ("PА01", "scripts"), ("Pα1", "scripts")])
def test_invisible_characters_and_mixed_scripts_are_refused(bad, kind):
    found = id_problems(["P1", bad])
    assert list(found) == [1] and kind in found[1]


def test_chinese_ids_may_mix_han_and_latin():
    assert id_problems(["门诊A001", "P0000001", "住院123"]) == {}


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=12))
def test_canonical_ids_agree_with_one_at_a_time_and_are_stable(text):
    once = canonical_ids([text]).to_pylist()[0]
    assert once == canonical_id(text)
    assert canonical_id(once) == once


# --- the run's consent moment ----------------------------------------------------------------
def test_the_consent_moment_is_now_a_past_one_only_for_a_dry_run():
    assert run_as_of(None, NOW) == NOW
    past = "2026-06-01T10:00:00+08:00"
    with pytest.raises(ConsentError, match="in the past"):
        run_as_of(past, NOW)
    assert run_as_of(past, NOW, dry_run=True) == datetime(2026, 6, 1, 2, 0, tzinfo=timezone.utc)
    with pytest.raises(ConsentError, match="future"):
        run_as_of("2027-01-01", NOW, dry_run=True)


def test_a_naive_time_is_china_time():
    # 18:00 China = 10:00 UTC = NOW: accepted as now. Read as UTC it would be 8 hours ahead.
    assert run_as_of("2026-12-01T18:00:00", NOW) == NOW
    assert run_as_of(datetime(2026, 12, 1, 18, 0), NOW) == NOW


# --- re-check by arrival ---------------------------------------------------------------------
def test_a_withdrawal_signed_before_a_release_but_imported_after_is_found(registry):
    registry.append_events(frame([event("g1", "S1"), event("g2", "S2"), event("g3", "S3")]))
    as_of = pd.Timestamp("2026-11-01T10:00:00+08:00")
    snap = registry.snapshot(as_of)
    registry.record_release("R1", ["S1", "S2", "S3"], ["p1", "p2", "p3"], as_of.to_pydatetime(),
                            snapshot=snap.summary())
    assert registry.withdrawn_since_release().empty
    # Signed a month before the release, reaching the registry only now; a spelling variant.
    registry.append_events(frame([event("w1", " Ｓ1", event="withdrawn",
                                        recorded_at=pd.Timestamp("2026-10-01T09:00:00+08:00"))]))
    found = registry.withdrawn_since_release()
    assert found[["release_id", "pseudonym", "subject_id"]].values.tolist() == [["R1", "p1", "S1"]]


def test_a_withdrawal_the_snapshot_held_is_not_reported_again(registry):
    early = pd.Timestamp("2026-10-01T09:00:00+08:00")
    # A withdrawal of a purpose this release does not use: S1 is released, and the withdrawal
    # was in the release's snapshot, so there is nothing new to act on.
    registry.append_events(frame([event("g1", "S1"), event("w1", "S1", consent_id="other", event="withdrawn",
                                                           purposes="marketing", recorded_at=early)]))
    as_of = pd.Timestamp("2026-11-01T10:00:00+08:00")
    registry.record_release("R1", ["S1"], ["p1"], as_of.to_pydatetime(), snapshot=registry.snapshot(as_of).summary())
    assert registry.withdrawn_since_release().empty


def test_seqs_the_snapshot_could_not_see_count_as_not_held(registry):
    """A transaction still open when the snapshot was read commits later with a lower seq:
    its events are recorded as missing from the snapshot and found by the re-check."""
    registry.append_events(frame([event("g1", "S1"), event("g2", "S2")]))
    as_of = pd.Timestamp("2026-11-01T10:00:00+08:00")
    summary = registry.snapshot(as_of).summary()
    assert summary["seq_missing"] == []
    registry.append_events(frame([event("w2", "S2", event="withdrawn",
                                        recorded_at=pd.Timestamp("2026-10-01T09:00:00+08:00"))]))
    # As if the snapshot had been read while w2's transaction was open: it saw seq 1..3 but
    # not w2's seq.
    seqs = registry.snapshot(as_of).events.set_index("event_id")["seq"]
    held = dict(summary, seq_high=int(seqs["w2"]) + 1, seq_missing=[[int(seqs["w2"]), int(seqs["w2"])]])
    registry.record_release("R1", ["S1", "S2"], ["p1", "p2"], as_of.to_pydatetime(), snapshot=held)
    assert registry.withdrawn_since_release()["subject_id"].tolist() == ["S2"]


def test_a_consent_id_cannot_belong_to_two_subjects(registry):
    registry.append_events(frame([event("g1", "S1", consent_id="C")]))
    with pytest.raises(ConsentError, match="more than one subject"):
        registry.append_events(frame([event("g2", "S2", consent_id="C")]))
    with pytest.raises(ConsentError, match="more than one subject"):
        registry.append_events(frame([event("g3", "S3", consent_id="D"), event("g4", "S4", consent_id="D")]))
    assert registry.count_events() == 1


def test_the_registry_refuses_an_invisible_character_in_an_id(registry):
    with pytest.raises(ConsentError, match="U\\+200B"):
        registry.append_events(frame([event("g1", "S\u200b1")]))
    assert registry.count_events() == 0
