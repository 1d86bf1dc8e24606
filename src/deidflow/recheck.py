"""The withdrawal re-check: which past releases contain a subject who has since withdrawn,
and the deletion notice the hospital sends each recipient (PIPL arts. 15, 47).

A notice names the release, the agreement and the *pseudonyms* to delete — the recipient only
ever saw pseudonyms — never the subject's identity. Notices are written beside the releases in
`<output>/deletion-notices/<release_id>/`, one file per re-check that found something new, so a
daily schedule does not repeat a request already made.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from deidflow.policy import LoadedPolicy

NOTICE_DIR = "deletion-notices"


def _already_noticed(folder: Path) -> set[str]:
    done: set[str] = set()
    for f in folder.glob("notice-*.json"):
        done.update(json.loads(f.read_text(encoding="utf-8"))["pseudonyms"])
    return done


def write_deletion_notices(loaded: LoadedPolicy, *, now: datetime | None = None) -> list[Path]:
    """Write a notice for every release with newly withdrawn subjects; return their paths."""
    from deidflow.consent.registry import ConsentRegistry
    from deidflow.release import registry_url

    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    found = ConsentRegistry(registry_url(loaded)).withdrawn_since_release()
    root = loaded.resolve(loaded.policy.output.directory) / NOTICE_DIR
    written = []
    for release_id, group in found.groupby("release_id", sort=True):
        folder = root / str(release_id)
        folder.mkdir(parents=True, exist_ok=True)
        new = group.loc[~group["pseudonym"].isin(_already_noticed(folder))]
        if new.empty:
            continue
        notice = {
            "type": "deletion-request",
            "legal_basis": ["PIPL art. 15 (withdrawal of consent)", "PIPL art. 47 (deletion)"],
            "release_id": str(release_id),
            "agreement_id": loaded.policy.release.agreement_id,
            "recipient": loaded.policy.release.recipient.model_dump(),
            "issued_at": now.isoformat(),
            "request": "Delete every record carrying these pseudonyms from the release and from "
            "any model training set derived from it, and confirm in writing.",
            "pseudonyms": sorted(new["pseudonym"].astype(str)),
            "withdrawn_on": sorted({pd.Timestamp(t).date().isoformat() for t in new["withdrawn_at"]}),
        }
        path = folder / f"notice-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps(notice, ensure_ascii=False, indent=2), encoding="utf-8")
        written.append(path)
    return written
