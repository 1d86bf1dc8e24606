"""Reading input tables exactly as the policy declares them, and publishing atomically.

Inputs are read as text (every column `string`): a technique decides how to parse its column,
so a stray value never silently changes a column's type. Each check that fails names the file,
the column or row, and the fix. Publishing writes into a staging directory beside the target
and renames it into place, so a release directory either exists whole or not at all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.feather  # noqa: F401  (pa.feather)

from deidflow.errors import InputError
from deidflow.idcolumns import subject_rows
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


def _decode_check(path: Path, encoding: str, raw: bytes | None = None) -> str:
    """The codec to read with. A file that is not in its declared encoding is refused, with
    the encoding it does decode as: reading GBK bytes as UTF-8 would publish mojibake."""
    raw = path.read_bytes() if raw is None else raw
    if _is_utf8(encoding):
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


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "auto")


def _ragged(path: Path, spec: Table, detail: str) -> InputError:
    return InputError(
        f"rows do not all have the header's number of fields ({detail})",
        file=str(path),
        fix="fix the ragged rows (quote values that contain the delimiter), or check "
        f"the delimiter (policy says {spec.delimiter!r})",
    )


def _first_ragged_row(text: str, spec: Table, width: int) -> tuple[int, int] | None:
    """(file line, fields) of the first row whose field count differs from the header's.
    Only called after the fast reader has refused the file, to name the line."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=spec.delimiter)
    next(reader, None)
    for row in reader:
        if row and len(row) != width:
            return reader.line_num, len(row)
    return None


def _read_csv(path: Path, spec: Table) -> tuple[pd.DataFrame, str]:
    """The table as text columns, and the SHA-256 of the file's bytes (read once).

    Arrow's multithreaded reader does the parsing and the UTF-8 check; unlike pandas it refuses
    a row with too few fields instead of padding it, and the line is then named from a slow
    re-scan that only runs on the error path."""
    size = path.stat().st_size
    if size == 0 or (size < 1 << 16 and not path.read_bytes().strip()):
        raise InputError("file is empty", file=str(path), fix="export the table with a header row and data")
    # The file's pages mapped, not copied into a bytes object: hashing and parsing read the
    # page cache directly (a copy costs time and as much fresh memory as the file's size).
    with open(path, "rb") as fh:
        raw = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    # The digest on a thread of its own while Arrow parses (hashlib releases the GIL): the
    # hash is one core's sequential pass, the parse leaves a core idle at times.
    hashing = _Digest(raw)
    try:
        codec = ("utf-8-sig" if _is_utf8(spec.encoding)
                 else _decode_check(path, spec.encoding, bytes(raw)))
        try:
            frame = _parse(raw, path, spec, codec)
        except _NotUtf8:
            # names the line, or finds GB18030 (auto)
            codec = _decode_check(path, spec.encoding, bytes(raw))
            frame = _parse(raw, path, spec, codec)
        digest = hashing.result()
    finally:
        hashing.join()  # done with the mapping before it is closed
        try:
            raw.close()
        except BufferError:  # an error's traceback still holds an Arrow view; GC unmaps it
            pass
    return frame, digest


