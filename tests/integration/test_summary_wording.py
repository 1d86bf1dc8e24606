"""What the CLI's summary and the flow's Prefect artifact say of validation: "passed" only
when the limits met GB/T 42460; a release published under a `limits.override` says so, with
the departures approved (the review page's headline does the same)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from deidflow.release import ReleaseSummary

BASE = dict(release_id="agr-1-abc", release_dir=None, subjects_in=10, excluded_for_consent=1,
            suppressed=0, released=9, k=2, levels={}, risk_after={"k": 2}, validation_ok=True)


def _cli_text(summary: ReleaseSummary, monkeypatch) -> str:
    from deidflow import cli

    buf = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=buf, width=200))
    cli._print_summary(summary)
    return buf.getvalue()


@pytest.mark.parametrize("departures, want", [
    ([], "passed"),
    (["limits.k: 1 < 2"], "passed under an approved override of limits.k: 1 < 2"),
    (["limits.k: 1 < 2", "limits.max_overall_risk: 0.2 > 0.05"],
     "passed under an approved override of limits.k: 1 < 2; limits.max_overall_risk: 0.2 > 0.05"),
])
def test_validation_wording_names_the_override(departures, want, monkeypatch):
    from flows.release import summary_markdown

    s = ReleaseSummary(**BASE, limits_override=departures)
    assert s.validation_text == want
    assert f"| Validation | {want} |" in summary_markdown(s)
    line = [ln for ln in _cli_text(s, monkeypatch).splitlines() if "validation" in ln]
    assert len(line) == 1 and line[0].split("validation", 1)[1].strip(" │") == want


def test_a_failed_validation_is_never_passed(monkeypatch):
    s = ReleaseSummary(**{**BASE, "validation_ok": False}, limits_override=["limits.k: 1 < 2"])
    assert s.validation_text == "FAILED"
