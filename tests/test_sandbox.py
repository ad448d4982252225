"""The WHOOP sandbox, exercised over real HTTP as the tap and its users meet it."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from whoop_sandbox import ALL_SCOPES, Sandbox, SandboxServer, main
from whoop_sandbox import app as sandbox_app
from whoop_sandbox import server as server_module
from whoop_sandbox.app import RateLimiter

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
CLIENT = {"client_id": "sandbox-client", "client_secret": "sandbox-secret"}
COLLECTIONS = {
    "cycle": "/v2/cycle",
    "sleep": "/v2/activity/sleep",
    "recovery": "/v2/recovery",
    "workout": "/v2/activity/workout",
}


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(members=("alice", "bob"), history_days=30, now=NOW)


@pytest.fixture
def server(sandbox: Sandbox) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox) as running:
        yield running


def token_request(server: SandboxServer, **form: str) -> requests.Response:
    return requests.post(f"{server.oauth_url}/token", data={**CLIENT, **form}, timeout=5)


def refresh(server: SandboxServer, refresh_token: str, **extra: str) -> requests.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "scope": "offline"}
    return token_request(server, **{**form, **extra})


def bearer(server: SandboxServer, member: str = "alice") -> dict[str, str]:
    answer = refresh(server, server.sandbox.issue_refresh_token(member))
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def get(server: SandboxServer, path: str, headers: dict[str, str], **params: Any) -> Any:
    return requests.get(f"{server.api_url}{path}", headers=headers, params=params, timeout=5)


def walk(
    server: SandboxServer, path: str, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    """Every record of a collection, checking each page's shape on the way."""
    records: list[dict[str, Any]] = []
    token = None
    while True:
        query = {**params, **({"nextToken": token} if token else {})}
        answer = get(server, path, headers, **query)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["records"]) <= int(params.get("limit", 10))
        records += page["records"]
        token = page.get("next_token")
        if token is None:
            assert set(page) == {"records"}
            return records
        assert page["records"], "a page with a next_token is never empty"


# Records and their shape


def test_profile_and_body(server: SandboxServer, sandbox: Sandbox) -> None:
    auth = bearer(server)
    profile = get(server, "/v2/user/profile/basic", auth).json()
    assert profile == {
        "user_id": 10_000 + zlib.crc32(b"alice") % 900_000,
        "email": "alice@example.com",
        "first_name": "Alice",
        "last_name": sandbox.member("alice").last_name,
    }
    body = get(server, "/v2/user/measurement/body", auth).json()
    assert set(body) == {"height_meter", "weight_kilogram", "max_heart_rate"}
    assert 1.5 < body["height_meter"] < 2.0
    assert isinstance(body["max_heart_rate"], int)


def test_records_follow_the_spec(sandbox: Sandbox) -> None:
    cycles = sandbox.records("alice", "cycle")
    assert all(c["id"] > 2**31 for c in cycles)
    assert "end" not in cycles[0]
    assert all({"id", "user_id", "start", "end", "timezone_offset"} <= set(c) for c in cycles[1:])
    assert [c["start"] for c in cycles] == sorted((c["start"] for c in cycles), reverse=True)
    for sleep in sandbox.records("alice", "sleep"):
        assert sleep["cycle_id"] in {c["id"] for c in cycles}
        assert ("score" in sleep) == (sleep["score_state"] == "SCORED")
        if "score" in sleep:
            stages = sleep["score"]["stage_summary"]
            parts = [v for k, v in stages.items() if k.startswith("total_") and "in_bed" not in k]
            assert sum(parts) == stages["total_in_bed_time_milli"]
            in_bed = parse(sleep["end"]) - parse(sleep["start"])
            assert stages["total_in_bed_time_milli"] == in_bed // timedelta(milliseconds=1)
            assert len(sleep["score"]["sleep_needed"]) == 4
    windows = {c["id"]: (c["start"], c.get("end", "9999")) for c in cycles}
    for sleep in sandbox.records("alice", "sleep"):
        first, last = windows[sleep["cycle_id"]]
        assert first <= sleep["start"] < sleep["end"] < last
    recoveries = sandbox.records("alice", "recovery")
    assert recoveries
    assert all("id" not in r and {"cycle_id", "sleep_id"} <= set(r) for r in recoveries)
    for recovery in recoveries:
        if "score" in recovery:
            assert 1 <= recovery["score"]["recovery_score"] <= 99
            assert 40 <= recovery["score"]["resting_heart_rate"] <= 75
    workouts = sandbox.records("alice", "workout") + sandbox.records("bob", "workout")
    assert len({w["sport_name"] for w in workouts}) >= 4
    for workout in workouts:
        if "score" in workout:
            duration = parse(workout["end"]) - parse(workout["start"])
            zones = workout["score"]["zone_durations"]
            assert sum(zones.values()) == duration // timedelta(milliseconds=1)
            assert ("distance_meter" in workout["score"]) == (
                workout["sport_name"] in {"running", "cycling", "swimming", "hiking"}
            )


