"""Deterministic synthetic WHOOP members and their records.

Every record derives from (member key, calendar day) alone, so sandboxes built with the same
arguments serve identical data.

The members behave like people wearing a strap: each has a baseline HRV, resting heart rate and
sleep need; a day's readiness drifts over a few days. Recovery rises with HRV and falls with
resting heart rate, both of which follow readiness, last night's sleep and yesterday's strain;
a cycle's strain is the day's background activity plus its workouts, whose strain follows their
length and intensity; sleep performance is hours slept against the night's need, which grows
with yesterday's strain. Every figure carries its own day-to-day noise.

A day is generated once into compact `Record`s (times in epoch milliseconds); what the API shows
for a record at a given sandbox time (whether it is visible yet, its score state, the current
cycle's open end) is decided only when it is rendered.
"""

from __future__ import annotations

import bisect
import calendar
import copy
import heapq
import math
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from random import Random
from typing import Any, Literal

Kind = Literal["cycle", "sleep", "recovery", "workout"]
KINDS: tuple[Kind, ...] = ("cycle", "sleep", "recovery", "workout")
Key = tuple[int, str]
"""Sort key of a record: (start, id); recoveries use their sleep's start and id."""

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

SCORING_DELAY = 2 * HOUR
"""How long after a sleep ends WHOOP takes to score it and its recovery."""
SLOW_SCORING_DELAY = 5 * DAY
LATE_ENTRY_DELAY = 3 * DAY
"""A manually entered workout is created this long after it started."""
WORKOUT_SCORING_DELAY = 10 * MINUTE
CALIBRATION_DAYS = 4

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_CYCLE_ID_EPOCH = date(2000, 1, 1)
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "sandbox.tap-whoop.invalid")
_OFFSETS = ("-05:00", "-08:00", "+01:00", "+00:00", "-03:00", "+05:30", "+10:00", "-06:00")
_LAST_NAMES = ("Rivera", "Okafor", "Lindqvist", "Tanaka", "Moreau", "Kowalski", "Haddad", "Nguyen")


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of `moment` (naive means UTC)."""
    return calendar.timegm(moment.utctimetuple()) * SECOND + moment.microsecond // 1000


def _rng(seed: str) -> Random:
    """A generator private to one seed: data never depends on global random state."""
    return Random(seed)  # noqa: S311 - synthetic data, not secrets


def from_ms(ms: int) -> datetime:
    """The UTC datetime of epoch milliseconds `ms`."""
    return _EPOCH + timedelta(milliseconds=ms)


def iso(ms: int) -> str:
    """WHOOP's timestamp format: UTC with milliseconds, e.g. 2022-04-24T11:25:44.774Z."""
    return f"{from_ms(ms):%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


_V1_CUTOFF = to_ms(datetime(2025, 9, 1, tzinfo=timezone.utc))
"""WHOOP stops sending v1 ids and sport ids for activities after this date."""


@dataclass(frozen=True, slots=True)
class Sport:
    """A WHOOP sport and what its workouts measure."""

    name: str
    legacy_id: int
    minutes: tuple[int, int]
    speed_kmh: float | None = None
    """None for sports without distance."""
    climbs: bool = False


SPORTS = (
    Sport("running", 0, (25, 90), speed_kmh=10.5, climbs=True),
    Sport("cycling", 1, (30, 120), speed_kmh=26.0, climbs=True),
    Sport("weightlifting", 45, (30, 90)),
    Sport("yoga", 44, (30, 75)),
    Sport("swimming", 33, (25, 60), speed_kmh=2.8),
    Sport("tennis", 34, (45, 120)),
    Sport("hiking", 52, (60, 120), speed_kmh=4.5, climbs=True),
    Sport("functional-fitness", 48, (30, 60)),
)


