"""The WHOOP v2 endpoints as Singer streams, declared as data.

`profile` is the parent of everything else: a member's profile names the WHOOP user id that
partitions the state of every other stream, and that `body_measurement` needs as its key.
"""

from __future__ import annotations

import datetime
import math
import typing as t

from tap_whoop import clock
from tap_whoop.errors import MemberError
from tap_whoop.settings import parse_time
from tap_whoop.stores.inbox import LedgerRow
from tap_whoop.streams import schemas
from tap_whoop.streams.base import (
    CollectionStream,
    WhoopStream,
    bad_data,
    is_final,
    now_iso,
)

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context

    from tap_whoop.progress import Progress
    from tap_whoop.run import Run


class ProfileStream(WhoopStream):
    """The member's basic profile; one partition per configured member."""

    name = "profile"
    path = "/v2/user/profile/basic"
    primary_keys = ("user_id",)
    schema = schemas.PROFILE
    scope = "read:profile"

    def __init__(self, tap: Tap, run: Run, progress: Progress) -> None:
        super().__init__(tap, run, progress)
        self._stored_user_ids: dict[str, int] | None = None

    @property
    def partitions(self) -> list[dict[str, t.Any]]:
        """The members this pass syncs, by config key.

        The first pass: every configured member but those resting between reconciliations;
        the second: those with history still to read.
        """
        if self.progress.phase == "backfill":
            keys = [key for key in self.progress.backfilling if key not in self.progress.deferred]
        else:
            keys = [
                member.key for member in self.run.members if member.key not in self.progress.resting
            ]
        return [{"member": key} for key in keys]

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """The member's profile, when due; the member's other streams run either way.

        A profile is re-read once per `profile_interval_hours`; between reads no profile record
        is written, and the other streams start from the user id the store holds. A member
        whose incremental sync the run's budget cannot hold is left for the next run
        (`Progress.deferred`). Nothing when every member rests (the SDK's one empty context).
        """
        if not context:
            return
        member = self.run.members.for_context(context)
        state = self.get_context_state(context)
        if self._stored_user_ids is None:  # read once: the store holds every member
            self._stored_user_ids = self.run.members.known_user_ids()
        user_id = member.user_id or self._stored_user_ids.get(member.key)
        due = user_id is None or details_due(self.progress, member.key, state)
        cost = self.progress.incremental_cost + (self.progress.details_cost if due else 0)
        if self.progress.phase == "incremental" and (limit := self.progress.admits(cost)):
            self.progress.deferred[member.key] = limit
            return
        if user_id is not None and not due:
            self.sync_member_streams(self.get_child_context({"user_id": user_id}, context))
            return
        for record in super().get_records(context):
            if problem := self.run.members.identity_problem(member.key, record["user_id"]):
                self.run.members.fail(member, self.name, MemberError(problem))
                return
            yield record
        if not member.skips(self.name):
            state["read_at"] = now_iso()
        self.progress.details_read.add(member.key)

    def sync_member_streams(self, child_context: dict[str, t.Any]) -> None:
        """Sync the member's other streams without a profile record, as the SDK does after one."""
        for child in self.child_streams:
            if child.selected or child.has_selected_descendents:
                child.sync(context=child_context)

    def get_child_context(self, record: dict[str, t.Any], context: Context | None) -> dict:
        """Hand the member's WHOOP user id to every other stream."""
        assert context is not None
        self.run.members.identify(context["member"], record["user_id"])
        return {"user_id": record["user_id"]}


class MemberStream(WhoopStream):
    """An endpoint read once per member (after the member's profile)."""

    parent_stream_type = ProfileStream


class BodyMeasurementStream(MemberStream):
    """Height, weight, max heart rate; WHOOP omits the user id, the profile supplies it."""

    name = "body_measurement"
    path = "/v2/user/measurement/body"
    primary_keys = ("user_id",)
    schema = schemas.BODY_MEASUREMENT
    scope = "read:body_measurement"

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Read once per `profile_interval_hours`, like the profile."""
        member = self.run.members.for_context(context)
        state = self.get_context_state(context)
        if member.key in self.progress.details_read or not details_due(self.progress, None, state):
            return
        yield from super().get_records(context)
        if not member.skips(self.name):
            state["read_at"] = now_iso()


def details_due(progress: Progress, key: str | None, state: dict[str, t.Any]) -> bool:
    """Whether a member's profile or body measurement is to be read in this run."""
    if key is not None and key in progress.details_read:
        return False
    try:
        read_at = parse_time(str(state["read_at"]))
    except (KeyError, ValueError):
        return True
    elapsed = clock.now() - read_at
    return elapsed.total_seconds() >= progress.run.profile_interval


