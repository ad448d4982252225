"""HTTP behaviour shared by every WHOOP stream: pacing, member tokens, retries, pages, bookmarks."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import errno
import logging
import math
import random
import socket
import sqlite3
import threading
import time
import typing as t
import weakref
from urllib.parse import urlparse

import pendulum
import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
from pyrate_limiter import AbstractBucket, Duration, InMemoryBucket, Limiter, Rate, SQLiteBucket
from singer_sdk import RESTStream
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.helpers.jsonpath import extract_jsonpath
from singer_sdk.pagination import BaseAPIPaginator

from tap_whoop.errors import (
    ConfigError,
    MemberError,
    MissingScopeError,
    QuotaExhaustedError,
    ReauthorizeError,
    TapWhoopError,
    reauthorize_command,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable
    from pathlib import Path

    from singer_sdk.helpers.types import Context

    from tap_whoop.tap import TapWhoop

DEFAULT_API_URL = "https://api.prod.whoop.com/developer"
PAGE_SIZE = 25
DEFAULT_REQUEST_TIMEOUT = 60
"""Seconds one attempt may take, connecting and reading the whole answer included."""
DEFAULT_MAX_REQUEST_ATTEMPTS = 8
"""Tries per request before the run fails with the last error."""
WHOOP_EPOCH = datetime.datetime(2012, 1, 1, tzinfo=datetime.timezone.utc)
"""Before any WHOOP record: where a window without a start begins, for bounding its pages."""
PAGE_SLACK = 5
"""Pages a collection may take beyond what its window can hold, for empty or short pages."""
MAX_EMPTY_PAGES_IN_A_ROW = 10
DAILY_WINDOW_THRESHOLD_SECONDS = 120
LOW_REMAINING = 10

logger = logging.getLogger("tap-whoop")


class RateLimitedError(RetriableAPIError):
    """A 429: the pacer already holds the next request until WHOOP's window resets."""


class StaleTokenError(RetriableAPIError):
    """A 401 on a token that may simply be stale: one refresh, then one retry."""


class BadDataError(MemberError):
    """WHOOP answered with a page or record the tap cannot trust: only that stream fails.

    Like a missing scope, it stops one member's stream and keeps that stream's bookmark; the
    member's other streams and the other members go on, and the run fails at the end.
    """

    whole_member = False


class _BadData(Exception):
    """What is wrong with an answer; `WhoopStream.get_records` names the member and stream."""


class AppPacer:
    """Spends one WHOOP app's rate limit for all of its members.

    A sliding-window limiter (pyrate-limiter) enforces `max_requests_per_minute`; given a
    `shared_file`, its window lives in SQLite there, so that every tap process of the app on this
    machine (one job per member, overlapping schedules) stays under the ceiling together. On top
    of it, WHOOP's own counters slow requests down before the window runs dry, and a 429 halves
    the request rate, which then grows back by one request per minute per success (AIMD).
    """

    def __init__(self, max_requests_per_minute: int, shared_file: Path | None = None) -> None:
        self.ceiling = float(max_requests_per_minute)
        self.rate: float | None = None
        self.rate_limited = 0
        self.shared_file = shared_file
        rates = [Rate(max_requests_per_minute, Duration.MINUTE)]
        bucket: AbstractBucket = InMemoryBucket(rates)
        if shared_file is not None:
            try:
                bucket = _SharedBucket.init_from_file(
                    rates, db_path=str(shared_file), use_file_lock=True
                )
            except (OSError, sqlite3.Error) as exc:
                raise ConfigError(
                    f"cannot open the shared rate-limit file {shared_file} ({exc}); make its "
                    "directory writable, or set token_store_path to a writable location"
                ) from None
        self._bucket = bucket
        self._limiter = Limiter(bucket)
        self._lock = threading.Lock()
        self._not_before = 0.0
        self._quota_resets_at: float | None = None

    def wait(self) -> None:
        """Block until the next request may go out."""
        if self._quota_resets_at is not None:
            raise _quota_exhausted(self._quota_resets_at - time.monotonic())
        try:
            if isinstance(self._bucket, _SharedBucket):
                self._bucket.raise_leak_error()
            self._limiter.try_acquire("whoop")
        except (OSError, sqlite3.Error) as exc:
            raise self._shared_file_error(exc) from None
        with self._lock:
            now = time.monotonic()
            start = max(now, self._not_before)
            if self.rate is not None:
                self._not_before = start + 60.0 / self.rate
        if start > now:
            time.sleep(start - now)

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
        now = time.monotonic()
        with self._lock:
            if response.status_code == 429:
                self.rate_limited += 1
                wait = reset if reset is not None else 60.0
                if wait > DAILY_WINDOW_THRESHOLD_SECONDS:
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
            if reset > DAILY_WINDOW_THRESHOLD_SECONDS:
                if remaining <= 0:
                    self._quota_resets_at = now + reset
                return
            self._not_before = max(self._not_before, now + reset / max(remaining, 0.5))


