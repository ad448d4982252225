"""The sandbox sends WHOOP webhooks: every change to a sleep, recovery or workout is logged
and POSTed, signed, to a real receiver on loopback, with WHOOP's retries and optional faults."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from whoop_sandbox import Sandbox, SandboxServer
from whoop_sandbox import server as server_module

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
SECRET = "sandbox-secret"
FAST_RETRIES = [0.05, 0.1, 0.2]


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Receiver:
    """An app's webhook endpoint: records each POST, answers with planned statuses (then 204)."""

    def __init__(self) -> None:
        self.deliveries: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.stalls: list[float] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._cond:
                    receiver.deliveries.append(
                        {"headers": dict(self.headers), "body": body, "at": time.time()}
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 204
                    stall = receiver.stalls.pop(0) if receiver.stalls else 0.0
                    receiver._cond.notify_all()
                time.sleep(stall)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sandbox gave up waiting

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/whoop/webhooks"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.deliveries) >= count, timeout), (
                f"expected {count} deliveries, got {len(self.deliveries)}"
            )
            return list(self.deliveries)

    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return [json.loads(delivery["body"]) for delivery in self.deliveries]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def start() -> Iterator[Any]:
    """Start a served sandbox for alice that delivers to a URL, retrying fast."""
    servers: list[SandboxServer] = []

    def start_sandbox(url: str | None, **options: Any) -> Sandbox:
        sandbox = Sandbox(
            members=options.pop("members", ("alice",)),
            history_days=options.pop("history_days", 5),
            now=options.pop("now", NOW),
            per_minute=None,
            per_day=None,
            webhook_url=url,
            **options,
        )
        sandbox.configure_webhooks(retry_delays=FAST_RETRIES)
        servers.append(SandboxServer(sandbox).start())
        sandbox.server = servers[-1]  # type: ignore[attr-defined]
        return sandbox

    yield start_sandbox
    for server in servers:
        server.stop()


def served(sandbox: Sandbox) -> SandboxServer:
    return sandbox.server  # type: ignore[attr-defined, no-any-return]


def admin(sandbox: Sandbox, method: str, path: str, body: Any = None) -> requests.Response:
    url = f"{served(sandbox).admin_url}{path}"
    return requests.request(method, url, json=body, timeout=5)


def api(sandbox: Sandbox, path: str, **params: Any) -> requests.Response:
    token = sandbox.issue_access_token(sandbox.members[0].key)
    return requests.get(
        f"{served(sandbox).api_url}{path}",
        headers={"Authorization": f"Bearer {token}"},
        params=params,
        timeout=5,
    )


def main_sleep(sandbox: Sandbox) -> dict[str, Any]:
    """The newest scored main sleep: its recovery is visible too."""
    return next(
        s
        for s in sandbox.records("alice", "sleep")
        if not s["nap"] and s["score_state"] == "SCORED"
    )


def events_of(log: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(entry["type"], entry["id"]) for entry in log]


# Signing and payload


