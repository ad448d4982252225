"""The token store in PostgreSQL: one row per member, each member's refresh under its own lock.

Its locks are session advisory locks, so one is held across the commits of one refresh (the
in-flight record, then the rotated token) and released by the server the moment its holder's
connection ends, a killed process included. Every write is one transaction; a write whose lock
session was lost takes the lock again on a new one and writes only if nobody else wrote meanwhile.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import typing as t

import psycopg
from psycopg.types.json import Jsonb

from tap_whoop.errors import TokenStoreError
from tap_whoop.stores import tokens as token_rules
from tap_whoop.stores.tokens import MemberEdits

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator


from tap_whoop.stores.postgres.database import LOCK_KEY, Connection, Database, finite, json_text

logger = logging.getLogger("tap-whoop.store")

RELOCK_TIMEOUT_SECONDS = 10


_TOKENS_LOCK = f"SELECT pg_advisory_lock({LOCK_KEY})"
_TOKENS_UNLOCK = f"SELECT pg_advisory_unlock({LOCK_KEY})"
#: A member's cycle: the store's lock shared (no whole-store writer), the member's exclusive.
_MEMBER_LOCK = f"SELECT pg_advisory_lock_shared({LOCK_KEY}), pg_advisory_lock({LOCK_KEY})"
_MEMBER_UNLOCK = f"SELECT pg_advisory_unlock({LOCK_KEY}), pg_advisory_unlock_shared({LOCK_KEY})"
_TOKENS_LOCK_NAME = ".tap_whoop_tokens"


class _ChangedError(TokenStoreError):
    """Another process wrote the token store while this one had lost its lock."""


class PostgresTokenStore(MemberEdits):
    """The token store in PostgreSQL: one row per member, its entry as jsonb.

    The same interface and promises as `TokenStore`, per member: `locked(key)` excludes every
    other process on any machine from that member's cycle (and from whole-store writes) while
    other members refresh, and `get`, `record` and `put` touch that member's row alone, committed
    before they return. No temp files exist, so nothing is ever orphaned: a refresh killed
    before its commit leaves the in-flight record `record` committed, which the next run reports.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self.path = database.where
        self._mutex = threading.RLock()
        self._owner: int | None = None
        self._depth = 0
        #: whose lock the session holds: a member's key, or None for the whole store
        self._held: str | None = None
        self._session: Connection | None = None
        #: member -> entry as last read or written under the current hold of the lock
        self._seen: dict[str, t.Any] | None = None
        #: member -> its row's update time when first read under the current hold
        self._stamps: dict[str, t.Any] = {}

    # The lock

    @contextlib.contextmanager
    def locked(self, key: str | None = None) -> Iterator[None]:
        """Hold member `key`'s lock, or the whole store's (re-entrant; threads wait too)."""
        timeout = token_rules.LOCK_TIMEOUT_SECONDS
        if not self._mutex.acquire(timeout=timeout):
            raise TokenStoreError(
                f"token store {self.path} is held by another thread of this process for over "
                f"{timeout}s"
            )
        try:
            if self._depth == 0:
                self._session = self._lock(self._session, timeout, key=key)
                self._held = key
                self._seen = None
                self._stamps = {}
            elif self._held is not None and key != self._held:
                raise AssertionError(f"store lock of {key!r} asked while holding {self._held!r}")
            self._depth += 1
            self._owner = threading.get_ident()
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None
                    self._seen = None
                    self._unlock()
        finally:
            self._mutex.release()

    def _lock(
        self, session: Connection | None, timeout: float, *, key: str | None, lost: bool = False
    ) -> Connection:
        """`session` (or a new connection) holding `key`'s lock, waiting up to `timeout`.

        `lost`: the server dropped the previous session, so the new one is tried with backoff.
        """
        statement, params = (
            (_TOKENS_LOCK, (_TOKENS_LOCK_NAME,))
            if key is None
            else (_MEMBER_LOCK, (_TOKENS_LOCK_NAME, f"{_TOKENS_LOCK_NAME}:{key}"))
        )
        for attempt in range(2):
            reused = session is not None and not session.closed and not session.broken
            if reused and session is not None:
                connection = session
            elif attempt or lost:
                connection = self.database.reconnect()
            else:
                connection = self.database.connect()
            try:
                connection.execute(f"SET lock_timeout = {max(1, round(timeout * 1000))}")
                connection.execute(t.cast("t.LiteralString", statement), params)
                return connection
            except psycopg.errors.LockNotAvailable:
                with contextlib.suppress(psycopg.Error):
                    connection.close()  # so that no half-taken lock stays held
                raise TokenStoreError(
                    f"token store {self.path} is locked by another tap-whoop process for over "
                    f"{timeout:.0f}s; wait for it to finish (it shows in pg_stat_activity as "
                    "application_name 'tap-whoop'; a process that dies releases the lock at once)"
                ) from None
            except psycopg.Error as exc:
                with contextlib.suppress(psycopg.Error):
                    connection.close()
                session = None
                if reused and attempt == 0:
                    continue
                raise TokenStoreError(
                    f"cannot lock token store {self.path}: {self.database.reason(exc)}"
                ) from None
        raise AssertionError("unreachable")

    def _unlock(self) -> None:
        session = self._session
        if session is None:
            return
        key, self._held = self._held, None
        try:
            if key is None:
                session.execute(_TOKENS_UNLOCK, (_TOKENS_LOCK_NAME,))
            else:
                session.execute(_MEMBER_UNLOCK, (f"{_TOKENS_LOCK_NAME}:{key}", _TOKENS_LOCK_NAME))
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                session.close()  # the server releases a closed session's locks
            self._session = None

    def _holds_lock(self) -> bool:
        return self._depth > 0 and self._owner == threading.get_ident()

    def _live_session(self, consequence: str) -> Connection:
        """The lock's session; when the server dropped it, a new one that took the lock again."""
        session = self._session
        if session is not None and not session.closed and not session.broken:
            return session
        try:
            self._session = self._lock(
                None, RELOCK_TIMEOUT_SECONDS, key=self._held, lost=session is not None
            )
        except TokenStoreError as exc:
            raise TokenStoreError(
                f"cannot write token store {self.path}: the connection holding its lock was "
                f"lost and the lock could not be taken again ({exc}); {consequence}"
            ) from None
        return self._session

    # Reading

    def read(self) -> dict[str, t.Any]:
        """Every member's entry, as `{"version": 1, "members": {key: entry}}`."""
        return {"version": 1, "members": {key: entry for key, (entry, _) in self._rows().items()}}

    def _rows(self) -> dict[str, tuple[dict[str, t.Any], t.Any]]:
        """Each member's (entry, updated_at), on the lock's session if this thread holds it."""

        def select(connection: Connection) -> dict[str, tuple[dict[str, t.Any], t.Any]]:
            return {
                member: (entry, updated_at)
                for member, entry, updated_at in connection.execute(
                    "SELECT member, entry, updated_at FROM tap_whoop_tokens ORDER BY member"
                )
            }

        if not self._holds_lock():
            return self.database.run("read token store", select)
        try:
            rows = select(self._live_session("nothing was changed"))
        except psycopg.Error as exc:
            raise TokenStoreError(
                f"cannot read token store {self.path}: {self.database.reason(exc)}"
            ) from None
        self._seen = {member: copy.deepcopy(entry) for member, (entry, _) in rows.items()}
        return rows

    def get(self, key: str) -> dict[str, t.Any] | None:
        """Member `key`'s entry (its row alone), on the lock's session if this thread holds it."""

        def select(connection: Connection) -> tuple[dict[str, t.Any] | None, t.Any]:
            row = connection.execute(
                "SELECT entry, updated_at FROM tap_whoop_tokens WHERE member = %s", (key,)
            ).fetchone()
            return (row[0], row[1]) if row is not None else (None, None)

        if not self._holds_lock():
            return self.database.run("read token store", select)[0]
        try:
            entry, stamp = select(self._live_session("nothing was changed"))
        except psycopg.Error as exc:
            raise TokenStoreError(
                f"cannot read token store {self.path}: {self.database.reason(exc)}"
            ) from None
        self._seen = {**(self._seen or {}), key: copy.deepcopy(entry)}
        self._stamps.setdefault(key, stamp)
        return entry

    # Writing

    def record(self, key: str, entry: dict[str, t.Any]) -> None:
        """Commit `entry` before a token is spent, the way the rotated token will be committed."""
        self._save_member(key, entry, "no refresh token was spent")

    def put(self, key: str, entry: dict[str, t.Any]) -> None:
        """Commit member `key`'s `entry` (its row alone) before returning."""
        self._save_member(key, entry, "otherwise a rotated WHOOP token would be lost")

    def restore(self, key: str, entry: dict[str, t.Any] | None) -> None:
        """Put back `entry` as member `key`'s row (None: no row), its update time included.

        Best effort: a failure is a warning.
        """
        try:
            self._save_member(key, entry, "it was left as it is", stamp=self._stamps.get(key))
        except TokenStoreError as exc:
            logger.warning("Could not restore token store %s: %s", self.path, exc)

    def _save_member(
        self,
        key: str,
        entry: dict[str, t.Any] | None,
        consequence: str,
        stamp: t.Any = None,
    ) -> None:
        with self.locked(key if self._depth == 0 else self._held):
            self._commit(
                lambda session: self._apply_member(session, key, entry, stamp), consequence
            )
            self._seen = {**(self._seen or {}), key: copy.deepcopy(entry)}

    def _apply_member(
        self, connection: Connection, key: str, entry: dict[str, t.Any] | None, stamp: t.Any
    ) -> None:
        """Make member `key`'s row `entry` (in the caller's transaction), as `apply` does."""
        row = connection.execute(
            "SELECT entry FROM tap_whoop_tokens WHERE member = %s FOR UPDATE", (key,)
        ).fetchone()
        current = finite(row[0]) if row is not None else None
        wanted = finite(entry) if entry is not None else None
        if current == wanted:
            return
        if self._seen is not None and key in self._seen:
            seen = self._seen[key]
            if current not in ((finite(seen) if seen is not None else None), wanted):
                raise _ChangedError(
                    f"cannot write token store {self.path}: another process changed member "
                    f"{key!r} while this one's connection was lost"
                )
        if wanted is None:
            connection.execute("DELETE FROM tap_whoop_tokens WHERE member = %s", (key,))
            return
        connection.execute(
            "INSERT INTO tap_whoop_tokens (member, entry, updated_at) "
            "VALUES (%s, %s, coalesce(%s, clock_timestamp())) "
            "ON CONFLICT (member) DO UPDATE SET entry = EXCLUDED.entry, "
            "updated_at = EXCLUDED.updated_at",
            (key, Jsonb(wanted, dumps=json_text), stamp),
        )

    def write(self, data: dict[str, t.Any]) -> None:
        """Commit `data`'s members (only the rows that changed) before returning."""
        self._save(data["members"], "otherwise a rotated WHOOP token would be lost", stamps=None)

    def prove_writable(self) -> None:
        """Show that this session may change the store's rows (no read-only server, grants)."""
        with self.locked():
            consequence = "no refresh token was spent"
            session = self._live_session(consequence)
            try:
                session.execute("UPDATE tap_whoop_tokens SET member = member WHERE false")
            except psycopg.Error as exc:
                raise TokenStoreError(self._cannot_write(exc, consequence)) from None

    def _cannot_write(self, exc: psycopg.Error, consequence: str) -> str:
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            fix = "grant the store_url user SELECT, INSERT, UPDATE and DELETE on tap_whoop_tokens"
        elif isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            fix = "the server is read-only (a standby?): point store_url at the primary"
        else:
            fix = "check the database server"
        return (
            f"cannot write token store {self.path}: {self.database.reason(exc)}; {fix}; "
            f"{consequence}"
        )

    def _save(
        self, members: dict[str, t.Any], consequence: str, stamps: dict[str, t.Any] | None
    ) -> None:
        self.write_with(members, lambda session: None, consequence, stamps)

    def write_with(
        self,
        members: dict[str, t.Any],
        alongside: Callable[[Connection], None],
        consequence: str,
        stamps: dict[str, t.Any] | None = None,
    ) -> None:
        """Commit `members` as the whole store, and `alongside`, in one transaction."""

        def change(session: Connection) -> None:
            self.apply(session, members, stamps)
            alongside(session)

        with self.locked():
            self._commit(change, consequence)
            self._seen = copy.deepcopy(members)

    def _commit(self, change: Callable[[Connection], None], consequence: str) -> None:
        """`change` in one transaction on the lock's session (locked again if it was dropped)."""
        for attempt in range(2):
            session = self._live_session(consequence)
            try:
                with session.transaction():
                    change(session)
                return
            except _ChangedError as exc:
                raise TokenStoreError(f"{exc}; {consequence}") from None
            except psycopg.Error as exc:
                if attempt == 0 and (session.broken or session.closed):
                    continue  # the server dropped the lock's session: take the lock again
                raise TokenStoreError(self._cannot_write(exc, consequence)) from None

    def apply(
        self,
        connection: Connection,
        members: dict[str, t.Any],
        stamps: dict[str, t.Any] | None = None,
    ) -> None:
        """Make the rows `members` (in the caller's transaction): change only what differs.

        Refused when the rows are neither what this process last saw under the lock nor
        already `members`: another process wrote meanwhile (this one had lost its lock).
        """
        current = {
            member: finite(entry)
            for member, entry in connection.execute(
                "SELECT member, entry FROM tap_whoop_tokens FOR UPDATE"
            )
        }
        wanted = finite(members)
        if current == wanted:
            return
        if self._seen is not None and current not in (finite(self._seen), wanted):
            raise _ChangedError(
                f"cannot write token store {self.path}: another process changed it while this "
                "one's connection was lost"
            )
        for member, entry in wanted.items():
            if current.get(member) == entry:
                continue
            stamp = (stamps or {}).get(member)
            connection.execute(
                "INSERT INTO tap_whoop_tokens (member, entry, updated_at) "
                "VALUES (%s, %s, coalesce(%s, clock_timestamp())) "
                "ON CONFLICT (member) DO UPDATE SET entry = EXCLUDED.entry, "
                "updated_at = EXCLUDED.updated_at",
                (member, Jsonb(entry, dumps=json_text), stamp),
            )
        for member in current.keys() - wanted.keys():
            connection.execute("DELETE FROM tap_whoop_tokens WHERE member = %s", (member,))

    def close(self) -> None:
        """Close the lock's session (the next use opens another)."""
        with self._mutex:
            if self._session is not None:
                self._session.close()
                self._session = None
