"""The sleep signals' cost: CPU beside a bare loop, requests per sleep, start-up and memory.

Why: `sleep_signals` is the first high-volume stream (about 960 points a night at the sandbox's
30 s), so the tap's own work per record shows there first. In one run, side by side:

1. the full sync of the six main streams (5 years), `tap-whoop` against `_bare_loop.py`, which
   makes the same calls and writes the same records with one requests.Session;
2. the signal backfill (profile, sleep and `sleep_signals` with `hr` and `skin_temp`, 1 year),
   against `_bare_signals_loop.py`, which does the same in a plain loop; and again with the
   SDK's BATCH messages (`batch_config`: gzipped JSON lines), against the same tap's RECORDs;
3. start-up: `tap-whoop --about` against importing requests and singer_sdk, and the main
   streams' ratio once each side's start-up is taken off (the bare loop's: `import requests`);
4. peak memory of the signal backfill over 1 month and over 10 years of one member.

Each run is a child process against an unthrottled sandbox on loopback; the measure is the
child's own CPU time (user + system), median of REPEATS after one untimed warm-up (memory: one
run each). Nothing asserts: compare with the targets (twice the bare loop; 1.2 for memory).
The children cache bytecode (PYTHONDONTWRITEBYTECODE is dropped from their environment), as an
installed package has its .pyc files: the warm-up round writes them, so no timed run spends
its start-up compiling sources.

    python benchmarks/signals.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import typing as t
from pathlib import Path

import _common as c

from tap_whoop.tap import TapWhoop

HERE = Path(__file__).resolve().parent
MAIN_DAYS = 5 * 365
SIGNAL_DAYS = 365
MEMORY_DAYS = {"1 month": 30, "10 years": 3650}
REPEATS = 3
TYPES = ["hr", "skin_temp"]
SELECT = {"profile", "sleep", "sleep_signals"}


def catalog(config: Path, directory: Path) -> Path:
    """A catalog selecting profile, sleep and sleep_signals only."""
    tap = TapWhoop(config=json.loads(config.read_text()), validate_config=False)
    entries = tap.catalog_dict
    for entry in entries["streams"]:
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = entry["tap_stream_id"] in SELECT
    path = directory / "catalog.json"
    path.write_text(json.dumps(entries))
    return path


def measure(
    box: t.Any, commands: dict[str, t.Callable[[], list[str]]], work: Path
) -> dict[str, dict[str, t.Any]]:
    """Each command REPEATS times (after a warm-up), alternating: CPU, wall, requests."""
    runs: dict[str, list[c.Child]] = {name: [] for name in commands}
    requests: dict[str, dict[str, int]] = {}
    for repeat in range(REPEATS + 1):
        for name, command in commands.items():
            argv = command()
            box.reset_stats()
            run = c.run_child(argv, stderr=work / "stderr.log")
            stats = box.stats()
            requests[name] = {
                "requests": stats["requests"],
                "stream_requests": sum(
                    n for path, n in stats["by_path"].items() if path.endswith("/stream")
                ),
            }
            if repeat:
                runs[name].append(run)
    return {
        name: {
            **requests[name],
            "cpu_seconds": [round(run.cpu_seconds, 2) for run in measured],
            "median_cpu_seconds": round(c.median([run.cpu_seconds for run in measured]), 3),
            "median_seconds": round(c.median([run.seconds for run in measured]), 3),
            "peak_rss_mib": round(max(run.max_rss_mib for run in measured), 1),
        }
        for name, measured in runs.items()
    }


def bare(box: t.Any, script: str, *extra: str) -> list[str]:
    """A bare loop's command line, with a fresh token (the tap's refresh revokes older ones)."""
    api_url = box.server.api_url
    return [
        sys.executable,
        str(HERE / script),
        api_url,
        box.issue_access_token(c.MEMBER),
        "/dev/null",
        *extra,
    ]


def main_streams() -> dict[str, t.Any]:
    with c.sandbox(MAIN_DAYS) as box, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = sum(c.collection_sizes(box).values()) + 2
        config = c.write_config(box, work, max_requests_per_minute=10**9)
        runs = measure(
            box,
            {"tap-whoop": lambda: c.tap(config), "bare loop": lambda: bare(box, "_bare_loop.py")},
            work,
        )
    return {"history_days": MAIN_DAYS, "records": records, "runs": runs}


def signal_backfill() -> dict[str, t.Any]:
    with c.sandbox(SIGNAL_DAYS) as box, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sleeps = box.records(c.MEMBER, "sleep")
        final = [s for s in sleeps if s["score_state"] != "PENDING_SCORE" and s.get("end")]
        config = c.write_config(box, work, max_requests_per_minute=10**9, sleep_signal_types=TYPES)
        selection = catalog(config, work)
        runs = measure(
            box,
            {
                "tap-whoop": lambda: [*c.tap(config), "--catalog", str(selection)],
                "bare loop": lambda: bare(box, "_bare_signals_loop.py", ",".join(TYPES)),
            },
            work,
        )
        points = sum(len(box_signals(box, sleep)) for sleep in final)
    return {
        "history_days": SIGNAL_DAYS,
        "types": TYPES,
        "sleeps": len(sleeps),
        "final_sleeps": len(final),
        "points": points,
        "runs": runs,
    }


def batch_backfill() -> dict[str, t.Any]:
    """The signal backfill again, with the SDK's BATCH messages (`batch_config`) for records."""
    with c.sandbox(SIGNAL_DAYS) as box, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        batch_config = {
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "storage": {"root": (work / "batches").as_uri(), "prefix": "batch-"},
        }
        (work / "batches").mkdir()
        config = c.write_config(
            box,
            work,
            max_requests_per_minute=10**9,
            sleep_signal_types=TYPES,
            batch_config=batch_config,
        )
        selection = catalog(config, work)
        runs = measure(
            box, {"tap-whoop, BATCH": lambda: [*c.tap(config), "--catalog", str(selection)]}, work
        )
    return {"batch_config": batch_config["encoding"], "runs": runs}


