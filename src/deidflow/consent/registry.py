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

Concurrency: the gate reads one snapshot with one SELECT (PostgreSQL MVCC / SQLite WAL), so
imports and withdrawals running at the same time neither block it nor change what it reads.

The release history (which subject went out under which pseudonym in which release) is a
hospital-private table used to find releases that contain a subject who later withdrew
(PIPL arts. 15, 47: the hospital asks the recipient to delete).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
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

_APPEND_ONLY_TABLES = ("consent_events", "release_subjects")


def redact_url(url: str) -> str:
    """The registry URL with its password replaced, for messages, logs and manifests."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"


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
    """

    registry_url: str
    as_of: pd.Timestamp
    events: pd.DataFrame
    current: pd.DataFrame = field(repr=False)

    @classmethod
    def from_events(
        cls, events: pd.DataFrame, as_of: datetime | pd.Timestamp, registry_url: str = "memory"
    ) -> "ConsentSnapshot":
        as_of_utc = to_utc(as_of)
        ev = events.copy()
        ev["recorded_at"] = pd.to_datetime(ev["recorded_at"], utc=True)
        ev = ev.loc[(ev["recorded_at"] <= as_of_utc).to_numpy()]
        if "seq" not in ev.columns:
            ev["seq"] = np.arange(len(ev), dtype=np.int64)
        for col in ("valid_from", "valid_until"):
            ev[col] = pd.to_datetime(ev[col])
        for col in ("separate", "cross_border"):
            ev[col] = ev[col].astype(bool)
        rank = _EVENT_RANK.get_indexer(ev["event"].astype(str))
        # Sort integer keys, not strings: consent ids factorised once (grouped in order of
        # first appearance), then time, then the withdrawal-wins rank, then arrival.
        codes, _ = pd.factorize(ev["consent_id"])
        order = np.lexsort((
            ev["seq"].to_numpy(dtype=np.int64),
            rank,
            ev["recorded_at"].to_numpy(dtype="datetime64[ns]").view(np.int64),
            codes,
        ))
        ev = ev.take(order).reset_index(drop=True)
        sorted_codes = codes[order]
        last = np.ones(len(ev), dtype=bool)
        last[:-1] = sorted_codes[1:] != sorted_codes[:-1]
        current = ev.loc[last].reset_index(drop=True)
        return cls(redact_url(registry_url), as_of_utc, ev, current)

    @cached_property
    def digest(self) -> str:
        """sha256 over the sorted event ids this snapshot used: reproducible, no identities.
        Computed once per snapshot (sorting a million ids costs most of a second)."""
        ids = pa.array(self.events["event_id"].astype("str").array)
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        ordered = pc.take(ids, pc.array_sort_indices(ids)).to_pylist()
        return hashlib.sha256("\n".join(ordered).encode("utf-8")).hexdigest()

    def summary(self) -> dict[str, Any]:
        in_force = self.current["event"].isin(["granted", "amended"])
        return {
            "registry": self.registry_url,
            "as_of": self.as_of.isoformat(),
            "events": int(len(self.events)),
            "consents": int(len(self.current)),
            "granted": int(in_force.sum()),
            "withdrawn": int((~in_force).sum()),
            "subjects": int(self.current["subject_id"].nunique()),
            "events_sha256": self.digest,
        }


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
                for stmt in _append_only_ddl(self.backend):
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
                rows = _to_rows(ev, source, self.backend)
                for start in range(0, len(rows), _INSERT_CHUNK):
                    chunk = rows[start : start + _INSERT_CHUNK]
                    if self.backend == "postgresql":
                        # Plain executemany, which psycopg pipelines. With RETURNING, SQLAlchemy
                        # builds 1,000-row VALUES statements that psycopg re-parses (~0.5 ms a
                        # row). Rows this transaction inserted (not skipped by ON CONFLICT, e.g.
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
        """All events recorded at or before ``as_of``, read with one query."""
        as_of_utc = to_utc(as_of)
        cols = [consent_events.c[c] for c in EVENT_COLUMNS] + [consent_events.c.seq]
        if self.backend == "sqlite":
            # SQLite keeps times as text; SQLAlchemy parses each value with a regex (most of
            # the read time). Fetch the text and let from_events parse whole columns at once.
            cols = [sa.type_coerce(c, sa.String).label(c.name)
                    if c.name in ("recorded_at", "valid_from", "valid_until") else c for c in cols]
        q = sa.select(*cols).where(consent_events.c.recorded_at <= _bind_time(as_of_utc, self.backend))
        if subject_ids is not None:
            q = q.where(consent_events.c.subject_id.in_(list(subject_ids)))
        q = q.order_by(consent_events.c.seq)  # arrival order: the snapshot frame is reproducible
        try:
            with self.engine.connect() as conn:
                result = conn.execute(q)
                frame = _frame(result)
        except (DBAPIError, SQLAlchemyError) as exc:
            raise self._unreachable(exc) from None
        if frame.empty:
            frame = _empty_events().assign(seq=pd.Series(dtype="int64"))
        return ConsentSnapshot.from_events(frame, as_of_utc, self.url)

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
    ) -> int:
        """Remember which subject went out under which pseudonym in a release (idempotent)."""
        subjects = pd.Series(np.asarray(subject_ids, dtype=object))
        pseuds = pd.Series(np.asarray(pseudonyms, dtype=object))
        if len(subjects) != len(pseuds):
            raise ConsentError(
                f"release {release_id}: {len(subjects)} subject ids but {len(pseuds)} pseudonyms",
                key="record_release", fix="pass one pseudonym per released subject, same order",
            )
        when = _bind_time(to_utc(released_at), self.backend)
        rows = [
            {"release_id": release_id, "subject_id": s, "pseudonym": p, "released_at": when}
            for s, p in zip(subjects.astype(str), pseuds.astype(str))
        ]
        insert = (sqlite_dialect.insert if self.backend == "sqlite" else pg_dialect.insert)(
            release_subjects
        ).on_conflict_do_nothing(index_elements=["release_id", "subject_id"])
        try:
            with self.engine.begin() as conn:
                for start in range(0, len(rows), _INSERT_CHUNK):
                    conn.execute(insert, rows[start : start + _INSERT_CHUNK])
        except (DBAPIError, SQLAlchemyError) as exc:
            raise self._unreachable(exc) from None
        return len(rows)

    def withdrawn_since_release(self) -> pd.DataFrame:
        """Released subjects who withdrew a consent after the release that contained them:
        one row per (release, subject) with the first such withdrawal time."""
        r, e = release_subjects, consent_events
        q = (
            sa.select(
                r.c.release_id, r.c.pseudonym, r.c.subject_id,
                sa.func.min(e.c.recorded_at).label("withdrawn_at"),
            )
            .join(e, sa.and_(e.c.subject_id == r.c.subject_id, e.c.event == "withdrawn",
                             e.c.recorded_at > r.c.released_at))
            .group_by(r.c.release_id, r.c.pseudonym, r.c.subject_id)
            .order_by(r.c.release_id, r.c.pseudonym)
        )
        try:
            with self.engine.connect() as conn:
                result = conn.execute(q)
                frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        except (DBAPIError, SQLAlchemyError) as exc:
            raise self._unreachable(exc) from None
        if frame.empty:
            return pd.DataFrame(
                {"release_id": [], "pseudonym": [], "subject_id": [],
                 "withdrawn_at": pd.Series([], dtype="datetime64[us, UTC]")}
            ).astype({"release_id": object, "pseudonym": object, "subject_id": object})
        frame["withdrawn_at"] = pd.to_datetime(frame["withdrawn_at"], utc=True)
        return frame


