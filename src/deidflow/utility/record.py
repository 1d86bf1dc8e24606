"""The utility evidence as the manifest records it: plain, frozen data (aggregates only).

Kept apart from the computation (`evidence.py`) so that the manifest's record model imports
pydantic only.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Frozen):
    labels: list[str]
    counts: list[int | None]  # None: a small cell, withheld


class ColumnUtility(_Frozen):
    column: str
    role: str
    technique: str
    level: int | None = None
    top_level: int | None = None
    precision: float | None = None
    precision_with_suppression: float | None = None
    nue_bits: float | None = None
    nue_normalised: float | None = None
    tvd: float | None = None
    before: Distribution | None = None
    after: Distribution | None = None
    note: str = ""


class GroupShare(_Frozen):
    label: str
    subjects: int
    suppressed_share: float
    loss: float
    flag_suppression: bool
    flag_loss: bool


class GroupBreakdown(_Frozen):
    column: str
    kind: str
    groups: list[GroupShare]


class ModelComparison(_Frozen):
    target: str
    model: str
    features: list[str]
    classes: int
    population: int
    train_original: int
    train_released: int
    test: int
    sampled: bool
    accuracy_original: float
    accuracy_released: float
    accuracy_difference: float
    auc_original: float | None
    auc_released: float | None
    auc_difference: float | None
    seconds: float


class UtilityEvidence(_Frozen):
    """The review page's utility section and the manifest's `utility_evidence`."""

    table: str
    subjects: int
    released: int
    suppressed_share: float
    mean_record_loss: float
    search_loss: str
    search_loss_description: str
    small_cell: int
    columns: list[ColumnUtility]
    groups: list[GroupBreakdown]
    flag_rule: str
    model: ModelComparison | None = None
    model_note: str = ""
    definitions: dict[str, str]
    seconds: float
