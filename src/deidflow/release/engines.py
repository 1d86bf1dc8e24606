"""The engines behind one partition interface. A run's engine (`engine_of(state)`) is what
the stages ask to read a run's inputs into gated partitions, to write and read back a
released table's partition, and how many threads a partition's techniques may use; the
stages never branch on the engine's name.

- `memory` (`InProcess`): the extract's CSV tables read whole, as one partition, in this
  process; the consent snapshot is read on another core meanwhile and the gate runs inside
  prepare. A released table is written whole, with an Arrow copy kept for the checks.
- `dask` (`Partitioned`): a co-partitioned Parquet extract (`deidflow partition`), one
  partition per task; the Prefect flow maps the per-partition steps on a Dask cluster.
  The consent snapshot is split by subject into the partitions' work files, the gate is a
  step of its own, and a released table is written as one Parquet file per partition.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from deidflow.errors import DeidflowError
from deidflow.io import read_released_csv, read_work, write_frame, write_work
from deidflow.policy import LoadedPolicy
from deidflow.release.state import RunState
from deidflow.release.workdir import WorkDir


class Engine:
    """What the stages need from an engine. `name` is stored in the run state and is the
    `--engine` option's value."""

    name: ClassVar[str]
    # The Prefect flow maps the per-partition steps on the cluster (else: on the flow's thread).
    distributed: ClassVar[bool]
    # The plan runs the consent gate as a step of its own (else: prepare applied it).
    gate_per_partition: ClassVar[bool]

    def partitions(self, loaded: LoadedPolicy) -> int:
        raise NotImplementedError

    def read_inputs(self, work: WorkDir, state: RunState, loaded: LoadedPolicy, registry: Any) -> None:
        """Prepare's reading: the inputs' digests and the consent snapshot's summary into the
        run state (saved), and the gated partitions (or what their gate step needs) into the
        work directory."""
        raise NotImplementedError

    def transform_threads(self) -> int:
        """Threads on which one partition's columns are transformed."""
        raise NotImplementedError

    def typed_output(self, fmt: str) -> bool:
        """Whether released numbers and dates keep their type (else: text)."""
        raise NotImplementedError

    def write_released(self, writer: Executor, work: WorkDir, name: str, index: int, fmt: str,
                       released: pd.DataFrame, subject_table: bool) -> list[Future]:
        """Partition `index` of a released table into the staging directory (on `writer`)."""
        raise NotImplementedError

    def has_released(self, work: WorkDir, name: str, fmt: str) -> bool:
        raise NotImplementedError

    def read_released(self, release_dir: Path, name: str, fmt: str,
                      columns: list[str] | None = None) -> pd.DataFrame:
        """A released table read back whole from a release directory (staging or published)."""
        raise NotImplementedError

    def released_for_checks(self, work: WorkDir, name: str, fmt: str,
                            columns: list[str] | None = None) -> pd.DataFrame:
        """A staged released table, whole, for the aggregates and the later checks."""
        return self.read_released(work.staging, name, fmt, columns)

    def released_for_gate(self, work: WorkDir, name: str, fmt: str, subject_table: bool) -> Any:
        """A staged released table as the validation gate takes it: a frame, or `Parts`."""
        return self.released_for_checks(work, name, fmt)


class InProcess(Engine):
    name = "memory"
    distributed = False
    gate_per_partition = False

    def partitions(self, loaded: LoadedPolicy) -> int:
        return 1

    def read_inputs(self, work, state, loaded, registry) -> None:
        from deidflow.release.prepare import read_whole

        read_whole(work, state, loaded, registry)

    def transform_threads(self) -> int:
        # The techniques' work is in numpy, Arrow and cryptography calls that release the GIL;
        # each column gets its own memo, so no two threads share mutable state.
        import os

        return min(4, os.cpu_count() or 1)

    def typed_output(self, fmt: str) -> bool:
        return fmt == "parquet"

    def write_released(self, writer, work, name, index, fmt, released, subject_table):
        written = [writer.submit(write_frame, released, work.staged(name, fmt), fmt)]
        if not subject_table:
            # The very Arrow table the writer serialises, for the validation gate and the
            # aggregates: reading it back is much cheaper than parsing the CSV again.
            written.append(writer.submit(write_work, released, work.released_copy(name)))
        return written

    def has_released(self, work, name, fmt) -> bool:
        return work.staged(name, fmt).is_file()

    def read_released(self, release_dir, name, fmt, columns=None) -> pd.DataFrame:
        path = release_dir / "data" / f"{name}.{fmt}"
        if fmt == "parquet":
            return pd.read_parquet(path, columns=columns)
        return read_released_csv(path, columns)

    def released_for_checks(self, work, name, fmt, columns=None) -> pd.DataFrame:
        # The subject table (no Arrow copy) is read from the file that ships: k, l and risk
        # are proved on it.
        copy = work.released_copy(name)
        if copy.is_file():
            return read_work(copy, columns)
        return self.read_released(work.staging, name, fmt, columns)


class Partitioned(Engine):
    name = "dask"
    distributed = True
    gate_per_partition = True

    def partitions(self, loaded: LoadedPolicy) -> int:
        from deidflow.partitions import partition_count

        return partition_count(loaded)

    def read_inputs(self, work, state, loaded, registry) -> None:
        from deidflow.release.prepare import read_partitioned

        read_partitioned(work, state, loaded, registry)

    def transform_threads(self) -> int:
        return 1  # one partition per core already

    def typed_output(self, fmt: str) -> bool:
        return True  # the parts are Parquet

    def write_released(self, writer, work, name, index, fmt, released, subject_table):
        return [writer.submit(write_frame, released, work.staged_part(name, index), "parquet")]

    def has_released(self, work, name, fmt) -> bool:
        return bool(work.staged_parts(name))

    def read_released(self, release_dir, name, fmt, columns=None) -> pd.DataFrame:
        parts = sorted((release_dir / "data" / name).glob("part-*.parquet"))
        return pd.concat([pd.read_parquet(p, columns=columns) for p in parts], ignore_index=True)

    def released_for_gate(self, work, name, fmt, subject_table) -> Any:
        if subject_table:  # k, l and risk need all subjects together
            return self.released_for_checks(work, name, fmt)
        # Row-local checks: one partition at a time, so the largest table is never in memory
        # whole.
        from deidflow.validation.gate import Parts

        return Parts(tuple(partial(pd.read_parquet, p) for p in work.staged_parts(name)))


ENGINES: dict[str, Engine] = {e.name: e for e in (InProcess(), Partitioned())}


def engine_named(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise DeidflowError(f"unknown engine '{name}'", key="engine",
                            fix="use --engine " + " or --engine ".join(ENGINES)) from None


def engine_of(state: RunState) -> Engine:
    return engine_named(state.engine)
