"""Four workers on four "machines", one PostgreSQL store: 40 members, 5-second tokens, 100/min.

Why: the README's recipe for several workers (`store_url` + `member_shard: "i/n"`) promises
that n processes sharing nothing but a database sync every member exactly once, never spend a
rotated refresh token twice (`invalid_grant`), and stay together under the app's rate limit.
Short-lived tokens make the refreshes happen all the time instead of once an hour, and WHOOP's
real limit (100 requests a minute, enforced by the sandbox) with the tap's ceiling at the same
100 leaves no slack: one request too many in a minute is a 429.

Each worker is a `tap-whoop` child process in a working folder of its own (its HOME, TMPDIR and
working directory; its config names a token store path there, unused with `store_url`), with
the same 40 members in `users` and its own `member_shard`. The sandbox runs in this process
and notes, through wrappers of its public methods, when each API request arrived, which access
token it carried, and every token it issued; a thread reads the tap's shared window in
PostgreSQL every second, to see when each request took its slot. PostgreSQL is the server at
TAP_WHOOP_TEST_POSTGRES_URL (default: the one scripts/postgres.sh sets up), in a schema of the
run's own (the URL's search_path), dropped afterwards.

Nothing asserts on timings; the script exits 1 when a check below the tables fails (a record
missing or delivered twice, invalid_grant, a 429, more than the ceiling in 60 s, a request with
a dead token). Wasted refreshes and late requests are measured, not checked.

    python benchmarks/workers.py
"""

from __future__ import annotations

import bisect
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from collections import Counter, defaultdict
from pathlib import Path

import _common as c
import psycopg
from psycopg import sql

from whoop_sandbox import Sandbox, SandboxServer

if t.TYPE_CHECKING:
    from collections.abc import Mapping

WORKERS = 4
MEMBERS = [f"member-{number:02d}" for number in range(40)]
HISTORY_DAYS = 25
"""Days of history per member: about 7 requests each, 272 in all, so the sync lasts over two
minutes at 100 a minute and every member's 5-second token expires many times within it."""
ACCESS_TOKEN_TTL = 5
PER_MINUTE = 100
"""The sandbox's limit, WHOOP's (fixed windows of 60 s, shared by all members of the app)."""
CEILING = 100
"""The tap's `max_requests_per_minute`, for all workers together."""
WINDOW_SECONDS = 60.0
MARGIN_SECONDS = ACCESS_TOKEN_TTL / 10
"""The tap refreshes a token within its last tenth of life (`tap_whoop.oauth.member._margin`)."""
EARLY_TOLERANCE_SECONDS = 0.25
"""A refresh counts as early when the token it replaced had more than margin + this left."""
TIMEOUT_SECONDS = 480
DEFAULT_POSTGRES_URL = "postgresql://tap_whoop:tap_whoop@127.0.0.1:5432/tap_whoop"
#: stream -> (sandbox record kind, primary key)
COLLECTIONS = {
    "cycles": ("cycle", "id"),
    "recovery": ("recovery", "cycle_id"),
    "sleep": ("sleep", "id"),
    "workout": ("workout", "id"),
}
STREAMS = ["profile", "body_measurement", *COLLECTIONS]


