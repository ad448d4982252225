"""Syncing against the sandbox: records, pages, bookmarks, pending scores, drill-downs, members."""

from __future__ import annotations

import copy
import datetime
import json
import logging
import math
import typing as t
import uuid

import pytest
import requests
from conftest import (
    COLLECTIONS,
    NOW,
    PAST,
    SyncResult,
    as_sent,
    fail_page,
    key_of,
    members_config,
    run_tap,
    tap_config,
)
from singer_sdk.exceptions import FatalAPIError

from tap_whoop.errors import MembersFailedError
from tap_whoop.settings import parse_time
from tap_whoop.streams.base import NextTokenPaginator, is_final
from tap_whoop.tap import TapWhoop

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from whoop_sandbox import Sandbox

DAY = datetime.timedelta(days=1)


def by_key(records: list[dict[str, t.Any]]) -> dict[t.Any, dict[str, t.Any]]:
    keyed = {key_of(record): record for record in as_sent(records)}
    assert len(keyed) == len(records), "duplicate records"
    return keyed


def ms(value: str | datetime.datetime) -> int:
    moment = parse_time(value) if isinstance(value, str) else value
    return round(moment.timestamp() * 1000)


def spy_pages(sandbox: Sandbox) -> list[dict[str, t.Any]]:
    """Every collection page the sandbox serves, with the window the tap asked for (epoch ms)."""
    calls: list[dict[str, t.Any]] = []
    original = sandbox.page

    def page(key: str, kind: str, **window: t.Any) -> t.Any:
        calls.append({"member": key, "kind": kind, **window})
        return original(key, kind, **window)  # type: ignore[arg-type]

    sandbox.page = page  # type: ignore[method-assign]
    return calls


def sleep_starts(sandbox: Sandbox, key: str) -> dict[str, datetime.datetime]:
    """Start of each sleep, by id: WHOOP filters recoveries on their sleep's start."""
    return {s["id"]: parse_time(s["start"]) for s in sandbox.records(key, "sleep")}


def filter_start(
    sandbox: Sandbox, key: str, stream: str, record: dict[str, t.Any]
) -> datetime.datetime:
    """The time WHOOP's start/end filter applies to for `record`."""
    if stream == "recovery":
        return sleep_starts(sandbox, key)[record["sleep_id"]]
    return parse_time(record["start"])


def rerun(config: dict[str, t.Any], previous: SyncResult) -> SyncResult:
    """Run again from `previous`'s final state (a copy: the tap updates its input in place)."""
    return run_tap(config, state=copy.deepcopy(previous.state))


def states(result: t.Any) -> list[dict[str, t.Any]]:
    return [m["value"] for m in result.messages if m["type"] == "STATE"]


def bookmark_in(state: dict[str, t.Any], stream: str, user_id: int) -> str | None:
    for partition in state.get("bookmarks", {}).get(stream, {}).get("partitions", []):
        if partition["context"] == {"user_id": user_id}:
            return t.cast("str | None", partition.get("replication_key_value"))
    return None


# Full sync


def test_full_sync_equals_the_sandbox(sandbox: Sandbox, config: dict[str, t.Any]) -> None:
    result = run_tap(config)

    assert result.error is None
    alice = sandbox.member("alice")
    assert result.records("profile") == [{**alice.profile(), "member": "default"}]
    assert result.records("body_measurement") == [{**alice.body(), "user_id": alice.user_id}]
    for stream, (kind, _) in COLLECTIONS.items():
        expected = sandbox.records("alice", kind)
        got = result.records(stream)
        assert len(got) == len(expected) > 25, stream
        # Whole records, nested `score` objects included, as WHOOP sent them.
        assert by_key(got) == by_key(expected), stream
        assert {record["user_id"] for record in got} == {alice.user_id}, stream
    for stream in ("cycles", "recovery", "sleep", "workout"):
        scored = [r for r in result.records(stream) if r["score_state"] == "SCORED"]
        assert scored, stream
        assert all(isinstance(r["score"], dict) and r["score"] for r in scored), stream
    sleep_score = next(r for r in result.records("sleep") if r["score_state"] == "SCORED")["score"]
    assert set(sleep_score["stage_summary"]) >= {"total_in_bed_time_milli", "sleep_cycle_count"}
    cycles = result.records("cycles")
    open_cycles = [c for c in cycles if not c.get("end")]
    assert len(open_cycles) == 1
    assert open_cycles[0]["start"] == max(c["start"] for c in cycles)
    assert parse_time(open_cycles[0]["start"]) <= sandbox.now
    for name in ("cycle_by_id", "sleep_by_id", "workout_by_id", "recovery_for_cycle"):
        assert result.records(name) == []


