"""The one clock a run reads for data time: windows, bookmarks' age, `plan`'s estimates.

It is the wall clock unless `TAP_WHOOP_NOW` pins an instant (ISO 8601), so that a run, `plan`
and `--test` can be replayed as of a given time and tests do not depend on today's date. Token
lifetimes and rate-limit windows are real durations and keep the wall clock.
"""

from __future__ import annotations

import datetime
import functools
import os

from tap_whoop.errors import ConfigError

NOW_ENV = "TAP_WHOOP_NOW"


def now() -> datetime.datetime:
    """The current instant, in UTC: pinned by `TAP_WHOOP_NOW`, else the wall clock."""
    pinned = os.environ.get(NOW_ENV)
    if pinned:
        return _pinned(pinned)
    return datetime.datetime.now(datetime.timezone.utc)


@functools.lru_cache(maxsize=4)
def _pinned(text: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{NOW_ENV}={text!r} is not an ISO 8601 date-time; unset it to use the real clock, "
            "or set it like 2026-11-20T12:00:00Z"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc)
