"""The one table of results in benchmarks/README.md, made from benchmarks/results/*.json.

Each benchmark writes its results file when it runs; this script turns every file into a row
and rewrites the table between README's markers, so the table says what the files say and
nothing else. tests/test_benchmarks_table.py fails when the committed table is not this output.

    python benchmarks/table.py            # rewrite the table in benchmarks/README.md
    python benchmarks/table.py --check    # exit 1 if the table differs from the results
"""

from __future__ import annotations

import json
import sys
import typing as t
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BEGIN = "<!-- results table: written by `python benchmarks/table.py` from benchmarks/results/ -->"
END = "<!-- end of results table -->"

Result = dict[str, t.Any]
X = "\N{MULTIPLICATION SIGN}"


def _n(value: float) -> str:
    """A count with thousands separators."""
    return f"{value:,.0f}"


def requests_used(d: Result) -> tuple[str, str, str]:
    full, daily, later = d["full_sync"], d["daily_incremental"], d["incremental_3h_later"]
    runs = (full, daily, later)
    what = (
        f"API requests of a full sync of one member with {d['history_days'] // 365} years of "
        "history, of the next day's incremental run and of one 3 hours later, against the "
        f"fewest possible (a page per {d['page_size']} records of each collection, plus profile "
        "and body)"
    )
    result = (
        "; ".join(f"{r['requests']} for {r['minimum']} ({r['ratio']:.2f}{X})" for r in runs)
        + f"; {sum(r['rate_limited'] for r in runs)} {X} 429 at WHOOP's limits (the full sync "
        f"paced over {full['seconds']:.0f} s)"
    )
    return what, result, f"≤ {d['target_ratio']}{X}, no 429"


def throughput(d: Result) -> tuple[str, str, str]:
    tap, bare = d["runs"]["tap-whoop"], d["runs"]["bare loop"]
    what = (
        f"CPU time (user + system) per record of a full sync of {d['history_days'] // 365} "
        f"years ({_n(d['records'])} records), against a bare `requests` loop making the same "
        f"{tap['requests']} calls (median of {d['repeats']})"
    )
    load = " and ".join(f"{value:.1f}" for value in d["load_average_1min"])
    result = (
        f"{tap['cpu_us_per_record']} µs vs {bare['cpu_us_per_record']} µs per record "
        f"({d['cpu_per_record_tap_over_bare']:.1f}{X}); by wall time "
        f"{_n(tap['records_per_second'])} vs {_n(bare['records_per_second'])} records/s "
        f"({d['ratio']:.2f}), with a load average of {load} before and after"
    )
    return what, result, "none set: a baseline to compare changes with"


def memory(d: Result) -> tuple[str, str, str]:
    small, large = d["runs"]["1 month"], d["runs"]["10 years"]
    what = "Peak memory (RSS) of `tap-whoop`: a sync of 1 month against one of 10 years of history"
    result = (
        f"{small['peak_rss_mib']} MiB ({_n(small['records'])} records) vs "
        f"{large['peak_rss_mib']} MiB ({_n(large['records'])} records): {d['ratio']:.2f}{X}; "
        f"importing the tap alone: {d['import_only_peak_rss_mib']} MiB"
    )
    return what, result, f"flat (about 1.0{X})"


def members(d: Result) -> tuple[str, str, str]:
    counts = " and of ".join(_n(run["members"]) for run in d["runs"])
    what = (
        f"A first sync of {counts} members ({d['history_days']} days of history each) in one "
        "process: STATE written, final state, CPU, memory"
    )
    result = "; ".join(
        f"{_n(run['members'])} members: {_n(run['records'])} records, {run['state_messages']} "
        f"STATE messages ({run['state_bytes'] / 1e6:.1f} MB), final state "
        f"{run['final_state_bytes'] / 1e6:.2f} MB, {run['tap_cpu_s']:.0f} s CPU "
        f"({run['tap_cpu_s'] / run['members'] * 1000:.0f} ms per member), peak RSS "
        f"{run['peak_rss_mib']} MiB"
        for run in d["runs"]
    )
    return what, result, "linear in members (the same ms per member)"


