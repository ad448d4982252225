"""The inbox's one implementation: SQLAlchemy Core queries over `inbox_tables`, for both backends.

`SqliteInbox` is the embedded backend, a file beside the token store;
`tap_whoop.stores.postgres.PostgresInbox` keeps the same in PostgreSQL (the `store_url` setting).
SQLAlchemy only writes the SQL: each backend runs it on its own connections. Imported only when
an inbox is opened (SQLAlchemy takes a quarter of a second to load).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import sqlite3
import threading
import time
import typing as t
import uuid
from dataclasses import dataclass
from pathlib import Path

import backoff
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Compiled, Dialect
from sqlalchemy.schema import CreateIndex, CreateTable, DropIndex

from tap_whoop.errors import TokenStoreError
from tap_whoop.stores.inbox import Contents, Event, LedgerRow, SetAside, StoredEvent

if t.TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Iterator

    from sqlalchemy.types import TypeEngine

T = t.TypeVar("T")


@dataclass(frozen=True)
class Tables:
    """The inbox's tables as one backend names them and keeps times."""

    events: sa.Table
    ledger: sa.Table
    meta: sa.Table
    set_aside: sa.Table
    #: The file's only: where `tap-whoop store copy` moved it (a write is refused from then).
    moved_to: sa.Table


