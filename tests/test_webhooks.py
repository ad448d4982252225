"""`tap-whoop webhooks`: WHOOP's deliveries over real HTTP, into a real inbox, or refused.

The receiver is the real waitress server on loopback, started in a thread from a `Run` (or, to
kill it and to read its logs, as the real `tap-whoop webhooks` command in a subprocess), with a
real token store whose members have WHOOP user ids. Deliveries are signed as WHOOP signs them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import typing as t
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tap_whoop.errors import TokenStoreError
from tap_whoop.run import Run
from tap_whoop.stores.file import TokenStore
from tap_whoop.stores.inbox import EVENT_TYPES
from tap_whoop.stores.sql_inbox import SqliteInbox
from tap_whoop.webhooks.receiver import (
    HEALTH_PATH,
    MAX_BODY_BYTES,
    MEMBERS_REREAD_SECONDS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_PATH,
    Receiver,
    WebhookError,
    WebhookServer,
    sign,
)
from tests.auth_support import TAP_WHOOP, cli_env, error_line, run_cli, write_json
from tests.conftest import CLIENT_ID, CLIENT_SECRET

if t.TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[1]
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"
MELTANO_TAP_VENV = ROOT / ".meltano" / "extractors" / "tap-whoop" / "venv"
MELTANO_HINT = (
    "run the tests with `bash scripts/test.sh`: it installs Meltano and the plugins "
    "(scripts/bootstrap.sh)"
)
ALICE = 10129
BOB = 20002
CAROL = 30003
MEMBERS = {"alice": ALICE, "bob": BOB}
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:(\d+))/webhooks/whoop")


def write_store(path: Path, members: dict[str, int]) -> None:
    """A token store whose members were authorized (so their WHOOP user ids are known)."""
    TokenStore(path).write(
        {
            "version": 1,
            "members": {
                key: {"refresh_token": f"refresh-{key}", "user_id": user_id}
                for key, user_id in members.items()
            },
        }
    )


def webhook_config(tmp_path: Path) -> dict[str, t.Any]:
    return {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "token_store_path": str(tmp_path / "store" / "tokens.json"),
    }


def an_event(
    user_id: int = ALICE,
    kind: str = "sleep.updated",
    record_id: str | None = None,
    trace_id: str | None = None,
) -> dict[str, t.Any]:
    return {
        "user_id": user_id,
        "id": record_id or str(uuid.uuid4()),
        "type": kind,
        "trace_id": trace_id or f"trace-{uuid.uuid4().hex}",
    }


def signed(
    payload: t.Any, *, secret: str = CLIENT_SECRET, at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    """A delivery as WHOOP sends it: the body, and its timestamp and signature headers."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    timestamp = str(int((time.time() if at is None else at) * 1000))
    return body, {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "Content-Type": "application/json",
    }


@dataclass
class Live:
    """A receiver serving on loopback in this process."""

    run: Run
    server: WebhookServer
    caplog: pytest.LogCaptureFixture
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def url(self) -> str:
        return self.base + WEBHOOK_PATH

    def deliver(self, payload: t.Any, **signing: t.Any) -> requests.Response:
        body, headers = signed(payload, **signing)
        return self.post(body, headers)

    def post(self, body: t.Any, headers: dict[str, str] | None = None) -> requests.Response:
        return self.session.post(self.url, data=body, headers=headers or {}, timeout=10)

    def health(self) -> requests.Response:
        return self.session.get(self.base + HEALTH_PATH, timeout=10)

    def pending(self) -> list[tuple[int, str, str, str]]:
        """The inbox's log, oldest first."""
        return [
            (event.user_id, event.type, event.record_id, event.trace_id)
            for event in self.run.inbox.after(0)
        ]

    def raw(self, data: bytes, *, wait: float = 5) -> bytes:
        """Send bytes on a fresh connection; what came back before the server closed it."""
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=wait) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)  # and goes away, mid-request or not
            return read_until_closed(sock)

    def warnings(self) -> list[str]:
        """The receiver's own warnings (waitress may add "Task queue depth" under load)."""
        return [
            r.getMessage()
            for r in self.caplog.records
            if r.levelno >= logging.WARNING and r.name == "tap-whoop"
        ]


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def as_stored(payload: dict[str, t.Any]) -> tuple[int, str, str, str]:
    return (payload["user_id"], payload["type"], payload["id"], payload["trace_id"])


