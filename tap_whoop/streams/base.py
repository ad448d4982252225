"""What every WHOOP stream does alike: the SDK's hooks, pages, record checks, bookmarks."""

from __future__ import annotations

import datetime
import decimal
import logging
import math
import sys
import time
import typing as t
from functools import cached_property
from urllib.parse import urlparse

import pendulum
import requests
from singer_sdk import RESTStream
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.helpers.jsonpath import extract_jsonpath
from singer_sdk.pagination import BaseAPIPaginator

from tap_whoop import USER_AGENT, clock
from tap_whoop.deadline import with_deadlines
from tap_whoop.errors import BadDataError, MemberError, StreamUnavailableError, TapWhoopError
from tap_whoop.http import (
    BACKOFF_BASE_SECONDS,
    RETRIABLE,
    MemberBearer,
    classify,
    jitter,
    json_body,
    log_retry,
    wait_generator,
)
from tap_whoop.proxies import with_environment_proxies
from tap_whoop.settings import Settings, parse_time
from tap_whoop.stop import STOP
from tap_whoop.stores.inbox import LedgerRow

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable

    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context

    from tap_whoop.http import MemberClient
    from tap_whoop.oauth.member import MemberAuth
    from tap_whoop.progress import Progress
    from tap_whoop.run import Member, Run

PAGE_SIZE = 25
WHOOP_EPOCH = datetime.datetime(2012, 1, 1, tzinfo=datetime.timezone.utc)
"""Before any WHOOP record: where a window without a start begins, for bounding its pages."""
PAGE_SLACK = 5
"""Pages a collection may take beyond what its window can hold, for empty or short pages."""
MAX_EMPTY_PAGES_IN_A_ROW = 10

logger = logging.getLogger("tap-whoop")

#: Failures the CLI renders as its one line (see `cli.main`).
RENDERED_FAILURES = (
    TapWhoopError,
    FatalAPIError,
    RetriableAPIError,
    requests.exceptions.RequestException,
    BrokenPipeError,
)


FAILING_IN_A_ROW_ENDS_THE_RUN = 3
"""Member streams in a row whose endpoint keeps failing before the run stops: WHOOP is down."""


class _BadData(Exception):
    """What is wrong with an answer; `WhoopStream.get_records` names the member and stream."""


def bad_data(problem: str) -> Exception:
    """What is wrong with an answer, for `WhoopStream.get_records` to name member and stream."""
    return _BadData(problem)


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
        budget: Callable[[], str | None] | None = None,
    ) -> None:
        super().__init__(None)
        self.max_pages = max_pages
        self._key = key
        self._budget = budget
        #: What stopped the walk before WHOOP's last page (see `Progress.admits`), if anything did.
        self.stopped_by: str | None = None
        self._seen: set[str] = set()
        self._previous: set[t.Hashable] = set()
        self._empty_in_a_row = 0

    def continue_if_empty(self, response: requests.Response) -> bool:
        """An empty page may still carry a token: `get_next` decides whether there is more."""
        return True

    def check_page(self, response: requests.Response, records: list[t.Any]) -> None:
        """Refuse a page that repeats the previous page's records, before any is delivered.

        Only the previous page is kept, so memory stays flat over any history; a walk that
        cycles through more pages is stopped by `max_pages`.
        """
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
        if json_body(response).get("next_token") in self._seen:
            return  # a repeated token: `get_next` stops the walk with its own error
        keys = {self._key(record) for record in records}
        if keys <= self._previous:
            raise _BadData(
                f"WHOOP answered page {self._page_count + 1} of {path} with only records of "
                "earlier pages, under a new page token; stopped paging instead of looping"
            )
        self._previous = keys

    def get_next(self, response: requests.Response) -> str | None:
        """Read the next page's token, refusing to walk in circles or without end."""
        path = urlparse(response.url).path
        token = json_body(response).get("next_token") or None
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
        if self._budget is not None and (limit := self._budget()):
            self.stopped_by = limit
            return None
        return token


def is_final(record: dict[str, t.Any]) -> bool:
    """WHOOP may still change a record that has no `end` yet or whose score is pending."""
    return record.get("score_state") != "PENDING_SCORE" and (
        "start" not in record or bool(record.get("end"))
    )