def capacity(d: Result) -> tuple[str, str, str]:
    onboarding = d["onboarding"]
    busiest = max(day["requests"] for day in d["days"])
    what = (
        f"One app, {_n(d['members'])} members synced once a simulated day by {d['shards']} "
        f"shards, then {onboarding['members']} new members with {d['years']} years of history "
        f"each (the sandbox's minute window scaled down {d['k']}{X}, WHOOP's limits kept)"
    )
    result = (
        f"{d['requests_per_member_day']:.1f} requests per member-day "
        f"({_n(d['members_per_app_at_this_rate'])} members per app at that rate), "
        f"{_n(d['existing_fresh_fewest'])} of {_n(d['members'])} fresh every day, "
        f"{d['rate_limited_total']} {X} 429; the {onboarding['members']} histories "
        f"({_n(onboarding['minimum_requests'])} requests at the least) done in "
        f"{onboarding['days_to_complete']} days, the fewest being {onboarding['minimum_days']}; "
        f"at most {_n(busiest)} of {_n(d['limits']['per_day'])} requests a day; peak RSS "
        f"{d['peak_rss_mib']} MiB per shard; state {_n(d['state_bytes_per_member'])} bytes per "
        "member"
    )
    return what, result, f"every member fresh daily, 0 {X} 429, the fewest days"


def workers(d: Result) -> tuple[str, str, str]:
    streams = d["streams"].values()
    delivered = sum(s["delivered"] for s in streams)
    what = (
        f"{d['workers']} workers in separate folders sharing one PostgreSQL `store_url`: "
        f"{d['members']} members, WHOOP's {d['sandbox_per_minute']} requests a minute, access "
        f"tokens of {d['access_token_ttl_seconds']} s"
    )
    result = (
        f"{_n(delivered)} of {_n(sum(s['sandbox'] for s in streams))} records delivered, "
        f"{sum(s['by_two_workers'] for s in streams)} by two workers; {d['invalid_grant']} "
        f"`invalid_grant`, {d['rate_limited']} {X} 429, "
        f"{d['tokens']['requests_with_dead_token']} requests with an expired token; at most "
        f"{d['peak_requests_in_60s']} requests in any 60 s, each at most "
        f"{d['slot_to_arrival']['max_seconds']} s after its slot in the shared window; "
        f"{d['tokens']['refreshes']} refreshes, {d['tokens']['wasted_refreshes']} wasted"
    )
    return what, result, f"all delivered once; 0; 0; ≤ {d['sandbox_per_minute']}; 0 wasted"


def webhooks(d: Result) -> tuple[str, str, str]:
    hooks, polls = d["webhooks"], d["polling"]
    fetches = hooks["costs"]["parts"]["drain: one GET per record named by events"]
    what = (
        f"A simulated day of {d['members']} members: webhooks (a drain every "
        f"{d['drain_minutes']} min, a daily reconciliation) against polling every "
        f"{d['poll_hours']} h"
    )
    result = (
        f"{hooks['requests_per_member_day']:.2f} vs {polls['requests_per_member_day']:.2f} "
        f"requests per member-day ({_n(hooks['members_per_app'])} vs "
        f"{_n(polls['members_per_app'])} members per app); "
        f"{hooks['requests_per_changed_record']:.2f} vs "
        f"{polls['requests_per_changed_record']:.2f} requests per changed record "
        f"({fetches / hooks['changed_records']:.2f} for the events' own fetches); median "
        f"freshness {hooks['freshness_minutes']['events']['median']:.1f} vs "
        f"{polls['freshness_minutes']['events']['median']:.1f} min; "
        f"{hooks['rate_limited'] + polls['rate_limited']} {X} 429"
    )
    if not any(m["costs"]["parts"]["reads: profile and body measurement"] for m in (hooks, polls)):
        result += (
            ". The day's read of profile and body (2 requests per member-day) fell in the "
            "initial sync: not counted"
        )
    target = (
        f"≤ {d['target_requests_per_changed_record']} per changed record; median freshness "
        f"within a drain ({d['drain_minutes']} min)"
    )
    return what, result, target


