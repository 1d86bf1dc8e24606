"""Reading input tables exactly as the policy declares them, and publishing atomically.

Inputs are read as text (every column `string`): a technique decides how to parse its column,
so a stray value never silently changes a column's type. Each check that fails names the file,
the column or row, and the fix. Publishing writes into a staging directory beside the target
and renames it into place, so a release directory either exists whole or not at all.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deidflow.errors import InputError
from deidflow.policy import LoadedPolicy, Table

# Encodings hospitals actually export. GB18030 is a superset of GBK and GB2312.
FALLBACK_ENCODINGS = ("gb18030",)


@dataclass(frozen=True)
class InputTable:
    name: str
    path: Path
    sha256: str
    frame: pd.DataFrame

    @property
    def rows(self) -> int:
        return len(self.frame)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _format_of(path: Path, spec: Table) -> str:
    if spec.format:
        return spec.format
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"


def _decode_check(path: Path, encoding: str) -> str:
    """The codec to read with. A file that is not in its declared encoding is refused, with
    the encoding it does decode as: reading GBK bytes as UTF-8 would publish mojibake."""
    raw = path.read_bytes()
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8", "auto"):
        try:
            raw.decode("utf-8")
            return "utf-8-sig"  # strips a BOM if present
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            for fallback in FALLBACK_ENCODINGS:
                try:
                    raw.decode(fallback)
                except UnicodeDecodeError:
                    continue
                if encoding.lower() == "auto":
                    return fallback
                raise InputError(
                    f"not UTF-8 (first bad byte on line {line}); it decodes cleanly as "
                    f"{fallback.upper()}",
                    file=str(path),
                    fix=f"declare 'encoding: {fallback}' for this table in the policy "
                    "(or 'encoding: auto'), or re-export the file as UTF-8",
                ) from None
            raise InputError(
                f"not UTF-8 and not GB18030 (first bad byte on line {line})",
                file=str(path),
                fix="re-export the file as UTF-8 and check it is a text CSV",
            ) from None
    try:
        raw.decode(encoding)
    except LookupError:
        raise InputError(
            f"unknown encoding '{encoding}'",
            file=str(path),
            fix="use utf-8, gb18030, gbk or auto",
        ) from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            f"does not decode as {encoding} (line {line})",
            file=str(path),
            fix="declare the file's real encoding, or 'encoding: auto'",
        ) from None
    return encoding


def _read_csv(path: Path, spec: Table) -> pd.DataFrame:
    codec = _decode_check(path, spec.encoding)
    if path.stat().st_size == 0:
        raise InputError("file is empty", file=str(path), fix="export the table with a header row and data")
    try:
        frame = pd.read_csv(
            path,
            sep=spec.delimiter,
            dtype="string",
            encoding=codec,
            keep_default_na=False,
            na_values=[""],
            quoting=csv.QUOTE_MINIMAL,
        )
    except pd.errors.ParserError as exc:
        raise InputError(
            f"rows do not all have the header's number of fields ({exc})",
            file=str(path),
            fix="fix the ragged rows (quote values that contain the delimiter), or check "
            f"the delimiter (policy says {spec.delimiter!r})",
        ) from None
    except pd.errors.EmptyDataError:
        raise InputError("file is empty", file=str(path), fix="export the table with a header row and data") from None
    _check_header_and_short_rows(path, spec, codec, frame)
    return frame


def _check_header_and_short_rows(path: Path, spec: Table, codec: str, frame: pd.DataFrame) -> None:
    """Two things pandas hides: a repeated column name (it renames the second 'x.1') and a
    row with too few fields (it pads it with nulls). Both are refused, naming the line."""
    with open(path, encoding=codec, newline="") as fh:
        header = next(csv.reader([fh.readline()], delimiter=spec.delimiter), [])
    names = [h.strip() for h in header]
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise InputError(f"duplicate column names {dupes}", file=str(path), row=1,
                         fix="rename the duplicates so each column has one name")
    if frame.empty or len(names) < 2:
        return
    # Only rows whose last cell is missing can be short; look at those lines alone.
    candidates = np.flatnonzero(frame.iloc[:, -1].isna().to_numpy())
    if not len(candidates):
        return
    lines = path.read_text(encoding=codec).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(frame) + 1:  # quoted line breaks: rows are not lines; skip the check
        return
    picked = pd.Series([lines[i + 1] for i in candidates], dtype="string")
    quoted = picked.str.contains('"', regex=False)
    short = (picked.str.count(re.escape(spec.delimiter)) < len(names) - 1) & ~quoted
    if short.any():
        first = int(candidates[int(np.argmax(short.to_numpy()))]) + 2
        raise InputError(
            f"{int(short.sum())} row(s) have fewer fields than the header's {len(names)}",
            file=str(path), row=first,
            fix="fix the short rows (a missing value still needs its delimiter), or check the "
            f"delimiter (policy says {spec.delimiter!r})",
        )


def read_table(name: str, spec: Table, loaded: LoadedPolicy) -> InputTable:
    path = loaded.resolve(spec.path)
    if not path.is_file():
        raise InputError(
            "input file not found",
            file=str(path),
            key=f"tables.{name}.path",
            fix="correct the path (relative to the policy file) or generate samples with "
            "`deidflow samples`",
        )
    fmt = _format_of(path, spec)
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path).astype("string")
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise InputError(f"cannot read Parquet: {exc}", file=str(path), fix="check the file") from None
    else:
        frame = _read_csv(path, spec)
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_columns(name, spec, path, frame)
    if frame.empty:
        raise InputError(
            "the file has a header but no rows",
            file=str(path),
            fix="export the table's data, or remove the table from the policy",
        )
    return InputTable(name=name, path=path, sha256=sha256_file(path), frame=frame)


def _check_columns(name: str, spec: Table, path: Path, frame: pd.DataFrame) -> None:
    found = list(frame.columns)
    if len(found) == 1 and spec.delimiter not in found[0] and any(d in found[0] for d in ",;\t|"):
        guess = next(d for d in ",;\t|" if d in found[0])
        raise InputError(
            f"only one column was found ({found[0][:60]!r}); the delimiter looks like {guess!r}",
            file=str(path),
            key=f"tables.{name}.delimiter",
            fix=f"set 'delimiter: {guess!r}' for this table in the policy",
        )
    dupes = sorted({c for c in found if found.count(c) > 1})
    if dupes:
        raise InputError(f"duplicate column names {dupes}", file=str(path), fix="rename the duplicates")
    expected = {c for c, col in spec.columns.items() if col.derived_from is None}
    missing = sorted(expected - set(found))
    if missing:
        raise InputError(
            f"the policy names column(s) {missing} but the file has {found}",
            file=str(path),
            key=f"tables.{name}.columns",
            fix="correct the column names in the policy, or export the missing columns",
        )
    unclassified = sorted(set(found) - set(spec.columns))
    if unclassified:
        raise InputError(
            f"column(s) {unclassified} have no role in the policy; an unclassified column "
            "blocks the release (GB/T 37964 5.3)",
            file=str(path),
            key=f"tables.{name}.columns",
            fix="add each column with a role and technique (e.g. "
            f"'{unclassified[0]}: {{role: direct_identifier, technique: drop}}')",
        )


def read_tables(loaded: LoadedPolicy) -> dict[str, InputTable]:
    """All input tables, with the cross-table checks: unique subjects, link keys that resolve."""
    policy = loaded.policy
    tables = {name: read_table(name, spec, loaded) for name, spec in policy.tables.items()}
    subject = tables[policy.subject_table]
    sid_col = policy.tables[policy.subject_table].subject_column
    ids = subject.frame[sid_col]
    if ids.isna().any():
        row = int(ids.isna().to_numpy().argmax()) + 2  # +1 header, +1 one-based
        raise InputError(
            "a subject id is empty", file=str(subject.path), column=sid_col, row=row,
            fix="every subject row needs an id",
        )
    dup = ids.duplicated(keep="first")
    if dup.any():
        row = int(dup.to_numpy().argmax()) + 2
        raise InputError(
            f"subject id {'repeated'} ({int(dup.sum())} duplicate row(s)); the subject table "
            "must have one row per subject",
            file=str(subject.path), column=sid_col, row=row,
            fix="remove or merge duplicate subject rows",
        )
    known = pd.Index(ids)
    for name, table in tables.items():
        if name == policy.subject_table:
            continue
        col = policy.tables[name].subject_column
        dangling = ~table.frame[col].isin(known)
        if dangling.any():
            row = int(dangling.to_numpy().argmax()) + 2
            raise InputError(
                f"{int(dangling.sum())} row(s) point to a subject that is not in "
                f"'{policy.subject_table}'",
                file=str(table.path), column=col, row=row,
                fix=f"add the subjects to {subject.path.name} or remove the orphan rows",
            )
    return tables


# --- publishing -------------------------------------------------------------------------------


def staging_dir(output_root: Path, release_id: str) -> Path:
    return output_root / f".staging-{release_id}"


def prepare_staging(output_root: Path, release_id: str) -> Path:
    """A fresh, empty staging directory. Leftovers of an interrupted run are removed first."""
    try:
        output_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the output directory: {exc.strerror}",
            file=str(output_root),
            fix="choose a writable output.directory in the policy",
        ) from None
    if not os.access(output_root, os.W_OK):
        raise InputError(
            "the output directory is not writable",
            file=str(output_root),
            fix="fix its permissions or choose another output.directory",
        )
    for stale in output_root.glob(".staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    stage = staging_dir(output_root, release_id)
    stage.mkdir()
    return stage


def publish(stage: Path, final: Path) -> Path:
    """Move a complete staging directory into place in one rename (same filesystem)."""
    if final.exists():
        raise InputError(
            "a release with this id already exists",
            file=str(final),
            fix="the inputs, policy and consent are unchanged since that release; nothing to do",
        )
    fsync_tree(stage)
    os.rename(stage, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def write_frame(frame: pd.DataFrame, path: Path, fmt: str = "csv") -> Path:
    """Write one released table deterministically (same frame ⇒ same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False, encoding="utf-8", lineterminator="\n")
    except OSError as exc:
        raise InputError(
            f"cannot write: {exc.strerror}", file=str(path),
            fix="free disk space or choose another output.directory",
        ) from None
    return path
