"""The consent drop folder: imported files move to imported/, malformed ones to rejected/ with a
note, a rerun does nothing; and the same under Prefect's test harness as a real flow run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deidflow.consent.registry import ConsentRegistry
from deidflow.consent.sync import import_dropped_file, pending_files, summarise
from deidflow.errors import ConsentError

REPO = Path(__file__).resolve().parents[2]


def drop_folder(tmp_path: Path, fixtures: Path) -> Path:
    drop = tmp_path / "drop"
    drop.mkdir()
    for name in ("consents.csv", "consents_r4.json", "consents_r5.json"):
        shutil.copy(fixtures / name, drop / name)
    bad = (fixtures / "consents.csv").read_text(encoding="utf-8").replace(",v2.1,", ",,", 1)
    (drop / "broken.csv").write_text(bad, encoding="utf-8")
    (drop / ".hidden.csv").write_text("x", encoding="utf-8")
    (drop / "partial.csv.part").write_text("x", encoding="utf-8")
    (drop / "readme.txt").write_text("x", encoding="utf-8")
    return drop


def test_sync_imports_moves_and_rejects(tmp_path, fixtures, registry):
    drop = drop_folder(tmp_path, fixtures)
    files = pending_files(drop)
    assert [p.name for p in files] == ["broken.csv", "consents.csv", "consents_r4.json", "consents_r5.json"]
    summary = summarise(import_dropped_file(registry, p) for p in files)
    assert summary == {"files": 4, "imported": 3, "rejected": 1, "events_read": 28, "events_new": 28,
                       "rejected_files": ["broken.csv"]}
    assert registry.count_events() == 28
    assert pending_files(drop) == []
    assert len(list((drop / "imported").glob("*-consents.csv"))) == 1
    note = next((drop / "rejected").glob("*-broken.csv.error.txt"))
    assert "field 'notice_version'" in note.read_text(encoding="utf-8")
    # Dropping the same file again (a daily export with the same name): archived, nothing new.
    shutil.copy(fixtures / "consents.csv", drop / "consents.csv")
    again = import_dropped_file(registry, drop / "consents.csv")
    assert (again["status"], again["new"]) == ("imported", 0)
    assert len(list((drop / "imported").glob("*consents.csv"))) == 2
    assert registry.count_events() == 28


def test_an_unreachable_registry_leaves_the_file_for_the_next_run(tmp_path, fixtures):
    drop = drop_folder(tmp_path, fixtures)
    reg = ConsentRegistry(f"sqlite:///{tmp_path / 'c.db'}")
    # The registry's directory disappears after it was opened: a registry error, not the file's.
    reg.engine.dispose()
    (tmp_path / "c.db").unlink()
    (tmp_path / "c.db").mkdir()  # now a directory: SQLite cannot open it
    with pytest.raises(ConsentError) as err:
        import_dropped_file(reg, drop / "consents.csv")
    assert err.value.key == "consent.registry"
    assert (drop / "consents.csv").exists() and not (drop / "rejected").exists()


def test_missing_drop_folder(tmp_path):
    with pytest.raises(ConsentError, match="drop folder does not exist"):
        pending_files(tmp_path / "nope")


def test_consent_sync_flow_under_prefect(prefect_harness, tmp_path, fixtures):
    from flows.consent_sync import consent_sync_flow

    text = (REPO / "configs" / "release.yaml").read_text(encoding="utf-8")
    text = text.replace('"sqlite:///../.deidflow/consent.db"', '"sqlite:///consent.db"')
    text = text.replace("file: hierarchies/", f"file: {REPO / 'configs' / 'hierarchies'}/")
    policy = tmp_path / "release.yaml"
    policy.write_text(text, encoding="utf-8")
    drop = drop_folder(tmp_path, fixtures)

    state = consent_sync_flow(drop_dir=str(drop), policy_path=str(policy), return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    assert (summary["imported"], summary["rejected"], summary["events_new"]) == (3, 1, 28)
    assert ConsentRegistry(f"sqlite:///{tmp_path / 'consent.db'}").count_events() == 28
    rerun = consent_sync_flow(drop_dir=str(drop), policy_path=str(policy))
    assert rerun["files"] == 0 and rerun["events_new"] == 0

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    # Prefect keeps the parameters: paths only.
    assert run.parameters == {"drop_dir": str(drop), "policy_path": str(policy)}

    missing = consent_sync_flow(drop_dir=str(tmp_path / "nope"), policy_path=str(policy), return_state=True)
    assert missing.is_failed()