def deletions(d: Result) -> tuple[str, str, str]:
    found, hooks = d["reconciliation"], d["webhooks"]
    what = (
        "By-id requests per deleted record: found by reconciliation (two looks at the record, "
        "WHOOP's JSON 404 twice) or named by a webhook"
    )
    result = (
        f"reconciliation: {found['marked']} of {found['deleted']} deleted records marked with "
        f"{found['by_id_requests']} requests ({found['by_id_per_deleted']:.2f} each; the "
        "others are recoveries left to the next windows); webhooks: "
        f"{hooks['marked']} of {hooks['deleted']} with {hooks['by_id_requests']}"
    )
    return what, result, "2 and 0"


def receiver(d: Result) -> tuple[str, str, str]:
    cases = {name: value for name, value in d.items() if isinstance(value, dict)}
    what = "A signed delivery to `tap-whoop webhooks`: " + ", ".join(
        name if name == "quiet" else f"with {name}" for name in cases
    )
    sizes = {case["deliveries"] for case in cases.values()}
    result = (
        "p99 "
        + ", ".join(f"{case['p99_ms']}" for case in cases.values())
        + " ms; median "
        + ", ".join(f"{case['median_ms']}" for case in cases.values())
        + f" ms ({' or '.join(map(str, sorted(sizes)))} deliveries each)"
    )
    return what, result, "under WHOOP's 1 s"


def refresh(d: Result) -> tuple[str, str, str]:
    runs = d["runs"]
    what = (
        "CPU of one token refresh in the tap (`MemberAuth` over the file token store: the entry "
        "read, the refresh recorded, the rotated token stored durably) beside a bare `requests` "
        f"client posting the same form, {runs[0]['refreshes']} refreshes, with "
        + " and ".join(_n(run["stored_members"]) for run in runs)
        + " members stored"
    )
    result = "; ".join(
        f"{_n(run['stored_members'])} stored: {run['tap_cpu_ms_per_refresh']} vs "
        f"{run['bare_cpu_ms_per_refresh']} ms per refresh"
        for run in runs
    )
    return what, result, "none set: flat in the members stored"


def signals(d: Result) -> tuple[str, str, str]:
    main, backfill = d["main_streams"], d["signal_backfill"]
    mem = d["memory"]
    small, large = mem["1 month"], mem["10 years"]

    def cpu(part: Result) -> str:
        tap, bare = part["runs"]["tap-whoop"], part["runs"]["bare loop"]
        return (
            f"{tap['median_cpu_seconds']:.2f} vs {bare['median_cpu_seconds']:.2f} s "
            f"({part['cpu_tap_over_bare']:.2f}{X})"
        )

    startup = d["start_up_cpu_seconds"]
    what = (
        "In one run, side by side with bare `requests` loops making the same calls: CPU of the "
        f"full sync of the six main streams ({main['history_days'] // 365} years, "
        f"{_n(main['records'])} records) and of the signal backfill "
        f"({backfill['history_days'] // 365} year, `{','.join(backfill['types'])}`: "
        f"{_n(backfill['final_sleeps'])} sleeps, {_n(backfill['points'])} points); start-up; "
        "peak memory of the signal backfill over 1 month and 10 years (median of 3 CPU runs)"
    )
    past = main.get("cpu_past_start_up_tap_over_bare")
    after = f" ({past:.2f}{X} once each side's start-up is taken off)" if past else ""
    batch = d.get("signal_backfill_batch")
    with_batch = (
        f" (with BATCH messages {batch['cpu_batch_over_records']:.2f}{X} that)" if batch else ""
    )
    result = (
        f"main streams {cpu(main)}{after}; signal backfill {cpu(backfill)}{with_batch}, "
        f"{backfill['requests_per_final_sleep']:.2f} requests per sleep; start-up "
        f"{startup['tap-whoop --about']:.2f} vs {startup['import requests, singer_sdk']:.2f} s "
        f"({d['start_up_ratio']:.2f}{X}); peak RSS {small['peak_rss_mib']} MiB "
        f"({_n(small['stream_requests'])} sleeps) vs {large['peak_rss_mib']} MiB "
        f"({_n(large['stream_requests'])} sleeps): {d['memory_ratio']:.2f}{X}"
    )
    return what, result, f"≤ 2{X}, ≤ 2{X}, 1 per sleep, ≤ 2{X}, ≤ 1.2{X}"


