"""Webhook events into the streams: each run first passes on what WHOOP announced.

An `updated` event fetches exactly that record (a recovery through its sleep's cycle) and
emits it into its collection, so that targets upsert it; a `deleted` event emits a deletion
record. Neither moves a bookmark: only reading the collections does. Events are marked done
once their records and a state after them are written; killed before, they are drained again.
"""

from __future__ import annotations

import datetime
import logging
import typing as t
from collections import defaultdict
from dataclasses import dataclass, field

from tap_whoop.errors import MemberError
from tap_whoop.settings import parse_time

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from tap_whoop.client import CollectionStream
    from tap_whoop.http import MemberClient
    from tap_whoop.inbox import Event
    from tap_whoop.run import Member, Run

logger = logging.getLogger("tap-whoop")

CYCLES_BEFORE_THE_NIGHT = datetime.timedelta(days=1)
"""A new night's sleep opens a cycle and closes the one before: read from a day before it."""


@dataclass
class Drained:
    """What a drain did, for the run's log line and for planning the rest of the run."""

    events: int = 0
    fetched: int = 0
    deleted: int = 0
    members: set[str] = field(default_factory=set)


def drain_inbox(
    run: Run, streams: Mapping[str, CollectionStream], write_state: Callable[[], None]
) -> Drained:
    """Emit the records the pending events of this run's members announce."""
    drained = Drained()
    if not run.inbox.exists():
        return drained
    user_ids = {user_id: key for key, user_id in run.members.known_user_ids().items()}
    events = run.inbox.pending(user_ids)
    if not events:
        return drained
    by_member: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        by_member[event.user_id].append(event)
    done: list[int] = []
    for user_id, member_events in by_member.items():
        member = run.members.by_key[user_ids[user_id]]
        if member.failure:
            continue
        member.user_id = user_id
        drain = _MemberDrain(run, streams, member, user_id, drained)
        try:
            drain.apply(member_events)
        except MemberError as exc:
            run.members.fail(member, drain.stream, exc)
        done += drain.done
    write_state()
    run.inbox.mark_done(done)
    drained.events = len(done)
    logger.info(
        "webhooks: %d event(s) of %d member(s) passed on: %d record(s) fetched, %d deleted",
        drained.events,
        len(drained.members),
        drained.fetched,
        drained.deleted,
    )
    return drained


class _MemberDrain:
    """One member's events, latest first per record, as requests and records."""

    def __init__(
        self,
        run: Run,
        streams: Mapping[str, CollectionStream],
        member: Member,
        user_id: int,
        drained: Drained,
    ) -> None:
        self.run = run
        self.streams = streams
        self.member = member
        self.user_id = user_id
        self.drained = drained
        self.done: list[int] = []
        self.stream = "sleep"
        self._client: MemberClient | None = None

    @property
    def client(self) -> MemberClient:
        if self._client is None:
            self._client = self.run.member_client(self.member.key)
        return self._client

    def apply(self, events: list[Event]) -> None:
        latest: dict[tuple[str, str], Event] = {}
        seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
        for event in events:
            latest[(event.kind, event.record_id)] = event
            seqs[(event.kind, event.record_id)].append(event.seq)
        nights: list[datetime.datetime] = []
        # a sleep first: its recovery is then found through the cycle the sleep names
        for key, event in sorted(latest.items(), key=lambda item: item[1].kind == "recovery"):
            self.stream = event.kind
            if event.kind == "recovery":
                self._recovery(event)
            elif night := self._activity(event):
                nights.append(night)
            self.done += seqs[key]
            self.drained.members.add(self.member.key)
        if nights:
            self._refresh_cycles(min(nights) - CYCLES_BEFORE_THE_NIGHT)

    def _activity(self, event: Event) -> datetime.datetime | None:
        """A sleep or workout; the start of a night's sleep whose cycle no run has emitted."""
        stream = self.streams[event.kind]
        record = None
        if not event.deleted:
            record = self.client.find(stream.by_id_path.format(id=event.record_id), stream.scope)
        if record is None:
            self._delete(stream, event.record_id)
            return None
        if not self._emit(stream, record) or event.kind != "sleep" or record.get("nap"):
            return None
        if str(record.get("cycle_id")) in self.run.inbox.known(self.user_id, "cycles"):
            return None
        return parse_time(record["start"])

    def _recovery(self, event: Event) -> None:
        """A recovery event names its sleep; the recovery is found by the sleep's cycle."""
        stream = self.streams["recovery"]
        cycle_id = self.run.inbox.cycle_of_sleep(self.user_id, event.record_id)
        if cycle_id is None:
            sleep_stream = self.streams["sleep"]
            path = sleep_stream.by_id_path.format(id=event.record_id)
            sleep = self.client.find(path, sleep_stream.scope)
            if isinstance(sleep, dict) and isinstance(sleep.get("cycle_id"), int):
                cycle_id = sleep["cycle_id"]
                self._emit(sleep_stream, sleep)
        if cycle_id is None:
            logger.warning(
                "webhooks: member %r: the recovery of sleep %s changed, but the sleep is gone "
                "and no run saw it; the next reconciliation of recovery finds it",
                self.member.key,
                event.record_id,
            )
            return
        record = None
        if not event.deleted:
            record = self.client.find(stream.by_id_path.format(id=cycle_id), stream.scope)
            if record is None:
                return  # not scored from this sleep (yet): nothing to pass on
        if record is None:
            self._delete(stream, str(cycle_id))
        else:
            self._emit(stream, record)

    def _refresh_cycles(self, since: datetime.datetime) -> None:
        """A night's sleep closes a cycle and opens the next: the recent cycles are read again.

        Once per new cycle: WHOOP sends no cycle events, and a cycle's strain, which every
        workout moves, is final when the cycle closes (read here, the morning after) or is
        read at the member's reconciliation, whichever comes first.
        """
        stream = self.streams["cycles"]
        if not stream.selected:
            return
        self.stream = stream.name
        page = self.client.get(
            stream.path,
            stream.scope,
            {
                "limit": 25,
                "start": since.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            },
        )
        for record in (page or {}).get("records") or []:
            self._emit(stream, record)

    def _emit(self, stream: CollectionStream, record: t.Any) -> bool:
        """Emit a fetched record; False (and a warning) for one that fails the stream's checks."""
        context = {"user_id": self.user_id}
        try:
            stream.check_record(record, context)
        except Exception as exc:  # a bad record waits for the collection's next read
            logger.warning("webhooks: member %r: %s: %s", self.member.key, stream.name, exc)
            return False
        processed = stream.filled(record, context)
        stream.emit_directly(processed)
        self.run.inbox.remember(self.user_id, stream.name, [stream.ledger_row(processed)])
        self.drained.fetched += 1
        return True

    def _delete(self, stream: CollectionStream, record_id: str) -> None:
        stream.emit_directly(stream.deletion_record(self.user_id, record_id))
        self.run.inbox.forget(self.user_id, stream.name, [record_id])
        stream.forget_in_window(self.user_id, record_id)
        self.drained.deleted += 1
