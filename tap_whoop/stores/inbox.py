"""The webhook inbox and the record ledger: what WHOOP told us, and what the tap has emitted.

The receiver (`tap-whoop webhooks`) appends every delivery to a log (a trace id once); events
are pruned by age only. Each pipeline keeps its own position in the log in its Singer state
(`webhooks.drain`), so an event counts as passed on only once a target has committed the state
after it, and two pipelines each get every event. The ledger is what the tap has emitted per
member and stream: a full refresh compares it with what WHOOP still has, and a deleted sleep's
recovery finds its cycle in it.

`Inbox` is the interface, and this module what its callers exchange with it: it imports no
database library, so commands that never open the inbox (`--about`, `--discover`) do not load
one. `tap_whoop.stores.sql_inbox` is its one implementation, for SQLite and PostgreSQL.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

if t.TYPE_CHECKING:
    from collections.abc import Collection, Iterable

EVENT_KINDS = ("sleep", "workout", "recovery")
EVENT_TYPES = frozenset(
    f"{kind}.{action}" for kind in EVENT_KINDS for action in ("updated", "deleted")
)


@dataclass(frozen=True)
class Event:
    """A webhook WHOOP sent: `record_id` is the record's id (for recovery events, its sleep's)."""

    user_id: int
    type: str
    record_id: str
    trace_id: str
    received_at: float = 0.0
    seq: int = 0

    @property
    def kind(self) -> str:
        """`sleep`, `workout` or `recovery`: the stream the event is about."""
        return self.type.partition(".")[0]

    @property
    def deleted(self) -> bool:
        """Whether WHOOP says the record is gone."""
        return self.type.endswith(".deleted")


@dataclass(frozen=True)
class SetAside:
    """An event a pipeline gave up on after its tries, waiting for an operator."""

    event: Event
    reason: str
    tries: int
    at: float


@dataclass(frozen=True)
class LedgerRow:
    """A record the tap emitted: its key in its stream, its replication key, its links."""

    record_id: str
    key: str | None = None
    sleep_id: str | None = None
    cycle_id: int | None = None


class Inbox(t.Protocol):
    """Where webhook events wait for the tap, and the ledger of emitted records."""

    def exists(self) -> bool:
        """Whether anything was ever stored (reading a store that is not there creates it)."""

    def identity(self) -> str:
        """This inbox's id: a position in another inbox's log means nothing here."""

    def add(self, event: Event) -> bool:
        """Append `event` durably; False only for a delivery whose trace id is already in."""

    def after(self, position: int) -> list[Event]:
        """Every event after `position` in the log, oldest first."""

    def by_seqs(self, seqs: Collection[int]) -> list[Event]:
        """The events still in the log among `seqs`, oldest first."""

    def horizon(self) -> int:
        """The last position pruned: a state behind it has missed events."""

    def prune(self, keep_seconds: float) -> None:
        """Drop the events received more than `keep_seconds` ago."""

    def set_aside(self, event: Event, reason: str, tries: int) -> None:
        """Keep an event a pipeline gave up on, for `tap-whoop set-aside`."""

    def set_aside_events(self) -> list[SetAside]:
        """What was set aside, oldest first."""

    def release(self, seq: int, *, retry: bool) -> Event | None:
        """Take an event off the set-aside list: appended again (`retry`) or dropped."""

    def last_received_at(self) -> float | None:
        """When the newest event arrived (epoch seconds), if any ever did."""

    def remember(self, user_id: int, stream: str, rows: Iterable[LedgerRow]) -> None:
        """Note records the tap emitted (a record seen again is updated)."""

    def forget(self, user_id: int, stream: str, record_ids: Iterable[str]) -> None:
        """Drop records the tap emitted as deleted."""

    def known(self, user_id: int, stream: str) -> dict[str, str | None]:
        """Record id -> replication key of everything the tap emitted in the member's stream."""

    def cycle_of_sleep(self, user_id: int, sleep_id: str) -> int | None:
        """The cycle of a sleep the tap emitted (or whose recovery it emitted)."""

    def sleep_of_recovery(self, user_id: int, cycle_id: int) -> str | None:
        """The sleep the cycle's recovery was scored from, as the tap last emitted it."""


@dataclass(frozen=True)
class StoredEvent:
    """An event row as kept, drained or not, for copying the inbox elsewhere."""

    user_id: int
    type: str
    record_id: str
    trace_id: str
    received_at: float
    done_at: float | None


@dataclass(frozen=True)
class Contents:
    """Everything an inbox holds, oldest event first."""

    events: list[StoredEvent]
    ledger: dict[tuple[int, str], list[LedgerRow]]
