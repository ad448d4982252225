"""PostgreSQL as the store (the `store_url` setting): tokens, webhook inbox, rate-limit window.

One database schema (the one `store_url`'s search_path selects; `public` by default) is one store,
as one directory is for the files, shared by every tap process on every machine:

- `PostgresTokenStore`: the token store. Its lock is a session advisory lock, so it is held across
  the commits of one refresh (the in-flight record, then the rotated token) and released by the
  server the moment its holder's connection ends, a killed process included. Every write is one
  transaction; a write whose lock session was lost takes the lock again on a new one and writes
  only if nobody else wrote meanwhile.
- `PostgresInbox`: the webhook log and ledger, with `SqliteInbox`'s semantics. Appends take a
  transaction-scoped advisory lock, so positions commit in order: a reader never passes one that
  is still to commit.
- `PostgresWindow`: the app's sliding request window, timed by the database's clock.
- `copy_file_store`: `tap-whoop store copy`, files to database, spending no token.

Tables are created on first use; `tap_whoop_schema_version` says which migrations ran. No
message names the URL's password, and no token is ever logged.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import re
import threading
import time
import typing as t
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import backoff
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb, set_json_loads

from tap_whoop import __version__
from tap_whoop.errors import TapWhoopError, TokenStoreError
from tap_whoop.stop import STOP
from tap_whoop.stores import tokens as token_rules
from tap_whoop.stores.inbox import Event, LedgerRow, SetAside
from tap_whoop.stores.tokens import MemberEdits, descends

if t.TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Iterator

    from tap_whoop.stores.file import TokenStore
    from tap_whoop.stores.inbox import Contents, SqliteInbox

logger = logging.getLogger("tap-whoop.store")

T = t.TypeVar("T")
Connection = psycopg.Connection[t.Any]

CONNECT_TIMEOUT_SECONDS = 10
RELOCK_TIMEOUT_SECONDS = 10
#: How long a server that dropped the store's connection (a restart, a failover) is waited for.
RECONNECT_SECONDS = 30.0
LATENCY_ALLOWANCE_SECONDS = 0.1
"""A window slot is held this much longer: requests reach WHOOP with uneven delays."""
"""How long a write whose lock session was lost waits to take the lock again."""

_LOCK_KEY = "hashtextextended(current_schema() || %s, 0)"
_TOKENS_LOCK = f"SELECT pg_advisory_lock({_LOCK_KEY})"
_TOKENS_UNLOCK = f"SELECT pg_advisory_unlock({_LOCK_KEY})"
#: A member's cycle: the store's lock shared (no whole-store writer), the member's exclusive.
_MEMBER_LOCK = f"SELECT pg_advisory_lock_shared({_LOCK_KEY}), pg_advisory_lock({_LOCK_KEY})"
_MEMBER_UNLOCK = f"SELECT pg_advisory_unlock({_LOCK_KEY}), pg_advisory_unlock_shared({_LOCK_KEY})"
_TOKENS_LOCK_NAME = ".tap_whoop_tokens"

#: Each migration's statements, in order; `tap_whoop_schema_version` holds the last one run.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE tap_whoop_tokens (
            member text PRIMARY KEY,
            entry jsonb NOT NULL CHECK (jsonb_typeof(entry) = 'object'),
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
        """,
        """
        CREATE TABLE tap_whoop_events (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id bigint NOT NULL,
            type text NOT NULL,
            record_id text NOT NULL,
            trace_id text NOT NULL UNIQUE,
            received_at timestamptz NOT NULL,
            done_at timestamptz
        )
        """,
        """
        CREATE UNIQUE INDEX tap_whoop_events_pending_record
            ON tap_whoop_events (user_id, type, record_id) WHERE done_at IS NULL
        """,
        "CREATE INDEX tap_whoop_events_done ON tap_whoop_events (done_at)",
        """
        CREATE TABLE tap_whoop_ledger (
            user_id bigint NOT NULL,
            stream text NOT NULL,
            record_id text NOT NULL,
            key text,
            sleep_id text,
            cycle_id bigint,
            PRIMARY KEY (user_id, stream, record_id)
        )
        """,
        "CREATE INDEX tap_whoop_ledger_sleep ON tap_whoop_ledger (user_id, sleep_id)",
        """
        CREATE TABLE tap_whoop_rate_window (
            app text NOT NULL,
            at timestamptz NOT NULL
        )
        """,
        "CREATE INDEX tap_whoop_rate_window_app_at ON tap_whoop_rate_window (app, at)",
    ),
    (
        # An append-only log: several notices for one record are all kept; pruned by age.
        "DROP INDEX tap_whoop_events_pending_record",
        "CREATE INDEX tap_whoop_events_received ON tap_whoop_events (received_at)",
        "CREATE TABLE tap_whoop_meta (name text PRIMARY KEY, value text NOT NULL)",
        "INSERT INTO tap_whoop_meta (name, value) "
        "VALUES ('identity', 'postgresql:' || gen_random_uuid())",
        """
        CREATE TABLE tap_whoop_set_aside (
            seq bigint PRIMARY KEY,
            user_id bigint NOT NULL,
            type text NOT NULL,
            record_id text NOT NULL,
            trace_id text NOT NULL,
            received_at timestamptz NOT NULL,
            reason text NOT NULL,
            tries integer NOT NULL,
            at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def redacted(url: str) -> str:
    """`url` as messages show it: scheme, user, host, port, database, schema; no password."""
    parts = urlsplit(url)
    user = unquote(parts.username or "")
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    database = unquote(parts.path.lstrip("/")) or user
    shown = f"postgresql://{f'{user}@' if user else ''}{host}:{port}/{database}"
    options = " ".join(parse_qs(parts.query).get("options", []))
    if schema := re.search(r"search_path\s*=\s*([^\s,]+)", options):
        shown += f" (schema {schema.group(1)})"
    return shown


def _dumps(value: t.Any) -> str:
    return json.dumps(_finite(value))


def _loads(text: str | bytes) -> t.Any:
    """JSON as the file store reads it: a number too large for an integer is a (huge) float."""
    return json.loads(
        text, parse_int=lambda digits: int(digits) if len(digits) < 19 else float(digits)
    )


def _finite(value: t.Any) -> t.Any:
    """`value` with numbers JSON cannot hold made finite, meaning the same to the store's rules.

    jsonb has no NaN or infinity; an expiry or lifetime that cannot be true already means
    "expired" (or "the default lifetime"), and so do these.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return 0.0 if math.isnan(value) else math.copysign(1e300, value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


class Database:
    """One PostgreSQL database (and schema) holding a tap-whoop store.

    `timeout`: seconds a statement (or a wait for a lock) may take before it fails; None leaves
    the server's. `reconnect_seconds`: how long a server that dropped the connection is waited
    for. Connections are autocommit, with durable (synchronous) commits.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float | None = None,
        reconnect_seconds: float | None = None,
    ) -> None:
        self.url = url
        self.where = redacted(url)
        self.timeout = timeout
        self.reconnect_seconds = reconnect_seconds
        parts = urlsplit(url)
        self._secrets = [
            secret
            for secret in {parts.password or "", unquote(parts.password or "")}
            if len(secret) >= 4 and secret not in (parts.username, parts.hostname)
        ]
        self._mutex = threading.RLock()
        self._connection: Connection | None = None
        self._migrated = False

    def reason(self, exc: BaseException) -> str:
        """What went wrong, on one line, without the URL's password."""
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        text = lines[0] if lines else type(exc).__name__
        text = text.removeprefix("connection failed: ").removeprefix("connection is bad: ")
        if "failed: " in text and text.startswith("connection to server"):
            text = text.split("failed: ", 1)[1] or text
        text = " ".join(text.split()).removeprefix("FATAL: ")
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def connect(self) -> Connection:
        """A new connection: autocommit, durable commits, the store's tables migrated."""
        connect_timeout = CONNECT_TIMEOUT_SECONDS if self.timeout is None else 2
        try:
            connection = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=connect_timeout,
                application_name="tap-whoop",
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
        except psycopg.Error as exc:
            raise TokenStoreError(
                f"cannot connect to the store database {self.where}: {self.reason(exc)}; "
                "check store_url (host, port, database, user and password) and that PostgreSQL "
                "accepts connections there"
            ) from None
        try:
            set_json_loads(_loads, connection)
            connection.execute("SET synchronous_commit = on")
            if self.timeout is not None:  # no wait on a lock, or a statement, is endless
                milliseconds = max(1, round(self.timeout * 1000))
                connection.execute(f"SET lock_timeout = {milliseconds}")
                connection.execute(f"SET statement_timeout = {milliseconds}")
            row = connection.execute("SELECT current_schema()").fetchone()
            if row is None or row[0] is None:
                raise TokenStoreError(
                    f"the store database {self.where} has no schema to keep tap-whoop's tables "
                    "in: the search_path in store_url names none that exists; create it "
                    "(CREATE SCHEMA …) or fix the URL's options=-csearch_path=…"
                )
            if not self._migrated:
                migrate(connection, self.where, self.reason)
                self._migrated = True
        except psycopg.Error as exc:
            connection.close()
            raise TokenStoreError(
                f"cannot use the store database {self.where}: {self.reason(exc)}{_fix_for(exc)}"
            ) from None
        except BaseException:
            connection.close()
            raise
        return connection

    def reconnect(self) -> Connection:
        """A new connection after the server dropped one, tried with backoff for a while.

        A restart or a failover takes seconds: attempts come at once, then after growing,
        jittered waits, for up to `reconnect_seconds` (RECONNECT_SECONDS unless given); a server
        still away (or a stop asked for) ends in the connect error.
        """
        seconds = RECONNECT_SECONDS if self.reconnect_seconds is None else self.reconnect_seconds
        deadline = time.monotonic() + seconds
        for delay in backoff.expo(factor=0.5, max_value=8):
            wait = backoff.full_jitter(delay)
            if wait:
                STOP.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            try:
                return self.connect()
            except TokenStoreError as exc:
                if time.monotonic() >= deadline or STOP.requested:
                    raise TokenStoreError(
                        f"{exc}; the server dropped the connection and did not come back within "
                        f"{seconds:g} s"
                    ) from None
                logger.warning("store database lost, connecting again: %s", exc)
        raise AssertionError("unreachable")

    def run(self, what: str, operation: Callable[[Connection], T]) -> T:
        """`operation` on the shared connection; `what` names it for the error (`cannot …`).

        A connection the server dropped (a restart, a failover) is replaced, with backoff
        (`reconnect`), and the operation tried once more: every operation here is idempotent.
        """
        with self._mutex:
            lost = False
            while True:
                if self._connection is None or self._connection.closed:
                    self._connection = self.reconnect() if lost else self.connect()
                connection = self._connection
                try:
                    return operation(connection)
                except psycopg.Error as exc:
                    if connection.broken or connection.closed:
                        with contextlib.suppress(psycopg.Error):
                            connection.close()
                        self._connection = None
                        if not lost:
                            lost = True
                            continue
                    raise TokenStoreError(
                        f"cannot {what} {self.where}: {self.reason(exc)}{_fix_for(exc)}"
                        f"{self._waited_for(connection, exc)}"
                    ) from None

    def _waited_for(self, connection: Connection, exc: psycopg.Error) -> str:
        """For a lock or statement timeout: which of the store's tables another session holds."""
        if not isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
            return ""
        try:
            rows = connection.execute(
                "SELECT DISTINCT c.relname, l.mode, l.pid FROM pg_locks l "
                "JOIN pg_class c ON c.oid = l.relation "
                "WHERE l.granted AND l.pid <> pg_backend_pid() AND c.relname LIKE 'tap_whoop%%' "
                "AND c.relnamespace = current_schema()::regnamespace ORDER BY 1"
            ).fetchall()
        except psycopg.Error:
            rows = []
        held = ", ".join(f"{table} ({mode} by process {pid})" for table, mode, pid in rows)
        return (
            f"; waited {self.timeout:g} s (store_timeout_seconds) for "
            + (held if held else "a lock or the server")
            + ": end the session holding it (pg_stat_activity), or raise store_timeout_seconds"
        )

    def close(self) -> None:
        """Close the shared connection (the next use opens another)."""
        with self._mutex:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def _fix_for(exc: psycopg.Error) -> str:
    """What fixes a refusal no retry mends, as the end of an error line."""
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return "; the server is read-only (a standby?): point store_url at the primary"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return (
            "; grant the store_url user SELECT, INSERT, UPDATE and DELETE on the tap_whoop_ tables"
        )
    return ""


def migrate(connection: Connection, where: str, reason: Callable[[BaseException], str]) -> None:
    """Create or upgrade the store's tables, once, whichever process comes first."""
    try:
        current = _schema_version(connection)
        _refuse_newer(current or 0, where)
        if current != SCHEMA_VERSION:
            with connection.transaction():
                connection.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || "
                    "'.tap_whoop_schema_version', 0))"
                )
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS tap_whoop_schema_version ("
                    "version integer PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
                    "applied_by text NOT NULL)"
                )
                current = _schema_version(connection) or 0
                _refuse_newer(current, where)
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[version - 1]:
                        connection.execute(t.cast("t.LiteralString", statement))
                    connection.execute(
                        "INSERT INTO tap_whoop_schema_version (version, applied_by) "
                        "VALUES (%s, %s)",
                        (version, f"tap-whoop {__version__}"),
                    )
                    logger.info("Store database %s: schema version %d", where, version)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise TokenStoreError(
            f"cannot create tap-whoop's tables in {where}: {reason(exc)}; grant the store_url "
            "user CREATE on the schema (or have its owner run the tap once)"
        ) from None


def _schema_version(connection: Connection) -> int | None:
    row = connection.execute(
        "SELECT to_regclass('tap_whoop_schema_version') IS NOT NULL"
    ).fetchone()
    if not row or not row[0]:
        return None
    version = connection.execute("SELECT max(version) FROM tap_whoop_schema_version").fetchone()
    return int(version[0]) if version and version[0] is not None else 0


def _refuse_newer(current: int, where: str) -> None:
    if current > SCHEMA_VERSION:
        raise TokenStoreError(
            f"the store database {where} was set up by a newer tap-whoop "
            f"(schema version {current}; this one knows up to {SCHEMA_VERSION}): upgrade "
            "tap-whoop on this machine"
        )


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
        current = _finite(row[0]) if row is not None else None
        wanted = _finite(entry) if entry is not None else None
        if current == wanted:
            return
        if self._seen is not None and key in self._seen:
            seen = self._seen[key]
            if current not in ((_finite(seen) if seen is not None else None), wanted):
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
            (key, Jsonb(wanted, dumps=_dumps), stamp),
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
        with self.locked():
            self._commit(lambda session: self.apply(session, members, stamps), consequence)
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
            member: _finite(entry)
            for member, entry in connection.execute(
                "SELECT member, entry FROM tap_whoop_tokens FOR UPDATE"
            )
        }
        wanted = _finite(members)
        if current == wanted:
            return
        if self._seen is not None and current not in (_finite(self._seen), wanted):
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
                (member, Jsonb(entry, dumps=_dumps), stamp),
            )
        for member in current.keys() - wanted.keys():
            connection.execute("DELETE FROM tap_whoop_tokens WHERE member = %s", (member,))

    def close(self) -> None:
        """Close the lock's session (the next use opens another)."""
        with self._mutex:
            if self._session is not None:
                self._session.close()
                self._session = None


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