class Recorder:
    """What the sandbox saw: API request times, the token each one carried, tokens issued."""

    def __init__(self, box: Sandbox) -> None:
        self.requests: list[float] = []
        """Arrival time of every API request, 429s included."""
        self.uses: list[tuple[float, str, str | None]] = []
        """(time, access token, member or None when the token was not live: a 401)."""
        self.issued: list[tuple[float, str, str, float]] = []
        """(time, member, access token, its wall-clock lapse), for each successful refresh."""
        self._member_of_refresh: dict[str, str] = {
            box.seed_refresh_token(key): key for key in MEMBERS
        }
        self._note, self._authenticate, self._token = (
            box.note_api_request,
            box.authenticate,
            box.token_request,
        )
        box.note_api_request = self._note_api_request  # type: ignore[method-assign]
        box.authenticate = self._authenticate_request  # type: ignore[method-assign]
        box.token_request = self._token_request  # type: ignore[method-assign]

    def _note_api_request(self, path: str) -> None:
        self.requests.append(time.time())
        self._note(path)

    def _authenticate_request(self, token: str) -> t.Any:
        grant = self._authenticate(token)
        self.uses.append((time.time(), token, grant.member if grant else None))
        return grant

    def _token_request(self, form: Mapping[str, str], **options: t.Any) -> dict[str, t.Any]:
        body = self._token(form, **options)
        member = self._member_of_refresh.get(form.get("refresh_token", ""))
        if member is not None and form.get("grant_type") == "refresh_token":
            now = time.time()
            self.issued.append((now, member, body["access_token"], now + body["expires_in"]))
            if "refresh_token" in body:
                self._member_of_refresh[body["refresh_token"]] = member
        return body


def main() -> None:
    url = os.environ.get("TAP_WHOOP_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    schema = f"bench_workers_{secrets.token_hex(3)}"
    store_url = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    box = Sandbox(
        members=MEMBERS,
        history_days=HISTORY_DAYS,
        now=c.NOW,
        per_minute=PER_MINUTE,
        per_day=10_000,
        access_token_ttl=ACCESS_TOKEN_TTL,
    )
    recorder = Recorder(box)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        with SandboxServer(box) as server, tempfile.TemporaryDirectory() as tmp:
            config = {
                "client_id": c.CLIENT_ID,
                "client_secret": c.CLIENT_SECRET,
                "users": [
                    {"key": key, "refresh_token": box.seed_refresh_token(key)} for key in MEMBERS
                ],
                "api_url": server.api_url,
                "oauth_url": server.oauth_url,
                "store_url": store_url,
                "max_requests_per_minute": CEILING,
            }
            folders = [Path(tmp) / f"machine{index}" for index in range(WORKERS)]
            started = time.time()
            slots = SlotWatcher(store_url)
            runs = run_workers(config, folders)
            slots.stop()
            outputs = [read_output(folder / "out.jsonl") for folder in folders]
            left = files_left(Path(tmp), folders)
            stored_members = stored_token_rows(store_url)
        stats = box.stats()
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )

    result = measure(box, recorder, stats, runs, outputs, started)
    result["slot_to_arrival"] = slot_delays(sorted(slots.taken), sorted(recorder.requests), started)
    result["files_left_in_worker_folders"] = left
    result["token_rows_in_store"] = stored_members
    report(result)
    path = c.save("workers", result)
    print(f"\nwrote {path}")
    if not result["ok"]:
        sys.exit(1)


class SlotWatcher:
    """Reads the tap's shared window (`tap_whoop_rate_window`) every second while workers run.

    A slot stays there 60.1 s, so every slot any worker took is seen: when each request took
    its place in the app's window, to compare with when it reached the sandbox.
    """

    def __init__(self, store_url: str) -> None:
        self.taken: set[float] = set()
        self._url = store_url
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as connection:
            while True:
                done = self._done.wait(1.0)
                try:
                    rows = connection.execute(
                        "SELECT extract(epoch FROM at)::float8 FROM tap_whoop_rate_window"
                    ).fetchall()
                except psycopg.errors.UndefinedTable:
                    rows = []  # the first worker has not made the tables yet
                self.taken.update(at for (at,) in rows)
                if done:
                    return

    def stop(self) -> None:
        """Read the window a last time (the workers have exited), and stop."""
        self._done.set()
        self._thread.join()


