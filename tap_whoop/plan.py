"""`tap-whoop plan`: what the next run, and a day of runs, will cost against WHOOP's daily quota.

Nothing is requested and no token is spent: the costs come from the state (bookmarks, history
still to read, when profiles were read) and from each stream's own estimate of its requests.
"""

from __future__ import annotations

import datetime
import math
import typing as t
from dataclasses import dataclass

from tap_whoop import clock, cost
from tap_whoop.http import DAILY_RESERVE
from tap_whoop.settings import parse_time
from tap_whoop.streams.base import CollectionStream, WhoopStream
from tap_whoop.streams.endpoints import (
    BodyMeasurementStream,
    ProfileStream,
    details_due,
)

if t.TYPE_CHECKING:
    from tap_whoop.tap import TapWhoop

WHOOP_DAILY_LIMIT = 10_000
"""Requests a WHOOP app may send per day, all members together (WHOOP's default)."""
HISTORY_WITHOUT_START_DATE = 5 * 365
"""Days of history costed for a new member when `start_date` is not set."""


@dataclass
class MemberPlan:
    """One member's next run, in requests."""

    key: str
    user_id: int | None
    details: int
    new_records: int
    history: int

    @property
    def total(self) -> int:
        """Requests the member's next run takes with nothing to stop it."""
        return self.details + self.new_records + self.history


def member_plans(tap: TapWhoop) -> list[MemberPlan]:
    """What each member of this process (its `member_shard`) costs in the next run."""
    run = tap.run
    streams = [t.cast("WhoopStream", stream) for stream in tap.streams.values() if stream.selected]
    profile = next(s for s in tap.streams.values() if isinstance(s, ProfileStream))
    collections = [s for s in streams if isinstance(s, CollectionStream)]
    per_cycle = cost.per_record(streams)
    details = [s for s in streams if isinstance(s, ProfileStream | BodyMeasurementStream)]
    user_ids = run.members.known_user_ids()
    now = clock.now()
    plans = []
    for member in run.members:
        user_id = user_ids.get(member.key)
        state = profile.get_context_state({"member": member.key})
        due = user_id is None or details_due(tap.progress, member.key, state)
        plan = MemberPlan(member.key, user_id, len(details) if due else 0, 0, 0)
        for stream in collections:
            partition = stream.partition_of(user_id) if user_id is not None else None
            bookmark = (partition or {}).get("replication_key_value")
            if bookmark:
                new = (now - parse_time(bookmark)).total_seconds() / 86_400
                days = new + stream.lookback.total_seconds() / 86_400
                plan.new_records += cost.collection(stream, per_cycle, days, new)
            if not bookmark or (partition or {}).get("backfill_end"):
                plan.history += cost.collection(
                    stream, per_cycle, _history_days(tap, partition, now)
                )
        plans.append(plan)
    return plans


def _history_days(
    tap: TapWhoop, partition: dict[str, t.Any] | None, now: datetime.datetime
) -> float:
    """Days of history still to read: what a stopped walk left, or all from `start_date`."""
    settings = tap.run.settings
    partition = partition or {}
    end = parse_time(partition["backfill_end"]) if partition.get("backfill_end") else now
    if settings.end_date is not None:
        end = min(end, settings.end_date)
    held = partition.get("backfill_start")
    start = parse_time(held) if held else settings.start_date
    if start is None:
        return float(HISTORY_WITHOUT_START_DATE) if not partition.get("backfill_end") else 0.0
    return max((end - start).total_seconds() / 86_400, 0.0)


