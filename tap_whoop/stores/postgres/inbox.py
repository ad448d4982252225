"""The webhook log and the ledger in PostgreSQL, with `SqliteInbox`'s semantics.

Appends take a transaction-scoped advisory lock, so positions commit in order: a reader never
passes one that is still to commit.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing as t
import uuid

from tap_whoop.stores.inbox import Event, LedgerRow, SetAside

if t.TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable


from tap_whoop.stores.postgres.database import Connection, Database, T

logger = logging.getLogger("tap-whoop.store")

_EVENTS = (
    "SELECT user_id, type, record_id, trace_id, extract(epoch FROM received_at)::float8, seq "
    "FROM tap_whoop_events "
)
_EVENTS_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '.tap_whoop_events', 0))"
)


class PostgresInbox:
    """The webhook inbox and record ledger in PostgreSQL, with `SqliteInbox`'s semantics.

    An event is committed durably (synchronous commit) before `add` returns; a trace id is
    stored once, and a record's event once while it is pending. Given a `Database` with a
    `timeout`, a write that cannot happen at once fails fast (the receiver's 503).
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self.path = database.where

    def _write(self, operation: Callable[[Connection], T]) -> T:
        def in_transaction(connection: Connection) -> T:
            with connection.transaction():
                return operation(connection)

        return self.database.run("write the webhook inbox", in_transaction)

    def _read(self, query: str, params: t.Sequence[t.Any] = ()) -> list[tuple[t.Any, ...]]:
        return self.database.run(
            "read the webhook inbox",
            lambda connection: connection.execute(
                t.cast("t.LiteralString", query), params
            ).fetchall(),
        )

    def close(self) -> None:
        """Close the connection (a later call opens it again)."""
        self.database.close()

    def exists(self) -> bool:
        """Whether the database can be used: its tables are made on first use."""
        self._read("SELECT 1")
        return True

    def identity(self) -> str:
        """This database's inbox id, made by the migration that created the log."""
        return str(self._read("SELECT value FROM tap_whoop_meta WHERE name = 'identity'")[0][0])

    def add(self, event: Event) -> bool:
        """Append `event` durably; False only for a delivery whose trace id is already in."""

        def append(connection: Connection) -> bool:
            connection.execute(_EVENTS_LOCK)
            return (
                connection.execute(
                    "INSERT INTO tap_whoop_events "
                    "(user_id, type, record_id, trace_id, received_at) "
                    "VALUES (%s, %s, %s, %s, to_timestamp(%s)) ON CONFLICT DO NOTHING",
                    (
                        event.user_id,
                        event.type,
                        event.record_id,
                        event.trace_id,
                        event.received_at or time.time(),
                    ),
                ).rowcount
                == 1
            )

        return self._write(append)

    def after(self, position: int) -> list[Event]:
        """Every event after `position` in the log, oldest first."""
        rows = self._read(_EVENTS + "WHERE seq > %s ORDER BY seq", (position,))
        return [Event(*row) for row in rows]

    def by_seqs(self, seqs: Collection[int]) -> list[Event]:
        """The events still in the log among `seqs`, oldest first."""
        rows = self._read(_EVENTS + "WHERE seq = ANY(%s) ORDER BY seq", (sorted(set(seqs)),))
        return [Event(*row) for row in rows]

    def horizon(self) -> int:
        """The last position pruned: a state behind it has missed events."""
        rows = self._read("SELECT value FROM tap_whoop_meta WHERE name = 'pruned_through'")
        return int(rows[0][0]) if rows else 0

    def prune(self, keep_seconds: float) -> None:
        """Drop the events received more than `keep_seconds` ago."""

        def prune(connection: Connection) -> None:
            connection.execute(_EVENTS_LOCK)
            row = connection.execute(  # the clock that wrote received_at: the receiver's
                "SELECT max(seq) FROM tap_whoop_events WHERE received_at < to_timestamp(%s)",
                (time.time() - keep_seconds,),
            ).fetchone()
            if row is None or row[0] is None:
                return
            connection.execute("DELETE FROM tap_whoop_events WHERE seq <= %s", (row[0],))
            connection.execute(
                "INSERT INTO tap_whoop_meta (name, value) VALUES ('pruned_through', %s) "
                "ON CONFLICT (name) DO UPDATE SET value = "
                "greatest(tap_whoop_meta.value::bigint, EXCLUDED.value::bigint)::text",
                (str(row[0]),),
            )

        self._write(prune)

    def set_aside(self, event: Event, reason: str, tries: int) -> None:
        """Keep an event a pipeline gave up on, for `tap-whoop set-aside`."""
        self._write(
            lambda connection: connection.execute(
                "INSERT INTO tap_whoop_set_aside (seq, user_id, type, record_id, trace_id, "
                "received_at, reason, tries) VALUES (%s, %s, %s, %s, %s, to_timestamp(%s), %s, %s) "
                "ON CONFLICT (seq) DO UPDATE SET reason = EXCLUDED.reason, tries = EXCLUDED.tries",
                (
                    event.seq,
                    event.user_id,
                    event.type,
                    event.record_id,
                    event.trace_id,
                    event.received_at,
                    reason,
                    tries,
                ),
            )
        )

    def set_aside_events(self) -> list[SetAside]:
        """What was set aside, oldest first."""
        rows = self._read(
            "SELECT user_id, type, record_id, trace_id, "
            "extract(epoch FROM received_at)::float8, seq, reason, tries, "
            "extract(epoch FROM at)::float8 FROM tap_whoop_set_aside ORDER BY seq"
        )
        return [SetAside(Event(*row[:6]), row[6], row[7], row[8]) for row in rows]

    def release(self, seq: int, *, retry: bool) -> Event | None:
        """Take an event off the set-aside list: appended again (`retry`) or dropped."""

        def release(connection: Connection) -> Event | None:
            connection.execute(_EVENTS_LOCK)
            row = connection.execute(
                "DELETE FROM tap_whoop_set_aside WHERE seq = %s "
                "RETURNING user_id, type, record_id, trace_id",
                (seq,),
            ).fetchone()
            if row is None:
                return None
            event = Event(row[0], row[1], row[2], f"{row[3]}#retry-{uuid.uuid4().hex[:8]}")
            if not retry:
                return event
            appended = connection.execute(
                "INSERT INTO tap_whoop_events (user_id, type, record_id, trace_id, received_at) "
                "VALUES (%s, %s, %s, %s, clock_timestamp()) RETURNING seq",
                (event.user_id, event.type, event.record_id, event.trace_id),
            ).fetchone()
            return dataclasses.replace(event, seq=int(t.cast("tuple[int]", appended)[0]))

        return self._write(release)

    def last_received_at(self) -> float | None:
        """When the newest event arrived (epoch seconds), if any ever did."""
        rows = self._read(
            "SELECT extract(epoch FROM max(received_at))::float8 FROM tap_whoop_events"
        )
        return t.cast("float | None", rows[0][0])

    def remember(self, user_id: int, stream: str, rows: Iterable[LedgerRow]) -> None:
        """Note records the tap emitted (a record seen again is updated)."""
        values = [
            (user_id, stream, row.record_id, row.key, row.sleep_id, row.cycle_id) for row in rows
        ]
        if not values:
            return

        def upsert(connection: Connection) -> None:
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO tap_whoop_ledger "
                    "(user_id, stream, record_id, key, sleep_id, cycle_id) "
                    "VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (user_id, stream, record_id) DO UPDATE SET key = EXCLUDED.key, "
                    "sleep_id = EXCLUDED.sleep_id, cycle_id = EXCLUDED.cycle_id",
                    values,
                )

        self._write(upsert)

    def forget(self, user_id: int, stream: str, record_ids: Iterable[str]) -> None:
        """Drop records the tap emitted as deleted."""
        gone = list(record_ids)
        if not gone:
            return
        self._write(
            lambda connection: connection.execute(
                "DELETE FROM tap_whoop_ledger "
                "WHERE user_id = %s AND stream = %s AND record_id = ANY(%s)",
                (user_id, stream, gone),
            )
        )

    def known(self, user_id: int, stream: str) -> dict[str, str | None]:
        """Record id -> replication key of everything the tap emitted in the member's stream."""
        rows = self._read(
            "SELECT record_id, key FROM tap_whoop_ledger WHERE user_id = %s AND stream = %s",
            (user_id, stream),
        )
        return {record_id: key for record_id, key in rows}

    def cycle_of_sleep(self, user_id: int, sleep_id: str) -> int | None:
        """The cycle of a sleep the tap emitted (or whose recovery it emitted)."""
        rows = self._read(
            "SELECT cycle_id FROM tap_whoop_ledger WHERE user_id = %s AND cycle_id IS NOT NULL "
            "AND ((stream = 'sleep' AND record_id = %s) "
            "OR (stream = 'recovery' AND sleep_id = %s)) LIMIT 1",
            (user_id, sleep_id, sleep_id),
        )
        return int(rows[0][0]) if rows else None

    def sleep_of_recovery(self, user_id: int, cycle_id: int) -> str | None:
        """The sleep the cycle's recovery was scored from, as the tap last emitted it."""
        rows = self._read(
            "SELECT sleep_id FROM tap_whoop_ledger WHERE user_id = %s AND stream = 'recovery' "
            "AND record_id = %s",
            (user_id, str(cycle_id)),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None