@dataclass(frozen=True, slots=True)
class Member:
    """A synthetic member; everything about them follows from `key`."""

    key: str
    user_id: int
    timezone_offset: str
    first_name: str
    last_name: str
    height_meter: float
    weight_kilogram: float
    max_heart_rate: int
    hrv_baseline: float = 60.0
    """The member's usual HRV (rMSSD, ms); a day's HRV varies around it."""
    resting_heart_rate_baseline: float = 55.0
    sleep_need_milli: int = 8 * HOUR
    """Baseline sleep need."""

    @classmethod
    def from_key(cls, key: str) -> Member:
        """The member for `key`, always the same one."""
        crc = zlib.crc32(key.encode())
        rng = _rng(f"{key}:member")
        body = _rng(f"{key}:physiology")
        return cls(
            key=key,
            user_id=10_000 + crc % 900_000,
            timezone_offset=_OFFSETS[crc % len(_OFFSETS)],
            first_name=key.capitalize(),
            last_name=rng.choice(_LAST_NAMES),
            height_meter=round(rng.uniform(1.55, 1.95), 4),
            weight_kilogram=round(rng.uniform(50.0, 100.0), 4),
            max_heart_rate=rng.randint(172, 202),
            hrv_baseline=math.exp(body.uniform(math.log(35.0), math.log(110.0))),
            resting_heart_rate_baseline=body.uniform(47.0, 61.0),
            sleep_need_milli=body.randrange(7 * HOUR, 8 * HOUR + 30 * MINUTE),
        )

    @property
    def offset_ms(self) -> int:
        """The member's fixed UTC offset in milliseconds."""
        sign = -1 if self.timezone_offset.startswith("-") else 1
        hours, minutes = self.timezone_offset[1:].split(":")
        return sign * (int(hours) * HOUR + int(minutes) * MINUTE)

    def local_date(self, ms: int) -> date:
        """The calendar date in the member's timezone at epoch ms `ms`."""
        return from_ms(ms + self.offset_ms).date()

    def profile(self) -> dict[str, Any]:
        """UserBasicProfile."""
        return {
            "user_id": self.user_id,
            "email": f"{self.key}@example.com",
            "first_name": self.first_name,
            "last_name": self.last_name,
        }

    def body(self) -> dict[str, Any]:
        """UserBodyMeasurement (which carries no user_id)."""
        return {
            "height_meter": self.height_meter,
            "weight_kilogram": self.weight_kilogram,
            "max_heart_rate": self.max_heart_rate,
        }


@dataclass(frozen=True, slots=True)
class Vitals:
    """What a recovery measures."""

    recovery_score: int
    resting_heart_rate: int
    hrv_rmssd_milli: float


@dataclass(frozen=True, slots=True)
class Record:
    """The fixed facts of one record; `render` turns it into what the API shows at a time."""

    kind: Kind
    id: str
    """Cycle: its int64 id as text; recovery: its sleep's uuid."""
    cycle_id: int
    start: int
    end: int
    """For a cycle, the next cycle's start (shown only once reached)."""
    created: int
    scored: int
    """When the record leaves PENDING_SCORE."""
    unscorable: bool
    seed: str
    nap: bool = False
    v1_id: int | None = None
    sport: Sport | None = None
    legacy_sport_id: bool = False
    calibrating: bool = False
    strain: float = 0.0
    """Cycle: the whole day's strain (0-21); workout: the workout's strain."""
    prior_strain: float = 0.0
    """Main sleep and recovery: the previous cycle's strain, which raises need and lowers HRV."""
    vitals: Vitals | None = None
    """Recovery: its score, resting heart rate and HRV."""

    @property
    def key(self) -> Key:
        """Where the record sorts within its kind."""
        return (self.start, self.id)


def cycle_id(member: Member, day: date) -> int:
    """Unique across members; above 2**31 for most user ids, so int64 handling gets exercised."""
    return member.user_id * 100_000 + (day - _CYCLE_ID_EPOCH).days


def cycle_start(member: Member, day: date) -> int:
    """The sleep onset that starts `day`'s cycle: 22:00 to 00:30 in the member's timezone."""
    rng = _rng(f"{member.key}:{day.isoformat()}:onset")
    return _local_midnight(member, day) + 22 * HOUR + rng.randrange(150 * MINUTE)


