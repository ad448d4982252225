"""Answers that look fine but are not: empty or endless pages, malformed pages and records,
trickling bodies, a full disk under the rate-limit file. Each fails clearly, or is survived."""

from __future__ import annotations

import contextlib
import copy
import datetime
import math
import socket
import sqlite3
import threading
import time
import typing as t

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
    run_tap,
    tap_config,
)
from pyrate_limiter import RateItem, SQLiteBucket

from tap_whoop.deadline import DeadlineAdapter
from tap_whoop.errors import MembersFailedError, TapWhoopError
from tap_whoop.http import AppPacer
from tap_whoop.oauth import app as oauth_app
from tap_whoop.settings import parse_time
from tap_whoop.streams.base import MAX_EMPTY_PAGES_IN_A_ROW
from whoop_sandbox import Sandbox

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

#: stream -> (primary key, replication key), as WHOOP names them
KEYS = {
    "cycles": ("id", "start"),
    "recovery": ("cycle_id", "created_at"),
    "sleep": ("id", "start"),
    "workout": ("id", "start"),
}


def pages_of(sandbox: Sandbox, kind: str) -> int:
    return math.ceil(len(sandbox.records("alice", kind)) / 25)


def states(result: SyncResult) -> list[dict[str, t.Any]]:
    return [m["value"] for m in result.messages if m["type"] == "STATE"]


def bookmarks_in_every_state(result: SyncResult, stream: str, user_id: int) -> set[str | None]:
    found = set()
    for state in states(result):
        partitions = state.get("bookmarks", {}).get(stream, {}).get("partitions", [])
        held = [p for p in partitions if p["context"] == {"user_id": user_id}]
        found |= {p.get("replication_key_value") for p in held} or {None}
    return found


def rerun(config: dict[str, t.Any], previous: SyncResult) -> SyncResult:
    return run_tap(config, state=copy.deepcopy(previous.state))


def assert_only_sound_records(result: SyncResult) -> None:
    """No record reaches a target without its key, or without a date-time to bookmark on."""
    for stream, (key, moment) in KEYS.items():
        for record in result.records(stream):
            assert record.get(key) is not None, stream
            parse_time(record[moment])


def synced_once(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> tuple[Sandbox, dict[str, t.Any], SyncResult]:
    """A sandbox in the past, fully synced once, then a few days on."""
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = run_tap(config)
    assert first.error is None
    sandbox.advance(days=30)
    return sandbox, config, first


# 1. Empty pages and malformed pages


def test_empty_pages_that_carry_a_token_are_followed_and_nothing_is_lost(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    sandbox.inject_fault("/v2/activity/sleep", "empty_page", times=1)  # the very first page
    fail_page(sandbox, "cycle", page=2, fault="empty_page", times=3)
    result = run_tap(config)

    assert result.error is None
    for stream, (kind, _) in COLLECTIONS.items():
        expected = sandbox.records("alice", kind)
        assert sorted(as_sent(result.records(stream)), key=key_of) == sorted(
            as_sent(expected), key=key_of
        ), stream
    by_path = sandbox.stats()["by_path"]
    assert by_path["/v2/cycle"] == pages_of(sandbox, "cycle") + 3
    assert by_path["/v2/activity/sleep"] == pages_of(sandbox, "sleep") + 1
    user_id = sandbox.member("alice").user_id
    assert result.bookmark("cycles", user_id) is not None


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("no_records", "no `records` member"),
        ("null_records", "`records` null"),
        ("object_records", "`records` that is a JSON object, not a list"),
    ],
)
def test_a_page_without_a_records_list_fails_its_stream_and_keeps_its_bookmark(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, fault: str, said: str
) -> None:
    sandbox, config, first = synced_once(start_sandbox, tmp_path)
    user_id = sandbox.member("alice").user_id
    before = first.bookmark("cycles", user_id)
    fail_page(sandbox, "cycle", page=2, fault=fault, times=1)
    second = rerun(config, first)

    assert isinstance(second.error, MembersFailedError)
    message = str(second.error)
    assert "\n" not in message
    assert "member 'default': stream cycles: WHOOP answered /developer/v2/cycle" in message
    assert f"with a page that has {said}" in message
    assert "keeps its bookmark" in message
    assert len(second.records("cycles")) == 25  # page 1, read before the malformed page 2
    assert bookmarks_in_every_state(second, "cycles", user_id) == {before}
    for stream in ("recovery", "sleep", "workout"):  # the member's other streams went on
        assert second.bookmark(stream, user_id) != first.bookmark(stream, user_id), stream
        assert second.bookmark(stream, user_id) is not None, stream

    third = rerun(config, second)
    assert third.error is None
    newer = {c["id"] for c in sandbox.records("alice", "cycle") if c["start"] > t.cast(str, before)}
    assert len(newer) > 25
    assert newer <= {c["id"] for c in third.records("cycles")}
    assert t.cast(str, third.bookmark("cycles", user_id)) > t.cast(str, before)