def test_same_arguments_give_identical_records() -> None:
    first = Sandbox(members=("alice", "bob"), history_days=20, now=NOW)
    second = Sandbox(members=("bob", "alice"), history_days=20, now=NOW)
    for kind in COLLECTIONS:
        for member in ("alice", "bob"):
            assert first.records(member, kind) == second.records(member, kind)
    assert first.records("alice", "cycle") != first.records("bob", "cycle")


# Collections and pagination


@pytest.mark.parametrize("kind", COLLECTIONS)
def test_pages_walk_newest_first_to_a_last_page(
    server: SandboxServer, sandbox: Sandbox, kind: str
) -> None:
    records = walk(server, COLLECTIONS[kind], bearer(server), limit=25)
    assert records == sandbox.records("alice", kind)
    assert len(records) >= 25
    small = walk(server, COLLECTIONS[kind], bearer(server), limit=7)
    assert small == records


def test_default_page_is_ten(server: SandboxServer) -> None:
    page = get(server, "/v2/cycle", bearer(server)).json()
    assert len(page["records"]) == 10
    assert page["next_token"]


@pytest.mark.parametrize("limit", ["26", "0", "-1", "ten", ""])
def test_limit_outside_1_to_25_is_rejected(server: SandboxServer, limit: str) -> None:
    answer = get(server, "/v2/cycle", bearer(server), limit=limit)
    assert answer.status_code == 400
    assert "limit" in answer.json()["error_description"]


@pytest.mark.parametrize("parameter", ["start", "end"])
@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", "P1D", "2026-11-01"])
def test_unparseable_dates_are_rejected(server: SandboxServer, parameter: str, value: str) -> None:
    answer = get(server, "/v2/activity/sleep", bearer(server), **{parameter: value})
    assert answer.status_code == 400
    assert parameter in answer.json()["error_description"]


def test_start_is_inclusive_and_end_exclusive(server: SandboxServer, sandbox: Sandbox) -> None:
    cycles = sandbox.records("alice", "cycle")
    window = {"start": cycles[5]["start"], "end": cycles[3]["start"]}
    page = get(server, "/v2/cycle", bearer(server), **window).json()
    assert [c["id"] for c in page["records"]] == [cycles[4]["id"], cycles[5]["id"]]
    offset = {
        k: parse(v).astimezone(timezone(timedelta(hours=-5))).isoformat() for k, v in window.items()
    }
    assert get(server, "/v2/cycle", bearer(server), **offset).json() == page


def test_recovery_window_applies_to_its_sleep_start(
    server: SandboxServer, sandbox: Sandbox
) -> None:
    main_sleeps = [s for s in sandbox.records("alice", "sleep") if not s["nap"]]
    target = main_sleeps[6]
    page = get(
        server, "/v2/recovery", bearer(server), start=target["start"], end=main_sleeps[5]["start"]
    )
    assert [r["sleep_id"] for r in page.json()["records"]] == [target["id"]]


def test_next_token_needs_the_same_window(server: SandboxServer, sandbox: Sandbox) -> None:
    auth = bearer(server)
    start = iso(NOW - timedelta(days=20))
    first = get(server, "/v2/cycle", auth, start=start, limit=5).json()
    token = first["next_token"]
    resumed = get(server, "/v2/cycle", auth, start=start, limit=5, nextToken=token)
    assert resumed.status_code == 200
    assert resumed.json()["records"][0]["id"] == sandbox.records("alice", "cycle")[5]["id"]
    for changed in (
        {"start": iso(NOW - timedelta(days=19))},
        {"start": start, "end": iso(NOW)},
        {},
    ):
        answer = get(server, "/v2/cycle", auth, limit=5, nextToken=token, **changed)
        assert answer.status_code == 400
        assert "start/end" in answer.json()["error_description"]
    for bad in ("not-a-token", base64.urlsafe_b64encode(b'{"a": 1}').decode(), "!!"):
        answer = get(server, "/v2/cycle", auth, start=start, nextToken=bad)
        assert answer.status_code == 400
    other = get(server, "/v2/activity/sleep", auth, start=start, nextToken=token)
    assert other.status_code == 400


