"""PostgreSQL as the store (the `store_url` setting): tokens, webhook inbox, rate-limit window.

One database schema (the one `store_url`'s search_path selects; `public` by default) is one store,
as one directory is for the files, shared by every tap process on every machine. This package's
face: `database` (connections, migrations), `tokens`, `inbox`, `window`, and `copy` (`tap-whoop
store copy`).
"""

from tap_whoop.stores.postgres.copy import CopyReport, copy_file_store
from tap_whoop.stores.postgres.database import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Database,
    migrate,
    redacted,
)
from tap_whoop.stores.postgres.inbox import PostgresInbox
from tap_whoop.stores.postgres.tokens import PostgresTokenStore
from tap_whoop.stores.postgres.window import PostgresWindow

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "CopyReport",
    "Database",
    "PostgresInbox",
    "PostgresTokenStore",
    "PostgresWindow",
    "copy_file_store",
    "migrate",
    "redacted",
]
