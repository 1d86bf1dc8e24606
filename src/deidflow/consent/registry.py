"""The consent registry: an append-only log of consent events in SQLite or PostgreSQL.

Consent is evidence (PIPL arts. 14-15, GB/T 42574 consent-evidence retention): an event is
recorded once and never changed. Granting, amending and withdrawing are all *new* rows; the
current state of a consent is derived (the latest event per ``consent_id`` as of a moment).
The database enforces this too: triggers refuse UPDATE, DELETE (and TRUNCATE on PostgreSQL) on
the event and release tables, so a bug or a hand-typed statement cannot rewrite history.

Idempotence: every event has a natural key ``event_id`` (from the source file, or derived from
the FHIR resource id and version). Inserting uses ``ON CONFLICT DO NOTHING``, so importing the
same file twice, or two processes importing it at the same time, records each event once. An
``event_id`` that reappears with *different* content is refused: amendments need a new event.

Concurrency: the gate reads one snapshot in one read transaction (PostgreSQL: one COPY
statement, MVCC; SQLite: chunked SELECTs inside one WAL read transaction), so imports and
withdrawals running at the same time neither block it nor change what it reads.

The release history (which subject went out under which pseudonym in which release) is a
hospital-private table used to find releases that contain a subject who later withdrew
(PIPL arts. 15, 47: the hospital asks the recipient to delete).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from deidflow.errors import ConsentError
from deidflow.idcolumns import count_distinct, id_strings
from deidflow.redaction import redact_url

if TYPE_CHECKING:
    from deidflow.policy import LoadedPolicy

#: Hospital local time (China has no daylight saving): dates in consent forms and naive
#: timestamps are read in this zone.
CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")

EVENT_KINDS = ("granted", "amended", "withdrawn")
GRANTORS = ("self", "guardian")

#: The canonical event columns every importer produces (lists are ';'-joined, sorted, casefolded).
EVENT_COLUMNS = (
    "event_id",
    "consent_id",
    "subject_id",
    "event",
    "recorded_at",
    "grantor",
    "guardian_name",
    "guardian_id",
    "separate",
    "purposes",
    "recipients",
    "data_categories",
    "cross_border",
    "valid_from",
    "valid_until",
    "notice_version",
    "form_sha256",
)
#: What the content hash covers: everything that has meaning (not the source file name).
_CONTENT_COLUMNS = EVENT_COLUMNS

_INSERT_CHUNK = 5_000
_EVENT_RANK = pd.Index(["granted", "amended", "withdrawn"])  # a tie at one instant: withdrawal wins

metadata = sa.MetaData()

consent_events = sa.Table(
    "consent_events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("event_id", sa.String(200), nullable=False, unique=True),
    sa.Column("consent_id", sa.String(200), nullable=False),
    sa.Column("subject_id", sa.String(64), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("grantor", sa.String(16), nullable=False),
    sa.Column("guardian_name", sa.Text),
    sa.Column("guardian_id", sa.String(32)),
    sa.Column("separate", sa.Boolean, nullable=False),
    sa.Column("purposes", sa.Text, nullable=False),
    sa.Column("recipients", sa.Text, nullable=False),
    sa.Column("data_categories", sa.Text, nullable=False),
    sa.Column("cross_border", sa.Boolean, nullable=False),
    sa.Column("valid_from", sa.Date),
    sa.Column("valid_until", sa.Date),
    sa.Column("notice_version", sa.String(64)),
    sa.Column("form_sha256", sa.String(64)),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("source", sa.Text),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.current_timestamp()),
    sa.CheckConstraint("event IN ('granted','amended','withdrawn')", name="ck_event_kind"),
    sa.CheckConstraint("grantor IN ('self','guardian')", name="ck_grantor"),
    sa.Index("ix_consent_events_subject", "subject_id"),
    sa.Index("ix_consent_events_recorded", "recorded_at"),
    sa.Index("ix_consent_events_consent", "consent_id"),
)

release_subjects = sa.Table(
    "release_subjects",
    metadata,
    sa.Column("release_id", sa.String(200), nullable=False, primary_key=True),
    sa.Column("subject_id", sa.String(64), nullable=False, primary_key=True),
    sa.Column("pseudonym", sa.String(200), nullable=False),
    sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_release_subjects_subject", "subject_id"),
)

#: What each release's consent snapshot contained, so that the re-check finds every withdrawal
#: it did not (by arrival in the registry, not by signing time): every event with a seq up
#: to ``seq_high`` except the ``seq_missing`` ones (seqs not visible when the snapshot was read:
#: a transaction still open then, or rolled back), and recorded at or before ``as_of``.
release_snapshots = sa.Table(
    "release_snapshots",
    metadata,
    sa.Column("release_id", sa.String(200), primary_key=True),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
    sa.Column("seq_high", sa.BigInteger, nullable=False),
    sa.Column("seq_missing", sa.Text, nullable=False),  # JSON list of [first, last] ranges
)

_APPEND_ONLY_TABLES = ("consent_events", "release_subjects", "release_snapshots")


def registry_url_for(loaded: "LoadedPolicy") -> str:
    """The policy's consent.registry URL, a relative SQLite path read relative to the policy
    file (not the working directory), so that `deidflow consent import --policy` and the
    release find the same database wherever they are started from."""
    url = loaded.policy.consent.registry
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        path = loaded.resolve(url[len(prefix):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def to_utc(moment: datetime | pd.Timestamp | str) -> pd.Timestamp:
    """A timezone-aware UTC timestamp; naive input is hospital local time (+08:00)."""
    ts = pd.Timestamp(moment)
    if ts.tzinfo is None:
        ts = ts.tz_localize(CHINA_TZ)
    return ts.tz_convert("UTC")


def content_digest(events: pd.DataFrame) -> pd.Series:
    """sha256 per event over its meaningful fields: detects an event_id reused for other content."""
    parts = []
    for col in _CONTENT_COLUMNS:
        values = events[col]
        if col == "recorded_at":
            values = pd.to_datetime(values, utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        elif col in ("valid_from", "valid_until"):
            values = pd.to_datetime(values).dt.strftime("%Y-%m-%d")
        parts.append(values.astype("string").fillna("\x00"))
    joined = parts[0].str.cat(parts[1:], sep="\x1f")
    # hashlib has no vectorised form; this loop is over events at import time only.
    return pd.Series(
        [hashlib.sha256(s.encode("utf-8")).hexdigest() for s in joined], index=events.index
    )


@dataclass(frozen=True)
class ImportResult:
    source: str
    read: int
    new: int

    @property
    def already_recorded(self) -> int:
        return self.read - self.new


@dataclass(frozen=True)
class ConsentSnapshot:
    """Every consent event recorded at or before ``as_of``, and the derived current state.

    ``current`` holds one row per consent (the latest event of each ``consent_id``): its
    ``event`` is granted/amended (in force, subject to its terms) or withdrawn. Ties at the same
    instant resolve to the withdrawal (fail closed), then to the later-recorded row.

    ``events`` is sorted by consent (in order of first appearance), time, withdrawal-first
    rank and arrival; ``current_rows`` are the positions in it of each consent's latest event.
    ``current`` is built from them on first use: the gate reads the few columns it needs at
    those positions instead of copying every column of a million rows.
    """

    registry_url: str
    as_of: pd.Timestamp
    events: pd.DataFrame
    current_rows: np.ndarray = field(repr=False)

    @cached_property
    def current(self) -> pd.DataFrame:
        if len(self.current_rows) == len(self.events):
            return self.events.copy(deep=False)
        return self.events.take(self.current_rows).reset_index(drop=True)

    def current_values(self, column: str) -> np.ndarray | pd.Series:
        """One column of ``current`` without building ``current``."""
        values = self.events[column]
        if len(self.current_rows) == len(self.events):
            return values.reset_index(drop=True)
        return values.take(self.current_rows).reset_index(drop=True)

    @classmethod
    def from_events(
        cls, events: pd.DataFrame, as_of: datetime | pd.Timestamp, registry_url: str = "memory"
    ) -> "ConsentSnapshot":
        as_of_utc = to_utc(as_of)
        ev = events.copy()
        ev["recorded_at"] = pd.to_datetime(ev["recorded_at"], utc=True)
        recorded = (ev["recorded_at"] <= as_of_utc).to_numpy()
        if not recorded.all():  # no copy of every row when all of them are kept
            ev = ev.loc[recorded]
        if "seq" not in ev.columns:
            ev["seq"] = np.arange(len(ev), dtype=np.int64)
        # (A frame of only the columns that decide the current state, as stream_snapshot's,
        # has no terms to convert.)
        for col in ("valid_from", "valid_until"):
            if col in ev.columns:
                ev[col] = pd.to_datetime(ev[col])
        for col in ("separate", "cross_border"):
            if col in ev.columns:
                ev[col] = ev[col].astype(bool)
        rank = _event_rank(ev["event"])
        # Sort integer keys, not strings: consent ids factorised once (grouped in order of
        # first appearance), then time, then the withdrawal-wins rank, then arrival.
        codes, _ = pd.factorize(ev["consent_id"])
        order = np.lexsort((
            ev["seq"].to_numpy(dtype=np.int64),
            rank,
            ev["recorded_at"].to_numpy(dtype="datetime64[ns]").view(np.int64),
            codes,
        ))
        # Read from the registry (in arrival order) most consents have one event: the order
        # is often the identity, and every event often the current one.
        if (order[1:] > order[:-1]).all():
            ev = ev.reset_index(drop=True)
        else:
            # Column by column, each source column let go once taken: a whole-frame take held
            # the registry's events twice (nearly twice the peak memory at 10M events).
            taken = {}
            for col in list(ev.columns):
                taken[col] = ev.pop(col).take(order).reset_index(drop=True)
            ev = pd.DataFrame(taken)
        sorted_codes = codes[order]
        last = np.ones(len(ev), dtype=bool)
        last[:-1] = sorted_codes[1:] != sorted_codes[:-1]
        return cls(redact_url(registry_url), as_of_utc, ev, np.flatnonzero(last))

    @cached_property
    def digest(self) -> str:
        """sha256 over the sorted event ids this snapshot used, one per line (no final line
        break): reproducible, no identities. Hashed straight from the Arrow buffer of the
        sorted ids; computed once per snapshot."""
        ids = pa.array(self.events["event_id"].astype("str").array)
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        ordered = pc.take(ids, pc.array_sort_indices(ids)).cast(pa.large_string())
        h = hashlib.sha256()
        if len(ordered):
            lines = pc.binary_join_element_wise(
                ordered, pa.scalar("", pa.large_string()), pa.scalar("\n", pa.large_string()))
            offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
            start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
            h.update(memoryview(lines.buffers()[2])[start : end - 1])
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        rank = _event_rank(self.current_values("event"))
        in_force = (rank == 0) | (rank == 1)
        subjects = pa.array(pd.Series(self.current_values("subject_id")).astype("str").array)
        subjects = subjects.combine_chunks() if isinstance(subjects, pa.ChunkedArray) else subjects
        return {
            "registry": self.registry_url,
            "as_of": self.as_of.isoformat(),
            "events": int(len(self.events)),
            "consents": int(len(self.current_rows)),
            "granted": int(in_force.sum()),
            "withdrawn": int((~in_force).sum()),
            "subjects": count_distinct(subjects),
            "events_sha256": self.digest,
            **self.seq_coverage(),
        }

    def seq_coverage(self) -> dict[str, Any]:
        """Which registry events this snapshot held, by arrival: seq_high (the highest seq)
        and seq_missing (the seqs below it it did not hold, as [first, last] ranges)."""
        if "seq" not in self.events.columns or len(self.events) == 0:
            return {"seq_high": 0, "seq_missing": []}
        seq = np.sort(self.events["seq"].to_numpy(dtype=np.int64))
        high = int(seq[-1])
        bounds = np.r_[0, seq]
        gap = np.flatnonzero(np.diff(bounds) > 1)
        missing = [[int(bounds[i]) + 1, int(bounds[i + 1]) - 1] for i in gap]
        return {"seq_high": high, "seq_missing": missing}


def _event_rank(events: pd.Series) -> np.ndarray:
    """0 granted, 1 amended, 2 withdrawn, -1 anything else; in Arrow (pandas' get_indexer on
    "str" goes through Python objects)."""
    arr = pa.array(pd.Series(events, copy=False).astype("str").array)
    pos = pc.index_in(arr, value_set=pa.array(list(_EVENT_RANK), pa.string()))
    return np.asarray(pos.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.intp)


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in EVENT_COLUMNS})


class ConsentRegistry:
    """The consent registry at a SQLAlchemy URL (``sqlite:///consent.db`` or
    ``postgresql+psycopg://user:pass@host/db``). Tables and append-only triggers are created
    on first use."""

    def __init__(self, url: str, *, connect_timeout: int = 10) -> None:
        self.url = url
        self.redacted_url = redact_url(url)
        self.engine = self._connect(url, connect_timeout)
        self._ensure_schema()

    # -- engine and schema -------------------------------------------------------------
    def _connect(self, url: str, connect_timeout: int) -> Engine:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConsentError(
                f"'{self.redacted_url}' is not a database URL ({exc})",
                key="consent.registry",
                fix="use sqlite:///path/to/consent.db or postgresql+psycopg://user:pass@host/db",
            ) from None
        backend = parsed.get_backend_name()
        kwargs: dict[str, Any] = {}
        if backend == "sqlite":
            # 30 s busy timeout: concurrent writers queue instead of failing at once.
            kwargs["connect_args"] = {"timeout": 30}
        elif backend == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": connect_timeout}
            kwargs["pool_pre_ping"] = True
        else:
            raise ConsentError(
                f"unsupported consent registry backend '{backend}' in {self.redacted_url}",
                key="consent.registry",
                fix="use sqlite:///consent.db or postgresql+psycopg://user:pass@host/db",
            )
        try:
            engine = sa.create_engine(url, **kwargs)
        except (NoSuchModuleError, ArgumentError, ImportError) as exc:
            raise ConsentError(
                f"cannot use consent registry {self.redacted_url}: {exc}",
                key="consent.registry",
                fix="for PostgreSQL use the psycopg 3 driver: postgresql+psycopg://…",
            ) from None
        if backend == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def _unreachable(self, exc: Exception) -> ConsentError:
        cause = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
        if self.url and (pw := make_url(self.url).password):
            cause = cause.replace(str(pw), "***")
        if self.backend == "sqlite":
            fix = (
                "check that the directory of the SQLite file exists and is writable, "
                "or set consent.registry in the policy to another path"
            )
        else:
            fix = (
                "check that PostgreSQL is running and reachable at this host/port, that the "
                "user, password and database exist (for tests: eval \"$(.ci/postgres.sh)\")"
            )
        return ConsentError(
            f"cannot reach the consent registry {self.redacted_url}: {cause}",
            key="consent.registry",
            fix=fix,
        )

    def _ensure_schema(self) -> None:
        try:
            with self.engine.begin() as conn:
                if self.backend == "postgresql":
                    # Two processes creating the tables at once would race in the catalogue.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(7426001)"))
                metadata.create_all(conn)
                for stmt in _append_only_ddl(self.backend) + _added_index_ddl(self.backend):
                    conn.execute(sa.text(stmt))
        except (DBAPIError, SQLAlchemyError) as exc:
            raise self._unreachable(exc) from None

    def dispose(self) -> None:
        self.engine.dispose()

    # -- writing events ----------------------------------------------------------------
    def append_events(self, events: pd.DataFrame, *, source: str = "api") -> ImportResult:
        """Record canonical events (see EVENT_COLUMNS) in one transaction; already-recorded
        event ids are skipped, an event id reused for different content is refused."""
        if len(events) == 0:
            return ImportResult(source, 0, 0)
        missing = [c for c in EVENT_COLUMNS if c not in events.columns]
        if missing:
            raise ConsentError(
                f"events lack columns {missing}", file=source,
                fix="build events with deidflow.consent.importers (CSV or FHIR)",
            )
        ev = events.loc[:, list(EVENT_COLUMNS)].copy()
        ev = _canonical_subjects(ev, source)
        dup = ev["event_id"].duplicated(keep=False)
        if dup.any():
            digests = content_digest(ev)
            clash = ev.assign(_d=digests).loc[dup].groupby("event_id")["_d"].nunique()
            clash = clash[clash > 1]
            if len(clash):
                raise ConsentError(
                    f"event_id '{clash.index[0]}' appears {int((ev['event_id'] == clash.index[0]).sum())} "
                    "times with different content",
                    file=source, column="event_id",
                    fix="give every event its own event_id; record changes as 'amended' events",
                )
            ev = ev.loc[~ev["event_id"].duplicated()]
        ev["content_sha256"] = content_digest(ev)
        ev["recorded_at"] = pd.to_datetime(ev["recorded_at"], utc=True)
        read = int(len(ev))
        table = consent_events
        insert = (sqlite_dialect.insert if self.backend == "sqlite" else pg_dialect.insert)(table)
        stmt = insert.on_conflict_do_nothing(index_elements=["event_id"])
        new = 0
        try:
            with self.engine.begin() as conn:
                existing = self._existing_digests(conn, ev["event_id"].tolist())
                if existing:
                    known = ev["event_id"].map(existing)
                    changed = known.notna() & (known != ev["content_sha256"])
                    if changed.any():
                        first = ev.loc[changed, "event_id"].iloc[0]
                        raise ConsentError(
                            f"event_id '{first}' is already recorded with different content "
                            f"({int(changed.sum())} such events); consent events are append-only",
                            file=source, column="event_id",
                            fix="record the change as a new 'amended' or 'withdrawn' event with "
                            "a new event_id instead of editing an imported one",
                        )
                    ev = ev.loc[known.isna().to_numpy()]
                self._refuse_shared_consent_ids(conn, ev, source)
                rows = _to_rows(ev, source, self.backend)
                for start in range(0, len(rows), _INSERT_CHUNK):
                    chunk = rows[start : start + _INSERT_CHUNK]
                    if self.backend == "postgresql":
                        # Plain executemany, which psycopg pipelines. With RETURNING, SQLAlchemy
                        # builds 1,000-row VALUES statements that psycopg re-parses (much slower
                        # per row). Rows this transaction inserted (not skipped by ON CONFLICT, e.g.
                        # by a concurrent import of the same file) carry its transaction id.
                        conn.execute(stmt, chunk)
                        new += int(conn.execute(_PG_COUNT_MINE, {"ids": [r["event_id"] for r in chunk]}).scalar())
                    else:
                        # sqlite3's executemany rowcount is the number of rows inserted (those
                        # skipped by ON CONFLICT are not counted); writers are serialised.
                        new += int(conn.execute(stmt, chunk).rowcount)
        except ConsentError:
            raise
        except (DBAPIError, SQLAlchemyError) as exc:
            raise self._unreachable(exc) from None
        return ImportResult(source, read, new)

    def _refuse_shared_consent_ids(self, conn: sa.Connection, ev: pd.DataFrame, source: str) -> None:
        """A consent id belongs to one subject: refuse events that would give it a second one
        (in this batch or beside what the registry holds), so histories never merge."""
        owners = ev.groupby("consent_id")["subject_id"].agg(["first", "nunique"])
        clash = owners.index[owners["nunique"] > 1].tolist()
        ids = owners.index.tolist()
        for start in range(0, len(ids), _INSERT_CHUNK):
            chunk = ids[start : start + _INSERT_CHUNK]
            if self.backend == "postgresql":
                found = conn.execute(_PG_OWNERS, {"ids": chunk})
            else:
                c = consent_events.c
                found = conn.execute(sa.select(c.consent_id, c.subject_id).distinct()
                                     .where(c.consent_id.in_(chunk)))
            for consent_id, subject_id in found:
                if owners.at[consent_id, "first"] != subject_id or owners.at[consent_id, "nunique"] > 1:
                    clash.append(consent_id)
        if clash:
            first = sorted(set(clash))[0]
            row = ev.loc[ev["consent_id"] == first, "event_id"].iloc[0]
            raise ConsentError(
                f"{len(set(clash))} consent id(s) would belong to more than one subject, the first "
                f"at event_id '{row}'; nothing was imported",
                file=source, column="consent_id",
                fix="give each subject's consent its own consent id (a consent id is never shared)",
            )

    def recorded_event_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these event ids the registry already holds."""
        try:
            with self.engine.connect() as conn:
                return set(self._existing_digests(conn, list(ids)))
        except (DBAPIError, SQLAlchemyError) as exc:
            raise self._unreachable(exc) from None

    def _existing_digests(self, conn: sa.Connection, ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(ids), _INSERT_CHUNK):
            chunk = ids[start : start + _INSERT_CHUNK]
            if self.backend == "postgresql":
                # Join with unnest(array): an index lookup per id whatever the plan. IN with
                # 5,000 parameters, or = ANY(array) once psycopg prepares the statement (a
                # generic plan does not hash the array), compared every row with every id:
                # minutes to re-import 100k events.
                q = _PG_EXISTING
                params = {"ids": chunk}
            else:
                q = sa.select(consent_events.c.event_id, consent_events.c.content_sha256).where(
                    consent_events.c.event_id.in_(chunk))
                params = {}
            found.update({r[0]: r[1] for r in conn.execute(q, params)})
        return found

    def withdraw(
        self,
        subject_id: str,
        *,
        at: datetime | None = None,
        form_sha256: str | None = None,
        source: str = "deidflow consent withdraw",
    ) -> int:
        """Append a withdrawal for every consent of the subject in force at ``at`` (default:
        now). Returns how many withdrawal events were recorded (0 if nothing was in force or
        this withdrawal was already recorded)."""
        at_utc = to_utc(at if at is not None else datetime.now(timezone.utc))
        snap = self.snapshot(at_utc, subject_ids=[subject_id])
        cur = snap.current
        in_force = cur.loc[cur["event"].isin(["granted", "amended"])]
        if in_force.empty:
            return 0
        ev = in_force.loc[:, list(EVENT_COLUMNS)].copy()
        ev["event"] = "withdrawn"
        ev["recorded_at"] = at_utc
        ev["form_sha256"] = form_sha256
        # Deterministic id: running the same withdrawal twice records it once.
        ev["event_id"] = "withdraw:" + ev["consent_id"].astype(str) + "@" + at_utc.isoformat()
        return self.append_events(ev, source=source).new

    # -- reading -----------------------------------------------------------------------
    def snapshot(
        self, as_of: datetime | pd.Timestamp, *, subject_ids: Iterable[str] | None = None
    ) -> ConsentSnapshot:
        """All events recorded at or before ``as_of``, read in one read transaction (one
        statement on PostgreSQL) straight into Arrow columns: a million events are 18 million
        values, and one Python object per value (ORM rows, then DataFrame cells) was the cost."""
        as_of_utc = to_utc(as_of)
        ids = None if subject_ids is None else [str(s) for s in subject_ids]
        columns = _joined(list(self._event_chunks(as_of_utc, ids)), _READ_COLUMNS)
        if len(columns["seq"]) == 0:
            frame = _empty_events().assign(seq=pd.Series(dtype="int64"))
        else:
            frame = _events_frame(columns)
        return ConsentSnapshot.from_events(frame, as_of_utc, self.url)

    def stream_snapshot(
        self, as_of: datetime | pd.Timestamp, sink: Callable[[pa.Table], None]
    ) -> dict[str, Any]:
        """The snapshot ``snapshot(as_of)`` reads, without ever holding it: each chunk of
        events (arrival order, SNAPSHOT_SCHEMA) is handed to ``sink`` as it is read, in the
        same read transaction, and only the six columns that decide the summary are kept
        (at 10M events the whole snapshot was the run's memory peak). Returns exactly
        ``snapshot(as_of).summary()`` — counts, current state and the events digest are
        computed by the same code over the same events."""
        as_of_utc = to_utc(as_of)
        kept: list[dict[str, Any]] = []
        # Reading ahead: the database reads the next chunk while the sink writes this one
        # (`snapshot` does not: the memory engine keeps its other core busy with its inputs).
        chunks = self._event_chunks(as_of_utc, None, read_ahead=True)
        try:
            for columns in chunks:
                kept.append({c: columns[c] for c in _SUMMARY_COLUMNS})
                sink(_snapshot_table(columns))
        finally:
            chunks.close()
        columns = _joined(kept, _SUMMARY_COLUMNS)
        del kept
        if len(columns["seq"]) == 0:
            frame = _empty_events().assign(seq=pd.Series(dtype="int64")).loc[:, list(_SUMMARY_COLUMNS)]
        else:
            frame = _events_frame(columns, _SUMMARY_COLUMNS)
        return ConsentSnapshot.from_events(frame, as_of_utc, self.url).summary()

    def _event_chunks(self, as_of_utc: pd.Timestamp, ids: list[str] | None, *,
                      read_ahead: bool = False) -> Iterator[dict[str, Any]]:
        """The events recorded at or before ``as_of_utc`` (of ``ids`` only, if given) as Arrow
        columns, one chunk at a time in seq order, all read in one read transaction. Close the
        generator if you stop early: it ends the transaction."""
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            with self.engine.connect() as conn:
                raw = conn.connection.driver_connection
                if self.backend == "sqlite":
                    yield from _read_events_sqlite(raw, as_of_utc, ids, read_ahead=read_ahead)
                else:
                    yield from _read_events_postgresql(raw, as_of_utc, ids, read_ahead=read_ahead)
        except (DBAPIError, SQLAlchemyError, dbapi_error) as exc:
            raise self._unreachable(exc) from None

    def count_events(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(consent_events)).scalar())

    # -- release history (hospital-private) ---------------------------------------------
    def record_release(
        self,
        release_id: str,
        subject_ids: Sequence[str] | pd.Series | pd.Index,
        pseudonyms: Sequence[str] | pd.Series | pd.Index,
        released_at: datetime,
        *,
        snapshot: dict[str, Any] | None = None,
    ) -> int:
        """Remember which subject went out under which pseudonym in a release (idempotent: a
        (release, subject) already recorded is skipped). One transaction, bound on the driver
        directly (SQLite: JSON text that one INSERT … SELECT unpacks, per 250k subjects;
        PostgreSQL: COPY into a temporary table, then one INSERT): no SQLAlchemy parameter
        dict per row."""
        rows, insert = self._release_insert(release_id, subject_ids, pseudonyms, released_at, snapshot)
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            with self.engine.begin() as conn:
                insert(conn.connection.driver_connection)
        except (DBAPIError, SQLAlchemyError, dbapi_error) as exc:
            raise self._unreachable(exc) from None
        return rows

    def begin_release_record(
        self,
        release_id: str,
        subject_ids: Sequence[str] | pd.Series | pd.Index,
        pseudonyms: Sequence[str] | pd.Series | pd.Index,
        released_at: datetime,
        *,
        snapshot: dict[str, Any] | None = None,
    ) -> PendingRelease:
        """`record_release`'s rows, inserted on a background thread (the database work releases
        the GIL) into a transaction that stays open until `PendingRelease.commit()`: the caller
        seals and publishes the release meanwhile, and commits only once it is published.
        Leaving the ``with`` block without committing rolls back; a process killed before the
        commit leaves nothing recorded (the database discards an open transaction), as if it
        had been killed before recording. Bad arguments are refused here, before any thread,
        which opens its own connection (a registry file or server, not SQLite :memory:)."""
        return PendingRelease(self, *self._release_insert(release_id, subject_ids, pseudonyms, released_at,
                                                          snapshot))

    def _release_insert(
        self,
        release_id: str,
        subject_ids: Sequence[str] | pd.Series | pd.Index,
        pseudonyms: Sequence[str] | pd.Series | pd.Index,
        released_at: datetime,
        snapshot: dict[str, Any] | None = None,
    ) -> tuple[int, Callable[[Any], None]]:
        """The checked rows of a release's record: their number and the insert (given the
        driver connection, inside the caller's transaction). Subject ids are recorded in
        canonical form. ``snapshot`` (the consent snapshot's summary: as_of, seq_high,
        seq_missing) records what the release's gate saw, for the re-check."""
        from deidflow.consent.subject_ids import canonical_ids

        subjects = canonical_ids(subject_ids)
        pseuds = id_strings(pseudonyms)
        if len(subjects) != len(pseuds):
            raise ConsentError(
                f"release {release_id}: {len(subjects)} subject ids but {len(pseuds)} pseudonyms",
                key="record_release", fix="pass one pseudonym per released subject, same order",
            )
        for what, arr in (("subject id", subjects), ("pseudonym", pseuds)):
            if arr.null_count:
                row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
                raise ConsentError(
                    f"release {release_id}: {arr.null_count} missing {what}(s), the first at "
                    f"position {row}; nothing was recorded",
                    key="record_release", fix="pass a subject id and a pseudonym for every released subject",
                )
        when = _bind_time(to_utc(released_at), self.backend)
        sqlite = self.backend == "sqlite"

        seen = None
        if snapshot is not None and "seq_high" in snapshot:
            seen = (_bind_time(to_utc(snapshot["as_of"]), self.backend), int(snapshot["seq_high"]),
                    json.dumps(snapshot.get("seq_missing") or []))

        def insert(raw: Any) -> None:
            if seen is not None:
                raw.execute(("INSERT INTO release_snapshots (release_id, as_of, seq_high, seq_missing) "
                             "VALUES ({0}, {0}, {0}, {0}) ON CONFLICT (release_id) DO NOTHING")
                            .format("?" if sqlite else "%s"), (release_id, *seen))
            if sqlite:
                _insert_release_sqlite(raw, release_id, subjects, pseuds, when)
            else:
                _copy_release_postgresql(raw, release_id, subjects, pseuds, when)

        return len(subjects), insert

    def withdrawn_since_release(self) -> pd.DataFrame:
        """Released subjects with a withdrawal that the release's consent snapshot did not
        hold: one row per (release, subject) with the earliest such withdrawal's signing time.

        "Did not hold" is decided by arrival in the registry, not by signing time: an event
        with a seq above the snapshot's highest, or one of the seqs it could not see (a
        transaction still open when it was read), or recorded after its as-of moment. A
        withdrawal signed before the release but imported after it is found. (A release
        recorded before snapshots were kept falls back to the signing time.)"""
        r, e, rs = release_subjects, consent_events, release_snapshots
        not_seen = sa.or_(
            rs.c.release_id.is_(None) & (e.c.recorded_at > r.c.released_at),
            e.c.seq > rs.c.seq_high,
            e.c.recorded_at > rs.c.as_of,
            (rs.c.seq_missing != "[]") & (e.c.seq <= rs.c.seq_high),  # refined below
        )
        q = (
            sa.select(r.c.release_id, r.c.pseudonym, r.c.subject_id, e.c.recorded_at.label("withdrawn_at"),
                      e.c.seq, e.c.recorded_at, rs.c.seq_high, rs.c.seq_missing, rs.c.as_of,
                      rs.c.release_id.label("has_snapshot"), r.c.released_at)
            .select_from(r.join(e, sa.and_(e.c.subject_id == r.c.subject_id, e.c.event == "withdrawn"))
                         .outerjoin(rs, rs.c.release_id == r.c.release_id))
            .where(not_seen)
        )
        try:
            with self.engine.connect() as conn:
                result = conn.execute(q)
                found = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        except (DBAPIError, SQLAlchemyError) as exc:
            raise self._unreachable(exc) from None
        columns = ["release_id", "pseudonym", "subject_id", "withdrawn_at"]
        if not found.empty:
            keep = np.ones(len(found), dtype=bool)
            snap = found["has_snapshot"].notna().to_numpy()
            recorded = pd.to_datetime(found["recorded_at"], utc=True)
            as_of = pd.to_datetime(found["as_of"], utc=True)
            for i in np.flatnonzero(snap):
                seq, high = int(found.at[i, "seq"]), int(found.at[i, "seq_high"])
                if seq > high or recorded.iloc[i] > as_of.iloc[i]:
                    continue
                ranges = json.loads(found.at[i, "seq_missing"] or "[]")
                keep[i] = any(lo <= seq <= hi for lo, hi in ranges)
            found = found.loc[keep]
        if found.empty:
            return pd.DataFrame(
                {"release_id": [], "pseudonym": [], "subject_id": [],
                 "withdrawn_at": pd.Series([], dtype="datetime64[us, UTC]")}
            ).astype({"release_id": object, "pseudonym": object, "subject_id": object})
        found["withdrawn_at"] = pd.to_datetime(found["withdrawn_at"], utc=True)
        frame = (found.groupby(["release_id", "pseudonym", "subject_id"], as_index=False)["withdrawn_at"].min()
                 .sort_values(["release_id", "pseudonym"]).reset_index(drop=True))
        return frame.loc[:, columns]