class _SharedBucket(SQLiteBucket):
    """The SQLite window, whose background leaks keep a failure for the next request to raise.

    pyrate-limiter leaks (deletes expired entries) on a thread of its own, where an exception
    would only print a traceback; the pacer raises it instead, as one line.
    """

    _leak_error: BaseException | None = None

    def leak(self, current_timestamp: int | None = None) -> int:
        """Expire old entries; a full disk is remembered, not raised on the leak thread."""
        try:
            return super().leak(current_timestamp)
        except (OSError, sqlite3.Error) as exc:
            self._leak_error = exc
            return 0

    def raise_leak_error(self) -> None:
        """Raise what the last background leak met, if anything."""
        if self._leak_error is not None:
            raise self._leak_error


def _quota_exhausted(seconds: float) -> QuotaExhaustedError:
    resume = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return QuotaExhaustedError(
        "WHOOP's daily request quota for this app is spent; state was saved, resume after "
        f"{resume:%Y-%m-%d %H:%M} UTC (in {seconds / 3600:.1f} h)"
    )


def _header_number(response: requests.Response, name: str) -> float | None:
    try:
        return float(response.headers[name].split(",")[0])
    except (KeyError, ValueError):
        return None


class NextTokenPaginator(BaseAPIPaginator[str | None]):
    """WHOOP's `next_token`: absent or empty ends the stream; an empty page with one goes on.

    A walk that cannot end is refused: a token seen before (a `FatalAPIError`), a page of only
    records already read, more empty pages in a row than WHOOP plausibly sends, or more pages
    than the window can hold (`max_pages`, see `CollectionStream.max_pages`).
    """

    def __init__(
        self,
        max_pages: int | None = None,
        key: Callable[[dict[str, t.Any]], t.Hashable] | None = None,
    ) -> None:
        super().__init__(None)
        self.max_pages = max_pages
        self._key = key
        self._seen: set[str] = set()
        self._records: set[t.Hashable] = set()
        self._empty_in_a_row = 0

    def continue_if_empty(self, response: requests.Response) -> bool:
        """An empty page may still carry a token: `get_next` decides whether there is more."""
        return True

    def check_page(self, response: requests.Response, records: list[t.Any]) -> None:
        """Refuse a page that repeats the records of earlier pages, before any is delivered."""
        path = urlparse(response.url).path
        if not records:
            self._empty_in_a_row += 1
            if self._empty_in_a_row > MAX_EMPTY_PAGES_IN_A_ROW:
                raise _BadData(
                    f"WHOOP answered {path} with {self._empty_in_a_row} empty pages in a row, "
                    "each with a new page token; stopped paging"
                )
            return
        self._empty_in_a_row = 0
        if self._key is None or not all(isinstance(record, dict) for record in records):
            return
        if page_body(response).get("next_token") in self._seen:
            return  # a repeated token: `get_next` stops the walk with its own error
        keys = {self._key(record) for record in records}
        if keys <= self._records:
            raise _BadData(
                f"WHOOP answered page {self._page_count + 1} of {path} with only records of "
                "earlier pages, under a new page token; stopped paging instead of looping"
            )
        self._records |= keys

    def get_next(self, response: requests.Response) -> str | None:
        """Read the next page's token, refusing to walk in circles or without end."""
        path = urlparse(response.url).path
        token = page_body(response).get("next_token") or None
        if token is None:
            return None
        if not isinstance(token, str):
            raise _BadData(f"WHOOP answered {path} with a next_token that is not a string")
        if token in self._seen:
            raise FatalAPIError(
                f"WHOOP repeated a page token for {path}; stopping "
                "instead of looping forever (state for this stream was not advanced)"
            )
        if self.max_pages is not None and self._page_count >= self.max_pages:
            raise _BadData(
                f"WHOOP still offered another page of {path} after {self._page_count} pages, "
                f"more than the window can hold ({self.max_pages}); stopped paging"
            )
        self._seen.add(token)
        return token


