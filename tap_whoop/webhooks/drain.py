"""Webhook events into the streams: each run first passes on what WHOOP announced since its state.

The inbox is a log. Each pipeline's state keeps its position in it and the events it still owes
(`whoop_webhooks`), so an event counts as passed on only once a target has committed the state
after its records, and every pipeline (every state id) gets every event. A run that a target
failed is run again from the last committed state, and passes the same events on again.

An `updated` event fetches exactly that record (a recovery through its sleep's cycle) and emits
it into its collection, for targets to upsert; a `deleted` event emits a deletion record.
Neither moves a bookmark: only reading the collections does. An event that cannot be passed on
(a 4xx, an endpoint that keeps failing, an updated record WHOOP answers 404 for, a member no
longer in the config) stays owed and is tried on later runs, `MAX_EVENT_TRIES` in all, then set
aside for an operator (`tap-whoop set-aside`); the member is read in full meanwhile. It never
stops other events or other members.
"""

from __future__ import annotations

import datetime
import logging
import typing as t
from collections import defaultdict
from dataclasses import dataclass, field

from singer_sdk.exceptions import FatalAPIError

from tap_whoop.errors import MemberError
from tap_whoop.http import RETRIABLE
from tap_whoop.settings import configured_members, parse_time

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from tap_whoop.http import MemberClient
    from tap_whoop.progress import Progress
    from tap_whoop.run import Member, Run
    from tap_whoop.stores.inbox import Event, Inbox
    from tap_whoop.streams.base import CollectionStream

logger = logging.getLogger("tap-whoop")

WEBHOOKS_KEY = "whoop_webhooks"
"""The state's note of this pipeline's position in the inbox's log, and the events it owes."""
MAX_EVENT_TRIES = 5
"""Runs that try an event before it is set aside."""
CYCLES_BEFORE_THE_NIGHT = datetime.timedelta(days=1)
"""A new night's sleep opens a cycle and closes the one before: read from a day before it."""

#: What a failed look at one event's record is, for that event alone.
EVENT_FAILURES = (*RETRIABLE, FatalAPIError)


@dataclass
class Drained:
    """What a drain did, for the run's log line and for planning the rest of the run."""

    events: int = 0
    fetched: int = 0
    deleted: int = 0
    members: set[str] = field(default_factory=set)


