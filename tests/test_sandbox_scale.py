"""The sandbox at scale: per-member history, members added later, simulated-day budgets."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from whoop_sandbox import Sandbox, SandboxServer

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
CLIENT = {"client_id": "sandbox-client", "client_secret": "sandbox-secret"}


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def bearer(server: SandboxServer, member: str) -> dict[str, str]:
    form = {
        **CLIENT,
        "grant_type": "refresh_token",
        "refresh_token": server.sandbox.seed_refresh_token(member),
        "scope": "offline",
    }
    answer = requests.post(f"{server.oauth_url}/token", data=form, timeout=5)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def cycles(server: SandboxServer, headers: dict[str, str]) -> requests.Response:
    return requests.get(f"{server.api_url}/v2/cycle", headers=headers, timeout=5)


def oldest_start(box: Sandbox, key: str) -> datetime:
    return parse(box.records(key, "cycle")[-1]["start"])


def test_members_can_have_their_own_history_length() -> None:
    box = Sandbox(
        members=("alice", "bob", "carol"),
        history_days=10,
        now=NOW,
        member_history_days={"bob": 3, "carol": 400},
    )
    days = {key: (NOW - oldest_start(box, key)).days for key in ("alice", "bob", "carol")}
    assert 9 <= days["alice"] <= 10
    assert 2 <= days["bob"] <= 3
    assert 399 <= days["carol"] <= 400
    assert len(box.records("carol", "cycle")) > 30 * len(box.records("bob", "cycle"))


def test_the_same_member_gets_the_same_records_whatever_the_others_history() -> None:
    plain = Sandbox(members=("alice",), history_days=5, now=NOW)
    mixed = Sandbox(
        members=("alice", "bob"), history_days=5, now=NOW, member_history_days={"bob": 50}
    )
    assert plain.records("alice", "sleep") == mixed.records("alice", "sleep")


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ({"zoe": 3}, "unknown members: zoe"),
        ({"alice": -1}, "must be an integer >= 0"),
        ({"alice": 2.5}, "must be an integer >= 0"),
        ({"alice": True}, "must be an integer >= 0"),
    ],
)
def test_bad_member_history_days_are_refused(history: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Sandbox(members=("alice",), now=NOW, member_history_days=history)  # type: ignore[arg-type]


def test_a_member_added_later_has_history_from_the_sandbox_now_and_a_working_seed() -> None:
    box = Sandbox(members=("alice",), history_days=3, now=NOW, per_minute=None, per_day=None)
    box.advance(days=2)
    member = box.add_member("dave", history_days=60)
    assert box.member("dave") is member
    assert [m.key for m in box.members] == ["alice", "dave"]
    oldest = oldest_start(box, "dave")
    assert timedelta(days=59) <= box.now - oldest <= timedelta(days=60)
    with SandboxServer(box) as server:
        answer = cycles(server, bearer(server, "dave"))
        assert answer.status_code == 200
        assert {record["user_id"] for record in answer.json()["records"]} == {member.user_id}
    # Records keep appearing for them as the clock moves.
    before = len(box.records("dave", "cycle"))
    box.advance(days=1)
    assert len(box.records("dave", "cycle")) == before + 1


def test_adding_a_member_twice_or_with_a_bad_key_is_refused() -> None:
    box = Sandbox(members=("alice",), history_days=3, now=NOW)
    with pytest.raises(ValueError, match="already exists"):
        box.add_member("alice")
    with pytest.raises(ValueError, match="may use only"):
        box.add_member("no spaces")
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        box.add_member("erin", history_days=-3)


def test_the_admin_api_adds_members() -> None:
    box = Sandbox(members=("alice",), history_days=3, now=NOW, per_minute=None, per_day=None)
    with SandboxServer(box) as server:
        added = requests.post(
            f"{server.admin_url}/members", json={"key": "frank", "history_days": 30}, timeout=5
        )
        assert added.status_code == 201
        body = added.json()
        assert body["key"] == "frank"
        assert body["user_id"] == box.member("frank").user_id
        assert body["seed_refresh_token"] == box.seed_refresh_token("frank")
        listed = requests.get(f"{server.admin_url}/members", timeout=5).json()
        assert [entry["key"] for entry in listed] == ["alice", "frank"]
        again = requests.post(f"{server.admin_url}/members", json={"key": "frank"}, timeout=5)
        assert again.status_code == 400
        assert "already exists" in again.json()["error_description"]
        missing = requests.post(f"{server.admin_url}/members", json={}, timeout=5)
        assert missing.status_code == 400


def test_a_state_file_remembers_added_members(tmp_path: Path) -> None:
    state = tmp_path / "sandbox.json"
    box = Sandbox(members=("alice",), history_days=3, now=NOW, state_file=state)
    box.add_member("gina", history_days=20)
    box.advance(hours=30)
    records = box.records("gina", "workout")
    token = box.issue_refresh_token("gina")
    box.close()

    again = Sandbox(members=("alice",), history_days=3, now=NOW, state_file=state)
    assert again.records("gina", "workout") == records
    assert again.member("gina").user_id == box.member("gina").user_id
    with SandboxServer(again) as server:
        form = {**CLIENT, "grant_type": "refresh_token", "refresh_token": token, "scope": "offline"}
        answer = requests.post(f"{server.oauth_url}/token", data=form, timeout=5)
        assert answer.status_code == 200
    # Each later change is logged once, not once per reload: as by a sandbox never reloaded.
    user_id = box.member("gina").user_id
    box.advance(days=1)
    again.advance(days=1)
    kept, reloaded = (
        [(e["id"], e["type"]) for e in sandbox.webhook_log() if e["user_id"] == user_id]
        for sandbox in (box, again)
    )
    assert reloaded
    assert reloaded == kept[-len(reloaded) :]


def test_record_ids_are_the_ids_records_lists_without_rendering() -> None:
    box = Sandbox(members=("alice",), history_days=40, now=NOW)
    keys = {"cycle": "id", "sleep": "id", "workout": "id", "recovery": "sleep_id"}
    for kind, field in keys.items():
        listed = [str(record[field]) for record in box.records("alice", kind)]  # type: ignore[arg-type]
        assert box.record_ids("alice", kind) == listed  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        box.record_ids("nobody", "cycle")


def test_a_sandbox_clock_daily_window_renews_with_each_simulated_day() -> None:
    box = Sandbox(
        members=("alice",),
        history_days=3,
        now=NOW,
        per_minute=1000,
        per_day=3,
        minute_window=0.25,
        day_window_clock="sandbox",
        access_token_ttl=3 * 86_400,
    )
    with SandboxServer(box) as server:
        headers = bearer(server, "alice")
        answers = [cycles(server, headers) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[0].headers["X-RateLimit-Limit"] == "3, 1000;window=0.25, 3;window=86400"
        assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        # The sandbox clock stands still, so the whole simulated day is left to wait.
        assert answers[2].headers["X-RateLimit-Reset"] == "86400"
        box.advance(hours=6)
        assert cycles(server, headers).status_code == 429
        assert cycles(server, headers).headers["X-RateLimit-Reset"] == str(18 * 3600)
        box.advance(hours=18)
        renewed = cycles(server, headers)
        assert renewed.status_code == 200
        assert renewed.headers["X-RateLimit-Remaining"] == "2"
    assert box.stats()["rate_limited"] == 3


def test_a_real_time_daily_window_ignores_the_sandbox_clock() -> None:
    box = Sandbox(members=("alice",), history_days=3, now=NOW, per_minute=None, per_day=2)
    with SandboxServer(box) as server:
        headers = bearer(server, "alice")
        assert [cycles(server, headers).status_code for _ in range(3)] == [200, 200, 429]
        box.advance(days=2)
        assert cycles(server, headers).status_code == 429


def test_day_window_clock_must_be_real_or_sandbox() -> None:
    with pytest.raises(ValueError, match="day_window_clock"):
        Sandbox(members=("alice",), now=NOW, day_window_clock="wall")


def test_requests_are_counted_per_member_when_asked() -> None:
    box = Sandbox(
        members=("alice", "bob"),
        history_days=3,
        now=NOW,
        per_minute=None,
        per_day=None,
        count_by_member=True,
    )
    with SandboxServer(box) as server:
        alice, bob = bearer(server, "alice"), bearer(server, "bob")
        cycles(server, alice)
        cycles(server, alice)
        requests.get(f"{server.api_url}/v2/user/profile/basic", headers=bob, timeout=5)
        requests.get(f"{server.api_url}/v2/cycle", timeout=5)  # no token: nobody's
        assert box.stats()["by_member"] == {
            "alice": {"/v2/cycle": 2},
            "bob": {"/v2/user/profile/basic": 1},
        }
        box.reset_stats()
        assert box.stats()["by_member"] == {}
        cycles(server, bob)
        assert box.stats()["by_member"] == {"bob": {"/v2/cycle": 1}}


def test_requests_are_not_counted_per_member_by_default() -> None:
    box = Sandbox(members=("alice",), history_days=3, now=NOW)
    assert "by_member" not in box.stats()
