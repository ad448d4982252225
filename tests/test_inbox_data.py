"""Inboxes written before the inbox moved to SQLAlchemy Core are read and written as they were.

A SQLite file made by the old DDL (`user_version` 3, epoch seconds as REAL), one made before
version 3 (the pending-record index still there) and a PostgreSQL schema the migrations made
(timestamptz, `tap_whoop_` names), each filled with rows as the old code wrote them.
"""

from __future__ import annotations

import sqlite3
import typing as t

import pytest

from tap_whoop.stores.inbox import Event, LedgerRow
from tap_whoop.stores.postgres import Database, PostgresInbox
from tap_whoop.stores.sql_inbox import SqliteInbox
from tests.test_store_support import postgres_server, query, store_url

if t.TYPE_CHECKING:
    from pathlib import Path

__all__ = ["postgres_server", "store_url"]  # fixtures

#: The SQLite inbox's DDL before SQLAlchemy, as the old `_SCHEMA` wrote it.
OLD_SQLITE_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    record_id TEXT NOT NULL,
    trace_id TEXT NOT NULL UNIQUE,
    received_at REAL NOT NULL,
    done_at REAL
);
CREATE INDEX events_received ON events (received_at);
CREATE INDEX events_done ON events (done_at);
CREATE TABLE ledger (
    user_id INTEGER NOT NULL,
    stream TEXT NOT NULL,
    record_id TEXT NOT NULL,
    key TEXT,
    sleep_id TEXT,
    cycle_id INTEGER,
    PRIMARY KEY (user_id, stream, record_id)
) WITHOUT ROWID;
CREATE INDEX ledger_sleep ON ledger (user_id, sleep_id);
CREATE TABLE moved_to (url TEXT NOT NULL);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE set_aside (
    seq INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    record_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    reason TEXT NOT NULL,
    tries INTEGER NOT NULL,
    at REAL NOT NULL
);
INSERT INTO meta (name, value) VALUES ('identity', 'sqlite:old-identity');
INSERT INTO meta (name, value) VALUES ('pruned_through', '4');
INSERT INTO events (seq, user_id, type, record_id, trace_id, received_at)
    VALUES (5, 7, 'sleep.updated', 's1', 't1', 1000.5);
INSERT INTO events (seq, user_id, type, record_id, trace_id, received_at, done_at)
    VALUES (6, 7, 'sleep.deleted', 's1', 't2', 1001.25, 1002.0);
INSERT INTO ledger VALUES (7, 'sleep', 's1', '2026-11-01T00:00:00Z', NULL, 100);
INSERT INTO ledger VALUES (7, 'recovery', '100', '2026-11-01T01:00:00Z', 's1', 100);
INSERT INTO set_aside VALUES (3, 7, 'workout.updated', 'w1', 't0', 999.0, 'WHOOP answered 400', 5,
    1500.0);
