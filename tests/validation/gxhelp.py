"""Helpers shared by the validation tests."""

from __future__ import annotations

from typing import Any


def raised(result: Any) -> bool:
    """True if GX caught an exception while evaluating (trap 1: it does not raise)."""
    info = result.exception_info or {}
    if "raised_exception" in info:
        return bool(info["raised_exception"])
    return any(v.get("raised_exception") for v in info.values() if isinstance(v, dict))
