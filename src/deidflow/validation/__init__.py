"""Great Expectations release gate: suites generated from the policy, custom privacy
expectations, self-contained Data Docs. Import is lazy-ish: GX itself takes seconds to import,
so the CLI should import this package only when it validates (or `preload` it while it waits)."""

from __future__ import annotations

import sys
import threading
from typing import Any

__all__ = ["validate_release", "ValidationReport", "ExpectationOutcome", "load_suite", "preload"]


def preload(*, quiet: str) -> bool:
    """Import the gate (and Great Expectations, seconds of module code) now, on this thread,
    if every other Python thread alive is named `quiet…`: threads the caller knows load no
    module while this runs. Returns whether the gate is imported.

    Why this cannot race: two threads importing at the same time can each hold a module lock
    the other waits for, and Python breaks such a cycle by handing one of them a module that
    is still half-initialised ("partially initialized module great_expectations...", seen
    here once with a background import). That takes a second thread that imports. Here the
    only other threads are the quiet ones, and no thread can start one meanwhile (this thread
    is busy importing; the quiet ones start none), so the import runs as if single-threaded.
    Anywhere else (a Prefect task beside Prefect's own threads, a test runner's threads) it
    does nothing and the gate is imported when validation needs it, as before.

    `prepare` calls it while its consent-snapshot thread (whose database driver and dialect
    the registry loads on the calling thread, before the thread starts) reads the registry;
    tests/integration/test_release_gate_import.py asserts that thread loads no module."""
    if "deidflow.validation.gate" in sys.modules:
        return True
    me = threading.current_thread()
    if any(t is not me and not t.name.startswith(quiet) for t in threading.enumerate()):
        return False
    import deidflow.validation.gate  # noqa: F401

    return True


def __getattr__(name: str) -> Any:
    if name in ("validate_release", "ValidationReport", "ExpectationOutcome"):
        from deidflow.validation import gate

        return getattr(gate, name)
    if name == "load_suite":
        from deidflow.validation.suite import load_suite

        return load_suite
    raise AttributeError(name)