_EVENTS = (
    "SELECT user_id, type, record_id, trace_id, extract(epoch FROM received_at)::float8, seq "
    "FROM tap_whoop_events "
)
_EVENTS_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '.tap_whoop_events', 0))"
)


_TAKE_SLOT = """
WITH now AS (SELECT clock_timestamp() AS t),
expired AS (
    DELETE FROM tap_whoop_rate_window w USING now
    WHERE w.app = %(app)s AND w.at <= now.t - make_interval(secs => %(seconds)s)
),
recent AS (
    SELECT w.at FROM tap_whoop_rate_window w, now
    WHERE w.app = %(app)s AND w.at > now.t - make_interval(secs => %(seconds)s)
    ORDER BY w.at DESC LIMIT %(limit)s
),
verdict AS (SELECT count(*) AS taken, min(at) AS oldest FROM recent),
admitted AS (
    INSERT INTO tap_whoop_rate_window (app, at)
    SELECT %(app)s, now.t FROM now, verdict WHERE verdict.taken < %(limit)s
)
SELECT CASE WHEN verdict.taken < %(limit)s THEN NULL ELSE
    extract(epoch FROM verdict.oldest + make_interval(secs => %(seconds)s) - now.t)::float8
END
FROM verdict, now
"""


class PostgresWindow:
    """One app's sliding request window in PostgreSQL: `limit` requests per `seconds`.

    Shared by every worker of the app on any machine, and timed by the database's clock, so
    machines whose clocks disagree still count the same window. Each request takes a slot in
    one short transaction under the app's advisory lock; a full window answers how long until
    its oldest slot frees, and the request waits that long and tries again. A slot is held a
    little longer than the window (`LATENCY_ALLOWANCE_SECONDS`), so that requests whose delays
    to WHOOP differ still arrive within the limit.
    """

    def __init__(self, database: Database, app: str, limit: int, seconds: float = 60.0) -> None:
        self.database = database
        self.app = app
        self.limit = int(limit)
        self.seconds = float(seconds)
        self.path = database.where

    def acquire(self) -> None:
        """Block until the window has room for one more request, and take it."""
        while True:
            wait = self.database.run("use the shared rate-limit window in", self._take)
            if wait is None:
                return
            time.sleep(min(max(wait, 0.001), self.seconds))

    def _take(self, connection: Connection) -> float | None:
        with connection.transaction():
            connection.execute(
                f"SELECT pg_advisory_xact_lock({_LOCK_KEY})",
                (f".tap_whoop_rate_window.{self.app}",),
            )
            held = self.seconds + LATENCY_ALLOWANCE_SECONDS
            row = connection.execute(
                _TAKE_SLOT, {"app": self.app, "seconds": held, "limit": self.limit}
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])


