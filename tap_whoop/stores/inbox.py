"""The webhook inbox and the record ledger: what WHOOP told us, and what the tap has emitted.

The receiver (`tap-whoop webhooks`) appends every delivery to a log (a trace id once); events
are pruned by age only. Each pipeline keeps its own position in the log in its Singer state
(`webhooks.drain`), so an event counts as passed on only once a target has committed the state
after it, and two pipelines each get every event. The ledger is what the tap has emitted per
member and stream: a full refresh compares it with what WHOOP still has, and a deleted sleep's
recovery finds its cycle in it.

`Inbox` is the interface; `SqliteInbox` is the embedded backend, a file beside the token store;
`tap_whoop.stores.postgres.PostgresInbox` keeps the same in PostgreSQL (the `store_url` setting).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import threading
import time
import typing as t
import uuid
from dataclasses import dataclass
from pathlib import Path

import backoff

from tap_whoop.errors import TokenStoreError

if t.TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator

EVENT_KINDS = ("sleep", "workout", "recovery")
EVENT_TYPES = frozenset(
    f"{kind}.{action}" for kind in EVENT_KINDS for action in ("updated", "deleted")
)


@dataclass(frozen=True)
class Event:
    """A webhook WHOOP sent: `record_id` is the record's id (for recovery events, its sleep's)."""

    user_id: int
    type: str
    record_id: str
    trace_id: str
    received_at: float = 0.0
    seq: int = 0

    @property
    def kind(self) -> str:
        """`sleep`, `workout` or `recovery`: the stream the event is about."""
        return self.type.partition(".")[0]

    @property
    def deleted(self) -> bool:
        """Whether WHOOP says the record is gone."""
        return self.type.endswith(".deleted")


@dataclass(frozen=True)
class SetAside:
    """An event a pipeline gave up on after its tries, waiting for an operator."""

    event: Event
    reason: str
    tries: int
    at: float


@dataclass(frozen=True)
class LedgerRow:
    """A record the tap emitted: its key in its stream, its replication key, its links."""

    record_id: str
    key: str | None = None
    sleep_id: str | None = None
    cycle_id: int | None = None


class Inbox(t.Protocol):
    """Where webhook events wait for the tap, and the ledger of emitted records."""

    def exists(self) -> bool:
        """Whether anything was ever stored (reading a store that is not there creates it)."""

    def identity(self) -> str:
        """This inbox's id: a position in another inbox's log means nothing here."""

    def add(self, event: Event) -> bool:
        """Append `event` durably; False only for a delivery whose trace id is already in."""

    def after(self, position: int) -> list[Event]:
        """Every event after `position` in the log, oldest first."""

    def by_seqs(self, seqs: Collection[int]) -> list[Event]:
        """The events still in the log among `seqs`, oldest first."""

    def horizon(self) -> int:
        """The last position pruned: a state behind it has missed events."""

    def prune(self, keep_seconds: float) -> None:
        """Drop the events received more than `keep_seconds` ago."""

    def set_aside(self, event: Event, reason: str, tries: int) -> None:
        """Keep an event a pipeline gave up on, for `tap-whoop set-aside`."""

    def set_aside_events(self) -> list[SetAside]:
        """What was set aside, oldest first."""

    def release(self, seq: int, *, retry: bool) -> Event | None:
        """Take an event off the set-aside list: appended again (`retry`) or dropped."""

    def last_received_at(self) -> float | None:
        """When the newest event arrived (epoch seconds), if any ever did."""

    def remember(self, user_id: int, stream: str, rows: Iterable[LedgerRow]) -> None:
        """Note records the tap emitted (a record seen again is updated)."""

    def forget(self, user_id: int, stream: str, record_ids: Iterable[str]) -> None:
        """Drop records the tap emitted as deleted."""

    def known(self, user_id: int, stream: str) -> dict[str, str | None]:
        """Record id -> replication key of everything the tap emitted in the member's stream."""

    def cycle_of_sleep(self, user_id: int, sleep_id: str) -> int | None:
        """The cycle of a sleep the tap emitted (or whose recovery it emitted)."""

    def sleep_of_recovery(self, user_id: int, cycle_id: int) -> str | None:
        """The sleep the cycle's recovery was scored from, as the tap last emitted it."""


