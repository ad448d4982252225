"""`tap-whoop store copy`: tokens, inbox and ledger from the files to PostgreSQL; no token spent."""

from __future__ import annotations

import contextlib
import logging
import typing as t
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tap_whoop.errors import TapWhoopError
from tap_whoop.stores.sql_inbox import Session
from tap_whoop.stores.tokens import descends

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_whoop.stores.file import TokenStore
    from tap_whoop.stores.inbox import Contents
    from tap_whoop.stores.sql_inbox import SqliteInbox

from tap_whoop.stores.postgres.database import Connection, Database
from tap_whoop.stores.postgres.inbox import DIALECT, TABLES
from tap_whoop.stores.postgres.tokens import PostgresTokenStore

logger = logging.getLogger("tap-whoop.store")


@dataclass
class CopyReport:
    """What `copy_file_store` did, member by member, and with the inbox."""

    where: str
    members: dict[str, str] = field(default_factory=dict)
    events: int = 0
    ledger_rows: int = 0

    def lines(self) -> list[str]:
        """One line per member, then the inbox."""
        return [f"  member {key!r}: {outcome}" for key, outcome in sorted(self.members.items())]


COPIED = "copied"
UNCHANGED = "already there, the same token"
KEPT = "kept the database's: its token was rotated from the file's, so it is newer"
UPDATED = "updated: the file's token was rotated from the database's, so it is newer"
REPLACED = "replaced (--overwrite): the database's unrelated token was dropped"


def _decide(file_entry: dict[str, t.Any], stored: dict[str, t.Any] | None) -> str | None:
    """What to do with a member: by token lineage (which token was rotated from which).

    Never by clocks: the machines' clocks need not agree. None: unrelated tokens, a conflict.
    """
    if stored is None:
        return COPIED
    if file_entry.get("refresh_token") == stored.get("refresh_token"):
        return UNCHANGED
    if descends(stored, file_entry):
        return KEPT
    if descends(file_entry, stored):
        return UPDATED
    return None


def copy_file_store(
    source: TokenStore,
    inbox: SqliteInbox | None,
    database: Database,
    *,
    overwrite: bool = False,
) -> CopyReport:
    """Copy every member's tokens, the inbox and the ledger from the files to `database`.

    No token is spent: entries are copied as they are. Both stores are locked throughout, so no
    process refreshes meanwhile. A member the database already has is decided by token lineage
    (`_decide`); unrelated tokens are refused, and nothing is copied, unless `overwrite`. Once
    committed, the file store and the inbox are marked as moved: a process still using them
    fails (or answers 503) instead of spending tokens the database holds.
    """
    target = PostgresTokenStore(database)
    report = CopyReport(database.where)
    with source.locked():
        members = source.export()["members"]
        with target.locked():
            stored = target.read()["members"]
            conflicts = []
            merged = dict(stored)
            for key, entry in members.items():
                outcome = _decide(entry, stored.get(key))
                if outcome is None:
                    if not overwrite:
                        conflicts.append(key)
                        continue
                    outcome = REPLACED
                report.members[key] = outcome
                if outcome in (COPIED, UPDATED, REPLACED):
                    merged[key] = entry
            if conflicts:
                raise TapWhoopError(
                    f"nothing was copied: member(s) {', '.join(map(repr, sorted(conflicts)))} "
                    f"hold a refresh token in {database.where} that is unrelated to the one in "
                    f"{source.path} (neither was rotated from the other, so either may be the "
                    "live one); run again with --overwrite to replace the database's with the "
                    "file's, or remove those members from the file store"
                )
            moving = inbox.moving(database.where) if inbox is not None else _nothing()
            with moving as contents:

                def copy_inbox(session: Connection) -> None:
                    if contents is not None:
                        report.events, report.ledger_rows = _copy_inbox(session, contents)

                target.write_with(merged, copy_inbox, "nothing was copied")
        source.mark_moved(database.where)
    logger.info("Copied the token store %s to %s", source.path, database.where)
    return report


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _copy_inbox(connection: Connection, contents: Contents) -> tuple[int, int]:
    """Insert the events (known trace ids skipped) and the ledger rows, as `PostgresInbox` does."""
    session = Session(connection, DIALECT)

    def count(table: sa.Table) -> int:
        return int(session.execute(sa.select(sa.func.count()).select_from(table)).fetchone()[0])

    events_before, ledger_before = count(TABLES.events), count(TABLES.ledger)
    if contents.events:
        session.executemany(
            postgresql.insert(TABLES.events).on_conflict_do_nothing(),
            [asdict(event) for event in contents.events],
        )
    rows = [
        {"user_id": user_id, "stream": stream, **asdict(row)}
        for (user_id, stream), rows in contents.ledger.items()
        for row in rows
    ]
    if rows:
        session.executemany(postgresql.insert(TABLES.ledger).on_conflict_do_nothing(), rows)
    return count(TABLES.events) - events_before, count(TABLES.ledger) - ledger_before