_bodies: weakref.WeakKeyDictionary[requests.Response, t.Any] = weakref.WeakKeyDictionary()


def page_body(response: requests.Response) -> t.Any:
    """A response's JSON, decoded once: validation, records and the next page token all need it."""
    if response not in _bodies:
        _bodies[response] = response.json(parse_float=decimal.Decimal)
    return _bodies[response]


_attempt = threading.local()


class _Deadline:
    """One attempt's total time: when it runs out, the attempt's sockets are shut down.

    A socket read timeout only measures silence, so an answer that trickles in a byte at a time
    never trips it. Shutting the socket down from a timer thread wakes the blocked read at once,
    whether it waits for the headers or the body.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _attempt.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()
        _attempt.deadline = None

    def watch(self, sock: socket.socket | None) -> None:
        """Shut `sock` down when the time is up (at once if it already is)."""
        with self._lock:
            if sock is None or self._done or any(sock is known for known in self._sockets):
                return
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: nothing left to wake
        sock.shutdown(socket.SHUT_RDWR)


def _watch_current(sock: socket.socket | None) -> None:
    deadline: _Deadline | None = getattr(_attempt, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self) -> urllib3.connection.HTTPResponse:  # type: ignore[override]
        _watch_current(self.sock)
        return super().getresponse()


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self) -> urllib3.connection.HTTPResponse:  # type: ignore[override]
        _watch_current(self.sock)
        return super().getresponse()


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """Takes a numeric `timeout` as the whole attempt's limit: connecting and the full body.

    requests' own timeouts bound the connect and each silence between reads, not the answer as
    a whole; past the deadline the attempt fails with `requests.exceptions.ReadTimeout`, which
    the SDK retries like any timeout.
    """

    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Pools whose connections hand their socket to the current attempt's deadline."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | None = None,
        **kwargs: t.Any,
    ) -> requests.Response:
        """One attempt, answered in full within `timeout` seconds or failed."""
        if not isinstance(timeout, int | float):
            return super().send(request, stream=stream, timeout=timeout, **kwargs)
        with _Deadline(timeout) as deadline:
            try:
                response = super().send(request, stream=True, timeout=timeout, **kwargs)
                if response.raw is not None:  # e.g. through a proxy: from the headers on
                    deadline.watch(getattr(response.raw.connection, "sock", None))
                if not stream:
                    _ = response.content
            except Exception:
                if deadline.expired:
                    raise requests.exceptions.ReadTimeout(
                        f"no complete answer for {urlparse(str(request.url)).path} within "
                        f"{timeout:g}s",
                        request=request,
                    ) from None
                raise
        return response


def is_final(record: dict[str, t.Any]) -> bool:
    """WHOOP may still change a record that has no `end` yet or whose score is pending."""
    return record.get("score_state") != "PENDING_SCORE" and (
        "start" not in record or bool(record.get("end"))
    )


class WhoopStream(RESTStream[str | None]):
    """A WHOOP v2 endpoint, requested on behalf of one member at a time."""

    records_jsonpath = "$"
    scope: str = ""
    #: 404 means "nothing here yet" (per-cycle endpoints) rather than an error.
    missing_is_empty = False
    #: Default of the `request_timeout` setting.
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    #: Default of the `max_request_attempts` setting.
    max_request_attempts = DEFAULT_MAX_REQUEST_ATTEMPTS
    backoff_base_seconds = 1.0
    _tap: TapWhoop

    @property
    def url_base(self) -> str:
        """The API root; pointing it elsewhere is how the sandbox is used."""
        return self._tap.api_url

    @property
    def timeout(self) -> float:  # type: ignore[override]
        """Seconds one attempt may take in all, from connecting to the last byte of the body."""
        return _positive_setting(self.config, "request_timeout", self.request_timeout)

    @property
    def requests_session(self) -> requests.Session:
        """A session whose attempts each have a total deadline (`DeadlineAdapter`)."""
        session = super().requests_session
        if not isinstance(session.get_adapter("https://"), DeadlineAdapter):
            adapter = DeadlineAdapter()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        return session

    def get_new_paginator(self) -> BaseAPIPaginator[str | None] | None:
        """Single-object endpoints have no pages."""
        return None

    def request_decorator(self, func: Callable[..., t.Any]) -> Callable[..., t.Any]:
        """Pace and authenticate every attempt, inside the SDK's retry loop."""

        def send_as_member(request: requests.PreparedRequest, context: Context | None) -> t.Any:
            member = self._tap.members.for_context(context)
            token = member.auth.access_token()
            self._tap.pacer.wait()
            request.headers["Authorization"] = f"Bearer {token}"
            try:
                return func(request, context)
            except StaleTokenError:
                if member.auth.reject(token):
                    raise
                raise ReauthorizeError(
                    member.key, "WHOOP rejected a freshly refreshed access token (HTTP 401)"
                ) from None
            except _ScopeError as exc:
                raise MissingScopeError(
                    f"member {member.key!r}: WHOOP refused {exc.path} (HTTP 403): the "
                    f"authorization lacks scope {self.scope!r} or was revoked; re-authorize "
                    f"with `{reauthorize_command(member.key)}`"
                ) from None

        return super().request_decorator(send_as_member)

    def validate_response(self, response: requests.Response) -> None:
        """Sort WHOOP's answers into retry, wait, skip and fail."""
        self._tap.pacer.observe(response)
        status = response.status_code
        path = urlparse(response.url).path
        if status == 404 and self.missing_is_empty:
            return
        if status == 401:
            raise StaleTokenError(f"WHOOP answered 401 for {path}", response)
        if status == 403:
            raise _ScopeError(path)
        if status == 429:
            raise RateLimitedError(f"WHOOP answered 429 for {path}", response)
        if status >= 500:
            raise RetriableAPIError(f"WHOOP answered HTTP {status} for {path}", response)
        if status >= 400:
            raise FatalAPIError(
                f"WHOOP rejected GET {response.request.path_url} with HTTP {status}: "
                f"{response.text[:300]}"
            )
        try:
            _bodies[response] = response.json(parse_float=decimal.Decimal)
        except ValueError:
            raise RetriableAPIError(
                f"WHOOP answered {path} with a body that is not JSON", response
            ) from None

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, t.Any]]:
        """Records of a page; nothing for a 404 that means "none yet"."""
        if response.status_code == 404:
            return []
        return extract_jsonpath(self.records_jsonpath, input=page_body(response))

    def backoff_wait_generator(self) -> Generator[float, t.Any, None]:
        """Exponential waits for faults, capped at a minute; none after a 401 or a 429.

        After a 429 the pacer already holds the next request as long as WHOOP asks.
        """
        exception = yield 0
        failures = 0
        while True:
            if isinstance(exception, (StaleTokenError, RateLimitedError)):
                wait = 0.0
            else:
                wait = min(self.backoff_base_seconds * 2**failures, 60.0)
                failures += 1
            exception = yield wait

    def backoff_jitter(self, value: float) -> float:
        """Up to a quarter more than the wait, so that no wait (401, 429) stays no wait.

        The SDK's default adds up to a whole second to every wait, the zero ones included.
        """
        return value * (1 + random.random() / 4)  # noqa: S311 - jitter, not a secret

    def backoff_max_tries(self) -> int:
        """Attempts per request before the run fails with the last error."""
        return int(
            _positive_setting(self.config, "max_request_attempts", self.max_request_attempts)
        )

    def backoff_handler(self, details: t.Any) -> None:
        """One line per retry, without request details that could hold secrets."""
        exc = details.get("exception")
        self.logger.warning(
            "Retrying %s in %.1fs (attempt %d): %s",
            self.name,
            details.get("wait", 0),
            details.get("tries", 0),
            exc if isinstance(exc, RetriableAPIError) else type(exc).__name__,
        )

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """One member's records; a member's failure is reported at the end, not fatal.

        Whatever a failure interrupts keeps its bookmark: this stream's when it failed, or when
        the member or a drill-down of its records did meanwhile.
        """
        member = self._tap.members.for_context(context)
        if member.skips(self.name):
            return
        try:
            for record in super().get_records(context):
                self.check_record(record, context)
                yield record
                if member.failure:
                    break
        except MemberError as exc:
            self._tap.members.fail(member, self.name, exc)
        except _BadData as exc:
            error = BadDataError(
                f"member {member.key!r}: stream {self.name}: {exc} (the stream stopped there "
                "and keeps its bookmark)"
            )
            self._tap.members.fail(member, self.name, error)
        if member.skips(self.name) or any(member.skips(child.name) for child in self.child_streams):
            self.get_context_state(context).pop("progress_markers", None)

    def check_record(self, record: t.Any, context: Context | None) -> None:
        """Refuse a record without a usable primary key or replication key.

        Nothing with a null key may reach a target, and a bookmark must come from a date-time.
        """
        path = self.path_of(context)
        if not isinstance(record, dict):
            raise _BadData(f"WHOOP answered {path} with a record that is not a JSON object")
        for name in self.primary_keys or ():
            value = record[name] if name in record else (context or {}).get(name)
            if value is None or value == "" or isinstance(value, _NOT_KEYS):
                raise _BadData(f"WHOOP sent a record from {path} whose {name} is {_shown(value)}")
        if self.replication_key:
            value = record.get(self.replication_key)
            described = f"a record from {path}{_id_of(record, self.primary_keys)}"
            if not isinstance(value, str):
                raise _BadData(
                    f"WHOOP sent {described} whose {self.replication_key} is {_shown(value)}"
                )
            try:
                parse_time(value)
            except ValueError:
                raise _BadData(
                    f"WHOOP sent {described} whose {self.replication_key} {value[:40]!r} is not "
                    "a date-time"
                ) from None

    def path_of(self, context: Context | None) -> str:
        """The endpoint's path, with the context's ids filled in where it names them."""
        try:
            return self.path.format(**(context or {}))
        except (KeyError, IndexError):
            return self.path


