"""The one place a store backend is chosen: files beside the token store, or PostgreSQL.

Both give the same three things (members' tokens, the webhook inbox and ledger, the app's
request window), so a run, the receiver and `store copy` never ask which backend they have.
"""

from __future__ import annotations

import typing as t
from functools import cached_property
from pathlib import Path

from tap_whoop.errors import ConfigError
from tap_whoop.stores.file import TokenStore, default_token_store_path

if t.TYPE_CHECKING:
    from tap_whoop.stores.inbox import Inbox
    from tap_whoop.stores.postgres import Database, PostgresWindow
    from tap_whoop.stores.tokens import TokenStorage

INBOX_FILE = "inbox.sqlite"
"""The inbox beside the default token store file (`tokens.json`)."""


def inbox_file_name(token_store: Path) -> str:
    """`inbox.sqlite` beside `tokens.json`; `<name>.inbox.sqlite` beside any other store file.

    Two configs whose token stores share a folder keep their events apart.
    """
    return INBOX_FILE if token_store.name == "tokens.json" else f"{token_store.name}.inbox.sqlite"


class Stores(t.Protocol):
    """What outlives a run, wherever it is kept."""

    @property
    def tokens(self) -> TokenStorage:
        """Every member's rotated tokens."""

    @property
    def inbox_where(self) -> str:
        """Where the inbox and ledger are, as messages name it (no password)."""

    def inbox(self, *, timeout: float | None = None) -> Inbox:
        """The webhook inbox and ledger; with `timeout`, a write that must wait fails after it."""

    def rate_limit_file(self, app: str) -> Path | None:
        """The file the app's request window is kept in, when it is a file."""

    def rate_window(self, app: str, ceiling: int) -> PostgresWindow | None:
        """The app's request window kept in a database, when it is one."""


class FileStores:
    """Files in the token store's private directory (the default)."""

    def __init__(self, token_store_path: str | None) -> None:
        self.token_store = TokenStore(token_store_path or default_token_store_path())

    @property
    def tokens(self) -> TokenStorage:
        """The token store file."""
        return self.token_store

    @property
    def inbox_path(self) -> Path:
        """The token store's own webhook inbox, beside it: one inbox per token store."""
        return self.token_store.target.parent / inbox_file_name(self.token_store.target)

    @property
    def inbox_where(self) -> str:
        """The inbox file's path."""
        return str(self.inbox_path)

    def inbox(self, *, timeout: float | None = None) -> Inbox:
        """The inbox file, made (with its directory) on first write."""
        from tap_whoop.stores.sql_inbox import SqliteInbox

        path = self.token_store.beside(self.inbox_path.name)
        return SqliteInbox(path) if timeout is None else SqliteInbox(path, busy_timeout=timeout)

    def rate_limit_file(self, app: str) -> Path | None:
        """`rate-limit-<app>.sqlite` beside the token store."""
        return self.token_store.beside(f"rate-limit-{app}.sqlite")

    def rate_window(self, app: str, ceiling: int) -> PostgresWindow | None:
        """None: the window is a file."""
        return None


class PostgresStores:
    """Tables in the PostgreSQL schema `store_url` names, shared by every machine."""

    def __init__(self, url: str, timeout: float | None) -> None:
        try:
            from tap_whoop.stores.postgres import Database  # psycopg loads only when used
        except ImportError as exc:
            raise ConfigError(
                f"store_url needs the PostgreSQL driver psycopg, which cannot be loaded ({exc}); "
                "reinstall tap-whoop with its dependencies (`pip install tap-whoop`, or "
                "`meltano install --clean tap-whoop`)"
            ) from None
        self.database: Database = Database(url, timeout=timeout)

    @cached_property
    def tokens(self) -> TokenStorage:
        """The `tap_whoop_tokens` table."""
        from tap_whoop.stores.postgres import PostgresTokenStore

        return PostgresTokenStore(self.database)

    @property
    def inbox_where(self) -> str:
        """The database and schema, without the password."""
        return self.database.where

    def inbox(self, *, timeout: float | None = None) -> Inbox:
        """The inbox tables; with `timeout`, on a connection of its own that fails fast."""
        from tap_whoop.stores.postgres import Database, PostgresInbox

        if timeout is None:
            return PostgresInbox(self.database)
        return PostgresInbox(
            Database(self.database.url, timeout=timeout, reconnect_seconds=timeout)
        )

    def rate_limit_file(self, app: str) -> Path | None:
        """None: the window is a table."""
        return None

    def rate_window(self, app: str, ceiling: int) -> PostgresWindow | None:
        """The `tap_whoop_rate_window` table, timed by the database's clock."""
        from tap_whoop.stores.postgres import PostgresWindow

        return PostgresWindow(self.database, app, ceiling)


def open_stores(
    store_url: str | None, token_store_path: str | None, timeout: float | None
) -> FileStores | PostgresStores:
    """PostgreSQL when `store_url` is set, else files beside `token_store_path`."""
    if store_url:
        return PostgresStores(store_url, timeout)
    return FileStores(token_store_path)
