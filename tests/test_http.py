"""The tap against WHOOP's HTTP: faults, retries, tokens, scopes, rate limits, daily quota."""

from __future__ import annotations

import copy
import json
import multiprocessing
import re
import time
import types
import typing as t
from pathlib import Path

import pytest
from conftest import (
    COLLECTIONS,
    PAST,
    SyncResult,
    as_sent,
    fail_page,
    key_of,
    members_config,
    run_tap,
    tap_config,
)
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_whoop import http
from tap_whoop.errors import MembersFailedError, QuotaExhaustedError
from tap_whoop.streams.base import WhoopStream
from tap_whoop.tap import DAY_SPENT_KEY
from whoop_sandbox import READ_SCOPES

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from whoop_sandbox import Sandbox

MAX_TRIES = 8


def assert_complete(result: SyncResult, sandbox: Sandbox, *members: str) -> None:
    """Every collection delivered exactly the sandbox's records: none lost, none twice."""
    for stream, (kind, _) in COLLECTIONS.items():
        expected = [r for key in members or ("alice",) for r in sandbox.records(key, kind)]
        got = result.records(stream)
        assert len({key_of(r) for r in got}) == len(got), f"duplicates in {stream}"
        assert sorted(as_sent(got), key=key_of) == sorted(as_sent(expected), key=key_of), stream


def secrets_of(config: dict[str, t.Any]) -> list[str]:
    """The client secret, the configured refresh tokens and every token in the store."""
    found = [config["client_secret"]]
    found += [config["refresh_token"]] if config.get("refresh_token") else []
    found += [u["refresh_token"] for u in config.get("users", []) if u.get("refresh_token")]
    with open(config["token_store_path"], encoding="utf-8") as handle:
        for entry in json.load(handle)["members"].values():
            found += [entry[k] for k in ("access_token", "refresh_token") if entry.get(k)]
    assert len(found) >= 3
    return found


def assert_no_secret(text: str, config: dict[str, t.Any]) -> None:
    for secret in secrets_of(config):
        assert secret not in text


# 5xx, timeouts, resets, garbage: retried, nothing lost


@pytest.mark.parametrize("status", ["500", "502", "503"])
def test_server_errors_then_success(
    sandbox: Sandbox, config: dict[str, t.Any], status: str
) -> None:
    fail_page(sandbox, "sleep", page=2, fault=status, times=3)
    result = run_tap(config)

    assert result.error is None
    assert sandbox.stats()["by_status"][status] == 3
    assert_complete(result, sandbox)


