"""Where a run's files live: `WorkDir`, one object that owns every path of a run. The private
work directory (hospital side, 0700, removed when the run ends) holds the gated partitions,
the consent verdicts, the frequency tables, the pseudonym mapping and the exclusion log; the
staging directory (one per run, in the output directory) holds the release until it is
renamed into place; the private directory keeps what outlives the run (exclusion logs, leak
logs, the lock per output directory). Dead runs' directories are reaped here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from deidflow.errors import InputError
from deidflow.io import read_work
from deidflow.policy import LoadedPolicy
from deidflow.release.state import STATE, RunState


def _part(i: int, ext: str) -> str:
    return f"part-{i:05d}.{ext}"


#: The run's exclusion log's file name (in the work directory, and kept with a staged release).
EXCLUSION_LOG = "consent-exclusions.csv"


# --- the policy's directories, for what is not one run (approvals, listings, the Prefect wait) --

def private_dir(loaded: LoadedPolicy) -> Path:
    """The policy's private directory (hospital side): locks, kept logs, staged releases."""
    return loaded.resolve(loaded.policy.output.private_directory)


def output_root(loaded: LoadedPolicy) -> Path:
    """The policy's output directory: every published release, one directory per release id."""
    return loaded.resolve(loaded.policy.output.directory)


def output_lock(loaded: LoadedPolicy) -> "OutputLock":
    """The lock of the policy's output directory (the same lock a run's `WorkDir.lock` takes)."""
    return OutputLock(private_dir(loaded), output_root(loaded))


