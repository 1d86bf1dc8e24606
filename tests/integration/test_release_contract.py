"""A run carries its contract and a release id names one release: the policy is pinned at
prepare (an edit during the run is refused before anything is published, on both executors),
a rerun verifies the existing release before reporting it, and the release id depends on
the day the consent was judged on."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from deidflow import release as stages
from deidflow.errors import DeidflowError, PolicyError
from deidflow.release import run_release


def _edit_policy_during_validate(monkeypatch, policy):
    """Change the recipient to one abroad while the validation gate runs."""
    import importlib

    module = importlib.import_module("deidflow.release.validate")  # the module, not the stage function
    original = module.known_values
    calls = []

    def edit_then_go(work, loaded):
        calls.append(loaded.policy.release.recipient.country)
        policy.write_text(policy.read_text(encoding="utf-8").replace('country: "CN"', 'country: "US"'),
                          encoding="utf-8")
        return original(work, loaded)

    monkeypatch.setattr(module, "known_values", edit_then_go)
    return calls


def _published(env):
    return [p for p in env.releases.iterdir() if not p.name.startswith(".")] if env.releases.exists() else []


def test_a_policy_edited_during_an_in_process_run_is_not_published(env, monkeypatch):
    calls = _edit_policy_during_validate(monkeypatch, env.policy)
    with pytest.raises(PolicyError, match="changed while the release ran"):
        run_release(env.policy)
    assert calls == ["CN"], "the stage ran with the pinned policy"
    assert _published(env) == []
    assert not [p for p in env.releases.iterdir() if p.name.startswith(".staging-")]


def test_a_policy_edited_during_a_flow_run_is_not_published(env, monkeypatch, prefect_harness):
    from flows.release import release_flow

    calls = _edit_policy_during_validate(monkeypatch, env.policy)
    with pytest.raises(PolicyError, match="changed while the release ran"):
        release_flow(policy_path=str(env.policy))
    assert calls == ["CN"]
    assert _published(env) == []


def test_later_stages_use_the_pinned_policy_not_the_file(env):
    work = stages.prepare(env.policy)
    try:
        env.policy.write_text("not: [a policy", encoding="utf-8")  # unreadable from now on
        stages.run_step(stages.PLAN[1], work, lambda fn, parts: [fn(work, i) for i in parts])
        state = stages.RunState.load(work)
        assert state.search.levels, "search ran on the pinned text"
    finally:
        stages.discard(work)


@pytest.mark.parametrize("damage", ["delete a file", "add a row"])
def test_a_rerun_refuses_a_damaged_release_instead_of_reporting_it(env, damage):
    first = run_release(env.policy)
    data = first.release_dir / "data"
    if damage == "delete a file":
        (data / "notes.csv").unlink()
    else:
        with open(data / "patients.csv", "a", encoding="utf-8") as fh:
            fh.write("x,1990,1,110000,汉族\n")
    with pytest.raises(DeidflowError, match="does not match its signed manifest"):
        run_release(env.policy)
    assert _published(env) == [first.release_dir]


def test_a_rerun_reports_the_figures_of_the_release_it_found(env):
    first = run_release(env.policy)
    again = run_release(env.policy)
    assert again.already_released and not first.already_released
    assert again.model_dump(exclude={"already_released"}) == first.model_dump(exclude={"already_released"})


def test_the_release_id_depends_on_the_consent_day(env, monkeypatch):
    # A release judges consent as of its start (issue 17: a past --as-of only for a dry run),
    # so the runs start on those days.
    import importlib

    prepare_module = importlib.import_module("deidflow.release.prepare")  # the module, not the stage

    def run_at(moment: datetime):
        monkeypatch.setattr(prepare_module, "now_utc", lambda: moment)
        return run_release(env.policy)

    a = run_at(datetime(2026, 12, 1, 9, tzinfo=timezone.utc))
    b = run_at(datetime(2026, 12, 1, 17, tzinfo=timezone.utc))
    c = run_at(datetime(2026, 12, 2, 9, tzinfo=timezone.utc))
    assert b.already_released and b.release_id == a.release_id
    assert not c.already_released and c.release_id != a.release_id


def test_stage_outcomes_are_typed_and_a_missing_one_is_an_error(env):
    """A misspelled field is refused, and a record is never built from a stage that did not
    run (it used to read such a gap as 0 and sign it)."""
    from pydantic import ValidationError

    from deidflow.errors import GateFailed
    from deidflow.release.state import TransformOutcome

    with pytest.raises(ValidationError):
        TransformOutcome(suppressed_subjects=0, released_subjects=1, released_rows={}, columns=[],
                         aggregates=[], supressed=3)
    work = stages.prepare(env.policy)
    try:
        state = stages.RunState.load(work)
        assert state.consent.events > 0 and state.counts.subjects_in > 0
        with pytest.raises(GateFailed, match="no search outcome"):
            stages.build_record(stages.pinned_policy(state), state, finished_at=datetime.now(timezone.utc))
    finally:
        stages.discard(work)
