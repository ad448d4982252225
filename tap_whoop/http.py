"""How every WHOOP API request is sent.

Pacing, the member's bearer token, the classification of answers (retry, wait, skip, fail),
retries, and the errors a failure becomes.

The streams apply it through the SDK's hooks (`authenticator`, `request_decorator`,
`validate_response`, `backoff_*`); `MemberClient` applies the same to the one-off calls of
`auth` and `revoke`.
"""

from __future__ import annotations

import datetime
import decimal
import errno
import logging
import math
import random
import sqlite3
import threading
import time
import typing as t
from urllib.parse import urlparse

import backoff
import requests
from pyrate_limiter import (
    AbstractBucket,
    Duration,
    InMemoryBucket,
    Limiter,
    Rate,
    SingleBucketFactory,
    SQLiteBucket,
)
from singer_sdk.authenticators import APIAuthenticatorBase
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_whoop.deadline import with_deadlines
from tap_whoop.errors import (
    ConfigError,
    DeactivatedUserError,
    GatewayRefusedError,
    MissingScopeError,
    QuotaExhaustedError,
    ReauthorizeError,
    TapWhoopError,
)
from tap_whoop.oauth.app import describe_status
from tap_whoop.proxies import with_environment_proxies
from tap_whoop.settings import (
    DEFAULT_API_URL,
    DEFAULT_MAX_REQUEST_ATTEMPTS,
    DEFAULT_REQUEST_TIMEOUT,
)
from tap_whoop.stop import STOP

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from pathlib import Path

    from tap_whoop.oauth.member import MemberAuth