@pytest.fixture
def receiver(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Live]:
    """Members alice and bob; the receiver in a thread on a free loopback port."""
    logger = logging.getLogger("tap-whoop")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    caplog.set_level(logging.INFO, logger="tap-whoop")
    config = webhook_config(tmp_path)
    write_store(tmp_path / "store" / "tokens.json", MEMBERS)
    run = Run(config)
    server = WebhookServer(Receiver(run), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve, name="webhooks", daemon=True)
    thread.start()
    live = Live(run, server, caplog)
    yield live
    live.session.close()
    server.stop()
    thread.join(15)
    assert not thread.is_alive(), "the receiver did not stop"
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]


# 1. What WHOOP sends is stored, once


def test_a_signed_event_of_each_type_from_a_member_is_stored_and_answered_200(
    receiver: Live,
) -> None:
    events = [an_event(ALICE if n % 2 else BOB, kind) for n, kind in enumerate(sorted(EVENT_TYPES))]
    before = time.time()
    for payload in events:
        response = receiver.deliver(payload)
        assert response.status_code == 200, response.text
        assert response.json() == {"stored": True}
    assert receiver.pending() == [as_stored(payload) for payload in events]
    stored = receiver.run.inbox.after(0)
    assert all(before - 1 <= event.received_at <= time.time() + 1 for event in stored)
    first = events[0]
    assert (
        f"webhooks: stored {first['type']} for user {first['user_id']}: record {first['id']} "
        f"(trace {first['trace_id']})"
    ) in receiver.caplog.messages


def test_a_replayed_delivery_with_the_same_trace_id_is_stored_once(receiver: Live) -> None:
    body, headers = signed(an_event())
    first = receiver.post(body, headers)
    again = receiver.post(body, headers)
    assert (first.status_code, first.json()) == (200, {"stored": True})
    assert (again.status_code, again.json()) == (200, {"duplicate": True})
    assert receiver.pending() == [as_stored(json.loads(body))]
    assert any("already in the inbox" in message for message in receiver.caplog.messages)


def test_every_notice_of_a_record_is_kept_in_order_so_none_is_taken_for_a_duplicate(
    receiver: Live,
) -> None:
    """A second notice can announce a newer version than a run is draining: only a trace id
    seen before is a duplicate."""
    record = str(uuid.uuid4())
    updated = an_event(record_id=record)
    retold = an_event(record_id=record)
    deleted = an_event(kind="sleep.deleted", record_id=record)
    assert receiver.deliver(updated).json() == {"stored": True}
    assert receiver.deliver(retold).json() == {"stored": True}
    assert receiver.deliver(deleted).json() == {"stored": True}
    assert receiver.pending() == [as_stored(updated), as_stored(retold), as_stored(deleted)]


def test_an_event_whose_id_is_not_a_uuid_is_refused_400_at_receipt(receiver: Live) -> None:
    for kind in ("sleep.updated", "workout.deleted", "recovery.updated"):
        response = receiver.deliver(an_event(kind=kind, record_id="12345"))
        assert (response.status_code, response.json()) == (400, {"error": "bad event"})
    assert receiver.pending() == []
    assert any("is not a UUID" in warning for warning in receiver.warnings())


# 2. What WHOOP did not send, or sent too long ago, is refused (401)


