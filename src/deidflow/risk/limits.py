"""The privacy limits of a release, stated once for the search and for the gate.

The search (`risk.search`) chooses levels that meet these limits and the validation gate
(`validation.suite`) proves them on the released files. Both read them from here, so that a
criterion the gate checks cannot be one the search forgot: l and t hold on *every* sensitive
column of the subject table, not only on the first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from deidflow.policy import Policy


@dataclass(frozen=True)
class RiskLimits:
    k: int
    l: int | None
    l_variant: str
    c: float | None
    t: float | None
    max_class_risk: float
    max_overall_risk: float
    suppression_budget: float
    release_model: str
    # the subject table's columns the limits are measured over
    quasi_identifiers: tuple[str, ...]
    sensitive_columns: tuple[str, ...]  # l and t hold on each of them
    # how the search measures loss (policy `utility`); not a limit, but the search's statement
    loss_aggregate: str = "arithmetic"
    loss_domain: str = "hierarchy"

    @classmethod
    def from_policy(cls, policy: Policy) -> "RiskLimits":
        lim = policy.limits
        spec = policy.tables[policy.subject_table]
        released = [c for c, s in spec.columns.items() if s.technique != "drop"]
        return cls(
            k=int(lim.k), l=lim.l, l_variant=lim.l_variant, c=lim.c, t=lim.t,
            max_class_risk=policy.max_class_risk, max_overall_risk=lim.max_overall_risk,
            suppression_budget=lim.suppression_budget,
            release_model=policy.release.model.value,
            quasi_identifiers=tuple(c for c in policy.quasi_identifiers() if c in released),
            sensitive_columns=tuple(c for c in policy.sensitive_columns() if c in released),
            loss_aggregate=policy.utility.aggregate, loss_domain=policy.utility.domain,
        )

    @property
    def measures_sensitive(self) -> bool:
        return self.l is not None or self.t is not None

    def measured_sensitive_columns(self) -> tuple[str, ...]:
        """The sensitive columns the search must group by: all of them when l or t is set."""
        return self.sensitive_columns if self.measures_sensitive else ()

    def search_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `risk.search.search` for these limits."""
        return dict(k=self.k, suppression_budget=self.suppression_budget, l=self.l,
                    l_variant=self.l_variant, c=self.c, t=self.t,
                    max_class_risk=self.max_class_risk,
                    max_overall_risk=self.max_overall_risk, release_model=self.release_model,
                    loss_aggregate=self.loss_aggregate, loss_domain=self.loss_domain)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["quasi_identifiers"] = list(self.quasi_identifiers)
        out["sensitive_columns"] = list(self.sensitive_columns)
        return out
