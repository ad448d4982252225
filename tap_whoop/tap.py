"""tap-whoop: the Singer tap, its streams and its run, on the SDK's public hooks."""

from __future__ import annotations

import copy
import datetime
import json
import logging
import sys
import typing as t
from functools import cached_property

import click
from singer_sdk import Tap
from singer_sdk.exceptions import ConfigValidationError, MappingError
from singer_sdk.helpers.capabilities import PluginCapabilities, TapCapabilities
from singer_sdk.tap_base import CliTestOptionValue

from tap_whoop import clock, cost, stop
from tap_whoop.check import check_credentials
from tap_whoop.errors import ConfigError, Invocation, QuotaExhaustedError
from tap_whoop.output import PacedStateWriter, SingerOutput
from tap_whoop.progress import Progress
from tap_whoop.run import DELETIONS_KEY, Run
from tap_whoop.settings import (
    CONFIG_SCHEMA,
    MAX_JSON_DEPTH,
    Settings,
    deeper_than,
    forgiven,
    parse_time,
    settings_errors,
    too_deep,
    unknown_settings,
    validated,
)
from tap_whoop.shapes import bookmark_problem, catalog_problem, state_problem
from tap_whoop.stop import STOP
from tap_whoop.streams.base import CollectionStream, WhoopStream
from tap_whoop.streams.endpoints import (
    STREAM_TYPES,
    CycleChildStream,
    ProfileStream,
    SleepSignalsStream,
)
from tap_whoop.webhooks.drain import WEBHOOKS_KEY, drain_inbox

if t.TYPE_CHECKING:
    from singer_sdk.helpers.capabilities import CapabilitiesEnum

logger = logging.getLogger("tap-whoop")

"""Seconds between STATE messages during a run; the last state is always written."""

#: Where the `tap-whoop` command leaves, for `invoke`, what its options said.
CONFIG_FILES = "tap_whoop.config_files"
DAY_SPENT_KEY = "whoop_daily_quota_spent_until"
"""The state's note of when WHOOP's daily window, found spent, resets (UTC)."""
TEST_REQUESTED = "tap_whoop.test"