"""

OLD_EVENTS = [
    Event(7, "sleep.updated", "s1", "t1", 1000.5, 5),
    Event(7, "sleep.deleted", "s1", "t2", 1001.25, 6),
]


def reads_and_writes_as_before(inbox: SqliteInbox | PostgresInbox, identity: str) -> None:
    assert inbox.identity() == identity
    assert inbox.after(0) == OLD_EVENTS
    assert inbox.by_seqs([6, 3]) == OLD_EVENTS[1:]
    assert inbox.horizon() == 4
    assert inbox.last_received_at() == 1001.25
    assert inbox.known(7, "sleep") == {"s1": "2026-11-01T00:00:00Z"}
    assert inbox.cycle_of_sleep(7, "s1") == 100
    assert inbox.sleep_of_recovery(7, 100) == "s1"
    [kept] = inbox.set_aside_events()
    assert (kept.event, kept.reason, kept.tries, kept.at) == (
        Event(7, "workout.updated", "w1", "t0", 999.0, 3),
        "WHOOP answered 400",
        5,
        1500.0,
    )

    assert not inbox.add(Event(7, "sleep.updated", "s1", "t1"))
    assert inbox.add(Event(7, "workout.updated", "w2", "t3", received_at=1003.0))
    retried = inbox.release(3, retry=True)
    assert retried is not None
    appended = inbox.after(6)
    assert [e.trace_id for e in appended] == ["t3", retried.trace_id]
    assert appended[-1].seq == retried.seq
    inbox.remember(7, "sleep", [LedgerRow("s1", "2026-11-02T00:00:00Z", None, 100)])
    assert inbox.known(7, "sleep") == {"s1": "2026-11-02T00:00:00Z"}
    inbox.prune(0)
    assert inbox.after(0) == []
    assert inbox.horizon() == retried.seq


def old_sqlite_inbox(path: Path, *, version: int) -> None:
    with sqlite3.connect(path) as connection:
        connection.executescript(OLD_SQLITE_SCHEMA)
        if version < 3:
            connection.execute(
                "CREATE UNIQUE INDEX events_pending_record "
                "ON events (user_id, type, record_id) WHERE done_at IS NULL"
            )
        connection.execute(f"PRAGMA user_version={version}")
    connection.close()


def indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        names = {name for (name,) in rows if not name.startswith("sqlite_autoindex")}
    connection.close()
    return names


def test_a_version_3_sqlite_inbox_the_old_code_made_is_read_and_written(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite"
    old_sqlite_inbox(path, version=3)
    inbox = SqliteInbox(path)
    reads_and_writes_as_before(inbox, "sqlite:old-identity")
    inbox.close()


def test_a_sqlite_inbox_from_before_version_3_loses_the_pending_index_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inbox.sqlite"
    old_sqlite_inbox(path, version=2)
    inbox = SqliteInbox(path)
    assert inbox.after(0) == OLD_EVENTS
    assert "events_pending_record" not in indexes(path)
    assert inbox.add(Event(7, "sleep.updated", "s1", "t3", received_at=1003.0))
    inbox.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (3,)
    connection.close()


def test_a_new_sqlite_inbox_has_the_old_codes_tables_and_indexes(tmp_path: Path) -> None:
    old, new = tmp_path / "old.sqlite", tmp_path / "new.sqlite"
    old_sqlite_inbox(old, version=3)
    made = SqliteInbox(new)
    made.after(0)
    made.close()

    def shape(path: Path) -> dict[str, list[tuple[t.Any, ...]]]:
        with sqlite3.connect(path) as connection:
            tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master")]
            shapes = {  # an INTEGER PRIMARY KEY is never null, said so or not
                table: [
                    (name, kind, bool(notnull or pk), default, pk)
                    for _, name, kind, notnull, default, pk, _ in connection.execute(
                        f"PRAGMA table_xinfo({table})"
                    )
                ]
                for table in tables
                if not table.startswith("sqlite_")
            }
        connection.close()
        return shapes

    assert shape(new) == shape(old)
    assert indexes(new) == indexes(old)


@pytest.mark.usefixtures("postgres_server")
def test_a_postgresql_inbox_the_old_code_filled_is_read_and_written(store_url: str) -> None:
    database = Database(store_url)
    database.run("migrate", lambda connection: None)
    for statement, params in [
        ("UPDATE tap_whoop_meta SET value = 'postgresql:old-identity' WHERE name = 'identity'", ()),
        ("INSERT INTO tap_whoop_meta (name, value) VALUES ('pruned_through', '4')", ()),
        ("SELECT setval(pg_get_serial_sequence('tap_whoop_events', 'seq'), 4)", ()),
        (
            "INSERT INTO tap_whoop_events (user_id, type, record_id, trace_id, received_at) "
            "VALUES (7, 'sleep.updated', 's1', 't1', to_timestamp(%s))",
            (1000.5,),
        ),
        (
            "INSERT INTO tap_whoop_events (user_id, type, record_id, trace_id, received_at, "
            "done_at) VALUES (7, 'sleep.deleted', 's1', 't2', to_timestamp(%s), to_timestamp(%s))",
            (1001.25, 1002.0),
        ),
        (
            "INSERT INTO tap_whoop_ledger VALUES "
            "(7, 'sleep', 's1', '2026-11-01T00:00:00Z', NULL, 100), "
            "(7, 'recovery', '100', '2026-11-01T01:00:00Z', 's1', 100)",
            (),
        ),
        (
            "INSERT INTO tap_whoop_set_aside VALUES (3, 7, 'workout.updated', 'w1', 't0', "
            "to_timestamp(999), 'WHOOP answered 400', 5, to_timestamp(1500))",
            (),
        ),
    ]:
        query(store_url, statement, params)
    inbox = PostgresInbox(database)
    reads_and_writes_as_before(inbox, "postgresql:old-identity")
    inbox.close()


@pytest.mark.usefixtures("postgres_server")
def test_the_postgresql_tables_are_the_ones_the_migrations_made(store_url: str) -> None:
    """The inbox's tables are described twice: by the migrations, and for the queries."""
    inbox = PostgresInbox(Database(store_url))
    inbox.exists()
    inbox.close()
    tables = inbox.tables
    for table in (tables.events, tables.ledger, tables.meta, tables.set_aside):
        columns = query(
            store_url,
            "SELECT column_name, is_nullable = 'YES' FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table.name,),
        )
        assert columns == [(column.name, column.nullable) for column in table.columns]
        kept = query(
            store_url,
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = %s",
            (table.name,),
        )
        assert {index.name for index in table.indexes} <= {name for (name,) in kept}
