"""WHOOP webhooks from the sandbox: a log of every change, and signed deliveries off-thread.

WHOOP (v2) POSTs `{"user_id", "id", "type", "trace_id"}` for `workout|sleep|recovery` `.updated`
(creation included) and `.deleted`; a recovery's `id` is its sleep's. Each delivery carries
`X-WHOOP-Signature-Timestamp` (epoch ms) and `X-WHOOP-Signature`, base64 HMAC-SHA256 under the
client secret of that timestamp followed by the raw body. A non-2xx answer, a timeout (1 s) or
a connection error is retried after each of `retry_delays`, then given up.

Deliveries can be made to fail on purpose: `drop` loses an event (never sent), `duplicate` sends
one twice (same body and trace_id), `delay` holds back every first attempt. The decisions come
from a `random.Random(seed)`, so a run is repeatable.

Every change is logged with the wall-clock time it was made (`changed_at`), whether or not a URL
is configured, so a benchmark can measure how soon a pipeline reflects it.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any
from urllib.parse import urlsplit

import requests

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1.0, 5.0, 30.0, 300.0, 1800.0)
"""Seconds before each retry: five retries within about an hour, as WHOOP does."""
DELIVERY_TIMEOUT = 1.0
"""WHOOP treats a delivery not answered within a second as failed."""
WORKERS = 4
"""Deliveries in flight at once, so one slow receiver answer does not hold up the rest."""
EVENT_KINDS = ("sleep", "recovery", "workout")
SIGNATURE_HEADER = "X-WHOOP-Signature"
TIMESTAMP_HEADER = "X-WHOOP-Signature-Timestamp"
_UNSET: Any = object()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """WHOOP's signature: base64(HMAC-SHA256(secret, timestamp header + raw body))."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@dataclass(slots=True)
class Change:
    """One change a webhook reports, and what became of its delivery."""

    user_id: int
    id: str
    type: str
    trace_id: str
    changed_at: float
    """Wall-clock seconds (`time.time`) when the sandbox made the change."""
    attempts: int = 0
    """POSTs made for it, retries and a duplicate's included."""
    delivered: bool = False
    """Some POST for it was answered 2xx."""
    dropped: bool = False
    """Lost on purpose (`drop`): never sent."""
    duplicated: bool = False
    delivered_at: float | None = None
    """Wall-clock seconds of the first 2xx answer."""

    def body(self) -> bytes:
        """The JSON WHOOP sends."""
        payload = {"user_id": self.user_id, "id": self.id, "type": self.type}
        payload["trace_id"] = self.trace_id
        return json.dumps(payload, separators=(",", ":")).encode()

    def as_json(self) -> dict[str, Any]:
        """The entry of `GET /_sandbox/webhooks/log`."""
        return {
            "user_id": self.user_id,
            "id": self.id,
            "type": self.type,
            "trace_id": self.trace_id,
            "changed_at": self.changed_at,
            "attempts": self.attempts,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "duplicated": self.duplicated,
            "delivered_at": self.delivered_at,
        }


@dataclass(slots=True)
class _Delivery:
    change: Change
    url: str
    retry_delays: tuple[float, ...]
    attempts: int = 0


@dataclass
class _Counters:
    changes: int = 0
    sent: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    dropped: int = 0
    duplicated: int = 0


@dataclass
class _Settings:
    url: str | None = None
    duplicate: float = 0.0
    drop: float = 0.0
    delay: float = 0.0
    seed: int = 0
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    rng: Random = field(default_factory=lambda: Random(0))  # noqa: S311 - fault dice