_PG_IDS = sa.bindparam("ids", type_=pg_dialect.ARRAY(sa.String))
_PG_EXISTING = sa.text(
    "SELECT e.event_id, e.content_sha256 FROM unnest(CAST(:ids AS text[])) AS u(id) "
    "JOIN consent_events e ON e.event_id = u.id"
).bindparams(_PG_IDS)
_PG_OWNERS = sa.text(
    "SELECT DISTINCT e.consent_id, e.subject_id FROM unnest(CAST(:ids AS text[])) AS u(id) "
    "JOIN consent_events e ON e.consent_id = u.id"
).bindparams(_PG_IDS)
_PG_COUNT_MINE = sa.text(
    "SELECT count(*) FROM unnest(CAST(:ids AS text[])) AS u(id) JOIN consent_events e "
    "ON e.event_id = u.id WHERE e.xmin::text::bigint = txid_current() % 4294967296"
).bindparams(_PG_IDS)


#: The snapshot's columns as read: event text, the timestamp, the two dates, two flags, seq.
_READ_COLUMNS = EVENT_COLUMNS + ("seq",)
_FLAG_COLUMNS = ("separate", "cross_border")
_DATE_COLUMNS = ("valid_from", "valid_until")
_NULLABLE = tuple(c.name for c in consent_events.columns if c.nullable and c.name in _READ_COLUMNS)
#: What a snapshot's summary is decided by: all that `stream_snapshot` keeps of the registry.
_SUMMARY_COLUMNS = ("event_id", "consent_id", "subject_id", "event", "recorded_at", "seq")
#: Arrow types of the columns the readers return (times and dates naive, in UTC).
_COLUMN_TYPES = {c: pa.string() for c in _READ_COLUMNS} | {
    "recorded_at": pa.timestamp("us"), "valid_from": pa.timestamp("us"),
    "valid_until": pa.timestamp("us"), "separate": pa.bool_(), "cross_border": pa.bool_(),
    "seq": pa.int64()}