@dataclass
class LogPlace:
    """A pipeline's place in one inbox's log, as its state keeps it."""

    inbox: str | None = None
    position: int = 0
    #: Events still owed: seq -> (tries so far, the member's WHOOP user id).
    owed: dict[int, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def from_state(cls, note: t.Any) -> LogPlace:
        """The note as an earlier run wrote it; anything else reads the whole log again."""
        if not isinstance(note, dict):
            return cls()
        inbox, position, owed = note.get("inbox"), note.get("position"), note.get("owed")
        if not isinstance(inbox, str) or not _whole(position) or not isinstance(owed, list):
            logger.warning(
                "state: %s is damaged; every event still in the inbox is passed on again",
                WEBHOOKS_KEY,
            )
            return cls()
        entries = [e for e in owed if isinstance(e, list) and len(e) == 3 and all(map(_whole, e))]
        owing = {seq: (tries, user_id) for seq, tries, user_id in entries}
        return cls(inbox, t.cast("int", position), owing)

    def to_state(self) -> dict[str, t.Any]:
        """The note for the state."""
        owed = [[seq, tries, user_id] for seq, (tries, user_id) in sorted(self.owed.items())]
        return {"inbox": self.inbox, "position": self.position, "owed": owed}


def _whole(value: t.Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def drain_inbox(
    progress: Progress,
    streams: Mapping[str, CollectionStream],
    notes: dict[str, t.Any],
    write_state: Callable[[], None],
) -> Drained:
    """Emit what the events after this pipeline's position announce, and move the position."""
    run = progress.run
    drained = Drained()
    if not run.inbox.exists():
        return drained
    inbox = run.inbox
    identity = inbox.identity()
    place = LogPlace.from_state(notes.get(WEBHOOKS_KEY))
    if place.inbox != identity:
        place = LogPlace(identity)
    inbox.prune(run.webhook_retention)
    members = {user_id: key for key, user_id in run.members.known_user_ids().items()}
    if inbox.horizon() > place.position:
        _reconcile_everyone(progress, notes.get(WEBHOOKS_KEY) is not None)
    owed_events = inbox.by_seqs(place.owed)
    for seq in set(place.owed) - {event.seq for event in owed_events}:
        if (key := members.get(place.owed[seq][1])) is not None:
            progress.must_reconcile.add(key)  # pruned before it could be passed on
    log = inbox.after(place.position)
    unverified = run.members.unverified_user_ids()  # read once their profile shows them theirs
    owed: dict[int, tuple[int, int]] = {
        event.seq: (place.owed.get(event.seq, (0, event.user_id))[0], event.user_id)
        for event in [*owed_events, *log]
        if event.user_id in unverified
    }
    events = [event for event in [*owed_events, *log] if event.user_id in members]
    orphans, former = _of_no_configured_member(run, [*owed_events, *log], {*members, *unverified})
    owed.update(_retry_or_set_aside(inbox, orphans, former, place.owed))
    by_member: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        by_member[event.user_id].append(event)
    for user_id, member_events in by_member.items():
        member = run.members.by_key[members[user_id]]
        tries_so_far = {e.seq: place.owed.get(e.seq, (0, user_id))[0] for e in member_events}
        if member.failure:
            owed.update({seq: (tries, user_id) for seq, tries in tries_so_far.items()})
            continue
        member.user_id = user_id
        drain = _MemberDrain(progress, streams, member, user_id, drained)
        try:
            drain.apply(member_events)
        except MemberError as exc:
            run.members.fail(member, drain.stream, exc)
            owed.update({seq: (tries, user_id) for seq, tries in tries_so_far.items()})
            continue
        for event, reason in drain.owed:
            tries = tries_so_far[event.seq] + 1
            if tries < MAX_EVENT_TRIES:
                owed[event.seq] = (tries, user_id)
                continue
            inbox.set_aside(event, reason, tries)
            logger.warning(
                "webhooks: member %r: %s %s set aside after %d tries (%s); see "
                "`tap-whoop set-aside`",
                member.key,
                event.type,
                event.record_id,
                tries,
                reason,
            )
        drained.events += len(drain.done)
    place.owed = owed
    place.position = max([place.position, inbox.horizon(), *(e.seq for e in log)])
    if WEBHOOKS_KEY in notes or place.position or place.owed:
        notes[WEBHOOKS_KEY] = place.to_state()  # (an empty log leaves the state as it came)
    if events or orphans:
        write_state()  # the records passed on, then the position after them
    if events:
        logger.info(
            "webhooks: %d event(s) of %d member(s) passed on: %d record(s) fetched, %d deleted%s",
            drained.events,
            len(drained.members),
            drained.fetched,
            drained.deleted,
            f"; {len(owed)} owed, tried again next run" if owed else "",
        )
    return drained


def _of_no_configured_member(
    run: Run, events: list[Event], ours: set[int]
) -> tuple[list[Event], dict[int, str]]:
    """Events of a WHOOP user whom no configured member is, in any shard: a member removed.

    Events of a member another shard syncs are that shard's pipeline's, and this one passes
    them silently. The token store knows every configured member's user id, once any run read
    their profile; its whole document is read only when some event is of no member of ours.
    Also returns the store's key of each such user, to name them.
    """
    strangers = [event for event in events if event.user_id not in ours]
    if not strangers:
        return [], {}
    stored = run.token_store.read().get("members", {})
    keys = {key for key, _ in configured_members(run.config)}
    user_ids = {
        key: user_id
        for key, entry in stored.items()
        if isinstance(user_id := (entry or {}).get("user_id"), int)
    }
    configured = {user_id for key, user_id in user_ids.items() if key in keys}
    former = {user_id: key for key, user_id in sorted(user_ids.items()) if key not in keys}
    return [event for event in strangers if event.user_id not in configured], former


def _retry_or_set_aside(
    inbox: Inbox,
    orphans: list[Event],
    former: Mapping[int, str],
    owed_before: Mapping[int, tuple[int, int]],
) -> dict[int, tuple[int, int]]:
    """Owe an orphan event one more try, or set it aside after its last; one warning per user.

    The member may be back in `users` by the next run (a config edited by mistake); if not,
    an operator decides what becomes of what WHOOP sent for them.
    """
    owed: dict[int, tuple[int, int]] = {}
    by_user: dict[int, list[Event]] = defaultdict(list)
    for event in orphans:
        by_user[event.user_id].append(event)
    for user_id, events in sorted(by_user.items()):
        key = former.get(user_id)
        who = f"member {key!r} in the token store" if key else "no member in the token store"
        why = f"no configured member is WHOOP user {user_id} ({who}, not in `users`)"
        set_aside: list[int] = []
        most = 0
        for event in events:
            tries = owed_before.get(event.seq, (0, user_id))[0] + 1
            if tries < MAX_EVENT_TRIES:
                owed[event.seq] = (tries, user_id)
                most = max(most, tries)
            else:
                inbox.set_aside(event, why, tries)
                set_aside.append(event.seq)
        if set_aside:
            seqs = ", ".join(map(str, set_aside[:10])) + (", ..." if len(set_aside) > 10 else "")
            logger.warning(
                "webhooks: %d event(s) set aside after %d tries (seq %s): %s; add the member "
                "back to `users`, then `tap-whoop set-aside --retry SEQ`, or forget them with "
                "`tap-whoop set-aside --drop SEQ`",
                len(set_aside),
                MAX_EVENT_TRIES,
                seqs,
                why,
            )
        if waiting := len(events) - len(set_aside):
            logger.warning(
                "webhooks: %d event(s) owed, try %d of %d: %s; add the member back to `users` "
                "to pass them on%s; after %d tries they are set aside (`tap-whoop set-aside`)",
                waiting,
                most,
                MAX_EVENT_TRIES,
                why,
                f", or if it left for good `tap-whoop revoke --member {key}` ends its deliveries"
                if key
                else "",
                MAX_EVENT_TRIES,
            )
    return owed


def _reconcile_everyone(progress: Progress, had_a_position: bool) -> None:
    """Events this pipeline never read were pruned: every member is read in full."""
    progress.must_reconcile.update(member.key for member in progress.run.members)
    if had_a_position:
        logger.warning(
            "webhooks: events after this pipeline's last run were pruned (older than "
            "webhook_retention_days); every member is read in full this run instead"
        )


class _MemberDrain:
    """One member's events, the latest per record, as requests and records."""

    def __init__(
        self,
        progress: Progress,
        streams: Mapping[str, CollectionStream],
        member: Member,
        user_id: int,
        drained: Drained,
    ) -> None:
        self.progress = progress
        self.run = progress.run
        self.streams = streams
        self.member = member
        self.user_id = user_id
        self.drained = drained
        self.done: list[int] = []
        #: Events still owed, and why.
        self.owed: list[tuple[Event, str]] = []
        self.stream = "sleep"
        self._client: MemberClient | None = None

    @property
    def client(self) -> MemberClient:
        if self._client is None:
            self._client = self.run.member_client(self.member.key)
        return self._client

    def apply(self, events: list[Event]) -> None:
        """Each record's latest event; several notices for a record cost one request."""
        latest: dict[tuple[str, str], Event] = {}
        of_record: dict[tuple[str, str], list[Event]] = defaultdict(list)
        for event in sorted(events, key=lambda event: event.seq):
            latest[(event.kind, event.record_id)] = event
            of_record[(event.kind, event.record_id)].append(event)
        nights: list[datetime.datetime] = []
        # a sleep first: its recovery is then found through the cycle the sleep names
        for key, event in sorted(latest.items(), key=lambda item: item[1].kind == "recovery"):
            self.stream = event.kind
            try:
                if event.kind == "recovery":
                    owes = self._recovery(event)
                else:
                    owes, night = self._activity(event)
                    if night is not None:
                        nights.append(night)
            except MemberError as exc:
                if exc.whole_member:
                    raise
                owes = str(exc)
            except EVENT_FAILURES as exc:
                owes = str(exc)
            if owes is None:
                self.done += [e.seq for e in of_record[key]]
                self.drained.members.add(self.member.key)
            else:
                self.owed += [(e, owes) for e in of_record[key]]
        if nights:
            self._refresh_cycles(min(nights) - CYCLES_BEFORE_THE_NIGHT)

    def _activity(self, event: Event) -> tuple[str | None, datetime.datetime | None]:
        """A sleep or workout: what is owed (None: nothing), and a night whose cycle is new."""
        stream = self.streams[event.kind]
        if event.deleted:
            self._delete(stream, event.record_id)
            return None, None
        record = self.client.find(stream.by_id_path.format(id=event.record_id), stream.scope)
        if record is None:
            self.progress.must_reconcile.add(self.member.key)
            return (
                f"WHOOP announced an update of {event.kind} {event.record_id} but answers 404 for "
                "it; not taken for a deletion: the member's collections are read in full",
                None,
            )
        if not self._emit(stream, record) or event.kind != "sleep" or record.get("nap"):
            return None, None
        if str(record.get("cycle_id")) in self.run.inbox.known(self.user_id, "cycles"):
            return None, None
        return None, parse_time(record["start"])

    def _recovery(self, event: Event) -> str | None:
        """A recovery event names its sleep; the recovery is found by the sleep's cycle."""
        stream = self.streams["recovery"]
        sleep_id = event.record_id
        cycle_id = self.run.inbox.cycle_of_sleep(self.user_id, sleep_id)
        if cycle_id is None:
            sleep_stream = self.streams["sleep"]
            sleep = self.client.find(
                sleep_stream.by_id_path.format(id=sleep_id), sleep_stream.scope
            )
            if isinstance(sleep, dict) and isinstance(sleep.get("cycle_id"), int):
                cycle_id = sleep["cycle_id"]
                self._emit(sleep_stream, sleep)
        if cycle_id is None:
            logger.warning(
                "webhooks: member %r: the recovery of sleep %s changed, but the sleep is gone "
                "and no run saw it; the next reconciliation of recovery finds it",
                self.member.key,
                sleep_id,
            )
            return None
        scored_from = self.run.inbox.sleep_of_recovery(self.user_id, cycle_id)
        if event.deleted and scored_from == sleep_id:
            self._delete(stream, str(cycle_id))
            return None
        if event.deleted and scored_from is not None:
            logger.info(
                "webhooks: member %r: recovery of sleep %s deleted; cycle %s's recovery is "
                "scored from sleep %s now, and is kept",
                self.member.key,
                sleep_id,
                cycle_id,
                scored_from,
            )
            return None
        record = self.client.find(stream.by_id_path.format(id=cycle_id), stream.scope)
        if record is None:
            if event.deleted:
                self._delete(stream, str(cycle_id))
            return None  # an update: not scored from this sleep (yet), nothing to pass on
        self._emit(stream, record)
        return None

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
        try:
            page = self.client.get(
                stream.path,
                stream.scope,
                {
                    "limit": 25,
                    "start": since.astimezone(datetime.timezone.utc).strftime(
                        "%Y-%m-%dT%H:%M:%S.000Z"
                    ),
                },
            )
        except EVENT_FAILURES as exc:
            logger.warning(
                "webhooks: member %r: the cycles after a new night could not be read (%s); the "
                "member's next read of cycles has them",
                self.member.key,
                exc,
            )
            self.progress.must_reconcile.add(self.member.key)
            return
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
        if not self.progress.deleted_in_this_run(self.user_id, stream.name, record_id):
            stream.emit_directly(stream.deletion_record(self.user_id, record_id))
            self.progress.note_deleted(self.user_id, stream.name, [record_id])
        stream.forget_in_window(self.user_id, record_id)
        self.drained.deleted += 1
