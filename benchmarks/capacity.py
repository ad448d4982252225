"""Capacity of one WHOOP app: many members synced daily, then new members' years of history.

Why: WHOOP gives an app 100 requests a minute and 10,000 a day for all of its members. This
asks how many members one app can keep fresh, and how fast it can take on new ones with long
histories without delaying anyone's daily sync:

1. `--members` members (default 1,000) with `--existing-days` of history are synced once (day 0,
   a warm-up, like any day under the budget), then once per simulated day. Day 1 has them alone.
2. On `--onboard-day` (default 2), `--new-members` (default 100) join the app, each with
   `--years` (default 5) of history, and are added to the tap's config. The runs go on, day after
   day, until every new member's backfill is complete (or `--max-days`).

Every day, every shard of the tap runs once, all at the same time, like `--shards` cron jobs
with `member_shard` i/n (one process with `--shards 1`). A run syncs every member that already
has bookmarks first and backfills new members with what the day's budget leaves; when WHOOP's
daily window is nearly spent it stops, saves its state and exits 75 ("resume later"), which is
what a day whose budget is spent should look like, not a failure.

Time: the sandbox's daily window follows the sandbox clock (`day_window_clock="sandbox"`): the
harness advances the clock a day between days, which brings the day's new records and a fresh
10,000-request budget; within a day the clock stands still. The minute window runs on real time,
scaled down by `--k` (default 240: 100 requests per 0.25 s) and the tap's own pacer is set to
100 x k a minute, so neither is what limits a day compressed into a few minutes of wall time;
the limits themselves (100 and 10,000) are WHOOP's. `profile_interval_hours` is rewritten
before each day to stand for one simulated day in wall-clock hours (the tap measures it on the
wall clock; see `Schedule.profile_interval_hours`).

Counted, per day: API requests (the sandbox's), those of existing members per member-day,
existing members fully fresh (each of their four collections listed to the end, up to now, that
day), 429s, exit codes, backfill progress (records of the new members' histories read at least
once, members complete), the tap processes' wall and CPU time and peak RSS; at the end, the
state size. Minimum days for the backfills: ceil(B / (10,000 - I)), where B is the fewest
requests that read the new members' histories (per member: one per 25 records of each of the
four collections, plus profile and body measurement) and I is day 1's requests (the existing
members' daily cost).

    python benchmarks/capacity.py [--members 1000] [--new-members 100] [--years 5] [--shards 4]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import _common as c
from webhooks import member_keys

from tap_whoop.tap import DAY_SPENT_KEY
from whoop_sandbox import Sandbox, SandboxServer

if t.TYPE_CHECKING:
    from whoop_sandbox.data import Kind

PER_MINUTE = 100
PER_DAY = 10_000
PAGE_SIZE = 25
QUOTA_EXIT = 75
DAILY_RESERVE = 20
"""Requests of the daily window the tap leaves unspent (tap_whoop.http.DAILY_RESERVE)."""
"""The tap's exit code when WHOOP's daily window is (nearly) spent: state saved, resume later."""
ACCESS_TOKEN_TTL = 90 * 86_400
"""Seconds of sandbox time: the sandbox's clock runs days ahead in minutes of wall time while the
tap ages its access tokens by the wall clock. Token requests are no API requests (as in
requests_used.py), so a token that outlives the simulation changes no figure."""
COLLECTIONS: dict[str, Kind] = {
    "/v2/cycle": "cycle",
    "/v2/recovery": "recovery",
    "/v2/activity/sleep": "sleep",
    "/v2/activity/workout": "workout",
}
SINGLE = ("/v2/user/profile/basic", "/v2/user/measurement/body")
ID_FIELD = {"cycle": "id", "sleep": "id", "workout": "id", "recovery": "sleep_id"}
STATE_LINE = b'{"type":"STATE"'
TIME = Path("/usr/bin/time")
"""GNU time: the tap's own peak RSS. wait4 cannot give it here: a child forked (vfork) from this
process starts with this process's resident pages counted, and `ru_maxrss` keeps that high
mark across exec, so every tap would seem as large as the sandbox holding 5-year histories.
`time` forks the tap from its own small process."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000, help="existing members")
    parser.add_argument("--new-members", type=int, default=100, help="members onboarded later")
    parser.add_argument("--years", type=float, default=5, help="history of each new member")
    parser.add_argument("--existing-days", type=int, default=7, help="history at day 0")
    parser.add_argument("--onboard-day", type=int, default=2)
    parser.add_argument("--max-days", type=int, default=30, help="give up after this day")
    parser.add_argument(
        "--shards",
        type=int,
        default=4,
        help="tap processes per day, at once (4: both cores busy here; at most 20, the tap's "
        "daily reserve)",
    )
    parser.add_argument("--k", type=float, default=240, help="minute window = 60/k s")
    parser.add_argument(
        "--profile-days",
        type=int,
        default=1,
        choices=(0, 1),
        help="1: profile and body re-read once a simulated day (profile_interval_hours 24); "
        "0: only on a member's first run",
    )
    parser.add_argument(
        "--per-day", type=int, default=PER_DAY, help="daily budget (smaller: smoke tests)"
    )
    parser.add_argument("--output", type=Path, help="default: results/capacity.json")
    parser.add_argument("--keep", type=Path, help="keep the work directory here (logs, states)")
    args = parser.parse_args()
    if args.shards < 1 or args.members < 1 or args.new_members < 0 or args.onboard_day < 1:
        parser.error("--shards and --members must be >= 1, --onboard-day >= 1")
    began = time.perf_counter()
    result = Simulation(args).run()
    result["benchmark_wall_seconds"] = round(time.perf_counter() - began, 1)
    report(args, result)