#: The events as `stream_snapshot` hands them on: the snapshot frame's columns as Arrow (the
#: recording time in UTC), so an IPC file of them reads back as the frame `snapshot` builds.
SNAPSHOT_SCHEMA = pa.schema(
    [(c, pa.timestamp("us", tz="UTC") if c == "recorded_at" else _COLUMN_TYPES[c]) for c in _READ_COLUMNS])
#: Events per SQLite read: a chunk comes back as ONE value (SQLite caps values at 1e9 bytes).
_SQLITE_READ_CHUNK = 200_000
#: Bytes of COPY output (whole rows) parsed at a time on PostgreSQL.
_PG_READ_BLOCK = 1 << 24
_SEP = "\x1f"


def _read_events_sqlite(con: Any, as_of_utc: pd.Timestamp, ids: list[str] | None, *,
                        read_ahead: bool = False) -> Iterator[dict[str, Any]]:
    """Every event of a chunk printf-ed by SQLite into one line of unit-separated fields (plus
    a 0/1 field per nullable text column telling NULL from ''), the lines joined into one
    blob that Arrow's CSV reader parses: no Python object per value. Rows come in seq order
    (a rowid range scan); the chunks share one read transaction (WAL), so imports running
    meanwhile change nothing this reads. A value holding the separator or a line break makes
    the chunk unparseable or its count wrong: that chunk is then read row by row instead.
    Yields each chunk's columns (see _COLUMN_TYPES) as it is read."""
    import pyarrow.csv as pacsv

    bound = _bind_time(as_of_utc, "sqlite").strftime("%Y-%m-%d %H:%M:%S.%f")
    fields: list[str] = []
    names: list[str] = []
    for col in _READ_COLUMNS:
        fields.append(f"CASE WHEN {col} THEN 1 ELSE 0 END" if col in _FLAG_COLUMNS else col)
        names.append(col)
        if col in _NULLABLE and col not in _DATE_COLUMNS:
            fields.append(f"{col} IS NULL")
            names.append(f"{col}__null")
    line = f"printf('{_SEP.join(['%s'] * len(fields))}', {', '.join(fields)})"
    where = "seq > ? AND seq <= ? AND recorded_at <= ?"
    if ids is not None:
        where += " AND subject_id IN (SELECT value FROM json_each(?))"
    # No ORDER BY subquery (it costs a third more): a rowid range is scanned in seq order,
    # and _events_frame sorts by seq if a plan (the subject index) returned another order.
    query = f"SELECT count(*), CAST(group_concat({line}, char(10)) AS BLOB) FROM consent_events WHERE {where}"
    types = {c: pa.string() for c in names}
    types.update({"seq": pa.int64(), "separate": pa.bool_(), "cross_border": pa.bool_(),
                  "valid_from": pa.date32(), "valid_until": pa.date32()})
    csv_options = dict(
        # One thread: on a shared machine the parse costs less than half the CPU time.
        read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24, use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=_SEP, quote_char=False, escape_char=False,
                                         ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=False,
            true_values=["1"], false_values=["0"]),
    )
    began = not con.in_transaction
    if began:
        con.execute("BEGIN")
    # With read_ahead, SQLite (which releases the GIL) reads the next chunk on a helper thread
    # while this one parses and the caller writes the last: every use of the connection is
    # on that one thread, in order.
    helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-read-ahead") if read_ahead else None

    def run(sql: str, params: list[Any], fetch: str) -> Any:
        if helper is None:
            return getattr(con.execute(sql, params), fetch)()
        return helper.submit(lambda: getattr(con.execute(sql, params), fetch)())

    def result(pending: Any) -> Any:
        return pending if helper is None else pending.result()

    try:
        lo, hi = con.execute("SELECT min(seq), max(seq) FROM consent_events").fetchone()
        if lo is None:
            lo = hi = 0
        chunks = []
        for start in range(lo - 1, hi, _SQLITE_READ_CHUNK):
            params: list[Any] = [start, start + _SQLITE_READ_CHUNK, bound]
            if ids is not None:
                params.append(json.dumps(ids))
            chunks.append(params)
        pending = run(query, chunks[0], "fetchone") if chunks else None
        for k, params in enumerate(chunks):
            n, blob = result(pending)
            pending = run(query, chunks[k + 1], "fetchone") if k + 1 < len(chunks) else None
            if not n:
                continue
            try:
                table = pacsv.read_csv(pa.BufferReader(blob), **csv_options)
            except pa.ArrowInvalid:
                table = None
            del blob
            if table is None or table.num_rows != n:
                rows = result(run(f"SELECT {', '.join(fields)} FROM consent_events WHERE {where}",
                                  params, "fetchall"))
                table = pa.Table.from_pylist([dict(zip(names, r)) for r in rows]).cast(
                    pa.schema([(c, types[c]) for c in names]))
            yield _sqlite_columns(table, names)
    finally:
        if helper is not None:
            helper.shutdown(wait=True, cancel_futures=True)
        if began:
            con.execute("COMMIT")