class Webhooks:
    """The change log and the delivery queue, served by worker threads started on first use."""

    def __init__(
        self,
        secret: Callable[[], str],
        url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._clock = clock
        self._cond = threading.Condition()
        self._settings = _Settings()
        self._log: list[Change] = []
        self._counters = _Counters()
        self._queue: list[tuple[float, int, _Delivery]] = []
        self._sequence = 0
        self._in_flight = 0
        self._threads: list[threading.Thread] = []
        self._generation = 0
        self.configure(url=url)

    # Settings

    def configure(
        self,
        *,
        url: str | None = _UNSET,
        duplicate: float | None = None,
        drop: float | None = None,
        delay: float | None = None,
        seed: int | None = None,
        retry_delays: Sequence[float] | None = None,
    ) -> dict[str, Any]:
        """Change what is given (url None turns delivery off); ValueError on a bad value.

        A new seed restarts the drop/duplicate dice. Deliveries already queued keep their URL.
        """
        if url is not _UNSET and url is not None:
            _check_url(url)
        for name, chance in (("duplicate", duplicate), ("drop", drop)):
            if chance is not None and not (_number(chance) and 0.0 <= chance <= 1.0):
                raise ValueError(f"{name} must be a probability from 0 to 1")
        if delay is not None and not (_number(delay) and delay >= 0.0):
            raise ValueError("delay must be a non-negative number of seconds")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer")
        if retry_delays is not None and (
            isinstance(retry_delays, str | bytes)
            or not all(_number(step) and step >= 0 for step in retry_delays)
        ):
            raise ValueError("retry_delays must be a list of non-negative numbers of seconds")
        with self._cond:
            settings = self._settings
            if url is not _UNSET:
                settings.url = url
            if duplicate is not None:
                settings.duplicate = float(duplicate)
            if drop is not None:
                settings.drop = float(drop)
            if delay is not None:
                settings.delay = float(delay)
            if seed is not None:
                settings.seed = seed
                settings.rng = Random(seed)  # noqa: S311 - fault dice, not secrets
            if retry_delays is not None:
                settings.retry_delays = tuple(float(step) for step in retry_delays)
            return self.settings()

    def settings(self) -> dict[str, Any]:
        """The URL and delivery faults in force."""
        with self._cond:
            settings = self._settings
            return {
                "url": settings.url,
                "duplicate": settings.duplicate,
                "drop": settings.drop,
                "delay": settings.delay,
                "seed": settings.seed,
                "retry_delays": list(settings.retry_delays),
            }

    @property
    def url(self) -> str | None:
        """Where deliveries go; None when webhooks are off."""
        with self._cond:
            return self._settings.url

    # Changes

    def publish(self, events: Iterable[tuple[int, str, str]]) -> list[Change]:
        """Log (user_id, id, type) changes made now and queue their deliveries; never blocks."""
        changed_at = self._clock()
        made: list[Change] = []
        with self._cond:
            settings = self._settings
            due = time.monotonic() + settings.delay
            for user_id, record_id, kind in events:
                change = Change(user_id, record_id, kind, str(uuid.uuid4()), changed_at)
                made.append(change)
                self._log.append(change)
                self._counters.changes += 1
                if settings.url is None:
                    continue
                lost, twice = settings.rng.random(), settings.rng.random()
                if lost < settings.drop:
                    change.dropped = True
                    self._counters.dropped += 1
                    continue
                self._schedule(due, _Delivery(change, settings.url, settings.retry_delays))
                if twice < settings.duplicate:
                    change.duplicated = True
                    self._counters.duplicated += 1
                    self._schedule(due, _Delivery(change, settings.url, settings.retry_delays))
            if self._queue:
                self._start_workers()
                self._cond.notify_all()
        return made

    def log(self) -> list[dict[str, Any]]:
        """Every change so far, oldest first."""
        with self._cond:
            return [change.as_json() for change in self._log]

    def clear_log(self) -> None:
        """Forget logged changes (queued deliveries still go out)."""
        with self._cond:
            self._log = []

    def stats(self) -> dict[str, int]:
        """The counters.

        Changes logged, POSTs sent, 2xx answers, failed POSTs, deliveries given up after the
        last retry, events dropped and duplicated on purpose, deliveries pending.
        """
        with self._cond:
            counters = self._counters
            return {
                "changes": counters.changes,
                "sent": counters.sent,
                "delivered": counters.delivered,
                "failed_attempts": counters.failed_attempts,
                "gave_up": counters.gave_up,
                "dropped": counters.dropped,
                "duplicated": counters.duplicated,
                "pending": len(self._queue) + self._in_flight,
            }

    def reset_stats(self) -> None:
        """Zero the counters."""
        with self._cond:
            self._counters = _Counters()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no delivery is queued or in flight; False if `timeout` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._in_flight, timeout)

    def close(self) -> None:
        """Stop the workers and abandon queued deliveries; a later change starts them again."""
        with self._cond:
            self._generation += 1
            self._queue.clear()
            threads, self._threads = self._threads, []
            self._cond.notify_all()
        for thread in threads:
            thread.join(DELIVERY_TIMEOUT + 1.0)

    # Delivery

    def _schedule(self, due: float, delivery: _Delivery) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (due, self._sequence, delivery))

    def _start_workers(self) -> None:
        while len(self._threads) < WORKERS:
            thread = threading.Thread(
                target=self._work,
                args=(self._generation,),
                name=f"whoop-sandbox-webhooks-{len(self._threads)}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _work(self, generation: int) -> None:
        while True:
            with self._cond:
                delivery = self._next(generation)
                if delivery is None:
                    return
                self._in_flight += 1
            delivered = False
            try:
                delivered = self._post(delivery)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    if self._generation == generation:
                        self._settle(delivery, delivered=delivered)
                    self._cond.notify_all()

    def _next(self, generation: int) -> _Delivery | None:
        """The next due delivery, waiting for it; None once `close` has been called."""
        while self._generation == generation:
            now = time.monotonic()
            if self._queue and self._queue[0][0] <= now:
                return heapq.heappop(self._queue)[2]
            self._cond.wait(self._queue[0][0] - now if self._queue else None)
        return None

    def _post(self, delivery: _Delivery) -> bool:
        with self._cond:
            delivery.attempts += 1
            delivery.change.attempts += 1
            self._counters.sent += 1
        body = delivery.change.body()
        timestamp = str(int(self._clock() * 1000))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "whoop-sandbox-webhooks",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret(), timestamp, body),
        }
        try:
            with requests.post(
                delivery.url, data=body, headers=headers, timeout=DELIVERY_TIMEOUT
            ) as response:
                return 200 <= response.status_code < 300
        except (requests.RequestException, OSError, ValueError):
            return False

    def _settle(self, delivery: _Delivery, *, delivered: bool) -> None:
        change = delivery.change
        if delivered:
            self._counters.delivered += 1
            if not change.delivered:
                change.delivered = True
                change.delivered_at = self._clock()
            return
        self._counters.failed_attempts += 1
        if delivery.attempts > len(delivery.retry_delays):
            self._counters.gave_up += 1
            return
        wait = delivery.retry_delays[delivery.attempts - 1]
        self._schedule(time.monotonic() + wait, delivery)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_url(url: object) -> None:
    if not isinstance(url, str):
        raise ValueError("webhook url must be a string (or null to turn webhooks off)")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"webhook url must be an absolute http(s) URL, got {url!r}")
