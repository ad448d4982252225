"""The app's sliding request window in PostgreSQL, timed by the database's clock."""

from __future__ import annotations

import logging
import time
import typing as t

if t.TYPE_CHECKING:
    pass

from tap_whoop.stores.postgres.database import LOCK_KEY, Connection, Database

logger = logging.getLogger("tap-whoop.store")

LATENCY_ALLOWANCE_SECONDS = 0.1
"""A window slot is held this much longer: requests reach WHOOP with uneven delays."""
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
                f"SELECT pg_advisory_xact_lock({LOCK_KEY})",
                (f".tap_whoop_rate_window.{self.app}",),
            )
            held = self.seconds + LATENCY_ALLOWANCE_SECONDS
            row = connection.execute(
                _TAKE_SLOT, {"app": self.app, "seconds": held, "limit": self.limit}
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])
