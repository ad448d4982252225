"""Serving a Sandbox over real HTTP: in-process for tests, or as the `tap-whoop-sandbox` CLI."""

from __future__ import annotations

import argparse
import math
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from types import FrameType, TracebackType
from typing import Any, NoReturn
from urllib.parse import urlsplit

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import (
    ADMIN_PREFIX,
    API_PREFIX,
    AUTH_CODE_TTL,
    OAUTH_PREFIX,
    Sandbox,
    create_app,
    parse_moment,
)
from .data import MINUTE, iso, to_ms
from .signals import DEFAULT_INTERVAL_SECONDS
from .webhooks import DEFAULT_RETRY_DELAYS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MEMBERS = ("alice", "bob")
DEFAULT_HISTORY_DAYS = 90
DEFAULT_PER_MINUTE = 100
DEFAULT_PER_DAY = 10_000
DEFAULT_ACCESS_TOKEN_TTL = 3600
DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-secret"  # noqa: S105 - the sandbox's published secret


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Tests make hundreds of requests; one log line each would drown their output."""


class SandboxServer:
    """A threaded werkzeug server for `sandbox`, bound at construction (port 0 = any free)."""

    def __init__(
        self, sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True
    ) -> None:
        self.sandbox = sandbox
        handler = _QuietHandler if quiet else WSGIRequestHandler
        # Binding here rather than in werkzeug turns "port in use" into an OSError for the
        # caller; werkzeug would print and sys.exit(1).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host, port), family=family) as listener:
            self._server: BaseWSGIServer = make_server(
                host,
                listener.getsockname()[1],
                create_app(sandbox),
                threaded=True,
                request_handler=handler,
                fd=listener.fileno(),
            )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where the server listens, e.g. http://127.0.0.1:8765."""
        host = self._server.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._server.port}"

    @property
    def api_url(self) -> str:
        """The tap's api_url."""
        return f"{self.url}{API_PREFIX}"

    @property
    def oauth_url(self) -> str:
        """The tap's oauth_url; the token endpoint is {oauth_url}/token."""
        return f"{self.url}{OAUTH_PREFIX}"

    @property
    def admin_url(self) -> str:
        """The admin API (clock, faults, members, stats)."""
        return f"{self.url}{ADMIN_PREFIX}"

    def start(self) -> SandboxServer:
        """Serve on a daemon thread; idempotent."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="whoop-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (within the 50 ms shutdown poll).

        Also stops the sandbox's webhook deliveries (within one delivery timeout).
        """
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self.sandbox.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, no usage dump: the CLI's contract for bad arguments."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _budget(text: str) -> int | None:
    if text.lower() in {"none", "unlimited"}:
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'none', got {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65_535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def _moment(text: str) -> datetime:
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability from 0 to 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0.0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise argparse.ArgumentTypeError(f"expected an absolute http(s) URL, got {text!r}")
    return text


def _members(text: str) -> list[str]:
    keys = [key.strip() for key in text.split(",")]
    if not all(keys):
        raise argparse.ArgumentTypeError(f"expected comma-separated member keys, got {text!r}")
    return keys


_RETRIES = ", ".join(f"{delay:g}" for delay in DEFAULT_RETRY_DELAYS)
_EPILOG = f"""\
OAuth (OAUTH_URL is printed at start, e.g. http://127.0.0.1:{DEFAULT_PORT}/oauth/oauth2):
  token endpoint   OAUTH_URL/token, with the client id and secret above
  refresh tokens   each member starts with sandbox-seed-KEY, valid for one refresh; every
                   refresh returns a new one and spends the old, as at WHOOP
  consent          OAUTH_URL/auth?client_id=..&redirect_uri=..&response_type=code&scope=..
                   &state=.. (8+ characters) approves at once, as the first member or as
                   &member=KEY, and redirects to redirect_uri?code=..&state=..; any absolute
                   redirect_uri works; a code is good once, for {AUTH_CODE_TTL // MINUTE} minutes
  so               tap-whoop auth --config sandbox.json --listen 0
                   works with a browser, or with `curl -sL` on the URL it prints
Admin API at /_sandbox: GET clock, POST advance {{"days": 1}}, GET members, GET stats,
POST/DELETE faults.
Webhooks (WHOOP v2): with --webhook-url, or POST /_sandbox/webhooks {{"url": ..}}, the sandbox
POSTs {{"user_id", "id", "type", "trace_id"}} for sleep/workout/recovery .updated and .deleted
(a recovery's id is its sleep's), signed as WHOOP does: X-WHOOP-Signature-Timestamp (epoch ms)
and X-WHOOP-Signature = base64(HMAC-SHA256(client secret, timestamp + body)).
  changes          advancing the clock (records appearing or being scored; cycles send none),
                   POST /_sandbox/members/KEY/KIND/ID/edit {{"sport_name": ..}} (top-level
                   fields; updated_at becomes now) and .../delete (a main sleep takes its
                   recovery along); KIND is sleep, workout, or recovery with ID its cycle id
  delivery         off-thread; non-2xx, errors and answers slower than 1 s are retried after
                   {_RETRIES} seconds, then given up
  faults           POST /_sandbox/webhooks {{"url", "drop": 0-1, "duplicate": 0-1, "delay": s,
                   "seed": n, "retry_delays": [s, ..]}}, or the --webhook-* options
  log              GET /_sandbox/webhooks/log: every change with changed_at (epoch seconds),
                   attempts, delivered, dropped; counters under "webhooks" in GET stats
"""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tap-whoop-sandbox",
        description=(
            "Serve a WHOOP-compatible API and OAuth server with synthetic members.\n"
            "It prints its URLs, client credentials and members' tokens when it starts."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default: {DEFAULT_HOST}")
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"default: {DEFAULT_PORT}; 0 picks a free port",
    )
    parser.add_argument(
        "--members",
        type=_members,
        default=list(DEFAULT_MEMBERS),
        metavar="KEY,KEY",
        help=f"comma-separated member keys; default: {','.join(DEFAULT_MEMBERS)}",
    )
    parser.add_argument(
        "--history-days",
        type=int,
        default=DEFAULT_HISTORY_DAYS,
        help=f"days of records before the clock start; default: {DEFAULT_HISTORY_DAYS}",
    )
    parser.add_argument(
        "--now",
        type=_moment,
        metavar="ISO",
        help="sandbox clock start, e.g. 2026-11-20T12:00:00Z; default: this hour (UTC)",
    )
    parser.add_argument(
        "--per-minute",
        type=_budget,
        default=DEFAULT_PER_MINUTE,
        help=f"app-wide requests per minute, or 'none'; default: {DEFAULT_PER_MINUTE}",
    )
    parser.add_argument(
        "--per-day",
        type=_budget,
        default=DEFAULT_PER_DAY,
        help=f"app-wide requests per day, or 'none'; default: {DEFAULT_PER_DAY}",
    )
    parser.add_argument(
        "--access-token-ttl",
        type=int,
        default=DEFAULT_ACCESS_TOKEN_TTL,
        metavar="SECONDS",
        help=f"access token lifetime; default: {DEFAULT_ACCESS_TOKEN_TTL}",
    )
    parser.add_argument(
        "--state-file",
        help=(
            "remember clock, tokens, deletions and edits across restarts; "
            "default: none (forget on exit)"
        ),
    )
    parser.add_argument(
        "--client-id", default=DEFAULT_CLIENT_ID, help=f"default: {DEFAULT_CLIENT_ID}"
    )
    parser.add_argument(
        "--client-secret", default=DEFAULT_CLIENT_SECRET, help=f"default: {DEFAULT_CLIENT_SECRET}"
    )
    parser.add_argument(
        "--webhook-url",
        type=_url,
        metavar="URL",
        help="POST WHOOP webhooks for every change here; default: none (changes only logged)",
    )
    parser.add_argument(
        "--webhook-drop",
        type=_probability,
        default=0.0,
        metavar="P",
        help="chance a change's webhook is never sent; default: 0",
    )
    parser.add_argument(
        "--webhook-duplicate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="chance a webhook is sent twice (same trace_id); default: 0",
    )
    parser.add_argument(
        "--webhook-delay",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="hold back each webhook's first attempt; default: 0",
    )
    parser.add_argument(
        "--webhook-seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the drop and duplicate dice; default: 0",
    )
    parser.add_argument(
        "--signal-interval",
        type=int,
        default=DEFAULT_INTERVAL_SECONDS,
        metavar="SECONDS",
        help="seconds between two points of a sleep's signals (/stream); "
        f"default: {DEFAULT_INTERVAL_SECONDS}",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    return parser


def _limit(budget: int | None, unit: str) -> str:
    return "unlimited" if budget is None else f"{budget}/{unit}"


def banner(server: SandboxServer, args: argparse.Namespace) -> list[str]:
    """What the CLI prints when it starts: the first line is stable, for scripts to parse."""
    sandbox = server.sandbox
    keys = [member.key for member in sandbox.members]
    seeds = [
        f"{key}={sandbox.seed_refresh_token(key)}"
        + ("" if sandbox.seed_is_live(key) else " (already used)")
        for key in keys
    ]
    return [
        f"WHOOP sandbox: api_url={server.api_url} oauth_url={server.oauth_url} "
        f"members={','.join(keys)}",
        f"  client_id={sandbox.client_id} client_secret={sandbox.client_secret}",
        f"  refresh tokens (each valid once, then rotated): {' '.join(seeds)}",
        f"  consent: {server.oauth_url}/auth approves at once as {keys[0]} (or &member=KEY) "
        "and redirects to redirect_uri?code=...&state=...",
        f"  clock={iso(to_ms(sandbox.now))} history_days={args.history_days} "
        f"rate_limit={_limit(args.per_minute, 'minute')},{_limit(args.per_day, 'day')} "
        f"access_token_ttl={args.access_token_ttl}s",
        f"  admin: {server.admin_url} (GET clock, POST advance, GET members, GET stats)",
        f"  webhooks: {_webhooks_line(sandbox.webhook_settings())} "
        f"(POST {server.admin_url}/webhooks to change, GET {server.admin_url}/webhooks/log)",
    ]


def _webhooks_line(settings: dict[str, Any]) -> str:
    if settings["url"] is None:
        return "url=none"
    faults = "".join(
        f" {name}={settings[name]:g}" for name in ("drop", "duplicate", "delay") if settings[name]
    )
    return f"url={settings['url']}{faults}"


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; exit 0 then, 2 on bad arguments, 1 if it cannot bind."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        sandbox = Sandbox(
            members=args.members,
            history_days=args.history_days,
            now=args.now,
            client_id=args.client_id,
            client_secret=args.client_secret,
            per_minute=args.per_minute,
            per_day=args.per_day,
            access_token_ttl=args.access_token_ttl,
            state_file=args.state_file,
            webhook_url=args.webhook_url,
            signal_interval=args.signal_interval,
        )
        sandbox.configure_webhooks(
            drop=args.webhook_drop,
            duplicate=args.webhook_duplicate,
            delay=args.webhook_delay,
            seed=args.webhook_seed,
        )
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    try:
        server = SandboxServer(sandbox, args.host, args.port, quiet=args.quiet)
    except OSError as exc:
        print(
            f"{parser.prog}: error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    with server:
        print("\n".join(banner(server, args)), flush=True)
        while not stopping.wait(0.5):
            pass
    return 0