def test_a_field_whoop_adds_reaches_the_target_at_the_top_and_inside_score(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    newest = next(w for w in sandbox.records("alice", "workout") if w.get("score"))
    score = {**newest["score"], "new_score_field": 1.5}
    sandbox.edit_record(
        "alice", "workout", newest["id"], {"new_top_level_field": "kept", "score": score}
    )

    result = run_tap(config)

    assert result.error is None
    got = next(r for r in result.records("workout") if r["id"] == newest["id"])
    assert got["new_top_level_field"] == "kept"
    assert got["score"]["new_score_field"] == 1.5


# Pagination


def test_each_collection_takes_ceil_n_over_25_pages_of_25(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    pages = spy_pages(sandbox)
    result = run_tap(config)

    assert result.error is None
    by_path = sandbox.stats()["by_path"]
    for stream, (kind, path) in COLLECTIONS.items():
        n = len(sandbox.records("alice", kind))
        assert n > 25
        assert by_path[path] == math.ceil(n / 25), stream
        assert len([p for p in pages if p["kind"] == kind]) == math.ceil(n / 25)
    assert {p["limit"] for p in pages} == {25}


def test_start_and_end_are_resent_on_every_page(sandbox: Sandbox, tmp_path: Path) -> None:
    start_date = NOW - datetime.timedelta(days=55)
    end_date = NOW - datetime.timedelta(days=2)
    config = tap_config(
        sandbox,
        tmp_path,
        start_date=start_date.isoformat(),
        end_date=end_date.isoformat(),
    )
    pages = spy_pages(sandbox)
    result = run_tap(config)

    # The sandbox answers 400 to a page token without the same start and end.
    assert result.error is None
    assert sandbox.stats()["by_status"] == {"200": sandbox.stats()["requests"]}
    for stream, (kind, _) in COLLECTIONS.items():
        calls = [p for p in pages if p["kind"] == kind]
        assert len(calls) >= 2, stream
        assert {(p["start"], p["end"], p["limit"]) for p in calls} == {
            (ms(start_date), ms(end_date), 25)
        }
        assert calls[0]["before"] is None
        assert all(p["before"] is not None for p in calls[1:])
        expected = [
            r
            for r in sandbox.records("alice", kind)
            if start_date <= filter_start(sandbox, "alice", stream, r) < end_date
        ]
        assert len(expected) < len(sandbox.records("alice", kind))
        assert by_key(result.records(stream)) == by_key(expected), stream


def _page(body: dict[str, t.Any]) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = json.dumps(body).encode()
    response.url = "https://api.prod.whoop.com/developer/v2/cycle?limit=25&nextToken=x"
    return response


def test_paginator_follows_tokens_and_stops_on_none_or_empty() -> None:
    paginator = NextTokenPaginator()
    paginator.advance(_page({"records": [], "next_token": "a"}))
    assert paginator.current_value == "a"
    assert not paginator.finished
    paginator.advance(_page({"records": [], "next_token": ""}))
    assert paginator.finished

    paginator = NextTokenPaginator()
    paginator.advance(_page({"records": []}))
    assert paginator.finished


def test_paginator_refuses_a_token_it_has_seen() -> None:
    paginator = NextTokenPaginator()
    paginator.advance(_page({"records": [], "next_token": "a"}))
    paginator.advance(_page({"records": [], "next_token": "b"}))
    with pytest.raises(FatalAPIError, match=r"repeated a page token for /developer/v2/cycle"):
        paginator.advance(_page({"records": [], "next_token": "a"}))


def test_a_repeated_page_token_over_http_stops_the_run(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    original = sandbox.page
    calls = 0

    def stuck(key: str, kind: str, **window: t.Any) -> t.Any:
        nonlocal calls
        if kind == "cycle":
            calls += 1
            records, last = original(key, kind, **{**window, "before": None})
            return records, (last if calls < 10 else None)
        return original(key, kind, **window)

    sandbox.page = stuck  # type: ignore[method-assign]
    result = run_tap(config)

    assert isinstance(result.error, FatalAPIError)
    assert "repeated a page token" in str(result.error)
    assert sandbox.stats()["by_path"]["/v2/cycle"] == 2
    assert result.bookmark("cycles", sandbox.member("alice").user_id) is None


# Bookmarks


def test_an_interrupted_stream_takes_no_bookmark(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    fail_page(sandbox, "cycle", page=2, fault="503", times=100)
    result = run_tap(config)

    assert isinstance(result.error, MembersFailedError)  # cycles failed; the rest was synced
    assert len(result.records("cycles")) == 25  # page 1 arrived, page 2 never did
    user_id = sandbox.member("alice").user_id
    assert all(bookmark_in(s, "cycles", user_id) is None for s in states(result))


def test_an_interrupted_run_keeps_the_previous_bookmark(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    user_id = sandbox.member("alice").user_id
    first = run_tap(config)
    assert first.error is None
    before = first.bookmark("cycles", user_id)
    assert before is not None

    sandbox.advance(days=30)
    fail_page(sandbox, "cycle", page=2, fault="500", times=100)
    second = rerun(config, first)

    assert isinstance(second.error, MembersFailedError)
    newer = [c for c in second.records("cycles") if c["start"] > before]
    assert len(newer) == 25  # the first page held newer cycles than the bookmark
    assert states(second)
    assert all(bookmark_in(s, "cycles", user_id) == before for s in states(second))

    sandbox.clear_faults()
    third = rerun(config, second)
    assert third.error is None
    third_bookmark = third.bookmark("cycles", user_id)
    assert third_bookmark is not None
    assert third_bookmark > before
    assert {c["id"] for c in sandbox.records("alice", "cycle") if c["start"] > before} <= {
        c["id"] for c in third.records("cycles")
    }


def test_the_next_run_starts_lookback_days_before_the_bookmark(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path, lookback_days=2)
    user_id = sandbox.member("alice").user_id
    first = run_tap(config)
    assert first.error is None
    sandbox.advance(days=3)
    pages = spy_pages(sandbox)
    second = rerun(config, first)

    assert second.error is None
    for stream, (kind, _) in COLLECTIONS.items():
        bookmark = first.bookmark(stream, user_id)
        assert bookmark is not None
        # recovery: WHOOP filters on the sleep's start, up to a day before `created_at`
        lag = DAY if stream == "recovery" else datetime.timedelta(0)
        window = parse_time(bookmark) - 2 * DAY - lag
        calls = [p for p in pages if p["kind"] == kind]
        assert calls
        assert {p["start"] for p in calls} == {ms(window)}, stream
        expected = [
            r
            for r in sandbox.records("alice", kind)
            if filter_start(sandbox, "alice", stream, r) >= window
        ]
        assert 0 < len(expected) < len(sandbox.records("alice", kind))
        assert by_key(second.records(stream)) == by_key(expected), stream


def test_start_date_bounds_a_fresh_state_and_later_windows(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    start_date = NOW - datetime.timedelta(days=10)
    config = tap_config(sandbox, tmp_path, start_date=start_date.isoformat(), lookback_days=30)
    pages = spy_pages(sandbox)
    first = run_tap(config)
    second = rerun(config, first)

    assert first.error is None
    assert second.error is None
    assert {p["start"] for p in pages} == {ms(start_date)}  # lookback never reaches before it
    assert all("end" not in p or p["end"] is None for p in pages)
    for stream, (kind, _) in COLLECTIONS.items():
        expected = [
            r
            for r in sandbox.records("alice", kind)
            if filter_start(sandbox, "alice", stream, r) >= start_date
        ]
        assert by_key(first.records(stream)) == by_key(expected), stream


# The pending rule


def test_is_final() -> None:
    assert is_final({"start": "a", "end": "b", "score_state": "SCORED"})
    assert is_final({"start": "a", "end": "b", "score_state": "UNSCORABLE"})
    assert not is_final({"start": "a", "score_state": "SCORED"})
    assert not is_final({"start": "a", "end": None, "score_state": "SCORED"})
    assert not is_final({"start": "a", "end": "b", "score_state": "PENDING_SCORE"})
    assert is_final({"created_at": "a", "score_state": "SCORED"})  # recovery: no start/end
    assert not is_final({"created_at": "a", "score_state": "PENDING_SCORE"})


def test_the_bookmark_stays_on_the_current_cycle(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path, lookback_days=0)
    user_id = sandbox.member("alice").user_id
    first = run_tap(config)
    current = next(c for c in first.records("cycles") if not c.get("end"))
    bookmark = first.bookmark("cycles", user_id)
    assert bookmark is not None
    assert parse_time(bookmark) <= parse_time(current["start"])

    sandbox.advance(days=1)
    second = rerun(config, first)
    again = [c for c in second.records("cycles") if c["id"] == current["id"]]
    assert len(again) == 1
    assert again[0]["end"]  # the cycle ended since, and the ended version was re-read
    assert sum(1 for c in second.records("cycles") if not c.get("end")) == 1


def find_slow_sleep(start: datetime.datetime) -> tuple[str, dict[str, t.Any]]:
    """A member whose sleep WHOOP takes days to score, found in the sandbox's data."""
    from whoop_sandbox import Sandbox

    for n in range(500):
        key = f"member{n}"
        probe = Sandbox(members=(key,), history_days=7, now=start, per_minute=None, per_day=None)
        for sleep in probe.records(key, "sleep"):
            ended = parse_time(sleep["end"])
            slow = sleep["score_state"] == "PENDING_SCORE" and ended < start - DAY
            if slow and not sleep["nap"]:
                return key, sleep
    raise AssertionError("no slowly scored sleep in the sandbox's data")


def test_a_sleep_and_recovery_pending_for_days_are_reread_until_scored(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    key, slow = find_slow_sleep(PAST)
    run1_at = parse_time(slow["end"]) + datetime.timedelta(hours=1)
    sandbox = start_sandbox(members=(key,), history_days=10, now=run1_at)
    user_id = sandbox.member(key).user_id
    config = tap_config(sandbox, tmp_path, lookback_days=1)

    first = run_tap(config)
    assert first.error is None
    seen = {s["id"]: s for s in first.records("sleep")}
    assert seen[slow["id"]]["score_state"] == "PENDING_SCORE"
    assert parse_time(t.cast(str, first.bookmark("sleep", user_id))) <= parse_time(slow["start"])
    # its recovery waits for the same score; recovery is bookmarked on `created_at`
    recovery = next(r for r in first.records("recovery") if r["sleep_id"] == slow["id"])
    assert recovery["score_state"] == "PENDING_SCORE"
    created = parse_time(recovery["created_at"])
    assert parse_time(t.cast(str, first.bookmark("recovery", user_id))) <= created

    sandbox.advance(days=4)
    second = rerun(config, first)
    assert second.error is None
    newest = max(parse_time(s["start"]) for s in second.records("sleep"))
    assert newest - parse_time(slow["start"]) > 3 * DAY  # far beyond a 1-day lookback
    again = [s for s in second.records("sleep") if s["id"] == slow["id"]]
    assert [s["score_state"] for s in again] == ["PENDING_SCORE"]
    assert parse_time(t.cast(str, second.bookmark("sleep", user_id))) <= parse_time(slow["start"])
    again = [r for r in second.records("recovery") if r["sleep_id"] == slow["id"]]
    assert [r["score_state"] for r in again] == ["PENDING_SCORE"]
    assert parse_time(t.cast(str, second.bookmark("recovery", user_id))) <= created

    sandbox.advance(days=2)
    third = rerun(config, second)
    assert third.error is None
    scored = [s for s in third.records("sleep") if s["id"] == slow["id"]]
    assert len(scored) == 1
    assert scored[0]["score_state"] in ("SCORED", "UNSCORABLE")
    assert as_sent(scored)[0] == next(
        s for s in sandbox.records(key, "sleep") if s["id"] == slow["id"]
    )
    assert parse_time(t.cast(str, third.bookmark("sleep", user_id))) > parse_time(slow["start"])
    scored = [r for r in third.records("recovery") if r["sleep_id"] == slow["id"]]
    assert len(scored) == 1
    assert scored[0]["score_state"] in ("SCORED", "UNSCORABLE")
    assert parse_time(t.cast(str, third.bookmark("recovery", user_id))) > created


def test_recovery_bookmark_on_created_at_rereads_a_pending_recovery(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    for _ in range(96):
        if sandbox.records("alice", "recovery")[0]["score_state"] == "PENDING_SCORE":
            break
        sandbox.advance(minutes=30)
    pending = sandbox.records("alice", "recovery")[0]
    assert pending["score_state"] == "PENDING_SCORE"
    user_id = sandbox.member("alice").user_id
    config = tap_config(sandbox, tmp_path, lookback_days=0)

    first = run_tap(config)
    assert first.error is None
    bookmark = t.cast(str, first.bookmark("recovery", user_id))
    assert parse_time(bookmark) <= parse_time(pending["created_at"])
    # WHOOP filters recoveries on their sleep's start, hours before `created_at`.
    assert sleep_starts(sandbox, "alice")[pending["sleep_id"]] < parse_time(bookmark)

    sandbox.advance(hours=3)
    pages = spy_pages(sandbox)
    second = rerun(config, first)
    assert second.error is None
    assert {p["start"] for p in pages if p["kind"] == "recovery"} == {
        ms(parse_time(bookmark) - DAY)
    }
    again = [r for r in second.records("recovery") if r["cycle_id"] == pending["cycle_id"]]
    assert len(again) == 1
    assert again[0]["score_state"] != "PENDING_SCORE"
    assert parse_time(t.cast(str, second.bookmark("recovery", user_id))) >= parse_time(
        pending["created_at"]
    )
    first_seen = {r["cycle_id"] for r in first.records("recovery")}
    all_now = {r["cycle_id"] for r in sandbox.records("alice", "recovery")}
    assert first_seen | {r["cycle_id"] for r in second.records("recovery")} == all_now


# Drill-downs


def test_drill_downs_are_not_selected_by_default(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    cycle = sandbox.records("alice", "cycle")[1]
    config["cycle_ids"] = [cycle["id"]]
    drill_downs = {
        "recovery_for_cycle",
        "sleep_for_cycle",
        "sleep_signals",
        "cycle_by_id",
        "sleep_by_id",
        "workout_by_id",
    }
    catalog = TapWhoop(config=config, validate_config=False).catalog_dict
    roots = {
        entry["tap_stream_id"]: next(
            m["metadata"] for m in entry["metadata"] if not m["breadcrumb"]
        )
        for entry in catalog["streams"]
    }
    assert {name for name, root in roots.items() if not root["selected-by-default"]} == drill_downs
    assert not any(roots[name].get("selected") for name in drill_downs)

    result = run_tap(config)
    assert result.error is None
    for name in drill_downs:
        assert result.records(name) == []
    assert set(sandbox.stats()["by_path"]) == {
        "/v2/user/profile/basic",
        "/v2/user/measurement/body",
        *(path for _, path in COLLECTIONS.values()),
    }


def test_per_cycle_streams_run_once_per_cycle(
    sandbox: Sandbox, config: dict[str, t.Any], caplog: pytest.LogCaptureFixture
) -> None:
    config["per_cycle_streams"] = True
    with caplog.at_level(logging.WARNING):
        result = run_tap(
            config, select={"profile", "cycles", "recovery_for_cycle", "sleep_for_cycle"}
        )

    assert result.error is None
    cycle_ids = {c["id"] for c in sandbox.records("alice", "cycle")}
    by_path = sandbox.stats()["by_path"]
    for kind in ("recovery", "sleep"):
        assert {
            int(path.split("/")[3]) for path in by_path if path.endswith(f"/{kind}")
        } == cycle_ids
        assert all(n == 1 for path, n in by_path.items() if path.endswith(f"/{kind}"))
    recoveries = [r for r in sandbox.records("alice", "recovery") if r["cycle_id"] in cycle_ids]
    main_sleeps = [
        s for s in sandbox.records("alice", "sleep") if not s["nap"] and s["cycle_id"] in cycle_ids
    ]
    assert by_key(result.records("recovery_for_cycle")) == by_key(recoveries)
    assert by_key(result.records("sleep_for_cycle")) == by_key(main_sleeps)
    # The current cycle has neither yet: WHOOP answers 404, which is simply nothing.
    missing = 2 * len(cycle_ids) - len(recoveries) - len(main_sleeps)
    assert missing >= 2
    assert sandbox.stats()["by_status"]["404"] == missing
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [
        r for r in caplog.records if r.name.endswith(("_for_cycle", "tap-whoop", "tap-whoop.auth"))
    ]
    state = t.cast(dict, result.state)
    user_id = sandbox.member("alice").user_id
    for name in ("recovery_for_cycle", "sleep_for_cycle"):
        partitions = state["bookmarks"].get(name, {}).get("partitions", [])
        assert [p["context"] for p in partitions] in ([], [{"user_id": user_id}])


def test_by_id_streams_fetch_the_configured_ids(
    sandbox: Sandbox, config: dict[str, t.Any], caplog: pytest.LogCaptureFixture
) -> None:
    cycles = sandbox.records("alice", "cycle")[3:6]
    sleeps = sandbox.records("alice", "sleep")[2:4]
    workouts = sandbox.records("alice", "workout")[:2]
    unknown_cycle = max(c["id"] for c in sandbox.records("alice", "cycle")) + 1_000
    unknown_sleep, unknown_workout = str(uuid.uuid4()), str(uuid.uuid4())
    config |= {
        "cycle_ids": [unknown_cycle, *(c["id"] for c in cycles)],
        "sleep_ids": [unknown_sleep, *(s["id"] for s in sleeps)],
        "workout_ids": [unknown_workout, *(w["id"] for w in workouts)],
    }
    with caplog.at_level(logging.WARNING):
        result = run_tap(config, select={"profile", "cycle_by_id", "sleep_by_id", "workout_by_id"})

    assert result.error is None
    assert by_key(result.records("cycle_by_id")) == by_key(cycles)
    assert by_key(result.records("sleep_by_id")) == by_key(sleeps)
    assert by_key(result.records("workout_by_id")) == by_key(workouts)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name, unknown in (
        ("cycle_ids", unknown_cycle),
        ("sleep_ids", unknown_sleep),
        ("workout_ids", unknown_workout),
    ):
        assert [w for w in warnings if str(unknown) in w and name in w], name
    assert sandbox.stats()["by_status"]["404"] == 3


# Several members


def test_several_members_each_get_their_records_and_bookmarks(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(members=("alice", "bob"), history_days=30)
    result = run_tap(members_config(sandbox, tmp_path))

    assert result.error is None
    alice, bob = sandbox.member("alice"), sandbox.member("bob")
    assert sorted(r["user_id"] for r in result.records("profile")) == sorted(
        [alice.user_id, bob.user_id]
    )
    assert len(result.records("body_measurement")) == 2
    state = t.cast(dict, result.state)
    for stream, (kind, _) in COLLECTIONS.items():
        expected = sandbox.records("alice", kind) + sandbox.records("bob", kind)
        assert by_key(result.records(stream)) == by_key(expected), stream
        contexts = [p["context"] for p in state["bookmarks"][stream]["partitions"]]
        assert sorted(c["user_id"] for c in contexts) == sorted([alice.user_id, bob.user_id])
        for member in (alice, bob):
            own = [r for r in result.records(stream) if r["user_id"] == member.user_id]
            bookmark = result.bookmark(stream, member.user_id)
            assert bookmark is not None
            assert parse_time(bookmark) <= max(
                parse_time(r.get("start") or r["created_at"]) for r in own
            )


def test_a_revoked_member_fails_clearly_and_the_others_are_delivered(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = start_sandbox(members=("alice", "bob"), history_days=30, now=PAST)
    config = members_config(sandbox, tmp_path)
    alice, bob = sandbox.member("alice"), sandbox.member("bob")
    first = run_tap(config)
    assert first.error is None

    sandbox.revoke("bob")
    sandbox.advance(days=2)
    with caplog.at_level(logging.ERROR):
        second = rerun(config, first)

    assert isinstance(second.error, MembersFailedError)
    assert "1 of 2" in str(second.error)
    assert "'bob'" in str(second.error)
    assert "re-authorize" in str(second.error)
    assert "alice" not in str(second.error)
    assert any("'bob'" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert second.records("profile") == []  # read by the first run, less than a day ago
    for stream, (kind, _) in COLLECTIONS.items():
        assert {r["user_id"] for r in second.records(stream)} == {alice.user_id}, stream
        newest = key_of(sandbox.records("alice", kind)[0])
        assert newest in {key_of(r) for r in second.records(stream)}, stream
        assert second.bookmark(stream, alice.user_id) is not None
        # bob's bookmarks are kept as they were, for when he re-authorizes
        assert second.bookmark(stream, bob.user_id) == first.bookmark(stream, bob.user_id)
    alice_moved = [
        s
        for s in COLLECTIONS
        if second.bookmark(s, alice.user_id) != first.bookmark(s, alice.user_id)
    ]
    assert alice_moved
