"""Importing the consent files that the hospital's consent system drops into a folder.

A file is imported whole or not at all (``import_consent_file`` validates every entry first).
Afterwards it is moved out of the way: to ``<drop>/imported/`` when its events are recorded, to
``<drop>/rejected/`` with a ``.error.txt`` note when it is malformed. The folder therefore holds
only files not yet handled, and a rerun does nothing. The move is the record; the import is
idempotent as well, so a crash between import and move only costs a re-import that records
nothing new.

A registry that cannot be reached is *not* the file's fault: the error propagates and the file
stays where it is, to be retried on the next run.

Writers should drop files atomically (write ``name.csv.part``, then rename); only ``*.csv`` and
``*.json`` that are not hidden are picked up.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deidflow.consent.importers import import_consent_file
from deidflow.consent.registry import ConsentRegistry
from deidflow.errors import ConsentError

PATTERNS = ("*.csv", "*.json")
IMPORTED = "imported"
REJECTED = "rejected"
#: The key of ConsentError raised for an unreachable registry (see ConsentRegistry._unreachable).
_REGISTRY_KEY = "consent.registry"


def pending_files(drop_dir: str | Path) -> list[Path]:
    """The consent files waiting in the drop folder, oldest name first (stable order)."""
    drop = Path(drop_dir)
    if not drop.is_dir():
        raise ConsentError(
            "the consent drop folder does not exist", file=str(drop),
            fix="create the folder or pass the folder the consent system writes to (--consent-drop)",
        )
    found = {p for pattern in PATTERNS for p in drop.glob(pattern)
             if p.is_file() and not p.name.startswith(".")}
    return sorted(found, key=lambda p: p.name)


def import_dropped_file(registry: ConsentRegistry, path: str | Path) -> dict[str, Any]:
    """Import one dropped file and move it to imported/ or rejected/; a small, id-free summary."""
    path = Path(path)
    try:
        result = import_consent_file(registry, path)
    except ConsentError as exc:
        if exc.key == _REGISTRY_KEY:
            raise  # the registry is down: keep the file for the next run
        if not path.exists():
            # Another sync run moved it first; that run reports it.
            return {"file": path.name, "status": "gone"}
        dest = _archive(path, REJECTED)
        note = dest.with_name(dest.name + ".error.txt")
        note.write_text(exc.render() + "\n", encoding="utf-8")
        return {"file": path.name, "status": "rejected", "moved_to": str(dest),
                "problem": exc.message.splitlines()[0]}
    try:
        dest = _archive(path, IMPORTED)
    except FileNotFoundError:
        return {"file": path.name, "status": "gone"}  # moved by a concurrent run
    return {"file": path.name, "status": "imported", "moved_to": str(dest),
            "read": result.read, "new": result.new}


def summarise(results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the per-file summaries (file names only: they carry no identities)."""
    results = list(results)
    by = lambda status: [r for r in results if r["status"] == status]  # noqa: E731
    imported, rejected = by("imported"), by("rejected")
    return {
        "files": len(results),
        "imported": len(imported),
        "rejected": len(rejected),
        "events_read": sum(r["read"] for r in imported),
        "events_new": sum(r["new"] for r in imported),
        "rejected_files": [r["file"] for r in rejected],
    }


def _archive(path: Path, folder: str) -> Path:
    """Move ``path`` into ``<its folder>/<folder>/`` under a name that never overwrites: the
    consent system may drop a file called consents.csv every day."""
    target_dir = path.parent / folder
    target_dir.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    dest = target_dir / f"{stamp}-{path.name}"
    n = 1
    while dest.exists():
        dest = target_dir / f"{stamp}-{n}-{path.name}"
        n += 1
    os.replace(path, dest)
    return dest