class TapWhoop(Tap):
    """Singer tap for the WHOOP API v2."""

    name = "tap-whoop"
    #: What the tap does, as `--about` says it (README.md's Capabilities list; the Hub file's).
    #: Not the SDK's `activate-version`: the tap never sends ACTIVATE_VERSION, since a run
    #: rewrites only some rows of a full-table stream (profile and body measurement are re-read
    #: once a day, other shards' members not at all) and a target would drop the rest. Not
    #: `batch`: the SDK's batch files bypass the tap's record filter (a profile that was not
    #: re-read would be written as a row of nulls).
    capabilities: t.ClassVar[list[CapabilitiesEnum]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]
    #: msgspec's writer, without repeated SCHEMAs, deep copies of STATE, or a flush per record.
    message_writer_class = SingerOutput
    config_jsonschema = CONFIG_SCHEMA

    def __init__(
        self,
        *,
        config: dict[str, t.Any] | None = None,
        validate_config: bool = True,
        **kwargs: t.Any,
    ) -> None:
        """Read settings given as text, warn of unknown ones, refuse bad ones in one line.

        All before anything else (see `settings.forgiven` and `settings.validated`).
        """
        if isinstance(config, dict):
            schema = self.settings_schema()
            config = forgiven(config, schema)
            if validate_config:
                for warning in unknown_settings(config, schema["properties"]):
                    logger.warning("%s", warning)
                validated(copy.deepcopy(config))
        with stop.installed_after():
            super().__init__(config=config, validate_config=validate_config, **kwargs)
        if validate_config and (errors := settings_errors(self.config)):
            raise ConfigError(errors[0])
        if self.input_catalog is not None:
            self._check_catalog()

    @cached_property
    def paced_state_writer(self) -> PacedStateWriter:
        """The run's STATE messages, at most one per `STATE_INTERVAL_SECONDS`."""
        return PacedStateWriter(t.cast(SingerOutput, self.message_writer))

    @property
    def state_writer(self) -> PacedStateWriter:  # type: ignore[override]
        """Where the streams write STATE: paced, so that a thousand members cost linear time.

        The SDK writes the whole state after every member's partition of every stream; each
        message holds every member's bookmarks, so a run's output and CPU would grow with the
        square of the members.
        """
        return self.paced_state_writer

    @classmethod
    def settings_schema(cls) -> dict[str, t.Any]:
        """Every setting: the tap's own and the SDK's standard ones."""
        schema = copy.deepcopy(cls.config_jsonschema)
        cls.append_builtin_config(schema)
        return schema

    @cached_property
    def run(self) -> Run:
        """The services this run shares: app, token store, members, pacer, API root."""
        return Run(self.config)

    @cached_property
    def progress(self) -> Progress:
        """What this run has done so far, pass by pass; handed to every stream."""
        return Progress(self.run)

    def discover_streams(self) -> list[WhoopStream]:
        """Every WHOOP v2 endpoint; the drill-downs are not selected by default."""
        return [
            stream_type(tap=self, run=self.run, progress=self.progress)
            for stream_type in STREAM_TYPES
        ]

    def load_state(self, state: dict[str, t.Any]) -> None:
        """Refuse a bookmark that is no date-time before any request.

        Beside the bookmarks (all the SDK keeps), the tap's note of a spent day is kept.
        """
        if problem := bookmark_problem(state):
            raise ConfigError(problem)
        super().load_state(state)
        if isinstance(until := state.get(DAY_SPENT_KEY), str):
            self._notes[DAY_SPENT_KEY] = until
        if WEBHOOKS_KEY in state:
            self._notes[WEBHOOKS_KEY] = copy.deepcopy(state[WEBHOOKS_KEY])
        if isinstance(deleted := state.get(DELETIONS_KEY), dict):
            self._committed_deletions = copy.deepcopy(deleted)

    def _check_catalog(self) -> None:
        known = set(self.streams)
        unknown = sorted(set(t.cast(t.Any, self.input_catalog)) - known)
        if unknown:
            raise ConfigError(
                f"the catalog names unknown stream(s) {', '.join(unknown)}; tap-whoop has "
                f"{', '.join(sorted(known))}: regenerate it with `tap-whoop --discover`"
            )
        if self.streams["sleep_signals"].selected and not self.streams["sleep"].selected:
            raise ConfigError(
                "sleep_signals is read once per sleep that `sleep` syncs: select `sleep` too "
                "(without its bookmark every run would list the whole history again)"
            )
        cycles = self.streams["cycles"]
        for child in cycles.child_streams:
            if child.selected and not cycles.selected:
                raise ConfigError(
                    f"{child.name} is read once per cycle that `cycles` syncs: select `cycles` "
                    "too (without its bookmark every run would re-read the whole history, one "
                    "request per cycle)"
                )

    def _skip_per_cycle_streams(self) -> None:
        """Selected per-cycle streams are skipped unless `per_cycle_streams` asks for them.

        Meltano's default `*.*`, or a catalog a tool generates, selects every stream: a sync so
        selected must cost what the curated one does, not one request more per cycle.
        """
        skipped = [
            stream
            for stream in self.streams.values()
            if isinstance(stream, CycleChildStream) and stream.selected and not stream.enabled
        ]
        for stream in skipped:
            stream.selected = False
        if skipped:
            self.logger.info(
                "%s: selected, but not synced: they cost one request per cycle, and `recovery` "
                "and `sleep` carry the same records 25 to a request; set per_cycle_streams to "
                "true to sync them",
                " and ".join(stream.name for stream in skipped),
            )
        signals = t.cast("SleepSignalsStream", self.streams["sleep_signals"])
        if signals.selected and not signals.enabled:
            signals.selected = False
            self.logger.info(
                "sleep_signals: selected, but not synced: it costs one request per sleep; name "
                'the signals in sleep_signal_types (e.g. ["hr"]) to sync it'
            )

    def setup_mapper(self) -> None:
        """A stream map that cannot run fails here, in one line naming it, before any request."""
        try:
            super().setup_mapper()
        except ConfigValidationError as exc:  # flattening
            raise ConfigError("; ".join(exc.errors) or str(exc)) from None
        except (MappingError, NotImplementedError) as exc:
            raise ConfigError(
                f"stream_maps: {' '.join(str(exc).split())} (fix the stream map; see the "
                "Singer SDK's stream maps documentation)"
            ) from None

    def check_credentials(self, echo: t.Callable[[str], t.Any] = click.echo) -> None:
        """`--test`: every member's token refreshed and each selected stream's probe asked."""
        streams = [t.cast("WhoopStream", stream) for stream in self.streams.values()]
        profile = next(s for s in streams if isinstance(s, ProfileStream))
        others = [s for s in streams if s.selected and s is not profile]
        check_credentials(self.run, profile, others, echo)

    def sync_members(self) -> None:
        """Sync every member in two passes; fail at the end, naming what was not synced.

        The first pass reads every member's new records; the second, history not read yet (new
        members', newest first), with what the run's budget has left: `max_requests_per_run`
        and WHOOP's daily window. What a budget stops is resumed by the next run. One member's
        revoked authorization neither stops the others nor passes unnoticed by the scheduler:
        their data and state are delivered first.
        """
        self.run.check_members_have_tokens()
        _ = self.run.synced_before  # before any profile is read
        self._refuse_a_spent_day()
        self._skip_per_cycle_streams()
        for stream in self.streams.values():
            t.cast("WhoopStream", stream).write_schema_first()
        collections = {
            name: t.cast("CollectionStream", stream)
            for name, stream in self.streams.items()
            if isinstance(stream, CollectionStream)
        }
        writer = self.paced_state_writer
        selected = [t.cast("WhoopStream", s) for s in self.streams.values() if s.selected]
        self.progress.incremental_cost, self.progress.details_cost = cost.incremental(
            selected, self.run.settings.lookback_days
        )
        self._refuse_a_budget_below_one_member()
        self._forget_committed_deletions()
        try:
            drain_inbox(
                self.progress, collections, self._notes, lambda: writer.write_now(dict(self.state))
            )
            self._rest_members_between_reconciliations(list(collections.values()))
            self.progress.phase = "incremental"
            self.sync_all()
            if self.progress.backfilling and not STOP.requested:
                self._warn_of_a_history_the_budget_never_reaches()
                self.progress.phase = "backfill"
                self.progress.history_from = self.run.budget.sent
                self.sync_all()
        finally:
            self._remember_a_spent_day()
            writer.flush()
        if STOP.requested:
            raise STOP.error()
        self._report_budget()
        self.run.members.raise_for_problems()
        self._raise_if_deferred()

    @property
    def _notes(self) -> dict[str, t.Any]:
        """The state beside its bookmarks: what the tap keeps for its next run."""
        return t.cast("dict[str, t.Any]", self.state)

    _committed_deletions: t.Any = None

    def _refuse_a_budget_below_one_member(self) -> None:
        """A `max_requests_per_run` below one member's incremental run: no run could end well."""
        cap = self.run.settings.max_requests_per_run
        least = self.progress.incremental_cost + self.progress.details_cost
        if cap is not None and cap < self.progress.incremental_cost:
            raise ConfigError(
                f"max_requests_per_run ({cap}) is below one member's incremental run (about "
                f"{self.progress.incremental_cost} requests, {least} with the profile and body "
                f"measurement): every run would stop with nothing synced; set it to at least "
                f"{least} per member this process syncs, or remove it"
            )

    def _warn_of_a_history_the_budget_never_reaches(self) -> None:
        """`max_requests_per_run` spent on new records alone: the history would never be read."""
        cap = self.run.settings.max_requests_per_run
        if cap is None or self.progress.admits(1) != "run":
            return
        members = len(self.run.members)
        needed = members * (self.progress.incremental_cost + self.progress.details_cost) + 1
        logger.warning(
            "max_requests_per_run (%s) is spent on %d member(s)' new records, leaving nothing for "
            "the history of %d member(s): it is never read at this budget; set it above %d "
            "(each request more reads history faster)",
            cap,
            members,
            len(self.progress.backfilling),
            needed - 1,
        )

    def _forget_committed_deletions(self) -> None:
        """The ledger forgets the deletions a target committed: the incoming state names them.

        This run's own deletions go into its state, for the next run to do the same. Forgotten
        earlier, a deletion the target lost could never be found again.
        """
        committed = self._committed_deletions or {}
        if committed and self.run.inbox.exists():
            for user_id, streams in committed.items():
                for stream, record_ids in (streams if isinstance(streams, dict) else {}).items():
                    if str(user_id).isdigit() and isinstance(record_ids, list):
                        self.run.inbox.forget(int(user_id), stream, map(str, record_ids))
        self._notes.pop(DELETIONS_KEY, None)
        self.progress.notes = self._notes

    def _refuse_a_spent_day(self) -> None:
        """Stop before any request when an earlier run found WHOOP's day spent until later.

        Each run would otherwise spend requests of the app's reserve only to learn it again,
        and enough runs in one day would reach WHOOP's 429.
        """
        until = self._notes.get(DAY_SPENT_KEY)
        if not isinstance(until, str):
            return
        try:
            resume = parse_time(until)
        except ValueError:
            return
        now = datetime.datetime.now(datetime.timezone.utc)
        if resume <= now:
            return
        seconds = (resume - now).total_seconds()
        raise QuotaExhaustedError(
            "WHOOP's daily request quota for this app was nearly spent when an earlier run "
            f"stopped; no request sent, state kept, resume after {resume:%Y-%m-%d %H:%M} UTC "
            f"(in {seconds / 3600:.1f} h)"
        )

    def _remember_a_spent_day(self) -> None:
        """Keep in the state until when WHOOP's day is spent, if this run found it so."""
        self._notes.pop(DAY_SPENT_KEY, None)
        stopped = {*self.progress.deferred.values(), *self.progress.backfill_left.values()}
        left, limit = self.run.budget.room()
        seconds = self.run.budget.daily_resume_in()
        if seconds > 0 and ("day" in stopped or (limit == "day" and left <= 0)):
            now = datetime.datetime.now(datetime.timezone.utc)
            resume = now + datetime.timedelta(seconds=seconds)
            self._notes[DAY_SPENT_KEY] = resume.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _report_budget(self) -> None:
        if left := self.progress.backfill_left:
            self.logger.info(
                "history still to read for %d member(s) (%s): the next run continues it, newest "
                "first, after every member's new records",
                len(left),
                _limits(set(left.values()), self.run.settings),
            )

    def _raise_if_deferred(self) -> None:
        """Exit 75 when the budget left members unsynced, or WHOOP's day stopped history."""
        deferred = self.progress.deferred
        day_stopped = "day" in deferred.values() or "day" in self.progress.backfill_left.values()
        if not deferred and not day_stopped:
            return
        what = (
            f"{len(deferred)} of {len(self.run.members)} member(s) not synced this run (their "
            "bookmarks are kept)"
            if deferred
            else f"history of {len(self.progress.backfill_left)} member(s) still to read"
        )
        limits = set(deferred.values()) | ({"day"} if day_stopped else set())
        resume = "run again"
        if "day" in limits:
            seconds = self.run.budget.daily_resume_in()
            at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
            resume = f"resume after {at:%Y-%m-%d %H:%M} UTC (in {seconds / 3600:.1f} h)"
        raise QuotaExhaustedError(
            f"{_limits(limits, self.run.settings)}: {what}; state was saved, {resume}"
        )

    def _rest_members_between_reconciliations(self, collections: list[CollectionStream]) -> None:
        """While webhooks arrive, a member's collections are read every reconcile interval only.

        The events keep sleeps, workouts and recoveries fresh (and, through them, the recent
        cycles); the reads catch missed events and late strap syncs. A member rests when every
        selected collection was read completely within the interval.
        """
        interval = self.run.reconcile_interval
        if not interval or not self.run.webhooks_flowing:
            return
        user_ids = self.run.members.known_user_ids()
        since = clock.now() - datetime.timedelta(seconds=interval)
        selected = [stream for stream in collections if stream.selected]
        for member in self.run.members:
            user_id = user_ids.get(member.key)
            if (
                user_id is not None
                and member.key not in self.progress.must_reconcile
                and all(stream.read_since(user_id, since) for stream in selected)
            ):
                self.progress.resting.add(member.key)
        if self.progress.resting:
            self.logger.info(
                "webhooks arrive: %d of %d member(s) rest until their next reconciliation "
                "(reconcile_interval_hours=%g)",
                len(self.progress.resting),
                len(self.run.members),
                interval / 3600,
            )

    @classmethod
    def cb_config(cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]) -> t.Any:
        """A missing or malformed config file is a usage error: one line, not a traceback.

        The files are kept, so that a fix can be printed as a command with them.
        """
        ctx.meta[CONFIG_FILES] = tuple(value)
        try:
            return super().cb_config(ctx, param, value)
        except RecursionError:
            files = " ".join(path for path in value if path != "ENV")
            message = too_deep(files, "a tap config")
        except (OSError, ValueError, TypeError) as exc:
            message = str(exc).splitlines()[0]
        raise click.BadParameter(message, ctx=ctx, param=param)

    @classmethod
    def cb_test(cls, ctx: click.Context, param: click.Option, value: str) -> None:
        """`--test` checks credentials (in `invoke`, once `--catalog` is read, wherever given)."""
        if value == CliTestOptionValue.All.value:
            ctx.meta[TEST_REQUESTED] = True
            return
        super().cb_test(ctx, param, value)

    @classmethod
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: t.Any = None,
        state: t.IO[str] | None = None,
        catalog: t.IO[str] | None = None,
    ) -> None:
        """Sync (or `--test`); members that failed make the exit code non-zero, after all else.

        The SDK's own `invoke`, plus the check of `--state` and `--catalog` files and the end
        of the run: `sync_all` is final, so what follows it happens here.
        """
        if about:
            cls.print_about(about_format)
            sys.exit(0)
        cls.print_version(print_fn=cls.logger.info)
        ctx = click.get_current_context(silent=True)
        meta = ctx.meta if ctx is not None else {}
        tap = cls(
            config=getattr(config, "config", None) or {},
            parse_env_config=getattr(config, "parse_env", False),
            state=read_json_file(state, "state"),
            catalog=read_json_file(catalog, "catalog"),
        )
        tap.run.invocation = Invocation.current(meta.get(CONFIG_FILES, ()))
        if meta.get(TEST_REQUESTED):
            tap.check_credentials()
            return
        tap.sync_members()