def inbox_tables(prefix: str, instant: TypeEngine[float]) -> Tables:
    """The inbox's tables, named `prefix` + name; `instant` keeps epoch seconds in the backend."""
    metadata = sa.MetaData()
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    events = sa.Table(
        f"{prefix}events",
        metadata,
        sa.Column("seq", big, sa.FetchedValue(), primary_key=True),  # numbered by the server
        sa.Column("user_id", big, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("record_id", sa.Text, nullable=False),
        sa.Column("trace_id", sa.Text, nullable=False, unique=True),
        sa.Column("received_at", instant, nullable=False),
        sa.Column("done_at", instant),
        sa.Index(f"{prefix}events_received", "received_at"),
        sa.Index(f"{prefix}events_done", "done_at"),
        sqlite_autoincrement=True,
        implicit_returning=False,
    )
    ledger = sa.Table(
        f"{prefix}ledger",
        metadata,
        sa.Column("user_id", big, primary_key=True),
        sa.Column("stream", sa.Text, primary_key=True),
        sa.Column("record_id", sa.Text, primary_key=True),
        sa.Column("key", sa.Text),
        sa.Column("sleep_id", sa.Text),
        sa.Column("cycle_id", big),
        sa.Index(f"{prefix}ledger_sleep", "user_id", "sleep_id"),
        sqlite_with_rowid=False,
    )
    moved_to = sa.Table(f"{prefix}moved_to", metadata, sa.Column("url", sa.Text, nullable=False))
    meta = sa.Table(
        f"{prefix}meta",
        metadata,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    set_aside = sa.Table(
        f"{prefix}set_aside",
        metadata,
        sa.Column("seq", big, primary_key=True, autoincrement=False),
        sa.Column("user_id", big, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("record_id", sa.Text, nullable=False),
        sa.Column("trace_id", sa.Text, nullable=False),
        sa.Column("received_at", instant, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("at", instant, nullable=False),
    )
    return Tables(events, ledger, meta, set_aside, moved_to)


def compiled(statement: sa.ClauseElement, dialect: Dialect, **kwargs: t.Any) -> Compiled:
    """`statement` as `dialect`'s SQL, a list bound with `in_` spelled out."""
    return statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True}, **kwargs)


class Session:
    """A backend's DB-API connection inside a transaction, running SQLAlchemy Core statements.

    The backends keep their own connections (retries, timeouts, error wording); SQLAlchemy
    only writes the SQL, so one set of queries serves both.
    """

    def __init__(self, connection: t.Any, dialect: Dialect) -> None:
        self.connection = connection
        self.dialect = dialect

    def execute(
        self, statement: sa.ClauseElement | Compiled, params: dict[str, t.Any] | None = None
    ) -> t.Any:
        """The DB-API cursor after running `statement` (prepared, given `params`)."""
        if not isinstance(statement, Compiled):
            statement = compiled(statement, self.dialect)
        return self.connection.execute(
            str(statement), (statement.params or {}) if params is None else params
        )

    def executemany(self, statement: sa.ClauseElement, rows: list[dict[str, t.Any]]) -> None:
        """`statement` once per row, its parameters named by the rows' keys."""
        query = compiled(statement, self.dialect, column_keys=list(rows[0]))
        with contextlib.closing(self.connection.cursor()) as cursor:
            cursor.executemany(str(query), rows)


#: A dialect's INSERT with ON CONFLICT: `sqlalchemy.dialects.sqlite.insert` or its PostgreSQL twin.
Upsert = t.Callable[[sa.Table], t.Any]
_APPENDED = ("user_id", "type", "record_id", "trace_id", "received_at")


class SqlInbox(abc.ABC):
    """The inbox's one implementation: SQLAlchemy Core queries, run by a backend's connection.

    A backend (`SqliteInbox`, `PostgresInbox`) names the tables and runs statements: `_read`
    outside a transaction, `_write` in one, its appends (`appending`) committed in log order.
    """

    path: t.Any

    def __init__(self, tables: Tables, dialect: Dialect, upsert: Upsert) -> None:
        self.tables = tables
        self.dialect = dialect
        self._insert = upsert
        # compiled once: every delivery the receiver takes runs it
        self._append = compiled(
            self._insert(tables.events).on_conflict_do_nothing(), dialect, column_keys=_APPENDED
        )

    @abc.abstractmethod
    def _read(self, statement: sa.ClauseElement) -> list[tuple[t.Any, ...]]:
        """The rows `statement` selects."""

    @abc.abstractmethod
    def _write(self, operation: Callable[[Session], T], *, appending: bool = False) -> T:
        """`operation` in a durable transaction; `appending` to the log, after earlier appends."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether anything was ever stored (reading a store that is not there creates it)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection (a later call opens it again)."""

    def _events(self, *where: sa.ColumnElement[bool]) -> list[Event]:
        e = self.tables.events
        query = sa.select(e.c.user_id, e.c.type, e.c.record_id, e.c.trace_id, e.c.received_at)
        rows = self._read(query.add_columns(e.c.seq).where(*where).order_by(e.c.seq))
        return [Event(*row) for row in rows]

    def _meta(self, name: str) -> list[tuple[t.Any, ...]]:
        meta = self.tables.meta
        return self._read(sa.select(meta.c.value).where(meta.c.name == name))

    def identity(self) -> str:
        """This inbox's id, made with its tables."""
        return str(self._meta("identity")[0][0])

    def add(self, event: Event) -> bool:
        """Append `event` durably; False only for a delivery whose trace id is already in."""
        row = {name: getattr(event, name) for name in _APPENDED}
        row["received_at"] = event.received_at or time.time()
        return self._write(
            lambda session: session.execute(self._append, row).rowcount == 1, appending=True
        )

    def after(self, position: int) -> list[Event]:
        """Every event after `position` in the log, oldest first."""
        return self._events(self.tables.events.c.seq > position)

    def by_seqs(self, seqs: Collection[int]) -> list[Event]:
        """The events still in the log among `seqs`, oldest first."""
        wanted = sorted({int(seq) for seq in seqs})
        if not wanted:
            return []
        listed: sa.BindParameter[list[int]] = sa.bindparam(
            "seqs", wanted, expanding=True, literal_execute=True
        )
        return self._events(self.tables.events.c.seq.in_(listed))

    def horizon(self) -> int:
        """The last position pruned: a state behind it has missed events."""
        rows = self._meta("pruned_through")
        return int(rows[0][0]) if rows else 0

    def prune(self, keep_seconds: float) -> None:
        """Drop the events received more than `keep_seconds` ago, by the receiver's clock."""
        events, meta = self.tables.events, self.tables.meta
        oldest = sa.select(sa.func.max(events.c.seq)).where(
            events.c.received_at < time.time() - keep_seconds
        )
        if self._read(oldest)[0][0] is None:
            return  # nothing to prune: no write (a moved inbox refuses writes)

        def prune(session: Session) -> None:
            last = session.execute(oldest).fetchone()[0]
            if last is None:
                return
            session.execute(sa.delete(events).where(events.c.seq <= last))
            before = session.execute(
                sa.select(meta.c.value).where(meta.c.name == "pruned_through")
            ).fetchall()
            through = self._insert(meta).values(
                name="pruned_through",
                value=str(max([int(last), *(int(value) for (value,) in before)])),
            )
            session.execute(
                through.on_conflict_do_update(
                    index_elements=[meta.c.name], set_={"value": through.excluded.value}
                )
            )

        self._write(prune, appending=True)

    def set_aside(self, event: Event, reason: str, tries: int) -> None:
        """Keep an event a pipeline gave up on, for `tap-whoop set-aside`."""
        kept = self._insert(self.tables.set_aside).values(
            **dataclasses.asdict(event), reason=reason, tries=tries, at=time.time()
        )
        again = {name: kept.excluded[name] for name in ("reason", "tries", "at")}
        self._write(
            lambda session: session.execute(
                kept.on_conflict_do_update(index_elements=["seq"], set_=again)
            )
        )

    def set_aside_events(self) -> list[SetAside]:
        """What was set aside, oldest first."""
        kept = self.tables.set_aside
        listed = (*_APPENDED, "seq", "reason", "tries", "at")
        rows = self._read(sa.select(*(kept.c[name] for name in listed)).order_by(kept.c.seq))
        return [SetAside(Event(*row[:6]), row[6], row[7], row[8]) for row in rows]

    def release(self, seq: int, *, retry: bool) -> Event | None:
        """Take an event off the set-aside list: appended again (`retry`) or dropped."""
        events, kept = self.tables.events, self.tables.set_aside

        def release(session: Session) -> Event | None:
            rows = session.execute(
                sa.delete(kept)
                .where(kept.c.seq == seq)
                .returning(kept.c.user_id, kept.c.type, kept.c.record_id, kept.c.trace_id)
            ).fetchall()
            if not rows:
                return None
            user_id, type_, record_id, trace_id = rows[0]
            event = Event(user_id, type_, record_id, f"{trace_id}#retry-{uuid.uuid4().hex[:8]}")
            if not retry:
                return event
            again = dataclasses.replace(event, received_at=time.time())
            appended = session.execute(
                sa.insert(events)
                .values(**{name: getattr(again, name) for name in _APPENDED})
                .returning(events.c.seq)
            ).fetchall()
            return dataclasses.replace(event, seq=int(appended[0][0]))

        return self._write(release, appending=True)

    def last_received_at(self) -> float | None:
        """When the newest event arrived (epoch seconds), if any ever did."""
        newest = sa.select(sa.func.max(self.tables.events.c.received_at))
        return t.cast("float | None", self._read(newest)[0][0])

    def remember(self, user_id: int, stream: str, rows: Iterable[LedgerRow]) -> None:
        """Note records the tap emitted (a record seen again is updated)."""
        values = [  # not dataclasses.asdict: it deep-copies, and a 5-year sync has 7,000 rows
            {
                "user_id": user_id,
                "stream": stream,
                "record_id": row.record_id,
                "key": row.key,
                "sleep_id": row.sleep_id,
                "cycle_id": row.cycle_id,
            }
            for row in rows
        ]
        if not values:
            return
        noted = self._insert(self.tables.ledger)
        again = {name: noted.excluded[name] for name in ("key", "sleep_id", "cycle_id")}
        upsert = noted.on_conflict_do_update(
            index_elements=list(self.tables.ledger.primary_key), set_=again
        )
        self._write(lambda session: session.executemany(upsert, values))

    def forget(self, user_id: int, stream: str, record_ids: Iterable[str]) -> None:
        """Drop records the tap emitted as deleted."""
        ledger = self.tables.ledger
        gone = [
            {"user_id": user_id, "stream": stream, "record_id": record_id}
            for record_id in record_ids
        ]
        if not gone:
            return
        each = sa.delete(ledger).where(
            *(ledger.c[name] == sa.bindparam(name) for name in ("user_id", "stream", "record_id"))
        )
        self._write(lambda session: session.executemany(each, gone))

    def known(self, user_id: int, stream: str) -> dict[str, str | None]:
        """Record id -> replication key of everything the tap emitted in the member's stream."""
        ledger = self.tables.ledger
        rows = self._read(
            sa.select(ledger.c.record_id, ledger.c.key).where(
                ledger.c.user_id == user_id, ledger.c.stream == stream
            )
        )
        return {record_id: key for record_id, key in rows}

    def cycle_of_sleep(self, user_id: int, sleep_id: str) -> int | None:
        """The cycle of a sleep the tap emitted (or whose recovery it emitted)."""
        ledger = self.tables.ledger
        rows = self._read(
            sa.select(ledger.c.cycle_id)
            .where(
                ledger.c.user_id == user_id,
                ledger.c.cycle_id.is_not(None),
                sa.or_(
                    sa.and_(ledger.c.stream == "sleep", ledger.c.record_id == sleep_id),
                    sa.and_(ledger.c.stream == "recovery", ledger.c.sleep_id == sleep_id),
                ),
            )
            .limit(1)
        )
        return int(rows[0][0]) if rows else None

    def sleep_of_recovery(self, user_id: int, cycle_id: int) -> str | None:
        """The sleep the cycle's recovery was scored from, as the tap last emitted it."""
        ledger = self.tables.ledger
        rows = self._read(
            sa.select(ledger.c.sleep_id).where(
                ledger.c.user_id == user_id,
                ledger.c.stream == "recovery",
                ledger.c.record_id == str(cycle_id),
            )
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None


class SqliteInbox(SqlInbox):
    """The embedded backend: one SQLite file (WAL, synchronous commits) shared by processes."""

    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        super().__init__(
            inbox_tables("", sa.REAL()), sqlite.dialect(paramstyle="named"), sqlite.insert
        )
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._moved = compiled(sa.select(self.tables.moved_to.c.url).limit(1), self.dialect)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # Two processes opening a new file together: one is told "database is locked" at
            # once, without SQLite's busy wait (switching to WAL), so the opening is retried.
            opening = backoff.on_exception(
                backoff.constant,
                sqlite3.OperationalError,
                interval=0.05,
                max_time=self.busy_timeout,
                giveup=lambda exc: "locked" not in str(exc),
                jitter=None,
                logger=None,
            )(self._open)
            try:
                self._connection = opening()
            except sqlite3.Error as exc:
                raise self._error("open", exc) from None
        return self._connection

    def _error(self, what: str, exc: sqlite3.Error) -> TokenStoreError:
        """One line: what failed, and what to do; a damaged file says how to start over."""
        if isinstance(exc, sqlite3.DatabaseError) and any(
            sign in str(exc) for sign in ("not a database", "malformed")
        ):
            return TokenStoreError(
                f"the webhook inbox {self.path} is damaged ({exc}): move it aside and run again "
                "(a new one is made). Events not yet passed on are lost, and runs find the "
                "changes WHOOP made meanwhile by reading the members' collections; the ledger of "
                "emitted records is rebuilt as runs emit records, and only a full refresh "
                "(`meltano run --full-refresh …`) finds deletions outside the incremental window"
            )
        if what == "open":
            return TokenStoreError(
                f"cannot open the webhook inbox {self.path}: {exc}; check that its "
                "directory is writable and not full (set token_store_path elsewhere)"
            )
        return TokenStoreError(f"cannot {what} the webhook inbox {self.path}: {exc}")

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA cache_size=-256")  # KiB: appends need little
            if connection.execute("PRAGMA user_version").fetchone()[0] < _VERSION:
                with _transaction(connection):
                    self._create(Session(connection, self.dialect))
                    connection.execute(f"PRAGMA user_version={_VERSION}")
        except BaseException:
            connection.close()
            raise
        return connection

    def _create(self, session: Session) -> None:
        """Create the tables, or bring a file of an earlier version up to `_VERSION`."""
        tables = self.tables
        for table in (tables.events, tables.ledger, tables.moved_to, tables.meta, tables.set_aside):
            session.execute(CreateTable(table, if_not_exists=True))
            for index in table.indexes:
                session.execute(CreateIndex(index, if_not_exists=True))
        # version 3: an append-only log; several notices for one record are all kept
        session.execute(DropIndex(sa.Index("events_pending_record"), if_exists=True))
        identity = {"name": "identity", "value": f"sqlite:{uuid.uuid4()}"}
        session.execute(self._insert(tables.meta).values(identity).on_conflict_do_nothing())

    @contextlib.contextmanager
    def _session(self, what: str, *, refuse_moved: bool = True) -> Iterator[Session]:
        with self._lock:
            connection = self._connect()
            try:
                with _transaction(connection):
                    session = Session(connection, self.dialect)
                    if refuse_moved:
                        self._refuse_if_moved(session)
                    yield session
            except sqlite3.Error as exc:
                raise self._error(what, exc) from None

    def _write(self, operation: Callable[[Session], T], *, appending: bool = False) -> T:
        """`operation` in an immediate transaction: it holds the file's one writer lock."""
        with self._session("write") as session:
            return operation(session)

    def _refuse_if_moved(self, session: Session) -> None:
        row = session.execute(self._moved).fetchone()
        if row is not None:
            raise TokenStoreError(
                f"cannot write the webhook inbox {self.path}: it was moved to {row[0]} by "
                "`tap-whoop store copy`; restart `tap-whoop webhooks` with store_url set"
            )

    @contextlib.contextmanager
    def moving(self, where: str) -> Iterator[Contents]:
        """Everything stored, held still: no event is added until the block ends.

        When the block ends without an error the inbox is marked as moved to `where`, and
        refuses writes from then on (a receiver still running answers 503, so WHOOP retries).
        """
        events, ledger, moved_to = self.tables.events, self.tables.ledger, self.tables.moved_to
        with self._session("read", refuse_moved=False) as session:
            kept = session.execute(
                sa.select(*(events.c[name] for name in _STORED)).order_by(events.c.seq)
            ).fetchall()
            rows: dict[tuple[int, str], list[LedgerRow]] = {}
            for user_id, stream, *row in session.execute(
                sa.select(ledger.c.user_id, ledger.c.stream, *_ledger_row(ledger))
            ):
                rows.setdefault((user_id, stream), []).append(LedgerRow(*row))
            yield Contents([StoredEvent(*row) for row in kept], rows)
            session.execute(sa.delete(moved_to))
            session.execute(sa.insert(moved_to).values(url=where))

    def _read(self, statement: sa.ClauseElement) -> list[tuple[t.Any, ...]]:
        with self._lock:
            try:
                return Session(self._connect(), self.dialect).execute(statement).fetchall()
            except sqlite3.Error as exc:
                raise self._error("read", exc) from None

    def close(self) -> None:
        """Close the connection (a later call opens it again)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def exists(self) -> bool:
        """Whether the file is there."""
        return self._connection is not None or self.path.exists()


_VERSION = 3
_STORED = tuple(field.name for field in dataclasses.fields(StoredEvent))


def _ledger_row(ledger: sa.Table) -> list[sa.Column[t.Any]]:
    return [ledger.c[field.name] for field in dataclasses.fields(LedgerRow)]


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
