"""The webhook receiver, `tap-whoop webhooks`: WHOOP's change notices, kept in the inbox.

WHOOP POSTs `{"user_id", "id", "type", "trace_id"}` signed with the app's client secret. A
delivery is answered 2xx only once it is durably in the inbox (`Inbox.add`), so an
acknowledged event survives anything short of the disk; everything else is refused with the
status that tells WHOOP whether to retry, and one log line saying why (never the signature,
the secret or the body). The tap drains the inbox on each run.

The server is waitress (a production WSGI server: a thread pool, bounded requests, timeouts);
the application is plain werkzeug.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import re
import resource
import signal
import socket
import threading
import time
import traceback
import typing as t
import uuid
from dataclasses import dataclass

from waitress import create_server
from werkzeug.wrappers import Request, Response

from tap_whoop.errors import TapWhoopError, TokenStoreError
from tap_whoop.settings import DEFAULT_WEBHOOK_HOST, DEFAULT_WEBHOOK_PORT
from tap_whoop.stores.inbox import EVENT_TYPES, Event

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import FrameType

    from tap_whoop.run import Run
    from tap_whoop.stores.inbox import Inbox

    StartResponse = Callable[..., t.Any]

logger = logging.getLogger("tap-whoop")

WEBHOOK_PATH = "/webhooks/whoop"
HEALTH_PATH = "/healthz"
SIGNATURE_HEADER = "X-WHOOP-Signature"
TIMESTAMP_HEADER = "X-WHOOP-Signature-Timestamp"

MAX_BODY_BYTES = 16 * 1024
"""The largest delivery read; WHOOP's are about 150 bytes."""
REPLAY_WINDOW_SECONDS = 300
"""How far a delivery's signed timestamp may be from this machine's clock, either way."""
MEMBERS_REREAD_SECONDS = 1.0
"""An unknown user id re-reads the token store at most this often (a member authorized since)."""
WHOOP_BUDGET_SECONDS = 1.0
"""WHOOP's patience: a slower answer counts as a failed delivery, to be sent again."""

MAX_USER_ID = 2**63 - 1
MAX_RECORD_ID_CHARS = 100
MAX_TRACE_ID_CHARS = 200

THREADS = 8
"""Requests handled at once (each waits for its own durable inbox write)."""
CONNECTION_LIMIT = 2000
"""Connections held open at once. Slow or idle clients each hold one (a request is handed to a
thread only once it has fully arrived), so WHOOP's deliveries still get in past hundreds of
them; beyond this, put a reverse proxy in front (docs/webhooks.md). waitress's default is 100."""
CHANNEL_TIMEOUT_SECONDS = 15
"""An idle connection, or one whose request stopped arriving, is closed after this."""
MAX_HEADER_BYTES = 32 * 1024
BACKSTOP_BODY_BYTES = 4 * MAX_BODY_BYTES
"""waitress's own limit: bigger bodies are refused (413) before any byte of them is buffered."""

_MILLISECONDS = re.compile(r"[0-9]{1,15}")


class WebhookError(TapWhoopError):
    """The receiver cannot start: where it was to listen, or what it needs, is not usable."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """WHOOP's signature: base64(HMAC-SHA256(client secret, timestamp header + raw body))."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_valid(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether `signature` is WHOOP's for this timestamp and body (compared in constant time)."""
    try:
        given = signature.strip().encode("latin-1")
        expected = sign(secret, timestamp, body).encode("ascii")
    except UnicodeError:
        return False
    return hmac.compare_digest(expected, given)


class Refused(Exception):
    """A delivery not taken: the HTTP status, a short reason for WHOOP, the log line's detail."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Outcome:
    """What became of a delivery that was taken."""

    event: Event
    stored: bool