DAILY_WINDOW_THRESHOLD_SECONDS = 120
"""Without a `window=` list in WHOOP's headers, a reset further away than this is the day's."""
LOW_REMAINING = 10
DAILY_RESERVE = 20
"""Requests of WHOOP's daily window a run leaves unspent: other workers may be mid-request."""
EXPIRE_EVERY_SECONDS = 10.0
"""How often the pacer deletes the window's entries older than a minute (pyrate-limiter's pace)."""
BACKOFF_BASE_SECONDS = 1.0
#: What a retry may mend: the SDK's list, so one-off calls retry what the streams retry.
RETRIABLE = (
    ConnectionResetError,
    RetriableAPIError,
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

logger = logging.getLogger("tap-whoop")


class RateLimitedError(RetriableAPIError):
    """A 429: the pacer already holds the next request until WHOOP's window resets."""


class RefusedError(FatalAPIError):
    """A 4xx that no retry mends; the response is kept for the message."""

    def __init__(self, message: str, response: requests.Response) -> None:
        super().__init__(message)
        self.response = response


class StaleTokenError(RetriableAPIError):
    """A 401 on a token that may simply be stale: one refresh, then one retry."""


class SharedWindow(t.Protocol):
    """A sliding request window kept outside the process (`stores.postgres.PostgresWindow`)."""

    def acquire(self) -> None:
        """Block until the window has room for one more request, and take it."""


class AppPacer:
    """Spends one WHOOP app's rate limit for all of its members.

    A sliding-window limiter enforces `max_requests_per_minute`. Given a `shared_file`, its window
    (pyrate-limiter's) lives in SQLite there, so that every tap process of the app on this machine
    (one job per member, overlapping schedules) stays under the ceiling together; given a
    `shared_window` (PostgreSQL, the `store_url` setting), every process of the app on any machine
    does. On top of it, WHOOP's own counters slow requests down before the window runs dry, and a
    429 halves the request rate, which then grows back by one request per minute per success
    (AIMD).
    """

    def __init__(
        self,
        max_requests_per_minute: int,
        shared_file: Path | None = None,
        shared_window: SharedWindow | None = None,
        budget: RequestBudget | None = None,
    ) -> None:
        self.ceiling = float(max_requests_per_minute)
        self.budget = budget if budget is not None else RequestBudget()
        self.rate: float | None = None
        self.rate_limited = 0
        self.shared_file = shared_file
        self.shared_window = shared_window
        rates = [Rate(max_requests_per_minute, Duration.MINUTE)]
        bucket: AbstractBucket = InMemoryBucket(rates)
        if shared_file is not None:
            try:
                # filelock waits forever for a lock file it cannot create: create it first
                with open(f"{shared_file}.lock", "a", encoding="utf-8"):
                    pass
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the shared rate-limit file {shared_file} in "
                    f"{shared_file.parent} ({exc.strerror or exc}); make that directory "
                    "writable, or set token_store_path to a writable location"
                ) from None
            try:
                bucket = SQLiteBucket.init_from_file(
                    rates, db_path=str(shared_file), use_file_lock=True
                )
            except (OSError, sqlite3.Error) as exc:
                raise ConfigError(
                    f"cannot open the shared rate-limit file {shared_file} ({exc}); make its "
                    "directory writable, or set token_store_path to a writable location"
                ) from None
        self._bucket = bucket
        # No background leak thread: it shared the SQLite connection with the sending thread.
        self._limiter = Limiter(SingleBucketFactory(bucket, schedule_leak=False))
        self._expired_at = -math.inf
        self._lock = threading.Lock()
        self._window_lock = threading.Lock()
        self._not_before = 0.0
        self._quota_resets_at: float | None = None

    def wait(self) -> None:
        """Block until the next request may go out: WHOOP's pace first, then the window's slot.

        The slot is taken last, so that the request reaches WHOOP right after it: a slot taken
        before a pause would let more than the ceiling arrive within a minute.
        """
        if self._quota_resets_at is not None:
            raise _quota_exhausted(self._quota_resets_at - time.monotonic())
        with self._lock:
            now = time.monotonic()
            start = max(now, self._not_before)
            if self.rate is not None:
                self._not_before = start + 60.0 / self.rate
        if start > now:
            STOP.sleep(start - now)
        if self.shared_window is not None:
            self.shared_window.acquire()
        else:
            try:
                self._take_slot()
            except (OSError, sqlite3.Error) as exc:
                raise self._shared_file_error(exc) from None
        self.budget.spend()

    def _take_slot(self) -> None:
        """Take a slot in the window, first deleting entries a minute old if it is time to."""
        with self._window_lock:
            now = time.monotonic()
            if now - self._expired_at >= EXPIRE_EVERY_SECONDS:
                self._bucket.leak(self._bucket.now())
                self._expired_at = now
            self._limiter.try_acquire("whoop")

    def _shared_file_error(self, exc: BaseException) -> TapWhoopError:
        full = "full" in str(exc).lower() or getattr(exc, "errno", None) == errno.ENOSPC
        cause = "the disk is full" if full else "it cannot be written"
        return TapWhoopError(
            f"cannot write to the shared rate-limit file {self.shared_file}: {cause} ({exc}); "
            "free space on that disk (or make the file writable) and run again, or set "
            "token_store_path to a location with space"
        )

    def observe(self, response: requests.Response) -> None:
        """Learn from WHOOP's rate-limit headers and status."""
        remaining = _header_number(response, "X-RateLimit-Remaining")
        reset = _header_number(response, "X-RateLimit-Reset")
        daily = _binds_daily(response.headers.get("X-RateLimit-Limit"), reset)
        now = time.monotonic()
        if daily and remaining is not None and reset is not None:
            self.budget.see_daily_window(remaining, reset)
        with self._lock:
            if response.status_code == 429:
                self.rate_limited += 1
                wait = reset if reset is not None else 60.0
                if daily:
                    raise _quota_exhausted(wait)
                self.rate = max(1.0, (self.rate or self.ceiling) / 2)
                self._not_before = max(self._not_before, now + wait)
                logger.warning(
                    "WHOOP answered 429; waiting %.0fs and pacing at %.0f requests/min",
                    wait,
                    self.rate,
                )
                return
            if self.rate is not None:
                self.rate += 1.0
                if self.rate >= self.ceiling:
                    self.rate = None
            if remaining is None or reset is None or remaining >= LOW_REMAINING:
                return
            if daily:
                if remaining <= 0:
                    self._quota_resets_at = now + reset
                return
            self._not_before = max(self._not_before, now + reset / max(remaining, 0.5))