def test_retry_waits_grow_for_faults_and_are_zero_after_401_or_429(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(WhoopStream, "backoff_base_seconds", 1.0)
    stream = object.__new__(WhoopStream)  # these two methods need no tap
    waits = stream.backoff_wait_generator()
    next(waits)
    fault = RetriableAPIError("HTTP 503")
    assert [waits.send(fault) for _ in range(3)] == [1.0, 2.0, 4.0]
    assert waits.send(http.StaleTokenError("401")) == 0
    assert waits.send(http.RateLimitedError("429")) == 0
    assert [waits.send(fault) for _ in range(5)] == [8.0, 16.0, 32.0, 60.0, 60.0]
    # jitter never turns "no wait" into a wait, and stays close to the wait
    assert stream.backoff_jitter(0.0) == 0.0
    assert all(8.0 <= stream.backoff_jitter(8.0) <= 10.0 for _ in range(100))


def test_an_endpoint_failing_after_bounded_retries_fails_that_stream_alone(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    sandbox.inject_fault("/v2/recovery", "503", times=1_000)
    result = run_tap(config)

    assert isinstance(result.error, MembersFailedError)
    assert "stream recovery: WHOOP kept failing after every retry" in str(result.error)
    assert "HTTP 503" in str(result.error)
    assert result.records("sleep"), "the other streams are synced"
    assert "/v2/recovery" in str(result.error)
    assert sandbox.stats()["by_path"]["/v2/recovery"] == MAX_TRIES
    assert result.records("recovery") == []
    assert result.bookmark("recovery", sandbox.member("alice").user_id) is None


def test_a_timeout_is_retried(
    sandbox: Sandbox, config: dict[str, t.Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "fault_delay", 1.0)
    fail_page(sandbox, "workout", page=2, fault="timeout", times=1)
    result = run_tap({**config, "request_timeout": 0.3})

    assert result.error is None
    pages = -(-len(sandbox.records("alice", "workout")) // 25)
    assert sandbox.stats()["by_path"]["/v2/activity/workout"] == pages + 1
    assert_complete(result, sandbox)


@pytest.mark.parametrize("fault", ["reset", "garbage"])
def test_a_broken_or_unparseable_body_is_retried(
    sandbox: Sandbox, config: dict[str, t.Any], fault: str
) -> None:
    fail_page(sandbox, "cycle", page=2, fault=fault, times=2)
    result = run_tap(config)

    assert result.error is None
    pages = -(-len(sandbox.records("alice", "cycle")) // 25)
    assert sandbox.stats()["by_path"]["/v2/cycle"] == pages + 2
    assert_complete(result, sandbox)


def test_garbage_forever_is_a_clear_error(sandbox: Sandbox, config: dict[str, t.Any]) -> None:
    sandbox.inject_fault("/v2/activity/sleep", "garbage", times=1_000)
    result = run_tap(config)

    assert isinstance(result.error, MembersFailedError)
    assert "not JSON" in str(result.error)
    assert sandbox.stats()["by_path"]["/v2/activity/sleep"] == MAX_TRIES


# 401, 403, 400


def warm_store(config: dict[str, t.Any]) -> None:
    """A first run, so that the next one starts from a stored, still valid access token."""
    assert run_tap(config).error is None


def test_a_401_refreshes_once_and_retries(sandbox: Sandbox, config: dict[str, t.Any]) -> None:
    warm_store(config)
    refreshes = sandbox.stats()["refreshes"]
    sandbox.inject_fault("/v2/cycle", "401", times=1)
    result = run_tap(config)

    assert result.error is None
    assert sandbox.stats()["refreshes"] == refreshes + 1
    assert sandbox.stats()["by_status"]["401"] == 1
    assert_complete(result, sandbox)


def test_a_401_after_a_fresh_refresh_asks_to_reauthorize(
    sandbox: Sandbox, config: dict[str, t.Any], caplog: pytest.LogCaptureFixture
) -> None:
    warm_store(config)
    refreshes = sandbox.stats()["refreshes"]
    sandbox.inject_fault("/v2/cycle", "401", times=2)
    result = run_tap(config)

    assert isinstance(result.error, MembersFailedError)
    message = str(result.error)
    assert "freshly refreshed access token (HTTP 401)" in message
    assert "re-authorize with" in message
    assert "'default'" in message
    assert sandbox.stats()["refreshes"] == refreshes + 1  # one refresh, not a loop of them
    assert sandbox.stats()["by_status"]["401"] == 2
    assert result.records("cycles") == []
    assert_no_secret(message + caplog.text, config)


def test_a_member_failing_mid_stream_keeps_its_bookmark(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    user_id = sandbox.member("alice").user_id
    first = run_tap(config)
    assert first.error is None
    before = first.bookmark("cycles", user_id)
    assert before is not None

    sandbox.advance(days=30)  # expires the stored access token too: the run starts refreshed
    warm_store(config)
    fail_page(sandbox, "cycle", page=2, fault="401", times=2)
    second = run_tap(config, state=copy.deepcopy(first.state))

    assert isinstance(second.error, MembersFailedError)
    assert len(second.records("cycles")) == 25  # page 1 arrived
    assert max(c["start"] for c in second.records("cycles")) > before
    states = [m["value"] for m in second.messages if m["type"] == "STATE"]
    assert states
    for state in states:
        partitions = state["bookmarks"]["cycles"]["partitions"]
        held = [
            p.get("replication_key_value") for p in partitions if p["context"]["user_id"] == user_id
        ]
        assert held == [before]


SCOPE_OF = {
    "cycles": "read:cycles",
    "recovery": "read:recovery",
    "sleep": "read:sleep",
    "workout": "read:workout",
}


@pytest.mark.parametrize("missing", [*SCOPE_OF.values(), "read:body_measurement"])
def test_a_missing_scope_fails_only_the_streams_needing_it(
    sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture, missing: str
) -> None:
    scopes = [s for s in READ_SCOPES if s != missing]
    config = tap_config(
        sandbox, tmp_path, refresh_token=sandbox.issue_refresh_token("alice", scopes=scopes)
    )
    result = run_tap(config)

    assert isinstance(result.error, MembersFailedError)
    message = str(result.error)
    assert f"'{missing}'" in message
    assert "HTTP 403" in message
    assert sandbox.stats()["by_status"]["403"] == 1
    user_id = sandbox.member("alice").user_id
    for stream, (kind, _) in COLLECTIONS.items():
        refused = SCOPE_OF[stream] == missing
        expected = [] if refused else sandbox.records("alice", kind)
        assert sorted(as_sent(result.records(stream)), key=key_of) == sorted(
            as_sent(expected), key=key_of
        ), stream
        assert (result.bookmark(stream, user_id) is None) == refused, stream
    assert len(result.records("body_measurement")) == int(missing != "read:body_measurement")
    assert_no_secret(message + caplog.text, config)


def test_a_refused_drill_down_keeps_the_cycles_bookmark(sandbox: Sandbox, tmp_path: Path) -> None:
    scopes = [s for s in READ_SCOPES if s != "read:recovery"]
    config = tap_config(
        sandbox,
        tmp_path,
        refresh_token=sandbox.issue_refresh_token("alice", scopes=scopes),
        per_cycle_streams=True,
    )
    result = run_tap(config, select={"profile", "cycles", "recovery_for_cycle"})

    assert isinstance(result.error, MembersFailedError)
    assert "'read:recovery'" in str(result.error)
    assert sandbox.stats()["by_status"]["403"] == 1  # one refusal, not one per cycle
    assert sorted(as_sent(result.records("cycles")), key=key_of) == sorted(
        as_sent(sandbox.records("alice", "cycle")), key=key_of
    )
    # the cycles whose recoveries were not read must be read again next run
    assert result.bookmark("cycles", sandbox.member("alice").user_id) is None


def test_a_400_shows_the_request_but_no_token(
    sandbox: Sandbox, config: dict[str, t.Any], caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.inject_fault("/v2/activity/workout", "400", times=1)
    result = run_tap(config)

    assert isinstance(result.error, FatalAPIError)
    message = str(result.error)
    assert "GET /developer/v2/activity/workout?" in message
    assert "limit=25" in message
    assert "HTTP 400" in message
    assert sandbox.stats()["by_path"]["/v2/activity/workout"] == 1  # not retried
    assert_no_secret(message + caplog.text, config)


# Rate limits


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the pacer asks for, returned at once instead of slept."""
    asked: list[float] = []
    monkeypatch.setattr(http.STOP, "sleep", asked.append)
    return asked


def test_a_429_waits_as_told_slows_down_and_completes(
    sandbox: Sandbox, config: dict[str, t.Any], sleeps: list[float]
) -> None:
    fail_page(sandbox, "cycle", page=2, fault="429", times=1)
    result = run_tap(config)

    assert result.error is None
    assert sandbox.stats()["rate_limited"] == 1
    pacer = t.cast(t.Any, result.tap).run.pacer
    assert pacer.rate_limited == 1
    assert pacer.rate is not None
    assert pacer.rate < pacer.ceiling
    # the injected 429 says X-RateLimit-Reset: 2 (seconds)
    assert sleeps
    assert 1.5 < max(sleeps) <= 2.0
    assert_complete(result, sandbox)


def two_members(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, **options: t.Any
) -> tuple[Sandbox, dict[str, t.Any]]:
    sandbox = start_sandbox(members=("alice", "bob"), history_days=20, **options)
    return sandbox, members_config(sandbox, tmp_path)


def test_members_share_the_apps_requests_per_minute(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A "minute" of half a second on both sides; WHOOP's headers ignored, so only the
    # tap's own ceiling, shared by both members, keeps the app under the budget.
    monkeypatch.setattr(http, "Duration", types.SimpleNamespace(MINUTE=500))
    monkeypatch.setattr(http, "LOW_REMAINING", 0)
    sandbox, config = two_members(start_sandbox, tmp_path, per_minute=5, minute_window=0.5)
    config["max_requests_per_minute"] = 4
    result = run_tap(config)

    assert result.error is None
    assert sandbox.stats()["requests"] > 2 * 5
    assert sandbox.stats()["rate_limited"] == 0
    assert_complete(result, sandbox, "alice", "bob")


@pytest.mark.parametrize("heed_headers", [True, False])
def test_low_remaining_slows_the_tap_before_a_429(
    start_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    heed_headers: bool,
) -> None:
    if not heed_headers:  # the control: the same run without reading X-RateLimit-Remaining
        monkeypatch.setattr(http, "LOW_REMAINING", 0)
    # a window long enough that even a slow machine overruns it when the headers are ignored
    sandbox, config = two_members(start_sandbox, tmp_path, per_minute=10, minute_window=4.0)
    result = run_tap(config)

    assert result.error is None
    assert sandbox.stats()["requests"] - sandbox.stats()["rate_limited"] > 10
    assert (sandbox.stats()["rate_limited"] == 0) is heed_headers
    assert_complete(result, sandbox, "alice", "bob")


RESUME = re.compile(r"resume after \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC \(in \d+\.\d h\)")


def test_a_spent_daily_quota_stops_before_a_429_with_state_kept(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(per_day=3)  # profile and body measurement; cycles would overdraw
    config = tap_config(sandbox, tmp_path)
    result = run_tap(config)

    assert isinstance(result.error, QuotaExhaustedError)
    assert RESUME.search(str(result.error)), str(result.error)
    assert "daily request quota" in str(result.error)
    assert sandbox.stats()["requests"] == 2  # the day's last requests are the app's reserve
    assert sandbox.stats()["rate_limited"] == 0
    assert result.records("cycles") == []
    user_id = sandbox.member("alice").user_id
    states = [m["value"] for m in result.messages if m["type"] == "STATE"]
    assert all(
        "replication_key_value" not in p
        for s in states
        for p in s.get("bookmarks", {}).get("cycles", {}).get("partitions", [])
        if p["context"] == {"user_id": user_id}
    )


def test_a_429_with_a_reset_hours_away_stops_with_state_kept(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    probe = start_sandbox()
    one_run = 2 + sum(
        -(-len(probe.records("alice", kind)) // 25) for kind, _ in COLLECTIONS.values()
    )
    sandbox = start_sandbox(per_day=one_run + http.DAILY_RESERVE)  # one full run, the reserve
    config = tap_config(sandbox, tmp_path)
    first = run_tap(config)
    assert first.error is None
    assert sandbox.stats()["requests"] == one_run
    for _ in range(http.DAILY_RESERVE):  # another worker of the app spends the reserve
        assert sandbox.hit_rate_limit()[0]
    assert first.state is not None
    assert DAY_SPENT_KEY in first.state  # the day is spent: its own next run would not ask
    # a run that does not know it (another shard's state, say) meets WHOOP's 429
    second = run_tap(config, state={"bookmarks": copy.deepcopy(first.state["bookmarks"])})

    assert isinstance(second.error, QuotaExhaustedError)
    assert RESUME.search(str(second.error)), str(second.error)
    assert sandbox.stats()["rate_limited"] == 1
    assert second.records("profile") == []
    for state in (m["value"] for m in second.messages if m["type"] == "STATE"):
        assert state["bookmarks"] == first.state["bookmarks"]  # type: ignore[index]


def acquire_slots(shared_file: str | None, times: int, barrier: t.Any, results: t.Any) -> None:
    """In its own process: take `times` request slots from an app pacer with a 1-second minute."""
    http.Duration = types.SimpleNamespace(MINUTE=1000)  # type: ignore[assignment]
    pacer = http.AppPacer(5, shared_file=Path(shared_file) if shared_file else None)
    barrier.wait()
    grants = []
    for _ in range(times):
        asked = time.time()
        pacer.wait()
        grants.append((asked, time.time()))
    results.put(grants)


def most_granted_within_a_second(grants: list[tuple[float, float]]) -> int:
    """The most slots certainly granted within one second: each slot was granted between
    asking and returning, so a slow return (a loaded machine) never adds to the count."""
    return max(
        sum(1 for asked, returned in grants if start <= asked and returned < start + 1)
        for start, _ in grants
    )


@pytest.mark.parametrize("shared", [True, False])
def test_tap_processes_of_one_app_share_the_ceiling(tmp_path: Path, shared: bool) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    shared_file = str(tmp_path / "rate-limit.sqlite") if shared else None
    processes = [
        context.Process(target=acquire_slots, args=(shared_file, 5, barrier, results))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    grants = [grant for _ in processes for grant in results.get(timeout=60)]
    for process in processes:
        process.join(timeout=30)
    assert len(grants) == 10
    busiest_second = most_granted_within_a_second(grants)
    if shared:
        assert busiest_second <= 5
    else:  # the control: two in-memory windows let both processes through at once
        assert busiest_second == 10