def record_path(d: Result) -> tuple[str, str, str]:
    runs = d["runs"]
    what = (
        f"CPU of the full sync of the six main streams ({d['history_days'] // 365} years, "
        f"{_n(d['records'])} records) against the bare loop, side by side: the tap as shipped, "
        "and with each of three costs it must keep switched off in the child: singer-sdk's "
        "field selection per record, the shared rate-limit window's slot per request, the "
        f"SQLite inbox and ledger (median of {d['repeats']})"
    )
    result = "; ".join(
        f"{name} {run['median_cpu_seconds']:.2f} s ({run['over_bare']:.2f}{X})"
        for name, run in runs.items()
    )
    return what, result, f"issue 19's ≤ 2{X}: how near the shipped tap can come"


#: Results file stem -> its row, in the table's order.
ROWS: dict[str, t.Callable[[Result], tuple[str, str, str]]] = {
    "requests_used": requests_used,
    "throughput": throughput,
    "signals": signals,
    "record_path": record_path,
    "memory": memory,
    "members": members,
    "refresh": refresh,
    "capacity": capacity,
    "workers": workers,
    "webhooks": webhooks,
    "deletions": deletions,
    "receiver": receiver,
}


def table(results: Path = RESULTS) -> str:
    """The markdown table of every results file."""
    found = {path.stem for path in results.glob("*.json")}
    unknown = sorted(found - set(ROWS))
    missing = sorted(set(ROWS) - found)
    if unknown or missing:
        raise SystemExit(
            f"table.py: results without a row here: {unknown}; rows without results: {missing} "
            "(add a row function, or run the benchmark)"
        )
    lines = [
        "| benchmark | what | result | target | measured |",
        "|---|---|---|---|---|",
    ]
    for stem, row in ROWS.items():
        data = json.loads((results / f"{stem}.json").read_text(encoding="utf-8"))
        what, result, target = row(data)
        when = (
            f"{data['measured_at'][:10]}, {data['cpus']} CPUs, Python {data['python']}"
            if "cpus" in data
            else data["measured_at"][:10]
        )
        # From the repository root after scripts/bootstrap.sh, as printed.
        cells = [f"`.venv/bin/{data['command']}`", what, result, target, when]
        assert not any("|" in cell for cell in cells), cells
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def with_table(readme: str, new_table: str) -> str:
    """README's text with the table between the markers replaced."""
    head, begin, rest = readme.partition(BEGIN + "\n")
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"table.py: {README} lacks the markers {BEGIN!r} and {END!r}")
    return head + begin + new_table + end + tail


def main(argv: list[str]) -> int:
    current = README.read_text(encoding="utf-8")
    wanted = with_table(current, table())
    if argv == ["--check"]:
        if wanted != current:
            print("benchmarks/README.md's table is stale: run python benchmarks/table.py")
            return 1
        return 0
    if argv:
        print(__doc__)
        return 2
    README.write_text(wanted, encoding="utf-8")
    print(f"wrote the table of {len(ROWS)} results into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