# Moving from the files to PostgreSQL


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
                session = target._live_session("nothing was copied")
                try:
                    with session.transaction():
                        target.apply(session, merged)
                        if contents is not None:
                            report.events, report.ledger_rows = _copy_inbox(session, contents)
                except psycopg.Error as exc:
                    raise TokenStoreError(
                        f"cannot write to {database.where}: {database.reason(exc)}; nothing was "
                        "copied"
                    ) from None
                target._seen = copy.deepcopy(merged)
        source.mark_moved(database.where)
    logger.info("Copied the token store %s to %s", source.path, database.where)
    return report


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _copy_inbox(connection: Connection, contents: Contents) -> tuple[int, int]:
    """Insert the events (known trace ids and pending records skipped) and the ledger rows."""

    def count(table: str) -> int:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        return int(t.cast("tuple[int]", connection.execute(query).fetchone())[0])

    events_before, ledger_before = count("tap_whoop_events"), count("tap_whoop_ledger")
    with connection.cursor() as cursor:
        for event in contents.events:
            cursor.execute(
                "INSERT INTO tap_whoop_events "
                "(user_id, type, record_id, trace_id, received_at, done_at) "
                "VALUES (%s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s)) "
                "ON CONFLICT DO NOTHING",
                (
                    event.user_id,
                    event.type,
                    event.record_id,
                    event.trace_id,
                    event.received_at,
                    event.done_at,
                ),
            )
        values = [
            (user_id, stream, row.record_id, row.key, row.sleep_id, row.cycle_id)
            for (user_id, stream), rows in contents.ledger.items()
            for row in rows
        ]
        if values:
            cursor.executemany(
                "INSERT INTO tap_whoop_ledger "
                "(user_id, stream, record_id, key, sleep_id, cycle_id) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                values,
            )
    return count("tap_whoop_events") - events_before, count("tap_whoop_ledger") - ledger_before
