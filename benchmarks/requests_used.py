"""Requests a full sync and a daily incremental run spend, against the fewest that could do.

Why: WHOOP gives an app 100 requests a minute and 10,000 a day, shared by all of its members,
so requests are what limits how many members one app can sync. The fewest requests that read
a collection are one per 25 records (WHOOP's largest page), and at least one; profile and body
measurement cost one each. The sandbox enforces WHOOP's real limits and the tap runs with its
default pacing (90 requests/minute), so the run also shows that the pacing avoids 429s; the full
sync takes a few minutes of wall time.

    python benchmarks/requests_used.py
"""

from __future__ import annotations

import datetime
import json
import math
import tempfile
import typing as t
from collections import Counter
from pathlib import Path

import _common as c

if t.TYPE_CHECKING:
    from whoop_sandbox import Sandbox
    from whoop_sandbox.data import Kind

HISTORY_DAYS = 5 * 365
PAGE_SIZE = 25
TARGET = 1.05
PATHS = {
    "profile": "/v2/user/profile/basic",
    "body_measurement": "/v2/user/measurement/body",
    "cycles": "/v2/cycle",
    "recovery": "/v2/recovery",
    "sleep": "/v2/activity/sleep",
    "workout": "/v2/activity/workout",
}
DETAILS = ("profile", "body_measurement")
ACCESS_TOKEN_TTL = 2 * 86_400
"""Seconds of sandbox time. The sandbox's clock jumps a day in an instant while the tap ages its
access token by the wall clock; a token outliving the jump spares the daily run a 401 that a
real run, a real day later, avoids by refreshing first (token requests are not API requests)."""


class WindowLog:
    """Notes the start/end window of the pages the sandbox serves, per record kind."""

    def __init__(self, box: Sandbox) -> None:
        self.windows: dict[str, tuple[int | None, int | None]] = {}
        self._serve = box.page
        box.page = self._page  # type: ignore[method-assign]

    def _page(self, key: str, kind: Kind, **query: t.Any) -> t.Any:
        self.windows[kind] = (query["start"], query["end"])
        return self._serve(key, kind, **query)

    def records(self, kind: Kind) -> int:
        """How many records the last window asked for holds: what the run had to read."""
        start, end = self.windows[kind]
        return len(self._serve(c.MEMBER, kind, start=start, end=end, limit=10**9)[0])


def main() -> None:
    with (
        c.sandbox(
            HISTORY_DAYS, per_minute=100, per_day=10_000, access_token_ttl=ACCESS_TOKEN_TTL
        ) as box,
        tempfile.TemporaryDirectory() as tmp,
    ):
        work = Path(tmp)
        log = WindowLog(box)
        config = c.write_config(box, work)  # the tap's default max_requests_per_minute
        full = sync(box, log, config, work / "full.jsonl")
        box.advance(days=1)
        state = work / "state.json"
        state.write_text(json.dumps(a_day_later(c.last_state(work / "full.jsonl"))))
        daily = sync(box, log, config, work / "daily.jsonl", state)
        box.advance(hours=3)
        state.write_text(json.dumps(c.last_state(work / "daily.jsonl")))
        hourly = sync(box, log, config, work / "3h.jsonl", state)

    runs = {"full_sync": full, "daily_incremental": daily, "incremental_3h_later": hourly}
    names = {
        "full_sync": f"full sync, {HISTORY_DAYS} days",
        "daily_incremental": "daily run",
        "incremental_3h_later": "3 h later",
    }
    print(c.table(SUMMARY, [summary_row(names[key], r) for key, r in runs.items()]))
    print(f"target: ratio <= {TARGET}, no 429")
    for key, r in runs.items():
        print(f"\n{names[key]}")
        print(c.table(DETAIL, [detail_row(stream, r) for stream in PATHS]))
    path = c.save(
        "requests_used",
        {"history_days": HISTORY_DAYS, "page_size": PAGE_SIZE, "target_ratio": TARGET, **runs},
    )
    print(f"\nwrote {path}")


SUMMARY = ["run", "records read", "minimum", "requests", "ratio", "429s", "wall s"]
DETAIL = ["stream", "window start", "records read", "emitted", "minimum", "requests"]


def summary_row(name: str, r: dict[str, t.Any]) -> list[t.Any]:
    read = sum(r["read"].values())
    return [name, read, r["minimum"], r["requests"], r["ratio"], r["rate_limited"], r["seconds"]]


def detail_row(stream: str, r: dict[str, t.Any]) -> list[t.Any]:
    read = r["read"][stream]
    return [
        stream,
        r["window_start"].get(stream, "-"),
        read,
        r["emitted"].get(stream, 0),
        read if stream in DETAILS else minimum_requests(read),
        r["by_path"].get(PATHS[stream], 0),
    ]


def sync(
    box: Sandbox, log: WindowLog, config: Path, output: Path, state: Path | None = None
) -> dict[str, t.Any]:
    """Run the tap once; count its requests and the records inside the windows it asked for."""
    box.reset_stats()
    log.windows.clear()
    run = c.run_child(c.tap(config, state), stdout=output, stderr=output.with_suffix(".log"))
    stats = box.stats()
    # profile and body measurement are read once a day (`profile_interval_hours`)
    read = {name: min(stats["by_path"].get(PATHS[name], 0), 1) for name in DETAILS}
    starts = {}
    for stream, kind in c.KINDS.items():
        read[stream] = log.records(kind)
        start = log.windows[kind][0]
        starts[stream] = "whole history" if start is None else c.iso(start)
    least = sum(n if name in DETAILS else minimum_requests(n) for name, n in read.items())
    return {
        "seconds": round(run.seconds, 1),
        "requests": stats["requests"],
        "minimum": least,
        "ratio": round(stats["requests"] / least, 3),
        "rate_limited": stats["rate_limited"],
        "by_status": stats["by_status"],
        "by_path": stats["by_path"],
        "window_start": starts,
        "read": read,
        "emitted": emitted(output),
    }


def a_day_later(state: dict[str, t.Any]) -> dict[str, t.Any]:
    """`state` as a real day later: the sandbox's clock jumps, the wall clock does not."""
    for name in DETAILS:
        for partition in state["bookmarks"].get(name, {}).get("partitions", []):
            if "read_at" in partition:
                read_at = datetime.datetime.fromisoformat(
                    partition["read_at"].replace("Z", "+00:00")
                )
                earlier = read_at - datetime.timedelta(days=1)
                partition["read_at"] = earlier.isoformat().replace("+00:00", "Z")
    return state


def minimum_requests(records: int) -> int:
    """One page per 25 records; an empty window still takes one request to see it is empty."""
    return max(1, math.ceil(records / PAGE_SIZE))


def emitted(output: Path) -> dict[str, int]:
    """RECORD messages per stream in a run's output."""
    counts: Counter[str] = Counter()
    with output.open() as lines:
        for line in lines:
            if line.startswith('{"type":"RECORD"'):
                counts[json.loads(line)["stream"]] += 1
    return dict(counts)


if __name__ == "__main__":
    main()