def _local_midnight(member: Member, day: date) -> int:
    return (day - _EPOCH.date()).days * DAY - member.offset_ms


def _v1_id(rng: Random, start: int) -> int | None:
    if start < _V1_CUTOFF or rng.random() < 0.25:
        return rng.randrange(10**8, 10**9)
    return None


def generate_day(member: Member, day: date, *, calibrating: bool = False) -> list[Record]:
    """The cycle starting on the evening of `day` and everything in it, each kind by start.

    The member wakes by 10:00, workouts fall at 10:30-13:30 and 17:00-21:30 and naps at
    14:00-17:00 local time, so nothing overlaps and everything ends before the next cycle.
    The night's sleep and recovery depend on the previous cycle's strain.
    """
    records = list(_plan(member, day))
    prior_strain = _plan(member, day - timedelta(days=1))[0].strain
    sleep = replace(records[1], prior_strain=prior_strain)
    performance = _sleep_score(member, sleep)["sleep_performance_percentage"]
    vitals = _vitals(member, day, prior_strain, performance)
    recovery = replace(records[2], prior_strain=prior_strain, vitals=vitals)
    if calibrating:
        recovery = replace(recovery, calibrating=True)
    records[1:3] = [sleep, recovery]
    return records


@lru_cache(maxsize=8)
def _plan(member: Member, day: date) -> tuple[Record, ...]:
    """The day's records with their times, workouts and the cycle's strain; no vitals yet."""
    seed = f"{member.key}:{day.isoformat()}"
    rng = _rng(seed)
    cid = cycle_id(member, day)
    start = cycle_start(member, day)
    midnight = _local_midnight(member, day + timedelta(days=1))
    records = [
        Record(
            "cycle",
            str(cid),
            cid,
            start,
            end=cycle_start(member, day + timedelta(days=1)),
            created=start,
            scored=start,
            unscorable=rng.random() < 0.015,
            seed=f"{seed}:cycle",
        )
    ]

    sleep_end = start + rng.randrange(6 * HOUR, 9 * HOUR + 30 * MINUTE)
    sleep = _sleep(rng, f"{seed}:sleep:0", cid, start, sleep_end, nap=False)
    fate = rng.random()
    recovery = Record(
        "recovery",
        sleep.id,
        cid,
        sleep.start,
        sleep.end,
        created=sleep.created + rng.randrange(MINUTE, 6 * MINUTE),
        scored=sleep.scored,
        unscorable=sleep.unscorable or fate < 0.01,
        seed=f"{seed}:recovery",
    )
    records += [sleep, recovery]

    if rng.random() < 0.05:
        nap_start = midnight + 14 * HOUR + rng.randrange(90 * MINUTE)
        nap_end = nap_start + rng.randrange(20 * MINUTE, 90 * MINUTE)
        records.append(_sleep(rng, f"{seed}:sleep:1", cid, nap_start, nap_end, nap=True))

    slots = [midnight + 10 * HOUR + 30 * MINUTE, midnight + 17 * HOUR]
    spans = [60 * MINUTE, 150 * MINUTE]
    count = rng.choices((0, 1, 2), weights=(35, 45, 20))[0]
    for n, slot in enumerate(sorted(rng.sample((0, 1), count))):
        records.append(
            _workout(rng, f"{seed}:workout:{n}", cid, slots[slot] + rng.randrange(spans[slot]))
        )
    workouts = [record.strain for record in records if record.kind == "workout"]
    records[0] = replace(records[0], strain=_day_strain(_rng(f"{seed}:activity"), workouts))
    return tuple(records)


def _day_strain(rng: Random, workouts: list[float]) -> float:
    """Background activity plus workouts, combined on WHOOP's saturating 0-21 scale."""
    rest = 1.0 - rng.uniform(3.0, 8.5) / 21.0
    for strain in workouts:
        rest *= 1.0 - strain / 21.0
    return 21.0 * (1.0 - rest)


