"""Peak memory of the `tap-whoop` command syncing one month versus ten years of history.

Why: a tap should stream, holding one page at a time, so a member with a long history must not
need more memory than a new one. Each sync runs in its own child process (stdout to /dev/null)
and GNU time reports that child's own peak RSS (see `_common.run_child`); importing the tap
alone is the floor.

    python benchmarks/memory.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import _common as c

HISTORIES = {"1 month": 30, "10 years": 3650}


def main() -> None:
    floor = c.run_child([sys.executable, "-c", "import tap_whoop.cli"])
    rows = [["import tap_whoop only", "-", "-", floor.max_rss_mib]]
    runs = {}
    for name, days in HISTORIES.items():
        with c.sandbox(days) as box, tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            config = c.write_config(box, work, max_requests_per_minute=10**9)
            run = c.run_child(c.tap(config), stderr=work / "stderr.log")
            records = sum(c.collection_sizes(box).values()) + 2
            requests = box.stats()["requests"]
        runs[name] = {
            "history_days": days,
            "records": records,
            "requests": requests,
            "peak_rss_mib": round(run.max_rss_mib, 1),
        }
        rows.append([f"sync {name}", records, requests, run.max_rss_mib])
    short, long = (runs[name]["peak_rss_mib"] for name in HISTORIES)
    print(c.table(["run", "records", "requests", "peak RSS MiB"], rows))
    print(f"10 years / 1 month: {long / short:.2f} (target: flat, about 1.0)")
    path = c.save(
        "memory",
        {
            "import_only_peak_rss_mib": round(floor.max_rss_mib, 1),
            "runs": runs,
            "ratio": round(long / short, 3),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
