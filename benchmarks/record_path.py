"""How near the main streams can come to the bare loop: what the tap's own record path costs.

Why: issue 19 asks for the full 5-year sync of the six main streams within twice the CPU of
a bare `requests` loop, and signals.py measures about three times as much. This measures where
the difference goes, in one run, side by side: the bare loop (`_bare_loop.py`), the tap as
shipped, and the tap with each of the three largest costs it can be relieved of switched off in
the child (`_without.py`): singer-sdk's field selection on every record, the shared rate-limit
window's slot on every request, and the SQLite inbox and record ledger (SQLAlchemy's import and
the ledger's writes); then all three at once. None of them can be switched off in the product:
the first is singer-sdk's own record path (its private `_generate_record_messages`), the second
keeps every process of an app under WHOOP's limit, the third is how deletions and webhooks work.
What is left with all three off is singer-sdk itself (its import, messages and state) and the
tap's own paging, validation and checks.

Each run is a child process against an unthrottled sandbox on loopback, stdout to /dev/null;
the measure is the child's own CPU time (user + system), the median of REPEATS rounds after an
untimed warm-up, which also checks that every variant emitted the same records as the tap.

    python benchmarks/record_path.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import typing as t
from pathlib import Path

import _common as c
from _without import PARTS

HERE = Path(__file__).resolve().parent
HISTORY_DAYS = 5 * 365
REPEATS = 7
VARIANTS = {
    "tap-whoop": "none",
    **{f"without {part}": part for part in PARTS},
    "without all three": ",".join(PARTS),
}


def bare(box: t.Any) -> list[str]:
    """The bare loop's command, with a fresh token (the tap's refresh revokes older ones)."""
    token = box.issue_access_token(c.MEMBER)
    return [sys.executable, str(HERE / "_bare_loop.py"), box.server.api_url, token, "/dev/null"]


def records_in(output: Path) -> int:
    return sum(1 for line in output.open() if json.loads(line)["type"] == "RECORD")


def main() -> None:
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as signals.py: cached bytecode, as installed
    with c.sandbox(HISTORY_DAYS) as box, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = sum(c.collection_sizes(box).values()) + 2
        config = c.write_config(box, work, max_requests_per_minute=10**9)
        commands = {
            name: [sys.executable, str(HERE / "_without.py"), parts, *c.tap(config)[1:]]
            for name, parts in VARIANTS.items()
        }
        cpu: dict[str, list[float]] = {name: [] for name in [*commands, "bare loop"]}
        requests: dict[str, int] = {}
        for repeat in range(REPEATS + 1):
            for name in cpu:
                argv = bare(box) if name == "bare loop" else commands[name]
                output = work / "output.jsonl" if not repeat and name != "bare loop" else None
                box.reset_stats()
                run = c.run_child(argv, stdout=output, stderr=work / "stderr.log")
                requests[name] = box.stats()["requests"]
                if output is not None and (emitted := records_in(output)) != records:
                    raise SystemExit(f"{name} emitted {emitted} records, not {records}")
                if repeat:
                    cpu[name].append(round(run.cpu_seconds, 3))
    bare_cpu = c.median(cpu["bare loop"])
    runs = {
        name: {
            "requests": requests[name],
            "cpu_seconds": values,
            "median_cpu_seconds": round(c.median(values), 3),
            "over_bare": round(c.median(values) / bare_cpu, 2),
        }
        for name, values in cpu.items()
    }
    result = {"history_days": HISTORY_DAYS, "records": records, "repeats": REPEATS, "runs": runs}
    print(
        c.table(
            ["run", "requests", "median CPU s", "over bare loop"],
            [[n, r["requests"], r["median_cpu_seconds"], r["over_bare"]] for n, r in runs.items()],
        )
    )
    print(f"wrote {c.save('record_path', result)}")


if __name__ == "__main__":
    main()