def _readiness(member: Member, day: date) -> float:
    """Unit-variance readiness that drifts: today's shock plus fading echoes of the last three."""
    weights = (1.0, 0.6, 0.36, 0.2)
    shocks = (
        _rng(f"{member.key}:{(day - timedelta(days=lag)).isoformat()}:readiness").gauss(0.0, 1.0)
        for lag in range(len(weights))
    )
    total = sum(weight * shock for weight, shock in zip(weights, shocks, strict=True))
    return total / math.sqrt(sum(weight * weight for weight in weights))


def _vitals(member: Member, day: date, prior_strain: float, performance: float) -> Vitals:
    """The morning's recovery from readiness, yesterday's strain and last night's sleep."""
    rng = _rng(f"{member.key}:{day.isoformat()}:vitals")
    wellness = (
        0.8 * _readiness(member, day)
        - 0.35 * (prior_strain - 11.0) / 4.0
        + 0.35 * (performance - 85.0) / 12.0
    )
    hrv = member.hrv_baseline * math.exp(0.2 * wellness + rng.gauss(0.0, 0.07))
    resting = member.resting_heart_rate_baseline - 2.5 * wellness + rng.gauss(0.0, 2.0)
    drive = (
        0.9 * math.log(hrv / member.hrv_baseline) / 0.2
        - 0.35 * (resting - member.resting_heart_rate_baseline) / 2.5
        + rng.gauss(0.0, 0.55)
    )
    score = 100.0 / (1.0 + math.exp(-(0.4 + 0.9 * drive)))
    return Vitals(
        recovery_score=min(99, max(1, round(score))),
        resting_heart_rate=min(75, max(40, round(resting))),
        hrv_rmssd_milli=round(hrv, 6),
    )


def _sleep(rng: Random, seed: str, cid: int, start: int, end: int, *, nap: bool) -> Record:
    created = end + rng.randrange(MINUTE, 15 * MINUTE)
    fate = rng.random()
    return Record(
        "sleep",
        str(uuid.uuid5(_NAMESPACE, seed)),
        cid,
        start,
        end,
        created=created,
        scored=end + (SLOW_SCORING_DELAY if fate < 0.02 else SCORING_DELAY),
        unscorable=0.02 <= fate < 0.035,
        seed=seed,
        nap=nap,
        v1_id=_v1_id(rng, start),
    )


def _workout(rng: Random, seed: str, cid: int, start: int) -> Record:
    sport = rng.choice(SPORTS)
    end = start + rng.randint(*sport.minutes) * MINUTE + rng.randrange(MINUTE)
    _, strain = _effort(seed, end - start)
    late = rng.random() < 0.05
    created = start + LATE_ENTRY_DELAY if late else end + rng.randrange(MINUTE, 10 * MINUTE)
    return Record(
        "workout",
        str(uuid.uuid5(_NAMESPACE, seed)),
        cid,
        start,
        end,
        created=created,
        scored=created + WORKOUT_SCORING_DELAY,
        unscorable=rng.random() < 0.015,
        seed=seed,
        v1_id=_v1_id(rng, start),
        sport=sport,
        legacy_sport_id=start < _V1_CUTOFF or rng.random() < 0.3,
        strain=strain,
    )


def _effort(seed: str, duration: int) -> tuple[float, float]:
    """A workout's intensity (0-1) and its strain, which grows with length and intensity."""
    rng = _rng(f"{seed}:effort")
    intensity = rng.uniform(0.3, 1.0)
    load = duration / MINUTE * intensity / 70.0 * rng.uniform(0.85, 1.15)
    return intensity, min(21.0, 21.0 * (1.0 - math.exp(-load)))


@dataclass(frozen=True, slots=True)
class Edit:
    """Top-level fields that replace what `render` shows, made at sandbox time `at`."""

    changes: dict[str, Any]
    at: int