class RequestBudget:
    """What one run may still send: `max_requests_per_run`, and what WHOOP's day has left.

    WHOOP's headers describe the binding window only, so the day's remaining requests are known
    once fewer are left in the day than in the minute; from then on this run's own requests are
    counted off it, and a reserve is left for the app's other workers.
    """

    def __init__(self, max_requests_per_run: int | None = None) -> None:
        self.max_requests_per_run = max_requests_per_run
        self.sent = 0
        self._daily: tuple[float, int, float] | None = None  # remaining, sent then, resets at
        self._lock = threading.Lock()

    def spend(self) -> None:
        """Count a request about to be sent."""
        with self._lock:
            self.sent += 1

    def see_daily_window(self, remaining: float, reset: float) -> None:
        """WHOOP said how many requests its day has left, and when it resets."""
        with self._lock:
            self._daily = (remaining, self.sent, time.monotonic() + reset)

    def room(self) -> tuple[float, str | None]:
        """Requests this run may still send, and what limits them ("run", "day" or None)."""
        with self._lock:
            sent, daily = self.sent, self._daily
        left, limit = math.inf, None
        if self.max_requests_per_run is not None:
            left, limit = self.max_requests_per_run - sent, "run"
        if daily is not None and time.monotonic() < daily[2]:
            remaining, sent_then, _ = daily
            in_day = remaining - (sent - sent_then) - DAILY_RESERVE
            if in_day < left:
                left, limit = in_day, "day"
        return left, limit

    def daily_resume_in(self) -> float:
        """Seconds until WHOOP's daily window resets, as its headers last said (0: unknown)."""
        with self._lock:
            daily = self._daily
        return max(daily[2] - time.monotonic(), 0.0) if daily is not None else 0.0


def _quota_exhausted(seconds: float) -> QuotaExhaustedError:
    resume = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return QuotaExhaustedError(
        "WHOOP's daily request quota for this app is spent; state was saved, resume after "
        f"{resume:%Y-%m-%d %H:%M} UTC (in {seconds / 3600:.1f} h)"
    )


def _binds_daily(limit: str | None, reset: float | None) -> bool:
    """Whether WHOOP's headers describe its daily window (rather than the minute's).

    `X-RateLimit-Limit: 100, 100;window=60, 10000;window=86400` names the binding limit first,
    then every window; the longest window is the day's. Without that list, a reset more than
    two minutes away can only be the day's.
    """
    windows: dict[float, float] = {}
    binding: float | None = None
    for index, part in enumerate((limit or "").split(",")):
        number, _, rest = part.strip().partition(";")
        try:
            value = float(number)
            if index == 0:
                binding = value
            elif rest.strip().startswith("window="):
                windows.setdefault(value, float(rest.strip().removeprefix("window=")))
        except ValueError:
            continue
    if binding is not None and len(windows) > 1 and binding in windows:
        return windows[binding] == max(windows.values())
    return reset is not None and reset > DAILY_WINDOW_THRESHOLD_SECONDS


def _header_number(response: requests.Response, name: str) -> float | None:
    try:
        return float(response.headers[name].split(",")[0])
    except (KeyError, ValueError):
        return None


#: Where a response keeps its decoded JSON: validation, records and the next page token need it.
_JSON = "_tap_whoop_json"


def json_body(response: requests.Response) -> t.Any:
    """A response's JSON, decoded once (numbers as `Decimal`, as WHOOP sends them)."""
    if _JSON not in response.__dict__:
        response.__dict__[_JSON] = response.json(parse_float=decimal.Decimal)
    return response.__dict__[_JSON]


def is_json(response: requests.Response) -> bool:
    """Whether the body is JSON, as WHOOP's API answers (a gateway's error page is HTML)."""
    kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        return False
    try:
        json_body(response)
    except ValueError:
        return False
    return True


