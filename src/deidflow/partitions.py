"""Partitioned Parquet inputs for the Dask engine, and the converter that makes them.

A partitioned extract is one directory per table, each holding `part-00000.parquet`,
`part-00001.parquet`, …, co-partitioned by subject: part *i* of every table holds exactly the
rows of the subjects in part *i* of the subject table. Then every per-row step of a release
(consent gate, techniques, scrubbing a note against its own patient's identifiers) runs on one
partition at a time, in parallel, and only the frequency table of quasi-identifier
combinations crosses partitions (DESIGN.md, "Search on the frequency table").

`partition_extract` streams CSV inputs through pyarrow in batches and routes each row by a
keyed-free, stable hash of its subject id, so it needs memory for one batch, not one table.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deidflow.errors import InputError
from deidflow.idcolumns import subject_rows
from deidflow.io import _check_columns
from deidflow.policy import LoadedPolicy

PART = "part-{:05d}.parquet"


def part_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.parquet"))


def partition_count(loaded: LoadedPolicy) -> int:
    """Number of partitions, checking that every table is a directory with the same parts."""
    policy = loaded.policy
    names: dict[str, list[str]] = {}
    for name, spec in policy.tables.items():
        path = loaded.resolve(spec.path)
        if not path.is_dir():
            raise InputError(
                "the Dask engine reads partitioned Parquet: this table's path is not a directory",
                file=str(path), key=f"tables.{name}.path",
                fix="convert the extract with `deidflow partition POLICY --out DIR`, point the "
                "policy at DIR/<table> and set 'format: parquet'",
            )
        names[name] = [p.name for p in part_files(path)]
        if not names[name]:
            raise InputError("no part-*.parquet files in this directory", file=str(path),
                             key=f"tables.{name}.path",
                             fix="convert the extract with `deidflow partition`")
    first = names[policy.subject_table]
    for name, parts in names.items():
        if parts != first:
            raise InputError(
                f"table '{name}' has partitions {len(parts)} that do not match the subject "
                f"table's {len(first)}",
                file=str(loaded.resolve(policy.tables[name].path)), key=f"tables.{name}.path",
                fix="partition all tables together with `deidflow partition`",
            )
    return len(first)


def parts_digest(loaded: LoadedPolicy, name: str) -> tuple[str, int]:
    """sha256 over the parts' own sha256 digests (in order) and the total rows of a table."""
    from deidflow.io import sha256_file

    path = loaded.resolve(loaded.policy.tables[name].path)
    h = hashlib.sha256()
    rows = 0
    for p in part_files(path):
        h.update(f"{p.name}:{sha256_file(p)}\n".encode())
        rows += pq.ParquetFile(p).metadata.num_rows
    return h.hexdigest(), rows


