"""Builders shared by the technique tests (not a test module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from deidflow.keys import KeyRing
from deidflow.policy import Column, Hierarchy, Role
from deidflow.techniques import ApplyContext

MASTER = bytes(range(32))
REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "release.yaml"


def ring(master: bytes = MASTER, recipient: str = "rcp-a", agreement: str = "dsa-1", **kw: Any) -> KeyRing:
    return KeyRing(master, recipient_id=recipient, agreement_id=agreement, **kw)


def col(role: str, technique: str, params: dict | None = None, hierarchy: dict | None = None) -> Column:
    return Column(
        role=Role(role), technique=technique, params=params or {},
        hierarchy=Hierarchy(**hierarchy) if hierarchy else None,
    )


def ctx(values: pd.Series, column: str = "c", subjects: pd.Series | None = None, **kw: Any) -> ApplyContext:
    if subjects is None:
        subjects = pd.Series(range(len(values)), index=values.index).astype(str)
    return ApplyContext(table="t", column=column, subject_ids=subjects, **kw)