def box_signals(box: t.Any, sleep: dict[str, t.Any]) -> list[t.Any]:
    from whoop_sandbox.signals import signal_stream

    return t.cast("list[t.Any]", signal_stream(sleep, TYPES, box.signal_interval)["stream"])


def start_up() -> dict[str, t.Any]:
    commands = {
        "tap-whoop --about": [str(c.BIN / "tap-whoop"), "--about"],
        "import requests, singer_sdk": [sys.executable, "-c", "import requests, singer_sdk"],
        "import requests": [sys.executable, "-c", "import requests"],
    }
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for repeat in range(REPEATS + 1):
        for name, argv in commands.items():
            child = c.run_child(argv)
            if repeat:
                runs[name].append(child.cpu_seconds)
    return {name: round(c.median(values), 3) for name, values in runs.items()}


def memory() -> dict[str, t.Any]:
    result = {}
    for name, days in MEMORY_DAYS.items():
        with c.sandbox(days) as box, tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            config = c.write_config(
                box, work, max_requests_per_minute=10**9, sleep_signal_types=TYPES
            )
            selection = catalog(config, work)
            box.reset_stats()
            run = c.run_child([*c.tap(config), "--catalog", str(selection)], stderr=work / "e")
            stats = box.stats()
        result[name] = {
            "history_days": days,
            "stream_requests": sum(
                n for path, n in stats["by_path"].items() if path.endswith("/stream")
            ),
            "peak_rss_mib": round(run.max_rss_mib, 1),
            "cpu_seconds": round(run.cpu_seconds, 2),
        }
    return result


def ratio(part: dict[str, t.Any]) -> float:
    runs = part["runs"]
    return round(
        runs["tap-whoop"]["median_cpu_seconds"] / runs["bare loop"]["median_cpu_seconds"], 3
    )


def past_start_up(part: dict[str, t.Any], startup: dict[str, float]) -> float:
    """The ratio once each side's start-up is taken off: the tap's `--about` (Python, the SDK
    and the tap imported), the bare loop's `import requests`. What is left is the sync itself."""
    runs = part["runs"]
    tap = runs["tap-whoop"]["median_cpu_seconds"] - startup["tap-whoop --about"]
    bare = runs["bare loop"]["median_cpu_seconds"] - startup["import requests"]
    return round(tap / bare, 3)


def main() -> None:
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # the children's: see the docstring
    main_part = main_streams()
    signals = signal_backfill()
    batch = batch_backfill()
    startup = start_up()
    peak = memory()
    main_part["cpu_tap_over_bare"] = ratio(main_part)
    main_part["cpu_past_start_up_tap_over_bare"] = past_start_up(main_part, startup)
    signals["cpu_tap_over_bare"] = ratio(signals)
    batch["cpu_batch_over_records"] = round(
        batch["runs"]["tap-whoop, BATCH"]["median_cpu_seconds"]
        / signals["runs"]["tap-whoop"]["median_cpu_seconds"],
        3,
    )
    tap_runs = signals["runs"]["tap-whoop"]
    signals["requests_per_final_sleep"] = round(
        tap_runs["stream_requests"] / signals["final_sleeps"], 3
    )
    startup_ratio = round(startup["tap-whoop --about"] / startup["import requests, singer_sdk"], 3)
    small, large = (peak[name]["peak_rss_mib"] for name in MEMORY_DAYS)
    rows = [
        [f"main streams, {MAIN_DAYS // 365} years", name, r["requests"], r["median_cpu_seconds"]]
        for name, r in main_part["runs"].items()
    ] + [
        [
            f"signal backfill, {SIGNAL_DAYS // 365} year",
            name,
            r["requests"],
            r["median_cpu_seconds"],
        ]
        for name, r in [*signals["runs"].items(), *batch["runs"].items()]
    ]
    print(c.table(["part", "run", "requests", "median CPU s"], rows))
    print(
        f"CPU, tap/bare: main streams {main_part['cpu_tap_over_bare']:.2f} (past start-up "
        f"{main_part['cpu_past_start_up_tap_over_bare']:.2f}), signal backfill "
        f"{signals['cpu_tap_over_bare']:.2f} (target ≤ 2), with BATCH messages "
        f"{batch['cpu_batch_over_records']:.2f}x the tap's CPU; {signals['final_sleeps']} final "
        f"sleeps, {signals['points']:,} points, {signals['requests_per_final_sleep']} requests "
        f"per final sleep; start-up {startup} ({startup_ratio:.2f}); peak RSS {small} MiB "
        f"(1 month) vs {large} MiB (10 years): {large / small:.2f}"
    )
    path = c.save(
        "signals",
        {
            "main_streams": main_part,
            "signal_backfill": signals,
            "signal_backfill_batch": batch,
            "start_up_cpu_seconds": startup,
            "start_up_ratio": startup_ratio,
            "memory": peak,
            "memory_ratio": round(large / small, 3),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
