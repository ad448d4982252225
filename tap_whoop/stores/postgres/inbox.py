"""The webhook log and the ledger in PostgreSQL: `SqlInbox` run through the store's `Database`.

The tables are the migrations' (`tap_whoop_events`, …, times as timestamptz); `Database` keeps
the connection (reconnects, timeouts, error wording). Appends take a transaction-scoped
advisory lock, so positions commit in order: a reader never passes one that is still to commit.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator

from tap_whoop.stores.sql_inbox import Session as InboxSession
from tap_whoop.stores.sql_inbox import SqlInbox, compiled, inbox_tables

if t.TYPE_CHECKING:
    from collections.abc import Callable

from tap_whoop.stores.postgres.database import Connection, Database, T


class EpochSeconds(TypeDecorator[float]):
    """A timestamptz read and written as epoch seconds, as the inbox's `Event`s carry time."""

    impl = postgresql.TIMESTAMP(timezone=True)
    cache_ok = True

    def bind_expression(self, bindvalue: t.Any) -> t.Any:
        """The seconds given, as a timestamptz."""
        return sa.func.to_timestamp(sa.type_coerce(bindvalue, sa.Float))

    def column_expression(self, column: t.Any) -> t.Any:
        """The timestamptz kept, as seconds."""
        return sa.cast(sa.extract("epoch", column), postgresql.DOUBLE_PRECISION)


#: The inbox's tables as the migrations made them (`database.MIGRATIONS`).
TABLES = inbox_tables("tap_whoop_", EpochSeconds())
DIALECT = postgresql.psycopg.dialect()


class PostgresInbox(SqlInbox):
    """The webhook inbox and record ledger in PostgreSQL, with `SqliteInbox`'s semantics.

    An event is committed durably (synchronous commit) before `add` returns; a trace id is
    stored once. Given a `Database` with a `timeout`, a write that cannot happen at once fails
    fast (the receiver's 503).
    """

    def __init__(self, database: Database) -> None:
        super().__init__(TABLES, DIALECT, postgresql.insert)
        self.database = database
        self.path = database.where
        log = sa.func.current_schema() + f".{self.tables.events.name}"
        self._log_lock = compiled(
            sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(log, 0))), self.dialect
        )

    def _write(self, operation: Callable[[InboxSession], T], *, appending: bool = False) -> T:
        def in_transaction(connection: Connection) -> T:
            with connection.transaction():
                session = InboxSession(connection, self.dialect)
                if appending:
                    session.execute(self._log_lock)
                return operation(session)

        return self.database.run("write the webhook inbox", in_transaction)

    def _read(self, statement: sa.ClauseElement) -> list[tuple[t.Any, ...]]:
        return self.database.run(
            "read the webhook inbox",
            lambda connection: InboxSession(connection, self.dialect).execute(statement).fetchall(),
        )

    def close(self) -> None:
        """Close the connection (a later call opens it again)."""
        self.database.close()

    def exists(self) -> bool:
        """Whether the database can be used: its tables are made on first use."""
        self._read(sa.select(1))
        return True
