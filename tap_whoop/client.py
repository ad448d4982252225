"""HTTP behaviour shared by every WHOOP stream: pacing, member tokens, retries, pages, bookmarks."""

from __future__ import annotations

import datetime
import decimal
import logging
import random
import sqlite3
import threading
import time
import typing as t
import weakref
from urllib.parse import urlparse

import pendulum
import requests
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
    reauthorize_command,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable
    from pathlib import Path

    from singer_sdk.helpers.types import Context

    from tap_whoop.tap import TapWhoop

DEFAULT_API_URL = "https://api.prod.whoop.com/developer"
PAGE_SIZE = 25
DAILY_WINDOW_THRESHOLD_SECONDS = 120
LOW_REMAINING = 10

logger = logging.getLogger("tap-whoop")


class RateLimitedError(RetriableAPIError):
    """A 429: the pacer already holds the next request until WHOOP's window resets."""


class StaleTokenError(RetriableAPIError):
    """A 401 on a token that may simply be stale: one refresh, then one retry."""


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
        rates = [Rate(max_requests_per_minute, Duration.MINUTE)]
        bucket: AbstractBucket = InMemoryBucket(rates)
        if shared_file is not None:
            try:
                bucket = SQLiteBucket.init_from_file(
                    rates, db_path=str(shared_file), use_file_lock=True
                )
            except (OSError, sqlite3.Error) as exc:
                raise ConfigError(
                    f"cannot open the shared rate-limit file {shared_file} ({exc}); make its "
                    "directory writable, or set token_store_path to a writable location"
                ) from None
        self._limiter = Limiter(bucket)
        self._lock = threading.Lock()
        self._not_before = 0.0
        self._quota_resets_at: float | None = None

    def wait(self) -> None:
        """Block until the next request may go out."""
        if self._quota_resets_at is not None:
            raise _quota_exhausted(self._quota_resets_at - time.monotonic())
        self._limiter.try_acquire("whoop")
        with self._lock:
            now = time.monotonic()
            start = max(now, self._not_before)
            if self.rate is not None:
                self._not_before = start + 60.0 / self.rate
        if start > now:
            time.sleep(start - now)

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
    """WHOOP's `next_token`: absent or empty ends the stream; a token seen before is an error."""

    def __init__(self) -> None:
        super().__init__(None)
        self._seen: set[str] = set()

    def get_next(self, response: requests.Response) -> str | None:
        """Read the next page's token, refusing to walk in circles."""
        token = page_body(response).get("next_token") or None
        if token is None:
            return None
        if token in self._seen:
            raise FatalAPIError(
                f"WHOOP repeated a page token for {urlparse(response.url).path}; stopping "
                "instead of looping forever (state for this stream was not advanced)"
            )
        self._seen.add(token)
        return token


_bodies: weakref.WeakKeyDictionary[requests.Response, t.Any] = weakref.WeakKeyDictionary()


def page_body(response: requests.Response) -> t.Any:
    """A response's JSON, decoded once: validation, records and the next page token all need it."""
    if response not in _bodies:
        _bodies[response] = response.json(parse_float=decimal.Decimal)
    return _bodies[response]


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
    request_timeout = 60
    backoff_base_seconds = 1.0
    _tap: TapWhoop

    @property
    def url_base(self) -> str:
        """The API root; pointing it elsewhere is how the sandbox is used."""
        return self._tap.api_url

    @property
    def timeout(self) -> int:
        """Seconds before a silent WHOOP counts as a failed attempt."""
        return self.request_timeout

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
        return 8

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
                yield record
                if member.failure:
                    break
        except MemberError as exc:
            self._tap.members.fail(member, self.name, exc)
        if member.skips(self.name) or any(member.skips(child.name) for child in self.child_streams):
            self.get_context_state(context).pop("progress_markers", None)


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

    def get_new_paginator(self) -> NextTokenPaginator:
        """WHOOP's `nextToken` pages."""
        return NextTokenPaginator()

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


def parse_time(value: str) -> datetime.datetime:
    """An ISO 8601 date-time from WHOOP, the settings or the state, as an aware datetime."""
    parsed = pendulum.parse(value)
    if not isinstance(parsed, datetime.datetime):
        raise ValueError(f"{value!r} is not a date-time")
    return parsed


def _iso(value: t.Any) -> str:
    return t.cast(str, pendulum.instance(value).in_tz("UTC").format("YYYY-MM-DDTHH:mm:ss.SSS[Z]"))