class CyclesStream(CollectionStream, MemberStream):
    """Physiological cycles (one per day); the current one has no `end`."""

    name = "cycles"
    path = "/v2/cycle"
    by_id_path = "/v2/cycle/{id}"
    primary_keys = ("id",)
    schema = schemas.CYCLE
    scope = "read:cycles"

    def get_child_context(self, record: dict[str, t.Any], context: Context | None) -> dict:
        """The drill-downs per cycle run as the same member."""
        assert context is not None
        return {"user_id": context["user_id"], "cycle_id": record["id"]}

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """The member's cycles; with per-cycle streams, what they will cost and what they did.

        Their cost is known only as cycles arrive: before, it is estimated from the window
        (about one cycle a day); after, it is counted.
        """
        per_cycle = [t.cast("WhoopStream", child) for child in self.child_streams if child.selected]
        if not per_cycle or not self.reads_in_this_pass(context):
            yield from super().get_records(context)
            return
        member = self.run.members.for_context(context)
        names = " and ".join(child.name for child in per_cycle)
        days = self.window_days(context)
        if days is None:
            estimate = "one per day of the member's history, on this first full sync"
        else:
            requests = sum(child.estimated_requests(days) for child in per_cycle)
            estimate = f"about {requests} for the {days:.0f} days since the window's start"
        self.logger.info(
            "member %r: %s add one request per cycle synced each: %s",
            member.key,
            names,
            estimate,
        )
        cycles = 0
        for record in super().get_records(context):
            cycles += 1
            yield record
        stopped = [child.name for child in per_cycle if member.skips(child.name)]
        self.logger.info(
            "member %r: %s asked WHOOP about %d cycle(s): %s%d request(s)%s",
            member.key,
            names,
            cycles,
            "at most " if stopped else "",
            len(per_cycle) * cycles,
            f" ({', '.join(stopped)} stopped early)" if stopped else "",
        )


class RecoveryStream(CollectionStream, MemberStream):
    """Recoveries, keyed by cycle.

    A recovery has no `start`; its bookmark is `created_at`, which WHOOP sets once, when the
    sleep the recovery is scored from has ended (unlike `updated_at`, which moves on every
    re-score). WHOOP filters this collection on the sleep's start, which precedes `created_at`
    by up to about a day, so each run's window opens one extra day earlier (`filter_lag`).
    """

    name = "recovery"
    path = "/v2/recovery"
    by_id_path = "/v2/cycle/{id}/recovery"
    primary_keys = ("cycle_id",)
    replication_key = "created_at"
    filter_lag = datetime.timedelta(days=1)
    schema = schemas.RECOVERY
    scope = "read:recovery"

    def ledger_row(self, record: dict[str, t.Any]) -> LedgerRow:
        """A recovery is found again by its sleep: recovery events name the sleep."""
        sleep_id = record.get("sleep_id")
        return LedgerRow(
            str(record["cycle_id"]), record.get("created_at"), sleep_id, record["cycle_id"]
        )


class SleepStream(CollectionStream, MemberStream):
    """Sleeps and naps."""

    name = "sleep"
    path = "/v2/activity/sleep"
    by_id_path = "/v2/activity/sleep/{id}"
    primary_keys = ("id",)
    max_records_per_day = 12  # naps
    typical_records_per_day = 1.25  # the night's sleep, and a nap now and then
    schema = schemas.SLEEP
    scope = "read:sleep"

    def ledger_row(self, record: dict[str, t.Any]) -> LedgerRow:
        """A sleep's cycle is kept, for the recovery of a sleep WHOOP deletes."""
        return LedgerRow(str(record["id"]), record.get("start"), cycle_id=record.get("cycle_id"))

    def get_child_context(self, record: dict[str, t.Any], context: Context | None) -> dict:
        """The sleep's signals are read as the same member, for this version of the sleep."""
        assert context is not None
        return signals_context(record, context["user_id"])

    def emit_directly(self, record: dict[str, t.Any]) -> None:
        """A sleep emitted outside the pages (a webhook's, a reconciliation's) brings its signals.

        A deletion record takes the sleep's signals with it; a changed final sleep has them
        read again. The SDK's children only follow the pages.
        """
        super().emit_directly(record)
        for child in self.child_streams:
            if isinstance(child, SleepSignalsStream) and child.selected and child.enabled:
                child.follow(record)