class _Digest:
    """SHA-256 of a buffer, computed on its own thread (which runs only hashlib's C code)."""

    def __init__(self, buffer: Any) -> None:
        import threading

        self._buffer, self._digest, self._error = buffer, None, None
        self._thread = threading.Thread(target=self._run, name="input-digest", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._digest = hashlib.sha256(self._buffer).hexdigest()
        except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread
            self._error = exc
        finally:
            self._buffer = None

    def join(self) -> None:
        self._thread.join()

    def result(self) -> str:
        self.join()
        if self._error is not None:
            raise self._error
        return self._digest


class _NotUtf8(Exception):
    pass


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _header(raw: bytes, path: Path, spec: Table, codec: str) -> list[str]:
    end = raw.find(b"\n")
    first = raw[: len(raw) if end < 0 else end].rstrip(b"\r")  # the first line only
    try:
        line = first.decode(codec)
    except UnicodeDecodeError:
        raise _NotUtf8 from None
    header = next(csv.reader([line], delimiter=spec.delimiter), [])
    names = [h.strip() for h in header]
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise InputError(f"duplicate column names {dupes}", file=str(path), row=1,
                         fix="rename the duplicates so each column has one name")
    return header


def _parse(raw: bytes, path: Path, spec: Table, codec: str) -> pd.DataFrame:
    header = _header(raw, path, spec, codec)
    encoding = "utf8" if codec == "utf-8-sig" else codec
    try:
        table = pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(raw)),
            read_options=pacsv.ReadOptions(encoding=encoding, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(
                delimiter=spec.delimiter,
                # A quoted value may hold a line break; allowing that slows the reader, so it is
                # only switched on for files that quote at all.
                newlines_in_values=raw.find(b'"') >= 0,
            ),
            convert_options=pacsv.ConvertOptions(
                # large_string is what pandas' Arrow text holds: read as string, every
                # column would be copied once more by a cast.
                column_types={h: pa.large_string() for h in header},
                # Only an empty cell is missing: "NA" is sodium's test code, "null" a word.
                null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        msg = str(exc)
        if encoding == "utf8" and ("invalid UTF8" in msg or not _decodes(bytes(raw))):
            raise _NotUtf8 from None  # a binary or GBK file: say that, not "ragged rows"
        if "Expected" in msg and "columns" in msg:
            text = bytes(raw).decode(codec, errors="replace")
            found = _first_ragged_row(text, spec, len(header))
            if found is not None:
                line, fields = found
                few = fields < len(header)
                raise InputError(
                    f"a row does not have the header's number of fields ({fields} instead "
                    f"of {len(header)})",
                    file=str(path), row=line,
                    fix=(f"fix the {'short' if few else 'long'} rows ("
                         + ("a missing value still needs its delimiter" if few
                            else "quote values that contain the delimiter")
                         + f"), or check the delimiter (policy says {spec.delimiter!r})"),
                ) from None
            raise _ragged(path, spec, msg.splitlines()[0][:200]) from None
        raise InputError(f"cannot parse the CSV ({msg.splitlines()[0][:200]})", file=str(path),
                         fix="check the file is a delimited text export with a header row") from None
    return _frame(table, strip=True)


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
        digest = sha256_file(path)
    else:
        frame, digest = _read_csv(path, spec)
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_columns(name, spec, path, frame)
    if frame.empty:
        raise InputError(
            "the file has a header but no rows",
            file=str(path),
            fix="export the table's data, or remove the table from the policy",
        )
    _check_nul(name, spec, path, frame)
    return InputTable(name=name, path=path, sha256=digest, frame=frame)


def _check_nul(name: str, spec: Table, path: Path, frame: pd.DataFrame) -> None:
    """A NUL character in free text (a stray byte of a database export) is refused here,
    where file and row are known, not later in the scrubber, which separates notes by NUL."""
    from deidflow.policy import Role

    for col, cspec in spec.columns.items():
        if cspec.role is not Role.free_text or col not in frame.columns:
            continue
        if not _may_hold_nul(frame[col]):
            continue
        bad = frame[col].astype("string").str.contains("\x00", regex=False).fillna(False).to_numpy(dtype=bool)
        if bad.any():
            raise InputError(
                f"{int(bad.sum())} row(s) of free text hold a NUL character (first shown)",
                file=str(path), key=f"tables.{name}.columns.{col}", column=col,
                row=int(np.argmax(bad)) + 2,
                fix="remove the NUL characters from the export (e.g. `tr -d '\\000'`), then rerun",
            )


def _may_hold_nul(values: pd.Series) -> bool:
    """False only when no text of the column can hold a NUL character: for Arrow text, no zero
    byte in its values' bytes (UTF-8 writes NUL as the byte 0 and uses that byte for nothing
    else), one pass over the buffer at memory speed. The string search over every note cost
    ~40 times more (README, "Notes: both cores kept busy around the scrub"). True otherwise,
    and `_check_nul` then runs its exact search, which also names the row."""
    if not isinstance(values.array, pd.arrays.ArrowStringArray):
        return True
    for chunk in as_arrow(values).chunks:
        if not len(chunk):
            continue
        off, data = text_buffers(chunk)
        lo, hi = int(off[0]), int(off[-1])  # the bytes of this slice's values, nulls' included
        if hi > lo and int(data[lo:hi].min()) == 0:
            return True
    return False


def text_buffers(chunk: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Value offsets and text bytes of a string / large_string array, zero-copy (the bytes
    are one zero byte where the array holds no text)."""
    dtype = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    bufs = chunk.buffers()
    off = np.frombuffer(bufs[1], dtype=dtype, count=len(chunk) + 1,
                        offset=chunk.offset * np.dtype(dtype).itemsize)
    data = (np.frombuffer(bufs[2], dtype=np.uint8)
            if bufs[2] is not None and bufs[2].size else np.zeros(1, dtype=np.uint8))
    return off, data


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
    """All input tables, with the cross-table checks: unique subjects, link keys that resolve.

    Holds every table at once; a release reads them one at a time instead (release.prepare)
    with the same checks, `check_subject_ids` and `check_links`."""
    policy = loaded.policy
    tables = {name: read_table(name, spec, loaded) for name, spec in policy.tables.items()}
    subject = tables[policy.subject_table]
    ids = check_subject_ids(subject, policy.tables[policy.subject_table].subject_column)
    for name, table in tables.items():
        if name != policy.subject_table:
            check_links(table, policy.tables[name].subject_column, ids, subject)
    return tables


def as_arrow(values: pd.Series) -> pa.ChunkedArray:
    """The Arrow strings behind a text column (no copy when it is already Arrow-backed)."""
    arr = values.array
    if not isinstance(arr, pd.arrays.ArrowStringArray):
        arr = values.astype("string").array
    out = arr.__arrow_array__()
    return out if isinstance(out, pa.ChunkedArray) else pa.chunked_array([out])


def check_subject_ids(subject: InputTable, sid_col: str) -> pa.Array:
    """Every subject row has an id and no id repeats; returns the ids."""
    ids = subject.frame[sid_col]
    if ids.isna().any():
        row = int(ids.isna().to_numpy().argmax()) + 2  # +1 header, +1 one-based
        raise InputError(
            "a subject id is empty", file=str(subject.path), column=sid_col, row=row,
            fix="every subject row needs an id",
        )
    arrow = as_arrow(ids)
    distinct = pc.unique(arrow)
    if len(distinct) != len(ids):
        dup = ids.duplicated(keep="first")
        row = int(dup.to_numpy().argmax()) + 2
        raise InputError(
            f"subject id repeated ({int(dup.sum())} duplicate row(s)); the subject table "
            "must have one row per subject",
            file=str(subject.path), column=sid_col, row=row,
            fix="remove or merge duplicate subject rows",
        )
    return distinct


def check_links(table: InputTable, col: str, subject_ids: pa.Array, subject: InputTable) -> np.ndarray:
    """Every row of `table` points to a subject of the subject table. Returns each row's
    position in `subject_ids` (the subject table's rows, in order), so the consent gate can
    answer for every row without looking its link key up again."""
    rows = subject_rows(table.frame[col], subject_ids)
    dangling = rows < 0
    if dangling.any():
        row = int(dangling.argmax()) + 2
        raise InputError(
            f"{int(dangling.sum())} row(s) point to a subject that is not in "
            f"'{subject.name}'",
            file=str(table.path), column=col, row=row,
            fix=f"add the subjects to {subject.path.name} or remove the orphan rows",
        )
    return rows


# --- publishing -------------------------------------------------------------------------------


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


def confine(path: Path) -> Path:
    """Refuse to write `path` unless it lies inside the run's directory it names: no '..'
    component, and once symbolic links are resolved still inside the nearest staging
    directory (.staging-<id>) or run work directory (the one holding state.json) above it.
    Policy names are checked when the policy is loaded; this is the last line behind that."""
    path = Path(path)
    if ".." in path.parts:
        raise InputError(
            "refusing to write outside the run's directories (the path climbs with '..')",
            file=str(path), fix="table, aggregate and column names may not contain '/' or '..'",
        )
    for parent in path.parents:
        if parent.name.startswith(".staging-") or (parent / "state.json").is_file():
            root = os.path.realpath(parent)
            real = os.path.realpath(path)
            if os.path.commonpath([root, real]) != root:
                raise InputError(
                    "refusing to write outside the run's directories (a symbolic link leads out)",
                    file=str(path), fix="remove the symbolic link from the output or private directory",
                )
            break
    return path


def write_frame(frame: pd.DataFrame, path: Path, fmt: str = "csv") -> Path:
    """Write one released table deterministically (same frame ⇒ same bytes). Text that a
    spreadsheet would run as a formula is neutralised in CSV (`neutralise_formulas`)."""
    confine(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt != "parquet":
        frame = neutralise_formulas(frame)
    try:
        if fmt == "parquet":
            frame.to_parquet(path, index=False)
        elif all(isinstance(frame[c].array, pd.arrays.ArrowStringArray) for c in frame.columns):
            _write_text_csv(frame, path)
        else:
            frame.to_csv(path, index=False, encoding="utf-8", lineterminator="\n")
    except OSError as exc:
        raise InputError(
            f"cannot write: {exc.strerror}", file=str(path),
            fix="free disk space or choose another output.directory",
        ) from None
    return path


def _write_text_csv(frame: pd.DataFrame, path: Path) -> None:
    """A table of text columns through Arrow's writer (many times faster than pandas').

    Unquoted when no value needs quotes (as pandas writes it); if one does (a delimiter, quote
    or line break in a value) the file is rewritten with every text value quoted. Either way
    the same frame gives the same bytes, and a missing value is an empty field."""
    table = pa.table({str(c): as_arrow(frame[c]) for c in frame.columns})
    try:
        pacsv.write_csv(table, str(path), pacsv.WriteOptions(
            quoting_style="none", quoting_header="none", batch_size=1 << 16))
    except pa.ArrowInvalid:
        pacsv.write_csv(table, str(path), pacsv.WriteOptions(
            quoting_style="needed", quoting_header="none", batch_size=1 << 16))


def read_released_csv(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A CSV this package wrote (UTF-8, comma, header), every column as text."""
    with open(path, "rb") as fh:
        first = fh.readline().decode("utf-8").rstrip("\r\n")
    header = next(csv.reader([first]), [])
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 24),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={h: pa.large_string() for h in header}, include_columns=columns,
            null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False),
    )
    return _frame(table)