def test_a_wrong_signature_is_refused_401_and_never_logged(receiver: Live) -> None:
    payload = an_event()
    body, headers = signed(payload)
    _, other_headers = signed(an_event())
    forged = {
        "another secret": signed(payload, secret="not-the-client-secret")[1],
        "another body's signature": {**headers, SIGNATURE_HEADER: other_headers[SIGNATURE_HEADER]},
        "not base64": {**headers, SIGNATURE_HEADER: "%%%not-base64%%%"},
        "empty": {**headers, SIGNATURE_HEADER: ""},
        "the body's alone": {**headers, SIGNATURE_HEADER: sign(CLIENT_SECRET, "", body)},
    }
    for name, forged_headers in forged.items():
        response = receiver.post(body, forged_headers)
        assert response.status_code == 401, name
        assert response.json() == {"error": "bad signature"}, name
    tampered = body.replace(str(ALICE).encode(), str(BOB).encode())
    assert receiver.post(tampered, headers).status_code == 401
    assert receiver.pending() == []
    refusals = [m for m in receiver.warnings() if "(401)" in m]
    assert len(refusals) == len(forged) + 1
    assert all("does not match the body" in m for m in refusals)
    logged = receiver.caplog.text
    assert CLIENT_SECRET not in logged
    given = [h[SIGNATURE_HEADER] for h in (headers, *forged.values()) if h[SIGNATURE_HEADER]]
    assert not [signature for signature in given if signature in logged]


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ((TIMESTAMP_HEADER,), TIMESTAMP_HEADER),
        ((SIGNATURE_HEADER,), SIGNATURE_HEADER),
        ((TIMESTAMP_HEADER, SIGNATURE_HEADER), TIMESTAMP_HEADER),
    ],
)
def test_a_delivery_without_its_signature_headers_is_refused_401(
    receiver: Live, missing: tuple[str, ...], named: str
) -> None:
    body, headers = signed(an_event())
    for header in missing:
        del headers[header]
    response = receiver.post(body, headers)
    assert response.status_code == 401
    assert receiver.pending() == []
    assert receiver.warnings() == [
        f"webhooks: refused a delivery from 127.0.0.1 (401): no {named} header"
    ]


@pytest.mark.parametrize("timestamp", ["", "soon", "1.7e12", "-1700000000000", "0x1f", "1" * 16])
def test_a_timestamp_that_is_not_epoch_milliseconds_is_refused_401(
    receiver: Live, timestamp: str
) -> None:
    body = json.dumps(an_event()).encode()
    headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(CLIENT_SECRET, timestamp, body)}
    response = receiver.post(body, headers)
    assert (response.status_code, response.json()) == (401, {"error": "bad timestamp"})
    assert receiver.pending() == []


@pytest.mark.parametrize(
    ("offset", "error"),
    [
        (-301, "stale timestamp"),
        (-86_400, "stale timestamp"),
        (301, "future timestamp"),
        (10 * 365 * 86_400, "future timestamp"),
    ],
)
def test_stale_and_future_timestamps_are_refused_401_though_correctly_signed(
    receiver: Live, offset: int, error: str
) -> None:
    response = receiver.deliver(an_event(), at=time.time() + offset)
    assert (response.status_code, response.json()) == (401, {"error": error})
    assert receiver.pending() == []
    assert len(receiver.warnings()) == 1


def test_timestamps_within_five_minutes_either_way_are_accepted(receiver: Live) -> None:
    early, late = an_event(), an_event()
    assert receiver.deliver(early, at=time.time() - 290).status_code == 200
    assert receiver.deliver(late, at=time.time() + 290).status_code == 200
    seconds = an_event()  # epoch seconds where milliseconds are due: 1970, long stale
    body = json.dumps(seconds).encode()
    stamp = str(int(time.time()))
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(CLIENT_SECRET, stamp, body)}
    assert receiver.post(body, headers).status_code == 401
    assert receiver.pending() == [as_stored(early), as_stored(late)]


# 3. What is too big, not JSON, or not an event is refused (413, 400, 422)


def padded(payload: dict[str, t.Any], size: int) -> bytes:
    """The payload as JSON of exactly `size` bytes (an extra field WHOOP may add one day)."""
    bare = json.dumps({**payload, "padding": ""}).encode()
    return json.dumps({**payload, "padding": "x" * (size - len(bare))}).encode()


def test_an_oversized_body_is_refused_413_and_nothing_is_stored(receiver: Live) -> None:
    largest = an_event()
    assert receiver.deliver(padded(largest, MAX_BODY_BYTES)).status_code == 200

    response = receiver.deliver(padded(an_event(), MAX_BODY_BYTES + 1))
    assert (response.status_code, response.json()) == (413, {"error": "too large"})

    body, headers = signed(padded(an_event(), 3 * MAX_BODY_BYTES))
    chunked = receiver.post(iter([body[:1000], body[1000:]]), headers)  # no Content-Length
    assert chunked.status_code == 413

    declared = receiver.raw(
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 30}\r\n\r\n".encode()
    )
    assert declared.startswith(b"HTTP/1.1 413"), declared[:100]

    assert receiver.pending() == [as_stored(largest)]
    refusals = [m for m in receiver.warnings() if "(413)" in m]
    assert (
        f"a body of {MAX_BODY_BYTES + 1} bytes (at most {MAX_BODY_BYTES} are read)" in (refusals[0])
    )
    assert receiver.health().status_code == 200


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"\xff\xfe\x00\x01", b'{"user_id": 10129', b"[" * 12_000, b"1" * 15_000],
    ids=["empty", "text", "binary", "truncated", "deeply nested", "a huge number"],
)
def test_a_signed_body_that_is_not_json_is_refused_400(receiver: Live, body: bytes) -> None:
    response = receiver.deliver(body)
    assert (response.status_code, response.json()) == (400, {"error": "not JSON"})
    assert receiver.pending() == []
    [line] = receiver.warnings()
    assert f"(400): the body ({len(body)} bytes) is not JSON" in line