def test_current_cycle_has_no_end_until_the_next_begins(sandbox: Sandbox) -> None:
    current = sandbox.records("alice", "cycle")[0]
    assert "end" not in current
    assert current["updated_at"] == iso(NOW)
    sandbox.advance(days=1)
    cycles = sandbox.records("alice", "cycle")
    ended = next(c for c in cycles if c["id"] == current["id"])
    assert ended["end"] == cycles[cycles.index(ended) - 1]["start"]
    assert ended["score"]["strain"] >= current["score"]["strain"]
    assert "end" not in cycles[0]


def test_pending_sleep_and_recovery_are_scored_later(sandbox: Sandbox) -> None:
    def just_ended() -> list[dict[str, Any]]:
        return [
            s
            for s in sandbox.records("alice", "sleep")
            if s["score_state"] == "PENDING_SCORE"
            and parse(s["end"]) + timedelta(hours=2) > sandbox.now
        ]

    while not just_ended():
        sandbox.advance(minutes=30)
    sleep = just_ended()[0]
    assert "score" not in sleep
    assert sleep["updated_at"] == sleep["created_at"]
    sandbox.advance(hours=2)
    with SandboxServer(sandbox) as server:
        auth = bearer(server)
        scored = get(server, f"/v2/activity/sleep/{sleep['id']}", auth).json()
        recovery = get(server, f"/v2/cycle/{sleep['cycle_id']}/recovery", auth).json()
    assert scored["score_state"] == "SCORED"
    assert scored["updated_at"] == iso(parse(sleep["end"]) + timedelta(hours=2))
    assert recovery["sleep_id"] == sleep["id"]
    assert recovery["score_state"] == "SCORED"
    assert recovery["updated_at"] == scored["updated_at"]


def test_late_manual_workout_appears_only_after_advance() -> None:
    behind = Sandbox(members=("alice",), history_days=10, now=NOW)
    ahead = Sandbox(members=("alice",), history_days=10, now=NOW)
    ahead.advance(days=1)
    for _ in range(200):
        seen = {w["id"] for w in behind.records("alice", "workout")}
        late = [
            w
            for w in ahead.records("alice", "workout")
            if w["id"] not in seen and parse(w["start"]) < behind.now - timedelta(days=1)
        ]
        if late:
            break
        behind.advance(days=1)
        ahead.advance(days=1)
    else:
        pytest.fail("no late manual workout in 200 days")
    workout = late[0]
    assert parse(workout["created_at"]) - parse(workout["start"]) == timedelta(days=3)
    with SandboxServer(behind) as server:
        auth = {"Authorization": f"Bearer {behind.issue_access_token('alice')}"}
        assert get(server, f"/v2/activity/workout/{workout['id']}", auth).status_code == 404
        behind.advance(days=1)
        auth = {"Authorization": f"Bearer {behind.issue_access_token('alice')}"}
        assert get(server, f"/v2/activity/workout/{workout['id']}", auth).json() == workout


def test_by_id_lookups_and_404s(server: SandboxServer, sandbox: Sandbox) -> None:
    auth = bearer(server)
    cycle = sandbox.records("alice", "cycle")[3]
    sleep = sandbox.records("alice", "sleep")[3]
    workout = sandbox.records("alice", "workout")[0]
    assert get(server, f"/v2/cycle/{cycle['id']}", auth).json() == cycle
    assert get(server, f"/v2/activity/sleep/{sleep['id']}", auth).json() == sleep
    assert get(server, f"/v2/activity/workout/{workout['id']}", auth).json() == workout
    main = get(server, f"/v2/cycle/{cycle['id']}/sleep", auth).json()
    assert main["cycle_id"] == cycle["id"]
    assert main["nap"] is False
    bobs = sandbox.records("bob", "cycle")[3]
    bobs_sleep = sandbox.records("bob", "sleep")[3]
    missing = [
        f"/v2/cycle/{bobs['id']}",
        f"/v2/cycle/{bobs['id']}/recovery",
        f"/v2/activity/sleep/{bobs_sleep['id']}",
        "/v2/cycle/123",
        "/v2/activity/workout/00000000-0000-0000-0000-000000000000",
        "/v2/no/such/path",
    ]
    for path in missing:
        answer = get(server, path, auth)
        assert answer.status_code == 404, path
        assert answer.json()["error"] == "not_found"
    assert get(server, "/v2/cycle/abc", auth).status_code == 400
    assert get(server, "/v2/activity/sleep/not-a-uuid", auth).status_code == 400