class Timeline:
    """One member's records, generated a day at a time and kept sorted by `Record.key`.

    Records deleted through the admin API stay in the lists (days are regenerated
    deterministically) and are skipped wherever the API could see them; edits are applied as
    the record is shown. Once `watch` is called, the moments at which a sleep, recovery or
    workout appears or changes score state are kept in a heap, so `changes` can say which
    records changed over an advance of the clock without looking at any other record.
    """

    def __init__(self, member: Member, first_day: date) -> None:
        self.member = member
        self._first_day = first_day
        self._next_day = first_day
        self._horizon = -1
        self._records: dict[Kind, list[Record]] = {kind: [] for kind in KINDS}
        self._keys: dict[Kind, list[Key]] = {kind: [] for kind in KINDS}
        self._by_id: dict[tuple[Kind, str], Record] = {}
        self._by_cycle: dict[tuple[Kind, int], Record] = {}
        self.deleted: set[tuple[Kind, str]] = set()
        """(kind, id) of deleted records; a recovery's id is its sleep's."""
        self.edits: dict[tuple[Kind, str], Edit] = {}
        self._watched: int | None = None
        self._moments: list[tuple[int, int, Record]] = []
        self._sequence = 0

    def watch(self, since: int) -> None:
        """Remember every moment after `since` at which a record appears or is scored."""
        self._watched = since
        for kind in ("sleep", "recovery", "workout"):
            for record in self._records[kind]:
                self._note(record)

    def _note(self, record: Record) -> None:
        since = self._watched
        if since is None or record.kind == "cycle":
            return
        moments = (
            (record.created, record.scored) if record.scored > record.created else (record.created,)
        )
        for moment in moments:
            if moment > since:
                self._sequence += 1
                heapq.heappush(self._moments, (moment, self._sequence, record))

    def changes(self, until: int) -> list[tuple[int, Record]]:
        """(moment, record) for each appearance or scoring in (last call, `until`], in order.

        Deleted records are left out; `extend_to(until)` must have run first.
        """
        found: list[tuple[int, Record]] = []
        moments = self._moments
        while moments and moments[0][0] <= until:
            moment, _, record = heapq.heappop(moments)
            if (record.kind, record.id) not in self.deleted:
                found.append((moment, record))
        if self._watched is not None:
            self._watched = max(self._watched, until)
        return found

    def extend_to(self, now: int) -> None:
        """Generate days until a cycle starts after `now`, so every visible record exists."""
        while self._horizon <= now:
            calibrating = (self._next_day - self._first_day).days < CALIBRATION_DAYS
            for record in generate_day(self.member, self._next_day, calibrating=calibrating):
                self._records[record.kind].append(record)
                self._keys[record.kind].append(record.key)
                self._by_id[(record.kind, record.id)] = record
                if record.kind in ("sleep", "recovery") and not record.nap:
                    self._by_cycle[(record.kind, record.cycle_id)] = record
                if record.kind == "cycle":
                    self._horizon = record.start
                self._note(record)
            self._next_day += timedelta(days=1)

    def newest_first(
        self, kind: Kind, now: int, start: int | None, end: int, before: Key | None = None
    ) -> Iterator[Record]:
        """Records visible at `now` with start in [start, end) and key below `before`."""
        keys, records = self._keys[kind], self._records[kind]
        index = bisect.bisect_left(keys, (end,))
        if before is not None:
            index = min(index, bisect.bisect_left(keys, before))
        lowest = start if start is not None else -1
        deleted = self.deleted
        for position in range(index - 1, -1, -1):
            record = records[position]
            if record.start < lowest:
                return
            if record.created <= now and not (deleted and (kind, record.id) in deleted):
                yield record

    def find(self, kind: Kind, record_id: str, now: int) -> Record | None:
        """The record by id, if visible at `now` (and not deleted)."""
        return self._visible(self._by_id.get((kind, record_id)), now)

    def of_cycle(self, kind: Kind, cycle: int, now: int) -> Record | None:
        """The cycle's main sleep or its recovery, once visible (and unless deleted)."""
        return self._visible(self._by_cycle.get((kind, cycle)), now)

    def _visible(self, record: Record | None, now: int) -> Record | None:
        if record is None or record.created > now or (record.kind, record.id) in self.deleted:
            return None
        return record

    def show(self, record: Record, now: int) -> dict[str, Any]:
        """`render`, with any edit's fields and updated_at no earlier than the edit."""
        out = render(self.member, record, now)
        edit = self.edits.get((record.kind, record.id)) if self.edits else None
        if edit is not None:
            out |= copy.deepcopy(edit.changes)
            if edit.at > _state(record, now)[1]:
                out["updated_at"] = iso(edit.at)
        return out