_PG_IDS = sa.bindparam("ids", type_=pg_dialect.ARRAY(sa.String))
_PG_EXISTING = sa.text(
    "SELECT e.event_id, e.content_sha256 FROM unnest(CAST(:ids AS text[])) AS u(id) "
    "JOIN consent_events e ON e.event_id = u.id"
).bindparams(_PG_IDS)
_PG_COUNT_MINE = sa.text(
    "SELECT count(*) FROM unnest(CAST(:ids AS text[])) AS u(id) JOIN consent_events e "
    "ON e.event_id = u.id WHERE e.xmin::text::bigint = txid_current() % 4294967296"
).bindparams(_PG_IDS)


def _frame(result: sa.CursorResult) -> pd.DataFrame:
    """A query result as a DataFrame built column by column: pandas probes every Row object
    (hasattr → SQLAlchemy key-lookup exceptions), which cost more than the query."""
    keys = list(result.keys())
    rows = result.all()
    columns = list(zip(*rows)) if rows else [() for _ in keys]
    return pd.DataFrame({k: list(v) for k, v in zip(keys, columns)})


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
        for table in _APPEND_ONLY_TABLES:
            stmts.append(
                f"CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION deidflow_refuse_change()"
            )
            stmts.append(
                f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION deidflow_refuse_change()"
            )
    return stmts