def _sqlite_columns(table: pa.Table, names: list[str]) -> dict[str, Any]:
    """One parsed SQLite chunk as the snapshot's columns: NULL flags applied, text times cast."""
    out: dict[str, Any] = {}
    for col in _READ_COLUMNS:
        arr = table.column(col)
        if f"{col}__null" in names:
            arr = pc.if_else(pc.equal(table.column(f"{col}__null"), "1"), pa.scalar(None, arr.type), arr)
        out[col] = arr
    try:
        out["recorded_at"] = pc.cast(out["recorded_at"], pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Not the text SQLAlchemy writes: let pandas read whatever ISO 8601 form it is.
        parsed = pd.to_datetime(out["recorded_at"].to_pandas(), utc=True, format="ISO8601")
        out["recorded_at"] = pa.array(parsed.dt.tz_convert(None).astype("datetime64[us]"))
    for col in _DATE_COLUMNS:
        out[col] = pc.cast(out[col], pa.timestamp("us"))
    return out


def _read_events_postgresql(con: Any, as_of_utc: pd.Timestamp, ids: list[str] | None, *,
                            read_ahead: bool = False) -> Iterator[dict[str, Any]]:
    """One COPY of the events as CSV (one statement: one MVCC snapshot), parsed by Arrow as it
    streams in, ~16 MB of rows at a time; yields each piece's columns (see _COLUMN_TYPES).
    Times come as integer microseconds since the epoch and dates as day numbers, so neither
    TimeZone nor DateStyle matter. (``read_ahead`` changes nothing here: the server runs the COPY and
    sends its output while this parses.)"""
    import pyarrow.csv as pacsv

    exprs = []
    for col in _READ_COLUMNS:
        if col == "recorded_at":
            exprs.append("(extract(epoch FROM recorded_at) * 1000000)::bigint")
        elif col in _DATE_COLUMNS:
            exprs.append(f"{col} - DATE '1970-01-01'")
        else:
            exprs.append(col)
    where = "recorded_at <= %s"
    params: list[Any] = [_bind_time(as_of_utc, "postgresql")]
    if ids is not None:
        where += " AND subject_id IN (SELECT unnest(%s::text[]))"
        params.append(ids)
    sql = (f"COPY (SELECT {', '.join(exprs)} FROM consent_events WHERE {where} ORDER BY seq) "
           "TO STDOUT (FORMAT csv)")
    types = {c: pa.string() for c in _READ_COLUMNS}
    types.update({"recorded_at": pa.int64(), "seq": pa.int64(), "valid_from": pa.int32(),
                  "valid_until": pa.int32(), "separate": pa.bool_(), "cross_border": pa.bool_()})
    csv_options = dict(
        read_options=pacsv.ReadOptions(column_names=list(_READ_COLUMNS)),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=True,
            quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"]),
    )

    def parsed(buf: io.BytesIO) -> dict[str, Any]:
        table = pacsv.read_csv(pa.BufferReader(buf.getbuffer()), **csv_options)
        out = {c: table.column(c) for c in _READ_COLUMNS}
        out["recorded_at"] = out["recorded_at"].cast(pa.timestamp("us"))
        for col in _DATE_COLUMNS:
            out[col] = out[col].cast(pa.date32()).cast(pa.timestamp("us"))
        return out

    try:
        with con.cursor() as cur:
            with cur.copy(sql, params) as copy:
                # COPY hands over one whole row per block (libpq), so a cut between blocks
                # never splits a row, however long its values or whatever line breaks they hold.
                buf = io.BytesIO()
                for block in copy:
                    buf.write(block)
                    if buf.tell() >= _PG_READ_BLOCK:
                        yield parsed(buf)
                        buf = io.BytesIO()
                if buf.tell():  # (no event at all: nothing to parse; Arrow refuses an empty CSV)
                    yield parsed(buf)
    finally:
        con.rollback()  # read only; ends the transaction psycopg opened


def _joined(chunks: list[dict[str, Any]], names: Sequence[str]) -> dict[str, pa.ChunkedArray]:
    """The chunks' columns end to end (no copy: a chunked array over the chunks' arrays)."""
    out: dict[str, pa.ChunkedArray] = {}
    for col in names:
        parts: list[pa.Array] = []
        for chunk in chunks:
            arr = chunk[col]
            parts.extend(arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr])
        out[col] = pa.chunked_array(parts, _COLUMN_TYPES[col])
    return out


