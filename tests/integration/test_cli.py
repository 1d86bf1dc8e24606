"""The command line a data engineer uses: a release prints where things are; bad input is a
clear error with exit code 2, never a traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from deidflow.cli import app

from .conftest import write_policy

runner = CliRunner()


def test_release_command_prints_summary(env):
    res = runner.invoke(app, ["release", str(env.policy), "--no-prefect"])
    assert res.exit_code == 0, res.output
    for word in ("excluded for consent", "k reached", "manifest", "review page"):
        assert word in res.output
    rel = next(env.releases.iterdir())
    assert str(rel.name) in res.output.replace("\n", "")
    ver = runner.invoke(app, ["verify", str(rel), "--policy", str(env.policy)])
    assert ver.exit_code == 0, ver.output


def test_policy_typo_is_a_clear_error(env):
    bad = write_policy(env.root, env.data, edits={r"suppression_budget:": "suppresion_budget:"}, name="typo.yaml")
    res = runner.invoke(app, ["release", str(bad), "--no-prefect"])
    assert res.exit_code == 2
    assert "suppresion_budget" in res.output and "Traceback" not in res.output
    assert not env.releases.exists() or not any(env.releases.iterdir())