def classify(
    response: requests.Response,
    auth: MemberAuth,
    scope: str,
    *,
    missing_is_empty: bool = False,
) -> None:
    """Sort WHOOP's answer into retry, wait, skip and fail, as the member `auth` speaks for.

    A 401 is retried once after a refresh (or on the token another process stored); a 403 is a
    missing scope (or, as an HTML page, a gateway's refusal), which fails only what needs it; a
    404 is "nothing here" where that is normal.
    """
    status = response.status_code
    path = urlparse(response.url).path
    if status == 404 and not is_json(response):
        kind = response.headers.get("Content-Type", "no content type").split(";")[0]
        raise RetriableAPIError(
            f"HTTP 404 for {path} with a body that is not WHOOP's JSON ({kind}): a gateway's or "
            "a proxy's answer, not evidence that a record is gone; if that persists, api_url "
            f"({_api_root(response)}) is not WHOOP's API root, e.g. {DEFAULT_API_URL}",
            response,
        )
    if status == 404 and missing_is_empty:
        return
    if status == 404:
        raise ConfigError(
            f"api_url: {_api_root(response)} answered HTTP 404 for {path}, so it is not WHOOP's "
            f"API root: set api_url to {DEFAULT_API_URL} (or the sandbox's http://HOST:PORT"
            "/developer)"
        )
    if status == 401:
        token = response.request.headers.get("Authorization", "").removeprefix("Bearer ")
        if auth.reject(token):
            raise StaleTokenError(f"WHOOP answered 401 for {path}", response)
        raise ReauthorizeError(
            auth.key, "WHOOP rejected a freshly refreshed access token (HTTP 401)"
        )
    if status == 403 and _error_of(response) == "deactivated_user":
        raise DeactivatedUserError(auth.key, path)
    if status == 403 and not is_json(response):
        kind = response.headers.get("Content-Type", "no content type").split(";")[0]
        raise GatewayRefusedError(auth.key, path, scope, kind, _api_root(response))
    if status == 403:
        raise MissingScopeError(auth.key, path, scope, describe_status(response))
    if status == 429:
        raise RateLimitedError(f"WHOOP answered 429 for {path}", response)
    if status >= 500:
        raise RetriableAPIError(f"WHOOP answered HTTP {status} for {path}", response)
    if status >= 400:
        raise RefusedError(
            f"WHOOP rejected {response.request.method} {response.request.path_url} with HTTP "
            f"{status}: {response.text[:300]}",
            response,
        )
    if status == 204 or (not response.content and response.request.method == "DELETE"):
        return
    try:
        json_body(response)
    except ValueError:
        kind = response.headers.get("Content-Type", "no content type").split(";")[0]
        raise RetriableAPIError(
            f"WHOOP answered {path} with a body that is not JSON ({kind}); if that persists, "
            f"api_url ({_api_root(response)}) is not WHOOP's API root, e.g. {DEFAULT_API_URL}",
            response,
        ) from None


def _error_of(response: requests.Response) -> t.Any:
    """The `error` of WHOOP's JSON error body, if it has one."""
    if not is_json(response):
        return None
    body = json_body(response)
    return body.get("error") if isinstance(body, dict) else None


def _api_root(response: requests.Response) -> str:
    """The API root a response came from: its URL up to WHOOP's `/v1` or `/v2`."""
    url = str(response.url).split("?")[0]
    for version in ("/v2/", "/v1/"):
        if version in url:
            return url.split(version)[0]
    return url


def wait_generator(base: float = BACKOFF_BASE_SECONDS) -> Generator[float, t.Any, None]:
    """Exponential waits for faults, capped at a minute; none after a 401 or a 429.

    After a 429 the pacer already holds the next request as long as WHOOP asks.
    """
    exception = yield 0
    failures = 0
    while True:
        if isinstance(exception, (StaleTokenError, RateLimitedError)):
            wait = 0.0
        else:
            wait = min(base * 2**failures, 60.0)
            failures += 1
        exception = yield wait