def _snapshot_table(columns: dict[str, Any]) -> pa.Table:
    """A chunk's columns as SNAPSHOT_SCHEMA (the recording time marked UTC: no copy)."""
    arrays = [columns[c].cast(SNAPSHOT_SCHEMA.field(c).type) if c == "recorded_at" else columns[c]
              for c in _READ_COLUMNS]
    return pa.Table.from_arrays(arrays, schema=SNAPSHOT_SCHEMA)


def _events_frame(columns: dict[str, Any], names: Sequence[str] = _READ_COLUMNS) -> pd.DataFrame:
    """The Arrow columns as the snapshot frame: text as pandas "str" (a column with no value
    at all as object None, as pandas infers it), UTC times, naive dates, bool flags."""
    data: dict[str, Any] = {}
    n = len(columns["seq"])
    for col in names:
        arr = columns.pop(col)  # let each Arrow column go once converted
        if col == "recorded_at":
            data[col] = pd.DatetimeIndex(arr.to_numpy(zero_copy_only=False)).tz_localize("UTC")
        elif col in _DATE_COLUMNS:
            data[col] = arr.to_numpy(zero_copy_only=False)
        elif col in _FLAG_COLUMNS:
            data[col] = arr.to_numpy(zero_copy_only=False).astype(bool)
        elif col == "seq":
            data[col] = arr.to_numpy(zero_copy_only=False).astype(np.int64)
        elif arr.null_count == n:
            data[col] = pd.Series([None] * n, dtype=object)
        else:
            data[col] = arr.to_pandas()
    frame = pd.DataFrame(data)
    seq = frame["seq"].to_numpy()
    if n > 1 and not (seq[1:] > seq[:-1]).all():
        frame = frame.take(np.argsort(seq, kind="stable")).reset_index(drop=True)
    return frame