class WorkoutStream(CollectionStream, MemberStream):
    """Workouts, including activities entered by hand days later."""

    name = "workout"
    path = "/v2/activity/workout"
    by_id_path = "/v2/activity/workout/{id}"
    primary_keys = ("id",)
    max_records_per_day = 30
    schema = schemas.WORKOUT
    scope = "read:workout"


class CycleChildStream(WhoopStream):
    """One request per cycle synced: 25 times the requests of the collection, so opt-in.

    Selecting one is not enough (Meltano's `*.*` selects everything): `per_cycle_streams` must
    be on too, or the tap skips it (see `TapWhoop.sync_members`).
    """

    parent_stream_type = CyclesStream
    state_partitioning_keys = ("user_id",)
    selected_by_default = False
    missing_is_empty = True

    @property
    def enabled(self) -> bool:
        """Whether `per_cycle_streams` asks for the per-cycle streams."""
        return self.settings.per_cycle_streams

    @property
    def requests_per_record(self) -> int:
        """One request per cycle, when `per_cycle_streams` is on."""
        return 1 if self.enabled else 0

    def estimated_requests(self, days: float) -> int:
        """One per cycle, about one a day (the current one included); none when not enabled."""
        return math.ceil(days) + 1 if self.enabled else 0

    def probe_context(
        self, context: Context, found: t.Mapping[str, dict[str, t.Any] | None]
    ) -> Context | str:
        """The member's latest cycle, as `cycles` probed it."""
        if not self.enabled:
            return "per_cycle_streams is off"
        cycle = found.get("cycles")
        return {**context, "cycle_id": cycle["id"]} if cycle else "no cycle yet"


class RecoveryForCycleStream(CycleChildStream):
    """The recovery of each cycle synced; none yet is quietly nothing."""

    name = "recovery_for_cycle"
    path = "/v2/cycle/{cycle_id}/recovery"
    primary_keys = ("cycle_id",)
    schema = schemas.RECOVERY
    scope = "read:recovery"


class SleepForCycleStream(CycleChildStream):
    """The sleep of each cycle synced; none is quietly nothing."""

    name = "sleep_for_cycle"
    path = "/v2/cycle/{cycle_id}/sleep"
    primary_keys = ("id",)
    schema = schemas.SLEEP
    scope = "read:sleep"


def signals_context(sleep: dict[str, t.Any], user_id: int) -> dict[str, t.Any]:
    """What `sleep_signals` needs of a sleep: whose, which, which version, and whether final."""
    return {
        "user_id": user_id,
        "sleep_id": str(sleep["id"]),
        "updated_at": sleep.get("updated_at"),
        "start": sleep.get("start"),
        "final": is_final(sleep),
    }


SIGNALS_HORIZON = datetime.timedelta(days=17)
"""How far behind a member's newest sleep the state keeps which version of a sleep was read:
beyond the lookback and a pending score's hold (`MAX_PENDING_HOLD`), no window re-reads it."""


SIGNALS_KEPT_LATEST = 30
"""Notes of the latest sleeps read kept beyond `SIGNALS_HORIZON` (see `_note_read`)."""


