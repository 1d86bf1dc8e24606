"""validate computes the utility evidence in a forked process while it runs the gate: the
result comes back from another process, and a process that fails gives way to computing it
in this one (which raises any error itself)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import importlib

v = importlib.import_module("deidflow.release.validate")  # the module (the package exports the function)

IN_PROCESS = SimpleNamespace(distributed=False)


def test_the_evidence_comes_from_a_forked_process(monkeypatch):
    monkeypatch.setattr(v, "_evidence", lambda *job: (os.getpid(), job))
    ahead = v._EvidenceAhead.start(IN_PROCESS, ("policy", "work"))
    try:
        pid, job = ahead.result()
    finally:
        ahead.close()
    assert pid != os.getpid() and job == ("policy", "work")
    assert ahead.pool is None  # closed: its process is gone


def test_a_failing_process_gives_nothing_and_a_distributed_engine_starts_none(monkeypatch):
    def fails(*job):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(v, "_evidence", fails)
    ahead = v._EvidenceAhead.start(IN_PROCESS, ())
    try:
        assert ahead.result() is None  # validate then computes it here
    finally:
        ahead.close()
    none = v._EvidenceAhead.start(SimpleNamespace(distributed=True), ())
    assert none.pool is None and none.result() is None
