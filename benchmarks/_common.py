"""Shared pieces of the benchmarks: a sandbox on loopback, tap configs, measured child processes.

The tap always runs as users run it, the `tap-whoop` command in its own process, so start-up,
logging and writing Singer messages are all part of what is measured.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path

from whoop_sandbox import Sandbox, SandboxServer

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from whoop_sandbox.data import Kind

NOW = datetime.datetime(2026, 11, 20, 12, 0, tzinfo=datetime.timezone.utc)
"""A fixed sandbox clock, so every run sees the same records."""
MEMBER = "alice"
CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"
KINDS: dict[str, Kind] = {
    "cycles": "cycle",
    "recovery": "recovery",
    "sleep": "sleep",
    "workout": "workout",
}
"""Tap stream name -> sandbox record kind, for the four paged collections."""
RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
"""Console scripts of the Python running the benchmark (the project's venv)."""
TIME = Path("/usr/bin/time")
"""GNU time, for a child's own peak RSS (see `run_child`)."""


@contextlib.contextmanager
def sandbox(history_days: int, **options: t.Any) -> Iterator[Sandbox]:
    """One member with `history_days` of history, served on a free loopback port."""
    options = {"per_minute": None, "per_day": None, **options}
    box = Sandbox(members=(MEMBER,), history_days=history_days, now=NOW, **options)
    with SandboxServer(box) as server:
        box.server = server  # type: ignore[attr-defined]
        yield box


def write_config(box: Sandbox, directory: Path, **overrides: t.Any) -> Path:
    """A tap config for the sandbox's member, with a token store inside `directory`."""
    server: SandboxServer = box.server  # type: ignore[attr-defined]
    config = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": box.seed_refresh_token(MEMBER),
        "api_url": server.api_url,
        "oauth_url": server.oauth_url,
        "token_store_path": str(directory / "tokens.json"),
        **overrides,
    }
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


def collection_sizes(box: Sandbox) -> dict[str, int]:
    """Records the API lists for each collection right now (its whole history)."""
    return {stream: len(box.records(MEMBER, kind)) for stream, kind in KINDS.items()}


@dataclass
class Child:
    """How one child process ended: exit code, wall time, CPU time, peak resident memory."""

    returncode: int
    seconds: float
    cpu_seconds: float
    """User + system time of the child alone: unlike wall time, barely moved by a busy machine."""
    max_rss_mib: float


def run_child(argv: Sequence[str], stdout: Path | None = None, stderr: Path | None = None) -> Child:
    """Run `argv` to completion; wait4 gives its CPU time, GNU time its own peak RSS (KiB).

    wait4's `ru_maxrss` alone would not do: a child forked from this process starts with this
    process's resident pages counted, and Linux keeps that high mark across exec, so a child
    would never seem smaller than the benchmark holding the sandbox. `time` forks the child
    from its own small process.
    """
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(stdout.open("wb")) if stdout else subprocess.DEVNULL
        err = stack.enter_context(stderr.open("wb")) if stderr else subprocess.DEVNULL
        peak = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "peak"
        launched = list(argv)
        if TIME.exists():
            launched = [str(TIME), "-f", "%M", "-o", str(peak), *argv]
        started = time.perf_counter()
        process = subprocess.Popen(launched, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        kib = int(peak.read_text().split()[-1]) if peak.exists() else usage.ru_maxrss
    cpu = usage.ru_utime + usage.ru_stime
    child = Child(process.returncode, seconds, cpu, kib / 1024)
    if child.returncode != 0:
        tail = stderr.read_text()[-2000:] if stderr else ""
        raise RuntimeError(f"{argv[0]} exited with {child.returncode}\n{tail}")
    return child


def tap(config: Path, state: Path | None = None) -> list[str]:
    """The `tap-whoop` command line for a sync."""
    argv = [str(BIN / "tap-whoop"), "--config", str(config)]
    return [*argv, "--state", str(state)] if state else argv


def last_state(messages: Path) -> dict[str, t.Any]:
    """The final STATE message of a run's output."""
    state: dict[str, t.Any] = {}
    with messages.open() as lines:
        for line in lines:
            if line.startswith('{"type":"STATE"'):
                state = json.loads(line)["value"]
    return state


def iso(epoch_ms: int) -> str:
    """Epoch milliseconds as a UTC date-time, for tables."""
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M")


def median(values: Sequence[float]) -> float:
    """The middle value (mean of the two middle ones for an even count)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def table(headers: Sequence[str], rows: Sequence[Sequence[t.Any]]) -> str:
    """A plain-text table, right-aligned numbers."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: t.Any) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else str(value)


def save(name: str, result: dict[str, t.Any]) -> Path:
    """Write `results/<name>.json` with the command and environment that produced it."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    result = {
        "command": f"python benchmarks/{name}.py",
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        **result,
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