@pytest.mark.parametrize("payload", [[], [an_event()], "sleep.updated", 10129, None, True])
def test_signed_json_that_is_not_an_object_is_refused_400(receiver: Live, payload: t.Any) -> None:
    response = receiver.deliver(json.dumps(payload).encode())
    assert (response.status_code, response.json()) == (400, {"error": "not a JSON object"})
    assert receiver.pending() == []


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("user_id", True),
        ("user_id", 0),
        ("user_id", -ALICE),
        ("user_id", str(ALICE)),
        ("user_id", float(ALICE)),
        ("user_id", 2**64),
        ("user_id", None),
        ("id", ""),
        ("id", 42),
        ("id", "x" * 101),
        ("id", "line\nbreak"),
        ("id", "\ud800"),
        ("type", None),
        ("type", ""),
        ("type", ["sleep.updated"]),
        ("trace_id", ""),
        ("trace_id", "t" * 201),
        ("trace_id", None),
    ],
)
def test_an_event_of_the_wrong_shape_is_refused_400(
    receiver: Live, field_name: str, value: t.Any
) -> None:
    payload = an_event()
    if value is None:
        del payload[field_name]
    else:
        payload[field_name] = value
    response = receiver.deliver(payload)
    assert (response.status_code, response.json()) == (400, {"error": "bad event"})
    assert receiver.pending() == []
    [line] = receiver.warnings()
    assert f"(400): {field_name} is" in line or f"(400): {field_name} holds" in line


def test_the_longest_trace_ids_whoop_may_send_are_accepted(receiver: Live) -> None:
    payload = an_event(trace_id="t" * 200)
    assert receiver.deliver(payload).status_code == 200
    assert receiver.pending() == [as_stored(payload)]


@pytest.mark.parametrize("kind", ["cycle.updated", "sleep.created", "SLEEP.UPDATED", "sleep"])
def test_an_event_type_the_tap_does_not_read_is_refused_422(receiver: Live, kind: str) -> None:
    response = receiver.deliver(an_event(kind=kind))
    assert (response.status_code, response.json()) == (422, {"error": "unknown event type"})
    assert receiver.pending() == []
    [line] = receiver.warnings()
    assert f"(422): event type {kind!r} for user {ALICE} is not one the tap reads" in line


def test_an_event_for_a_user_who_is_no_member_is_refused_422(receiver: Live) -> None:
    response = receiver.deliver(an_event(CAROL))
    assert (response.status_code, response.json()) == (422, {"error": "unknown member"})
    assert receiver.pending() == []
    [line] = receiver.warnings()
    assert f"(422): sleep.updated for user {CAROL}: no member in the token store" in line