# 2. Paging without end


def test_new_tokens_for_the_same_records_stop_at_the_first_repeated_page(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    sandbox.inject_fault("/v2/cycle", "endless_tokens", times=100_000)
    began = time.monotonic()
    result = run_tap(config)

    assert time.monotonic() - began < 30
    assert isinstance(result.error, MembersFailedError)
    assert "WHOOP answered page 2 of /developer/v2/cycle with only records of earlier pages" in str(
        result.error
    )
    assert sandbox.stats()["by_path"]["/v2/cycle"] == 2
    cycles = result.records("cycles")
    assert len(cycles) == len({c["id"] for c in cycles}) == 25  # none delivered twice
    user_id = sandbox.member("alice").user_id
    assert bookmarks_in_every_state(result, "cycles", user_id) == {None}
    assert result.bookmark("sleep", user_id) is not None


def test_empty_pages_without_end_stop_after_a_few(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    sandbox.inject_fault("/v2/activity/workout", "empty_page", times=100_000)
    result = run_tap(config)

    assert isinstance(result.error, MembersFailedError)
    assert f"{MAX_EMPTY_PAGES_IN_A_ROW + 1} empty pages in a row" in str(result.error)
    assert sandbox.stats()["by_path"]["/v2/activity/workout"] == MAX_EMPTY_PAGES_IN_A_ROW + 1
    assert result.records("workout") == []
    assert result.bookmark("workout", sandbox.member("alice").user_id) is None


def test_paging_stops_at_what_the_window_can_hold(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # A WHOOP that ignores `start` and keeps offering new, older cycles: far more pages than
    # a window of a few days can hold (WHOOP has one cycle a day).
    sandbox = start_sandbox(history_days=1_000)
    original = sandbox.page

    def ignoring_start(key: str, kind: str, **window: t.Any) -> t.Any:
        return original(key, kind, **{**window, "start": None})  # type: ignore[arg-type]

    sandbox.page = ignoring_start  # type: ignore[method-assign]
    start_date = NOW - datetime.timedelta(days=2)
    config = tap_config(sandbox, tmp_path, start_date=start_date.isoformat())
    result = run_tap(config, select={"profile", "cycles"})

    assert isinstance(result.error, MembersFailedError)
    assert "more than the window can hold" in str(result.error)
    requested = sandbox.stats()["by_path"]["/v2/cycle"]
    days = (datetime.datetime.now(datetime.timezone.utc) - start_date).days + 2
    assert requested <= math.ceil(days * 2 / 25) + 5 < pages_of(sandbox, "cycle")
    assert len(result.records("cycles")) == 25 * requested
    assert result.bookmark("cycles", sandbox.member("alice").user_id) is None


# 3. Malformed records


@pytest.mark.parametrize("stream", ["cycles", "recovery", "sleep"])
@pytest.mark.parametrize("fault", ["null_id", "null_start", "bad_start"])
def test_a_record_without_a_usable_key_fails_its_stream_and_never_reaches_a_target(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, stream: str, fault: str
) -> None:
    sandbox, config, first = synced_once(start_sandbox, tmp_path)
    user_id = sandbox.member("alice").user_id
    before = first.bookmark(stream, user_id)
    kind, path = COLLECTIONS[stream]
    sandbox.inject_fault(path, fault, times=1)
    # the profile, read first, meets the expired access token's 401, not the spoiled page
    second = rerun({**config, "profile_interval_hours": 0}, first)

    assert isinstance(second.error, MembersFailedError)  # not a traceback
    message = str(second.error)
    assert "\n" not in message
    key, moment = KEYS[stream]
    field = key if fault == "null_id" else moment
    assert f"member 'default': stream {stream}: WHOOP sent a record from {path}" in message
    assert f" whose {field} " in message
    assert ("is null" if fault.startswith("null") else "is not a date-time") in message
    assert_only_sound_records(second)
    assert len(second.records(stream)) == 2  # the two before it on the page
    assert bookmarks_in_every_state(second, stream, user_id) == {before}
    others = [s for s in COLLECTIONS if s != stream]
    assert all(second.bookmark(s, user_id) != first.bookmark(s, user_id) for s in others)

    third = rerun(config, second)
    assert third.error is None
    newer = {key_of(r) for r in sandbox.records("alice", kind) if r[moment] > t.cast(str, before)}
    assert newer <= {key_of(r) for r in third.records(stream)}


# 9 and 10. Total time per attempt, attempts per request


def test_a_trickling_answer_fails_its_attempt_at_the_deadline_and_is_retried(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    # conftest sets request_timeout to 2 s; the page trickles a byte every 0.5 s.
    fail_page(sandbox, "cycle", page=2, fault="trickle", times=1)
    began = time.monotonic()
    result = run_tap(config)
    took = time.monotonic() - began

    assert result.error is None
    assert 2 <= took < 10
    assert sandbox.stats()["by_path"]["/v2/cycle"] == pages_of(sandbox, "cycle") + 1
    assert sorted(as_sent(result.records("cycles")), key=key_of) == sorted(
        as_sent(sandbox.records("alice", "cycle")), key=key_of
    )


def test_request_timeout_and_max_request_attempts_come_from_the_settings(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config = tap_config(sandbox, tmp_path, request_timeout=1, max_request_attempts=3)
    sandbox.inject_fault("/v2/cycle", "trickle", times=1_000)
    began = time.monotonic()
    result = run_tap(config)
    took = time.monotonic() - began

    assert isinstance(result.error, requests.exceptions.ReadTimeout)
    assert "no complete answer for /developer/v2/cycle within 1s" in str(result.error)
    assert sandbox.stats()["by_path"]["/v2/cycle"] == 3
    assert 3 <= took < 8
    assert result.bookmark("cycles", sandbox.member("alice").user_id) is None


def test_max_request_attempts_bounds_the_retries_of_server_errors(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config = tap_config(sandbox, tmp_path, max_request_attempts=2)
    sandbox.inject_fault("/v2/recovery", "503", times=1_000)
    result = run_tap(config)

    assert "HTTP 503" in str(result.error)
    assert sandbox.stats()["by_path"]["/v2/recovery"] == 2


# 11. A full disk under the shared rate-limit file


def test_a_full_disk_under_the_rate_limit_file_is_one_clear_line(
    sandbox: Sandbox, config: dict[str, t.Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: SQLiteBucket, item: t.Any) -> bool:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SQLiteBucket, "put", full)
    result = run_tap(config)

    assert type(result.error) is TapWhoopError
    message = str(result.error)
    assert "\n" not in message
    assert "cannot write to the shared rate-limit file" in message
    assert f"{config['token_store_path'].rsplit('/', 1)[0]}/rate-limit-" in message
    assert "the disk is full" in message
    assert "free space" in message
    assert sandbox.stats()["requests"] == 0


def test_a_full_disk_met_while_expiring_old_requests_is_the_same_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: SQLiteBucket, current_timestamp: int | None = None) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    pacer = AppPacer(100, shared_file=tmp_path / "rate.sqlite")
    monkeypatch.setattr(SQLiteBucket, "leak", full)
    with pytest.raises(TapWhoopError, match=r"rate\.sqlite: the disk is full"):
        pacer.wait()
    assert pacer.budget.sent == 0


def test_the_shared_rate_limit_file_is_touched_only_by_the_thread_sending_requests(
    tmp_path: Path,
) -> None:
    threads_before = set(threading.enumerate())
    pacer = AppPacer(100, shared_file=tmp_path / "rate.sqlite")
    pacer.wait()
    assert set(threading.enumerate()) - threads_before == set()


def test_the_pacer_deletes_requests_older_than_the_window_from_the_shared_file(
    tmp_path: Path,
) -> None:
    pacer = AppPacer(100, shared_file=tmp_path / "rate.sqlite")
    bucket = pacer._bucket
    a_while_ago = bucket.now() - 2 * 60_000
    for _ in range(5):
        assert bucket.put(RateItem("whoop", a_while_ago))
    pacer.wait()
    assert bucket.count() == 1


# The faults themselves, through the admin API


def test_page_faults_are_served_through_the_admin_api(sandbox: Sandbox) -> None:
    server = sandbox.server  # type: ignore[attr-defined]
    token = sandbox.issue_access_token("alice")
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{server.api_url}/v2/cycle"
    for kind in ("empty_page", "no_records", "null_id"):
        fault = {"path": "/v2/cycle", "kind": kind, "times": 1}
        added = requests.post(f"{server.url}/_sandbox/faults", json=fault, timeout=5)
        assert added.status_code == 201
    empty = requests.get(url, headers=auth, timeout=5).json()
    assert empty["records"] == []
    resumed = requests.get(
        url, headers=auth, params={"nextToken": empty["next_token"]}, timeout=5
    ).json()
    assert "records" not in resumed
    spoiled = requests.get(url, headers=auth, timeout=5).json()
    assert [r["id"] is None for r in spoiled["records"][:4]] == [False, False, True, False]
    clean = requests.get(url, headers=auth, timeout=5).json()
    assert as_sent(clean["records"]) == as_sent(sandbox.records("alice", "cycle")[:10])
    with pytest.raises(ValueError, match="only to the API"):
        sandbox.inject_fault("/oauth/oauth2/token", "empty_page")


def test_a_trickle_fault_sends_the_whole_answer_slowly(sandbox: Sandbox) -> None:
    server = sandbox.server  # type: ignore[attr-defined]
    sandbox.trickle_interval = 0.01
    sandbox.inject_fault("/v2/user/profile/basic", "trickle")
    auth = {"Authorization": f"Bearer {sandbox.issue_access_token('alice')}"}
    began = time.monotonic()
    answer = requests.get(f"{server.api_url}/v2/user/profile/basic", headers=auth, timeout=5)
    assert answer.json() == sandbox.member("alice").profile()
    assert time.monotonic() - began >= 0.01 * (len(answer.content) - 1)


def test_an_answer_trickling_even_its_headers_is_cut_at_the_deadline() -> None:
    # werkzeug cannot trickle a status line; a bare socket can.
    listener = socket.create_server(("127.0.0.1", 0))
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"

    def serve() -> None:
        connection, _ = listener.accept()
        connection.recv(65_536)
        with contextlib.suppress(OSError), connection:
            for byte in answer:
                connection.send(bytes([byte]))
                time.sleep(0.2)

    threading.Thread(target=serve, daemon=True).start()
    session = requests.Session()
    session.mount("http://", DeadlineAdapter())
    began = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout, match=r"within 1s"), listener:
        session.get(f"http://127.0.0.1:{listener.getsockname()[1]}/v2/cycle", timeout=1)
    assert 1 <= time.monotonic() - began < 2


def test_a_trickling_token_endpoint_fails_the_member_at_the_deadline(
    sandbox: Sandbox, config: dict[str, t.Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oauth_app, "OAUTH_TIMEOUT_SECONDS", 1)
    sandbox.inject_fault("/oauth/oauth2/token", "trickle", 1)
    started = time.monotonic()
    result = run_tap(config)
    assert time.monotonic() - started < 15
    assert isinstance(result.error, MembersFailedError)
    assert "did not answer (ReadTimeout)" in str(result.error)
    assert result.records("cycles") == []


def test_a_shorter_deadline_begun_later_still_cuts_first_and_all_share_one_watchdog() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.listen(4)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"

    def trickle(connection: socket.socket) -> None:
        connection.recv(65_536)
        with contextlib.suppress(OSError), connection:
            for byte in answer:
                connection.send(bytes([byte]))
                time.sleep(0.3)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                threading.Thread(target=trickle, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v2/cycle"
    session = requests.Session()
    session.mount("http://", DeadlineAdapter())
    outcomes: list[str] = []

    def long_attempt() -> None:
        with requests.Session() as own:
            own.mount("http://", DeadlineAdapter())
            try:
                own.get(url, timeout=8)
                outcomes.append("answered")
            except requests.exceptions.ReadTimeout:
                outcomes.append("cut")

    first = threading.Thread(target=long_attempt)
    first.start()
    time.sleep(0.5)  # the 8 s deadline is in the watchdog's heap first
    began = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout, match=r"within 1s"):
        session.get(url, timeout=1)
    assert time.monotonic() - began < 6  # not held until the earlier-begun 8 s deadline
    first.join(timeout=30)
    listener.close()
    assert outcomes == ["cut"]  # cut mid-headers at 8 s: a timeout, never a short 200
    watchdogs = [t for t in threading.enumerate() if t.name == "tap-whoop-deadlines"]
    assert len(watchdogs) == 1