class PendingRelease:
    """A release's subjects being recorded: see `ConsentRegistry.begin_release_record`. Use it
    as a context manager; `inserted()` waits for the rows (and raises what the insert raised),
    `commit()` makes them durable, leaving the block without a commit rolls them back."""

    def __init__(self, registry: ConsentRegistry, rows: int, insert: Callable[[Any], None]) -> None:
        import threading

        self.rows = rows
        self._registry = registry
        self._inserted = threading.Event()
        self._decided = threading.Event()
        self._commit = False
        self._error: BaseException | None = None
        # All database work on this one thread (the connection never changes threads).
        self._thread = threading.Thread(target=self._run, args=(insert,), daemon=True,
                                        name="deidflow-record-release")
        self._thread.start()

    def _run(self, insert: Callable[[Any], None]) -> None:
        try:
            with self._registry.engine.connect() as conn:
                tx = conn.begin()
                try:
                    insert(conn.connection.driver_connection)
                    self._inserted.set()
                    self._decided.wait()
                    if self._commit:
                        tx.commit()
                finally:
                    if tx.is_active:
                        tx.rollback()
        except BaseException as exc:  # handed to the caller's thread by _raise
            self._error = exc
        finally:
            self._inserted.set()

    def inserted(self) -> None:
        """Wait until every row is inserted (not yet committed); raise what went wrong."""
        self._inserted.wait()
        self._raise()

    def commit(self) -> None:
        self._decide(True)
        self._raise()

    def rollback(self) -> None:
        self._decide(False)

    def _decide(self, commit: bool) -> None:
        if not self._decided.is_set():  # the first decision stands
            self._commit = commit
            self._decided.set()
        self._thread.join()

    def _raise(self) -> None:
        exc = self._error
        if exc is None:
            return
        if isinstance(exc, (DBAPIError, SQLAlchemyError, self._registry.engine.dialect.loaded_dbapi.Error)):
            raise self._registry._unreachable(exc) from None
        raise exc

    def __enter__(self) -> PendingRelease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rollback()  # nothing to undo after a commit