class SleepSignalsStream(WhoopStream):
    """The raw signals WHOOP recorded during each final sleep synced: one request per sleep.

    One record per sleep, keyed by `sleep_id`, with the points as WHOOP sends them: a
    re-scored or edited sleep's record replaces the old one in an upsert, and a deleted sleep's
    deletion record takes its points with it. Signals are read once a sleep is final (scored or
    unscorable), and again only when its `updated_at` moves: the state keeps, per member, which
    version of each recent sleep was read. Opt-in: `sleep_signal_types` names the signals, and
    empty (the default) skips the stream even if selected.
    """

    name = "sleep_signals"
    path = "/v2/activity/sleep/{sleep_id}/stream"
    parent_stream_type = SleepStream
    state_partitioning_keys = ("user_id",)
    primary_keys = ("sleep_id",)
    schema = schemas.SLEEP_SIGNALS
    scope = "read:sleep"
    selected_by_default = False
    missing_is_empty = True

    @property
    def types(self) -> tuple[str, ...]:
        """WHOOP's `types`: the signals asked for (`sleep_signal_types`)."""
        return self.settings.sleep_signal_types

    @property
    def enabled(self) -> bool:
        """Whether `sleep_signal_types` names any signal."""
        return bool(self.types)

    @property
    def requests_per_record(self) -> int:
        """One request per sleep, when enabled."""
        return 1 if self.enabled else 0

    def estimated_requests(self, days: float) -> int:
        """At most one per sleep of the window (a sleep read before and unchanged costs none)."""
        if not self.enabled:
            return 0
        return math.ceil(days * SleepStream.typical_records_per_day) + 1

    def estimated_incremental_requests(self, days: float, new_days: float) -> int:
        """Only the sleeps new since the last run: the window's others were read before."""
        return self.estimated_requests(new_days)

    def probe_context(
        self, context: Context, found: t.Mapping[str, dict[str, t.Any] | None]
    ) -> Context | str:
        """The member's latest sleep, as `sleep` probed it."""
        if not self.enabled:
            return "sleep_signal_types is empty"
        sleep = found.get("sleep")
        return signals_context(sleep, context["user_id"]) if sleep else "no sleep yet"

    def get_url_params(
        self, context: Context | None, next_page_token: str | None
    ) -> dict[str, t.Any]:
        """WHOOP's `types`, repeated: `?types=hr&types=skin_temp`."""
        return {"types": list(self.types)}

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """The sleep's signals, if it is final and this version of it was not read before."""
        if not self.enabled or not context or not context.get("final"):
            return
        read = self._read(context)
        sleep_id = context["sleep_id"]
        if (read.get(sleep_id) or [None])[0] == context.get("updated_at"):
            return
        found = False
        for record in super().get_records(context):
            found = True
            yield record
        member = self.run.members.for_context(context)
        if member.skips(self.name):
            return
        if not found:
            self.logger.warning(
                "sleep_signals: member %r: WHOOP has no signals for sleep %s (HTTP 404); they "
                "are asked for again when the sleep changes",
                member.key,
                sleep_id,
            )
        self._note_read(read, context)

    def post_process(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """WHOOP's answer as one record of the sleep: its points, untouched, under its key."""
        return self.record_of(row, t.cast("dict[str, t.Any]", context))

    def check_record(self, record: t.Any, context: Context | None) -> None:
        """Refuse an answer without a list of points, as any record without its key."""
        super().check_record(record, context)
        if not isinstance(record.get("stream"), list):
            raise bad_data(f"WHOOP answered {self.path_of(context)} without a `stream` list")

    def record_of(self, answer: dict[str, t.Any], context: dict[str, t.Any]) -> dict[str, t.Any]:
        """The record of a sleep's signals, from WHOOP's answer (checked by `check_record`)."""
        return {
            "sleep_id": context["sleep_id"],
            "user_id": context["user_id"],
            "updated_at": context.get("updated_at"),
            "algorithm_version": answer.get("algorithm_version"),
            "types": list(self.types),
            "stream": answer["stream"],
            "_sdc_deleted_at": None,
        }

    def follow(self, sleep: dict[str, t.Any]) -> None:
        """A sleep emitted outside its collection's pages: its signals follow it.

        A deletion record deletes the signals; a final sleep not read in this version has them
        read. A member WHOOP refuses (a 403) is set aside for this stream; a failed request is
        raised, for the caller to try again later (a webhook event stays owed).
        """
        user_id, sleep_id = sleep.get("user_id"), str(sleep.get("id"))
        if not isinstance(user_id, int):
            return
        context = signals_context(sleep, user_id)
        read = self._read(context)
        if sleep.get("_sdc_deleted_at"):
            self.emit_directly(self.deletion_record(user_id, sleep_id))
            read.pop(sleep_id, None)
            return
        # by the id a webhook drain or a reconciliation set: the profile may not be read yet
        member = next((m for m in self.run.members if m.user_id == user_id), None)
        if member is None or not context["final"] or member.skips(self.name):
            return
        if (read.get(sleep_id) or [None])[0] == context.get("updated_at"):
            return
        client = self.run.member_client(member.key)
        try:
            answer = client.find(self.path_of(context), self.scope, {"types": list(self.types)})
        except MemberError as exc:
            if exc.whole_member:
                raise
            self.run.members.fail(member, self.name, exc)
            return
        if answer is not None:
            try:
                self.check_record(answer, context)
            except Exception as exc:  # a bad answer: read again when the sleep is next listed
                self.logger.warning("sleep_signals: member %r: %s", member.key, exc)
                return
            self.emit_directly(self.record_of(answer, context))
        self._note_read(read, context)

    def _read(self, context: Context) -> dict[str, list[t.Any]]:
        """The member's note of which version of each recent sleep had its signals read."""
        state = self.get_context_state(context)
        read = state.get("signals_read")
        if not isinstance(read, dict):
            read = state["signals_read"] = {}
        return t.cast("dict[str, list[t.Any]]", read)

    def _note_read(self, read: dict[str, list[t.Any]], context: Context) -> None:
        """Note the sleep's version; forget sleeps too old for any window to list again.

        The latest notes are kept whatever their age: a history the budget stopped resumes
        with the oldest sleep it read (`backfill_end` holds its twins), which is not read twice.
        """
        read.pop(context["sleep_id"], None)  # the notes stay in the order they were taken
        read[context["sleep_id"]] = [context.get("updated_at"), context.get("start")]
        latest = set(list(read)[-SIGNALS_KEPT_LATEST:])
        starts: dict[str, datetime.datetime | None] = {}
        for sleep_id, (_, start) in read.items():
            try:
                starts[sleep_id] = parse_time(str(start))
            except ValueError:
                starts[sleep_id] = None
        known = [moment for moment in starts.values() if moment is not None]
        if not known:
            return
        horizon = max(known) - SIGNALS_HORIZON - self.lookback
        for sleep_id, moment in starts.items():
            if moment is not None and moment < horizon and sleep_id not in latest:
                del read[sleep_id]

    @property
    def lookback(self) -> datetime.timedelta:
        """The sleeps' lookback (`lookback_days`): how far back each run re-lists sleeps."""
        return datetime.timedelta(days=self.settings.lookback_days)


class ByIdStream(MemberStream):
    """Records named in a setting, one request each; an id WHOOP does not know is a warning."""

    ids_setting: t.Literal["cycle_ids", "sleep_ids", "workout_ids"]
    selected_by_default = False
    missing_is_empty = True

    @property
    def ids(self) -> tuple[str, ...]:
        """The record ids of the setting (`ids_setting`)."""
        return t.cast("tuple[str, ...]", getattr(self.settings, self.ids_setting))

    def probe_context(
        self, context: Context, found: t.Mapping[str, dict[str, t.Any] | None]
    ) -> Context | str:
        """The first id of the setting."""
        ids = self.ids
        return {**context, "record_id": ids[0]} if ids else f"no {self.ids_setting}"

    def estimated_requests(self, days: float) -> int:
        """One per configured id, whatever the window."""
        return len(self.ids)

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """Each configured id, as this member."""
        for record_id in self.ids:
            found = False
            for record in super().get_records({**(context or {}), "record_id": record_id}):
                found = True
                yield record
            member = self.run.members.for_context(context)
            if not found and not member.skips(self.name):
                self.logger.warning(
                    "%s: WHOOP has no record %s for member %r; check %s",
                    self.name,
                    record_id,
                    member.key,
                    self.ids_setting,
                )


class CycleByIdStream(ByIdStream):
    """Cycles named in `cycle_ids`."""

    name = "cycle_by_id"
    path = "/v2/cycle/{record_id}"
    ids_setting = "cycle_ids"
    primary_keys = ("id",)
    schema = schemas.CYCLE
    scope = "read:cycles"


class SleepByIdStream(ByIdStream):
    """Sleeps named in `sleep_ids`."""

    name = "sleep_by_id"
    path = "/v2/activity/sleep/{record_id}"
    ids_setting = "sleep_ids"
    primary_keys = ("id",)
    schema = schemas.SLEEP
    scope = "read:sleep"


class WorkoutByIdStream(ByIdStream):
    """Workouts named in `workout_ids`."""

    name = "workout_by_id"
    path = "/v2/activity/workout/{record_id}"
    ids_setting = "workout_ids"
    primary_keys = ("id",)
    schema = schemas.WORKOUT
    scope = "read:workout"


STREAM_TYPES: tuple[type[WhoopStream], ...] = (
    ProfileStream,
    BodyMeasurementStream,
    CyclesStream,
    RecoveryStream,
    SleepStream,
    WorkoutStream,
    RecoveryForCycleStream,
    SleepForCycleStream,
    SleepSignalsStream,
    CycleByIdStream,
    SleepByIdStream,
    WorkoutByIdStream,
)