@dataclass
class DayLog:
    """What the sandbox served during one day: collection pages by member and kind."""

    pages: Counter[tuple[str, str]] = field(default_factory=Counter)
    walked: set[tuple[str, str]] = field(default_factory=set)
    """(member, kind) listed to the end of a window reaching up to now (no `end`)."""
    windows: Counter[str] = field(default_factory=Counter)
    """Pages by window shape: start/no start, end/no end (a resumed backfill sends an end)."""
    tracked: Counter[str] = field(default_factory=Counter)
    """Pages served to new members: "history" (no start, or an end: a backfill walk) or
    "incremental" (a start and no end: new records since the bookmark)."""


class PageLog:
    """Wraps `Sandbox.page`: per day, who was listed how far; ids served to new members."""

    def __init__(self, box: Sandbox) -> None:
        self._serve = box.page
        self._lock = threading.Lock()
        self.day = DayLog()
        self.tracked: set[str] = set()
        self.served: dict[tuple[str, str], set[str]] = defaultdict(set)
        box.page = self._page  # type: ignore[method-assign]

    def _page(self, key: str, kind: Kind, **query: t.Any) -> t.Any:
        records, last = self._serve(key, kind, **query)
        shape = f"{'start' if query['start'] is not None else 'no start'}, " + (
            "end" if query["end"] is not None else "no end"
        )
        with self._lock:
            self.day.pages[(key, kind)] += 1
            self.day.windows[shape] += 1
            if last is None and query["end"] is None:
                self.day.walked.add((key, kind))
            if key in self.tracked:
                history = query["start"] is None or query["end"] is not None
                self.day.tracked["history" if history else "incremental"] += 1
                field_name = ID_FIELD[kind]
                self.served[(key, kind)].update(str(r[field_name]) for r in records)
        return records, last

    def new_day(self) -> DayLog:
        with self._lock:
            day, self.day = self.day, DayLog()
        return day


@dataclass
class TapProcess:
    """One shard's run of `tap-whoop` on one day."""

    shard: int
    returncode: int
    seconds: float
    cpu_seconds: float
    max_rss_mib: float
    last_line: str