_NOT_KEYS = (bool, float, decimal.Decimal, dict, list)
"""JSON values that cannot identify a record (WHOOP's keys are integers and strings)."""


def _shown(value: t.Any) -> str:
    if value is None:
        return "null"
    if value == "":
        return "empty"
    return f"not a usable key ({type(value).__name__} {str(value)[:40]!r})"


def _id_of(record: dict[str, t.Any], primary_keys: t.Sequence[str] | None) -> str:
    names = [name for name in primary_keys or () if record.get(name) is not None]
    return " (" + ", ".join(f"{n} {record[n]}" for n in names) + ")" if names else ""


def _positive_setting(config: t.Mapping[str, t.Any], name: str, default: float) -> float:
    """A setting that must be a positive number; absent or null means `default`."""
    value = config.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{name} must be a positive number (got {value!r})")
    return value


class _ScopeError(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class CollectionStream(WhoopStream):
    """A paged WHOOP collection, synced incrementally on when records happened.

    WHOOP lists newest first and can only filter on when a record happened, so the bookmark is
    taken when a member's stream completes, each run re-reads `lookback_days` before it, and it
    never moves past a record that WHOOP may still change (see `post_process`).
    """

    records_jsonpath = "$.records[*]"
    replication_key = "start"
    #: How far WHOOP's start filter can trail the replication key of the same record.
    filter_lag = datetime.timedelta(0)
    #: More records than one member can have per day, generously; bounds a window's pages.
    max_records_per_day = 2
    _paginator: NextTokenPaginator | None = None
    _paging_context: Context | None = None

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """One member's records; the context also bounds the pages (see `max_pages`)."""
        self._paging_context = context
        yield from super().get_records(context)

    def get_new_paginator(self) -> NextTokenPaginator:
        """WHOOP's `nextToken` pages, no more than the window can hold."""
        self._paginator = NextTokenPaginator(
            max_pages=self.max_pages(self._paging_context), key=self.record_key
        )
        return self._paginator

    def max_pages(self, context: Context | None) -> int:
        """The most pages WHOOP can need for this window, generously.

        A window without a start reaches back to before WHOOP's first records; one without an
        end, to tomorrow.
        """
        start = self.window_start(context) or WHOOP_EPOCH
        end = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
        if end_date := self.config.get("end_date"):
            end = min(end, parse_time(end_date))
        days = max((end - start).total_seconds() / 86_400, 0) + 1
        return math.ceil(days * self.max_records_per_day / PAGE_SIZE) + PAGE_SLACK

    def record_key(self, record: dict[str, t.Any]) -> t.Hashable:
        """A record's primary key, to notice pages that repeat earlier ones."""
        return tuple(str(record.get(name)) for name in self.primary_keys or ())

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, t.Any]]:
        """The page's `records`, which must be a list; a page of repeats is refused."""
        if response.status_code == 404:
            return []
        body = page_body(response)
        path = urlparse(response.url).path
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            if not isinstance(body, dict):
                what = f"a JSON {type(body).__name__} instead of an object with records"
            elif "records" not in body:
                what = "no `records` member"
            elif records is None:
                what = "`records` null"
            else:
                what = f"`records` that is a JSON {_json_type(records)}, not a list"
            raise _BadData(f"WHOOP answered {path} with a page that has {what}")
        if self._paginator is not None:
            self._paginator.check_page(response, records)
        return records

    def get_url_params(
        self, context: Context | None, next_page_token: str | None
    ) -> dict[str, t.Any]:
        """The same window on every page, plus the page token."""
        params: dict[str, t.Any] = {"limit": PAGE_SIZE}
        if start := self.window_start(context):
            params["start"] = _iso(start)
        if end := self.config.get("end_date"):
            params["end"] = _iso(parse_time(end))
        if next_page_token:
            params["nextToken"] = next_page_token
        return params

    def window_start(self, context: Context | None) -> datetime.datetime | None:
        """`start_date` on a fresh state; afterwards the bookmark minus the lookback."""
        start = self.get_starting_timestamp(context)
        if start is None:
            return None
        if self.get_context_state(context).get("replication_key_value"):
            start -= datetime.timedelta(days=int(self.config.get("lookback_days", 0)))
            start -= self.filter_lag
            if start_date := self.config.get("start_date"):
                start = max(start, parse_time(start_date))
        return start

    def post_process(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Hold the bookmark at the earliest record WHOOP may still change.

        The SDK caps a finished stream's bookmark at the state's signpost, so lowering the
        signpost to a pending record's key keeps the next run's window on that record.
        """
        if not is_final(row) and self.replication_key:
            value = row[self.replication_key]
            held = self.get_context_state(context).get("replication_key_signpost")
            if held is None or parse_time(value) < parse_time(held):
                self.state_manager.write_replication_key_signpost(value, context=context)
        return row


def _json_type(value: t.Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def parse_time(value: str) -> datetime.datetime:
    """An ISO 8601 date-time from WHOOP, the settings or the state, as an aware datetime."""
    parsed = pendulum.parse(value)
    if not isinstance(parsed, datetime.datetime):
        raise ValueError(f"{value!r} is not a date-time")
    return parsed


def _iso(value: t.Any) -> str:
    return t.cast(str, pendulum.instance(value).in_tz("UTC").format("YYYY-MM-DDTHH:mm:ss.SSS[Z]"))