def _frame(table: pa.Table, strip: bool = False) -> pd.DataFrame:
    """pandas text columns over the Arrow table's own buffers (no copy)."""
    return pd.DataFrame({(name.strip() if strip else name): pd.Series(pd.arrays.ArrowStringArray(col), copy=False)
                         for name, col in zip(table.column_names, table.columns)})


def write_work(frame: pd.DataFrame, path: Path, keep: np.ndarray | pd.Series | None = None) -> Path:
    """A run's private intermediate table (optionally only the rows where `keep`) as an
    uncompressed Arrow IPC file: written and read back at memory speed, unlike Parquet, and it
    lives only as long as the run's work directory."""
    confine(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if keep is not None:
        table = table.filter(pa.array(np.asarray(keep, dtype=bool)))
    pa.feather.write_feather(table, path, compression="uncompressed")
    return path


def read_work(path: Path, columns: list[str] | None = None, keep: np.ndarray | None = None,
              pool: Any = None) -> pd.DataFrame:
    """A table written by `write_work` (optionally only the rows where `keep`), as pandas over
    Arrow (text stays Arrow-backed).

    The file is memory-mapped: the frame's text columns are the page cache's pages, not a copy
    (the file was written moments ago, so they are in memory). A filter copies only the rows
    kept, a column per task of `pool` (an Executor) if one is given: Arrow's filter releases
    the GIL, so the columns are copied in parallel."""
    table = pa.feather.read_table(path, columns=columns, memory_map=True)
    if keep is not None:
        mask = pa.array(np.asarray(keep, dtype=bool))
        if pool is None:
            table = table.filter(mask)
        else:
            table = pa.Table.from_arrays(list(pool.map(lambda c: c.filter(mask), table.columns)),
                                         schema=table.schema)
    text = [n for n, f in zip(table.column_names, table.schema) if pa.types.is_large_string(f.type)
            or pa.types.is_string(f.type)]
    other = [n for n in table.column_names if n not in text]
    # Other columns through to_pandas, which restores their pandas dtypes from the metadata.
    rest = table.select(other).to_pandas() if other else None
    return pd.DataFrame({n: (pd.Series(pd.arrays.ArrowStringArray(table.column(n)), copy=False)
                             if n in text else rest[n]) for n in table.column_names},
                        index=pd.RangeIndex(table.num_rows))


# --- spreadsheet formula injection ---------------------------------------------------------------
#
# OWASP's rule for CSV exports: a cell starting with = + - @, a tab or a carriage return is run
# as a formula by Excel, LibreOffice and Google Sheets (=HYPERLINK(…), =cmd|…!A1); prefixing a
# single quote makes it text. Numeric columns are written as numbers and never prefixed, so a
# negative lab value stays -1.5 and sums in a spreadsheet. In a text column a cell that is only
# a signed decimal number (-3, +1.5, -2e-3) is also left alone: a spreadsheet reads it as that
# number, and no formula can hide in it. Everything else starting with a trigger gets the quote.
# Parquet is not opened by spreadsheets and is written as is.

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"


_TRIGGER_BYTES = np.zeros(256, dtype=bool)
_TRIGGER_BYTES[[ord(t) for t in FORMULA_TRIGGERS]] = True


def _starts_with_trigger(text: pd.Series) -> np.ndarray:
    """Per cell: does its text start with a formula trigger (missing: no)? For Arrow text the
    first byte of each value is read from the buffers: every trigger is one ASCII byte, and
    no byte of a multi-byte UTF-8 character is ASCII, so the first byte is a trigger exactly
    when the first character is (a string kernel per column cost ~40 times more)."""
    if not isinstance(text.array, pd.arrays.ArrowStringArray):
        return text.str.slice(0, 1).isin(FORMULA_TRIGGERS).fillna(False).to_numpy(dtype=bool, copy=True)
    parts = []
    for chunk in as_arrow(text).chunks:
        if not len(chunk):
            continue
        offsets, data = text_buffers(chunk)
        starts, lengths = offsets[:-1], np.diff(offsets)
        first = np.zeros(len(chunk), dtype=np.uint8)
        present = lengths > 0
        first[present] = data[starts[present]]
        risky = _TRIGGER_BYTES[first] & present
        if chunk.null_count:
            risky &= np.asarray(chunk.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        parts.append(risky)
    return np.concatenate(parts) if parts else np.zeros(len(text), dtype=bool)


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every text cell that a spreadsheet would evaluate prefixed by "'" (the
    frame itself is not changed; columns without such a cell are not copied)."""
    out = None
    for col in frame.columns:
        values = frame[col]
        if not (pd.api.types.is_string_dtype(values.dtype) or values.dtype == object):
            continue
        text = values.astype("string") if values.dtype == object else values
        risky = _starts_with_trigger(text)
        if not risky.any():
            continue
        # the number test only on the few cells that start with a trigger
        idx = np.flatnonzero(risky)
        number = text.iloc[idx].str.match(_PLAIN_NUMBER).fillna(False).to_numpy(dtype=bool)
        risky[idx[number]] = False
        if not risky.any():
            continue
        if out is None:
            out = frame.copy(deep=False)
        fixed = text.copy()
        fixed.iloc[np.flatnonzero(risky)] = "'" + text.iloc[np.flatnonzero(risky)]
        out[col] = fixed.astype(values.dtype) if values.dtype != object else fixed.astype(object).where(values.notna(), values)
    return frame if out is None else out
