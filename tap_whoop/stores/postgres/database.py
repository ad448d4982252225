"""One PostgreSQL database (and schema) holding a store: connections, reconnection, migrations.

Tables are created on first use; `tap_whoop_schema_version` says which migrations ran. No
message names the URL's password.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
import time
import typing as t
from urllib.parse import parse_qs, unquote, urlsplit

import backoff
import psycopg
from psycopg.types.json import set_json_loads

from tap_whoop import __version__
from tap_whoop.errors import TokenStoreError
from tap_whoop.stop import STOP

if t.TYPE_CHECKING:
    from collections.abc import Callable


logger = logging.getLogger("tap-whoop.store")

T = t.TypeVar("T")
Connection = psycopg.Connection[t.Any]
#: An advisory lock's key: a name, within the store's schema.
LOCK_KEY = "hashtextextended(current_schema() || %s, 0)"
CONNECT_TIMEOUT_SECONDS = 10
#: How long a server that dropped the store's connection (a restart, a failover) is waited for.
RECONNECT_SECONDS = 30.0
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


def json_text(value: t.Any) -> str:
    """`value` as jsonb text, its numbers made finite (`finite`)."""
    return json.dumps(finite(value))


def json_value(text: str | bytes) -> t.Any:
    """JSON as the file store reads it: a number too large for an integer is a (huge) float."""
    return json.loads(
        text, parse_int=lambda digits: int(digits) if len(digits) < 19 else float(digits)
    )


def finite(value: t.Any) -> t.Any:
    """`value` with numbers JSON cannot hold made finite, meaning the same to the store's rules.

    jsonb has no NaN or infinity; an expiry or lifetime that cannot be true already means
    "expired" (or "the default lifetime"), and so do these.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return 0.0 if math.isnan(value) else math.copysign(1e300, value)
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
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
            set_json_loads(json_value, connection)
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
