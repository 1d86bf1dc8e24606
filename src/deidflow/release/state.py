"""The run state: what later stages need from earlier ones, JSON in the work directory, and
the run's contract. At prepare the policy's text and SHA-256 are pinned here; every later
stage parses the pinned text (`pinned_policy`), never the file, and `check_contract` refuses to
publish if the file changed during the run. Counts, digests and paths only: no identities,
no key material.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from deidflow.errors import GateFailed
from deidflow.policy import LoadedPolicy


STATE = "state.json"


@dataclass
class RunState:
    """What later stages need to know about earlier ones; JSON in the work directory.

    It holds counts, digests and paths — no identities and no key material."""

    policy_path: str
    policy_text: str
    policy_sha256: str
    run_id: str
    started_at: str
    as_of: str
    flow_run_id: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    consent: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    columns: list[dict[str, Any]] = field(default_factory=list)
    aggregates: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    release_id: str | None = None
    release_dir: str | None = None
    engine: str = "memory"
    partitions: int = 1
    pid: int = 0
    host: str = ""

    def save(self, work: Path) -> None:
        tmp = work / (STATE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), ensure_ascii=False, indent=1, default=str))
        tmp.replace(work / STATE)

    @classmethod
    def load(cls, work: Path) -> "RunState":
        return cls(**json.loads((work / STATE).read_text()))


PINNED: dict[tuple[str, str], LoadedPolicy] = {}


def pinned_policy(state: RunState) -> LoadedPolicy:
    """The policy this run pinned at prepare (its text and SHA-256 in the run state), parsed
    once per process: later stages never read the file again, so an edit during the run
    cannot change what a stage does (`check_contract` refuses to publish after one)."""
    key = (state.policy_path, state.policy_sha256)
    loaded = PINNED.get(key)
    if loaded is None:
        from deidflow.policy import parse_policy

        if hashlib.sha256(state.policy_text.encode("utf-8")).hexdigest() != state.policy_sha256:
            raise GateFailed("the run state's policy text does not match its pinned SHA-256",
                             key="policy", fix="rerun the release")
        loaded = LoadedPolicy(policy=parse_policy(state.policy_text, source=state.policy_path),
                              path=Path(state.policy_path), text=state.policy_text,
                              sha256=state.policy_sha256)
        PINNED[key] = loaded
    return loaded


def check_contract(state: RunState) -> None:
    """Stop before publishing if the policy file no longer holds the text this run pinned: the
    release would be signed under a contract its own file no longer states."""
    from deidflow.errors import PolicyError

    try:
        now = hashlib.sha256(Path(state.policy_path).read_bytes()).hexdigest()
    except OSError:
        now = "(unreadable)"
    if now != state.policy_sha256:
        raise PolicyError(
            "the policy file changed while the release ran; nothing was published",
            file=state.policy_path,
            fix=f"rerun the release with the policy as it now stands (this run pinned sha256 "
            f"{state.policy_sha256[:12]}…, the file now has {now[:12]}…)",
        )


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def dump_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain(obj), ensure_ascii=False, sort_keys=True))


def plain(obj: Any) -> Any:
    """JSON-able copy of numbers/dicts/lists (numpy scalars to Python)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [plain(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "as_dict"):
        return plain(obj.as_dict())
    return obj