def test_cycle_without_sleep_or_recovery_yet_is_404() -> None:
    cycle = Sandbox(members=("alice",), history_days=3, now=NOW).records("alice", "cycle")[1]
    sandbox = Sandbox(
        members=("alice",), history_days=3, now=parse(cycle["start"]) + timedelta(minutes=1)
    )
    with SandboxServer(sandbox) as server:
        auth = {"Authorization": f"Bearer {sandbox.issue_access_token('alice')}"}
        assert "end" not in get(server, f"/v2/cycle/{cycle['id']}", auth).json()
        assert get(server, f"/v2/cycle/{cycle['id']}/sleep", auth).status_code == 404
        assert get(server, f"/v2/cycle/{cycle['id']}/recovery", auth).status_code == 404
        sandbox.advance(hours=12)
        auth = {"Authorization": f"Bearer {sandbox.issue_access_token('alice')}"}
        assert get(server, f"/v2/cycle/{cycle['id']}/sleep", auth).status_code == 200
        assert get(server, f"/v2/cycle/{cycle['id']}/recovery", auth).status_code == 200


# Auth


def test_missing_scope_is_403_and_bad_tokens_401(server: SandboxServer, sandbox: Sandbox) -> None:
    cycles_only = {
        "Authorization": f"Bearer {sandbox.issue_access_token('alice', ['read:cycles'])}"
    }
    assert get(server, "/v2/cycle", cycles_only).status_code == 200
    answer = get(server, "/v2/user/profile/basic", cycles_only)
    assert answer.status_code == 403
    assert "read:profile" in answer.json()["error_description"]
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        assert get(server, "/v2/cycle", headers).status_code == 401
    auth = bearer(server)
    sandbox.advance(seconds=3599)
    assert get(server, "/v2/cycle", auth).status_code == 200
    sandbox.advance(seconds=1)
    assert get(server, "/v2/cycle", auth).status_code == 401


