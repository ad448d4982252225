"""CPU time per record of the `tap-whoop` command, beside a bare HTTP loop's.

Why: the tap adds pacing, token handling, retries, schema conformance and Singer messages on
top of the HTTP calls. The bare loop (`_bare_loop.py`) makes the same calls (endpoints, page
size, nextToken pages) with one requests.Session and writes the same records as JSON lines, so
the difference is the tap's own work rather than the sandbox's speed.

Both run as child processes of the same Python against one unthrottled sandbox, alternating,
after one untimed warm-up each; the median of REPEATS timed runs is reported. Start-up counts:
users pay for it too, and 10 years of history keeps it a small share. The measure is the
child's own CPU time (user + system) per record: it barely moves when the machine is busy.
Wall time and records per second are shown too, but they depend on what else the machine
runs (the sandbox shares it), so no target is set on them.

    python benchmarks/throughput.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import typing as t
from pathlib import Path

import _common as c

HISTORY_DAYS = 3650
REPEATS = 3
BARE_LOOP = Path(__file__).resolve().parent / "_bare_loop.py"


def main() -> None:
    load_before = os.getloadavg()[0]
    with c.sandbox(HISTORY_DAYS) as box, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = sum(c.collection_sizes(box).values()) + 2  # + profile and body
        config = c.write_config(box, work, max_requests_per_minute=10**9)
        api_url = box.server.api_url  # type: ignore[attr-defined]
        commands = {
            "tap-whoop": lambda: c.tap(config),
            # A fresh token each time: the tap's refresh revokes the member's older tokens.
            "bare loop": lambda: [
                sys.executable,
                str(BARE_LOOP),
                api_url,
                box.issue_access_token(c.MEMBER),
                "/dev/null",
            ],
        }
        runs: dict[str, list[c.Child]] = {name: [] for name in commands}
        requests: dict[str, int] = {}
        for repeat in range(REPEATS + 1):
            for name, command in commands.items():
                argv = command()
                box.reset_stats()
                run = c.run_child(argv, stderr=work / "stderr.log")
                requests[name] = box.stats()["requests"]
                if repeat:  # the first round only warms caches
                    runs[name].append(run)

    result = {name: summarize(measured, requests[name], records) for name, measured in runs.items()}
    tap, bare = result["tap-whoop"], result["bare loop"]
    ratio = tap["records_per_second"] / bare["records_per_second"]
    cpu_ratio = bare["median_cpu_seconds"] / tap["median_cpu_seconds"]
    per_record = tap["cpu_us_per_record"] / bare["cpu_us_per_record"]

    print(f"{records:,} records ({HISTORY_DAYS} days of history), no rate limit")
    headers = ["run", "requests", "CPU s", "median CPU s", "CPU µs/record", "wall s", "records/s"]
    print(c.table(headers, [row(name, r) for name, r in result.items()]))
    print(
        f"CPU per record: tap-whoop {tap['cpu_us_per_record']} µs, bare loop "
        f"{bare['cpu_us_per_record']} µs ({per_record:.1f} times); "
        f"records/s by wall time, tap/bare: {ratio:.2f} (moves with the machine's load)"
    )
    path = c.save(
        "throughput",
        {
            "history_days": HISTORY_DAYS,
            "records": records,
            "repeats": REPEATS,
            "runs": result,
            "cpu_per_record_tap_over_bare": round(per_record, 3),
            "ratio": round(ratio, 3),
            "cpu_ratio": round(cpu_ratio, 3),
            # What else ran: wall times move with it, CPU per record hardly does.
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
    )
    print(f"wrote {path}")


def summarize(measured: list[c.Child], requests: int, records: int) -> dict[str, t.Any]:
    """Per-run times and their medians; CPU per record and records per second from the medians."""
    median = c.median([run.seconds for run in measured])
    median_cpu = c.median([run.cpu_seconds for run in measured])
    return {
        "requests": requests,
        "seconds": [round(run.seconds, 2) for run in measured],
        "cpu_seconds": [round(run.cpu_seconds, 2) for run in measured],
        "median_seconds": round(median, 3),
        "median_cpu_seconds": round(median_cpu, 3),
        "cpu_us_per_record": round(median_cpu / records * 1e6),
        "records_per_second": round(records / median),
    }


def row(name: str, r: dict[str, t.Any]) -> list[t.Any]:
    cpu = " ".join(f"{s:.2f}" for s in r["cpu_seconds"])
    wall = " ".join(f"{s:.2f}" for s in r["seconds"])
    per_record = [r["median_cpu_seconds"], r["cpu_us_per_record"]]
    return [name, r["requests"], cpu, *per_record, wall, r["records_per_second"]]


if __name__ == "__main__":
    main()