class Schedule:
    """Wall-clock moments of each day's runs, to express simulated days in wall-clock hours."""

    def __init__(self) -> None:
        self.ended: dict[int, float] = {}

    def profile_interval_hours(self, day: int, every_days: int) -> float:
        """`profile_interval_hours` that makes profiles read on day d - 1 due on day d.

        The tap re-reads a member's profile once the wall-clock time since its last read
        reaches the interval. Set to the time since halfway between the end of the previous
        day's runs and now, every read of an earlier day is due and none of this day's
        (each member's profile is read at most once per run anyway). 0 (`--profile-days 0`):
        a year, so only a member's first run reads them.
        """
        if every_days == 0:
            return 24.0 * 365
        previous = self.ended.get(day - 1)
        if previous is None:
            return 24.0 * 365
        now = time.time()
        return max((now - (previous + now) / 2) / 3600, 1e-6)


class Simulation:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        keys = member_keys(args.members + args.new_members)
        self.existing = keys[: args.members]
        self.new = keys[args.members :]
        self.history_days = round(args.years * 365.25)
        self.schedule = Schedule()
        self.history: dict[tuple[str, str], set[str]] = {}
        """(new member, kind) -> ids of the records their history held at onboarding."""
        self.onboarding: dict[str, t.Any] | None = None
        self.per_day = args.per_day

    def run(self) -> dict[str, t.Any]:
        args = self.args
        # The sandbox's clock trails the wall clock, so no record ever lies in the tap's future.
        start = datetime.datetime.now(datetime.timezone.utc).replace(
            minute=0, second=0, microsecond=0
        ) - datetime.timedelta(days=args.max_days + 2)
        built = time.perf_counter()
        box = Sandbox(
            members=self.existing,
            history_days=args.existing_days,
            now=start,
            per_minute=PER_MINUTE,
            per_day=args.per_day,
            minute_window=60 / args.k,
            day_window_clock="sandbox",
            access_token_ttl=ACCESS_TOKEN_TTL,
            count_by_member=True,
        )
        print(
            f"sandbox: {len(self.existing)} members, {args.existing_days} days each, built in "
            f"{time.perf_counter() - built:.1f} s",
            flush=True,
        )
        log = PageLog(box)
        with SandboxServer(box) as server, tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) if args.keep is None else args.keep
            work.mkdir(parents=True, exist_ok=True)
            self.box, self.server, self.log, self.work = box, server, log, work
            days = self.days()
            states = [work / f"state-{shard}.json" for shard in range(args.shards)]
            state_bytes = [p.stat().st_size if p.exists() else 0 for p in states]
            result = self.summarize(days, state_bytes)
        return result

    def config(self, members: list[str], shard: int, profile_hours: float) -> Path:
        config: dict[str, t.Any] = {
            "client_id": c.CLIENT_ID,
            "client_secret": c.CLIENT_SECRET,
            "users": [
                {"key": key, "refresh_token": self.box.seed_refresh_token(key)} for key in members
            ],
            "api_url": self.server.api_url,
            "oauth_url": self.server.oauth_url,
            "token_store_path": str(self.work / "tokens.json"),
            "max_requests_per_minute": round(PER_MINUTE * self.args.k),
            "profile_interval_hours": profile_hours,
        }
        if self.args.shards > 1:
            config["member_shard"] = f"{shard}/{self.args.shards}"
        path = self.work / f"config-{shard}.json"
        path.write_text(json.dumps(config))
        return path

    def days(self) -> list[dict[str, t.Any]]:
        args, box = self.args, self.box
        members = list(self.existing)
        onboard: dict[str, t.Any] | None = None
        results = []
        for day in range(args.max_days + 1):
            if day:
                box.advance(days=1)
            if day == args.onboard_day and self.new:
                onboard = self.onboard()
                members += self.new
            box.reset_stats()
            self.log.new_day()
            cpu_before = _self_cpu()
            profile_hours = self.schedule.profile_interval_hours(day, args.profile_days)
            configs = [self.config(members, s, profile_hours) for s in range(args.shards)]
            started = time.perf_counter()
            processes = self.run_shards(configs, day)
            self.schedule.ended[day] = time.time()
            wall = time.perf_counter() - started
            stats = box.stats()
            served = self.log.new_day()
            figures = self.measure(day, stats, served, processes, wall, onboard)
            figures["sandbox_cpu_seconds"] = round(_self_cpu() - cpu_before, 1)
            results.append(figures)
            print(day_line(figures), flush=True)
            if self.new and day >= args.onboard_day and figures["backfill"]["complete"]:
                break
            if not self.new and day >= 1:
                break
        self.onboarding = onboard
        return results

    def onboard(self) -> dict[str, t.Any]:
        """Add the new members to the sandbox; note what their histories hold."""
        began = time.perf_counter()
        totals: dict[str, dict[str, int]] = {}
        costs = []
        for key in self.new:
            self.box.add_member(key, history_days=self.history_days)
            totals[key] = {}
            cost = len(SINGLE)
            for kind in COLLECTIONS.values():
                ids = set(self.box.record_ids(key, kind))
                self.history[(key, kind)] = ids
                totals[key][kind] = len(ids)
                cost += max(1, math.ceil(len(ids) / PAGE_SIZE))
            costs.append(cost)
        least = sum(costs)
        self.log.tracked.update(self.new)
        records = sum(sum(kinds.values()) for kinds in totals.values())
        seconds = time.perf_counter() - began
        print(
            f"onboarded {len(self.new)} members, {self.history_days} days each: {records:,} "
            f"records, at least {least:,} requests to read them ({seconds:.1f} s to generate)",
            flush=True,
        )
        by_kind: Counter[str] = Counter()
        for kinds in totals.values():
            by_kind.update(kinds)
        return {
            "members": len(self.new),
            "history_days": self.history_days,
            "records": records,
            "records_by_kind": dict(by_kind),
            "minimum_requests": least,
            "minimum_requests_by_member": costs,
            "generate_seconds": round(seconds, 1),
        }

    def run_shards(self, configs: list[Path], day: int) -> list[TapProcess]:
        """Start every shard at once; wait for each (wait4: its own CPU time and peak RSS)."""
        running = []
        for shard, config in enumerate(configs):
            state = self.work / f"state-{shard}.json"
            argv = c.tap(config, state if state.exists() else None)
            measured = self.work / f"time-{shard}.txt"
            if TIME.exists():
                argv = [str(TIME), "-f", "%M", "-o", str(measured), *argv]
            states = (self.work / f"states-{shard}.jsonl").open("wb")
            stderr = (self.work / f"tap-day{day}-{shard}.log").open("wb")
            began = time.perf_counter()
            tap = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr)
            keep = subprocess.Popen(
                ["grep", "-F", STATE_LINE.decode()], stdin=tap.stdout, stdout=states
            )
            assert tap.stdout is not None
            tap.stdout.close()  # grep holds the pipe; the tap sees a closed pipe if grep dies
            running.append((shard, tap, keep, began, states, stderr))
        processes = []
        for shard, tap, keep, began, states, stderr in running:
            _, status, usage = os.wait4(tap.pid, 0)
            seconds = time.perf_counter() - began
            tap.returncode = os.waitstatus_to_exitcode(status)
            keep.wait()
            states.close()
            stderr.close()
            self.save_state(shard)
            last = _last_line(self.work / f"tap-day{day}-{shard}.log")
            measured = self.work / f"time-{shard}.txt"
            peak_kib = usage.ru_maxrss  # inflated by this process's RSS; see TIME
            if measured.exists():
                peak_kib = int(_last_line(measured).split()[-1])
                measured.unlink()
            processes.append(
                TapProcess(
                    shard,
                    tap.returncode,
                    round(seconds, 1),
                    round(usage.ru_utime + usage.ru_stime, 1),
                    round(peak_kib / 1024, 1),
                    last,
                )
            )
            if tap.returncode not in (0, QUOTA_EXIT):
                print(f"  day {day} shard {shard}: exit {tap.returncode}: {last}", flush=True)
        return processes

    def save_state(self, shard: int) -> None:
        """The run's last STATE message becomes the next run's --state (none: keep the old).

        The tap's note of a spent day counts in real time, while a simulated day passes in
        minutes: it is dropped here, as the reset of WHOOP's day would end it.
        """
        lines = self.work / f"states-{shard}.jsonl"
        last = _last_line(lines, binary=True)
        if last:
            value = json.loads(last)["value"]
            value.pop(DAY_SPENT_KEY, None)
            (self.work / f"state-{shard}.json").write_text(json.dumps(value))
        lines.unlink()

    def measure(
        self,
        day: int,
        stats: dict[str, t.Any],
        served: DayLog,
        processes: list[TapProcess],
        wall: float,
        onboard: dict[str, t.Any] | None,
    ) -> dict[str, t.Any]:
        by_member: dict[str, dict[str, int]] = stats.get("by_member", {})
        existing_requests = sum(sum(by_member.get(key, {}).values()) for key in self.existing)
        new_requests = sum(sum(by_member.get(key, {}).values()) for key in self.new)
        kinds = tuple(COLLECTIONS.values())
        stale = [
            key for key in self.existing if not all((key, kind) in served.walked for kind in kinds)
        ]
        fresh = len(self.existing) - len(stale)
        profiles = sum(1 for key in self.existing if SINGLE[0] in by_member.get(key, {}))
        existing_paths: Counter[str] = Counter()
        for key in self.existing:
            existing_paths.update(by_member.get(key, {}))
        figures: dict[str, t.Any] = {
            "day": day,
            "requests": stats["requests"],
            "rate_limited": stats["rate_limited"],
            "by_status": stats["by_status"],
            "existing_requests": existing_requests,
            "existing_requests_per_member": round(existing_requests / len(self.existing), 3),
            "existing_by_path": dict(existing_paths),
            "existing_fresh": fresh,
            "existing_not_fresh": [
                {
                    "member": key,
                    "user_id": self.box.member(key).user_id,
                    "walked": [kind for kind in kinds if (key, kind) in served.walked],
                    "pages": {kind: served.pages.get((key, kind), 0) for kind in kinds},
                    "requests": by_member.get(key, {}),
                }
                for key in stale[:20]
            ],
            "existing_profiles_read": profiles,
            "new_requests": new_requests,
            "new_pages": dict(served.tracked),
            "unattributed_requests": stats["requests"] - existing_requests - new_requests,
            "page_windows": dict(served.windows),
            "exit_codes": dict(Counter(str(p.returncode) for p in processes)),
            "wall_seconds": round(wall, 1),
            "tap_cpu_seconds": round(sum(p.cpu_seconds for p in processes), 1),
            "tap_max_rss_mib": max(p.max_rss_mib for p in processes),
            "tap_rss_sum_mib": round(sum(p.max_rss_mib for p in processes), 1),
            "processes": [p.__dict__ for p in processes],
        }
        if onboard is not None:
            figures["backfill"] = self.progress()
        return figures

    def progress(self) -> dict[str, t.Any]:
        """How much of the new members' histories (as at onboarding) has been read."""
        total = read = 0
        complete = 0
        started = 0
        for key in self.new:
            done = True
            touched = False
            for kind in COLLECTIONS.values():
                wanted = self.history[(key, kind)]
                got = len(wanted & self.log.served.get((key, kind), set()))
                total += len(wanted)
                read += got
                done = done and got == len(wanted)
                touched = touched or got > 0
            complete += done
            started += touched
        return {
            "records": total,
            "records_read": read,
            "share_read": round(read / total, 4) if total else 1.0,
            "members_started": started,
            "members_done": complete,
            "complete": complete == len(self.new),
        }

    def summarize(self, days: list[dict[str, t.Any]], state_bytes: list[int]) -> dict[str, t.Any]:
        args = self.args
        onboard = self.onboarding
        measured = [d for d in days if d["day"] >= 1]
        day1 = next((d for d in days if d["day"] == 1), None)
        result: dict[str, t.Any] = {
            "arguments": sys.argv[1:],
            "members": args.members,
            "new_members": args.new_members,
            "years": args.years,
            "existing_days": args.existing_days,
            "onboard_day": args.onboard_day,
            "shards": args.shards,
            "k": args.k,
            "minute_window_seconds": round(60 / args.k, 4),
            "tap_max_requests_per_minute": round(PER_MINUTE * args.k),
            "profile_days": args.profile_days,
            "limits": {"per_minute": PER_MINUTE, "per_day": args.per_day},
            "days": days,
            "rate_limited_total": sum(d["rate_limited"] for d in days),
            "exit_codes_total": dict(sum((Counter(d["exit_codes"]) for d in days), Counter())),
            "existing_always_fresh": all(d["existing_fresh"] == args.members for d in measured),
            "existing_fresh_fewest": min((d["existing_fresh"] for d in measured), default=None),
            "peak_rss_mib": max(d["tap_max_rss_mib"] for d in days),
            "harness_max_rss_mib": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
            ),
            "state_bytes_total": sum(state_bytes),
            "state_bytes_largest_shard": max(state_bytes),
            "state_bytes_per_member": round(
                sum(state_bytes) / (args.members + (args.new_members if onboard else 0)), 1
            ),
        }
        if day1 is not None:
            result["daily_incremental_requests"] = day1["requests"]
            result["requests_per_member_day"] = day1["existing_requests_per_member"]
            result["members_per_app_at_this_rate"] = math.floor(
                args.per_day / day1["existing_requests_per_member"]
            )
        if onboard is not None and day1 is not None:
            done_day = next((d["day"] for d in days if d.get("backfill", {}).get("complete")), None)
            spare = args.per_day - day1["requests"]
            costs = onboard.pop("minimum_requests_by_member")
            daily_each = len(COLLECTIONS) + (len(SINGLE) if args.profile_days else 0)
            result["onboarding"] = {
                **onboard,
                "complete_on_day": done_day,
                "days_to_complete": None if done_day is None else done_day - args.onboard_day + 1,
                "spare_requests_per_day": spare,
                "minimum_days": math.ceil(onboard["minimum_requests"] / spare)
                if spare > 0
                else None,
                "fewest_days_with_reserve_and_new_members_daily_syncs": fewest_days(
                    costs, args.per_day, DAILY_RESERVE, day1["requests"], daily_each
                ),
                "new_member_requests": sum(d["new_requests"] for d in days),
            }
        return result


