"""What a sync costs in requests: one model, from what each stream declares.

Each stream says what a window of days costs it (`WhoopStream.estimated_requests`): one request
for a profile or a body measurement, a page per 25 typical records for a collection, one per
cycle for an enabled per-cycle stream, one per sleep for enabled sleep signals, one per
configured id for a by-id stream. The run's
budget (`TapWhoop`), `--test` (`check`) and `plan` all count with the functions here.
"""

from __future__ import annotations

import typing as t

from tap_whoop.streams.base import CollectionStream
from tap_whoop.streams.endpoints import (
    BodyMeasurementStream,
    CycleChildStream,
    ProfileStream,
    SleepSignalsStream,
)

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from tap_whoop.streams.base import WhoopStream

#: Days of history a full sync without `start_date` is costed for (per year of history).
YEAR = 365


def window(streams: Iterable[WhoopStream], days: float, new_days: float | None = None) -> int:
    """Requests of one member's sync of `streams` over a window of `days`.

    With `new_days`, an incremental run's: of the window, only `new_days` are new since the
    last run (a stream that reads only what is new, the sleep signals, counts those).
    """
    if new_days is None:
        return sum(stream.estimated_requests(max(days, 0)) for stream in streams)
    return sum(
        stream.estimated_incremental_requests(max(days, 0), max(new_days, 0)) for stream in streams
    )


#: Streams that send one request per record of their parent collection, when enabled.
PER_RECORD = (CycleChildStream, SleepSignalsStream)


def per_record(streams: Iterable[t.Any]) -> list[WhoopStream]:
    """The enabled streams of `streams` that cost a request per record of their parent."""
    return [s for s in streams if isinstance(s, PER_RECORD) and s.enabled]


def collection(
    stream: CollectionStream,
    per_record: Iterable[WhoopStream],
    days: float,
    new_days: float | None = None,
) -> int:
    """Requests of one collection over `days`, with those of its per-record children.

    The per-cycle streams under `cycles`, the sleep signals under `sleep`; `new_days` as for
    `window`.
    """
    cost = stream.estimated_requests(max(days, 0))
    children = [s for s in per_record if isinstance(stream, s.parent_stream_type or ())]
    return cost + window(children, days, new_days)


def is_detail(stream: WhoopStream) -> bool:
    """A profile or body measurement: read once per `profile_interval_hours`, not per window."""
    return isinstance(stream, ProfileStream | BodyMeasurementStream)


def incremental(streams: Iterable[WhoopStream], lookback_days: int) -> tuple[int, int]:
    """One member's incremental run: (its windows' requests, the rest's).

    The windows are the collections and their per-record streams, over `lookback_days` plus the
    day since the last run (that day new); the rest are the profile, the body measurement and
    by-id records.
    """
    selected = list(streams)
    windowed = [s for s in selected if isinstance(s, (CollectionStream, *PER_RECORD))]
    rest = [s for s in selected if s not in windowed]
    days = lookback_days + 1
    return window(windowed, days, new_days=1), window(rest, days)