@dataclass(frozen=True)
class WorkDir:
    """Every path of one run. `root` is the run's private work directory
    (`<private>/work/<run_id>`); `private` and `output` are the policy's private and output
    directories; `release_id` is known from the transform stage on (the staging directory and
    the release's final place are named by it)."""

    root: Path
    private: Path
    output: Path
    release_id: str | None = None

    # --- making and finding a run's directory ------------------------------------------------

    @classmethod
    def new(cls, loaded: LoadedPolicy) -> "WorkDir":
        """A fresh private work directory (0700) for a run, after reaping dead runs' ones."""
        private = private_dir(loaded)
        reap_stale_work(private / "work")
        work = cls(private / "work" / uuid.uuid4().hex[:16], private, output_root(loaded))
        (work.root / "gated").mkdir(parents=True)
        work.root.chmod(0o700)
        return work

    @classmethod
    def of(cls, root: Path | str, state: RunState | None = None) -> "WorkDir":
        """The run whose work directory is `root`, with its policy as pinned in its state."""
        from deidflow.release.state import pinned_policy

        root = Path(root)
        state = state if state is not None else RunState.load(root)
        loaded = pinned_policy(state)
        return cls(root, private_dir(loaded), output_root(loaded), state.release_id)

    def with_release(self, release_id: str) -> "WorkDir":
        return replace(self, release_id=release_id)

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def state(self) -> Path:
        return self.root / STATE

    # --- the private work directory ----------------------------------------------------------

    def gated(self, table: str, i: int) -> Path:
        """Partition i of a table after prepare (Arrow): derived columns; the subject table's
        consented rows only, every row of the others (their verdicts are beside them)."""
        return self.root / "gated" / table / _part(i, "arrow")

    def consented(self, table: str, i: int) -> Path:
        """Per row of a non-subject table's gated part: whether its subject passed the gate."""
        return self.root / "gated" / table / _part(i, "consented.npy")

    def subject_positions(self, table: str, i: int) -> Path:
        """Per row of a non-subject table's gated part: its subject's row in the gated subject
        part (-1 where the subject did not pass the gate), so transform drops the suppressed
        subjects' rows by position instead of looking their ids up again."""
        return self.root / "gated" / table / _part(i, "subject-rows.npy")

    def gated_parts(self, table: str) -> list[Path]:
        return sorted((self.root / "gated" / table).glob("part-*.arrow"))

    def gated_part(self, table: str, i: int, columns: list[str] | None = None) -> pd.DataFrame:
        return read_work(self.gated(table, i), columns)

    def gated_table(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        """The gated rows of a table, all partitions in order."""
        return pd.concat([read_work(p, columns) for p in self.gated_parts(table)], ignore_index=True)

    def events(self, i: int) -> Path:
        """Partition i's consent events (the partitioned engine's split of the snapshot)."""
        return self.root / "consent" / _part(i, "arrow")

    def excluded(self, i: int) -> Path:
        return self.root / "excluded" / _part(i, "parquet")

    def excluded_parts(self) -> list[Path]:
        return sorted((self.root / "excluded").glob("part-*.parquet"))

    @property
    def exclusion_log(self) -> Path:
        """The run's private exclusion log (0600), copied beside the release's id at publish."""
        return self.root / EXCLUSION_LOG

    def frequencies(self, i: int) -> Path:
        return self.root / "freq" / _part(i, "parquet")

    @property
    def suppressed_combos(self) -> Path:
        return self.root / "suppressed-combos.parquet"

    @property
    def suppressed_subjects(self) -> Path:
        """The whole-record search's choice: the subjects suppressed whole."""
        return self.root / "suppressed-subjects.parquet"

    @property
    def column_types(self) -> Path:
        """Every released column's type, fixed once per run (`column_types.released_kinds`)."""
        return self.root / "column-types.json"

    def transformed(self, i: int) -> Path:
        """Partition i's transform outcome (counts and column descriptions, JSON)."""
        return self.root / "transform" / _part(i, "json")

    def transformed_parts(self) -> list[Path]:
        return sorted((self.root / "transform").glob("part-*.json"))

    def pseudonyms(self, i: int) -> Path:
        return self.root / "pseudonyms" / _part(i, "parquet")

    def pseudonym_mapping(self) -> pd.DataFrame:
        """Which pseudonym each released subject got (private, never published)."""
        parts = sorted((self.root / "pseudonyms").glob("part-*.parquet"))
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)

    def released_copy(self, name: str) -> Path:
        """The Arrow copy of a released table the in-process engine keeps for the checks."""
        return self.root / "released" / f"{name}.arrow"

    # --- the output directory ----------------------------------------------------------------

    @property
    def staging(self) -> Path:
        """This run's staging directory: named by the release id *and* the run, so two runs
        into one output directory never share (or delete) one."""
        return self.output / f".staging-{self._release()}.{self.run_id}"

    @property
    def final(self) -> Path:
        """Where the release is renamed to when it is published."""
        return self.output / self._release()

    def staged(self, name: str, fmt: str) -> Path:
        """A released table written whole into the staging directory."""
        return self.staging / "data" / f"{name}.{fmt}"

    def staged_part(self, name: str, i: int) -> Path:
        """Partition i of a released table written in parts (Parquet)."""
        return self.staging / "data" / name / _part(i, "parquet")

    def staged_parts(self, name: str) -> list[Path]:
        return sorted((self.staging / "data" / name).glob("part-*.parquet"))

    def prepare_staging(self) -> Path:
        """A fresh staging directory for this run. Staging left by runs that are over (their
        work directory reaped or removed) is removed; a live run's is never touched."""
        root = self.output
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the output directory: {exc.strerror}", file=str(root),
                             fix="choose a writable output.directory in the policy") from None
        if not os.access(root, os.W_OK):
            raise InputError("the output directory is not writable", file=str(root),
                             fix="fix its permissions or choose another output.directory")
        with self.lock():
            for stale in root.glob(".staging-*"):
                run = stale.name.rsplit(".", 1)[-1]
                if "." not in stale.name[len(".staging-"):] or not (self.private / "work" / run).is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
            self.staging.mkdir()
        return self.staging

    def lock(self) -> "OutputLock":
        return OutputLock(self.private, self.output)

    # --- the private directory: what outlives the run ---------------------------------------

    @property
    def kept_exclusions(self) -> Path:
        """The published release's exclusion log, kept hospital-side."""
        return self.private / "exclusions" / f"{self._release()}.csv"

    @property
    def leak_log(self) -> Path:
        """Where a failed gate's identifier findings are logged (row numbers, no values)."""
        return self.private / "gate" / f"{self._release()}.json"

    def discard(self) -> None:
        """End of a run, however it ended: no staging directory and no private copies remain."""
        if self.release_id:
            shutil.rmtree(self.staging, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _release(self) -> str:
        if not self.release_id:
            raise ValueError("the run has no release id before the transform stage")
        return self.release_id


class FileLock:
    """An exclusive lock (flock) on one file, created 0600 when missing; held for a `with`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> "FileLock":
        import fcntl

        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


class OutputLock(FileLock):
    """An exclusive lock on one output directory, held while a run creates its staging or
    publishes: the check that a release id is free and the rename into it are one step for
    every run writing there. The lock file (flock) is in the private directory, named by the
    output directory's resolved path, so nothing but releases appears in the output."""

    def __init__(self, private: Path, output: Path) -> None:
        root = str(output.resolve())
        locks = private / "locks"
        locks.mkdir(parents=True, exist_ok=True, mode=0o700)
        super().__init__(locks / (hashlib.sha256(root.encode()).hexdigest()[:16] + ".lock"))


def reap_stale_work(root: Path) -> None:
    """Remove the work directories of runs that were killed (their process on this host is
    gone): they hold consented records and must not outlive their run. A directory without a
    readable state older than an hour is a run killed before it saved one."""
    if not root.is_dir():
        return
    import time

    host = socket.gethostname()
    for d in root.iterdir():
        try:
            st = json.loads((d / STATE).read_text())
            if st.get("host") != host or not st.get("pid"):
                continue
            try:
                os.kill(int(st["pid"]), 0)
                continue  # still running
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        except (OSError, ValueError):
            if time.time() - d.stat().st_mtime < 3600:
                continue
        shutil.rmtree(d, ignore_errors=True)
