"""Great Expectations release gate: suites generated from the policy, custom privacy
expectations, self-contained Data Docs. Import is lazy-ish: GX itself takes ~3 s to import,
so the CLI should import this package only when it validates."""

from __future__ import annotations

from typing import Any

__all__ = ["validate_release", "ValidationReport", "ExpectationOutcome", "load_suite"]


def __getattr__(name: str) -> Any:
    if name in ("validate_release", "ValidationReport", "ExpectationOutcome"):
        from deidflow.validation import gate

        return getattr(gate, name)
    if name == "load_suite":
        from deidflow.validation.suite import load_suite

        return load_suite
    raise AttributeError(name)