def slot_delays(slots: list[float], arrivals: list[float], started: float) -> dict[str, t.Any]:
    """The k-th slot taken against the k-th request arriving: how late requests reach WHOOP.

    Approximate (requests may arrive in another order than they took their slots), but a
    request that arrives seconds after its slot shows as such a gap around it.
    """
    pairs = list(zip(slots, arrivals, strict=False))
    gaps = sorted(arrival - slot for slot, arrival in pairs)
    if not gaps:
        return {"slots_seen": len(slots)}
    late = sorted(pairs, key=lambda pair: pair[0] - pair[1])[:5]
    return {
        "slots_seen": len(slots),
        "median_seconds": round(gaps[len(gaps) // 2], 3),
        "p99_seconds": round(gaps[min(len(gaps) - 1, round(len(gaps) * 0.99))], 3),
        "max_seconds": round(gaps[-1], 3),
        "over_0_1_s": sum(1 for gap in gaps if gap > 0.1),
        "latest": [
            {"slot_at_second": round(slot - started, 2), "late_seconds": round(arrival - slot, 2)}
            for slot, arrival in late
        ],
    }


def machine_env(folder: Path) -> dict[str, str]:
    """The environment of a process on a machine of its own (as tests/test_store_support.py)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MELTANO_", "TAP_WHOOP_", "PG"))
    }
    return env | {"HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"), "TMPDIR": str(folder)}


def run_workers(config: dict[str, t.Any], folders: list[Path]) -> list[dict[str, t.Any]]:
    """Start every worker at once; wait for all; their exit codes and wall times."""
    processes = []
    for index, folder in enumerate(folders):
        folder.mkdir()
        own = {
            **config,
            "member_shard": f"{index}/{WORKERS}",
            "token_store_path": str(folder / "store" / "tokens.json"),
        }
        (folder / "config.json").write_text(json.dumps(own))
        with (folder / "out.jsonl").open("wb") as out, (folder / "tap.log").open("wb") as err:
            processes.append(
                subprocess.Popen(
                    c.tap(folder / "config.json"),
                    stdout=out,
                    stderr=err,
                    cwd=folder,
                    env=machine_env(folder),
                )
            )
    print(
        f"{WORKERS} workers started: {len(MEMBERS)} members, {HISTORY_DAYS} days of history",
        flush=True,
    )
    started = time.perf_counter()
    ended: dict[int, float] = {}
    while len(ended) < len(processes):
        for index, process in enumerate(processes):
            if index not in ended and process.poll() is not None:
                ended[index] = time.perf_counter() - started
                print(
                    f"  worker {index} exited {process.returncode} after {ended[index]:.0f} s",
                    flush=True,
                )
        if time.perf_counter() - started > TIMEOUT_SECONDS:
            for index, process in enumerate(processes):
                if index not in ended:
                    process.kill()
                    process.wait()
                    ended[index] = time.perf_counter() - started
        time.sleep(0.2)
    runs = []
    for index, process in enumerate(processes):
        log = (folders[index] / "tap.log").read_text(errors="replace")
        runs.append(
            {
                "shard": f"{index}/{WORKERS}",
                "returncode": process.returncode,
                "seconds": round(ended[index], 1),
                "refreshes_logged": log.count("access token refreshed"),
                "log_tail": [] if process.returncode == 0 else tail(log),
            }
        )
    return runs


def tail(log: str, lines: int = 15) -> list[str]:
    return [line for line in log.splitlines() if "METRIC" not in line][-lines:]


def read_output(path: Path) -> dict[str, list[dict[str, t.Any]]]:
    """A worker's RECORD messages, per stream."""
    records: dict[str, list[dict[str, t.Any]]] = defaultdict(list)
    with path.open() as lines:
        for line in lines:
            if line.startswith('{"type":"RECORD"'):
                message = json.loads(line)
                records[message["stream"]].append(message["record"])
    return records


def files_left(root: Path, folders: list[Path]) -> list[str]:
    """Store files (tokens, windows, inbox, locks) a worker left in its folder: none expected."""
    return [
        str(path.relative_to(root))
        for folder in folders
        for path in folder.rglob("*")
        if path.is_file() and path.name not in ("config.json", "out.jsonl", "tap.log")
    ]


def stored_token_rows(store_url: str) -> int:
    with psycopg.connect(store_url) as connection:
        return int(connection.execute("SELECT count(*) FROM tap_whoop_tokens").fetchone()[0])  # type: ignore[index]


def key_of(stream: str, record: dict[str, t.Any]) -> tuple[int, str]:
    """(user_id, primary key) of a record: record ids are unique per member at least."""
    if stream in ("profile", "body_measurement"):
        return (record["user_id"], "")
    return (record["user_id"], str(record[COLLECTIONS[stream][1]]))


def expected_keys(box: Sandbox) -> dict[str, set[tuple[int, str]]]:
    """Every record the sandbox holds for the 40 members right now."""
    expected: dict[str, set[tuple[int, str]]] = {stream: set() for stream in STREAMS}
    for member in box.members:
        expected["profile"].add((member.user_id, ""))
        expected["body_measurement"].add((member.user_id, ""))
        for stream, (kind, key) in COLLECTIONS.items():
            for record in box.records(member.key, kind):  # type: ignore[arg-type]
                expected[stream].add((member.user_id, str(record[key])))
    return expected


def peak_per_window(times: list[float], seconds: float = WINDOW_SECONDS) -> tuple[int, float]:
    """The most requests in any `seconds`-long sliding window, and when that window began."""
    ordered = sorted(times)
    best, when = 0, ordered[0] if ordered else 0.0
    for index, start in enumerate(ordered):
        count = bisect.bisect_left(ordered, start + seconds) - index
        if count > best:
            best, when = count, start
    return best, when


def overshoots(recorder: Recorder, started: float) -> list[dict[str, t.Any]]:
    """Runs of ceiling + 1 requests that reached the sandbox within 60 s, and their first one.

    The tap's shared window holds a slot for 60.1 s from when the request took it, so such a
    run means its first request reached WHOOP more than 0.1 s after taking its slot: a refresh
    made in between (its token was issued just before it arrived) or a wait after the slot.
    """
    issued_at = {token: when for when, _, token, _ in recorder.issued}
    uses = sorted(recorder.uses)
    found = []
    for index in range(len(uses) - CEILING):
        span = uses[index + CEILING][0] - uses[index][0]
        if span < WINDOW_SECONDS:
            when, token, member = uses[index]
            found.append(
                {
                    "first_request_at_second": round(when - started, 2),
                    "span_seconds": round(span, 3),
                    "member": member,
                    "its_token_issued_seconds_before": round(when - issued_at[token], 3)
                    if token in issued_at
                    else None,
                }
            )
    return found


def token_lives(recorder: Recorder, started: float) -> dict[str, t.Any]:
    """Refreshes against expiries, per member, from the tokens issued and the requests made.

    A member needs one refresh for its first request, then one per expiry: a token it used
    whose life ran out (its last tenth reached, where the tap refreshes) while it still had
    requests to make. A refresh that replaced a token with more life left is early; a token
    issued and never used is wasted (it expired before its request went out).
    """
    issued: dict[str, list[tuple[float, str, float]]] = defaultdict(list)
    for when, member, token, lapse in recorder.issued:
        issued[member].append((when, token, lapse))
    used_at: dict[str, list[float]] = defaultdict(list)
    used_tokens = set()
    for when, token, user in recorder.uses:
        if user is not None:
            used_at[user].append(when)
            used_tokens.add(token)
    expiries = early = 0
    for member, tokens in issued.items():
        last_use = max(used_at.get(member, [0.0]))
        for (_, token, lapse), successor in zip(tokens, [*tokens[1:], None], strict=True):
            if token in used_tokens and last_use > lapse - MARGIN_SECONDS:
                expiries += 1
            if (
                successor is not None
                and lapse - successor[0] > MARGIN_SECONDS + EARLY_TOLERANCE_SECONDS
            ):
                early += 1
    wasted = [
        {
            "member": member,
            "issued_at_second": round(when - started, 2),
            "member_requests_before": sum(1 for use in used_at.get(member, []) if use < when),
            "member_requests_after": sum(1 for use in used_at.get(member, []) if use >= when),
        }
        for when, member, token, _ in recorder.issued
        if token not in used_tokens
    ]
    return {
        "refreshes": len(recorder.issued),
        "first_refreshes": len(issued),
        "expiries": expiries,
        "needed": len(issued) + expiries,
        "early_refreshes": early,
        "wasted_refreshes": len(wasted),
        "wasted": wasted,
        "requests_with_dead_token": sum(1 for _, _, member in recorder.uses if member is None),
    }


def measure(
    box: Sandbox,
    recorder: Recorder,
    stats: dict[str, t.Any],
    runs: list[dict[str, t.Any]],
    outputs: list[dict[str, list[dict[str, t.Any]]]],
    started: float,
) -> dict[str, t.Any]:
    expected = expected_keys(box)
    key_of_user = {member.user_id: member.key for member in box.members}
    streams = {}
    for stream in STREAMS:
        by_worker = [{key_of(stream, r) for r in output.get(stream, [])} for output in outputs]
        delivered = set().union(*by_worker)
        twice = sum(Counter(k for keys in by_worker for k in keys).values()) - len(delivered)
        streams[stream] = {
            "sandbox": len(expected[stream]),
            "delivered": len(delivered & expected[stream]),
            "missing": len(expected[stream] - delivered),
            "unexpected": len(delivered - expected[stream]),
            "by_two_workers": twice,
            "record_messages": sum(len(output.get(stream, [])) for output in outputs),
        }
    worker_of: dict[str, int] = {}
    for index, output in enumerate(outputs):
        for record in output.get("profile", []):
            worker_of[key_of_user[record["user_id"]]] = index
    uses = Counter(worker_of.get(member, -1) for _, _, member in recorder.uses if member)
    refreshes = Counter(worker_of.get(member, -1) for _, member, _, _ in recorder.issued)
    for index, run in enumerate(runs):
        run["members"] = sorted(key for key, worker in worker_of.items() if worker == index)
        run["requests"] = uses[index]
        run["refreshes"] = refreshes[index]
        run["records"] = sum(len(records) for records in outputs[index].values())
    peak, peak_start = peak_per_window(recorder.requests)
    spans = [when - started for when in recorder.requests]
    lives = token_lives(recorder, started)
    over = overshoots(recorder, started)
    delivered_all = sum(s["delivered"] for s in streams.values())
    expected_all = sum(s["sandbox"] for s in streams.values())
    checks = {
        "every record delivered": delivered_all == expected_all
        and not any(s["unexpected"] for s in streams.values()),
        "no record from two workers": not any(s["by_two_workers"] for s in streams.values()),
        "every worker exited 0": all(run["returncode"] == 0 for run in runs),
        "0 invalid_grant": stats["invalid_grant"] == 0,
        "0 x 429": stats["rate_limited"] == 0,
        f"peak requests in 60 s <= {CEILING}": peak <= CEILING,
        "no refresh before its time, no request with a dead token": lives["early_refreshes"] == 0
        and lives["requests_with_dead_token"] == 0,
    }
    return {
        "workers": WORKERS,
        "members": len(MEMBERS),
        "history_days": HISTORY_DAYS,
        "access_token_ttl_seconds": ACCESS_TOKEN_TTL,
        "sandbox_per_minute": PER_MINUTE,
        "max_requests_per_minute": CEILING,
        "wall_seconds": round(max(run["seconds"] for run in runs), 1),
        "first_request_to_last_seconds": round(max(spans) - min(spans), 1) if spans else 0,
        "requests": stats["requests"],
        "by_status": stats["by_status"],
        "rate_limited": stats["rate_limited"],
        "invalid_grant": stats["invalid_grant"],
        "token_requests": stats["token_requests"],
        "sandbox_refreshes": stats["refreshes"],
        "peak_requests_in_60s": peak,
        "peak_window_starts_at_second": round(peak_start - started, 1),
        "overshoots": over,
        "requests_per_minute_overall": round(
            len(spans) / max(max(spans) - min(spans), 1e-9) * 60, 1
        )
        if len(spans) > 1
        else 0,
        "tokens": lives,
        "streams": streams,
        "runs": runs,
        "checks": checks,
        "ok": all(checks.values()),
    }


def report(r: dict[str, t.Any]) -> None:
    print(
        f"\n{r['members']} members in {r['workers']} workers (member_shard i/{r['workers']}, one "
        f"PostgreSQL store_url, separate folders), {r['history_days']} days of history, access "
        f"tokens of {r['access_token_ttl_seconds']} s, sandbox limit "
        f"{r['sandbox_per_minute']}/min, max_requests_per_minute {r['max_requests_per_minute']}"
    )
    rows = [
        [
            run["shard"],
            len(run["members"]),
            run["requests"],
            run["refreshes"],
            run["records"],
            run["seconds"],
            run["returncode"],
        ]
        for run in r["runs"]
    ]
    rows.append(
        [
            "all",
            sum(len(run["members"]) for run in r["runs"]),
            r["requests"],
            r["sandbox_refreshes"],
            sum(run["records"] for run in r["runs"]),
            r["wall_seconds"],
            "-",
        ]
    )
    print(c.table(["shard", "members", "requests", "refreshes", "records", "wall s", "exit"], rows))

    print()
    headers = [
        "stream",
        "in sandbox",
        "delivered",
        "missing",
        "unexpected",
        "by 2 workers",
        "RECORDs",
    ]
    print(
        c.table(
            headers,
            [
                [
                    name,
                    s["sandbox"],
                    s["delivered"],
                    s["missing"],
                    s["unexpected"],
                    s["by_two_workers"],
                    s["record_messages"],
                ]
                for name, s in r["streams"].items()
            ],
        )
    )

    lives = r["tokens"]
    print()
    rows = [
        ["invalid_grant", r["invalid_grant"], 0],
        ["429s", r["rate_limited"], 0],
        [
            "peak API requests in any 60 s (all workers)",
            r["peak_requests_in_60s"],
            f"<= {r['max_requests_per_minute']}",
        ],
        [
            "slot taken -> request at sandbox, max s (k-th vs k-th)",
            r["slot_to_arrival"].get("max_seconds", "-"),
            "<= 0.1",
        ],
        ["API requests per minute, first to last request", r["requests_per_minute_overall"], "-"],
        ["refreshes (sandbox)", lives["refreshes"], "needed"],
        ["  needed: members' first", lives["first_refreshes"], r["members"]],
        ["  needed: expiries of a used token, member not done", lives["expiries"], "-"],
        ["  wasted: token expired before its request went out", lives["wasted_refreshes"], 0],
        ["  early: replaced a token with > 0.75 s left", lives["early_refreshes"], 0],
        ["requests with a dead token (401)", lives["requests_with_dead_token"], 0],
        ["store files left in the workers' folders", len(r["files_left_in_worker_folders"]), 0],
        ["members in the PostgreSQL token store", r["token_rows_in_store"], r["members"]],
    ]
    print(c.table(["measure", "value", "target"], rows))
    print()
    for name, passed in r["checks"].items():
        print(f"{'ok  ' if passed else 'FAIL'} {name}")
    for over in r["overshoots"]:
        issued = over["its_token_issued_seconds_before"]
        print(
            f"  {r['max_requests_per_minute'] + 1} requests within {over['span_seconds']:.2f} s "
            f"from second {over['first_request_at_second']:.1f}; the first ({over['member']}) "
            + (f"carried a token issued {issued:.2f} s before it" if issued is not None else "")
        )
    for run in r["runs"]:
        if run["log_tail"]:
            print(f"\nworker {run['shard']} log tail:\n" + "\n".join(run["log_tail"]))


if __name__ == "__main__":
    main()
