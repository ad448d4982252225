"""The daily budget: new records before history, resumable histories, a day never overdrawn."""

from __future__ import annotations

import copy
import math
import time
import typing as t

import pytest
import requests
from conftest import COLLECTIONS, SyncResult, key_of, members_config, run_tap, tap_config

from tap_whoop import http
from tap_whoop.errors import QuotaExhaustedError
from tap_whoop.tap import TapWhoop

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from whoop_sandbox import Sandbox

PATHS = {
    "profile": "/v2/user/profile/basic",
    "body_measurement": "/v2/user/measurement/body",
    "cycles": "/v2/cycle",
    "recovery": "/v2/recovery",
    "sleep": "/v2/activity/sleep",
    "workout": "/v2/activity/workout",
}


def rerun(config: dict[str, t.Any], previous: SyncResult) -> SyncResult:
    return run_tap(config, state=copy.deepcopy(previous.state))


def resume_each_day_until_done(
    config: dict[str, t.Any], first: SyncResult, day_seconds: float
) -> list[SyncResult]:
    """Runs resumed once the sandbox's day has passed, while WHOOP's day stops them (exit 75)."""
    runs, result = [first], first
    while isinstance(result.error, QuotaExhaustedError):
        assert len(runs) < 12
        time.sleep(day_seconds)
        result = rerun(config, result)
        runs.append(result)
    return runs


def assert_every_record_delivered(
    sandbox: Sandbox, runs: list[SyncResult], keys: t.Iterable[str]
) -> None:
    for key in keys:
        for stream, (kind, _) in COLLECTIONS.items():
            delivered = {
                key_of(r)
                for run in runs
                for r in run.records(stream)
                if r["user_id"] == sandbox.member(key).user_id
            }
            assert delivered == {key_of(r) for r in sandbox.records(key, kind)}, (key, stream)


def requests_to(sandbox: Sandbox, stream: str) -> int:
    by_path = sandbox.stats()["by_path"]
    return sum(count for path, count in by_path.items() if path.rstrip("/") == PATHS[stream])


def partition(result: SyncResult, stream: str, user_id: int) -> dict[str, t.Any]:
    for entry in (result.state or {})["bookmarks"][stream].get("partitions", []):
        if entry["context"] == {"user_id": user_id}:
            return t.cast("dict[str, t.Any]", entry)
    return {}


def pages(sandbox: Sandbox, key: str) -> int:
    """The fewest requests that read a member's whole history: a page per 25 records."""
    return sum(math.ceil(len(sandbox.records(key, kind)) / 25) for kind, _ in COLLECTIONS.values())