def test_a_member_authorized_after_the_receiver_started_is_accepted_within_a_second(
    receiver: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = receiver.run.token_store
    reads = 0
    read = store.read

    def counted() -> dict[str, t.Any]:
        nonlocal reads
        reads += 1
        return read()

    monkeypatch.setattr(store, "read", counted)
    time.sleep(MEMBERS_REREAD_SECONDS)
    started = time.monotonic()
    while time.monotonic() - started < 0.8:  # a stranger's flood re-reads the store once
        assert receiver.deliver(an_event(CAROL)).status_code == 422
    assert reads == 1

    write_store(store.path, {**MEMBERS, "carol": CAROL})  # `tap-whoop auth` for carol
    authorized = time.monotonic()
    accepted = an_event(CAROL)
    while (response := receiver.deliver(accepted)).status_code == 422:
        assert time.monotonic() - authorized < 2 * MEMBERS_REREAD_SECONDS
        time.sleep(0.05)
    assert response.status_code == 200
    assert receiver.pending() == [as_stored(accepted)]


# 4. When the inbox fails, WHOOP is told to retry (503)


def inbox_files(live: Live) -> list[Path]:
    path = t.cast(SqliteInbox, live.run.inbox).path
    return [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm")]


def test_an_inbox_that_cannot_be_written_answers_503_and_stores_again_once_it_can(
    receiver: Live,
) -> None:
    before = an_event()
    assert receiver.deliver(before).status_code == 200
    refused = an_event()
    # The inbox's journal may not grow: what a full disk does to the next write.
    largest = inbox_files(receiver)[1].stat().st_size
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (largest, limits[1]))
    try:
        response = receiver.deliver(refused)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert (response.status_code, response.json()) == (503, {"error": "inbox unavailable"})
    [line] = receiver.warnings()
    assert f"(503): sleep.updated for user {ALICE} (trace {refused['trace_id']}) not stored" in line
    assert "cannot write the webhook inbox" in line

    retried = receiver.deliver(refused)  # WHOOP's retry
    assert (retried.status_code, retried.json()) == (200, {"stored": True})
    assert receiver.pending() == [as_stored(before), as_stored(refused)]


def test_the_health_check_is_200_while_the_inbox_can_be_read_and_503_while_not(
    receiver: Live, tmp_path: Path
) -> None:
    assert (receiver.health().status_code, receiver.health().json()) == (200, {"status": "ok"})
    assert receiver.session.head(receiver.base + HEALTH_PATH, timeout=10).status_code == 200

    inbox = t.cast(SqliteInbox, receiver.run.receiver_inbox)
    inbox.close()  # the file goes away while no connection holds it open
    aside = tmp_path / "aside"
    aside.mkdir()
    for path in inbox_files(receiver):
        if path.exists():
            path.rename(aside / path.name)
    inbox.path.mkdir()
    try:
        down = receiver.health()
        assert (down.status_code, down.json()) == (503, {"status": "unavailable"})
        assert receiver.deliver(an_event()).status_code == 503
    finally:
        inbox.path.rmdir()
        for path in aside.iterdir():
            path.rename(inbox.path.parent / path.name)
    assert receiver.health().status_code == 200
    assert receiver.deliver(an_event()).status_code == 200
    assert any("health check failed (503): cannot open" in m for m in receiver.warnings())


# 5. Nothing anyone sends stops it


def test_other_paths_are_404_and_other_methods_405(receiver: Live) -> None:
    session = receiver.session
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        response = session.request(method, receiver.url, timeout=10)
        assert (response.status_code, response.headers["Allow"]) == (405, "POST"), method
    response = session.post(receiver.base + HEALTH_PATH, timeout=10)
    assert (response.status_code, response.headers["Allow"]) == (405, "GET, HEAD")
    for path in ("/", "/webhooks", WEBHOOK_PATH + "/", "/webhooks/whoop/x", "/%2e%2e/etc/passwd"):
        assert session.post(receiver.base + path, timeout=10).status_code == 404, path
    assert receiver.pending() == []


def test_hostile_input_never_crashes_the_receiver(receiver: Live) -> None:
    head = f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\n".encode()
    attacks = [
        os.urandom(4096),
        b"\x00" * 10_000,
        b"GARBAGE\r\n\r\n",
        b"GET /\xff\xfe\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        head + b"X-Huge: " + b"a" * 200_000 + b"\r\n\r\n",
        head + b"".join(b"X-%d: y\r\n" % n for n in range(5000)) + b"\r\n",
        head + b"Content-Length: nope\r\n\r\n{}",
        head + b"Content-Length: -5\r\n\r\n{}",
        head + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        head + b"Transfer-Encoding: chunked\r\n\r\n" + b"ffffffffffffffff\r\n",
        head
        + f"{TIMESTAMP_HEADER}: \xe9\r\n{SIGNATURE_HEADER}: \xff\r\n".encode("latin-1")
        + b"Content-Length: 2\r\n\r\n{}",
        head + b"Content-Length: 100\r\n\r\n{",  # the client goes away mid-body
    ]
    for attack in attacks:
        receiver.raw(attack, wait=3)
    nasty = [
        padded(an_event(), 2000).replace(b'"padding"', b'"user_id"', 1),
        b'{"user_id": 10129, "id": "\\ud800", "type": "sleep.updated", "trace_id": "t"}',
        json.dumps({**an_event(), "type": "x" * 10_000}).encode(),
        b"\x00" * 100,
    ]
    for body in nasty:
        assert receiver.deliver(body).status_code in (400, 413)

    # Slowloris: connections that dribble a body and hold on, while WHOOP is served at once.
    slow = []
    for _ in range(10):
        sock = socket.create_connection(("127.0.0.1", receiver.server.port), timeout=5)
        sock.sendall(head + b"Content-Length: 1000\r\n\r\n{")
        slow.append(sock)
    try:
        for sock in slow:
            sock.sendall(b" ")
        started = time.monotonic()
        survivor = an_event()
        assert receiver.deliver(survivor).status_code == 200
        assert time.monotonic() - started < 1
        assert (receiver.health().status_code, receiver.health().json()) == (200, {"status": "ok"})
    finally:
        for sock in slow:
            sock.close()
    assert receiver.pending() == [as_stored(survivor)]
    assert receiver.health().status_code == 200


# 6. Load and kills: every acknowledged event is in the inbox


def test_a_burst_of_1000_events_from_8_clients_is_all_stored_each_answered_within_a_second(
    receiver: Live,
) -> None:
    per_client = 125
    payloads = [
        [an_event(ALICE if n % 2 else BOB, "workout.updated") for n in range(per_client)]
        for _ in range(8)
    ]

    def client(events: list[dict[str, t.Any]]) -> list[tuple[int, float]]:
        answers = []
        with requests.Session() as session:
            for payload in events:
                body, headers = signed(payload)
                started = time.monotonic()
                response = session.post(receiver.url, data=body, headers=headers, timeout=10)
                answers.append((response.status_code, time.monotonic() - started))
        return answers

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = [answer for batch in pool.map(client, payloads) for answer in batch]

    assert [status for status, _ in answers] == [200] * 1000
    slowest = max(seconds for _, seconds in answers)
    assert slowest < 1.0, f"slowest answer took {slowest:.2f}s"
    stored = {event[3] for event in receiver.pending()}
    assert stored == {payload["trace_id"] for batch in payloads for payload in batch}


class Process:
    """`tap-whoop webhooks` in a subprocess, its stderr collected as it comes."""

    def __init__(
        self,
        *args: str,
        command: t.Sequence[str] = TAP_WHOOP,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.process = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env or cli_env(),
            cwd=cwd,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 60
        while not (found := [m for line in self.lines if (m := LISTENING.search(line))]):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self._reader.join(5)
                raise AssertionError(f"the receiver did not start: {self.lines}")
            time.sleep(0.05)
        self.url = found[0].group(1) + WEBHOOK_PATH

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def end(self, signum: int) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(30)
        self._reader.join(10)
        return code


def test_a_receiver_killed_mid_stream_keeps_every_acknowledged_event_and_logs_no_secret(
    tmp_path: Path,
) -> None:
    config = webhook_config(tmp_path)
    write_store(tmp_path / "store" / "tokens.json", MEMBERS)
    path = str(write_json(tmp_path / "config.json", config))
    first = Process("--config", path, "webhooks", "--port", "0")  # Meltano's order
    acknowledged: list[str] = []
    signatures: list[str] = []
    sent = threading.Semaphore(0)

    def client(user_id: int) -> None:
        with requests.Session() as session:
            while True:
                payload = an_event(user_id)
                body, headers = signed(payload)
                signatures.append(headers[SIGNATURE_HEADER])
                try:
                    response = session.post(first.url, data=body, headers=headers, timeout=5)
                except requests.RequestException:
                    return
                if response.status_code == 200:
                    acknowledged.append(payload["trace_id"])
                    sent.release()

    clients = [threading.Thread(target=client, args=(user,)) for user in (ALICE, BOB) * 2]
    for thread in clients:
        thread.start()
    for _ in range(300):
        assert sent.acquire(timeout=30)
    assert first.end(signal.SIGKILL) == -signal.SIGKILL
    for thread in clients:
        thread.join(30)

    second = Process("webhooks", "--config", path, "--port", "0")
    after = an_event()
    body, headers = signed(after)
    signatures.append(headers[SIGNATURE_HEADER])
    assert requests.post(second.url, data=body, headers=headers, timeout=10).status_code == 200
    assert (
        second.end(signal.SIGTERM) == 128 + signal.SIGTERM
    )  # a stop, not a success, for a scheduler
    assert second.lines[-1] == "tap-whoop: info: webhooks: stopped (SIGTERM)"

    inbox = SqliteInbox(tmp_path / "store" / "inbox.sqlite")
    stored = [event.trace_id for event in inbox.after(0)]
    assert len(stored) == len(set(stored))
    lost = set(acknowledged) - set(stored)
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged events lost"
    assert after["trace_id"] in stored

    logs = "\n".join(first.lines + second.lines)
    assert "Traceback" not in logs
    assert CLIENT_SECRET not in logs
    assert not [signature for signature in signatures if signature in logs]
    assert all(line.startswith("tap-whoop: info: ") for line in first.lines + second.lines), logs
    for trace in acknowledged[:50]:
        assert f"(trace {trace})" in logs


def test_ctrl_c_stops_the_receiver_cleanly_and_its_exit_says_it_was_stopped(
    tmp_path: Path,
) -> None:
    write_store(tmp_path / "store" / "tokens.json", MEMBERS)
    path = str(write_json(tmp_path / "config.json", webhook_config(tmp_path)))
    receiver = Process("webhooks", "--config", path, "--port", "0")
    body, headers = signed(an_event())
    assert requests.post(receiver.url, data=body, headers=headers, timeout=10).status_code == 200
    assert receiver.end(signal.SIGINT) == 128 + signal.SIGINT
    assert receiver.lines[-1] == "tap-whoop: info: webhooks: stopped (SIGINT)"


def test_an_inbox_another_process_is_creating_is_opened_once_sqlite_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes opening a new inbox file together: SQLite tells one "database is locked"
    at once (switching the file to WAL) instead of waiting; the opening is retried."""
    inbox = SqliteInbox(tmp_path / "inbox.sqlite")
    open_for_real = SqliteInbox._open
    refusals = iter([sqlite3.OperationalError("database is locked")] * 3)

    def busy_at_first(self: SqliteInbox) -> sqlite3.Connection:
        if (refusal := next(refusals, None)) is not None:
            raise refusal
        return open_for_real(self)

    monkeypatch.setattr(SqliteInbox, "_open", busy_at_first)
    assert inbox.after(0) == []
    assert next(refusals, None) is None


# 7. The command


def test_webhooks_help_names_its_options_and_the_path() -> None:
    result = run_cli("webhooks", "--help")
    assert result.returncode == 0, result.stderr
    for words in ("--config FILE", "--host HOST", "--port PORT", "/webhooks/whoop", "0 picks"):
        assert words in result.stdout


def test_a_port_in_use_or_a_host_that_does_not_resolve_ends_the_command_in_one_line(
    tmp_path: Path,
) -> None:
    write_store(tmp_path / "store" / "tokens.json", MEMBERS)
    path = str(write_json(tmp_path / "config.json", webhook_config(tmp_path)))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        runs = {
            f"cannot listen on 127.0.0.1:{port}: Address already in use: stop what listens "
            "there, or choose another --port (or webhook_port)": [
                "--config", path, "webhooks", "--port", port
            ],
            "cannot listen on no-such-host.invalid:8787: the host does not resolve": [
                "webhooks", "--config", path, "--host", "no-such-host.invalid"
            ],
        }  # fmt: skip
        with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
            results = dict(zip(runs, pool.map(lambda a: run_cli(*a), runs.values()), strict=True))
    for expected, result in results.items():
        line = error_line(result)
        assert expected in line, (expected, line)
        assert result.returncode == 1
        assert CLIENT_SECRET not in result.stderr


def test_a_receiver_that_could_not_listen_or_store_anything_does_not_start(
    tmp_path: Path,
) -> None:
    config = webhook_config(tmp_path)
    write_store(tmp_path / "store" / "tokens.json", MEMBERS)
    receiver = Receiver(Run(config))
    with pytest.raises(WebhookError) as not_here:
        WebhookServer(receiver, "192.0.2.1", 0)
    assert str(not_here.value) == (
        "cannot listen on 192.0.2.1:0: Cannot assign requested address: 192.0.2.1 is not an "
        "address of this machine; give --host (or webhook_host) one of its addresses, e.g. "
        "127.0.0.1, or 0.0.0.0 for all"
    )

    broken = tmp_path / "broken" / "tokens.json"
    broken.parent.mkdir(mode=0o700)
    broken.write_text("{not json")
    with pytest.raises(TokenStoreError, match=f"token store {broken} is not valid JSON"):
        Receiver(Run({**config, "token_store_path": str(broken)}))

    no_inbox = tmp_path / "no-inbox" / "tokens.json"
    write_store(no_inbox, MEMBERS)
    (no_inbox.parent / "inbox.sqlite").mkdir()
    with pytest.raises(TokenStoreError, match="cannot open the webhook inbox"):
        Receiver(Run({**config, "token_store_path": str(no_inbox)}))


@pytest.mark.e2e
def test_meltano_invoke_tap_whoop_webhooks_receives_until_sigterm(tmp_path: Path) -> None:
    """`meltano invoke tap-whoop webhooks` runs `tap-whoop --config F webhooks`."""
    missing = [str(path) for path in (MELTANO, MELTANO_TAP_VENV) if not path.exists()]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)}; {MELTANO_HINT}", pytrace=False)
    python = MELTANO_TAP_VENV / "bin" / "python"
    if subprocess.run([str(python), "-c", "import waitress, werkzeug"], check=False).returncode:
        pytest.fail(f"{MELTANO_TAP_VENV} lacks waitress or werkzeug; {MELTANO_HINT}", pytrace=False)
    root = tmp_path / "project"
    (root / ".meltano" / "extractors" / "tap-whoop").mkdir(parents=True)
    (root / ".meltano" / "extractors" / "tap-whoop" / "venv").symlink_to(MELTANO_TAP_VENV)
    (root / "meltano.yml").write_text((ROOT / "meltano.yml").read_text())
    store = root / ".meltano" / "tap-whoop-sandbox" / "tokens.json"  # the sandbox environment's
    write_store(store, MEMBERS)
    env = cli_env(
        MELTANO_PROJECT_ROOT=str(root),
        MELTANO_AUTO_INSTALL="false",
        MELTANO_CLI_DISABLE_VERSION_CHECK="1",
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    meltano = [str(MELTANO), "--environment=sandbox", "invoke", "tap-whoop", "webhooks"]
    receiver = Process("--port", "0", command=meltano, env=env, cwd=root)
    payload = an_event()
    body, headers = signed(payload)
    response = requests.post(receiver.url, data=body, headers=headers, timeout=10)
    assert (response.status_code, response.json()) == (200, {"stored": True})
    assert receiver.end(signal.SIGTERM) == 128 + signal.SIGTERM
    assert any("webhooks: stopped (SIGTERM)" in line for line in receiver.lines)
    inbox = SqliteInbox(store.with_name("inbox.sqlite"))
    assert [event.trace_id for event in inbox.after(0)] == [payload["trace_id"]]


def test_deliveries_are_answered_within_a_second_while_slow_clients_and_a_flood_hold_sockets(
    receiver: Live,
) -> None:
    """150 clients sending a request a byte every half second, and 400 connections that send
    nothing: WHOOP's deliveries are still stored and answered within its one-second budget."""
    port = receiver.server.port
    slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(150)]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(400)]
    head = b"POST /webhooks/whoop HTTP/1.1\r\nHost: whoop\r\nContent-Length: 100\r\n\r\n"
    stop = threading.Event()

    def trickle() -> None:
        for index in range(len(head)):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(head[index : index + 1])
            if stop.wait(0.5):
                return

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        time.sleep(1.0)  # all of them connected and holding on
        answers = []
        with requests.Session() as session:
            for _ in range(40):
                body, headers = signed(an_event())
                started = time.monotonic()
                response = session.post(receiver.url, data=body, headers=headers, timeout=10)
                answers.append((response.status_code, time.monotonic() - started))
                session.close()  # a new connection each time, as WHOOP's deliveries come
    finally:
        stop.set()
        trickler.join(10)
        for sock in slow + idle:
            sock.close()

    assert [status for status, _ in answers] == [200] * 40
    slowest = max(seconds for _, seconds in answers)
    assert slowest < 1.0, f"slowest answer took {slowest:.2f}s"