def report(tap: TapWhoop, runs_per_day: int, daily_limit: int = WHOOP_DAILY_LIMIT) -> list[str]:
    """The plan as lines: each member's next run, the total, a day of the schedule."""
    plans = member_plans(tap)
    run = tap.run
    cap = tap.run.settings.max_requests_per_run
    lines = [
        f"{'member':<24} {'user id':>10} {'profile+body':>12} {'new records':>11} "
        f"{'history':>8} {'next run':>9}"
    ]
    for plan in plans:
        lines.append(
            f"{plan.key[:24]:<24} {plan.user_id if plan.user_id is not None else '-':>10} "
            f"{plan.details:>12} {plan.new_records:>11} {plan.history:>8} {plan.total:>9}"
        )
    details = sum(p.details for p in plans)
    new = sum(p.new_records for p in plans)
    history = sum(p.history for p in plans)
    total = details + new + history
    lines.append(f"{'total':<24} {'':>10} {details:>12} {new:>11} {history:>8} {total:>9}")
    next_run = f"next run: about {total} request(s)"
    history_cap = tap.run.settings.max_history_requests_per_run
    if cap is not None and total > cap:
        next_run += (
            f"; max_requests_per_run caps it at {cap}: every member's new records first, "
            f"then {max(cap - details - new, 0)} of the {history} history request(s)"
        )
    elif history_cap is not None and history > history_cap:
        next_run += (
            f"; max_history_requests_per_run reads {history_cap} of the {history} history "
            "request(s), after every member's new records"
        )
    lines.append(next_run)
    lines.extend(_day(plans, run.profile_interval, runs_per_day, daily_limit, cap, tap))
    return lines


def _day(
    plans: list[MemberPlan],
    profile_interval: float,
    runs_per_day: int,
    daily_limit: int,
    cap: int | None,
    tap: TapWhoop,
) -> list[str]:
    """A day of `runs_per_day` runs: the steady cost, and how many days the histories take."""
    members = len(plans)
    hours_between = 24 / runs_per_day
    streams = [s for s in tap.streams.values() if s.selected]
    collections = [s for s in streams if isinstance(s, CollectionStream)]
    per_cycle = cost.per_record(streams)
    window = hours_between / 24 + tap.run.settings.lookback_days
    per_run = sum(
        cost.collection(stream, per_cycle, window, hours_between / 24) for stream in collections
    )
    details_count = sum(1 for s in streams if isinstance(s, ProfileStream | BodyMeasurementStream))
    reads_per_day = (
        runs_per_day
        if profile_interval <= 0
        else min(runs_per_day, math.ceil(86_400 / profile_interval))
    )
    steady = members * (runs_per_day * per_run + reads_per_day * details_count)
    history = sum(p.history for p in plans)
    each = runs_per_day * per_run + reads_per_day * details_count
    shard = tap.run.settings.member_shard
    shards = shard[1] if shard else 1
    app_steady = steady * shards
    of_app = f"{app_steady / daily_limit:.0%} of the app's {daily_limit:,} a day"
    if shard:
        of_app = (
            f"member_shard {shard[0]}/{shards}: the {shards} shards together about {app_steady}, "
            + of_app
        )
    lines = [
        f"a day of {runs_per_day} run(s) (one every {hours_between:g} h): {steady} request(s) "
        f"for {members} member(s) ({each} each: {per_run} per run, profile and body "
        f"{reads_per_day} time(s) a day), {of_app}"
    ]
    if app_steady > daily_limit:
        fits = daily_limit // max(each, 1)
        lines.append(
            "the schedule needs more than the app's daily quota: run less often"
            + (f", or sync at most {fits} member(s) per app at this schedule" if fits else "")
        )
        return lines
    if history:
        spare = (daily_limit - app_steady - DAILY_RESERVE) // shards
        history_cap = tap.run.settings.max_history_requests_per_run
        if runs_per_day > 1 and history_cap is None and history > spare // runs_per_day:
            lines.append(
                f"with {runs_per_day} runs a day, set max_history_requests_per_run to "
                f"{max(spare // runs_per_day, 1)}: without it, the first run after WHOOP's day "
                "resets may spend the spare requests of the whole day on histories, and later "
                "runs stop with exit 75"
            )
        if history_cap is not None:
            spare = min(spare, runs_per_day * history_cap)
        if cap is not None:
            spare = min(spare, runs_per_day * max(cap - members * per_run, 0))
        days = math.ceil(history / spare) if spare > 0 else None
        lines.append(
            f"history still to read: {history} request(s); with {spare} a day to spare, "
            + (f"done in {days} day(s)" if days else "never at this schedule")
        )
    return lines
