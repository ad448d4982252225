"""`sleep_signals`: one request per final sleep, read once per version, deleted with its sleep.

Every test runs the tap against the sandbox over real HTTP on loopback.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
import typing as t
import uuid

import pytest
import requests
from conftest import catalog_selecting, members_config, run_tap, tap_config

from tap_whoop import cost
from tap_whoop.check import sync_cost
from tap_whoop.errors import MembersFailedError
from tap_whoop.plan import HISTORY_WITHOUT_START_DATE, member_plans
from tap_whoop.run import Run
from tap_whoop.stores.inbox import Event
from tap_whoop.tap import TapWhoop
from whoop_sandbox.signals import signal_stream

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from whoop_sandbox import Sandbox

SELECT = {"profile", "sleep", "sleep_signals"}
TYPES = ["hr", "skin_temp"]


def stream_requests(sandbox: Sandbox) -> dict[str, int]:
    """Requests for each sleep's signals, by sleep id."""
    return {
        path.split("/")[4]: count
        for path, count in sandbox.stats()["by_path"].items()
        if path.endswith("/stream")
    }


def final(sleeps: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    return [s for s in sleeps if s["score_state"] != "PENDING_SCORE" and s.get("end")]


@pytest.fixture
def config(sandbox: Sandbox, tmp_path: Path) -> dict[str, t.Any]:
    return tap_config(sandbox, tmp_path, sleep_signal_types=TYPES, lookback_days=2)


def test_one_request_per_final_sleep_with_the_points_as_whoop_sends_them(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    newest = sandbox.records("alice", "sleep")[0]
    sandbox.edit_record("alice", "sleep", newest["id"], {"score_state": "PENDING_SCORE"})
    result = run_tap(config, select=SELECT)

    assert result.error is None
    sleeps = sandbox.records("alice", "sleep")
    finals = final(sleeps)
    assert [s["id"] for s in sleeps if s not in finals] == [newest["id"]]
    assert stream_requests(sandbox) == {s["id"]: 1 for s in finals}
    records = {r["sleep_id"]: r for r in result.records("sleep_signals")}
    assert set(records) == {s["id"] for s in finals}
    user_id = sandbox.member("alice").user_id
    for sleep in finals:
        record = records[sleep["id"]]
        expected = signal_stream(sleep, TYPES)
        assert record["stream"] == expected["stream"]
        assert record["algorithm_version"] == expected["algorithm_version"]
        assert record["types"] == TYPES
        assert record["user_id"] == user_id
        assert record["updated_at"] == sleep["updated_at"]
        assert record["_sdc_deleted_at"] is None
        assert {tuple(sorted(p)) for p in record["stream"]} == {("hr", "skin_temp", "timestamp")}
    schema = next(
        m for m in result.messages if m["type"] == "SCHEMA" and m["stream"] == "sleep_signals"
    )
    assert schema["key_properties"] == ["sleep_id"]


def test_an_unchanged_sleep_is_never_read_twice_and_a_changed_one_is_read_again(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    first = run_tap(config, select=SELECT)
    assert first.error is None
    sandbox.reset_stats()

    second = run_tap(config, state=first.state, select=SELECT)
    assert second.error is None
    assert stream_requests(sandbox) == {}
    assert second.records("sleep") != [], "the window re-lists recent sleeps"
    assert second.records("sleep_signals") == []

    recent = final(sandbox.records("alice", "sleep"))[0]
    edited = sandbox.edit_record("alice", "sleep", recent["id"], {"nap": recent["nap"]})
    assert edited["updated_at"] != recent["updated_at"]
    sandbox.advance(days=1)  # a new night: one more final sleep (or more, with naps)
    sandbox.reset_stats()
    before = {s["id"] for s in final(sandbox.records("alice", "sleep"))}
    third = run_tap(config, state=second.state, select=SELECT)

    assert third.error is None
    new = {s["id"] for s in final(sandbox.records("alice", "sleep"))} - {
        r["sleep_id"] for r in first.records("sleep_signals")
    }
    assert new, "advancing a day brings a new final sleep"
    assert stream_requests(sandbox) == {sleep_id: 1 for sleep_id in {recent["id"], *new}}
    replaced = next(r for r in third.records("sleep_signals") if r["sleep_id"] == recent["id"])
    assert replaced["updated_at"] == edited["updated_at"]
    current = sandbox.find("alice", "sleep", recent["id"])
    assert current is not None
    assert replaced["stream"] == signal_stream(current, TYPES)["stream"]
    assert before >= new


def test_a_deleted_sleep_takes_its_signals_with_it(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    first = run_tap(config, select=SELECT)
    assert first.error is None
    gone = final(sandbox.records("alice", "sleep"))[0]
    sandbox.delete_record("alice", "sleep", gone["id"])
    sandbox.reset_stats()

    second = run_tap(config, state=first.state, select=SELECT)

    assert second.error is None
    deleted = [r for r in second.records("sleep_signals") if r["_sdc_deleted_at"]]
    assert [(r["sleep_id"], r["stream"]) for r in deleted] == [(gone["id"], None)]
    assert [r["id"] for r in second.records("sleep") if r["_sdc_deleted_at"]] == [gone["id"]]
    assert stream_requests(sandbox) == {}


def test_empty_types_cost_nothing_even_when_selected(
    sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tap_config(sandbox, tmp_path)
    with caplog.at_level(logging.INFO):
        result = run_tap(config, select=SELECT)

    assert result.error is None
    assert stream_requests(sandbox) == {}
    assert result.records("sleep_signals") == []
    assert [r.getMessage() for r in caplog.records if "sleep_signal_types" in r.getMessage()] == [
        "sleep_signals: selected, but not synced: it costs one request per sleep; name the "
        'signals in sleep_signal_types (e.g. ["hr"]) to sync it'
    ]


def test_a_deactivated_member_is_set_aside_and_the_others_go_on(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = start_sandbox(members=("alice", "bob"), history_days=10)
    server = sandbox.server  # type: ignore[attr-defined]
    answer = requests.post(
        f"{server.url}/_sandbox/members/bob/deactivate", json={"deactivated": True}, timeout=10
    )
    assert answer.json() == {"key": "bob", "deactivated": True}
    config = members_config(sandbox, tmp_path, sleep_signal_types=["hr"])
    with caplog.at_level(logging.WARNING):
        result = run_tap(config, select=SELECT)

    assert isinstance(result.error, MembersFailedError)
    assert "bob" in str(result.error)
    assert "alice" not in str(result.error)
    bob, alice = sandbox.member("bob").user_id, sandbox.member("alice").user_id
    signals = result.records("sleep_signals")
    assert {r["user_id"] for r in signals} == {alice}
    assert len(signals) == len(final(sandbox.records("alice", "sleep")))
    assert {r["user_id"] for r in result.records("sleep")} == {alice, bob}
    bob_requests = [
        path
        for path in sandbox.stats()["by_path"]
        if path.endswith("/stream")
        and path.split("/")[4] in {s["id"] for s in sandbox.records("bob", "sleep")}
    ]
    assert len(bob_requests) == 1, "one refusal sets bob's signals aside for the run"
    lines = [r.getMessage() for r in caplog.records if "deactivated_user" in r.getMessage()]
    assert len(lines) == 1
    assert "member 'bob'" in lines[0]
    assert "inactive" in lines[0]


def test_an_unknown_signal_type_is_one_line_naming_the_fix(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config = tap_config(sandbox, tmp_path, sleep_signal_types=["hr", "heart_rate"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "tap_whoop", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "tap-whoop: error: sleep_signal_types: 'heart_rate' is not a WHOOP signal type: use any "
        "of hr, skin_temp, board_temp, battery_temp, sleep_classification, charging_status, or "
        "[] to leave sleep_signals off"
    ]
    assert sandbox.stats()["by_path"] == {}


def test_the_sandbox_signals_follow_the_night(sandbox: Sandbox) -> None:
    server = sandbox.server  # type: ignore[attr-defined]
    token = sandbox.issue_access_token("alice")
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "tap-whoop-tests/1"}
    sleep = next(s for s in final(sandbox.records("alice", "sleep")) if not s["nap"])
    url = f"{server.api_url}/v2/activity/sleep/{sleep['id']}/stream"

    def get(params: t.Any) -> requests.Response:
        return requests.get(url, params=params, headers=headers, timeout=30)

    everything = get({"types": ["hr", "skin_temp", "sleep_classification"]}).json()
    again = get([("types", "hr"), ("types", "skin_temp"), ("types", "sleep_classification")])
    assert again.json() == everything, "deterministic, and `types` may repeat"
    points = everything["stream"]
    hours = (len(points) * 30) / 3600
    assert 3 < hours < 13
    assert points[0]["timestamp"] == sleep["start"]
    assert all(set(p) == {"timestamp", "hr", "skin_temp", "is_sleeping"} for p in points)
    asleep = [p["hr"] for p in points if p["is_sleeping"]]
    awake = [p["hr"] for p in points if not p["is_sleeping"]]
    assert sum(awake) / len(awake) > sum(asleep) / len(asleep) + 5
    tenth = len(points) // 10
    first = sum(p["skin_temp"] for p in points[:tenth]) / tenth
    last = sum(p["skin_temp"] for p in points[-tenth:]) / tenth
    assert last - first > 0.5, "skin temperature drifts up through the night"
    assert set(get({"types": "hr"}).json()["stream"][0]) == {"timestamp", "hr"}
    assert get({"types": "heart"}).status_code == 400
    assert get({"types": "hr"}).status_code == 200
    missing = get({"types": "hr"}).url.replace(sleep["id"], str(uuid.uuid4()))
    assert requests.get(missing, headers=headers, timeout=30).status_code == 404


def test_the_sandbox_interval_is_configurable(start_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = start_sandbox(signal_interval=60)
    sleep = final(sandbox.records("alice", "sleep"))[0]
    every_minute = signal_stream(sleep, ["hr"], sandbox.signal_interval)["stream"]
    every_30s = signal_stream(sleep, ["hr"])["stream"]
    assert len(every_30s) in (2 * len(every_minute), 2 * len(every_minute) - 1)


def publish(sandbox: Sandbox, config: dict[str, t.Any]) -> None:
    """What WHOOP announced since the last call, delivered into the config's inbox."""
    inbox = Run(config).inbox
    for change in sandbox.webhook_log():
        inbox.add(Event(change["user_id"], change["type"], str(change["id"]), change["trace_id"]))
    sandbox.clear_webhook_log()


def test_webhooks_re_read_an_updated_sleeps_signals_and_delete_a_deleted_ones(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    first = run_tap(config, select=SELECT)
    assert first.error is None
    sandbox.clear_webhook_log()
    sleeps = final(sandbox.records("alice", "sleep"))
    old, gone = sleeps[30], sleeps[40]  # weeks before the window: only an event brings them
    edited = sandbox.edit_record("alice", "sleep", old["id"], {"nap": old["nap"]})
    sandbox.delete_record("alice", "sleep", gone["id"])
    publish(sandbox, config)
    sandbox.reset_stats()

    second = run_tap(config, state=first.state, select=SELECT)

    assert second.error is None
    assert stream_requests(sandbox) == {old["id"]: 1}
    signals = {r["sleep_id"]: r for r in second.records("sleep_signals")}
    assert set(signals) == {old["id"], gone["id"]}
    assert signals[old["id"]]["updated_at"] == edited["updated_at"]
    assert signals[old["id"]]["stream"] == signal_stream(edited, TYPES)["stream"]
    assert signals[gone["id"]]["_sdc_deleted_at"] is not None
    assert signals[gone["id"]]["stream"] is None
    sandbox.reset_stats()

    third = run_tap(config, state=second.state, select=SELECT)
    assert third.error is None
    assert stream_requests(sandbox) == {}, "the event was passed on once"


def test_a_backfill_of_signals_keeps_to_the_run_budget_and_reads_each_sleep_once(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(history_days=60)
    cap = 40
    config = tap_config(sandbox, tmp_path, sleep_signal_types=["hr"], max_requests_per_run=cap)
    asked: dict[str, int] = {}
    result = run_tap(config, select=SELECT)
    runs = 1
    while True:
        assert result.error is None, result.error
        assert sandbox.stats()["requests"] <= cap
        for sleep_id, count in stream_requests(sandbox).items():
            asked[sleep_id] = asked.get(sleep_id, 0) + count
        user_id = sandbox.member("alice").user_id
        partitions = (result.state or {})["bookmarks"]["sleep"]["partitions"]
        (sleep_state,) = [p for p in partitions if p["context"] == {"user_id": user_id}]
        if not sleep_state.get("backfill_end") and sleep_state.get("replication_key_value"):
            break
        assert runs < 10, "the history never completed"
        sandbox.reset_stats()
        result = run_tap(config, state=result.state, select=SELECT)
        runs += 1

    assert runs >= 3, "the budget split the signals' backfill over runs"
    assert asked == {s["id"]: 1 for s in final(sandbox.records("alice", "sleep"))}


def test_plan_test_and_the_budget_count_a_request_per_sleep(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    off = TapWhoop(config=tap_config(sandbox, tmp_path), catalog=catalog(sandbox, tmp_path))
    config = tap_config(sandbox, tmp_path, sleep_signal_types=["hr"])
    on = TapWhoop(config=config, catalog=catalog(sandbox, tmp_path))

    def selected(tap: TapWhoop) -> list[t.Any]:
        return [s for s in tap.streams.values() if s.selected]

    assert cost.window(selected(on), 60) - cost.window(selected(off), 60) == 60 * 1.25 + 1
    assert on.streams["sleep"].page_cost == 26  # type: ignore[attr-defined]
    assert off.streams["sleep"].page_cost == 1  # type: ignore[attr-defined]
    history = {plan.key: plan.history for plan in member_plans(on)}
    assert history == {
        plan.key: plan.history + math.ceil(HISTORY_WITHOUT_START_DATE * 1.25) + 1
        for plan in member_plans(off)
    }
    year_on = sync_cost(on.streams["profile"], selected(on))  # type: ignore[arg-type]
    year_off = sync_cost(off.streams["profile"], selected(off))  # type: ignore[arg-type]
    full_on, daily_on = (int(n) for n in re.findall(r"about (\d+)", year_on))
    full_off, daily_off = (int(n) for n in re.findall(r"about (\d+)", year_off))
    assert full_on - full_off == math.ceil(365 * 1.25) + 1  # --test: a year of sleeps
    # a daily run re-lists 4 days of sleeps (lookback_days 3, plus a day) but asks for the
    # signals of the new day's only: the others were read before
    assert daily_on - daily_off == math.ceil(1 * 1.25) + 1
    assert cost.incremental(selected(on), 3)[0] - cost.incremental(selected(off), 3)[0] == 3

    result = run_tap(config, select=SELECT)
    assert result.error is None
    estimate = on.streams["sleep_signals"].estimated_requests(60)  # type: ignore[attr-defined]
    sent = sum(stream_requests(sandbox).values())
    assert abs(sent - estimate) <= 0.25 * estimate, (sent, estimate)


def catalog(sandbox: Sandbox, tmp_path: Path) -> dict[str, t.Any]:
    return catalog_selecting(tap_config(sandbox, tmp_path), SELECT)


def test_a_sleep_whoop_has_no_signals_for_is_one_warning_and_not_asked_again_unchanged(
    sandbox: Sandbox, config: dict[str, t.Any], caplog: pytest.LogCaptureFixture
) -> None:
    finals = final(sandbox.records("alice", "sleep"))
    silent = finals[1]
    sandbox.inject_fault(f"/v2/activity/sleep/{silent['id']}/stream", "404")
    with caplog.at_level(logging.WARNING):
        first = run_tap(config, select=SELECT)

    assert first.error is None
    assert {r["sleep_id"] for r in first.records("sleep_signals")} == {s["id"] for s in finals} - {
        silent["id"]
    }
    lines = [r.getMessage() for r in caplog.records if "no signals" in r.getMessage()]
    assert lines == [
        f"sleep_signals: member 'default': WHOOP has no signals for sleep {silent['id']} (HTTP "
        "404); they are asked for again when the sleep changes"
    ]
    sandbox.reset_stats()
    second = run_tap(config, state=first.state, select=SELECT)
    assert second.error is None
    assert silent["id"] in {r["id"] for r in second.records("sleep")}, "re-listed by the window"
    assert stream_requests(sandbox) == {}