def render(member: Member, record: Record, now: int) -> dict[str, Any]:
    """The record as the API returns it at sandbox time `now`."""
    if record.kind == "cycle":
        return _render_cycle(member, record, now)
    state, updated = _state(record, now)
    common = {
        "user_id": member.user_id,
        "created_at": iso(record.created),
        "updated_at": iso(updated),
    }
    if record.kind == "recovery":
        out = {"cycle_id": record.cycle_id, "sleep_id": record.id, **common}
        out["score_state"] = state
        if state == "SCORED":
            out["score"] = _recovery_score(record)
        return out
    out = {"id": record.id}
    if record.kind == "sleep":
        out["cycle_id"] = record.cycle_id
    if record.v1_id is not None:
        out["v1_id"] = record.v1_id
    out |= common
    out |= {
        "start": iso(record.start),
        "end": iso(record.end),
        "timezone_offset": member.timezone_offset,
    }
    if record.kind == "sleep":
        out["nap"] = record.nap
        out["score_state"] = state
        if state == "SCORED":
            out["score"] = _sleep_score(member, record)
        return out
    assert record.sport is not None
    out["sport_name"] = record.sport.name
    out["score_state"] = state
    if state == "SCORED":
        out["score"] = _workout_score(member, record)
    if record.legacy_sport_id:
        out["sport_id"] = record.sport.legacy_id
    return out


def _state(record: Record, now: int) -> tuple[str, int]:
    """Score state and updated_at: pending from creation until scored, then final."""
    if now < record.scored:
        return "PENDING_SCORE", record.created
    return ("UNSCORABLE" if record.unscorable else "SCORED"), record.scored


def _render_cycle(member: Member, record: Record, now: int) -> dict[str, Any]:
    """The current cycle has no end yet and a score that grows through the day."""
    current = now < record.end
    out: dict[str, Any] = {
        "id": record.cycle_id,
        "user_id": member.user_id,
        "created_at": iso(record.created),
        "updated_at": iso(now if current else record.end),
        "start": iso(record.start),
    }
    if not current:
        out["end"] = iso(record.end)
    out["timezone_offset"] = member.timezone_offset
    rng = _rng(record.seed)
    strain = record.strain
    kilojoule = rng.uniform(6_000.0, 8_000.0) + strain * rng.uniform(250.0, 350.0)
    average = min(90, round(55 + strain * 1.2 + rng.uniform(-4.0, 4.0)))
    peak = min(member.max_heart_rate, round(110 + strain * 3.6 + rng.uniform(-8.0, 8.0)))
    steps = round(rng.uniform(2_000, 6_000) + strain * 550) if rng.random() < 0.9 else None
    if record.unscorable:
        out |= {"score_state": "UNSCORABLE", "step_count": None}
        return out
    done = min(1.0, (now - record.start) / (record.end - record.start))
    out["score_state"] = "SCORED"
    out["score"] = {
        "strain": round(strain * done, 4),
        "kilojoule": round(kilojoule * done, 2),
        "average_heart_rate": average,
        "max_heart_rate": peak,
    }
    out["step_count"] = round(steps * done) if steps is not None else None
    return out


def _split(rng: Random, total: int, weights: list[float]) -> list[int]:
    """Integer parts of `total` in proportion to `weights`, summing exactly to `total`."""
    scale = total / sum(weights)
    parts = [int(weight * scale) for weight in weights[:-1]]
    return [*parts, total - sum(parts)]