class PartitionFrames(dict):
    """A partition's tables by name; `rows[name]` holds, for each row of a table other than
    the subject table, its subject's row in the part's subject table (found by the link
    check, so the consent gate does not look the link keys up again)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, np.ndarray] = {}


def read_partition(loaded: LoadedPolicy, index: int) -> PartitionFrames:
    """Part `index` of every table, all columns as text, with the same checks as CSV input
    (columns as the policy declares, unique subjects, link keys that resolve in the part)."""
    policy = loaded.policy
    frames = PartitionFrames()
    paths: dict[str, Path] = {}
    for name, spec in policy.tables.items():
        path = loaded.resolve(spec.path) / PART.format(index)
        try:
            frame = pd.read_parquet(path).astype("string")
        except Exception as exc:  # pyarrow raises many types for a corrupt file
            raise InputError(f"cannot read Parquet: {type(exc).__name__}", file=str(path),
                             fix="re-create the partition with `deidflow partition`") from None
        _check_columns(name, spec, path, frame)
        frames[name], paths[name] = frame, path
    sid = policy.tables[policy.subject_table].subject_column
    ids = frames[policy.subject_table][sid]
    dup = ids.duplicated()
    if ids.isna().any() or dup.any():
        raise InputError("a subject id is empty or repeated in this partition",
                         file=str(paths[policy.subject_table]), column=sid,
                         row=int((dup | ids.isna()).to_numpy().argmax()) + 1,
                         fix="the subject table needs one row per subject")
    for name, frame in frames.items():
        if name == policy.subject_table:
            continue
        col = policy.tables[name].subject_column
        frames.rows[name] = subject_rows(frame[col], ids)
        dangling = pd.Series(frames.rows[name] < 0)
        if dangling.any():
            raise InputError(
                f"{int(dangling.sum())} row(s) point to a subject that is not in the same part "
                f"of '{policy.subject_table}'",
                file=str(paths[name]), column=col, row=int(dangling.to_numpy().argmax()) + 1,
                fix="partitions must be co-partitioned by subject: use `deidflow partition`",
            )
    return frames


def subject_partition(ids: pa.Array | pa.ChunkedArray | pd.Series, partitions: int) -> np.ndarray:
    """Stable partition of each subject id (same id ⇒ same partition, on every machine).

    The id's text (a missing id as '') hashed by pandas' hash_array: `partition_extract` and
    the consent snapshot's split must route an id alike, so this must never change. Arrow
    text goes straight to the Python strings the hash reads (a detour through a pandas string
    column takes several times as long, and 10M ids are read per Dask release)."""
    if isinstance(ids, (pa.Array, pa.ChunkedArray)) and (
            pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        values = pc.fill_null(ids, "").to_numpy(zero_copy_only=False)
    else:
        values = pd.Series(np.asarray(ids, dtype=object)).astype("string").fillna("").to_numpy(dtype=object)
    h = pd.util.hash_array(values, categorize=False)
    return (h % np.uint64(partitions)).astype(np.int64)


def partition_extract(loaded: LoadedPolicy, out_dir: Path, partitions: int,
                      block_bytes: int = 1 << 24) -> dict[str, Path]:
    """Stream every CSV table of the policy into `out_dir/<table>/part-*.parquet`, one block
    of `block_bytes` of CSV at a time (the memory it needs; a row must fit in a block)."""
    if partitions < 1:
        raise InputError("partitions must be at least 1", key="partitions", fix="pass --partitions 8")
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    for name, spec in loaded.policy.tables.items():
        src = loaded.resolve(spec.path)
        if not src.is_file():
            raise InputError("input file not found", file=str(src), key=f"tables.{name}.path",
                             fix="correct the path (relative to the policy file)")
        dest = out_dir / name
        dest.mkdir(parents=True, exist_ok=True)
        encoding = "utf8" if spec.encoding in ("auto", "utf-8", "utf8") else spec.encoding
        with open(src, encoding="utf-8-sig" if encoding == "utf8" else encoding) as fh:
            header = next(csv.reader([fh.readline()], delimiter=spec.delimiter))
        reader = pacsv.open_csv(
            src,
            read_options=pacsv.ReadOptions(encoding=encoding, block_size=block_bytes),
            parse_options=pacsv.ParseOptions(delimiter=spec.delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types={c.strip(): pa.string() for c in header},
                # Only an empty cell is missing, as in io.py: "NA" is sodium's test code.
                null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False),
        )
        schema = pa.schema([pa.field(f.name, pa.string()) for f in reader.schema])
        writers = [pq.ParquetWriter(dest / PART.format(i), schema) for i in range(partitions)]
        try:
            for batch in reader:
                batch = pa.Table.from_batches([batch]).cast(schema)
                part = subject_partition(batch.column(spec.subject_column).to_numpy(zero_copy_only=False),
                                         partitions)
                order = np.argsort(part, kind="stable")
                bounds = np.searchsorted(part[order], np.arange(partitions + 1))
                sorted_batch = batch.take(pa.array(order))
                for i in range(partitions):
                    if bounds[i + 1] > bounds[i]:
                        writers[i].write_table(sorted_batch.slice(bounds[i], bounds[i + 1] - bounds[i]))
        finally:
            for w in writers:
                w.close()
        written[name] = dest
    return written