def fewest_days(
    costs: list[int], per_day: int, reserve: int, existing: int, daily_each: int
) -> int | None:
    """Days an ideal scheduler needs to read every new member's history.

    Each day: `per_day` less `reserve` (the tap leaves it for other workers) less the existing
    members' day (`existing`) less `daily_each` for each new member begun on an earlier day (their
    new records: four collections, plus profile and body when due); what is left reads
    histories, one member after the other (fewest members begun and unfinished). `costs`: the
    fewest requests each history takes.
    """
    remaining = sorted(costs)
    current = 0  # the member being read; those before it are done
    spent = 0  # requests spent on the current member's history so far
    for day in range(1, 10_000):
        begun = current + (1 if spent else 0)
        room = per_day - reserve - existing - daily_each * begun
        if room <= 0:
            return None
        while current < len(remaining) and room > 0:
            take = min(remaining[current] - spent, room)
            room -= take
            spent += take
            if spent == remaining[current]:
                current, spent = current + 1, 0
        if current == len(remaining):
            return day
    return None


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _last_line(path: Path, binary: bool = False) -> t.Any:
    """The file's last non-empty line (read from the end: STATE lines can be megabytes)."""
    if not path.exists():
        return b"" if binary else ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        chunk = 1 << 16
        data = b""
        position = size
        while position > 0:
            step = min(chunk, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
            stripped = data.rstrip(b"\n")
            if b"\n" in stripped:
                line = stripped.rsplit(b"\n", 1)[1]
                break
        else:
            line = data.rstrip(b"\n")
    return line if binary else line.decode(errors="replace")[-300:]


def day_line(d: dict[str, t.Any]) -> str:
    text = (
        f"day {d['day']}: {d['requests']} requests ({d['existing_requests']} existing, "
        f"{d['existing_requests_per_member']}/member; {d['new_requests']} new), fresh "
        f"{d['existing_fresh']}, 429s {d['rate_limited']}, exits {d['exit_codes']}, "
        f"{d['wall_seconds']} s wall, tap CPU {d['tap_cpu_seconds']} s, sandbox CPU "
        f"{d.get('sandbox_cpu_seconds', '-')} s, peak RSS {d['tap_max_rss_mib']} MiB"
    )
    if "backfill" in d:
        b = d["backfill"]
        text += (
            f"; backfill {b['share_read']:.1%} read, {b['members_done']}/"
            f"{b['members_started']} members done/started"
        )
    return text


SUMMARY = [
    "day",
    "requests",
    "existing",
    "req/member-day",
    "fresh",
    "profiles",
    "new members",
    "history pages",
    "429s",
    "exit codes",
    "backfill read",
    "done",
    "wall s",
    "tap CPU s",
    "peak RSS MiB",
]


def report(args: argparse.Namespace, result: dict[str, t.Any]) -> None:
    rows = []
    for d in result["days"]:
        b = d.get("backfill")
        rows.append(
            [
                d["day"],
                d["requests"],
                d["existing_requests"],
                d["existing_requests_per_member"],
                f"{d['existing_fresh']}/{args.members}",
                d["existing_profiles_read"],
                d["new_requests"],
                d["new_pages"].get("history", 0),
                d["rate_limited"],
                " ".join(f"{code}x{n}" for code, n in sorted(d["exit_codes"].items())),
                f"{b['share_read']:.1%}" if b else "-",
                f"{b['members_done']}/{args.new_members}" if b else "-",
                d["wall_seconds"],
                d["tap_cpu_seconds"],
                d["tap_max_rss_mib"],
            ]
        )
    print()
    print(
        f"{args.members} members ({args.existing_days} days of history at day 0), "
        f"{args.new_members} more with {args.years:g} years each from day {args.onboard_day}; "
        f"{args.shards} tap process(es) a day; limits {PER_MINUTE}/min (window {60 / args.k:g} s) "
        f"and {args.per_day:,}/day (one simulated day)"
    )
    print(c.table(SUMMARY, rows))
    print(f"day 0 is the warm-up (first sync of {args.members} members), not counted")
    if "requests_per_member_day" in result:
        print(
            f"requests per member-day (day 1): {result['requests_per_member_day']} "
            f"(minimum {4 + (2 if args.profile_days else 0)}: four collections"
            f"{' + profile and body' if args.profile_days else ''}); members per app at that "
            f"rate: {result['members_per_app_at_this_rate']:,}"
        )
    if onboard := result.get("onboarding"):
        print(
            f"backfills: {onboard['records']:,} records, at least {onboard['minimum_requests']:,} "
            f"requests; spare per day {onboard['spare_requests_per_day']:,} -> minimum "
            f"{onboard['minimum_days']} day(s) (with the tap's reserve of {DAILY_RESERVE} and "
            f"the new members' own daily syncs: "
            f"{onboard['fewest_days_with_reserve_and_new_members_daily_syncs']}); took "
            f"{onboard['days_to_complete']} (complete on day {onboard['complete_on_day']}); "
            f"new members' requests in all {onboard['new_member_requests']:,}"
        )
    print(
        f"429s: {result['rate_limited_total']}; existing members fresh every day: "
        f"{result['existing_always_fresh']}; peak RSS of a tap process "
        f"{result['peak_rss_mib']} MiB; final state {result['state_bytes_total']:,} bytes "
        f"({result['state_bytes_per_member']} per member, largest shard "
        f"{result['state_bytes_largest_shard']:,}); benchmark {result['benchmark_wall_seconds']} s"
    )
    envelope = {
        "command": " ".join(["python benchmarks/capacity.py", *sys.argv[1:]]),
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    path = args.output or c.RESULTS / "capacity.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**envelope, **result}, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
