"""Webhooks against polling: requests and freshness over one simulated day of N members.

Why: WHOOP gives an app 10,000 requests a day for all of its members together, so requests per
member-day decide how many members one app can keep. Polling re-reads every member's windows on
every run; with webhooks a run fetches what the events name, and reads each member in full once
per `reconcile_interval_hours` (for missed events, late strap syncs and the cycles no event
announces).

Each mode gets a fresh sandbox (its own timeline: sleeps, naps, workouts and recoveries appear
and get scored as its clock advances), a fresh token store, and the same initial sync of
`HISTORY_DAYS` days, not counted. The sandbox clock then advances one simulated minute at a time
until the first change (the warm-up, the same in both modes), the tap runs once, uncounted, and
the day begins: 1,440 simulated minutes, with the same edits and deletions by the same members at
the same minutes in both modes, and the tap run as `tap-whoop` child processes:

- webhooks: `tap-whoop webhooks --port 0` receives the sandbox's signed events into the inbox,
  and the tap runs every `--drain-minutes` simulated minutes (a "drain"), with
  `reconcile_interval_hours` standing for one simulated day (see `Clock.reconcile_hours`);
- polling: no receiver; the tap runs every `--poll-hours` simulated hours.

The sandbox's clock stands still while the tap runs, so each run happens at one simulated moment;
before each, every webhook due has been delivered.

Counted: requests are the sandbox's API requests during the day (token requests are none). A
changed record is one `<kind>.updated` or `<kind>.deleted` entry of the sandbox's change log
(sleep, recovery, workout: appearing and being scored are two); "with cycles" adds each cycle
that began and each that ended (its `end` appeared) during the day, which no webhook announces.
Freshness is the simulated time from a change to the first run whose output carries it (a version
at least as new, a deletion record, a cycle with its end). Rate limits are off in the sandbox: a
day compressed into minutes cannot be paced per real minute, so the per-day budget is computed.

    python benchmarks/webhooks.py [--members 50] [--drain-minutes 15] [--poll-hours 3]
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import typing as t
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import _common as c

from whoop_sandbox import Sandbox, SandboxServer

MEMBERS = 50
"""Default members. Requests and freshness per member do not depend on it, but the tap's CPU
grows with the square of the members in one config (each partition's STATE message carries every
member's bookmarks): a polling run of 200 members takes about 85 s of CPU here, 9 of them alone
would take 13 minutes: `--members 200` takes about half an hour here."""
HISTORY_DAYS = 7
DAY_MINUTES = 24 * 60
MINUTE_MS = 60_000
ACCESS_TOKEN_TTL = 3 * 86_400
"""Seconds of sandbox time: the sandbox's clock runs a day ahead in minutes of wall time while
the tap ages its access tokens by the wall clock; a real run refreshes an expired token first,
and token requests are no API requests (as in requests_used.py)."""
DAILY_BUDGET = 10_000
TARGET_PER_CHANGE = 1.2
REAL_PACE = 90
"""The tap's default max_requests_per_minute: how fast a run's requests go against WHOOP."""
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds before the sandbox retries a failed delivery (WHOOP: 1 s to 30 min), compressed."""
SEED = 2026
WORKOUT_DELETIONS = 0.02
"""Share of members who delete a workout during the day (their latest)."""
WORKOUT_EDITS = 0.02
"""Share of members who correct a workout's sport during the day."""
SLEEP_DELETIONS = 0.01
"""Share of members who delete their latest sleep (a main sleep takes its recovery along)."""
EVENT_KINDS = ("sleep", "recovery", "workout")
LISTENING = re.compile(r"listening on (http://\S+/webhooks/whoop)")
RESTING = re.compile(r"webhooks arrive: (\d+) of (\d+) member\(s\) rest")
DRAINED = re.compile(r"webhooks: (\d+) event\(s\) of (\d+) member\(s\) passed on")
CONFIRMED = re.compile(r"(\d+) record\(s\) that WHOOP no longer has marked deleted")
ID_SEGMENT = re.compile(r"^(\d+|[0-9a-f]{8}-[0-9a-f-]{27})$")
ENDPOINTS = {
    "/v2/user/profile/basic": "profile",
    "/v2/user/measurement/body": "body measurement",
    "/v2/cycle": "cycles collection",
    "/v2/recovery": "recovery collection",
    "/v2/activity/sleep": "sleep collection",
    "/v2/activity/workout": "workout collection",
    "/v2/activity/sleep/{id}": "sleep by id",
    "/v2/activity/workout/{id}": "workout by id",
    "/v2/cycle/{id}/recovery": "recovery of a cycle",
    "/v2/cycle/{id}": "cycle by id",
    "/v2/cycle/{id}/sleep": "sleep of a cycle",
}


@dataclass(frozen=True)
class Mode:
    """How the tap is run through the day."""

    name: str
    every_minutes: int
    webhooks: bool


@dataclass(frozen=True)
class Action:
    """An edit or deletion a member makes at a simulated minute."""

    minute: int
    member: str
    what: str
    """`delete workout`, `edit workout` or `delete sleep`."""


@dataclass
class TapRun:
    """One run of the tap at a simulated minute: cost, and what it emitted."""

    minute: int
    started: float
    """Wall-clock time the run started: it drains the events delivered before."""
    seconds: float
    cpu_seconds: float
    requests: int
    by_endpoint: Counter[str]
    stream_requests: Counter[str]
    """Requests the SDK's streams made (its http_request_count metric), by endpoint."""
    members_read: int
    """Members whose profile and collections the run read (the others rested)."""
    events: int
    event_members: int
    confirmed_deleted: int = 0
    """Records a collection read missed and a by-id request confirmed deleted."""
    emitted: dict[tuple[str, str], int] = field(default_factory=dict)
    """(stream, id) -> newest updated_at (epoch ms) emitted; recoveries by their sleep id."""
    deleted: set[tuple[str, str]] = field(default_factory=set)
    closed: set[str] = field(default_factory=set)
    """Cycle ids emitted with an end."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--drain-minutes", type=int, default=15)
    parser.add_argument("--poll-hours", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=("webhooks", "polling"))
    parser.add_argument(
        "--output", type=Path, help="where to write the results (default: results/webhooks.json)"
    )
    args = parser.parse_args()
    if DAY_MINUTES % args.drain_minutes or DAY_MINUTES % (args.poll_hours * 60):
        parser.error("--drain-minutes and --poll-hours must divide a day")
    keys = member_keys(args.members)
    # The tap dates the cycles a drain re-reads by the wall clock: the day starts now.
    start = datetime.datetime.now(datetime.timezone.utc).replace(minute=0, second=0, microsecond=0)
    plan = make_plan(keys)
    modes = [
        mode
        for mode in (
            Mode("webhooks", args.drain_minutes, webhooks=True),
            Mode("polling", args.poll_hours * 60, webhooks=False),
        )
        if not args.modes or mode.name in args.modes
    ]
    results = {}
    for mode in modes:
        began = time.perf_counter()
        results[mode.name] = simulate(mode, keys, start, plan)
        results[mode.name]["wall_seconds"] = round(time.perf_counter() - began, 1)
    report(args, start, modes, results)


def member_keys(count: int) -> list[str]:
    """`count` member keys whose sandbox user ids differ."""
    keys: list[str] = []
    user_ids: set[int] = set()
    index = 0
    while len(keys) < count:
        key = f"member-{index:04d}"
        user_id = 10_000 + zlib.crc32(key.encode()) % 900_000  # the sandbox's Member.from_key
        if user_id not in user_ids:
            user_ids.add(user_id)
            keys.append(key)
        index += 1
    return keys


def make_plan(keys: list[str]) -> list[Action]:
    """Who edits or deletes what, and when (a fixed seed: the same plan for both modes)."""
    rng = random.Random(SEED)
    plan = []
    for what, share in (
        ("delete workout", WORKOUT_DELETIONS),
        ("edit workout", WORKOUT_EDITS),
        ("delete sleep", SLEEP_DELETIONS),
    ):
        for member in rng.sample(keys, max(1, round(share * len(keys)))):
            plan.append(Action(rng.randrange(30, DAY_MINUTES - 30), member, what))
    return sorted(plan, key=lambda action: action.minute)


class Clock:
    """The sandbox's clock in simulated minutes since the initial sync, and their wall times.

    The day starts at `day_start` (after the warm-up); day minutes count from there.
    """

    def __init__(self, box: Sandbox, synced_at: float) -> None:
        self.box = box
        self.start_ms = to_ms(box.now)
        self.synced_at = synced_at
        self.day_start = 0
        self.before: list[float] = []
        """Wall-clock time just before the advance to minute i + 1."""
        self.reached: list[float] = []
        """Wall-clock time at which minute i + 1 was reached."""

    @property
    def minute(self) -> int:
        return len(self.reached)

    def advance(self) -> None:
        """One simulated minute on."""
        self.before.append(time.time())
        self.box.advance(minutes=1)
        self.reached.append(time.time())

    def minute_of(self, wall: float) -> int:
        """The minute in which a change made at wall-clock `wall` happened (its end)."""
        return bisect.bisect_right(self.before, wall)

    def ms(self, day_minute: float) -> int:
        """Sandbox time (epoch ms) of a minute of the day."""
        return self.start_ms + round((self.day_start + day_minute) * MINUTE_MS)

    def reconcile_hours(self) -> float:
        """`reconcile_interval_hours` standing for one simulated day, now.

        The tap compares each member's last complete read (wall clock) with now minus the
        interval, and the simulated day passes in minutes of irregular wall time, so the interval
        is set before each run to reach back to the wall-clock moment of one simulated day
        before, plus a minute. Before a day has passed since the initial sync, that moment falls
        before it (an hour before is used), so every member synced then rests until the run a
        day later.
        """
        back = self.minute - DAY_MINUTES + 1
        since = self.reached[back - 1] if back >= 1 else self.synced_at - 3600
        return (time.time() - since) / 3600


def to_ms(moment: datetime.datetime) -> int:
    return round(moment.timestamp() * 1000)


def simulate(
    mode: Mode, keys: list[str], start: datetime.datetime, plan: list[Action]
) -> dict[str, t.Any]:
    """One mode's day: the initial sync and warm-up, the day minute by minute, its cost."""
    box = Sandbox(
        members=keys,
        history_days=HISTORY_DAYS,
        now=start,
        per_minute=None,
        per_day=None,
        access_token_ttl=ACCESS_TOKEN_TTL,
    )
    with SandboxServer(box) as server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = {
            "client_id": c.CLIENT_ID,
            "client_secret": c.CLIENT_SECRET,
            "users": [{"key": key, "refresh_token": box.seed_refresh_token(key)} for key in keys],
            "api_url": server.api_url,
            "oauth_url": server.oauth_url,
            "token_store_path": str(work / "tokens.json"),
            "max_requests_per_minute": 10**9,  # the compressed day cannot pace in real minutes
        }
        config_path = work / "config.json"
        config_path.write_text(json.dumps(config))
        state = work / "state.json"
        print(f"{mode.name}: initial sync of {len(keys)} members, {HISTORY_DAYS} days", flush=True)
        synced_at = time.time()
        initial = c.run_child(
            c.tap(config_path), stdout=work / "out.jsonl", stderr=work / "tap.log"
        )
        state.write_text(json.dumps(c.last_state(work / "out.jsonl")))
        initial_requests = box.stats()["requests"]
        receiver = None
        clock = Clock(box, synced_at)
        runs: list[TapRun] = []
        done: list[dict[str, t.Any]] = []
        deleted_sleeps: dict[str, int] = {}
        actions = list(plan)
        try:
            if mode.webhooks:
                receiver, url = start_receiver(config_path, work / "receiver.log")
                box.configure_webhooks(url=url, retry_delays=list(RETRY_DELAYS))
            # Warm-up: the day starts once the first change is out and a run has seen it, so
            # that webhooks "flow" from the day's first drain on (the same moment in both modes).
            while not box.webhook_log() and clock.minute < DAY_MINUTES:
                clock.advance()
            clock.day_start = clock.minute
            box.wait_for_webhooks(60)
            if mode.webhooks:
                write_reconcile_interval(config, config_path, clock)
            tap_run(box, config_path, state, work, 0, len(keys))
            box.reset_stats()
            box.clear_webhook_log()
            for minute in range(1, DAY_MINUTES + 1):
                clock.advance()
                while actions and actions[0].minute == minute:
                    done.append(act(box, actions.pop(0), deleted_sleeps))
                if minute % mode.every_minutes:
                    continue
                if not box.wait_for_webhooks(60):
                    print("  webhooks still pending after 60 s", flush=True)
                if mode.webhooks:
                    write_reconcile_interval(config, config_path, clock)
                runs.append(tap_run(box, config_path, state, work, minute, len(keys)))
                if minute % 180 == 0:
                    so_far = box.stats()["requests"]
                    print(
                        f"  {mode.name}: {minute // 60:02d}:00 simulated, {so_far} requests so "
                        f"far, last run {runs[-1].seconds:.1f} s",
                        flush=True,
                    )
        finally:
            if receiver is not None:
                receiver.terminate()
                receiver.wait(30)
        stats = box.stats()
        log = box.webhook_log()
        changes = changes_of(log, clock, deleted_sleeps) + cycle_changes(box, keys, clock)
    result = measure(mode, keys, runs, stats, changes, clock, done)
    result["costs"] = costs(runs, log, by_endpoint_of(stats), result["by_endpoint_in_streams"])
    result["initial_sync"] = {
        "requests": initial_requests,
        "seconds": round(initial.seconds, 1),
        "cpu_seconds": round(initial.cpu_seconds, 1),
    }
    result["warm_up_minutes"] = clock.day_start
    return result


def write_reconcile_interval(config: dict[str, t.Any], path: Path, clock: Clock) -> None:
    config["reconcile_interval_hours"] = clock.reconcile_hours()
    path.write_text(json.dumps(config))


def start_receiver(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`tap-whoop webhooks --port 0`, and the URL it logs once it listens."""
    argv = [str(c.BIN / "tap-whoop"), "webhooks", "--config", str(config), "--port", "0"]
    with log.open("wb") as err:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if found := LISTENING.search(log.read_text(errors="replace")):
            return process, found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"tap-whoop webhooks did not start:\n{log.read_text()[-2000:]}")


def act(box: Sandbox, action: Action, deleted_sleeps: dict[str, int]) -> dict[str, t.Any]:
    """Make the member's edit or deletion on their latest record of the kind."""
    verb, kind = action.what.split()
    records = box.records(action.member, t.cast(t.Any, kind))
    if not records:
        return {"minute": action.minute, "member": action.member, "what": action.what, "id": None}
    record = records[0]
    if verb == "delete":
        box.delete_record(action.member, t.cast(t.Any, kind), record["id"])
        if kind == "sleep":
            deleted_sleeps[record["id"]] = record["cycle_id"]
    else:
        sport = "yoga" if record.get("sport_name") != "yoga" else "running"
        box.edit_record(action.member, "workout", record["id"], {"sport_name": sport})
    return {
        "minute": action.minute,
        "member": action.member,
        "what": action.what,
        "id": record["id"],
    }


def tap_run(
    box: Sandbox, config: Path, state: Path, work: Path, minute: int, members: int
) -> TapRun:
    """Run the tap once; its cost, and what it emitted."""
    before = box.stats()
    output, log = work / "out.jsonl", work / "tap.log"
    started = time.time()
    child = c.run_child(c.tap(config, state), stdout=output, stderr=log)
    after = box.stats()
    by_endpoint: Counter[str] = Counter()
    for path, count in after["by_path"].items():
        if count > before["by_path"].get(path, 0):
            by_endpoint[endpoint(path)] += count - before["by_path"].get(path, 0)
    run = TapRun(
        minute=minute,
        started=started,
        seconds=child.seconds,
        cpu_seconds=child.cpu_seconds,
        requests=after["requests"] - before["requests"],
        by_endpoint=by_endpoint,
        stream_requests=Counter(),
        members_read=members,
        events=0,
        event_members=0,
    )
    last_state = None
    with output.open() as lines:
        for line in lines:
            if line.startswith('{"type":"STATE"'):
                last_state = line
            elif line.startswith('{"type":"RECORD"'):
                note_record(run, json.loads(line))
    if last_state is not None:
        state.write_text(json.dumps(json.loads(last_state)["value"]))
    for line in log.read_text(errors="replace").splitlines():
        if '"metric":"http_request_count"' in line:
            metric = json.loads(line.partition("METRIC: ")[2])
            run.stream_requests[metric["tags"]["endpoint"]] += metric["value"]
        elif found := RESTING.search(line):
            run.members_read = members - int(found.group(1))
        elif found := DRAINED.search(line):
            run.events, run.event_members = int(found.group(1)), int(found.group(2))
        elif found := CONFIRMED.search(line):
            run.confirmed_deleted += int(found.group(1))
    return run


def note_record(run: TapRun, message: dict[str, t.Any]) -> None:
    stream, record = message["stream"], message["record"]
    if stream not in ("cycles", *EVENT_KINDS):
        return
    if record.get("_sdc_deleted_at"):
        key = "cycle_id" if stream == "recovery" else "id"
        run.deleted.add((stream, str(record[key])))
        return
    record_id = str(record["sleep_id"] if stream == "recovery" else record["id"])
    updated = to_ms(datetime.datetime.fromisoformat(record["updated_at"].replace("Z", "+00:00")))
    key = (stream, record_id)
    run.emitted[key] = max(run.emitted.get(key, 0), updated)
    if stream == "cycles" and record.get("end"):
        run.closed.add(record_id)


@dataclass(frozen=True)
class Change:
    """A changed record: its stream, key, what happened, and when (epoch ms of sandbox time)."""

    stream: str
    id: str
    action: str
    """`updated`, `deleted`; for cycles `new` or `closed`."""
    at: int


def changes_of(
    log: list[dict[str, t.Any]], clock: Clock, deleted_sleeps: dict[str, int]
) -> list[Change]:
    """The sandbox's change log: each `<kind>.updated` and `<kind>.deleted`, in simulated time."""
    changes = []
    for entry in log:
        kind, _, action = entry["type"].partition(".")
        minute = clock.minute_of(entry["changed_at"]) - clock.day_start
        record_id = entry["id"]
        if kind == "recovery" and action == "deleted":
            record_id = str(deleted_sleeps.get(record_id, record_id))  # emitted by cycle id
        changes.append(Change(kind, record_id, action, clock.ms(minute)))
    return changes


def cycle_changes(box: Sandbox, keys: list[str], clock: Clock) -> list[Change]:
    """Cycles that began or ended (closed: their `end` appeared) within the day."""
    first, last = clock.ms(0), clock.ms(DAY_MINUTES)
    changes = []
    for key in keys:
        for cycle in box.records(key, "cycle"):
            began = to_ms(datetime.datetime.fromisoformat(cycle["start"].replace("Z", "+00:00")))
            if began < first - 2 * 86_400_000:
                break
            if first < began <= last:
                changes.append(Change("cycles", str(cycle["id"]), "new", began))
            if cycle.get("end"):
                ended = to_ms(datetime.datetime.fromisoformat(cycle["end"].replace("Z", "+00:00")))
                if first < ended <= last:
                    changes.append(Change("cycles", str(cycle["id"]), "closed", ended))
    return changes


def freshness(change: Change, runs: list[TapRun], clock: Clock) -> float | None:
    """Simulated minutes from the change to the first run that emitted it; None: none did.

    An update is out once a version at least as new is emitted. Its log entry dates it to the
    end of its simulated minute; the emitted `updated_at`, when it falls in that minute, is
    the exact moment (appearing, scoring and edits set it).
    """
    key = (change.stream, change.id)
    changed = change.at
    for run in runs:
        at = clock.ms(run.minute)
        if at < change.at:
            continue
        if change.action == "deleted":
            found = key in run.deleted
        elif change.action == "closed":
            found = change.id in run.closed
        elif change.action == "new":
            found = key in run.emitted
        else:
            updated = run.emitted.get(key, 0)
            found = updated > change.at - MINUTE_MS
            if change.at - MINUTE_MS < updated <= change.at:
                changed = updated
        if found:
            return (at - changed) / MINUTE_MS
    return None


def measure(
    mode: Mode,
    keys: list[str],
    runs: list[TapRun],
    stats: dict[str, t.Any],
    changes: list[Change],
    clock: Clock,
    actions: list[dict[str, t.Any]],
) -> dict[str, t.Any]:
    members = len(keys)
    requests = stats["requests"]
    by_endpoint = by_endpoint_of(stats)
    in_streams: Counter[str] = Counter()
    for run in runs:
        in_streams.update(run.stream_requests)
    events = [change for change in changes if change.stream != "cycles"]
    waits: dict[str, list[float]] = defaultdict(list)
    missed: Counter[str] = Counter()
    for change in changes:
        group = group_of(change)
        minutes = freshness(change, runs, clock)
        if minutes is None:
            missed[group] += 1
        else:
            waits[group].append(minutes)
    event_waits = [m for group, values in waits.items() if group != "cycles" for m in values]
    all_waits = [m for values in waits.values() for m in values]
    peak = max(runs, key=lambda run: run.requests)
    return {
        "every_minutes": mode.every_minutes,
        "webhooks": mode.webhooks,
        "runs": len(runs),
        "requests": requests,
        "requests_per_member_day": round(requests / members, 2),
        "changes": {
            "events": dict(Counter(f"{e.stream}.{e.action}" for e in events)),
            "cycles": dict(Counter(e.action for e in changes if e.stream == "cycles")),
        },
        "changed_records": len(events),
        "changed_records_with_cycles": len(changes),
        "requests_per_changed_record": round(requests / max(1, len(events)), 2),
        "requests_per_changed_record_with_cycles": round(requests / max(1, len(changes)), 2),
        "freshness_minutes": {
            "events": summary(event_waits),
            "with_cycles": summary(all_waits),
            **{group: summary(values) for group, values in sorted(waits.items())},
        },
        "not_emitted_by_day_end": dict(missed),
        "rate_limited": stats["rate_limited"],
        "by_status": stats["by_status"],
        "by_endpoint": dict(by_endpoint.most_common()),
        "by_endpoint_in_streams": {endpoint(p): n for p, n in in_streams.most_common()},
        "members_per_app": math.floor(DAILY_BUDGET / (requests / members)) if requests else None,
        "member_reads": sum(run.members_read for run in runs),
        "drained_events": sum(run.events for run in runs),
        "drain_member_batches": sum(run.event_members for run in runs),
        "peak_run": {
            "minute": peak.minute,
            "requests": peak.requests,
            "members_read": peak.members_read,
            "real_minutes_at_90_per_minute": round(peak.requests / REAL_PACE, 1),
        },
        "tap_seconds": round(sum(run.seconds for run in runs), 1),
        "tap_cpu_seconds": round(sum(run.cpu_seconds for run in runs), 1),
        "median_run_seconds": round(c.median([run.seconds for run in runs]), 2),
        "webhook_deliveries": stats["webhooks"],
        "actions": actions,
        "per_run": [
            {
                "minute": run.minute,
                "requests": run.requests,
                "members_read": run.members_read,
                "events": run.events,
                "seconds": round(run.seconds, 2),
                "by_endpoint": dict(run.by_endpoint),
            }
            for run in runs
        ],
    }


def by_endpoint_of(stats: dict[str, t.Any]) -> Counter[str]:
    by_endpoint: Counter[str] = Counter()
    for path, count in stats["by_path"].items():
        by_endpoint[endpoint(path)] += count
    return by_endpoint


BY_ID = ("/v2/activity/sleep/{id}", "/v2/activity/workout/{id}", "/v2/cycle/{id}/recovery")
COLLECTIONS = ("/v2/cycle", "/v2/recovery", "/v2/activity/sleep", "/v2/activity/workout")


def costs(
    runs: list[TapRun],
    log: list[dict[str, t.Any]],
    by_endpoint: Counter[str],
    in_streams: dict[str, int],
) -> dict[str, t.Any]:
    """What the requests were for; the parts add up to the total.

    A drain fetches each record its pending events name once (events for a record still
    pending in the inbox are one), and re-reads the cycles of each member with a sleep or
    workout event: both follow from which events were delivered before which run.
    """
    starts = [run.started for run in runs]
    named: dict[int, set[tuple[str, str]]] = defaultdict(set)
    movers: dict[int, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for entry in log:
        if entry["delivered_at"] is None:
            continue
        index = bisect.bisect_left(starts, entry["delivered_at"])
        if index == len(runs):
            continue  # delivered after the day's last run
        kind, _, action = entry["type"].partition(".")
        if action == "updated":
            named[index].add((kind, entry["id"]))
        if kind in ("sleep", "workout"):
            movers[index][entry["user_id"]].add(kind)
    fetched = Counter(kind for records in named.values() for kind, _ in records)
    confirmed = sum(run.confirmed_deleted for run in runs)
    by_id = sum(by_endpoint.get(path, 0) for path in BY_ID)
    parts = {
        "reads: profile and body measurement": sum(
            in_streams.get(path, 0)
            for path in ("/v2/user/profile/basic", "/v2/user/measurement/body")
        ),
        "reads: collections": sum(in_streams.get(path, 0) for path in COLLECTIONS),
        "drain: one GET per record named by events": sum(fetched.values()),
        "drain: GETs beyond one per record": by_id - sum(fetched.values()) - confirmed,
        "drain: cycles re-read after a new night's sleep": (
            by_endpoint.get("/v2/cycle", 0) - in_streams.get("/v2/cycle", 0)
        ),
        "deletion checks after a collection read": confirmed,
    }
    parts["other"] = sum(by_endpoint.values()) - sum(parts.values())
    return {
        "parts": parts,
        "drain_fetches_by_kind": dict(fetched),
        "expected_cycle_rereads": dict(
            Counter(
                "after sleep events" if "sleep" in kinds else "after workout events only"
                for members in movers.values()
                for kinds in members.values()
            )
        ),
    }


def group_of(change: Change) -> str:
    if change.stream == "cycles":
        return "cycles"
    if change.action == "deleted":
        return "deletions"
    return change.stream


def endpoint(path: str) -> str:
    """A path with its ids replaced by `{id}`."""
    return "/".join("{id}" if ID_SEGMENT.match(part) else part for part in path.split("/"))


def summary(values: list[float]) -> dict[str, t.Any]:
    if not values:
        return {"count": 0, "median": None, "p95": None}
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"count": len(values), "median": round(c.median(ordered), 1), "p95": round(p95, 1)}


def report(
    args: argparse.Namespace,
    start: datetime.datetime,
    modes: list[Mode],
    results: dict[str, dict[str, t.Any]],
) -> None:
    names = {
        "webhooks": f"webhooks, drain every {args.drain_minutes} min",
        "polling": f"polling every {args.poll_hours} h",
    }
    warm_up = results[modes[0].name]["warm_up_minutes"]
    day_start = start + datetime.timedelta(minutes=warm_up)
    print(
        f"\n{args.members} members, one simulated day from {day_start:%Y-%m-%d %H:%M} UTC (run "
        f"times below are from there), after an initial sync of {HISTORY_DAYS} days at "
        f"{start:%H:%M} and {warm_up} min of warm-up (not counted)"
    )
    rows = []
    for mode in modes:
        r = results[mode.name]
        fresh = r["freshness_minutes"]["events"]
        rows.append(
            [
                names[mode.name],
                r["runs"],
                r["requests"],
                r["requests_per_member_day"],
                r["requests_per_changed_record"],
                r["requests_per_changed_record_with_cycles"],
                fresh["median"],
                fresh["p95"],
                sum(r["not_emitted_by_day_end"].values()),
                r["rate_limited"],
                r["members_per_app"],
            ]
        )
    print(c.table(SUMMARY, rows))
    first = results[modes[0].name]
    print(
        f"changed records: {first['changed_records']} events "
        f"({', '.join(f'{k} {v}' for k, v in sorted(first['changes']['events'].items()))}); "
        f"with cycles {first['changed_records_with_cycles']} "
        f"(cycles {', '.join(f'{k} {v}' for k, v in first['changes']['cycles'].items())})"
    )
    print(
        f"against {DAILY_BUDGET:,} requests a day per app (initial syncs aside): "
        + "; ".join(
            f"{names[m.name]} {results[m.name]['requests_per_member_day']} per member-day, "
            f"{results[m.name]['members_per_app']} members"
            for m in modes
        )
    )
    print(
        f"targets (webhooks): <= {TARGET_PER_CHANGE} requests per changed record; median "
        f"freshness within one drain ({args.drain_minutes} min)"
    )

    print("\nfreshness: simulated minutes from the change to the run emitting it (median / p95)")
    groups = ["sleep", "recovery", "workout", "deletions", "cycles"]
    rows = []
    for mode in modes:
        fresh = results[mode.name]["freshness_minutes"]
        rows.append(
            [
                names[mode.name],
                *(
                    f"{fresh[g]['median']} / {fresh[g]['p95']}" if g in fresh else "-"
                    for g in groups
                ),
            ]
        )
    print(c.table(["mode", *groups], rows))

    print("\nrequests by endpoint (in streams: the SDK's reads; outside: drain, deletion checks)")
    paths = sorted(
        {p for mode in modes for p in results[mode.name]["by_endpoint"]},
        key=lambda p: -sum(results[m.name]["by_endpoint"].get(p, 0) for m in modes),
    )
    rows = []
    for path in paths:
        row: list[t.Any] = [ENDPOINTS.get(path, path)]
        for mode in modes:
            r = results[mode.name]
            total = r["by_endpoint"].get(path, 0)
            inside = r["by_endpoint_in_streams"].get(path, 0)
            row += [inside, total - inside]
        rows.append(row)
    headers = ["endpoint"]
    for mode in modes:
        headers += [f"{mode.name} in streams", f"{mode.name} outside"]
    print(c.table(headers, rows))

    print("\nwhat the requests were for (per member-day; per changed record, cycles excluded)")
    labels = list(results[modes[0].name]["costs"]["parts"])
    rows = []
    for label in labels:
        row = [label]
        for mode in modes:
            r = results[mode.name]
            count = r["costs"]["parts"][label]
            row += [
                count,
                round(count / args.members, 2),
                round(count / max(1, r["changed_records"]), 2),
            ]
        rows.append(row)
    headers = ["requests for"]
    for mode in modes:
        headers += [mode.name, "/member-day", "/changed"]
    print(c.table(headers, rows))

    for mode in modes:
        r = results[mode.name]
        peak = r["peak_run"]
        print(
            f"\n{names[mode.name]}: {r['member_reads']} member reads (profile, body and "
            f"collections), {r['drained_events']} events drained in {r['drain_member_batches']} "
            f"member batches; busiest run at {peak['minute'] // 60:02d}:{peak['minute'] % 60:02d} "
            f"with {peak['requests']} requests ({peak['real_minutes_at_90_per_minute']} min at "
            f"{REAL_PACE}/min); tap {r['tap_seconds']} s wall, {r['tap_cpu_seconds']} s CPU over "
            f"{r['runs']} runs; benchmark {r['wall_seconds']} s"
        )
    result = {
        "arguments": sys.argv[1:],
        "members": args.members,
        "history_days": HISTORY_DAYS,
        "initial_sync_at": start.isoformat(),
        "drain_minutes": args.drain_minutes,
        "poll_hours": args.poll_hours,
        "daily_budget": DAILY_BUDGET,
        "target_requests_per_changed_record": TARGET_PER_CHANGE,
        **results,
    }
    if args.output is None:
        path = c.save("webhooks", result)
    else:
        path = args.output
        envelope = {
            "command": f"python benchmarks/webhooks.py {' '.join(sys.argv[1:])}",
            "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        }
        path.write_text(json.dumps({**envelope, **result}, indent=2) + "\n")
    print(f"\nwrote {path}")


SUMMARY = [
    "mode",
    "runs",
    "requests",
    "req/member-day",
    "req/changed",
    "req/changed+cycles",
    "fresh median",
    "fresh p95",
    "missed",
    "429s",
    "members/app",
]


if __name__ == "__main__":
    main()