#: Subjects per INSERT of a release's record on SQLite (~9 MB of JSON text each).
_SQLITE_RECORD_CHUNK = 250_000
#: What a JSON string must escape (SQLite's JSON functions also cut text at a NUL).
_JSON_ESCAPED = r'["\\\x00-\x1f]'
_SQLITE_INSERT_RELEASE = ("INSERT INTO release_subjects (release_id, subject_id, pseudonym, released_at) "
                          "{} ON CONFLICT (release_id, subject_id) DO NOTHING")


def _insert_release_sqlite(con: Any, release_id: str, subjects: pa.Array, pseuds: pa.Array,
                           when: datetime) -> None:
    """Plain ids (codes: nothing JSON must escape, the usual case) go in as JSON text of
    [subject, pseudonym] pairs that Arrow writes and one INSERT … SELECT FROM json_each unpacks
    per chunk: no Python object per row, and no GIL held while SQLite inserts. Other ids go
    row by row through executemany (holding the GIL, a Python object per row). Either way
    rows go in in order, so for a subject given twice the first pseudonym wins."""
    stamp = when.strftime("%Y-%m-%d %H:%M:%S.%f")
    if any(pc.any(pc.match_substring_regex(a, _JSON_ESCAPED)).as_py() for a in (subjects, pseuds)):
        con.executemany(
            _SQLITE_INSERT_RELEASE.format("VALUES (?, ?, ?, ?)"),
            zip(itertools.repeat(release_id), subjects.to_pylist(), pseuds.to_pylist(), itertools.repeat(stamp)),
        )
        return
    for start in range(0, len(subjects), _SQLITE_RECORD_CHUNK):
        pairs = _json_pairs(subjects.slice(start, _SQLITE_RECORD_CHUNK), pseuds.slice(start, _SQLITE_RECORD_CHUNK))
        con.execute(
            _SQLITE_INSERT_RELEASE.format(
                "SELECT ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'), ? "
                "FROM json_each(?) WHERE true"),
            (release_id, stamp, pairs),
        )


