"""Technique base class, the context a technique runs in, and the registry."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from deidflow.errors import PolicyError
from deidflow.policy import Column, Role

if TYPE_CHECKING:  # pragma: no cover
    from deidflow.keys import KeyRing


@dataclass
class ApplyContext:
    """What a technique may use besides the column itself.

    `subject_ids` are the raw subject ids aligned with the table's rows (for per-subject keyed
    transforms such as date shifting); `keyring` derives per-recipient keys; `level` is the
    generalisation level the search chose for this column (quasi-identifiers only);
    `frame` is the whole (consented) input table, read-only; `known_identifiers` maps each
    subject id to the identifier strings known from the structured tables (for free-text
    scrubbing); `base_dir` resolves relative paths in parameters (hierarchy files).
    Techniques add counts to `counts` (e.g. cells suppressed), which reach the manifest.
    `memo` is shared by every column and table of one release partition (the caller passes
    one dict to all their contexts): keyed techniques keep there what they computed for one
    column that another can reuse (HMAC labels of values already pseudonymised, a table's
    per-row date offsets for its next date column). It holds no keys, only one-way digests of
    them; it must not outlive the partition or be shared between releases.
    """

    table: str
    column: str
    subject_ids: pd.Series
    keyring: "KeyRing | None" = None
    level: int | None = None
    frame: pd.DataFrame | None = None
    known_identifiers: pd.DataFrame | None = None
    base_dir: Any = None
    counts: dict[str, int] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)

    def count(self, what: str, n: int) -> None:
        self.counts[what] = self.counts.get(what, 0) + int(n)


class Technique:
    """One de-identification technique. Subclasses set `name` and `roles` and override
    `check` (parameters, at policy load) and `apply` (the transform)."""

    name: ClassVar[str]
    roles: ClassVar[frozenset[Role]] = frozenset(Role)
    allowed_params: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            registry.register(cls)

    def check(self, column: str, spec: Column) -> None:
        if spec.role not in self.roles:
            allowed = ", ".join(sorted(r.value for r in self.roles))
            raise PolicyError(
                f"technique '{self.name}' cannot be used for role '{spec.role.value}' "
                f"(column '{column}')",
                fix=f"use it only for roles: {allowed}; or choose another technique",
            )
        unknown = set(spec.params) - self.allowed_params
        if unknown:
            known = ", ".join(sorted(self.allowed_params)) or "none"
            raise PolicyError(
                f"technique '{self.name}' on column '{column}' has unknown parameters "
                f"{sorted(unknown)}",
                fix=f"parameters it accepts: {known}",
            )

    def apply(self, values: pd.Series, spec: Column, ctx: ApplyContext) -> pd.Series | None:
        """The transformed column, or None to drop it from the release."""
        raise NotImplementedError  # every registered technique overrides this

    def describe(self, spec: Column, ctx: ApplyContext) -> dict[str, Any]:
        """Parameters for the manifest. Never a key: fingerprints only."""
        return {"technique": self.name, "params": dict(spec.params)}


class Registry:
    def __init__(self) -> None:
        self._by_name: dict[str, type[Technique]] = {}
        self._loaded = False

    def register(self, cls: type[Technique]) -> None:
        existing = self._by_name.get(cls.name)
        if existing is not None and existing is not cls:
            raise RuntimeError(f"two techniques named {cls.name!r}: {existing} and {cls}")
        self._by_name[cls.name] = cls

    def _load_all(self) -> None:
        if self._loaded:
            return
        import deidflow.techniques as pkg

        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{pkg.__name__}.{mod.name}")
        self._loaded = True

    def names(self) -> list[str]:
        self._load_all()
        return sorted(self._by_name)

    def get(self, name: str) -> Technique:
        self._load_all()
        try:
            return self._by_name[name]()
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, self._by_name, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise PolicyError(
                f"unknown technique '{name}'",
                fix=f"{hint}known techniques: {', '.join(sorted(self._by_name))}",
            ) from None


registry = Registry()