def test_refresh_tokens_rotate(server: SandboxServer, sandbox: Sandbox) -> None:
    seed = sandbox.seed_refresh_token("alice")
    assert seed == "sandbox-seed-alice"
    first = refresh(server, seed)
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"access_token", "expires_in", "refresh_token", "scope", "token_type"}
    assert body["expires_in"] == 3600
    assert body["token_type"] == "bearer"
    assert body["scope"].split() == list(ALL_SCOPES)
    old_access = {"Authorization": f"Bearer {body['access_token']}"}
    assert get(server, "/v2/cycle", old_access).status_code == 200

    assert refresh(server, seed).json()["error"] == "invalid_grant"
    second = refresh(server, body["refresh_token"]).json()
    assert get(server, "/v2/cycle", old_access).status_code == 401
    assert (
        get(server, "/v2/cycle", {"Authorization": f"Bearer {second['access_token']}"}).status_code
        == 200
    )
    reused = refresh(server, body["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert sandbox.stats()["refreshes"] == 2
    assert sandbox.stats()["invalid_grant"] == 2
    assert sandbox.stats()["token_requests"] == 4

    no_offline = refresh(server, second["refresh_token"], scope="read:cycles")
    assert no_offline.json()["error"] == "invalid_scope"
    wrong_client = refresh(server, second["refresh_token"], client_secret="guess")
    assert wrong_client.status_code == 401
    assert wrong_client.json() == {
        "error": "invalid_client",
        "error_description": "wrong client_id or client_secret",
    }
    assert refresh(server, second["refresh_token"]).status_code == 200


def test_racing_refreshes_have_one_winner(server: SandboxServer, sandbox: Sandbox) -> None:
    token = sandbox.issue_refresh_token("alice")
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def race() -> None:
        barrier.wait()
        statuses.append(refresh(server, token).status_code)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [400] * 7


def test_authorization_code_flow(server: SandboxServer, sandbox: Sandbox) -> None:
    redirect_uri = "https://pipeline.example/callback"
    consent = {
        "client_id": "sandbox-client",
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": "read:cycles read:sleep offline",
        "state": "s3cr3t-state",
        "member": "bob",
    }

    def authorize(**changes: str) -> requests.Response:
        url = f"{server.oauth_url}/auth"
        return requests.get(url, params={**consent, **changes}, allow_redirects=False, timeout=5)

    assert authorize(client_id="someone-else").status_code == 401
    assert authorize(state="short").status_code == 400
    assert authorize(scope="read:everything").status_code == 400
    answer = authorize()
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect_uri
    query = parse_qs(location.query)
    assert query["state"] == ["s3cr3t-state"]
    code = query["code"][0]

    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    assert token_request(server, **{**exchange, "client_secret": "wrong"}).status_code == 401
    tokens = token_request(server, **exchange).json()
    assert tokens["scope"] == "read:cycles read:sleep offline"
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (
        get(server, "/v2/cycle", auth).json()["records"][0]["user_id"]
        == sandbox.member("bob").user_id
    )
    assert get(server, "/v2/recovery", auth).status_code == 403
    assert token_request(server, **exchange).json()["error"] == "invalid_grant"
    assert refresh(server, tokens["refresh_token"]).status_code == 200

    code = parse_qs(urlsplit(authorize().headers["Location"]).query)["code"][0]
    mismatched = {**exchange, "code": code, "redirect_uri": "https://elsewhere.example/cb"}
    assert token_request(server, **mismatched).json()["error"] == "invalid_grant"

    online = parse_qs(urlsplit(authorize(scope="read:cycles").headers["Location"]).query)
    tokens = token_request(server, **{**exchange, "code": online["code"][0]}).json()
    assert "refresh_token" not in tokens


def test_revoking_access_ends_every_token(server: SandboxServer, sandbox: Sandbox) -> None:
    first = refresh(server, sandbox.issue_refresh_token("alice")).json()
    spare = sandbox.issue_refresh_token("alice")
    auth = {"Authorization": f"Bearer {first['access_token']}"}
    bob = bearer(server, "bob")
    answer = requests.delete(f"{server.api_url}/v2/user/access", headers=auth, timeout=5)
    assert answer.status_code == 204
    assert get(server, "/v2/cycle", auth).status_code == 401
    assert refresh(server, first["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(server, spare).json()["error"] == "invalid_grant"
    assert refresh(server, sandbox.seed_refresh_token("alice")).json()["error"] == "invalid_grant"
    assert get(server, "/v2/cycle", bob).status_code == 200
    assert refresh(server, sandbox.issue_refresh_token("alice")).status_code == 200


# Rate limit, faults, stats


def test_rate_limit_is_app_wide_with_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Budgets are shared by all members and roll over with the limiter's clock (faked here)."""
    elapsed = [0.0]
    monkeypatch.setattr(sandbox_app, "RateLimiter", partial(RateLimiter, clock=lambda: elapsed[0]))
    sandbox = Sandbox(
        members=("alice", "bob"), history_days=3, now=NOW, per_minute=3, minute_window=30
    )
    with SandboxServer(sandbox) as server:
        alice, bob = bearer(server, "alice"), bearer(server, "bob")
        elapsed[0] = 29.5
        answers = [get(server, "/v2/cycle", who) for who in (alice, bob, alice, bob)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        for answer in answers:
            assert answer.headers["X-RateLimit-Limit"] == "3, 3;window=30, 10000;window=86400"
            assert answer.headers["X-RateLimit-Reset"] == "1"
        assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert requests.get(f"{server.url}/_sandbox/stats", timeout=5).status_code == 200
        assert refresh(server, sandbox.issue_refresh_token("bob")).status_code == 200
        assert get(server, "/v2/cycle", alice).status_code == 429
        elapsed[0] = 30.0
        renewed = get(server, "/v2/cycle", alice)
        assert renewed.status_code == 200
        assert renewed.headers["X-RateLimit-Remaining"] == "2"
        assert renewed.headers["X-RateLimit-Reset"] == "30"
        stats = sandbox.stats()
    assert stats["requests"] == 6
    assert stats["rate_limited"] == 2
    assert stats["by_status"] == {"200": 4, "429": 2}
    assert stats["by_path"] == {"/v2/cycle": 6}


def test_unlimited_budgets_send_no_rate_headers() -> None:
    sandbox = Sandbox(members=("alice",), history_days=2, now=NOW, per_minute=None, per_day=None)
    with SandboxServer(sandbox) as server:
        answer = get(server, "/v2/cycle", bearer(server))
    assert answer.status_code == 200
    assert "X-RateLimit-Limit" not in answer.headers


@pytest.mark.parametrize("kind", ["500", "502", "503", "429", "401", "403", "400", "404"])
def test_status_faults(server: SandboxServer, sandbox: Sandbox, kind: str) -> None:
    auth = bearer(server)
    sandbox.inject_fault("/v2/cycle", kind, times=2)
    answers = [get(server, "/v2/cycle", auth) for _ in range(3)]
    assert [a.status_code for a in answers] == [int(kind), int(kind), 200]
    assert answers[0].json()["error"]
    assert "X-RateLimit-Remaining" in answers[0].headers
    if kind == "429":
        assert answers[0].headers["X-RateLimit-Remaining"] == "0"
        assert answers[0].headers["X-RateLimit-Reset"] == "2"
    assert sandbox.stats()["by_status"][kind] == 2
    assert get(server, "/v2/activity/sleep", auth).status_code == 200


def test_timeout_reset_and_garbage_faults(server: SandboxServer, sandbox: Sandbox) -> None:
    auth = bearer(server)
    sandbox.fault_delay = 0.3
    sandbox.inject_fault("/developer/v2/recovery", "timeout")
    began = time.monotonic()
    assert get(server, "/v2/recovery", auth).status_code == 200
    assert time.monotonic() - began >= 0.3
    sandbox.inject_fault("/v2/recovery", "timeout")
    with pytest.raises(requests.exceptions.Timeout):
        requests.get(f"{server.api_url}/v2/recovery", headers=auth, timeout=0.1)

    sandbox.inject_fault("/v2/activity", "reset")
    with pytest.raises(
        (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
    ):
        get(server, "/v2/activity/workout", auth)
    sandbox.inject_fault("/v2/activity/workout", "garbage")
    garbage = get(server, "/v2/activity/workout", auth)
    assert garbage.status_code == 200
    with pytest.raises(requests.exceptions.JSONDecodeError):
        garbage.json()
    assert get(server, "/v2/activity/workout", auth).status_code == 200
    assert sandbox.stats()["by_path"]["/v2/activity/workout"] == 3


def test_token_endpoint_faults(server: SandboxServer, sandbox: Sandbox) -> None:
    token = sandbox.issue_refresh_token("alice")
    sandbox.inject_fault("/oauth/oauth2/token", "503")
    assert refresh(server, token).status_code == 503
    sandbox.inject_fault("/oauth/oauth2/token", "no_refresh_token")
    answer = refresh(server, token)
    assert answer.status_code == 200
    assert "refresh_token" not in answer.json()
    rotated = refresh(server, token).json()
    assert refresh(server, token).json()["error"] == "invalid_grant"
    sandbox.inject_fault("/oauth/oauth2/token", "reset")
    with pytest.raises(
        (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
    ):
        refresh(server, rotated["refresh_token"])
    assert refresh(server, rotated["refresh_token"]).status_code == 200
    assert sandbox.stats()["requests"] == 0
    assert sandbox.stats()["token_requests"] == 6
    with pytest.raises(ValueError):
        sandbox.inject_fault("/v2/cycle", "no_refresh_token")
    with pytest.raises(ValueError):
        sandbox.inject_fault("/v2/cycle", "418")


# Control from another process


def test_admin_api(server: SandboxServer, sandbox: Sandbox) -> None:
    admin = f"{server.url}/_sandbox"
    members = requests.get(f"{admin}/members", timeout=5).json()
    assert members == [
        {"key": m.key, "user_id": m.user_id, "seed_refresh_token": f"sandbox-seed-{m.key}"}
        for m in sandbox.members
    ]
    fresh = requests.post(f"{admin}/members/bob/refresh_token", timeout=5).json()["refresh_token"]
    auth = {"Authorization": f"Bearer {refresh(server, fresh).json()['access_token']}"}
    assert requests.post(f"{admin}/members/carol/refresh_token", timeout=5).status_code == 404

    fault = {"path": "/v2/cycle", "kind": "502", "times": 1}
    assert requests.post(f"{admin}/faults", json=fault, timeout=5).status_code == 201
    assert (
        requests.post(f"{admin}/faults", json={**fault, "kind": "nope"}, timeout=5).status_code
        == 400
    )
    assert get(server, "/v2/cycle", auth).status_code == 502
    stats = requests.get(f"{admin}/stats", timeout=5).json()
    assert stats["requests"] == 1
    assert stats["by_status"] == {"502": 1}
    assert requests.post(f"{admin}/stats/reset", timeout=5).json()["requests"] == 0

    advanced = requests.post(f"{admin}/advance", json={"hours": 24}, timeout=5).json()
    assert parse(advanced["now"]) == NOW + timedelta(hours=24) == sandbox.now
    assert requests.post(f"{admin}/advance", json={"days": -1}, timeout=5).status_code == 400
    assert requests.post(f"{admin}/advance", json={"days": "1"}, timeout=5).status_code == 400
    assert sandbox.stats()["requests"] == 0


def test_state_file_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "sandbox.json"
    first = Sandbox(members=("alice",), history_days=5, now=NOW, state_file=state)
    with SandboxServer(first) as server:
        tokens = refresh(server, first.seed_refresh_token("alice")).json()
        doomed = first.issue_refresh_token("alice")
        assert refresh(server, doomed).status_code == 200
        first.advance(minutes=30)
    second = Sandbox(members=("alice",), history_days=5, now=NOW, state_file=state)
    assert second.now == NOW + timedelta(minutes=30)
    with SandboxServer(second) as server:
        assert refresh(server, "sandbox-seed-alice").json()["error"] == "invalid_grant"
        assert refresh(server, doomed).json()["error"] == "invalid_grant"
        assert refresh(server, tokens["refresh_token"]).status_code == 200
    assert not [p for p in tmp_path.iterdir() if p != state]
    assert json.loads(state.read_text())["clock_offset_ms"] == 30 * 60 * 1000


def test_bad_arguments_to_sandbox_are_errors() -> None:
    for kwargs in (
        {"members": ()},
        {"members": ("a", "a")},
        {"members": ("a b",)},
        {"history_days": -1},
    ):
        with pytest.raises(ValueError):
            Sandbox(**kwargs)
    with pytest.raises(TypeError):
        Sandbox(members="alice")
    with pytest.raises(KeyError):
        Sandbox(members=("alice",), history_days=1).records("carol", "cycle")


def test_ten_years_of_history_serve_exact_pages() -> None:
    """A decade-long member pages like a new one: exactly the window's records, newest first."""
    sandbox = Sandbox(members=("veteran",), history_days=3650, now=NOW)
    start = datetime(2018, 3, 1, tzinfo=timezone.utc)
    end = datetime(2018, 4, 1, tzinfo=timezone.utc)
    sleeps = sandbox.records("veteran", "sleep")
    expected = [s for s in sleeps if start <= parse(s["start"]) < end]
    with SandboxServer(sandbox) as server:
        auth = {"Authorization": f"Bearer {sandbox.issue_access_token('veteran')}"}
        window = {"start": iso(start), "end": iso(end), "limit": 25}
        records = walk(server, "/v2/activity/sleep", auth, **window)
        recent = get(server, "/v2/cycle", auth, limit=25).json()
    assert len(records) >= 31
    assert records == expected
    assert [r["start"] for r in records] == sorted((r["start"] for r in records), reverse=True)
    assert "v1_id" in records[0]
    assert recent["records"] == sandbox.records("veteran", "cycle")[:25]
    assert recent["next_token"]


# The CLI


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "abc"],
        ["--port", "70000"],
        ["--now", "tomorrow"],
        ["--members", "alice,,bob"],
        ["--per-minute", "0"],
        ["--history-days", "-3"],
        ["--signal-interval", "0"],
        ["--bogus"],
    ],
)
def test_cli_rejects_bad_arguments(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("tap-whoop-sandbox: error: ")


def test_a_port_in_use_is_an_error_not_an_exit(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            SandboxServer(Sandbox(members=("alice",), history_days=1), port=port)
        assert main(["--port", str(port), "--history-days", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tap-whoop-sandbox: error: cannot serve on 127.0.0.1:{port}")
    assert len(err.strip().splitlines()) == 1


def test_cli_module_fails_without_traceback() -> None:
    command = [sys.executable, "-m", "whoop_sandbox", "--port", "abc"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tap-whoop-sandbox: error: argument --port: expected a port from 0 to 65535, got 'abc'"
    ]


def test_cli_serves_until_sigterm() -> None:
    command = [
        sys.executable,
        "-m",
        "whoop_sandbox",
        "--port",
        "0",
        "--members",
        "carol",
        "--now",
        "2026-11-20T12:00:00Z",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            base = fields["api_url"].removesuffix("/developer")
            assert fields["oauth_url"] == f"{base}/oauth/oauth2"
            members = requests.get(f"{base}/_sandbox/members", timeout=5).json()
            assert [m["key"] for m in members] == ["carol"]
            clock = requests.get(f"{base}/_sandbox/clock", timeout=5).json()
            assert clock["now"] == "2026-11-20T12:00:00.000Z"
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        assert "Traceback" not in (process.stderr.read() if process.stderr else "")


def test_cli_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for default in (
        "default: 127.0.0.1",
        "default: 8765; 0 picks a free port",
        "default: alice,bob",
        "default: 90",
        "default: this hour (UTC)",
        "default: 100",
        "default: 10000",
        "default: 3600",
        "default: none (forget on exit)",
        "default: sandbox-client",
        "default: sandbox-secret",
        "(/stream); default: 30",
        "sandbox-seed-KEY",
        "&member=KEY",
        "tap-whoop auth --config sandbox.json --listen 0",
    ):
        assert default in help_text, default


def test_cli_prints_its_settings_when_it_starts() -> None:
    """The banner tells a user all they need: URLs, client, tokens, consent, clock, limits."""
    command = [
        sys.executable,
        "-m",
        "whoop_sandbox",
        "--port",
        "0",
        "--members",
        "dora,eli",
        "--now",
        "2026-11-20T12:00:00Z",
        "--per-day",
        "none",
        "--client-secret",
        "not-the-default",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(6)]
            fields = dict(
                part.split("=", 1) for line in lines for part in line.split() if "=" in part
            )
            assert lines[0].startswith("WHOOP sandbox: api_url=http://127.0.0.1:")
            assert fields["members"] == "dora,eli"
            assert fields["client_id"] == "sandbox-client"
            assert fields["client_secret"] == "not-the-default"
            assert fields["dora"] == "sandbox-seed-dora"
            assert fields["eli"] == "sandbox-seed-eli"
            assert fields["clock"] == "2026-11-20T12:00:00.000Z"
            assert fields["history_days"] == "90"
            assert fields["rate_limit"] == "100/minute,unlimited"
            assert fields["access_token_ttl"] == "3600s"
            oauth_url = fields["oauth_url"]
            assert f"consent: {oauth_url}/auth approves at once as dora" in lines[3]
            base = oauth_url.removesuffix("/oauth/oauth2")
            assert f"admin: {base}/_sandbox" in lines[5]
            # What it printed is enough to get tokens, by refresh token or by consent.
            client = {"client_id": fields["client_id"], "client_secret": fields["client_secret"]}
            form = {
                "grant_type": "refresh_token",
                "refresh_token": fields["eli"],
                "scope": "offline",
            }
            answer = requests.post(f"{oauth_url}/token", data={**client, **form}, timeout=5)
            assert answer.status_code == 200, answer.text
            consent = {
                "client_id": fields["client_id"],
                "redirect_uri": "https://localhost/whoop/callback",
                "response_type": "code",
                "scope": "read:profile offline",
                "state": "state-1234",
            }
            redirect = requests.get(
                f"{oauth_url}/auth", params=consent, allow_redirects=False, timeout=5
            )
            assert redirect.status_code == 302
            code = parse_qs(urlsplit(redirect.headers["Location"]).query)["code"][0]
            exchange = {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": consent["redirect_uri"],
            }
            tokens = requests.post(
                f"{oauth_url}/token", data={**client, **exchange}, timeout=5
            ).json()
            profile = requests.get(
                f"{fields['api_url']}/v2/user/profile/basic",
                headers={"Authorization": f"Bearer {tokens['access_token']}"},
                timeout=5,
            ).json()
            assert profile["first_name"] == "Dora"
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0


def test_banner_says_when_a_seed_token_is_spent(tmp_path: Path) -> None:
    state = tmp_path / "sandbox.json"
    args = server_module._parser().parse_args(["--members", "alice,bob", "--history-days", "1"])
    first = Sandbox(members=("alice", "bob"), history_days=1, now=NOW, state_file=state)
    with SandboxServer(first) as server:
        assert refresh(server, "sandbox-seed-alice").status_code == 200
    again = Sandbox(members=("alice", "bob"), history_days=1, now=NOW, state_file=state)
    with SandboxServer(again) as server:
        lines = server_module.banner(server, args)
    assert "alice=sandbox-seed-alice (already used) bob=sandbox-seed-bob" in lines[2]
    assert lines[0] == (
        f"WHOOP sandbox: api_url={server.api_url} oauth_url={server.oauth_url} members=alice,bob"
    )
