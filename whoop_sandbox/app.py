"""The sandbox's state (clock, OAuth grants, rate limit, faults, stats) and its Flask app.

`Sandbox` holds everything that changes, behind one lock; `create_app` exposes it with WHOOP's
paths, status codes and headers, plus a `/_sandbox` admin API for out-of-process control.
Changes to sleeps, recoveries and workouts (the clock bringing them or scoring them, admin edits
and deletions) are logged and sent as WHOOP webhooks (see `webhooks`).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import os
import re
import secrets
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pendulum
from flask import Blueprint, Flask, Response, current_app, g, jsonify, redirect, request
from flask.json.provider import DefaultJSONProvider
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from .data import (
    DAY,
    HOUR,
    KINDS,
    MINUTE,
    SECOND,
    Edit,
    Key,
    Kind,
    Member,
    Record,
    Timeline,
    from_ms,
    iso,
    to_ms,
)
from .signals import DEFAULT_INTERVAL_SECONDS, SIGNAL_FIELDS, signal_stream
from .webhooks import EVENT_KINDS, Webhooks

READ_SCOPES = (
    "read:profile",
    "read:body_measurement",
    "read:cycles",
    "read:recovery",
    "read:sleep",
    "read:workout",
)
ALL_SCOPES = (*READ_SCOPES, "offline")
PAGE_FAULTS = (
    "empty_page",
    "endless_tokens",
    "no_records",
    "null_records",
    "object_records",
    "null_id",
    "null_start",
    "bad_start",
)
FAULT_KINDS = (
    "500",
    "502",
    "503",
    "429",
    "401",
    "403",
    "400",
    "404",
    "timeout",
    "reset",
    "garbage",
    "gateway_404",
    "gateway_403",
    "no_refresh_token",
    "trickle",
    *PAGE_FAULTS,
)
"""Faults `inject_fault` serves. The HTTP statuses answer with that status and a JSON error;
"timeout" stalls `Sandbox.fault_delay` seconds before answering; "reset" drops the connection
mid-body; "garbage" answers an HTML 200; "gateway_404" and "gateway_403" answer as a CDN, proxy
or gateway in front of the API does, with an HTML page; "no_refresh_token" leaves the refresh
token out of a token answer; "trickle" sends the real answer (Content-Length included) one byte
every `Sandbox.trickle_interval` seconds.

`PAGE_FAULTS` change the real page of a collection (other endpoints ignore them):
"empty_page" answers no records, with a new next_token that resumes where the page began;
"endless_tokens" answers the page's records with a new next_token that leads to them again;
"no_records", "null_records" and "object_records" answer a page without `records`, with
`records: null`, and with `records` an object; "null_id", "null_start" and "bad_start" spoil
one record of the page (its third, or its last on shorter pages): its primary key (`id`,
`cycle_id` on recoveries) null, its `start` (`created_at` on recoveries) null or not a date-time.
"""
DEFAULT_AGENTS = ("python-requests/", "Python-urllib/", "singer-sdk/", "python-httpx/")
"""User-Agents that name a library, not a client: WHOOP's CDN may refuse them."""
API_PREFIX = "/developer"
OAUTH_PREFIX = "/oauth/oauth2"
ADMIN_PREFIX = "/_sandbox"
TOKEN_PATH = f"{OAUTH_PREFIX}/token"
AUTH_CODE_TTL = 10 * MINUTE
FAULT_RETRY_AFTER = 2
"""X-RateLimit-Reset (seconds) sent with an injected 429."""
STATE_VERSION = 1
_MEMBER_KEY = re.compile(r"[A-Za-z0-9_.-]+")
FIXED_FIELDS = frozenset(
    {"id", "user_id", "cycle_id", "sleep_id", "created_at", "updated_at", "start"}
)
"""Fields an edit may not change: they identify, place or date the record."""