def jitter(value: float) -> float:
    """Up to a quarter more than the wait, so that no wait (401, 429) stays no wait.

    The SDK's default adds up to a whole second to every wait, the zero ones included.
    """
    return value * (1 + random.random() / 4)  # noqa: S311 - jitter, not a secret


def log_retry(name: str, details: t.Mapping[str, t.Any]) -> None:
    """One line per retry, without request details that could hold secrets.

    Called right before the retry's sleep, which a stop (SIGTERM, SIGINT) then ends at once.
    """
    if STOP.requested:
        raise STOP.error()
    STOP.in_backoff = True
    exc = details.get("exception")
    logger.warning(
        "Retrying %s in %.1fs (attempt %d): %s",
        name,
        details.get("wait", 0),
        details.get("tries", 0),
        exc if isinstance(exc, RetriableAPIError) else type(exc).__name__,
    )


class MemberBearer(APIAuthenticatorBase):
    """The SDK's authenticator hook: each attempt carries the current member's access token.

    The stream names the member before each partition (`use`); the token is refreshed through
    the shared token store when it is about to expire.
    """

    def __init__(self) -> None:
        super().__init__()
        self.member: MemberAuth | None = None

    def use(self, member: MemberAuth) -> None:
        """Speak for `member` from the next request on."""
        self.member = member

    def authenticate_request(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Set the member's bearer token (refreshed when stale)."""
        if self.member is None:
            raise LookupError("no member to authenticate the request as")
        request.headers["Authorization"] = f"Bearer {self.member.access_token()}"
        return request


class MemberClient:
    """WHOOP calls as one member outside a stream, under the streams' policy.

    Only GETs are retried: a DELETE that reached WHOOP may have done its work (a 401 is still
    retried once after a refresh, which does not reach WHOOP's data).
    """

    def __init__(
        self,
        api_url: str,
        auth: MemberAuth,
        pacer: AppPacer,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_REQUEST_ATTEMPTS,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.pacer = pacer
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.bearer = MemberBearer()
        self.bearer.use(auth)
        self.session = with_environment_proxies(with_deadlines(requests.Session()), self.api_url)

    def get(self, path: str, scope: str, params: dict[str, t.Any] | None = None) -> t.Any:
        """The JSON WHOOP answers to GET `path`."""
        response = self._retrying(self.max_attempts)("GET", path, scope, params)
        return json_body(response)

    def find(self, path: str, scope: str, params: dict[str, t.Any] | None = None) -> t.Any:
        """The record at `path`, or None when WHOOP says it has none there (its JSON 404)."""
        response = self._retrying(self.max_attempts)("GET", path, scope, params, True)
        return None if response.status_code == 404 else json_body(response)

    def delete(self, path: str) -> None:
        """DELETE `path`, sent once (plus once more after a stale-token 401)."""
        self._retrying(2, only=StaleTokenError)("DELETE", path, "", None)

    def _retrying(
        self, attempts: int, only: type[Exception] | tuple[type[Exception], ...] = RETRIABLE
    ) -> Callable[..., requests.Response]:
        return t.cast(
            "Callable[..., requests.Response]",
            backoff.on_exception(
                wait_generator,
                only,
                max_tries=attempts,
                jitter=jitter,
                on_backoff=lambda details: log_retry("the request", details),
                logger=None,
            )(self._send),
        )

    def _send(
        self,
        method: str,
        path: str,
        scope: str,
        params: dict[str, t.Any] | None,
        missing_is_empty: bool = False,
    ) -> requests.Response:
        STOP.in_backoff = False
        self.pacer.wait()
        request = requests.Request(method, f"{self.api_url}{path}", params=params).prepare()
        response = self.session.send(self.bearer(request), timeout=self.timeout)
        self.pacer.observe(response)
        assert self.bearer.member is not None
        classify(response, self.bearer.member, scope, missing_is_empty=missing_is_empty)
        return response