def _sleep_score(member: Member, record: Record) -> dict[str, Any]:
    """Performance is hours asleep against need: baseline, debt, yesterday's strain, naps."""
    rng = _rng(record.seed)
    in_bed = record.end - record.start
    awake = int(in_bed * rng.uniform(0.04, 0.15))
    no_data = int(in_bed * rng.uniform(0.0, 0.04)) if rng.random() < 0.15 else 0
    asleep = in_bed - awake - no_data
    light, slow_wave, rem = _split(
        rng, asleep, [rng.uniform(0.45, 0.6), rng.uniform(0.15, 0.25), rng.uniform(0.18, 0.28)]
    )
    strain_need = max(0.0, record.prior_strain - 8.0) * 4 * MINUTE
    needed = {
        "baseline_milli": member.sleep_need_milli + rng.randrange(-10 * MINUTE, 10 * MINUTE),
        "need_from_sleep_debt_milli": rng.randrange(0, 60 * MINUTE),
        "need_from_recent_strain_milli": int(strain_need * rng.uniform(0.8, 1.2)),
        "need_from_recent_nap_milli": -rng.randrange(0, 45 * MINUTE) if rng.random() < 0.1 else 0,
    }
    need = sum(needed.values())
    return {
        "stage_summary": {
            "total_in_bed_time_milli": in_bed,
            "total_awake_time_milli": awake,
            "total_no_data_time_milli": no_data,
            "total_light_sleep_time_milli": light,
            "total_slow_wave_sleep_time_milli": slow_wave,
            "total_rem_sleep_time_milli": rem,
            "sleep_cycle_count": rng.randint(0, 2) if record.nap else rng.randint(3, 6),
            "disturbance_count": rng.randint(0, 3) if record.nap else rng.randint(2, 16),
        },
        "sleep_needed": needed,
        "respiratory_rate": round(rng.uniform(13.5, 17.5), 6),
        "sleep_performance_percentage": float(min(100, round(asleep / need * 100))),
        "sleep_consistency_percentage": float(rng.randint(40, 95)),
        "sleep_efficiency_percentage": round(asleep / in_bed * 100, 6),
    }


def _recovery_score(record: Record) -> dict[str, Any]:
    """spo2 and skin temperature are omitted for some records, as for members on older straps."""
    assert record.vitals is not None
    rng = _rng(record.seed)
    score: dict[str, Any] = {
        "user_calibrating": record.calibrating,
        "recovery_score": float(record.vitals.recovery_score),
        "resting_heart_rate": float(record.vitals.resting_heart_rate),
        "hrv_rmssd_milli": record.vitals.hrv_rmssd_milli,
    }
    if rng.random() < 0.8:
        score["spo2_percentage"] = round(rng.uniform(94.0, 99.5), 4)
        score["skin_temp_celsius"] = round(rng.uniform(32.5, 35.5), 6)
    return score


def _workout_score(member: Member, record: Record) -> dict[str, Any]:
    assert record.sport is not None
    rng = _rng(record.seed)
    duration = record.end - record.start
    intensity, strain = _effort(record.seed, duration)
    average = min(member.max_heart_rate - 12, round(95 + 70 * intensity) + rng.randint(-5, 5))
    score: dict[str, Any] = {
        "strain": round(strain, 6),
        "average_heart_rate": average,
        "max_heart_rate": min(member.max_heart_rate, average + rng.randint(10, 40)),
        "kilojoule": round(
            duration / MINUTE * (15.0 + 45.0 * intensity) * rng.uniform(0.9, 1.1), 4
        ),
        "percent_recorded": float(rng.randint(92, 100)),
    }
    if record.sport.speed_kmh is not None:
        hours = duration / HOUR
        score["distance_meter"] = round(
            record.sport.speed_kmh * hours * 1000 * rng.uniform(0.8, 1.2), 2
        )
    if record.sport.climbs:
        score["altitude_gain_meter"] = round(rng.uniform(0.0, 450.0), 2)
        score["altitude_change_meter"] = round(rng.uniform(-40.0, 40.0), 2)
    zones = _split(
        rng, duration, [rng.uniform(0.02, 0.1), *(rng.uniform(0.05, 0.4) for _ in range(5))]
    )
    names = ("zero", "one", "two", "three", "four", "five")
    score["zone_durations"] = {
        f"zone_{name}_milli": milli for name, milli in zip(names, zones, strict=True)
    }
    return score
