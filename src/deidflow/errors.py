"""The one error type users see.

Every failure a user can fix is raised as a `DeidflowError` that names *where* (file, key,
row or column), *what* was expected and found, and *how to fix it*. The CLI prints it without a
traceback and exits with status 2; anything else escaping is a bug in deidflow.
"""

from __future__ import annotations


class DeidflowError(Exception):
    """A user-fixable problem, reported as: where: what. Fix: how."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        row: int | None = None,
        column: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.key = key
        self.row = row
        self.column = column
        self.fix = fix
        super().__init__(self.render())

    def where(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.key:
            parts.append(f"key '{self.key}'")
        if self.column:
            parts.append(f"column '{self.column}'")
        if self.row is not None:
            parts.append(f"row {self.row}")
        return ", ".join(parts)

    def render(self) -> str:
        where = self.where()
        text = f"{where}: {self.message}" if where else self.message
        if self.fix:
            text += f"\n  Fix: {self.fix}"
        return text


class PolicyError(DeidflowError):
    """The release policy is malformed or impossible."""


class InputError(DeidflowError):
    """An input table is unreadable or does not match the policy."""


class ConsentError(DeidflowError):
    """The consent registry or a consent record cannot be used."""


class KeyCustodyError(DeidflowError):
    """A key is missing, unreadable, or kept unsafely."""


class GateFailed(DeidflowError):
    """A release gate (risk limits, validation) refused the release. Nothing was published."""


class VerificationError(DeidflowError):
    """A release directory does not match its signed manifest."""