class Receiver:
    """The WSGI application: `POST /webhooks/whoop` into the run's inbox, and `GET /healthz`.

    Built from a run's services: the client secret (`run.config`), the members' WHOOP user ids
    (`run.token_store`) and the inbox (`run.receiver_inbox`). Construction reads the token store and
    opens the inbox, so that a receiver that could never store anything does not start.
    """

    def __init__(self, run: Run, *, clock: Callable[[], float] = time.time) -> None:
        self._secret = str(run.config["client_secret"])
        self._store = run.token_store
        self.inbox: Inbox = run.receiver_inbox
        self._clock = clock
        self._members_lock = threading.Lock()
        self._user_ids = self._read_user_ids()
        self._read_at = time.monotonic()
        self.inbox.last_received_at()

    @property
    def inbox_path(self) -> str:
        """Where the inbox lives (for the startup line)."""
        return str(getattr(self.inbox, "path", self.inbox))

    @property
    def user_ids(self) -> frozenset[int]:
        """The WHOOP user ids of the token store's members, as last read."""
        return self._user_ids

    def __call__(self, environ: dict[str, t.Any], start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request; nothing it receives can make it raise."""
        try:
            response = self._respond(Request(environ))
        except Exception as exc:
            logger.error("webhooks: internal error answering a request (500): %s", _where(exc))
            response = _json(500, {"error": "internal error"})
        return response(environ, start_response)

    def _respond(self, request: Request) -> Response:
        path = request.path
        if path == WEBHOOK_PATH:
            if request.method != "POST":
                logger.warning(
                    "webhooks: refused %s %s (405): WHOOP only POSTs here",
                    _short(request.method),
                    WEBHOOK_PATH,
                )
                return _json(405, {"error": "method not allowed"}, Allow="POST")
            return self._delivery(request)
        if path == HEALTH_PATH:
            if request.method not in ("GET", "HEAD"):
                return _json(405, {"error": "method not allowed"}, Allow="GET, HEAD")
            return self._health()
        logger.info("webhooks: no such path %s (404)", _short(path))
        return _json(404, {"error": "not found"})

    def _health(self) -> Response:
        try:
            self.inbox.last_received_at()
        except Exception as exc:
            logger.warning("webhooks: health check failed (503): %s", _reason(exc))
            return _json(503, {"status": "unavailable"})
        return _json(200, {"status": "ok"})

    def _delivery(self, request: Request) -> Response:
        started = time.monotonic()
        try:
            outcome = self.take(request)
        except Refused as refusal:
            logger.warning(
                "webhooks: refused a delivery from %s (%d): %s",
                request.remote_addr or "?",
                refusal.status,
                refusal.detail,
            )
            return _json(refusal.status, {"error": refusal.reason})
        event = outcome.event
        what = (
            f"{event.type} for user {event.user_id}: record {event.record_id} "
            f"(trace {event.trace_id})"
        )
        if outcome.stored:
            logger.info("webhooks: stored %s", what)
        else:
            logger.info("webhooks: duplicate %s, already in the inbox", what)
        elapsed = time.monotonic() - started
        if elapsed > WHOOP_BUDGET_SECONDS:
            logger.warning(
                "webhooks: answered trace %s after %.1fs, over WHOOP's %.0fs: WHOOP will send it "
                "again (it will be recognized as a duplicate); is the inbox's disk slow?",
                event.trace_id,
                elapsed,
                WHOOP_BUDGET_SECONDS,
            )
        return _json(200, {"stored": True} if outcome.stored else {"duplicate": True})

    def take(self, request: Request) -> Outcome:
        """Check a delivery (size, time, signature, JSON, shape, member), then store it."""
        body = _body(request)
        timestamp = self._fresh_timestamp(request.headers.get(TIMESTAMP_HEADER))
        signature = request.headers.get(SIGNATURE_HEADER)
        if signature is None:
            raise Refused(401, "unsigned", f"no {SIGNATURE_HEADER} header")
        if not signature_valid(self._secret, timestamp, body, signature):
            raise Refused(
                401,
                "bad signature",
                f"{SIGNATURE_HEADER} does not match the body: not sent by WHOOP, or "
                "client_secret is not the secret of the app whose webhook URL this is",
            )
        event = _event(_json_object(body))
        if not self._is_member(event.user_id):
            raise Refused(
                422,
                "unknown member",
                f"{event.type} for user {event.user_id}: no member in the token store "
                f"{self._store.path} is that WHOOP user (authorize them with `tap-whoop auth`); "
                "the tap's reconciliation reads their data once they are",
            )
        try:
            stored = self.inbox.add(event)
        except TokenStoreError as exc:
            raise Refused(
                503,
                "inbox unavailable",
                f"{event.type} for user {event.user_id} (trace {event.trace_id}) not stored, "
                f"WHOOP will send it again: {_reason(exc)}",
            ) from None
        return Outcome(event, stored)

    def _fresh_timestamp(self, timestamp: str | None) -> str:
        if timestamp is None:
            raise Refused(401, "unsigned", f"no {TIMESTAMP_HEADER} header")
        if not _MILLISECONDS.fullmatch(timestamp):
            raise Refused(
                401, "bad timestamp", f"{TIMESTAMP_HEADER} is not a time in epoch milliseconds"
            )
        skew = int(timestamp) / 1000 - self._clock()
        if skew < -REPLAY_WINDOW_SECONDS:
            raise Refused(
                401,
                "stale timestamp",
                f"{TIMESTAMP_HEADER} is {-skew:.0f}s old (more than {REPLAY_WINDOW_SECONDS}s): "
                "a replay, or this machine's clock is wrong",
            )
        if skew > REPLAY_WINDOW_SECONDS:
            raise Refused(
                401,
                "future timestamp",
                f"{TIMESTAMP_HEADER} is {skew:.0f}s ahead of this machine's clock (more than "
                f"{REPLAY_WINDOW_SECONDS}s): check the clock (NTP)",
            )
        return timestamp

    def _read_user_ids(self) -> frozenset[int]:
        members = self._store.read()["members"]
        return frozenset(
            entry["user_id"]
            for entry in members.values()
            if isinstance(entry.get("user_id"), int) and not isinstance(entry["user_id"], bool)
        )

    def _is_member(self, user_id: int) -> bool:
        if user_id in self._user_ids:
            return True
        with self._members_lock:
            if user_id in self._user_ids:
                return True
            if time.monotonic() - self._read_at < MEMBERS_REREAD_SECONDS:
                return False
            self._read_at = time.monotonic()
            try:
                self._user_ids = self._read_user_ids()
            except TokenStoreError as exc:
                raise Refused(
                    503,
                    "token store unavailable",
                    f"cannot tell whether user {user_id} is a member: {_reason(exc)}",
                ) from None
            return user_id in self._user_ids


def _body(request: Request) -> bytes:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise Refused(
            413, "too large", f"a body of {length} bytes (at most {MAX_BODY_BYTES} are read)"
        )
    body = request.stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise Refused(413, "too large", f"a body over {MAX_BODY_BYTES} bytes")
    return body


def _json_object(body: bytes) -> dict[str, t.Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise Refused(400, "not JSON", f"the body ({len(body)} bytes) is not JSON") from None
    if not isinstance(payload, dict):
        raise Refused(
            400,
            "not a JSON object",
            f"the body is JSON but not an object ({type(payload).__name__})",
        )
    return payload


def _event(payload: dict[str, t.Any]) -> Event:
    """The event a payload describes, once each field has the shape WHOOP gives it."""
    user_id = payload.get("user_id")
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not 0 < user_id <= MAX_USER_ID:
        raise Refused(400, "bad event", "user_id is not a positive whole number")
    record_id = _text(payload, "id", MAX_RECORD_ID_CHARS)
    kind = _text(payload, "type", MAX_RECORD_ID_CHARS)
    trace_id = _text(payload, "trace_id", MAX_TRACE_ID_CHARS)
    if kind not in EVENT_TYPES:
        raise Refused(
            422,
            "unknown event type",
            f"event type {kind!r} for user {user_id} is not one the tap reads "
            f"({', '.join(sorted(EVENT_TYPES))})",
        )
    try:
        uuid.UUID(record_id)
    except ValueError:
        raise Refused(
            400,
            "bad event",
            f"id {_short(record_id)} of a {kind} event for user {user_id} is not a UUID, as "
            "WHOOP's v2 sleep and workout ids are",
        ) from None
    return Event(user_id, kind, record_id, trace_id, received_at=time.time())


def _text(payload: dict[str, t.Any], name: str, limit: int) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise Refused(400, "bad event", f"{name} is not a non-empty string")
    if len(value) > limit:
        raise Refused(400, "bad event", f"{name} is longer than {limit} characters")
    if not value.isprintable():
        raise Refused(400, "bad event", f"{name} holds unprintable characters")
    return value


def _json(status: int, body: dict[str, t.Any], **headers: str) -> Response:
    return Response(
        json.dumps(body), status=status, mimetype="application/json", headers=headers or None
    )


def _connection_limit() -> int:
    """`CONNECTION_LIMIT`, with the process's open-file limit raised to hold it if it can be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = CONNECTION_LIMIT + 64  # listening sockets, the inbox, the token store, logs
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return CONNECTION_LIMIT if soft == resource.RLIM_INFINITY else min(CONNECTION_LIMIT, soft - 64)


def _short(text: str, limit: int = 80) -> str:
    """A request's own text, safe to log: quoted, escaped, cut."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TapWhoopError):
        return exc.message
    return type(exc).__name__


def _where(exc: BaseException) -> str:
    """An unexpected exception's type and innermost frame, never its message (it may hold data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


class WebhookServer:
    """A receiver served by waitress on `host:port` (0: a free port), until `stop()`."""

    def __init__(self, app: Receiver, host: str, port: int) -> None:
        sockets = _listening_sockets(host, port)
        self.addresses = [sock.getsockname()[:2] for sock in sockets]
        self._map = _StoppableSocketMap()
        try:
            self._server = create_server(
                app,
                map=self._map,
                sockets=sockets,
                threads=THREADS,
                connection_limit=_connection_limit(),
                channel_timeout=CHANNEL_TIMEOUT_SECONDS,
                cleanup_interval=max(1, CHANNEL_TIMEOUT_SECONDS // 3),
                max_request_header_size=MAX_HEADER_BYTES,
                max_request_body_size=BACKSTOP_BODY_BYTES,
                asyncore_use_poll=True,  # select() cannot watch CONNECTION_LIMIT sockets
                ident="tap-whoop",
            )
        except Exception:
            for sock in sockets:
                sock.close()
            raise

    @property
    def port(self) -> int:
        """The bound port (the first, when the host has several addresses)."""
        return int(self.addresses[0][1])

    @property
    def urls(self) -> list[str]:
        """Where WHOOP's deliveries are received, one URL per bound address."""
        return [
            f"http://{f'[{host}]' if ':' in host else host}:{port}{WEBHOOK_PATH}"
            for host, port in self.addresses
        ]

    def serve(self) -> None:
        """Answer requests until `stop()`; then finish what is being answered, and close.

        The requests being answered get 5 seconds (waitress's); their threads send the answers.
        """
        try:
            self._server.run()
        finally:
            self._server.close()
            self._map.close_connections()

    def stop(self) -> None:
        """Ask `serve()` to return (from any thread, or a signal handler).

        A connection to the server wakes its loop to see it at once, not at its next turn.
        """
        self._map.stopping = True
        host, port = self.addresses[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with contextlib.suppress(OSError), socket.socket(family) as knock:
            knock.setblocking(False)
            knock.connect_ex((host, port))


class _StoppableSocketMap(dict[int, t.Any]):
    """waitress's socket map, made to end `run()` from any thread: the one use of its internals.

    waitress stops only on Ctrl-C (Pylons/waitress#343: no programmatic shutdown): on a
    KeyboardInterrupt or SystemExit in the thread that runs it, `run()` gives the requests being
    answered 5 seconds and returns. Its loop tests this map before each turn (at least once a
    second), in that thread: there SystemExit is raised once `stopping`. Its `close()` leaves a
    lone listener's connections open: `close_connections` closes them.
    """

    stopping = False

    def __bool__(self) -> bool:
        if self.stopping:
            raise SystemExit
        return len(self) > 0

    def close_connections(self) -> None:
        for dispatcher in list(self.values()):
            dispatcher.close()


def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address of `host`; a WebhookError saying why when they cannot be."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(
            host or None,
            port,
            socket.AF_UNSPEC,
            socket.SOCK_STREAM,
            socket.IPPROTO_TCP,
            socket.AI_PASSIVE,
        )
    except (OSError, ValueError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise WebhookError(
            f"cannot listen on {where}: the host does not resolve ({reason}); give --host (or "
            "webhook_host) an address of this machine, e.g. 127.0.0.1, or 0.0.0.0 for all"
        ) from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, address in infos:
            ip = str(address[0])
            if (family, ip) in seen:
                continue
            seen.add((family, ip))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # one free port for every address of the host
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            where = f"{ip}:{address[1]!s}"
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise WebhookError(f"cannot listen on {where}: {_bind_problem(exc, host)}") from None
    return sockets


def _bind_problem(exc: OSError, host: str) -> str:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        return f"{reason}: stop what listens there, or choose another --port (or webhook_port)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{reason}: {host} is not an address of this machine; give --host (or webhook_host) "
            "one of its addresses, e.g. 127.0.0.1, or 0.0.0.0 for all"
        )
    if exc.errno == errno.EACCES:
        return f"{reason}: ports below 1024 need privileges; choose a port of 1024 or above"
    return f"{reason}; choose another --host or --port (webhook_host, webhook_port)"


def serve(run: Run, host: str | None = None, port: int | None = None) -> int | None:
    """Receive WHOOP's webhooks into `run`'s inbox until SIGTERM or SIGINT; which one stopped it.

    None when stopped otherwise (`WebhookServer.stop` from a thread).
    """
    host = host if host is not None else str(run.config.get("webhook_host") or DEFAULT_WEBHOOK_HOST)
    if port is None:
        configured = run.config.get("webhook_port")
        port = DEFAULT_WEBHOOK_PORT if configured is None else int(configured)
    receiver = Receiver(run)
    server = WebhookServer(receiver, host, port)
    received: list[signal.Signals] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum))
        server.stop()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, stop)
    try:
        for url in server.urls:
            logger.info(
                "webhooks: listening on %s (health check: %s); events go to the inbox %s",
                url,
                HEALTH_PATH,
                receiver.inbox_path,
            )
        if not receiver.user_ids:
            logger.warning(
                "webhooks: no member in the token store %s has a WHOOP user id yet, so every "
                "event is refused until one does: authorize members with `tap-whoop auth`",
                run.token_store.path,
            )
        server.serve()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    logger.info("webhooks: stopped (%s)", received[0].name if received else "stop requested")
    return int(received[0]) if received else None