def _json_pairs(subjects: pa.Array, pseuds: pa.Array) -> str:
    """'[["s","p"],["s","p"],…]' for ids that need no escaping, written by Arrow."""
    text = pa.large_string()
    rows = pc.binary_join_element_wise(  # the last argument is the separator
        pa.scalar('["', text), subjects.cast(text), pa.scalar('","', text), pseuds.cast(text),
        pa.scalar('"],', text), pa.scalar("", text))
    ends = np.frombuffer(rows.buffers()[1], np.int64, len(rows) + 1, rows.offset * 8)
    return f"[{str(memoryview(rows.buffers()[2])[ends[0]:ends[-1] - 1], 'utf-8')}]"  # no last comma


def _copy_release_postgresql(con: Any, release_id: str, subjects: pa.Array, pseuds: pa.Array,
                             when: datetime) -> None:
    """COPY the (subject, pseudonym) pairs as CSV into a temporary table, then one INSERT …
    ON CONFLICT DO NOTHING (COPY itself cannot skip conflicts); for a subject given twice
    the first pseudonym wins, as with row-by-row inserts."""
    import pyarrow.csv as pacsv

    buf = io.BytesIO()
    pacsv.write_csv(
        pa.table({"n": pa.array(np.arange(len(subjects), dtype=np.int64)), "s": subjects, "p": pseuds}),
        buf, pacsv.WriteOptions(include_header=False, quoting_style="all_valid"),
    )
    with con.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE deidflow_release_in (n bigint, subject_id text, "
                    "pseudonym text) ON COMMIT DROP")
        with cur.copy("COPY deidflow_release_in FROM STDIN (FORMAT csv)") as copy:
            copy.write(buf.getbuffer())
        cur.execute(
            "INSERT INTO release_subjects (release_id, subject_id, pseudonym, released_at) "
            "SELECT DISTINCT ON (subject_id) %s, subject_id, pseudonym, %s "
            "FROM deidflow_release_in ORDER BY subject_id, n "
            "ON CONFLICT (release_id, subject_id) DO NOTHING",
            (release_id, when),
        )


def _canonical_subjects(ev: pd.DataFrame, source: str) -> pd.DataFrame:
    """The events with subject and guardian ids in canonical form; an id that must be refused
    (control or format characters, mixed scripts) stops the whole batch."""
    from deidflow.consent.subject_ids import canonical_series, id_problems

    for col in ("subject_id", "guardian_id"):
        present = ev[col].notna()
        if not present.any():
            continue
        values = ev.loc[present, col].astype(str)
        found = id_problems(values)
        if found:
            at = min(found)
            raise ConsentError(
                f"{len(found)} event(s) have an unusable {col}, the first (event_id "
                f"'{ev.loc[present, 'event_id'].iloc[at]}') {found[at]}; nothing was imported",
                file=source, column=col,
                fix="retype the id without invisible characters and in one script",
            )
        ev.loc[present, col] = canonical_series(values).to_numpy(dtype=object)
    return ev


def _bind_time(ts: pd.Timestamp, backend: str) -> datetime:
    """SQLite stores datetimes as text without an offset: bind naive UTC there so that text
    comparison orders correctly; PostgreSQL gets an aware timestamp (timestamptz)."""
    py = ts.tz_convert("UTC").to_pydatetime()
    return py.replace(tzinfo=None) if backend == "sqlite" else py


def _to_rows(ev: pd.DataFrame, source: str, backend: str) -> list[dict[str, Any]]:
    """Insert parameters, converted column by column (DataFrame.to_dict boxes every cell and
    cost more than the insert itself)."""
    recorded = pd.to_datetime(ev["recorded_at"], utc=True)
    if backend == "sqlite":
        recorded = recorded.dt.tz_convert(None)  # see _bind_time
    cols: dict[str, list[Any]] = {"recorded_at": list(recorded.dt.to_pydatetime())}
    for col in ("valid_from", "valid_until"):
        day = pd.to_datetime(ev[col])
        cols[col] = day.dt.date.astype(object).where(day.notna(), None).tolist()
    for col in ("separate", "cross_border"):
        cols[col] = ev[col].astype(bool).tolist()
    for col in ev.columns:
        if col not in cols:
            cols[col] = ev[col].astype(object).where(ev[col].notna(), None).tolist()
    cols["source"] = [source] * len(ev)
    keys = list(cols)
    return [dict(zip(keys, values)) for values in zip(*(cols[k] for k in keys))]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL: readers (the gate's snapshot) never wait for writers (imports, withdrawals).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _added_index_ddl(backend: str) -> list[str]:
    """Indexes added after registries were first created (create_all adds them to new tables
    only). On PostgreSQL only where missing: CREATE INDEX locks the table against writes."""
    if backend == "sqlite":
        return ["CREATE INDEX IF NOT EXISTS ix_consent_events_consent ON consent_events (consent_id)"]
    return ["DO $$ BEGIN IF to_regclass('ix_consent_events_consent') IS NULL THEN "
            "CREATE INDEX ix_consent_events_consent ON consent_events (consent_id); END IF; END $$"]


def _append_only_ddl(backend: str) -> list[str]:
    stmts: list[str] = []
    if backend == "sqlite":
        for table in _APPEND_ONLY_TABLES:
            for op in ("UPDATE", "DELETE"):
                stmts.append(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END"
                )
    else:
        stmts.append(
            "CREATE OR REPLACE FUNCTION deidflow_refuse_change() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '% is append-only: % refused', "
            "TG_TABLE_NAME, TG_OP; END $$"
        )
        # Created only where missing: CREATE TRIGGER locks the table against writes, so
        # re-creating it on every connection would wait behind (or, in the same process,
        # deadlock with) a release record still being written in an open transaction.
        for table in _APPEND_ONLY_TABLES:
            for name, when, each in ((f"{table}_append_only", "UPDATE OR DELETE", "ROW"),
                                     (f"{table}_no_truncate", "TRUNCATE", "STATEMENT")):
                stmts.append(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = "
                    f"'{name}' AND tgrelid = '{table}'::regclass) THEN CREATE TRIGGER {name} "
                    f"BEFORE {when} ON {table} FOR EACH {each} EXECUTE FUNCTION "
                    "deidflow_refuse_change(); END IF; END $$"
                )
    return stmts
