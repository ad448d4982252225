"""One process, many members: a first sync's CPU, peak memory, STATE output and final state size.

    python benchmarks/members.py                 # 200 and 1,000 members (about 8 minutes)
    python benchmarks/members.py --members 400   # any counts

Each count gets a sandbox of its own (7 days of history per member, no rate limit, so that the
tap's own costs show) and one `tap-whoop` child process with a `users` config of that many
members and a fresh file token store. CPU time and peak RSS are the child's (`getrusage`).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
import typing as t
from pathlib import Path

import _common as c

from whoop_sandbox import Sandbox, SandboxServer

HISTORY_DAYS = 7
HEADERS = [
    "members", "records", "STATE msgs", "STATE MB", "final state MB", "wall s", "tap CPU s",
    "CPU ms/member", "peak RSS MiB",
]  # fmt: skip


def first_sync(members: int) -> dict[str, t.Any]:
    """A first sync of `members` members in one process."""
    keys = [f"m{index:04d}" for index in range(members)]
    box = Sandbox(members=keys, history_days=HISTORY_DAYS, now=c.NOW, per_minute=None, per_day=None)
    with SandboxServer(box) as server, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(
            json.dumps(
                {
                    "client_id": c.CLIENT_ID,
                    "client_secret": c.CLIENT_SECRET,
                    "api_url": server.api_url,
                    "oauth_url": server.oauth_url,
                    "token_store_path": str(Path(tmp) / "tokens.json"),
                    "max_requests_per_minute": 1_000_000,
                    "users": [{"key": k, "refresh_token": box.seed_refresh_token(k)} for k in keys],
                }
            )
        )
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        child = subprocess.Popen(
            c.tap(config), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp
        )
        assert child.stdout is not None
        states = state_bytes = records = 0
        last = b""
        for line in child.stdout:
            if line.startswith(b'{"type":"STATE"'):
                states += 1
                state_bytes += len(line)
                last = line
            elif line.startswith(b'{"type":"RECORD"'):
                records += 1
        child.wait()
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "members": members,
        "exit": child.returncode,
        "records": records,
        "state_messages": states,
        "state_bytes": state_bytes,
        "final_state_bytes": len(last),
        "wall_s": round(wall, 1),
        "tap_cpu_s": round(cpu, 1),
        "peak_rss_mib": round(after.ru_maxrss / 1024, 1),
    }


def row(r: dict[str, t.Any]) -> list[t.Any]:
    return [
        r["members"],
        r["records"],
        r["state_messages"],
        round(r["state_bytes"] / 1e6, 2),
        round(r["final_state_bytes"] / 1e6, 2),
        r["wall_s"],
        r["tap_cpu_s"],
        round(1000 * r["tap_cpu_s"] / r["members"]),
        r["peak_rss_mib"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[200, 1000])
    counts = sorted(parser.parse_args().members)  # ascending: peak RSS is the children's max
    runs = []
    for count in counts:
        runs.append(first_sync(count))
        print(f"  {count} members: {json.dumps(runs[-1])}", flush=True)
    print(c.table(HEADERS, [row(r) for r in runs]))
    print("peak RSS is the largest of the child processes so far (getrusage), not per count")
    path = c.save("members", {"history_days": HISTORY_DAYS, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