class WhoopStream(RESTStream[str | None]):
    """A WHOOP v2 endpoint, requested on behalf of one member at a time.

    The run's services come in through the constructor; every request goes through the policy
    of `http.py`, applied at the SDK's hooks.
    """

    records_jsonpath = "$"
    scope: str = ""
    #: Records pass through as WHOOP sends them: they are JSON already, and the SDK's walk
    #: through each (`score`, its stage and zone summaries) was a fifth of a sync's CPU. A field
    #: WHOOP adds is passed on rather than dropped; the schema still names the columns.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE
    #: 404 means "nothing here yet" (per-cycle endpoints) rather than an error.
    missing_is_empty = False
    backoff_base_seconds = BACKOFF_BASE_SECONDS
    _schema_written = False

    def __init__(self, tap: Tap, run: Run, progress: Progress) -> None:
        self.run = run
        self.progress = progress
        super().__init__(tap=tap)

    def write_schema_first(self) -> None:
        """This stream's SCHEMA before any record, so that the loader creates its table now.

        A run or a shard with no member, or no record, for the stream still leaves its table in
        the warehouse; workers started together later find it there instead of racing to
        create it (target-postgres creates tables without a lock).
        """
        if self.selected:
            self._write_schema_message()
            self._schema_written = True

    @property
    def settings(self) -> Settings:
        """The run's typed settings (the SDK's `config` is their raw form)."""
        return self.run.settings

    @property
    def url_base(self) -> str:
        """The API root; pointing it elsewhere is how the sandbox is used."""
        return self.run.api_url

    @property
    def timeout(self) -> float:  # type: ignore[override]
        """Seconds one attempt may take in all, from connecting to the last byte of the body."""
        return self.settings.request_timeout

    @property
    def user_agent(self) -> str:
        """The tap's name, version and home (the SDK's default names the SDK)."""
        return USER_AGENT

    @property
    def requests_session(self) -> requests.Session:
        """A session with a deadline per attempt, and the environment's proxy read once."""
        return with_environment_proxies(with_deadlines(super().requests_session), self.url_base)

    def build_prepared_request(self, *args: t.Any, **kwargs: t.Any) -> requests.PreparedRequest:
        """The request without its bearer token, which each attempt gets after pacing.

        The SDK's own sets the token as it builds the request, before the pacer's wait, so a
        token could be refreshed for a request that then waits past its expiry.
        """
        request = requests.Request(*args, **kwargs)
        request.headers.setdefault("User-Agent", self.user_agent)
        return self.requests_session.prepare_request(request)

    @cached_property
    def authenticator(self) -> MemberBearer:
        """The bearer token of the member whose partition is being synced."""
        return MemberBearer()

    def get_new_paginator(self) -> BaseAPIPaginator[str | None] | None:
        """Single-object endpoints have no pages."""
        return None

    def request_decorator(self, func: Callable[..., t.Any]) -> Callable[..., t.Any]:
        """Pace every attempt, inside the SDK's retry loop."""

        def paced(request: requests.PreparedRequest, context: Context | None) -> t.Any:
            STOP.in_backoff = False
            self.run.pacer.wait()
            return func(request, context)

        return super().request_decorator(paced)

    def validate_response(self, response: requests.Response) -> None:
        """Sort WHOOP's answers into retry, wait, skip and fail (see `http.classify`)."""
        self.run.pacer.observe(response)
        member = self.authenticator.member
        assert member is not None
        classify(response, member, self.scope, missing_is_empty=self.missing_is_empty)

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, t.Any]]:
        """Records of a page; nothing for a 404 that means "none yet"."""
        if response.status_code == 404:
            return []
        return extract_jsonpath(self.records_jsonpath, input=json_body(response))

    def backoff_wait_generator(self) -> Generator[float, t.Any, None]:
        """The policy's waits (`http.wait_generator`)."""
        return wait_generator(self.backoff_base_seconds)

    def backoff_jitter(self, value: float) -> float:
        """The policy's jitter (`http.jitter`)."""
        return jitter(value)

    def backoff_max_tries(self) -> int:
        """Attempts per request before the run fails with the last error."""
        return self.settings.max_request_attempts

    def backoff_handler(self, details: t.Any) -> None:
        """One line per retry, without request details that could hold secrets."""
        log_retry(self.name, details)

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """One member's records; a member's failure is reported at the end, not fatal.

        Whatever a failure interrupts keeps its bookmark: this stream's when it failed, or when
        the member or a drill-down of its records did meanwhile.
        """
        member = self.run.members.for_context(context)
        if member.skips(self.name):
            return
        self.authenticator.use(member.auth)
        try:
            for record in super().get_records(context):
                self.check_record(record, context)
                yield record
                if member.failure:
                    break
        except MemberError as exc:
            self.run.members.fail(member, self.name, exc)
        except RetriableAPIError as exc:  # the SDK's retries are spent
            self._endpoint_kept_failing(member, exc)
        except _BadData as exc:
            error = BadDataError(
                f"member {member.key!r}: stream {self.name}: {exc} (the stream stopped there "
                "and keeps its bookmark)"
            )
            self.run.members.fail(member, self.name, error)
        else:
            self.progress.endpoints_failing_in_a_row = 0
        if member.skips(self.name) or any(member.skips(child.name) for child in self.child_streams):
            self.get_context_state(context).pop("progress_markers", None)

    def _endpoint_kept_failing(self, member: Member, exc: RetriableAPIError) -> None:
        """One member's endpoint failing after every retry fails that stream alone.

        Several in a row, across members, mean WHOOP is failing everyone: the run ends there.
        """
        self.progress.endpoints_failing_in_a_row += 1
        if self.progress.endpoints_failing_in_a_row >= FAILING_IN_A_ROW_ENDS_THE_RUN:
            raise exc
        self.run.members.fail(
            member,
            self.name,
            StreamUnavailableError(
                f"member {member.key!r}: stream {self.name}: WHOOP kept failing after every "
                f"retry ({exc}); its bookmark is kept and the next run tries again"
            ),
        )

    def log(self, message: str, *args: t.Any, level: int = logging.INFO, **kwargs: t.Any) -> None:
        """The SDK's log; its "unhandled error" line is debug for a failure the CLI renders.

        A wrong secret, a store that cannot be written or a broken pipe ends the run with one
        line of the CLI's; the SDK's own line before it would only repeat it, less clearly.
        """
        if level >= logging.ERROR and isinstance(sys.exc_info()[1], RENDERED_FAILURES):
            level = logging.DEBUG
        super().log(message, *args, level=level, **kwargs)

    def probe_context(
        self, context: Context, found: t.Mapping[str, dict[str, t.Any] | None]
    ) -> Context | str:
        """The context of the request `--test` asks this stream for, or why there is none.

        `found` holds the first record each stream probed before this one returned.
        """
        return context

    def probe(self, context: Context, auth: MemberAuth) -> dict[str, t.Any] | None:
        """One request as `auth`'s member, through the sync's policy: its first record."""
        self.authenticator.use(auth)
        return next(iter(self.request_records(context)), None)

    def check_record(self, record: t.Any, context: Context | None) -> None:
        """Refuse a record without a usable primary key or replication key.

        Nothing with a null key may reach a target, and a bookmark must come from a date-time.
        """
        if not isinstance(record, dict):
            path = self.path_of(context)
            raise _BadData(f"WHOOP answered {path} with a record that is not a JSON object")
        for name in self.primary_keys or ():
            value = record[name] if name in record else (context or {}).get(name)
            if value is None or value == "" or isinstance(value, _NOT_KEYS):
                path = self.path_of(context)
                raise _BadData(f"WHOOP sent a record from {path} whose {name} is {_shown(value)}")
        if not self.replication_key:
            return
        value = record.get(self.replication_key)
        try:
            if not isinstance(value, str):
                raise TypeError(value)
            parse_time(value)
        except (TypeError, ValueError):
            described = f"a record from {self.path_of(context)}{_id_of(record, self.primary_keys)}"
            problem = (
                f"{value[:40]!r} is not a date-time"
                if isinstance(value, str)
                else f"is {_shown(value)}"
            )
            raise _BadData(
                f"WHOOP sent {described} whose {self.replication_key} {problem}"
            ) from None

    def post_process(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """The record with every top-level property of the schema, in the schema's order.

        WHOOP omits what it has not got (`score` before `SCORED`, the current cycle's `end`,
        optional ids); here such a field is `null`, so that stream maps, flattening and targets
        see the same keys on every record. A field the context supplies (the member's
        `user_id`) is taken from it, as the SDK would; fields outside the schema are kept.
        """
        return self.filled(row, context)

    def filled(self, row: dict[str, t.Any], context: Context | None) -> dict[str, t.Any]:
        """`row` with every top-level property of the schema (see `post_process`)."""
        context = context or {}
        return {**{name: context.get(name) for name in self.schema["properties"]}, **row}

    def deletion_record(self, user_id: int, record_id: str) -> dict[str, t.Any]:
        """A record of this stream saying WHOOP deleted `record_id`: its key, and when."""
        key = (self.primary_keys or ("id",))[0]
        typed: t.Any = int(record_id) if _is_integer(self.schema, key) else record_id
        return {
            **{name: None for name in self.schema["properties"]},
            key: typed,
            "user_id": user_id,
            "_sdc_deleted_at": now_iso(),
        }

    def emit_directly(self, record: dict[str, t.Any]) -> None:
        """Write a record outside the window's pages: it moves no bookmark, has no children."""
        if not self.selected:
            return
        if not self._schema_written:
            self._write_schema_message()
            self._schema_written = True
        self._write_record_message(record)

    def estimated_requests(self, days: float) -> int:
        """Requests a sync of one member's `days` of data takes: one, for a single object."""
        return 1

    def estimated_incremental_requests(self, days: float, new_days: float) -> int:
        """Requests of an incremental run whose window is `days`, `new_days` of them new."""
        return self.estimated_requests(days)

    @property
    def requests_per_record(self) -> int:
        """Requests this stream sends per record of its parent (the per-cycle streams: one)."""
        return 0

    def path_of(self, context: Context | None) -> str:
        """The endpoint's path, with the context's ids filled in where it names them."""
        try:
            return self.path.format(**(context or {}))
        except (KeyError, IndexError):
            return self.path


LEDGER_BATCH = 500
"""Emitted records noted in the ledger at a time: memory stays flat over any history."""
SECOND_LOOK_SECONDS = 2.0
"""Seconds between two looks at a record's endpoint before it is marked deleted: a one-off 404
(a gateway's, a replica behind) is not taken for a deletion."""
MAX_PENDING_HOLD = datetime.timedelta(days=14)
"""How far behind the newest record a pending score can hold the next window's start."""

_UNSORTED_MARKERS = {"Note": "Progress is not resumable if interrupted."}
"""The progress markers the SDK starts an unsorted stream's partition with."""

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


class CollectionStream(WhoopStream):
    """A paged WHOOP collection, synced incrementally on when records happened.

    WHOOP lists newest first and can only filter on when a record happened, so the bookmark is
    taken when a member's stream completes, each run re-reads `lookback_days` before it, and it
    never moves past a record that WHOOP may still change (see `post_process`). What an earlier
    run saw in the window and WHOOP no longer lists is emitted as deleted (`reconcile`).
    """

    records_jsonpath = "$.records[*]"
    replication_key = "start"
    #: One record by its key (`id`): where a deletion is confirmed.
    by_id_path: str
    #: How far WHOOP's start filter can trail the replication key of the same record.
    filter_lag = datetime.timedelta(0)
    #: More records than one member can have per day, generously; bounds a window's pages.
    max_records_per_day = 2
    #: Records a member typically has per day: what request estimates assume (`--test`).
    typical_records_per_day = 1.0
    #: Seconds between the two looks that confirm a record is gone.
    second_look_seconds = SECOND_LOOK_SECONDS
    _paginator: NextTokenPaginator | None = None
    _paging_context: Context | None = None
    _continuing = False
    _said_unsorted = False

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """One member's records, then deletion records for what WHOOP no longer has.

        The first pass of a run reads what is new since the bookmark; the second, history not
        read yet (a new member's, newest first, or the rest of one a budget stopped). A walk
        the run's budget stops keeps what it has not reached as `backfill_start` and
        `backfill_end` in the state, for the next run's second pass.

        WHOOP lists newest first, which the SDK calls unsorted: it keeps the bookmark in the
        partition's progress markers until the stream completes, and warns as it creates them.
        They are created here instead, as the SDK would, and that is said once, at debug level.
        """
        self._paging_context = context
        member = self.run.members.for_context(context)
        state = self.get_context_state(context)
        bookmark = state.get("replication_key_value")
        self._continuing = bookmark is not None and self.progress.phase == "backfill"
        if not self._takes_part(member.key, context):
            return
        start = self.window_start(context)
        held_end = state.get("backfill_end") if self._continuing else None
        expected = self.expected_ids(
            state, start, member.user_id, until=parse_time(held_end) if held_end else None
        )
        state.setdefault("progress_markers", dict(_UNSORTED_MARKERS))
        if not self._said_unsorted:
            self._said_unsorted = True
            self.logger.debug(
                "%s: WHOOP lists records newest first, so each member's bookmark is taken when "
                "the stream completes (an interrupted stream is read again next run)",
                self.name,
            )
        found: set[str] = set()
        recent: dict[str, str] = {}  # what the next window may re-read
        horizon: datetime.datetime | None = None
        past_horizon = False  # WHOOP lists newest first: older records need no date parsed
        last_key: str | None = None  # the oldest record so far, WHOOP listing newest first
        ledger: list[LedgerRow] = []
        try:
            for record in super().get_records(context):
                record_id = self.record_id(record)
                if record_id in expected:
                    found.add(record_id)
                last_key = record[self.replication_key or "start"]
                if not past_horizon:
                    moment = parse_time(last_key)
                    if horizon is None:
                        horizon = moment - self.lookback - self.filter_lag - MAX_PENDING_HOLD
                    if moment >= horizon:
                        recent[record_id] = last_key
                    else:
                        past_horizon = True
                ledger.append(self.ledger_row(record))
                if len(ledger) >= LEDGER_BATCH and member.user_id is not None:
                    self.run.inbox.remember(member.user_id, self.name, ledger)
                    ledger = []
                yield record
        finally:
            if member.user_id is not None:
                self.run.inbox.remember(member.user_id, self.name, ledger)
        if member.skips(self.name) or member.user_id is None:
            return
        stopped = self._paginator.stopped_by if self._paginator is not None else None
        reached = parse_time(last_key) if stopped and last_key else None
        self._keep_remainder(member.key, state, start, reached, stopped)
        gone = [
            record_id
            for record_id, key in expected.items()
            if record_id not in found and (reached is None or (key and parse_time(key) >= reached))
        ]
        try:
            unsettled = self.reconcile(member.key, member.user_id, gone) if gone else []
        except MemberError as exc:  # the member's alone: the others go on
            self.run.members.fail(member, self.name, exc)
            state.pop("progress_markers", None)  # the bookmark stays where it was
            return
        if self._continuing:  # the window's ids are the incremental pass's
            markers = state.setdefault("progress_markers", dict(_UNSORTED_MARKERS))
            markers.update(replication_key=self.replication_key, replication_key_value=bookmark)
            return
        kept = self.ids_to_keep(state, recent)
        kept += [[record_id, str(expected[record_id])] for record_id in unsettled]
        if reached is not None:  # the unread part of the window is still to be reconciled
            kept += [
                pair for pair in state.get("window_ids") or [] if parse_time(pair[1]) < reached
            ]
        state["window_ids"] = kept
        state["polled_at"] = now_iso()

    def reads_in_this_pass(self, context: Context | None) -> bool:
        """Whether this pass of the run has records of the member's to read.

        The first pass reads members with a bookmark; the second, members without one and the
        rest of a history a budget stopped.
        """
        state = self.get_context_state(context)
        bookmarked = read_before(state)
        if self.progress.phase == "incremental":
            return bookmarked
        if self.progress.phase == "backfill":
            return not bookmarked or bool(state.get("backfill_end"))
        return True

    def _takes_part(self, member_key: str, context: Context | None) -> bool:
        """Whether this pass reads the member's collection, noting history left for later."""
        state = self.get_context_state(context)
        if self.progress.phase == "incremental" and (
            not read_before(state) or state.get("backfill_end")
        ):
            self.progress.backfilling.add(member_key)
        if not self.reads_in_this_pass(context):
            return False
        if self.progress.phase == "backfill" and (limit := self.progress.admits(self.page_cost)):
            self.progress.backfill_left[member_key] = limit
            return False
        return True

    def _keep_remainder(
        self,
        member_key: str,
        state: dict[str, t.Any],
        start: datetime.datetime | None,
        reached: datetime.datetime | None,
        stopped: str | None,
    ) -> None:
        """Keep in the state what a stopped walk did not reach; forget it once read."""
        if stopped is None:
            if self._continuing:
                state.pop("backfill_start", None)
                state.pop("backfill_end", None)
            return
        self.progress.backfill_left[member_key] = stopped
        if self.progress.phase == "incremental":
            self.progress.deferred.setdefault(member_key, stopped)
        if reached is None:  # stopped before any record: what was left is left still
            return
        end = reached + datetime.timedelta(milliseconds=1)  # the oldest record's twins, too
        if state.get("backfill_end") and not self._continuing:
            end = max(end, parse_time(state["backfill_end"]))
            held = state.get("backfill_start")
            start = None if start is None or not held else min(start, parse_time(held))
        state["backfill_end"] = _iso(end)
        if start is not None:
            state["backfill_start"] = _iso(start)
        else:
            state.pop("backfill_start", None)

    @property
    def page_cost(self) -> int:
        """Requests a page takes: one, plus one per record for each per-cycle stream."""
        return 1 + PAGE_SIZE * sum(
            t.cast("WhoopStream", child).requests_per_record
            for child in self.child_streams
            if child.selected
        )

    @property
    def lookback(self) -> datetime.timedelta:
        """How far before the bookmark each incremental window opens (`lookback_days`)."""
        return datetime.timedelta(days=self.settings.lookback_days)

    def forget_in_window(self, user_id: int, record_id: str) -> None:
        """A deletion passed on: the next reconciliation need not confirm it again."""
        if (partition := self.partition_of(user_id)) and partition.get("window_ids"):
            partition["window_ids"] = [
                pair for pair in partition["window_ids"] if pair[0] != record_id
            ]

    def partition_of(self, user_id: int) -> dict[str, t.Any] | None:
        """The member's state partition of this stream, if the state has one."""
        for partition in self.stream_state.get("partitions") or []:
            if partition.get("context") == {"user_id": user_id}:
                return t.cast("dict[str, t.Any]", partition)
        return None

    def read_since(self, user_id: int, since: datetime.datetime) -> bool:
        """Whether the member's collection was read completely after `since`."""
        partition = self.partition_of(user_id)
        if not partition or not partition.get("replication_key_value"):
            return False
        try:
            return parse_time(str(partition.get("polled_at"))) >= since
        except ValueError:
            return False

    def expected_ids(
        self,
        state: dict[str, t.Any],
        start: datetime.datetime | None,
        user_id: int | None,
        until: datetime.datetime | None = None,
    ) -> dict[str, str | None]:
        """Records this window must return again unless WHOOP deleted them, with their keys.

        After an incremental run, those the last run kept in the state (`window_ids`) that fall
        inside this window; on a first or full sync, every record the ledger holds for the
        member from `start_date` on; for the rest of a history a budget stopped, those the
        ledger holds before `until` (where the walk stopped), so a full refresh split over
        several runs compares every part. WHOOP filters recoveries on their sleep's start,
        which trails the bookmark by up to `filter_lag`: twice that is left unchecked.
        """
        if user_id is None:
            return {}
        if state.get("replication_key_value") and until is None:
            candidates: dict[str, str | None] = dict(state.get("window_ids") or [])
        else:
            candidates = self.run.inbox.known(user_id, self.name)
            if not candidates:
                self.progress.warn_ledger_missing(
                    self.run.members.for_context({"user_id": user_id}).key, user_id
                )
        lowest = start + 2 * self.filter_lag if start is not None else None
        end = self.settings.end_date
        if until is not None:
            end = until if end is None else min(end, until)
        expected: dict[str, str | None] = {}
        for record_id, key in candidates.items():
            try:
                moment = parse_time(key) if key else None
            except ValueError:
                continue
            if moment is None or (lowest is not None and moment < lowest):
                continue
            if end is not None and moment >= end:
                continue
            expected[record_id] = key
        return expected

    def ids_to_keep(self, state: dict[str, t.Any], seen: dict[str, str]) -> list[list[str]]:
        """What the next run's window will re-read of this run's records: ids and keys.

        The next window opens at the bookmark (no later than the earliest record WHOOP may
        still change) minus the lookback, so the state holds days of records, not history.
        """
        if not seen:
            return []
        moments = {record_id: parse_time(key) for record_id, key in seen.items()}
        edge = max(moments.values())
        if signpost := state.get("replication_key_signpost"):
            edge = min(edge, parse_time(signpost))
        edge -= self.lookback + self.filter_lag
        return [[record_id, seen[record_id]] for record_id, at in moments.items() if at >= edge]

    def reconcile(self, member_key: str, user_id: int, gone: list[str]) -> list[str]:
        """Mark deleted what WHOOP no longer lists, once its own endpoint confirms it twice.

        Each record is looked up by id, and what WHOOP answers with its JSON 404 is looked up
        again after `second_look_seconds`: only a second 404 marks it deleted. A record that is
        still there (its start was edited out of the window) is emitted as it now is. Returns
        what could not be settled (a look that failed): the next run looks again.
        """
        client = self.run.member_client(member_key)
        unsettled: list[str] = []
        absent = self._look(client, user_id, gone, unsettled)
        if absent:
            time.sleep(self.second_look_seconds)
            confirmed = self._look(client, user_id, absent, unsettled)
            unsettled += [record_id for record_id in absent if record_id not in confirmed]
            absent = confirmed
        for record_id in absent:
            self.emit_directly(self.deletion_record(user_id, record_id))
        if absent:
            self.progress.note_deleted(user_id, self.name, absent)
            self.logger.info(
                "%s: member %r: %d record(s) that WHOOP no longer has marked deleted",
                self.name,
                member_key,
                len(absent),
            )
        if unsettled:
            self.logger.warning(
                "%s: member %r: %d record(s) no longer listed could not be confirmed gone; the "
                "next run looks again",
                self.name,
                member_key,
                len(unsettled),
            )
        return unsettled

    def _look(
        self, client: MemberClient, user_id: int, record_ids: list[str], unsettled: list[str]
    ) -> list[str]:
        """Ids WHOOP answers with its JSON 404; what it still has is emitted as it is now."""
        absent = []
        for record_id in record_ids:
            try:
                record = client.find(self.by_id_path.format(id=record_id), self.scope)
            except (*RETRIABLE, FatalAPIError) as exc:
                self.logger.debug("%s: looking up %s failed: %s", self.name, record_id, exc)
                unsettled.append(record_id)
                continue
            if record is None:
                absent.append(record_id)
            elif isinstance(record, dict):
                self.emit_directly(self.filled(record, {"user_id": user_id}))
        return absent

    def record_id(self, record: dict[str, t.Any]) -> str:
        """The record's key in this stream, as text."""
        return str(record[(self.primary_keys or ("id",))[0]])

    def ledger_row(self, record: dict[str, t.Any]) -> LedgerRow:
        """What the ledger keeps of an emitted record."""
        key = record.get(self.replication_key or "start")
        return LedgerRow(self.record_id(record), key)

    def estimated_requests(self, days: float) -> int:
        """Pages of 25 for `days` of typical records (plus the window's `filter_lag`)."""
        days += self.filter_lag.total_seconds() / 86_400
        return max(1, math.ceil(days * self.typical_records_per_day / PAGE_SIZE))

    def window_days(self, context: Context | None) -> float | None:
        """Days from the window's start to its end (`end_date` or now); None without a start."""
        start = self.window_start(context)
        if start is None:
            return None
        return max((self.window_end() - start).total_seconds() / 86_400, 0)

    def window_end(self) -> datetime.datetime:
        """`end_date`, or now if sooner (or unset)."""
        end = clock.now()
        if (end_date := self.settings.end_date) is not None:
            end = min(end, end_date)
        return end

    def get_new_paginator(self) -> NextTokenPaginator:
        """WHOOP's `nextToken` pages, no more than the window can hold."""
        self._paginator = NextTokenPaginator(
            max_pages=self.max_pages(self._paging_context),
            key=self.record_key,
            budget=lambda: self.progress.admits(self.page_cost),
        )
        return self._paginator

    def max_pages(self, context: Context | None) -> int:
        """The most pages WHOOP can need for this window, generously.

        A window without a start reaches back to before WHOOP's first records; one without an
        end, to tomorrow.
        """
        start = self.window_start(context) or WHOOP_EPOCH
        end = clock.now() + datetime.timedelta(days=1)
        if (end_date := self.settings.end_date) is not None:
            end = min(end, end_date)
        days = max((end - start).total_seconds() / 86_400, 0) + 1
        return math.ceil(days * self.max_records_per_day / PAGE_SIZE) + PAGE_SLACK

    def record_key(self, record: dict[str, t.Any]) -> t.Hashable:
        """A record's primary key, to notice pages that repeat earlier ones."""
        return tuple(str(record.get(name)) for name in self.primary_keys or ())

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, t.Any]]:
        """The page's `records`, which must be a list; a page of repeats is refused."""
        if response.status_code == 404:
            return []
        body = json_body(response)
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
        if end := self.window_end_param(context):
            params["end"] = _iso(end)
        if next_page_token:
            params["nextToken"] = next_page_token
        return params

    def window_end_param(self, context: Context | None) -> datetime.datetime | None:
        """`end_date`; for history still to read, where the last walk stopped."""
        end = self.settings.end_date
        held = self.get_context_state(context).get("backfill_end")
        if self._continuing and held:
            end = parse_time(held) if end is None else min(end, parse_time(held))
        return end

    def window_start(self, context: Context | None) -> datetime.datetime | None:
        """`start_date` on a fresh state; afterwards the bookmark minus the lookback.

        For history still to read, where that walk began (`backfill_start`, or `start_date`).
        """
        if self._continuing:
            held = self.get_context_state(context).get("backfill_start")
            if held:
                return parse_time(held)
            return self.settings.start_date
        start = self.get_starting_timestamp(context)
        if start is None:
            return None
        if self.get_context_state(context).get("replication_key_value"):
            start -= self.lookback
            start -= self.filter_lag
            if (start_date := self.settings.start_date) is not None:
                start = max(start, start_date)
        return start

    def post_process(
        self, row: dict[str, t.Any], context: Context | None = None
    ) -> dict[str, t.Any] | None:
        """Hold the bookmark at the earliest record WHOOP may still change.

        The SDK caps a finished stream's bookmark at the state's signpost, so lowering the
        signpost to a pending record's key keeps the next run's window on that record.
        """
        row = t.cast(dict[str, t.Any], super().post_process(row, context))
        if not is_final(row) and self.replication_key:
            value = row[self.replication_key]
            held = self.get_context_state(context).get("replication_key_signpost")
            if held is None or parse_time(value) < parse_time(held):
                self.state_manager.write_replication_key_signpost(value, context=context)
        return row


def _is_integer(schema: dict[str, t.Any], name: str) -> bool:
    types = schema["properties"][name].get("type")
    return "integer" in (types if isinstance(types, list) else [types])


def _json_type(value: t.Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def read_before(state: dict[str, t.Any]) -> bool:
    """Whether a member's collection was read to its end before: it has no history to read.

    A bookmark says so; a collection with no records yet (a member who never logs a workout)
    has none, only the `polled_at` of the walk that found it empty. Without this, such a member
    would wait for a run's second pass, behind every history, on every run.
    """
    return state.get("replication_key_value") is not None or (
        state.get("polled_at") is not None and not state.get("backfill_end")
    )


def now_iso() -> str:
    """Now, as the state and deletion records write date-times."""
    return _iso(clock.now())


def _iso(value: t.Any) -> str:
    return t.cast(str, pendulum.instance(value).in_tz("UTC").format("YYYY-MM-DDTHH:mm:ss.SSS[Z]"))
