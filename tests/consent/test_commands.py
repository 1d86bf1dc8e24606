"""`deidflow consent import|status|withdraw|withdrawn` through the real CLI app."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deidflow.cli import app
from deidflow.consent.registry import ConsentRegistry

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(autouse=True)
def _cli_environment_restored(monkeypatch):
    """The CLI's callback sets Prefect/Dask variables (PREFECT_HOME relative to the working
    directory) in this process; undo them so they do not leak into later tests."""
    from deidflow.cli import quiet_environment  # noqa: F401 - the variables it sets:
    for key in ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_SERVER_UI_ENABLED",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "PREFECT_LOGGING_LEVEL",
                "DASK_LOGGING__DISTRIBUTED"):
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.setenv(key, "")  # records "absent" for teardown
            monkeypatch.delenv(key)


def invoke(*args: str):
    return runner.invoke(app, ["consent", *args])


@pytest.fixture
def policy(tmp_path) -> Path:
    """The example policy in a temp dir, its registry a path relative to the policy file."""
    text = (REPO / "configs" / "release.yaml").read_text(encoding="utf-8")
    old = '"sqlite:///../.deidflow/consent.db"'
    assert old in text
    text = text.replace(old, '"sqlite:///state/consent.db"')
    text = text.replace("file: hierarchies/", f"file: {REPO / 'configs' / 'hierarchies'}/")
    path = tmp_path / "policies" / "release.yaml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    return path


def test_import_is_idempotent_and_reads_the_registry_relative_to_the_policy(policy, fixtures, monkeypatch, tmp_path):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    first = invoke("import", str(fixtures / "consents.csv"), "--policy", str(policy))
    assert first.exit_code == 0, first.output
    assert "18 events read, 18 new, 0 already recorded" in first.output
    db = policy.parent / "state" / "consent.db"
    assert db.is_file() and not (elsewhere / "state").exists()
    again = invoke("import", str(fixtures / "consents.csv"), "--policy", str(policy))
    assert "18 events read, 0 new, 18 already recorded" in again.output
    fhir = invoke("import", str(fixtures / "consents_r5.json"), "--format", "fhir", "--registry", f"sqlite:///{db}")
    assert fhir.exit_code == 0 and "5 new" in fhir.output
    assert ConsentRegistry(f"sqlite:///{db}").count_events() == 23


def test_import_errors_are_clear_and_exit_2(tmp_path, fixtures, registry_url):
    bad = tmp_path / "bad.csv"
    bad.write_text((fixtures / "consents.csv").read_text(encoding="utf-8").replace("E00003,P0000004,granted",
                                                                                  "E00003,P0000004,given"), encoding="utf-8")
    res = invoke("import", str(bad), "--registry", registry_url)
    assert res.exit_code == 2
    assert "row 4, field 'event'" in res.output and "Fix:" in res.output and "Traceback" not in res.output
    assert ConsentRegistry(registry_url).count_events() == 0
    both = invoke("import", str(bad), "--registry", registry_url, "--policy", "x.yaml")
    assert both.exit_code == 2 and "exactly one of --registry and --policy" in both.output
    neither = invoke("import", str(bad))
    assert neither.exit_code == 2
    fmt = invoke("import", str(fixtures / "consents.csv"), "--format", "xml", "--registry", registry_url)
    assert fmt.exit_code == 2


def test_status_and_withdraw(tmp_path, fixtures, registry_url):
    assert invoke("import", str(fixtures / "consents.csv"), "--registry", registry_url).exit_code == 0
    summary = invoke("status", "--registry", registry_url)
    assert summary.exit_code == 0, summary.output
    assert "events" in summary.output and "18" in summary.output
    assert "deidflow-test" not in summary.output  # the PostgreSQL password is redacted

    one = invoke("status", "P0000012", "--registry", registry_url, "--as-of", "2024-05-01")
    assert one.exit_code == 0, one.output
    assert "demographics;diagnoses" in one.output and "E00013" not in one.output  # amendment not yet
    now = invoke("status", "P0000012", "--registry", registry_url)
    assert "E00013" in now.output and "in force" in now.output
    assert "no consent recorded for P404" in invoke("status", "P404", "--registry", registry_url).output

    w = invoke("withdraw", "P0000012", "--reason", "signed form, ward 3", "--at", "2026-01-05T10:00:00",
               "--registry", registry_url)
    assert w.exit_code == 0, w.output
    assert "1 consent(s) withdrawn as of 2026-01-05T02:00:00+00:00" in w.output  # Beijing time
    again = invoke("withdraw", "P0000012", "--reason", "signed form, ward 3", "--at", "2026-01-05T10:00:00",
                   "--registry", registry_url)
    assert again.exit_code == 0 and "nothing to withdraw" in again.output
    after = invoke("status", "P0000012", "--registry", registry_url)
    assert "withdrawn" in after.output
    reg = ConsentRegistry(registry_url)
    snap = reg.snapshot(datetime.now(timezone.utc), subject_ids=["P0000012"])
    assert snap.current["event"].tolist() == ["withdrawn"]
    reg.dispose()


@pytest.mark.parametrize("args, message", [
    (["--at", "2999-01-01"], "is in the future"),
    (["--at", "soon"], "is not a date"),
    (["--reason", " "], "the reason is empty"),
    (["--form-sha256", "abc"], "64-hex"),
])
def test_withdraw_refuses_bad_options(registry_url, args, message):
    base = {"--reason": "phone", "--registry": registry_url}
    opts = dict(base)
    opts.update(dict(zip(args[::2], args[1::2])))
    res = invoke("withdraw", "P1", *[x for kv in opts.items() for x in kv])
    assert res.exit_code == 2 and message in res.output, res.output


def test_withdrawn_lists_releases_with_pseudonyms(registry_url, fixtures):
    reg = ConsentRegistry(registry_url)
    empty = invoke("withdrawn", "--registry", registry_url)
    assert empty.exit_code == 0 and "no released subject has withdrawn" in empty.output
    invoke("import", str(fixtures / "consents.csv"), "--registry", registry_url)
    reg.record_release("rel-2026-01", ["P0000001", "P0000010"], ["pz-aaaa", "pz-bbbb"],
                       datetime(2026, 1, 1, tzinfo=timezone.utc))
    invoke("withdraw", "P0000010", "--reason", "email", "--at", "2026-02-01", "--registry", registry_url)
    res = invoke("withdrawn", "--registry", registry_url)
    assert res.exit_code == 0, res.output
    assert "rel-2026-01" in res.output and "pz-bbbb" in res.output
    assert "pz-aaaa" not in res.output and "P0000010" not in res.output  # ids only on request
    shown = invoke("withdrawn", "--registry", registry_url, "--subjects")
    assert "P0000010" in shown.output
    reg.dispose()
