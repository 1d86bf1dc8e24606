"""The notes' scrub begun before the other tables (`release.transform._begun_ahead`): its
forked workers scrub while the release process transforms the structured tables. The
released files are byte for byte those of the release that scrubs in this process, after
the other tables, under the same keys."""

from __future__ import annotations

import hashlib
import importlib
from deidflow.release import cores, run_release

stage = importlib.import_module("deidflow.release.transform")  # the package's `transform` is the stage function


def _files(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).parts[0] in ("data", "aggregates")}


def test_notes_scrubbed_on_cores_ahead_of_the_tables_release_the_same_files(env, monkeypatch):
    monkeypatch.setattr(cores, "MIN_ROWS", 10**9)  # one process, notes in their policy order
    one = run_release(env.policy)
    one_files = _files(env.releases / one.release_id)
    (env.releases / one.release_id).rename(env.root / "one")  # not the rerun short cut

    events: list[str] = []
    started, read = cores.start_on_cores, stage.read_work
    monkeypatch.setattr(cores, "start_on_cores",
                        lambda *a, **k: (events.append("notes scrub started"), started(*a, **k))[1])
    read_columns: dict[str, list[str] | None] = {}

    def reading(path, *a, **k):
        events.append(path.parent.name)
        read_columns[path.parent.name] = k.get("columns")
        return read(path, *a, **k)

    monkeypatch.setattr(stage, "read_work", reading)
    monkeypatch.setattr(cores, "MIN_ROWS", 100)  # the notes on two workers, in several chunks
    monkeypatch.setattr(cores, "MIN_CHUNK", 50)
    spread = run_release(env.policy)

    assert spread.release_id == one.release_id and spread.released == one.released
    assert _files(env.releases / spread.release_id) == _files(env.root / "one") == one_files
    assert len(one_files) >= 5 and any(f.startswith("data/notes") for f in one_files)
    # begun first: the workers started before the subject table was read for its transform
    started_at = events.index("notes scrub started")
    assert "patients" not in events[:started_at] and "patients" in events[started_at:], events
    assert not cores._JOBS
    # the release process read the notes table without its text: each worker read its own rows
    assert read_columns["notes"] is not None and "text" not in read_columns["notes"]
    assert "note_id" in read_columns["notes"]


def test_a_failed_notes_table_ends_its_scrub_workers_and_publishes_nothing(env, monkeypatch):
    import multiprocessing

    import pytest

    from deidflow.techniques import registry

    pseudonymise = type(registry.get("pseudonymise"))
    original = pseudonymise.apply

    def failing(self, values, spec, ctx):
        if ctx.table == "notes":  # a column gathered before the scrubbed text
            raise RuntimeError("note_id could not be pseudonymised")
        return original(self, values, spec, ctx)

    monkeypatch.setattr(pseudonymise, "apply", failing)
    monkeypatch.setattr(cores, "MIN_ROWS", 100)
    monkeypatch.setattr(cores, "MIN_CHUNK", 50)
    with pytest.raises(Exception, match="could not be pseudonymised"):
        run_release(env.policy)
    assert not cores._JOBS and not cores._HANDLERS
    assert not multiprocessing.active_children()
    assert not env.releases.exists() or not any(env.releases.iterdir())