def test_profile_and_body_are_read_once_a_day_so_a_members_incremental_run_costs_four_requests(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(members=("alice", "bob"), history_days=10)
    config = members_config(sandbox, tmp_path, ("alice", "bob"))
    first = run_tap(config)
    assert first.error is None
    assert len(first.records("profile")) == len(first.records("body_measurement")) == 2

    sandbox.advance(hours=6)
    sandbox.reset_stats()
    second = rerun(config, first)

    assert second.error is None
    assert second.records("profile") == second.records("body_measurement") == []
    assert requests_to(sandbox, "profile") == requests_to(sandbox, "body_measurement") == 0
    assert sandbox.stats()["by_status"].get("200") == 4 * 2  # besides 401s of expired tokens
    for stream, (kind, _) in COLLECTIONS.items():
        newest = key_of(sandbox.records("alice", kind)[0])
        assert newest in {key_of(r) for r in second.records(stream)}, stream


def test_profile_and_body_are_read_again_once_the_interval_has_passed(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(history_days=5)
    config = tap_config(sandbox, tmp_path)
    first = run_tap(config)
    state = copy.deepcopy(first.state)
    assert state is not None
    for stream in ("profile", "body_measurement"):
        for entry in state["bookmarks"][stream]["partitions"]:
            entry["read_at"] = "2020-01-01T00:00:00.000Z"
    sandbox.reset_stats()

    second = run_tap(config, state=state)

    assert second.error is None
    assert len(second.records("profile")) == len(second.records("body_measurement")) == 1
    assert requests_to(sandbox, "profile") == requests_to(sandbox, "body_measurement") == 1


def test_a_profile_interval_of_zero_reads_profile_and_body_on_every_run_but_once(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(history_days=5)
    config = tap_config(sandbox, tmp_path, profile_interval_hours=0)
    first = run_tap(config)
    sandbox.reset_stats()

    second = rerun(config, first)

    assert len(second.records("profile")) == len(second.records("body_measurement")) == 1
    assert requests_to(sandbox, "profile") == requests_to(sandbox, "body_measurement") == 1


def test_a_capped_run_syncs_every_members_new_records_before_reading_a_new_members_history(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(members=("alice", "bob", "carol"), history_days=400)
    known = members_config(sandbox, tmp_path, ("alice", "bob"), start_date="2020-01-01T00:00:00Z")
    first = run_tap(known)
    assert first.error is None
    sandbox.advance(days=1)
    sandbox.reset_stats()
    cap = 2 * 4 + 2 + 10  # alice and bob's new records, carol's profile and body, 10 pages
    config = {
        **members_config(sandbox, tmp_path, ("alice", "bob", "carol")),
        "start_date": known["start_date"],
        "max_requests_per_run": cap,
    }

    second = rerun(config, first)

    assert second.error is None  # the cap spreads a history over runs: nothing failed
    assert sandbox.stats()["requests"] <= cap
    carol = sandbox.member("carol").user_id
    for key in ("alice", "bob"):
        user_id = sandbox.member(key).user_id
        for stream, (kind, _) in COLLECTIONS.items():
            newest = key_of(sandbox.records(key, kind)[0])
            assert newest in {key_of(r) for r in second.records(stream)}, (key, stream)
            assert not partition(second, stream, user_id).get("backfill_end")
    read = {
        stream: [r for r in second.records(stream) if r["user_id"] == carol]
        for stream in COLLECTIONS
    }
    started = [stream for stream, records in read.items() if records]
    assert started, "carol's history was not begun with what the cap left"
    for stream in started:
        kind = COLLECTIONS[stream][0]
        held = sandbox.records("carol", kind)
        assert [key_of(r) for r in read[stream]] == [key_of(r) for r in held[: len(read[stream])]]
        assert partition(second, stream, carol).get("backfill_end"), stream


def test_a_history_spread_over_capped_runs_arrives_whole_newest_first_at_about_the_fewest_requests(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(members=("carol",), history_days=700)
    config = members_config(
        sandbox, tmp_path, ("carol",), start_date="2020-01-01T00:00:00Z", max_requests_per_run=15
    )
    runs: list[SyncResult] = []
    result = run_tap(config)
    runs.append(result)
    while any(
        partition(result, stream, sandbox.member("carol").user_id).get("backfill_end")
        or partition(result, stream, sandbox.member("carol").user_id) == {}
        for stream in COLLECTIONS
    ):
        assert result.error is None
        assert len(runs) < 30, "the history never completed"
        result = rerun(config, result)
        runs.append(result)

    assert all(r.error is None for r in runs)
    for stream, (kind, _) in COLLECTIONS.items():
        delivered = {key_of(r) for run in runs for r in run.records(stream)}
        assert delivered == {key_of(r) for r in sandbox.records("carol", kind)}, stream
    minimum = pages(sandbox, "carol") + 2
    steady = 4 * (len(runs) - 1)  # each later run also reads carol's new records first
    resumes = 4 * len(runs)  # a resumed walk may re-read one page's worth per stream
    assert sandbox.stats()["requests"] <= minimum + steady + resumes
    assert len(runs) == pytest.approx(math.ceil((minimum + steady) / 15), abs=2)


def test_a_run_stops_short_of_whoops_daily_quota_with_exit_75_and_a_resumable_state(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(
        members=("alice", "bob"),
        history_days=400,
        per_minute=1000,
        minute_window=1,
        per_day=60,
        day_window=8,
    )
    config = members_config(sandbox, tmp_path, ("alice", "bob"), start_date="2020-01-01T00:00:00Z")

    first = run_tap(config)

    assert isinstance(first.error, QuotaExhaustedError)
    assert first.error.exit_code == 75
    assert "daily request quota" in str(first.error)
    assert "resume after" in str(first.error)
    assert sandbox.stats()["rate_limited"] == 0
    assert sandbox.stats()["requests"] <= 60 - http.DAILY_RESERVE + 1
    assert first.state is not None

    runs = resume_each_day_until_done(config, first, day_seconds=8.5)
    assert runs[-1].error is None
    assert sandbox.stats()["rate_limited"] == 0
    assert_every_record_delivered(sandbox, runs, ("alice", "bob"))


def test_a_member_the_days_budget_cannot_hold_keeps_its_bookmarks_and_the_run_exits_75(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    keys = tuple(f"m{index}" for index in range(12))
    sandbox = start_sandbox(members=keys, history_days=3)
    config = members_config(sandbox, tmp_path, keys)
    first = run_tap(config)
    assert first.error is None
    sandbox.advance(days=1)
    sandbox.reset_stats()

    capped = {**config, "max_requests_per_run": 4 * 5}
    second = rerun(capped, first)

    assert isinstance(second.error, QuotaExhaustedError)
    assert "max_requests_per_run (20) was reached" in str(second.error)
    synced = {r["user_id"] for r in second.records("cycles")}
    assert len(synced) >= 3  # 4 requests each, and a 401 where an access token expired
    assert f"{12 - len(synced)} of 12 member(s) not synced" in str(second.error)
    assert sandbox.stats()["requests"] <= 20
    for key in keys:
        user_id = sandbox.member(key).user_id
        if user_id not in synced:
            assert partition(second, "cycles", user_id) == partition(first, "cycles", user_id)


def test_state_messages_are_paced_and_the_last_holds_every_members_bookmarks(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    keys = tuple(f"m{index}" for index in range(30))
    sandbox = start_sandbox(members=keys, history_days=3)
    config = members_config(sandbox, tmp_path, keys)

    result = run_tap(config)

    assert result.error is None
    states = [m for m in result.messages if m["type"] == "STATE"]
    assert len(states) < 30 * 4 / 2
    for key in keys:
        for stream, (kind, _) in COLLECTIONS.items():
            if sandbox.records(key, kind):
                bookmark = partition(result, stream, sandbox.member(key).user_id)
                assert bookmark.get("replication_key_value"), (key, stream)


def _response(headers: dict[str, str], status: int = 200) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    return response


@pytest.mark.parametrize(
    ("limit", "reset", "daily"),
    [
        ("100, 100;window=60, 10000;window=86400", "40", False),
        ("10000, 100;window=60, 10000;window=86400", "40", True),
        ("10000, 100;window=0.25, 10000;window=360", "300", True),
        ("100, 100;window=0.25, 10000;window=360", "1", False),
        ("", "300", True),
        ("", "30", False),
    ],
)
def test_the_daily_window_is_told_from_the_headers_window_list_or_else_a_far_reset(
    limit: str, reset: str, daily: bool
) -> None:
    budget = http.RequestBudget()
    pacer = http.AppPacer(100, budget=budget)
    pacer.observe(
        _response(
            {"X-RateLimit-Limit": limit, "X-RateLimit-Remaining": "50", "X-RateLimit-Reset": reset}
        )
    )
    left, limit_name = budget.room()
    if daily:
        assert (left, limit_name) == (50 - http.DAILY_RESERVE, "day")
    else:
        assert (left, limit_name) == (math.inf, None)


def test_the_run_budget_counts_every_request_sent() -> None:
    budget = http.RequestBudget(max_requests_per_run=3)
    pacer = http.AppPacer(100_000, budget=budget)
    for _ in range(2):
        pacer.wait()
    assert budget.room() == (1, "run")


def test_a_settings_check_refuses_a_request_cap_below_one_in_one_line_naming_it(
    tmp_path: Path,
) -> None:
    from tap_whoop.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        TapWhoop(
            config={
                "client_id": "x",
                "client_secret": "y",
                "refresh_token": "z",
                "token_store_path": str(tmp_path / "t.json"),
                "max_requests_per_run": 0,
            }
        )
    assert str(raised.value) == "max_requests_per_run: 0 is less than the minimum of 1"
    assert raised.value.exit_code == 2


def test_a_collection_found_empty_is_read_with_the_new_records_not_behind_the_histories(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    empty = {"context": {"user_id": 1}, "polled_at": "2026-11-29T00:00:00.000Z", "window_ids": []}
    state = {"bookmarks": {"workout": {"partitions": [empty]}}}
    tap = TapWhoop(config=config, state=state)
    workout = t.cast("t.Any", tap.streams["workout"])

    tap.progress.phase = "incremental"
    assert workout.reads_in_this_pass({"user_id": 1})  # no workout yet: nothing to backfill
    assert not workout.reads_in_this_pass({"user_id": 2})  # never read: a history, for later
    tap.progress.phase = "backfill"
    assert not workout.reads_in_this_pass({"user_id": 1})
    assert workout.reads_in_this_pass({"user_id": 2})


def test_a_run_stops_short_of_whoops_daily_quota_seen_only_in_its_last_hundred_requests(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """As at WHOOP: the day (150) outlasts the minute (100), so the headers name the day only
    once fewer than 100 requests are left in it, late in the run."""
    sandbox = start_sandbox(
        members=("alice", "bob"),
        history_days=800,
        per_minute=100,
        minute_window=1,
        per_day=150,
        day_window=12,
    )
    config = members_config(sandbox, tmp_path, ("alice", "bob"), start_date="2020-01-01T00:00:00Z")

    first = run_tap(config)

    assert isinstance(first.error, QuotaExhaustedError)
    assert first.error.exit_code == 75
    assert "daily request quota" in str(first.error)
    assert sandbox.stats()["rate_limited"] == 0
    # more than a minute's 100: the day was not in the headers when the run began
    assert 100 < sandbox.stats()["requests"] <= 150 - http.DAILY_RESERVE + 1
    assert first.state is not None

    runs = resume_each_day_until_done(config, first, day_seconds=12.5)
    assert runs[-1].error is None
    assert sandbox.stats()["rate_limited"] == 0
    assert_every_record_delivered(sandbox, runs, ("alice", "bob"))


def test_a_request_cap_below_one_members_run_is_refused_at_start_with_what_to_set(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    from tap_whoop.errors import ConfigError

    sandbox.reset_stats()
    result = run_tap({**config, "max_requests_per_run": 3})

    assert isinstance(result.error, ConfigError)
    message = str(result.error)
    assert "max_requests_per_run (3) is below one member's incremental run (about 4" in message
    assert "set it to at least 6 per member" in message
    assert sandbox.stats()["requests"] == 0


def test_a_request_cap_spent_on_new_records_alone_says_the_history_is_never_read(
    sandbox: Sandbox, config: dict[str, t.Any], caplog: pytest.LogCaptureFixture
) -> None:
    synced = run_tap(config)
    assert synced.error is None
    state = copy.deepcopy(synced.state)
    assert state is not None
    for partition in state["bookmarks"]["workout"]["partitions"]:  # history left to read
        partition |= {
            "backfill_start": "2020-01-01T00:00:00Z",
            "backfill_end": "2026-09-01T00:00:00Z",
        }

    result = run_tap({**config, "max_requests_per_run": 4}, state=state)

    assert result.error is None
    [warning] = [r.getMessage() for r in caplog.records if "is never read" in r.getMessage()]
    assert "max_requests_per_run (4) is spent on 1 member(s)' new records" in warning
    assert "the history of 1 member(s)" in warning
    assert "set it above 6" in warning
