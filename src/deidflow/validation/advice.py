"""What a failed validation gate tells the operator: the exact policy key of each failure
(table and column), the fix that applies to it, and where the report is kept.

Identifiers left in a released column are fixed in that column — drop it, pseudonymise it,
or scrub more — never by relaxing the risk limits, which do not concern it. Risk checks
that fail point at the limit and at generalisation or suppression; weaker limits need the
policy's limits.override, which the review page shows.

The staging directory (where the gate writes its report) is removed when a run fails, so the
report is first copied into the private directory (hospital side; it holds counts, column
names and explanations, no data values).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from deidflow.errors import GateFailed
from deidflow.policy import Policy, Role

FAILED_REPORTS = "failed-validation"

_RISK_LIMITS = (
    ("k_anonymous", "limits.k"),
    ("l_diverse", "limits.l"),
    ("max_class_risk", "limits.max_class_risk"),
    ("overall_risk", "limits.max_overall_risk"),
)


def keep_report(report_json: Path, private_dir: Path, run_id: str) -> Path | None:
    """Copy the gate's validation.json to <private>/failed-validation/<run_id>.json (0600)."""
    if not Path(report_json).is_file():
        return None
    target_dir = Path(private_dir) / FAILED_REPORTS
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = target_dir / f"{run_id}.json"
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(report_json, tmp)
    os.chmod(tmp, 0o600)
    tmp.replace(target)
    return target


def _advice(policy: Policy, outcome: dict[str, Any]) -> tuple[str, str]:
    """(policy key, fix) for one failed expectation."""
    etype = str(outcome.get("type", ""))
    table = str(outcome.get("table", ""))
    columns = [str(c) for c in outcome.get("columns") or []]
    spec = policy.tables.get(table)
    if "direct_identifier" in etype:
        col = next((c for c in columns if spec and c in spec.columns), None)
        key = f"tables.{table}.columns.{col}" if col else f"tables.{table}.columns"
        role = spec.columns[col].role if spec and col else None
        if role is Role.free_text:
            fix = (f"scrub more in {key} (the notes still hold identifiers: check its "
                   "params.kinds and name lists, and make every column that holds the value a "
                   "direct_identifier of its table) or drop the column; the row numbers are in "
                   "the private gate log; the risk limits do not concern identifiers")
        else:
            fix = (f"drop or pseudonymise the column ({key}: technique drop or pseudonymise; "
                   "scrub for free text), or set its identifier_check with a reason if the values "
                   "are not identifiers; the risk limits do not concern identifiers")
        return key, fix
    for marker, limit in _RISK_LIMITS:
        if marker in etype:
            return limit, (
                "generalise the quasi-identifiers further (raise their hierarchy max_level) or "
                "allow more suppression (limits.suppression_budget); a weaker limit needs "
                "limits.override with a reason, shown on the review page")
    if "consented" in etype:
        return "consent", ("a released subject has no valid consent: this is a bug in deidflow; "
                           "report it with the kept validation report")
    if "policy_schema" in etype or "columns_to_match_set" in etype:
        return f"tables.{table}.columns", (
            "make the policy's columns of this table match what is released (each column "
            "listed once, with its role and technique)")
    if columns and spec and columns[0] in spec.columns:
        key = f"tables.{table}.columns.{columns[0]}"
        return key, f"check the technique and hierarchy of {key}"
    return f"tables.{table}" if table else "limits", "see the kept validation report for the failing check"


def gate_failure(policy: Policy, validation: dict[str, Any], kept: Path | None) -> GateFailed:
    """The error a failed gate raises: every failing check with its key; the first one's key
    and fix on the error itself."""
    failed = [e for e in validation.get("expectations", []) if not e.get("success")]
    advised = [(e, *_advice(policy, e)) for e in failed]
    lines = [f"{key}: {e.get('explanation') or e.get('type', '?')}" for e, key, _ in advised]
    where = (f"; the validation report is kept at {kept}" if kept
             else "; no validation report was written")
    if not advised:
        return GateFailed("the validation gate failed, nothing was published" + where,
                          key="limits", fix="see the validation report")
    _, key, fix = advised[0]
    others = sorted({f for _, _, f in advised[1:]} - {fix})
    return GateFailed(
        "the validation gate failed, nothing was published: " + "; ".join(lines) + where,
        key=key,
        fix=fix + ("" if not others else " — and: " + " — ".join(others)),
    )


def report_summary(path: Path) -> dict[str, Any]:
    """The kept report, read back (tests and the operator's tools)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