def _limits(limits: set[str], settings: Settings) -> str:
    """What stopped a run's reading, in words."""
    said = []
    if "day" in limits:
        said.append("WHOOP's daily request quota for this app is nearly spent")
    if "run" in limits:
        said.append(f"max_requests_per_run ({settings.max_requests_per_run}) was reached")
    if "history" in limits:
        cap = settings.max_history_requests_per_run
        said.append(f"max_history_requests_per_run ({cap}) was reached")
    if "signal" in limits:
        said.append("a signal asked the run to stop")
    return " and ".join(said) or "the run's budget was spent"


def read_json_file(file: t.IO[str] | None, option: str) -> dict[str, t.Any] | None:
    """A `--state` or `--catalog` file, refused in one line when it is not what it must be."""
    if file is None:
        return None
    hint = f"'--{option}'"
    try:
        data = json.loads(file.read())
        if deeper_than(data, MAX_JSON_DEPTH):  # the SDK would recurse through it
            raise RecursionError
    except RecursionError:
        what = f"a Singer {option}"
        raise click.BadParameter(too_deep(file.name, what), param_hint=hint) from None
    except ValueError as exc:
        message = f"{file.name} is not valid JSON ({exc})"
        raise click.BadParameter(message, param_hint=hint) from None
    if option == "state" and isinstance(data, dict) and set(data) == {"singer_state"}:
        data = data["singer_state"]  # as `meltano state get` prints it
    if problem := (catalog_problem if option == "catalog" else state_problem)(data):
        raise click.BadParameter(f"{file.name}: {problem}", param_hint=hint)
    return t.cast(dict[str, t.Any], data)