_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL,
        type TEXT NOT NULL,
        record_id TEXT NOT NULL,
        trace_id TEXT NOT NULL UNIQUE,
        received_at REAL NOT NULL,
        done_at REAL
    )
    """,
    # version 3: an append-only log; several notices for one record are all kept
    "DROP INDEX IF EXISTS events_pending_record",
    "CREATE INDEX IF NOT EXISTS events_received ON events (received_at)",
    "CREATE INDEX IF NOT EXISTS events_done ON events (done_at)",
    """
    CREATE TABLE IF NOT EXISTS ledger (
        user_id INTEGER NOT NULL,
        stream TEXT NOT NULL,
        record_id TEXT NOT NULL,
        key TEXT,
        sleep_id TEXT,
        cycle_id INTEGER,
        PRIMARY KEY (user_id, stream, record_id)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS ledger_sleep ON ledger (user_id, sleep_id)",
    # version 2: where `tap-whoop store copy` moved the inbox; a write here is refused from then
    "CREATE TABLE IF NOT EXISTS moved_to (url TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """
    CREATE TABLE IF NOT EXISTS set_aside (
        seq INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL,
        type TEXT NOT NULL,
        record_id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        received_at REAL NOT NULL,
        reason TEXT NOT NULL,
        tries INTEGER NOT NULL,
        at REAL NOT NULL
    )
    """,
)
_VERSION = 3


@dataclass(frozen=True)
class StoredEvent:
    """An event row as kept, drained or not, for copying the inbox elsewhere."""

    user_id: int
    type: str
    record_id: str
    trace_id: str
    received_at: float
    done_at: float | None


@dataclass(frozen=True)
class Contents:
    """Everything an inbox holds, oldest event first."""

    events: list[StoredEvent]
    ledger: dict[tuple[int, str], list[LedgerRow]]


class SqliteInbox:
    """The embedded backend: one SQLite file (WAL, synchronous commits) shared by processes."""

    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
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
                raise TokenStoreError(
                    f"cannot open the webhook inbox {self.path}: {exc}; check that its "
                    "directory is writable and not full (set token_store_path elsewhere)"
                ) from None
        return self._connection

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
                    for statement in _SCHEMA:
                        connection.execute(statement)
                    connection.execute(
                        "INSERT OR IGNORE INTO meta (name, value) VALUES ('identity', ?)",
                        (f"sqlite:{uuid.uuid4()}",),
                    )
                    connection.execute(f"PRAGMA user_version={_VERSION}")
        except BaseException:
            connection.close()
            raise
        return connection

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            connection = self._connect()
            try:
                with _transaction(connection):
                    self._refuse_if_moved(connection)
                    yield connection
            except sqlite3.Error as exc:
                raise TokenStoreError(
                    f"cannot write the webhook inbox {self.path}: {exc}"
                ) from None

    def _refuse_if_moved(self, connection: sqlite3.Connection) -> None:
        row = connection.execute("SELECT url FROM moved_to LIMIT 1").fetchone()
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
        with self._lock:
            connection = self._connect()
            try:
                with _transaction(connection):
                    events = [
                        StoredEvent(*row)
                        for row in connection.execute(
                            "SELECT user_id, type, record_id, trace_id, received_at, done_at "
                            "FROM events ORDER BY seq"
                        )
                    ]
                    ledger: dict[tuple[int, str], list[LedgerRow]] = {}
                    for user_id, stream, *row in connection.execute(
                        "SELECT user_id, stream, record_id, key, sleep_id, cycle_id FROM ledger"
                    ):
                        ledger.setdefault((user_id, stream), []).append(LedgerRow(*row))
                    yield Contents(events, ledger)
                    connection.execute("DELETE FROM moved_to")
                    connection.execute("INSERT INTO moved_to (url) VALUES (?)", (where,))
            except sqlite3.Error as exc:
                raise TokenStoreError(f"cannot read the webhook inbox {self.path}: {exc}") from None

    def _read(self, query: str, params: t.Sequence[t.Any] = ()) -> list[tuple[t.Any, ...]]:
        with self._lock:
            try:
                return self._connect().execute(query, params).fetchall()
            except sqlite3.Error as exc:
                raise TokenStoreError(f"cannot read the webhook inbox {self.path}: {exc}") from None

    def close(self) -> None:
        """Close the connection (a later call opens it again)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def exists(self) -> bool:
        """Whether the file is there."""
        return self._connection is not None or self.path.exists()

    def identity(self) -> str:
        """This inbox's id, made when its file was created."""
        return str(self._read("SELECT value FROM meta WHERE name = 'identity'")[0][0])

    def add(self, event: Event) -> bool:
        """Append `event` durably; False only for a delivery whose trace id is already in."""
        with self._writing() as connection:
            cursor = connection.execute(
                "INSERT OR IGNORE INTO events (user_id, type, record_id, trace_id, received_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    event.user_id,
                    event.type,
                    event.record_id,
                    event.trace_id,
                    event.received_at or time.time(),
                ),
            )
            return cursor.rowcount == 1

    def after(self, position: int) -> list[Event]:
        """Every event after `position` in the log, oldest first."""
        rows = self._read(
            "SELECT user_id, type, record_id, trace_id, received_at, seq FROM events "
            "WHERE seq > ? ORDER BY seq",
            (position,),
        )
        return [Event(*row) for row in rows]

    def by_seqs(self, seqs: Collection[int]) -> list[Event]:
        """The events still in the log among `seqs`, oldest first."""
        wanted = sorted(set(seqs))
        if not wanted:
            return []
        rows = self._read(
            "SELECT user_id, type, record_id, trace_id, received_at, seq FROM events "
            "WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq",
            (json.dumps(wanted),),
        )
        return [Event(*row) for row in rows]

    def horizon(self) -> int:
        """The last position pruned: a state behind it has missed events."""
        rows = self._read("SELECT value FROM meta WHERE name = 'pruned_through'")
        return int(rows[0][0]) if rows else 0

    def prune(self, keep_seconds: float) -> None:
        """Drop the events received more than `keep_seconds` ago."""
        cutoff = time.time() - keep_seconds
        if self._read("SELECT max(seq) FROM events WHERE received_at < ?", (cutoff,))[0][0] is None:
            return  # nothing to prune: no write (a moved inbox refuses writes)
        with self._writing() as connection:
            last = connection.execute(
                "SELECT max(seq) FROM events WHERE received_at < ?", (cutoff,)
            ).fetchone()[0]
            if last is None:
                return
            connection.execute("DELETE FROM events WHERE seq <= ?", (last,))
            connection.execute(
                "INSERT INTO meta (name, value) VALUES ('pruned_through', ?) ON CONFLICT (name) "
                "DO UPDATE SET value = max(CAST(value AS INTEGER), excluded.value)",
                (last,),
            )

    def set_aside(self, event: Event, reason: str, tries: int) -> None:
        """Keep an event a pipeline gave up on, for `tap-whoop set-aside`."""
        with self._writing() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO set_aside (seq, user_id, type, record_id, trace_id, "
                "received_at, reason, tries, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.seq,
                    event.user_id,
                    event.type,
                    event.record_id,
                    event.trace_id,
                    event.received_at,
                    reason,
                    tries,
                    time.time(),
                ),
            )

    def set_aside_events(self) -> list[SetAside]:
        """What was set aside, oldest first."""
        rows = self._read(
            "SELECT user_id, type, record_id, trace_id, received_at, seq, reason, tries, at "
            "FROM set_aside ORDER BY seq"
        )
        return [SetAside(Event(*row[:6]), row[6], row[7], row[8]) for row in rows]

    def release(self, seq: int, *, retry: bool) -> Event | None:
        """Take an event off the set-aside list: appended again (`retry`) or dropped."""
        with self._writing() as connection:
            row = connection.execute(
                "SELECT user_id, type, record_id, trace_id FROM set_aside WHERE seq = ?", (seq,)
            ).fetchone()
            if row is None:
                return None
            connection.execute("DELETE FROM set_aside WHERE seq = ?", (seq,))
            event = Event(row[0], row[1], row[2], f"{row[3]}#retry-{uuid.uuid4().hex[:8]}")
            if retry:
                cursor = connection.execute(
                    "INSERT INTO events (user_id, type, record_id, trace_id, received_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (event.user_id, event.type, event.record_id, event.trace_id, time.time()),
                )
                return dataclasses.replace(event, seq=int(cursor.lastrowid or 0))
            return event

    def last_received_at(self) -> float | None:
        """When the newest event arrived (epoch seconds), if any ever did."""
        return t.cast(float | None, self._read("SELECT max(received_at) FROM events")[0][0])

    def remember(self, user_id: int, stream: str, rows: Iterable[LedgerRow]) -> None:
        """Note records the tap emitted (a record seen again is updated)."""
        values = [
            (user_id, stream, row.record_id, row.key, row.sleep_id, row.cycle_id) for row in rows
        ]
        if not values:
            return
        with self._writing() as connection:
            connection.executemany(
                "INSERT OR REPLACE INTO ledger "
                "(user_id, stream, record_id, key, sleep_id, cycle_id) VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )

    def forget(self, user_id: int, stream: str, record_ids: Iterable[str]) -> None:
        """Drop records the tap emitted as deleted."""
        with self._writing() as connection:
            connection.executemany(
                "DELETE FROM ledger WHERE user_id = ? AND stream = ? AND record_id = ?",
                [(user_id, stream, record_id) for record_id in record_ids],
            )

    def known(self, user_id: int, stream: str) -> dict[str, str | None]:
        """Record id -> replication key of everything the tap emitted in the member's stream."""
        rows = self._read(
            "SELECT record_id, key FROM ledger WHERE user_id = ? AND stream = ?",
            (user_id, stream),
        )
        return dict(rows)

    def cycle_of_sleep(self, user_id: int, sleep_id: str) -> int | None:
        """The cycle of a sleep the tap emitted (or whose recovery it emitted)."""
        rows = self._read(
            "SELECT cycle_id FROM ledger WHERE user_id = ? AND cycle_id IS NOT NULL AND "
            "((stream = 'sleep' AND record_id = ?) OR (stream = 'recovery' AND sleep_id = ?)) "
            "LIMIT 1",
            (user_id, sleep_id, sleep_id),
        )
        return int(rows[0][0]) if rows else None

    def sleep_of_recovery(self, user_id: int, cycle_id: int) -> str | None:
        """The sleep the cycle's recovery was scored from, as the tap last emitted it."""
        rows = self._read(
            "SELECT sleep_id FROM ledger WHERE user_id = ? AND stream = 'recovery' "
            "AND record_id = ?",
            (user_id, str(cycle_id)),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