def test_delivery_is_whoops_json_signed_with_the_client_secret(
    start: Any, receiver: Receiver
) -> None:
    sandbox = start(receiver.url, client_secret="app-secret-42")
    workout = sandbox.records("alice", "workout")[0]
    before = time.time()
    sandbox.edit_record("alice", "workout", workout["id"], {"sport_name": "running"})
    delivery = receiver.wait_for(1)[0]

    body = delivery["body"]
    assert json.loads(body) == {
        "user_id": sandbox.member("alice").user_id,
        "id": workout["id"],
        "type": "workout.updated",
        "trace_id": json.loads(body)["trace_id"],
    }
    timestamp = delivery["headers"]["X-WHOOP-Signature-Timestamp"]
    assert before * 1000 - 1000 <= int(timestamp) <= time.time() * 1000
    expected = hmac.new(b"app-secret-42", timestamp.encode() + body, hashlib.sha256).digest()
    assert delivery["headers"]["X-WHOOP-Signature"] == base64.b64encode(expected).decode()
    wrong = hmac.new(SECRET.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    assert delivery["headers"]["X-WHOOP-Signature"] != base64.b64encode(wrong).decode()
    assert delivery["headers"]["Content-Type"] == "application/json"


def test_every_event_has_its_own_trace_id(start: Any, receiver: Receiver) -> None:
    sandbox = start(receiver.url)
    workout = sandbox.records("alice", "workout")[0]
    for sport in ("running", "cycling", "yoga"):
        sandbox.edit_record("alice", "workout", workout["id"], {"sport_name": sport})
    receiver.wait_for(3)
    assert len({event["trace_id"] for event in receiver.events()}) == 3


# Changes the clock makes


def test_each_advance_reports_exactly_the_records_that_appeared_or_changed(start: Any) -> None:
    """Over two days in 20-minute steps: an event per record that became visible or whose
    updated_at moved (recoveries by their sleep id), and none for cycles."""
    sandbox = start(None)

    def snapshot() -> dict[tuple[str, str], str]:
        seen = {}
        for kind in ("sleep", "workout", "recovery"):
            for record in sandbox.records("alice", kind):  # type: ignore[arg-type]
                key = record["sleep_id"] if kind == "recovery" else record["id"]
                seen[(kind, key)] = record["updated_at"]
        return seen

    before = snapshot()
    kinds_seen: set[str] = set()
    for _ in range(2 * 24 * 3):
        sandbox.clear_webhook_log()
        sandbox.advance(minutes=20)
        after = snapshot()
        changed = {key for key, updated in after.items() if before.get(key) != updated}
        logged = {(entry["type"].split(".")[0], entry["id"]) for entry in sandbox.webhook_log()}
        assert logged == changed
        assert {entry["type"] for entry in sandbox.webhook_log()} <= {
            "sleep.updated",
            "recovery.updated",
            "workout.updated",
        }
        kinds_seen |= {kind for kind, _ in logged}
        before = after
    assert kinds_seen == {"sleep", "recovery", "workout"}


def test_a_night_brings_sleep_and_recovery_then_their_scores(
    start: Any, receiver: Receiver
) -> None:
    sandbox = start(receiver.url)
    known = {s["id"] for s in sandbox.records("alice", "sleep")}
    new_sleep = None
    for _ in range(36):
        sandbox.advance(hours=1)
        fresh = [s for s in sandbox.records("alice", "sleep") if s["id"] not in known]
        if fresh:
            new_sleep = fresh[0]
            break
    assert new_sleep is not None
    assert new_sleep["score_state"] == "PENDING_SCORE"
    if sandbox.of_cycle("alice", "recovery", new_sleep["cycle_id"]) is None:
        sandbox.advance(minutes=10)  # a recovery follows its sleep within minutes
    recovery = sandbox.of_cycle("alice", "recovery", new_sleep["cycle_id"])
    assert recovery is not None
    assert recovery["sleep_id"] == new_sleep["id"]
    appeared = [(e["type"], e["id"]) for e in sandbox.webhook_log() if e["id"] == new_sleep["id"]]
    assert appeared == [("sleep.updated", new_sleep["id"]), ("recovery.updated", new_sleep["id"])]

    sandbox.clear_webhook_log()
    sandbox.advance(hours=3)
    scored = sandbox.find("alice", "sleep", new_sleep["id"])
    assert scored is not None
    assert scored["score_state"] != "PENDING_SCORE"
    scoring = [(e["type"], e["id"]) for e in sandbox.webhook_log() if e["id"] == new_sleep["id"]]
    assert scoring == appeared
    assert sandbox.wait_for_webhooks(5)
    delivered = [(e["type"], e["id"]) for e in receiver.events() if e["id"] == new_sleep["id"]]
    assert sorted(delivered) == sorted(appeared * 2)  # deliveries run in parallel


def test_admin_advance_produces_events_too(start: Any) -> None:
    sandbox = start(None)
    assert admin(sandbox, "POST", "/advance", {"days": 1}).status_code == 200
    log = admin(sandbox, "GET", "/webhooks/log").json()
    assert {entry["type"] for entry in log} == {
        "sleep.updated",
        "recovery.updated",
        "workout.updated",
    }


# Deletions and edits


def test_deleting_a_sleep_deletes_its_recovery_everywhere(start: Any, receiver: Receiver) -> None:
    sandbox = start(receiver.url)
    sleep = main_sleep(sandbox)
    cycle = sleep["cycle_id"]
    assert api(sandbox, f"/v2/cycle/{cycle}/recovery").status_code == 200
    sleeps_before = {s["id"] for s in sandbox.records("alice", "sleep")}
    cycles_before = {r["cycle_id"] for r in sandbox.records("alice", "recovery")}

    answer = admin(sandbox, "POST", f"/members/alice/sleep/{sleep['id']}/delete")
    assert answer.status_code == 200
    assert events_of(answer.json()["changes"]) == [
        ("sleep.deleted", sleep["id"]),
        ("recovery.deleted", sleep["id"]),
    ]
    receiver.wait_for(2)
    assert sorted((e["type"], e["id"]) for e in receiver.events()) == [
        ("recovery.deleted", sleep["id"]),
        ("sleep.deleted", sleep["id"]),
    ]
    assert api(sandbox, f"/v2/activity/sleep/{sleep['id']}").status_code == 404
    assert api(sandbox, f"/v2/cycle/{cycle}/sleep").status_code == 404
    assert api(sandbox, f"/v2/cycle/{cycle}/recovery").status_code == 404
    assert api(sandbox, f"/v2/cycle/{cycle}").status_code == 200
    sleeps = api(sandbox, "/v2/activity/sleep", limit=25).json()["records"]
    recoveries = api(sandbox, "/v2/recovery", limit=25).json()["records"]
    assert {s["id"] for s in sleeps} == sleeps_before - {sleep["id"]}
    assert {r["cycle_id"] for r in recoveries} == cycles_before - {cycle}
    again = admin(sandbox, "POST", f"/members/alice/sleep/{sleep['id']}/delete")
    assert again.status_code == 404


def test_a_deleted_sleep_sends_no_more_updates(start: Any) -> None:
    sandbox = start(None)
    pending: list[dict[str, Any]] = []
    for _ in range(48):
        sandbox.advance(hours=1)
        sleeps = sandbox.records("alice", "sleep")
        pending = [s for s in sleeps if s["score_state"] == "PENDING_SCORE"]
        if pending:
            break
    assert pending
    sandbox.delete_record("alice", "sleep", pending[0]["id"])
    sandbox.clear_webhook_log()
    sandbox.advance(days=1)
    assert pending[0]["id"] not in {entry["id"] for entry in sandbox.webhook_log()}


def test_deleting_a_recovery_leaves_its_sleep(start: Any) -> None:
    sandbox = start(None)
    sleep = main_sleep(sandbox)
    cycle = sleep["cycle_id"]
    answer = admin(sandbox, "POST", f"/members/alice/recovery/{cycle}/delete")
    assert answer.status_code == 200
    assert events_of(answer.json()["changes"]) == [("recovery.deleted", sleep["id"])]
    assert api(sandbox, f"/v2/cycle/{cycle}/recovery").status_code == 404
    assert api(sandbox, f"/v2/cycle/{cycle}/sleep").json()["id"] == sleep["id"]
    assert cycle not in {r["cycle_id"] for r in sandbox.records("alice", "recovery")}


def test_deleting_a_workout_sends_workout_deleted(start: Any) -> None:
    sandbox = start(None)
    workout = sandbox.records("alice", "workout")[0]
    changes = sandbox.delete_record("alice", "workout", workout["id"])
    assert events_of(changes) == [("workout.deleted", workout["id"])]
    assert sandbox.find("alice", "workout", workout["id"]) is None
    assert api(sandbox, f"/v2/activity/workout/{workout['id']}").status_code == 404


def test_an_edit_changes_fields_and_bumps_updated_at_to_now(start: Any) -> None:
    sandbox = start(None)
    workout = next(
        w
        for w in sandbox.records("alice", "workout")
        if w["sport_name"] != "running" and w["score_state"] != "PENDING_SCORE"
    )
    sandbox.advance(minutes=5)
    answer = admin(
        sandbox, "POST", f"/members/alice/workout/{workout['id']}/edit", {"sport_name": "running"}
    )
    assert answer.status_code == 200
    shown = api(sandbox, f"/v2/activity/workout/{workout['id']}").json()
    assert shown == answer.json()
    assert shown["sport_name"] == "running"
    assert shown["updated_at"] == iso(NOW + timedelta(minutes=5))
    assert {k: v for k, v in shown.items() if k not in {"sport_name", "updated_at"}} == {
        k: v for k, v in workout.items() if k not in {"sport_name", "updated_at"}
    }
    assert events_of(sandbox.webhook_log())[-1] == ("workout.updated", workout["id"])

    sleep = main_sleep(sandbox)
    sandbox.edit_record("alice", "sleep", sleep["id"], {"nap": True})
    assert sandbox.find("alice", "sleep", sleep["id"])["nap"] is True  # type: ignore[index]
    recovery = sandbox.edit_record("alice", "recovery", sleep["cycle_id"], {"note": "x"})
    assert recovery["note"] == "x"
    assert events_of(sandbox.webhook_log())[-1] == ("recovery.updated", sleep["id"])


def test_edits_and_deletions_are_refused_when_they_cannot_apply(start: Any) -> None:
    sandbox = start(None)
    workout = sandbox.records("alice", "workout")[0]
    cycle = sandbox.records("alice", "cycle")[0]["id"]
    edit = f"/members/alice/workout/{workout['id']}/edit"
    for path, body, status in (
        (edit, {"id": "other"}, 400),
        (edit, {"start": "2020-01-01T00:00:00.000Z"}, 400),
        (edit, ["not", "an", "object"], 400),
        (f"/members/alice/cycle/{cycle}/delete", None, 400),
        ("/members/alice/workout/not-a-uuid/delete", None, 400),
        ("/members/alice/recovery/abc/delete", None, 400),
        (f"/members/alice/workout/{'0' * 8}-0000-0000-0000-{'0' * 12}/delete", None, 404),
        (f"/members/carol/workout/{workout['id']}/delete", None, 404),
    ):
        assert admin(sandbox, "POST", path, body).status_code == status, path
    assert sandbox.webhook_log() == []
    with pytest.raises(KeyError):
        sandbox.delete_record("alice", "sleep", workout["id"])
    with pytest.raises(ValueError, match="cannot be edited"):
        sandbox.edit_record("alice", "workout", workout["id"], {"updated_at": "now"})


def test_the_state_file_keeps_deletions_and_edits(tmp_path: Path) -> None:
    state = tmp_path / "sandbox.json"
    first = Sandbox(members=("alice",), history_days=5, now=NOW, state_file=state)
    sleep = main_sleep(first)
    workout = first.records("alice", "workout")[0]
    first.delete_record("alice", "sleep", sleep["id"])
    edited = first.edit_record("alice", "workout", workout["id"], {"sport_name": "yoga"})

    again = Sandbox(members=("alice",), history_days=5, now=NOW, state_file=state)
    assert again.find("alice", "sleep", sleep["id"]) is None
    assert again.of_cycle("alice", "recovery", sleep["cycle_id"]) is None
    assert again.find("alice", "workout", workout["id"]) == edited
    assert sleep["id"] not in {s["id"] for s in again.records("alice", "sleep")}
    assert again.webhook_log() == []
    again.advance(days=1)
    assert sleep["id"] not in {entry["id"] for entry in again.webhook_log()}


# Delivery


def test_a_failed_delivery_is_retried_until_answered_2xx(start: Any, receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    sandbox = start(receiver.url)
    workout = sandbox.records("alice", "workout")[0]
    sandbox.edit_record("alice", "workout", workout["id"], {})
    deliveries = receiver.wait_for(3)
    assert sandbox.wait_for_webhooks(5)
    assert len({d["body"] for d in deliveries}) == 1
    [entry] = sandbox.webhook_log()
    assert (entry["attempts"], entry["delivered"], entry["dropped"]) == (3, True, False)
    assert entry["delivered_at"] >= entry["changed_at"]
    stats = admin(sandbox, "GET", "/stats").json()["webhooks"]
    assert stats == {
        "changes": 1,
        "sent": 3,
        "delivered": 1,
        "failed_attempts": 2,
        "gave_up": 0,
        "dropped": 0,
        "duplicated": 0,
        "pending": 0,
    }


def test_delivery_is_given_up_after_the_last_retry(start: Any, receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    sandbox = start(receiver.url)
    workout = sandbox.records("alice", "workout")[0]
    sandbox.edit_record("alice", "workout", workout["id"], {})
    assert sandbox.wait_for_webhooks(5)
    assert len(receiver.deliveries) == 1 + len(FAST_RETRIES)
    [entry] = sandbox.webhook_log()
    assert (entry["attempts"], entry["delivered"]) == (4, False)
    stats = sandbox.stats()["webhooks"]
    assert (stats["failed_attempts"], stats["gave_up"]) == (4, 1)


def test_an_answer_slower_than_a_second_is_retried(start: Any, receiver: Receiver) -> None:
    receiver.stalls = [1.5]
    sandbox = start(receiver.url)
    workout = sandbox.records("alice", "workout")[0]
    sandbox.edit_record("alice", "workout", workout["id"], {})
    assert sandbox.wait_for_webhooks(5)
    assert len(receiver.deliveries) == 2
    [entry] = sandbox.webhook_log()
    assert (entry["attempts"], entry["delivered"]) == (2, True)


def test_an_unreachable_url_is_retried_then_given_up(start: Any) -> None:
    closed = Receiver()
    url = closed.url
    closed.close()
    sandbox = start(url)
    sandbox.edit_record("alice", "workout", sandbox.records("alice", "workout")[0]["id"], {})
    assert sandbox.wait_for_webhooks(5)
    assert sandbox.stats()["webhooks"]["gave_up"] == 1
    assert sandbox.webhook_log()[0]["attempts"] == 4


def test_dropped_events_are_logged_but_never_sent(start: Any, receiver: Receiver) -> None:
    sandbox = start(receiver.url)
    assert admin(sandbox, "POST", "/webhooks", {"drop": 1.0}).status_code == 200
    sandbox.advance(days=1)
    assert sandbox.wait_for_webhooks(5)
    log = sandbox.webhook_log()
    assert log
    assert all(e["dropped"] and not e["delivered"] and e["attempts"] == 0 for e in log)
    assert receiver.deliveries == []
    assert sandbox.stats()["webhooks"]["dropped"] == len(log)


def test_a_duplicate_resends_the_same_body_and_trace_id(start: Any, receiver: Receiver) -> None:
    sandbox = start(receiver.url)
    sandbox.configure_webhooks(duplicate=1.0)
    sandbox.edit_record("alice", "workout", sandbox.records("alice", "workout")[0]["id"], {})
    first, second = receiver.wait_for(2)
    assert first["body"] == second["body"]
    [entry] = sandbox.webhook_log()
    assert (entry["attempts"], entry["duplicated"]) == (2, True)
    assert sandbox.stats()["webhooks"]["duplicated"] == 1


def test_drop_and_duplicate_follow_the_seed(start: Any) -> None:
    def fates(seed: int) -> list[tuple[bool, bool]]:
        sandbox = Sandbox(
            members=("alice", "bob"), history_days=1, now=NOW, webhook_url="http://127.0.0.1:9/"
        )
        sandbox.configure_webhooks(drop=0.5, duplicate=0.5, seed=seed, delay=3600)
        sandbox.advance(days=2)
        found = [(e["dropped"], e["duplicated"]) for e in sandbox.webhook_log()]
        sandbox.close()
        return found

    assert fates(7) == fates(7)
    assert fates(7) != fates(8)
    dropped = [d for d, _ in fates(7)]
    assert 0 < sum(dropped) < len(dropped)


def test_delay_holds_back_the_first_attempt_without_blocking_the_change(
    start: Any, receiver: Receiver
) -> None:
    sandbox = start(receiver.url)
    sandbox.configure_webhooks(delay=0.4)
    workout = sandbox.records("alice", "workout")[0]
    path = f"/members/alice/workout/{workout['id']}/edit"
    began = time.monotonic()
    assert admin(sandbox, "POST", path, {}).status_code == 200
    assert time.monotonic() - began < 0.3
    assert not sandbox.webhook_log()[0]["delivered"]
    delivery = receiver.wait_for(1)[0]
    assert delivery["at"] - sandbox.webhook_log()[0]["changed_at"] >= 0.35


def test_without_a_url_changes_are_only_logged(start: Any) -> None:
    sandbox = start(None)
    sandbox.advance(days=1)
    log = sandbox.webhook_log()
    assert log
    assert all(e["attempts"] == 0 and not e["delivered"] and not e["dropped"] for e in log)
    assert set(log[0]) == {
        "user_id",
        "id",
        "type",
        "trace_id",
        "changed_at",
        "attempts",
        "delivered",
        "dropped",
        "duplicated",
        "delivered_at",
    }
    assert abs(log[0]["changed_at"] - time.time()) < 60
    assert sandbox.stats()["webhooks"]["sent"] == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("whoop-sandbox-webhooks")]
    assert admin(sandbox, "DELETE", "/webhooks/log").status_code == 204
    assert sandbox.webhook_log() == []


def test_admin_webhooks_sets_and_validates_the_settings(start: Any, receiver: Receiver) -> None:
    sandbox = start(None)
    settings = {
        "url": receiver.url,
        "duplicate": 0.25,
        "drop": 0.1,
        "delay": 0.5,
        "seed": 3,
        "retry_delays": [0.05, 0.1],
    }
    assert admin(sandbox, "POST", "/webhooks", settings).json() == settings
    assert admin(sandbox, "GET", "/webhooks").json() == settings
    assert admin(sandbox, "POST", "/webhooks", {"url": None}).json()["url"] is None
    for bad in (
        {"drop": 1.5},
        {"duplicate": "often"},
        {"delay": -1},
        {"seed": 1.5},
        {"retry_delays": [1, -2]},
        {"url": "ftp://example.com/hook"},
        {"url": "not a url"},
        {"colour": "blue"},
    ):
        assert admin(sandbox, "POST", "/webhooks", bad).status_code == 400, bad
    with pytest.raises(ValueError):
        Sandbox(members=("alice",), history_days=1, webhook_url="nowhere")


def test_stopping_the_server_stops_delivery_threads(receiver: Receiver) -> None:
    sandbox = Sandbox(members=("alice",), history_days=2, now=NOW, webhook_url=receiver.url)
    with SandboxServer(sandbox):
        sandbox.edit_record("alice", "workout", sandbox.records("alice", "workout")[0]["id"], {})
        receiver.wait_for(1)
        assert [t for t in threading.enumerate() if t.name.startswith("whoop-sandbox-webhooks")]
    assert not [t for t in threading.enumerate() if t.name.startswith("whoop-sandbox-webhooks")]


def test_a_simulated_day_for_two_hundred_members_in_small_steps_is_fast() -> None:
    sandbox = Sandbox(members=[f"m{n}" for n in range(200)], history_days=1, now=NOW)
    began = time.monotonic()
    for _ in range(24 * 12):
        sandbox.advance(minutes=5)
    assert time.monotonic() - began < 3.0
    assert len(sandbox.webhook_log()) > 200 * 2


# The CLI


def test_cli_options_configure_webhooks(receiver: Receiver) -> None:
    args = server_module._parser().parse_args(
        [
            "--webhook-url",
            receiver.url,
            "--webhook-drop",
            "0.2",
            "--webhook-duplicate",
            "0.3",
            "--webhook-delay",
            "1.5",
            "--history-days",
            "1",
        ]
    )
    assert (args.webhook_url, args.webhook_drop, args.webhook_duplicate, args.webhook_delay) == (
        receiver.url,
        0.2,
        0.3,
        1.5,
    )
    sandbox = Sandbox(members=("alice",), history_days=1, now=NOW, webhook_url=args.webhook_url)
    sandbox.configure_webhooks(drop=0.2, duplicate=0.3, delay=1.5)
    with SandboxServer(sandbox) as server:
        lines = server_module.banner(server, args)
    assert lines[0].startswith(f"WHOOP sandbox: api_url={server.api_url} oauth_url=")
    assert f"webhooks: url={receiver.url} drop=0.2 duplicate=0.3 delay=1.5" in lines[-1]


@pytest.mark.parametrize(
    "args",
    [
        ["--webhook-url", "localhost:9000"],
        ["--webhook-drop", "2"],
        ["--webhook-duplicate", "x"],
        ["--webhook-delay", "-1"],
    ],
)
def test_cli_rejects_bad_webhook_options(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        server_module.main(args)
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("tap-whoop-sandbox: error: argument --webhook-")


def test_cli_help_explains_webhooks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        server_module.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for phrase in (
        "--webhook-url URL",
        "--webhook-drop P",
        "--webhook-duplicate P",
        "--webhook-delay SECONDS",
        "X-WHOOP-Signature-Timestamp",
        "HMAC-SHA256",
        "/_sandbox/webhooks/log",
        "1, 5, 30, 300, 1800",
    ):
        assert phrase in help_text, phrase