class SandboxError(Exception):
    """An error the API answers with: status plus an OAuth-style JSON body."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Grant:
    """What a token lets its holder do: act as `member` within `scopes`."""

    member: str
    scopes: tuple[str, ...]
    expires: int | None = None
    """Sandbox-clock ms; access tokens only."""
    lapses: float | None = None
    """Wall-clock seconds (`time.time`) when an access token lapses even on a frozen clock."""


@dataclass(frozen=True)
class _AuthCode:
    grant: Grant
    redirect_uri: str


@dataclass
class _Fault:
    path: str
    kind: str
    remaining: int


@dataclass
class _Window:
    limit: int
    length: float
    started: float
    used: int = 0

    def roll(self, now: float) -> None:
        if now - self.started >= self.length:
            self.started += (now - self.started) // self.length * self.length
            self.used = 0

    def reset_in(self, now: float) -> int:
        return max(1, math.ceil(self.started + self.length - now))


class RateLimiter:
    """WHOOP's app-wide budgets: fixed windows in real time, shared by all members.

    `day_clock` (seconds) times the daily window instead of `clock`: the sandbox passes its own
    clock when the daily budget should follow simulated days (`day_window_clock="sandbox"`).
    """

    def __init__(
        self,
        per_minute: int | None,
        per_day: int | None,
        minute_window: float = 60.0,
        day_window: float = 86_400.0,
        clock: Callable[[], float] = time.monotonic,
        day_clock: Callable[[], float] | None = None,
    ) -> None:
        self._clock = clock
        budgets = (
            (per_minute, minute_window, clock),
            (per_day, day_window, day_clock or clock),
        )
        kept = [(n, length, timer) for n, length, timer in budgets if n is not None]
        self._clocks = [timer for _, _, timer in kept]
        self._windows = [_Window(n, length, timer()) for n, length, timer in kept]

    def hit(self) -> tuple[bool, dict[str, str]]:
        """Count one request if both windows allow it; headers describe the binding window."""
        nows = [timer() for timer in self._clocks]
        for window, now in zip(self._windows, nows, strict=True):
            window.roll(now)
        allowed = all(window.used < window.limit for window in self._windows)
        if allowed:
            for window in self._windows:
                window.used += 1
        return allowed, self._headers(nows)

    def exhausted_headers(self, reset: int) -> dict[str, str]:
        """Headers for a 429 that says: nothing left until `reset` seconds from now."""
        headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
        if self._windows:
            headers["X-RateLimit-Limit"] = self._limit_header(self._windows[0])
        return headers

    def _headers(self, nows: list[float]) -> dict[str, str]:
        """No headers at all when both budgets are unlimited."""
        if not self._windows:
            return {}
        binding, now = min(
            zip(self._windows, nows, strict=True),
            key=lambda pair: (pair[0].limit - pair[0].used, -pair[0].reset_in(pair[1])),
        )
        return {
            "X-RateLimit-Limit": self._limit_header(binding),
            "X-RateLimit-Remaining": str(binding.limit - binding.used),
            "X-RateLimit-Reset": str(binding.reset_in(now)),
        }

    def _limit_header(self, binding: _Window) -> str:
        windows = (f"{w.limit};window={w.length:g}" for w in self._windows)
        return ", ".join((str(binding.limit), *windows))


@dataclass
class _Stats:
    requests: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    token_requests: int = 0
    refreshes: int = 0
    invalid_grant: int = 0
    default_agents: int = 0
    by_member: dict[str, Counter[str]] | None = None
    """Member key -> API path -> authenticated requests; kept only with `count_by_member`."""

    def snapshot(self) -> dict[str, Any]:
        snapshot = {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_status": dict(self.by_status),
            "rate_limited": self.rate_limited,
            "token_requests": self.token_requests,
            "refreshes": self.refreshes,
            "invalid_grant": self.invalid_grant,
            "default_agents": self.default_agents,
        }
        if self.by_member is not None:
            snapshot["by_member"] = {key: dict(paths) for key, paths in self.by_member.items()}
        return snapshot


def seed_token(key: str) -> str:
    """The well-known refresh token a member starts with."""
    return f"sandbox-seed-{key}"


class Sandbox:
    """A WHOOP double: synthetic members, rotating OAuth grants, rate limits and faults.

    The clock is frozen at `now` except through `advance`, so tests see exactly the records
    they expect; the rate-limit windows alone run on real time, as the tap's backoff does.
    """

    fault_delay: float = 2.0
    """Seconds a "timeout" fault stalls before answering."""

    trickle_interval: float = 0.5
    """Seconds between the bytes of a "trickle" fault's answer."""

    refuse_default_agents: bool = False
    """Answer an HTML 403, as WHOOP's CDN may, to requests whose User-Agent is a library's
    default (`DEFAULT_AGENTS`), and count them (`stats()["default_agents"]`)."""

    def __init__(
        self,
        members: Iterable[str] = ("alice", "bob"),
        history_days: int = 90,
        now: datetime | None = None,
        client_id: str = "sandbox-client",
        client_secret: str = "sandbox-secret",  # noqa: S107 - the sandbox's published secret
        per_minute: int | None = 100,
        per_day: int | None = 10_000,
        minute_window: float = 60.0,
        day_window: float = 86_400.0,
        access_token_ttl: int = 3600,
        state_file: str | os.PathLike[str] | None = None,
        webhook_url: str | None = None,
        member_history_days: Mapping[str, int] | None = None,
        day_window_clock: str = "real",
        count_by_member: bool = False,
        signal_interval: int = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        """The arguments after `webhook_url` are for simulations at scale (see `add_member`).

        `member_history_days` gives some members a history length of their own (the others
        have `history_days`). `day_window_clock="sandbox"` times the daily rate-limit window on
        the sandbox clock, so each simulated day (`advance`) brings a fresh daily budget while
        the minute window keeps real time. `count_by_member` makes `stats()` count API requests
        per member and path (`by_member`). `signal_interval` is the seconds between two points
        of a sleep's signals.
        """
        keys = _member_keys(members)
        if history_days < 0:
            raise ValueError("history_days must be >= 0")
        own_history = dict(member_history_days or {})
        unknown = sorted(set(own_history) - set(keys))
        if unknown:
            raise ValueError(f"member_history_days names unknown members: {', '.join(unknown)}")
        for key, days in own_history.items():
            _check_history_days(days, f"member_history_days[{key!r}]")
        if day_window_clock not in ("real", "sandbox"):
            raise ValueError("day_window_clock must be 'real' or 'sandbox'")
        for name, budget in (("per_minute", per_minute), ("per_day", per_day)):
            if budget is not None and budget < 1:
                raise ValueError(f"{name} must be >= 1 or None")
        if minute_window <= 0 or day_window <= 0:
            raise ValueError("rate-limit windows must be positive")
        if access_token_ttl < 1:
            raise ValueError("access_token_ttl must be >= 1")
        if signal_interval < 1:
            raise ValueError("signal_interval must be >= 1 second")
        self.signal_interval = signal_interval
        #: Members whose membership is inactive: the sleep signal stream answers them 403.
        self.deactivated: set[str] = set()
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_token_ttl = access_token_ttl
        self._lock = threading.RLock()
        if now is None:
            now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        self._start = to_ms(now)
        self._offset = 0
        self._members = {key: Member.from_key(key) for key in keys}
        user_ids = Counter(member.user_id for member in self._members.values())
        if len(user_ids) < len(keys):
            raise ValueError("two member keys map to the same user_id; rename one")
        self._timelines = {
            key: Timeline(
                member, member.local_date(self._start - own_history.get(key, history_days) * DAY)
            )
            for key, member in self._members.items()
        }
        self._added: dict[str, int] = {}
        """Members `add_member` brought in: key -> first moment of their history (epoch ms)."""
        self._access: dict[str, Grant] = {}
        self._refresh: dict[str, Grant] = {}
        self._codes: dict[str, _AuthCode] = {}
        self._spent_seeds: set[str] = set()
        self._faults: list[_Fault] = []
        self._after_answering: list[tuple[str, Callable[[], Any]]] = []
        self._count_by_member = count_by_member
        self._stats = self._new_stats()
        timing: dict[str, Callable[[], float]] = {}
        if day_window_clock == "sandbox":
            timing["day_clock"] = lambda: self._now() / SECOND
        self._limiter = RateLimiter(per_minute, per_day, minute_window, day_window, **timing)
        self._webhooks = Webhooks(lambda: self.client_secret, webhook_url)
        self._state_file = Path(state_file) if state_file is not None else None
        if self._state_file is not None and self._state_file.exists():
            self._load(self._state_file)
        for key in keys:
            if key not in self._spent_seeds:
                self._refresh.setdefault(seed_token(key), Grant(key, ALL_SCOPES))
        for timeline in self._timelines.values():
            timeline.watch(self._now())
        self._extend()

    # Clock

    @property
    def now(self) -> datetime:
        """The sandbox clock."""
        with self._lock:
            return from_ms(self._now())

    def advance(
        self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0
    ) -> datetime:
        """Move the clock forward: new records appear, scores finalize, access tokens expire.

        Each sleep, recovery and workout that appears or is scored on the way is a
        `<kind>.updated` change (see `webhook_log`), in sandbox-time order; cycles are not.
        """
        step = round(days * DAY + hours * HOUR + minutes * MINUTE + seconds * SECOND)
        if step < 0:
            raise ValueError("the sandbox clock only moves forward")
        with self._lock:
            self._offset += step
            self._extend()
            now = self._now()
            changes = [
                (moment, timeline.member.user_id, record.id, f"{record.kind}.updated")
                for timeline in self._timelines.values()
                for moment, record in timeline.changes(now)
            ]
            changes.sort(key=lambda change: change[0])
            self._webhooks.publish(change[1:] for change in changes)
            self._save()
            return from_ms(now)

    def _now(self) -> int:
        return self._start + self._offset

    def _extend(self) -> None:
        for timeline in self._timelines.values():
            timeline.extend_to(self._now())

    # Members and records

    @property
    def members(self) -> tuple[Member, ...]:
        """The members, in the order given."""
        return tuple(self._members.values())

    def member(self, key: str) -> Member:
        """The member for `key`; KeyError for a key this sandbox does not have."""
        try:
            return self._members[key]
        except KeyError:
            raise KeyError(f"unknown member {key!r}") from None

    def records(self, key: str, kind: Kind) -> list[dict[str, Any]]:
        """Every record the API would list by default right now, newest first."""
        with self._lock:
            now = self._now()
            timeline = self._timeline(key, kind)
            found = timeline.newest_first(kind, now, None, now)
            return [timeline.show(record, now) for record in found]

    def record_ids(self, key: str, kind: Kind) -> list[str]:
        """Ids of the records `records` would list right now, newest first, none rendered.

        A recovery's id is its sleep's (`sleep_id`), a cycle's its id as text: cheap enough to
        count or compare a long history of many members.
        """
        with self._lock:
            now = self._now()
            timeline = self._timeline(key, kind)
            return [record.id for record in timeline.newest_first(kind, now, None, now)]

    def add_member(self, key: str, history_days: int = 90) -> Member:
        """A new member, whose history reaches `history_days` back from the sandbox's now.

        As if someone with years on their strap had just joined the app: their seed refresh
        token (`seed_refresh_token`) works from now on. ValueError for a key in use, a key that
        maps to a member's user_id, or a bad key or length. A `state_file` remembers them.
        """
        (key,) = _member_keys((key,))
        _check_history_days(history_days, "history_days")
        with self._lock:
            self._add(key, self._now() - history_days * DAY)
            self._save()
            return self._members[key]

    def _add(self, key: str, first: int, *, loading: bool = False) -> None:
        """Add a member; while loading a state file, `__init__` watches and extends later."""
        if key in self._members:
            raise ValueError(f"member {key!r} already exists")
        member = Member.from_key(key)
        if any(other.user_id == member.user_id for other in self._members.values()):
            raise ValueError(f"member key {key!r} maps to another member's user_id; rename it")
        timeline = Timeline(member, member.local_date(first))
        if not loading:
            now = self._now()
            timeline.watch(now)
            timeline.extend_to(now)
        self._members[key] = member
        self._timelines[key] = timeline
        self._added[key] = first
        if key not in self._spent_seeds:
            self._refresh.setdefault(seed_token(key), Grant(key, ALL_SCOPES))

    def page(
        self,
        key: str,
        kind: Kind,
        *,
        start: int | None,
        end: int | None,
        limit: int,
        before: Key | None = None,
    ) -> tuple[list[dict[str, Any]], Key | None]:
        """Up to `limit` records newest first, and the key to continue below if more remain."""
        with self._lock:
            now = self._now()
            timeline = self._timeline(key, kind)
            window = timeline.newest_first(kind, now, start, now if end is None else end, before)
            found = list(itertools.islice(window, limit + 1))
            more = len(found) > limit
            found = found[:limit]
            rendered = [timeline.show(record, now) for record in found]
            return rendered, (found[-1].key if more else None)

    def find(self, key: str, kind: Kind, record_id: str) -> dict[str, Any] | None:
        """One of the member's visible records by id, as the by-id endpoints return it."""
        with self._lock:
            now = self._now()
            timeline = self._timeline(key, kind)
            record = timeline.find(kind, record_id, now)
            return None if record is None else timeline.show(record, now)

    def of_cycle(self, key: str, kind: Kind, cycle_id: int) -> dict[str, Any] | None:
        """The visible main sleep or recovery of one of the member's visible cycles."""
        with self._lock:
            now = self._now()
            timeline = self._timeline(key, kind)
            if timeline.find("cycle", str(cycle_id), now) is None:
                return None
            record = timeline.of_cycle(kind, cycle_id, now)
            return None if record is None else timeline.show(record, now)

    def _timeline(self, key: str, kind: str) -> Timeline:
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}")
        self.member(key)
        return self._timelines[key]

    # Edits and deletions

    def delete_record(self, key: str, kind: Kind, record_id: str | int) -> list[dict[str, Any]]:
        """Delete a visible sleep, workout or recovery, as a member can in the WHOOP app.

        A recovery is named by its cycle id, the others by their id. Deleting a main sleep
        deletes its recovery too. The record is gone from collections, by-id and per-cycle
        endpoints; each deleted record that was visible is a `<kind>.deleted` change (a
        recovery's carries its sleep's id), returned as `webhook_log` shows them.
        KeyError for an unknown member or a record not visible now; ValueError for another kind.
        """
        with self._lock:
            timeline, record = self._visible_record(key, kind, record_id)
            now = self._now()
            gone = [record]
            timeline.deleted.add((record.kind, record.id))
            timeline.edits.pop((record.kind, record.id), None)
            if record.kind == "sleep" and not record.nap:
                recovery = timeline.find("recovery", record.id, now)
                if recovery is not None:
                    gone.append(recovery)
                timeline.deleted.add(("recovery", record.id))
                timeline.edits.pop(("recovery", record.id), None)
            user_id = timeline.member.user_id
            changes = self._webhooks.publish(
                (user_id, each.id, f"{each.kind}.deleted") for each in gone
            )
            self._save()
            return [change.as_json() for change in changes]

    def edit_record(
        self, key: str, kind: Kind, record_id: str | int, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Override top-level fields of a visible sleep, workout or recovery (by cycle id).

        Later edits add to earlier ones. updated_at becomes the sandbox's now (until scoring
        moves it later) and the edit is a `<kind>.updated` change. Returns the record as the
        API now shows it. The fields that identify, place or date a record (`FIXED_FIELDS`)
        cannot be changed: ValueError, as for another kind; KeyError as for `delete_record`.
        """
        if not isinstance(changes, Mapping) or not all(isinstance(k, str) for k in changes):
            raise ValueError("changes must map field names to values")
        fixed = sorted(FIXED_FIELDS & set(changes))
        if fixed:
            raise ValueError(f"these fields cannot be edited: {', '.join(fixed)}")
        try:
            copied = json.loads(json.dumps(dict(changes)))
        except (TypeError, ValueError):
            raise ValueError("changes must be JSON values") from None
        with self._lock:
            timeline, record = self._visible_record(key, kind, record_id)
            now = self._now()
            earlier = timeline.edits.get((record.kind, record.id))
            merged = {**(earlier.changes if earlier else {}), **copied}
            timeline.edits[(record.kind, record.id)] = Edit(merged, now)
            user_id = timeline.member.user_id
            self._webhooks.publish([(user_id, record.id, f"{record.kind}.updated")])
            self._save()
            return timeline.show(record, now)

    def _visible_record(self, key: str, kind: str, record_id: str | int) -> tuple[Timeline, Record]:
        if kind not in EVENT_KINDS:
            raise ValueError(f"only {', '.join(EVENT_KINDS)} records can be edited or deleted")
        timeline = self._timeline(key, kind)
        now = self._now()
        if kind == "recovery":
            text = str(record_id)
            if not text.isdigit():
                raise ValueError("a recovery is named by its cycle id, an integer")
            record = timeline.of_cycle("recovery", int(text), now)
        else:
            record = timeline.find(cast(Kind, kind), str(record_id), now)
        if record is None:
            raise KeyError(f"member {key!r} has no visible {kind} {record_id!r}")
        return timeline, record

    # Webhooks

    def configure_webhooks(self, **settings: Any) -> dict[str, Any]:
        """Set webhook delivery; returns the settings now in force.

        Any of: url (None: off), duplicate and drop (probabilities), delay (seconds before a
        first attempt), seed (of the drop/duplicate dice), retry_delays (seconds before each
        retry). ValueError on a bad value or an unknown name.
        """
        unknown = set(settings) - {"url", "duplicate", "drop", "delay", "seed", "retry_delays"}
        if unknown:
            raise ValueError(f"unknown webhook settings: {', '.join(sorted(unknown))}")
        return self._webhooks.configure(**settings)

    def webhook_settings(self) -> dict[str, Any]:
        """The webhook URL and delivery faults in force."""
        return self._webhooks.settings()

    def webhook_log(self) -> list[dict[str, Any]]:
        """Every change so far, oldest first.

        Each: user_id, id, type, trace_id, changed_at (epoch seconds), attempts, delivered,
        dropped, duplicated, delivered_at (epoch seconds or None).
        """
        return self._webhooks.log()

    def clear_webhook_log(self) -> None:
        """Forget the logged changes (deliveries under way carry on)."""
        self._webhooks.clear_log()

    def wait_for_webhooks(self, timeout: float | None = None) -> bool:
        """Wait until no delivery is queued or in flight; False if `timeout` ran out first."""
        return self._webhooks.wait(timeout)

    def close(self) -> None:
        """Stop the webhook delivery threads, abandoning queued deliveries.

        `SandboxServer.stop` calls this. A later change starts them again.
        """
        self._webhooks.close()

    # OAuth

    def seed_refresh_token(self, key: str) -> str:
        """The member's well-known first refresh token; valid until first used."""
        self.member(key)
        return seed_token(key)

    def seed_is_live(self, key: str) -> bool:
        """Whether the member's well-known first refresh token is still unused."""
        with self._lock:
            return seed_token(self.member(key).key) in self._refresh

    def issue_refresh_token(self, key: str, scopes: Iterable[str] = ALL_SCOPES) -> str:
        """A fresh refresh token, as if the member had just consented (`offline` is implied)."""
        with self._lock:
            granted = _scopes([*scopes, "offline"])
            self.member(key)
            token = secrets.token_urlsafe(32)
            self._refresh[token] = Grant(key, granted)
            self._save()
            return token

    def issue_access_token(self, key: str, scopes: Iterable[str] = ALL_SCOPES) -> str:
        """A bearer token straight away, e.g. to test a grant that lacks a scope."""
        with self._lock:
            self.member(key)
            token = self._issue(Grant(key, _scopes(scopes)), with_refresh=False)["access_token"]
            self._save()
            return cast(str, token)

    def authenticate(self, token: str) -> Grant | None:
        """The grant behind a live access token, or None (unknown, expired or revoked)."""
        with self._lock:
            grant = self._access.get(token)
            if grant is None or grant.member not in self._members:
                return None
            if grant.lapses is not None and grant.lapses <= time.time():
                return None
            return grant if (grant.expires or 0) > self._now() else None

    def authorize(self, params: Mapping[str, str]) -> str:
        """Consent on the member's behalf; returns where to redirect with the code."""
        with self._lock:
            if params.get("client_id") != self.client_id:
                raise SandboxError(401, "invalid_client", "unknown client_id")
            if params.get("response_type") != "code":
                raise SandboxError(400, "unsupported_response_type", "response_type must be code")
            redirect_uri = params.get("redirect_uri", "")
            target = urlsplit(redirect_uri)
            if not target.scheme or not (target.netloc or target.path):
                raise SandboxError(400, "invalid_request", "redirect_uri must be an absolute URI")
            state = params.get("state", "")
            if len(state) < 8:
                raise SandboxError(400, "invalid_state", "state must be at least 8 characters")
            try:
                scopes = _scopes(params.get("scope", "").split())
            except ValueError as exc:
                raise SandboxError(400, "invalid_scope", str(exc)) from None
            key = params.get("member") or next(iter(self._members))
            if key not in self._members:
                raise SandboxError(400, "invalid_request", f"unknown member {key!r}")
            code = secrets.token_urlsafe(24)
            expires = self._now() + AUTH_CODE_TTL
            self._codes[code] = _AuthCode(Grant(key, scopes, expires), redirect_uri)
            query = [*parse_qsl(target.query, keep_blank_values=True)]
            query += [("code", code), ("state", state)]
            return urlunsplit(target._replace(query=urlencode(query)))

    def token_request(
        self, form: Mapping[str, str], *, omit_refresh_token: bool = False
    ) -> dict[str, Any]:
        """The token endpoint, atomic under the lock so racing refreshes cannot both win."""
        with self._lock:
            if (form.get("client_id"), form.get("client_secret")) != (
                self.client_id,
                self.client_secret,
            ):
                raise SandboxError(401, "invalid_client", "wrong client_id or client_secret")
            grant_type = form.get("grant_type")
            if grant_type == "refresh_token":
                return self._refresh_grant(form, omit_refresh_token)
            if grant_type == "authorization_code":
                return self._code_grant(form)
            raise SandboxError(400, "unsupported_grant_type", f"unsupported: {grant_type!r}")

    def _refresh_grant(self, form: Mapping[str, str], omit_refresh_token: bool) -> dict[str, Any]:
        if "offline" not in form.get("scope", "").split():
            raise SandboxError(400, "invalid_scope", "refresh requests must include scope=offline")
        token = form.get("refresh_token", "")
        grant = self._refresh.get(token)
        if grant is None or grant.member not in self._members:
            self._stats.invalid_grant += 1
            raise SandboxError(
                400, "invalid_grant", "refresh token is unknown, revoked or already used"
            )
        self._access = {t: a for t, a in self._access.items() if a.member != grant.member}
        if not omit_refresh_token:
            del self._refresh[token]
            if token == seed_token(grant.member):
                self._spent_seeds.add(grant.member)
        self._stats.refreshes += 1
        body = self._issue(grant, with_refresh=not omit_refresh_token)
        self._save()
        return body

    def _code_grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        code = self._codes.pop(form.get("code", ""), None)
        if (
            code is None
            or code.redirect_uri != form.get("redirect_uri")
            or (code.grant.expires or 0) <= self._now()
        ):
            self._stats.invalid_grant += 1
            raise SandboxError(
                400, "invalid_grant", "authorization code is unknown, used or expired"
            )
        body = self._issue(code.grant, with_refresh=True)
        self._save()
        return body

    def _issue(self, grant: Grant, *, with_refresh: bool) -> dict[str, Any]:
        """WHOOP issues a refresh token only for grants that include `offline`."""
        access = secrets.token_urlsafe(32)
        expires = self._now() + self.access_token_ttl * SECOND
        lapses = time.time() + self.access_token_ttl
        self._access[access] = Grant(grant.member, grant.scopes, expires, lapses)
        body: dict[str, Any] = {"access_token": access, "expires_in": self.access_token_ttl}
        if with_refresh and "offline" in grant.scopes:
            refresh = secrets.token_urlsafe(32)
            self._refresh[refresh] = Grant(grant.member, grant.scopes)
            body["refresh_token"] = refresh
        body |= {"scope": " ".join(grant.scopes), "token_type": "bearer"}
        return body

    def revoke(self, key: str) -> None:
        """What DELETE /v2/user/access does: every token of the member stops working."""
        with self._lock:
            self.member(key)
            self._access = {t: a for t, a in self._access.items() if a.member != key}
            self._refresh = {t: r for t, r in self._refresh.items() if r.member != key}
            self._codes = {c: a for c, a in self._codes.items() if a.grant.member != key}
            self._spent_seeds.add(key)
            self._save()

    # Rate limit, faults and stats

    def hit_rate_limit(self) -> tuple[bool, dict[str, str]]:
        """Count an API request against the app's budgets; False when over either one."""
        with self._lock:
            return self._limiter.hit()

    def exhausted_rate_headers(self) -> dict[str, str]:
        """Rate-limit headers for an injected 429."""
        return self._limiter.exhausted_headers(FAULT_RETRY_AFTER)

    def inject_fault(self, path: str, kind: str, times: int = 1) -> None:
        """Serve `kind` to the next `times` requests whose path starts with `path`.

        API paths match with or without the /developer prefix; OAuth paths in full.
        """
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if not path.startswith("/"):
            raise ValueError("fault path must start with '/'")
        if kind == "no_refresh_token" and not TOKEN_PATH.startswith(path):
            raise ValueError(f"no_refresh_token applies only to {TOKEN_PATH}")
        if kind in PAGE_FAULTS and path.startswith(OAUTH_PREFIX):
            raise ValueError(f"{kind} applies only to the API's collections")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(_Fault(path, kind, times))

    def after_answering(self, path: str, action: Callable[[], Any]) -> None:
        """Run `action` once, right after the next API answer to `path` (a /v2 path) is made.

        A change, and WHOOP's notice of it, arriving while a client is passing the answer on
        (`edit_record` in `action` publishes its webhook as usual).
        """
        with self._lock:
            self._after_answering.append((path, action))

    def answered(self, path: str) -> None:
        """Run the actions `after_answering` set for `path`, once each."""
        with self._lock:
            due = [action for where, action in self._after_answering if where == path]
            self._after_answering = [p for p in self._after_answering if p[0] != path]
        for action in due:
            action()

    def clear_faults(self) -> None:
        """Drop every fault not yet served."""
        with self._lock:
            self._faults.clear()

    def take_fault(self, paths: Iterable[str]) -> str | None:
        """Consume one use of the oldest fault matching any of `paths`."""
        candidates = tuple(paths)
        with self._lock:
            for fault in self._faults:
                if any(path.startswith(fault.path) for path in candidates):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault.kind
            return None

    def note_api_request(self, path: str) -> None:
        """Count an API request (admin and OAuth requests are not API requests)."""
        with self._lock:
            self._stats.requests += 1
            self._stats.by_path[path] += 1

    def note_member_request(self, key: str, path: str) -> None:
        """Count an authenticated API request of member `key` (with `count_by_member`)."""
        with self._lock:
            if self._stats.by_member is not None:
                self._stats.by_member.setdefault(key, Counter())[path] += 1

    def _new_stats(self) -> _Stats:
        return _Stats(by_member={} if self._count_by_member else None)

    def note_api_status(self, status: int) -> None:
        """Count an API response by status."""
        with self._lock:
            self._stats.by_status[str(status)] += 1
            if status == 429:
                self._stats.rate_limited += 1

    def note_default_agent(self) -> None:
        """Count a request sent with a library's default User-Agent."""
        with self._lock:
            self._stats.default_agents += 1

    def note_token_request(self) -> None:
        """Count a request to the token endpoint, faulted or not."""
        with self._lock:
            self._stats.token_requests += 1

    def stats(self) -> dict[str, Any]:
        """API counters (OAuth and admin requests excluded); rate_limited counts every 429.

        `webhooks` counts changes logged, POSTs sent, 2xx answers (delivered), failed POSTs,
        deliveries given up after the last retry, events dropped and duplicated on purpose and
        deliveries still pending.
        """
        with self._lock:
            return {**self._stats.snapshot(), "webhooks": self._webhooks.stats()}

    def reset_stats(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._stats = self._new_stats()
            self._webhooks.reset_stats()

    # Persistence

    def _save(self) -> None:
        """Write the clock offset and live grants atomically, so a restart remembers them."""
        if self._state_file is None:
            return
        now = self._now()
        state = {
            "version": STATE_VERSION,
            "clock_offset_ms": self._offset,
            "access_tokens": {
                token: _grant_json(grant)
                for token, grant in self._access.items()
                if (grant.expires or 0) > now
            },
            "refresh_tokens": {token: _grant_json(grant) for token, grant in self._refresh.items()},
            "spent_seeds": sorted(self._spent_seeds),
            "added_members": [[key, first] for key, first in self._added.items()],
            "deleted": [
                [key, kind, record_id]
                for key, timeline in self._timelines.items()
                for kind, record_id in sorted(timeline.deleted)
            ],
            "edits": [
                {
                    "member": key,
                    "kind": kind,
                    "id": record_id,
                    "changes": edit.changes,
                    "at": edit.at,
                }
                for key, timeline in self._timelines.items()
                for (kind, record_id), edit in timeline.edits.items()
            ],
        }
        path = self._state_file
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as handle:
            json.dump(state, handle, indent=1)
        os.replace(handle.name, path)

    def _load(self, path: Path) -> None:
        try:
            state = json.loads(path.read_text())
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unsupported version {state.get('version')!r}")
            self._offset = int(state["clock_offset_ms"])
            self._access = {t: _grant_of(v) for t, v in state["access_tokens"].items()}
            self._refresh = {t: _grant_of(v) for t, v in state["refresh_tokens"].items()}
            self._spent_seeds = {str(key) for key in state["spent_seeds"]}
            for key, first in state.get("added_members", []):
                if str(key) not in self._members:
                    self._add(str(key), int(first), loading=True)
            for key, kind, record_id in state.get("deleted", []):
                if key in self._timelines and kind in EVENT_KINDS:
                    self._timelines[key].deleted.add((kind, str(record_id)))
            for edit in state.get("edits", []):
                timeline = self._timelines.get(edit["member"])
                if timeline is not None and edit["kind"] in EVENT_KINDS:
                    changes = dict(edit["changes"])
                    timeline.edits[(edit["kind"], str(edit["id"]))] = Edit(changes, int(edit["at"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"cannot read sandbox state file {path}: {exc}") from None


def _check_history_days(days: Any, name: str) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise ValueError(f"{name} must be an integer >= 0")


def _member_keys(members: Iterable[str]) -> tuple[str, ...]:
    if isinstance(members, str):
        raise TypeError("members must be a sequence of member keys, not one string")
    keys = tuple(members)
    if not keys:
        raise ValueError("at least one member is needed")
    if len(set(keys)) < len(keys):
        raise ValueError("member keys must be unique")
    for key in keys:
        if not _MEMBER_KEY.fullmatch(key):
            raise ValueError(f"member key {key!r} may use only letters, digits, '_', '.', '-'")
    return keys


def _scopes(requested: Iterable[str]) -> tuple[str, ...]:
    """Known scopes in WHOOP's order; unknown ones are an error."""
    wanted = set(requested)
    unknown = wanted - set(ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {' '.join(sorted(unknown))}")
    return tuple(scope for scope in ALL_SCOPES if scope in wanted)


def _grant_json(grant: Grant) -> dict[str, Any]:
    return {
        "member": grant.member,
        "scopes": list(grant.scopes),
        "expires": grant.expires,
        "lapses": grant.lapses,
    }


def _grant_of(data: Mapping[str, Any]) -> Grant:
    expires = data.get("expires")
    lapses = data.get("lapses")
    return Grant(
        str(data["member"]),
        tuple(str(s) for s in data["scopes"]),
        None if expires is None else int(expires),
        None if lapses is None else float(lapses),
    )


# The HTTP face

api = Blueprint("api", __name__, url_prefix=API_PREFIX)
oauth = Blueprint("oauth", __name__, url_prefix=OAUTH_PREFIX)
admin = Blueprint("admin", __name__, url_prefix=ADMIN_PREFIX)

_FAULT_ERRORS = {
    "400": "bad_request",
    "401": "unauthorized",
    "403": "forbidden",
    "404": "not_found",
    "429": "rate_limited",
    "500": "internal_server_error",
    "502": "bad_gateway",
    "503": "service_unavailable",
}
_GARBAGE = "<html><body><h1>502 Bad Gateway</h1><p>upstream hiccup</p></body></html>"


class _WhoopJson(DefaultJSONProvider):
    sort_keys = False
    """Keep fields in WHOOP's order."""


def create_app(sandbox: Sandbox) -> Flask:
    """A Flask app serving `sandbox` with WHOOP's API, OAuth and the /_sandbox admin paths."""
    app = Flask(__name__)
    app.json = _WhoopJson(app)
    app.extensions["whoop_sandbox"] = sandbox
    app.before_request(_gate)
    app.after_request(_finish)
    app.register_error_handler(SandboxError, _sandbox_error)
    app.register_error_handler(HTTPException, _http_error)
    for blueprint in (api, oauth, admin):
        app.register_blueprint(blueprint)
    return app


def _sandbox() -> Sandbox:
    return cast(Sandbox, current_app.extensions["whoop_sandbox"])


def _error(status: int, error: str, description: str) -> Response:
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    return response


def _sandbox_error(exc: SandboxError) -> Response:
    return _error(exc.status, exc.error, exc.description)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    name = (exc.name or "error").lower().replace(" ", "_")
    return _error(status, name, exc.description or name)


def _gate() -> ResponseReturnValue | None:
    """Rate limit, faults and bearer auth, in WHOOP's order, before any API view runs."""
    sandbox = _sandbox()
    path = request.path
    agent = request.headers.get("User-Agent", "")
    if agent.startswith(DEFAULT_AGENTS) and (path == TOKEN_PATH or path.startswith(API_PREFIX)):
        sandbox.note_default_agent()
        if sandbox.refuse_default_agents:
            return Response(_GATEWAY_PAGE.format(status=403), status=403, mimetype="text/html")
    if path.startswith(OAUTH_PREFIX + "/"):
        if path == TOKEN_PATH:
            sandbox.note_token_request()
        return _fault(sandbox, sandbox.take_fault((path,)))
    if not path.startswith(API_PREFIX + "/"):
        return None
    relative = path.removeprefix(API_PREFIX)
    g.api_path = relative
    sandbox.note_api_request(relative)
    allowed, g.rate_headers = sandbox.hit_rate_limit()
    if not allowed:
        return _error(429, "rate_limited", "too many requests for this app; see X-RateLimit-Reset")
    faulted = _fault(sandbox, sandbox.take_fault((path, relative)))
    if faulted is not None:
        return faulted
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    grant = sandbox.authenticate(token.strip()) if scheme.lower() == "bearer" else None
    if grant is None:
        return _error(401, "unauthorized", "missing, unknown, expired or revoked access token")
    g.grant = grant
    sandbox.note_member_request(grant.member, relative)
    return None


def _finish(response: Response) -> Response:
    if "api_path" in g:
        for name, value in g.get("rate_headers", {}).items():
            response.headers.setdefault(name, value)
        _sandbox().note_api_status(response.status_code)
        _sandbox().answered(g.api_path)
    if g.get("trickle"):
        body = response.get_data()
        response.response = _trickled(body, _sandbox().trickle_interval)
        response.headers["Content-Length"] = str(len(body))
    return response


def _trickled(body: bytes, interval: float) -> Iterator[bytes]:
    """The body a byte at a time; werkzeug writes (and flushes) each one as it comes."""
    for index in range(len(body)):
        if index:
            time.sleep(interval)
        yield body[index : index + 1]


def _fault(sandbox: Sandbox, kind: str | None) -> Response | None:
    """The response for an injected fault, or None to carry on (after any stall)."""
    if kind is None:
        return None
    # werkzeug drains an unread request body before closing, which would stall a "reset"
    # until the client gives up; reading it now keeps every fault prompt.
    request.get_data()
    if kind == "timeout":
        time.sleep(sandbox.fault_delay)
        return None
    if kind == "no_refresh_token":
        g.omit_refresh_token = True
        return None
    if kind == "trickle":
        g.trickle = True
        return None
    if kind in PAGE_FAULTS:
        g.page_fault = kind
        return None
    if kind == "reset":
        return Response(_broken_body(), mimetype="application/json")
    if kind == "garbage":
        return Response(_GARBAGE, mimetype="text/html")
    if kind in ("gateway_404", "gateway_403"):
        status = int(kind.removeprefix("gateway_"))
        return Response(_GATEWAY_PAGE.format(status=status), status=status, mimetype="text/html")
    response = _error(int(kind), _FAULT_ERRORS[kind], "injected sandbox fault")
    if kind == "429":
        response.headers.update(sandbox.exhausted_rate_headers())
    return response


_GATEWAY_PAGE = (
    "<!DOCTYPE html><html><head><title>{status} ERROR</title></head><body><h1>{status} ERROR"
    "</h1><p>The request could not be satisfied.</p><hr>Generated by the gateway</body></html>"
)


def _broken_body() -> Iterator[bytes]:
    """Sends the headers and a first chunk, then drops the connection (werkzeug closes it)."""
    yield b'{"records": ['
    raise ConnectionResetError("sandbox fault: connection reset mid-response")


def _member(scope: str | None) -> str:
    grant = cast(Grant, g.grant)
    if scope is not None and scope not in grant.scopes:
        raise SandboxError(403, "insufficient_scope", f"this endpoint requires the {scope} scope")
    return grant.member


def _found(record: dict[str, Any] | None) -> dict[str, Any]:
    if record is None:
        raise SandboxError(404, "not_found", "no such record for this member")
    return record


@api.get("/v2/user/profile/basic")
def _profile() -> ResponseReturnValue:
    return _sandbox().member(_member("read:profile")).profile()


@api.get("/v2/user/measurement/body")
def _body_measurement() -> ResponseReturnValue:
    return _sandbox().member(_member("read:body_measurement")).body()


@api.delete("/v2/user/access")
def _revoke_access() -> ResponseReturnValue:
    _sandbox().revoke(_member(None))
    return "", 204


@api.get("/v2/cycle")
def _cycles() -> ResponseReturnValue:
    return _collection("cycle", "read:cycles")


@api.get("/v2/recovery")
def _recoveries() -> ResponseReturnValue:
    return _collection("recovery", "read:recovery")


@api.get("/v2/activity/sleep")
def _sleeps() -> ResponseReturnValue:
    return _collection("sleep", "read:sleep")


@api.get("/v2/activity/workout")
def _workouts() -> ResponseReturnValue:
    return _collection("workout", "read:workout")


@api.get("/v2/cycle/<cycle_id>")
def _cycle(cycle_id: str) -> ResponseReturnValue:
    key = _member("read:cycles")
    return _found(_sandbox().find(key, "cycle", str(_cycle_id(cycle_id))))


@api.get("/v2/cycle/<cycle_id>/recovery")
def _cycle_recovery(cycle_id: str) -> ResponseReturnValue:
    key = _member("read:recovery")
    return _found(_sandbox().of_cycle(key, "recovery", _cycle_id(cycle_id)))


@api.get("/v2/cycle/<cycle_id>/sleep")
def _cycle_sleep(cycle_id: str) -> ResponseReturnValue:
    key = _member("read:sleep")
    return _found(_sandbox().of_cycle(key, "sleep", _cycle_id(cycle_id)))


@api.get("/v2/activity/sleep/<sleep_id>")
def _sleep(sleep_id: str) -> ResponseReturnValue:
    key = _member("read:sleep")
    return _found(_sandbox().find(key, "sleep", _uuid(sleep_id, "sleepId")))


@api.get("/v2/activity/sleep/<sleep_id>/stream")
def _sleep_stream(sleep_id: str) -> ResponseReturnValue:
    key = _member("read:sleep")
    sandbox = _sandbox()
    record_id = _uuid(sleep_id, "sleepId")
    types = [kind for value in request.args.getlist("types") for kind in value.split(",") if kind]
    unknown = sorted(set(types) - set(SIGNAL_FIELDS))
    if unknown:
        raise SandboxError(400, "bad_request", f"unknown types: {', '.join(unknown)}")
    if key in sandbox.deactivated:
        raise SandboxError(403, "deactivated_user", "the member's membership is inactive")
    sleep = _found(sandbox.find(key, "sleep", record_id))
    return signal_stream(sleep, types or list(SIGNAL_FIELDS), sandbox.signal_interval)


@api.get("/v2/activity/workout/<workout_id>")
def _workout(workout_id: str) -> ResponseReturnValue:
    key = _member("read:workout")
    return _found(_sandbox().find(key, "workout", _uuid(workout_id, "workoutId")))


def _cycle_id(text: str) -> int:
    if not text.isdigit():
        raise SandboxError(400, "bad_request", "cycleId must be an integer")
    return int(text)


def _uuid(text: str, name: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise SandboxError(400, "bad_request", f"{name} must be a UUID") from None


def _collection(kind: Kind, scope: str) -> ResponseReturnValue:
    """A page of records newest first, continued by an opaque keyset cursor."""
    key = _member(scope)
    limit = _limit(request.args.get("limit"))
    start = _moment("start")
    end = _moment("end")
    before = None
    token = request.args.get("nextToken")
    if token:
        token_kind, before, token_start, token_end = _decode_cursor(token)
        if token_kind != kind:
            raise SandboxError(400, "bad_request", "nextToken belongs to another collection")
        if (token_start, token_end) != (start, end):
            raise SandboxError(
                400, "bad_request", "start/end must be resent unchanged with nextToken"
            )
    records, last = _sandbox().page(key, kind, start=start, end=end, limit=limit, before=before)
    page: dict[str, Any] = {"records": records}
    if last is not None:
        page["next_token"] = _encode_cursor(kind, last, start, end)
    fault = g.get("page_fault")
    if fault is not None:
        _spoil(page, fault, kind, before or _TOP, start, end)
    return page


_TOP: Key = (2**62, "")
"""A cursor position above every record: the first page."""


def _spoil(
    page: dict[str, Any], fault: str, kind: Kind, here: Key, start: int | None, end: int | None
) -> None:
    """Apply a page fault to a collection page, in place."""
    records: list[dict[str, Any]] = page["records"]
    again = _encode_cursor(kind, here, start, end, salt=secrets.token_hex(4))
    if fault == "empty_page":
        page["records"] = []
        page["next_token"] = again
    elif fault == "endless_tokens":
        page["next_token"] = again
    elif fault == "no_records":
        del page["records"]
    elif fault == "null_records":
        page["records"] = None
    elif fault == "object_records":
        page["records"] = {str(index): record for index, record in enumerate(records)}
    elif records:
        record = records[min(2, len(records) - 1)]
        key = "id" if "id" in record else "cycle_id"
        moment = "start" if "start" in record else "created_at"
        if fault == "null_id":
            record[key] = None
        else:
            record[moment] = None if fault == "null_start" else "yesterday evening"


def _limit(text: str | None) -> int:
    if text is None:
        return 10
    if not text.isdigit() or not 1 <= int(text) <= 25:
        raise SandboxError(400, "bad_request", "limit must be an integer from 1 to 25")
    return int(text)


def _moment(name: str) -> int | None:
    """An ISO 8601 date-time query parameter as epoch ms; without an offset it means UTC."""
    text = request.args.get(name)
    if text is None:
        return None
    try:
        return to_ms(parse_moment(text))
    except ValueError:
        raise SandboxError(400, "bad_request", f"{name} must be an ISO 8601 date-time") from None


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date-time (UTC when it has no offset); ValueError otherwise."""
    try:
        parsed = pendulum.parse(text, exact=True)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date-time: {text!r}") from None
    if not isinstance(parsed, datetime):
        raise ValueError(f"not an ISO 8601 date-time: {text!r}")
    return parsed


def _encode_cursor(
    kind: Kind, last: Key, start: int | None, end: int | None, salt: str | None = None
) -> str:
    """An opaque cursor; a salt makes a new token for the same position (page faults)."""
    fields: list[Any] = [kind, last[0], last[1], start, end]
    if salt is not None:
        fields.append(salt)
    raw = json.dumps(fields, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[str, Key, int | None, int | None]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        fields = json.loads(raw)
        if isinstance(fields, list) and len(fields) == 6 and isinstance(fields[5], str):
            fields = fields[:5]
        kind, last_start, last_id, start, end = fields
    except (binascii.Error, ValueError, TypeError):
        raise SandboxError(400, "bad_request", "nextToken is malformed") from None
    optional = (type(None), int)
    if not (
        isinstance(kind, str)
        and type(last_start) is int
        and isinstance(last_id, str)
        and type(start) in optional
        and type(end) in optional
    ):
        raise SandboxError(400, "bad_request", "nextToken is malformed")
    return kind, (last_start, last_id), start, end


@oauth.get("/auth")
def _authorize() -> ResponseReturnValue:
    return redirect(_sandbox().authorize(request.args), code=302)


@oauth.post("/token")
def _token() -> ResponseReturnValue:
    omit = bool(g.get("omit_refresh_token", False))
    body = _sandbox().token_request(request.form, omit_refresh_token=omit)
    return body, 200, {"Cache-Control": "no-store"}


def _admin_json() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise SandboxError(400, "bad_request", "expected a JSON object")
    return body


@admin.post("/advance")
def _advance() -> ResponseReturnValue:
    body = _admin_json()
    amounts: dict[str, float] = {}
    for unit in ("days", "hours", "minutes", "seconds"):
        value = body.get(unit, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise SandboxError(400, "bad_request", f"{unit} must be a non-negative number")
        amounts[unit] = value
    now = _sandbox().advance(**amounts)
    return {"now": iso(to_ms(now))}


@admin.get("/clock")
def _clock() -> ResponseReturnValue:
    return {"now": iso(to_ms(_sandbox().now))}


@admin.get("/stats")
def _stats() -> ResponseReturnValue:
    return _sandbox().stats()


@admin.post("/stats/reset")
def _reset_stats() -> ResponseReturnValue:
    _sandbox().reset_stats()
    return _sandbox().stats()


@admin.post("/faults")
def _add_fault() -> ResponseReturnValue:
    body = _admin_json()
    path, kind, times = body.get("path"), body.get("kind"), body.get("times", 1)
    if not isinstance(path, str) or not isinstance(kind, str | int) or type(times) is not int:
        raise SandboxError(400, "bad_request", "expected {path: str, kind: str, times: int}")
    try:
        _sandbox().inject_fault(path, str(kind), times)
    except ValueError as exc:
        raise SandboxError(400, "bad_request", str(exc)) from None
    return {"path": path, "kind": str(kind), "times": times}, 201


@admin.delete("/faults")
def _clear_faults() -> ResponseReturnValue:
    _sandbox().clear_faults()
    return "", 204


@admin.get("/members")
def _members() -> ResponseReturnValue:
    return [
        {"key": m.key, "user_id": m.user_id, "seed_refresh_token": seed_token(m.key)}
        for m in _sandbox().members
    ]


@admin.post("/members")
def _add_member() -> ResponseReturnValue:
    body = _admin_json()
    key, days = body.get("key"), body.get("history_days", 90)
    if not isinstance(key, str):
        raise SandboxError(400, "bad_request", "expected {key: str, history_days: int}")
    try:
        member = _sandbox().add_member(key, days)
    except ValueError as exc:
        raise SandboxError(400, "bad_request", str(exc)) from None
    return {"key": key, "user_id": member.user_id, "seed_refresh_token": seed_token(key)}, 201


@admin.post("/members/<key>/deactivate")
def _deactivate(key: str) -> ResponseReturnValue:
    """`{"deactivated": false}` reactivates; the sleep signals answer 403 meanwhile."""
    sandbox = _sandbox()
    try:
        sandbox.member(key)
    except KeyError as exc:
        raise SandboxError(404, "not_found", str(exc.args[0])) from None
    if _admin_json().get("deactivated", True):
        sandbox.deactivated.add(key)
    else:
        sandbox.deactivated.discard(key)
    return {"key": key, "deactivated": key in sandbox.deactivated}


@admin.post("/members/<key>/refresh_token")
def _member_refresh_token(key: str) -> ResponseReturnValue:
    scopes = _admin_json().get("scopes", ALL_SCOPES)
    if not isinstance(scopes, list | tuple) or not all(isinstance(s, str) for s in scopes):
        raise SandboxError(400, "bad_request", "scopes must be a list of strings")
    try:
        return {"refresh_token": _sandbox().issue_refresh_token(key, scopes)}
    except KeyError:
        raise SandboxError(404, "not_found", f"unknown member {key!r}") from None
    except ValueError as exc:
        raise SandboxError(400, "invalid_scope", str(exc)) from None


@admin.get("/webhooks")
def _webhook_settings() -> ResponseReturnValue:
    return _sandbox().webhook_settings()


@admin.post("/webhooks")
def _configure_webhooks() -> ResponseReturnValue:
    try:
        return _sandbox().configure_webhooks(**_admin_json())
    except ValueError as exc:
        raise SandboxError(400, "bad_request", str(exc)) from None


@admin.get("/webhooks/log")
def _webhook_log() -> ResponseReturnValue:
    return _sandbox().webhook_log()


@admin.delete("/webhooks/log")
def _clear_webhook_log() -> ResponseReturnValue:
    _sandbox().clear_webhook_log()
    return "", 204


@admin.post("/members/<key>/<kind>/<record_id>/delete")
def _delete_record(key: str, kind: str, record_id: str) -> ResponseReturnValue:
    return {"changes": _change_record(key, kind, record_id, None)}


@admin.post("/members/<key>/<kind>/<record_id>/edit")
def _edit_record(key: str, kind: str, record_id: str) -> ResponseReturnValue:
    return _change_record(key, kind, record_id, _admin_json())


def _change_record(key: str, kind: str, record_id: str, changes: dict[str, Any] | None) -> Any:
    """Delete (`changes` None) or edit a record for the admin API, with its 400s and 404s."""
    sandbox = _sandbox()
    if kind in ("sleep", "workout"):
        record_id = _uuid(record_id, f"{kind} id")
    try:
        if changes is None:
            return sandbox.delete_record(key, cast(Kind, kind), record_id)
        return sandbox.edit_record(key, cast(Kind, kind), record_id, changes)
    except KeyError as exc:
        raise SandboxError(404, "not_found", str(exc.args[0])) from None
    except ValueError as exc:
        raise SandboxError(400, "bad_request", str(exc)) from None
