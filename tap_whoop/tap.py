"""tap-whoop: settings, their validation, and the members and rate limit a run shares."""

from __future__ import annotations

import ast
import datetime
import hashlib
import io
import json
import typing as t
import uuid
from functools import cached_property
from urllib.parse import urlparse

import click
from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import ConfigValidationError, MappingError
from singer_sdk.mapper import NULL_STRING, CustomStreamMap
from singer_sdk.tap_base import CliTestOptionValue

from tap_whoop.auth import (
    Member,
    MemberAuth,
    Members,
    TokenStore,
    WhoopApp,
    default_token_store_path,
    secret_setting_errors,
)
from tap_whoop.check import check_credentials
from tap_whoop.client import DEFAULT_API_URL, AppPacer, parse_time
from tap_whoop.errors import ConfigError, MembersFailedError, reauthorize_command
from tap_whoop.streams import STREAM_TYPES

if t.TYPE_CHECKING:
    from tap_whoop.client import WhoopStream

DEFAULT_OAUTH_URL = "https://api.prod.whoop.com/oauth/oauth2"
DEFAULT_MEMBER = "default"
DEFAULT_LOOKBACK_DAYS = 3
DEFAULT_MAX_REQUESTS_PER_MINUTE = 90
#: The date-times a setting or bookmark may hold: WHOOP has data from 2015 on, and a date
#: before year 1000 draws a 400 from it (it is sent as e.g. `999-01-01T00:00:00.000Z`).
EARLIEST = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
LATEST = datetime.datetime(9999, 12, 31, tzinfo=datetime.timezone.utc)
#: Deeper state or catalog JSON is refused: the SDK walks it recursively (and no Singer
#: state or catalog comes near it).
MAX_JSON_DEPTH = 100
#: Stream-map keys that hold no expression to evaluate on records.
_MAP_OPTIONS = ("__alias__", "__source__", "__else__", "__key_properties__")


class TapWhoop(Tap):
    """Singer tap for the WHOOP API v2."""

    name = "tap-whoop"
    #: msgspec serializes records about twice as fast as the standard library.
    message_writer_class = MsgSpecWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "client_id",
            th.StringType,
            required=True,
            title="Client ID",
            description="The WHOOP app's client ID (WHOOP developer dashboard).",
        ),
        th.Property(
            "client_secret",
            th.StringType,
            required=True,
            secret=True,
            title="Client secret",
            description="The WHOOP app's client secret.",
        ),
        th.Property(
            "refresh_token",
            th.StringType,
            secret=True,
            title="Refresh token",
            description=(
                "One member's refresh token. It only seeds the token store: WHOOP rotates it "
                "on every refresh. Put a new one here after re-authorizing."
            ),
        ),
        th.Property(
            "users",
            th.ArrayType(
                th.ObjectType(
                    th.Property("key", th.StringType, required=True),
                    th.Property("refresh_token", th.StringType, secret=True),
                )
            ),
            secret=True,
            title="Members",
            description=(
                "Several members of the same WHOOP app, as `{key, refresh_token}`; `key` is "
                "the member's stable label in the token store."
            ),
        ),
        th.Property(
            "token_store_path",
            th.StringType,
            title="Token store path",
            description=(
                "JSON file that keeps every member's rotated tokens between runs. Default: "
                "`$MELTANO_PROJECT_ROOT/.meltano/tap-whoop/tokens.json` under Meltano, else "
                "`~/.local/share/tap-whoop/tokens.json`."
            ),
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            title="Start date",
            description="Earliest record start to sync; default: the account's whole history.",
        ),
        th.Property(
            "end_date",
            th.DateTimeType,
            title="End date",
            description="Sync only records that started before this date-time.",
        ),
        th.Property(
            "lookback_days",
            th.IntegerType,
            default=DEFAULT_LOOKBACK_DAYS,
            title="Lookback days",
            description=(
                "Days before the bookmark each incremental run re-reads, for late scores, "
                "late strap syncs and activities entered by hand."
            ),
        ),
        th.Property(
            "max_requests_per_minute",
            th.IntegerType,
            default=DEFAULT_MAX_REQUESTS_PER_MINUTE,
            title="Max requests per minute",
            description="Pacing ceiling for the whole app, all members together (WHOOP: 100).",
        ),
        th.Property(
            "api_url",
            th.StringType,
            default=DEFAULT_API_URL,
            title="API URL",
            description="WHOOP API root; point it at `tap-whoop-sandbox` to develop offline.",
        ),
        th.Property(
            "oauth_url",
            th.StringType,
            default=DEFAULT_OAUTH_URL,
            title="OAuth URL",
            description="WHOOP OAuth root; the token endpoint is `{oauth_url}/token`.",
        ),
        th.Property(
            "cycle_ids",
            th.ArrayType(th.IntegerType),
            title="Cycle IDs",
            description="Cycles for the `cycle_by_id` stream.",
        ),
        th.Property(
            "sleep_ids",
            th.ArrayType(th.UUIDType),
            title="Sleep IDs",
            description="Sleeps (UUIDs) for the `sleep_by_id` stream.",
        ),
        th.Property(
            "workout_ids",
            th.ArrayType(th.UUIDType),
            title="Workout IDs",
            description="Workouts (UUIDs) for the `workout_by_id` stream.",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        if self.input_catalog is not None:
            self._check_catalog()
        self._check_bookmarks()

    def _check_catalog(self) -> None:
        known = set(self.streams)
        unknown = sorted(set(t.cast(t.Any, self.input_catalog)) - known)
        if unknown:
            raise ConfigError(
                f"the catalog names unknown stream(s) {', '.join(unknown)}; tap-whoop has "
                f"{', '.join(sorted(known))}: regenerate it with `tap-whoop --discover`"
            )
        cycles = self.streams["cycles"]
        for child in cycles.child_streams:
            if child.selected and not cycles.selected:
                raise ConfigError(
                    f"{child.name} is read once per cycle that `cycles` syncs: select `cycles` "
                    "too (without its bookmark every run would re-read the whole history, one "
                    "request per cycle)"
                )

    def _check_bookmarks(self) -> None:
        for name, bookmark in (self.state.get("bookmarks") or {}).items():
            for entry in [bookmark, *bookmark.get("partitions", [])]:
                value = entry.get("replication_key_value")
                if value is None:
                    continue
                try:
                    problem = _date_problem(parse_time(str(value)))
                except ValueError:
                    problem = "is not a date-time"
                if problem:
                    raise ConfigError(
                        f"the state's bookmark for {name} ({value!r}) {problem}: fix the "
                        "state, or clear it (`meltano state clear …`) to re-read everything"
                    )

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """Check the settings before any request, one clear line for the first problem."""
        errors = settings_errors(self.config)
        if not errors:
            errors = super()._validate_config(raise_errors=False)
        if errors and raise_errors:
            raise ConfigError(errors[0])
        return errors

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
        functions = {
            name
            for maps in self.mapper.stream_maps.values()
            for stream_map in maps
            if isinstance(stream_map, CustomStreamMap)
            for name in stream_map.functions
        }
        if not functions:  # no stream map applies to any stream
            return
        for where, expression in _stream_map_expressions(self.config.get("stream_maps")):
            if unknown := _unknown_functions(expression, functions):
                raise ConfigError(
                    f"{where} ({_shown(expression)}) calls unknown function(s) "
                    f"{', '.join(unknown)}: a stream map can call {', '.join(sorted(functions))}"
                )

    @classmethod
    def cb_config(cls, ctx: click.Context, param: click.Option, value: tuple[str, ...]) -> t.Any:
        """A missing or malformed config file is a usage error: one line, not a traceback."""
        try:
            return super().cb_config(ctx, param, value)
        except RecursionError:
            files = " ".join(path for path in value if path != "ENV")
            message = too_deep(files, "a tap config")
        except (OSError, ValueError, TypeError) as exc:
            message = str(exc).splitlines()[0]
        raise click.BadParameter(message, ctx=ctx, param=param)

    @classmethod
    def cb_json_file(
        cls, ctx: click.Context, param: click.Parameter, value: t.IO[str] | None
    ) -> t.IO[str] | None:
        """A `--state` or `--catalog` file that is not what the option needs: one line."""
        if value is None:
            return None
        try:
            data = json.loads(value.read())
            if _deeper_than(data, MAX_JSON_DEPTH):  # the SDK would recurse through it
                raise RecursionError
        except RecursionError:
            what = "a Singer catalog" if param.name == "catalog" else "a Singer state"
            raise click.BadParameter(too_deep(value.name, what), ctx=ctx, param=param) from None
        except ValueError as exc:
            raise click.BadParameter(f"{value.name} is not valid JSON ({exc})") from None
        if problem := _json_file_problem(str(param.name), data):
            raise click.BadParameter(f"{value.name}: {problem}", ctx=ctx, param=param)
        return io.StringIO(json.dumps(data))

    @classmethod
    def cb_test(cls, ctx: click.Context, param: click.Option, value: str) -> None:
        """`--test` checks every member's tokens and scopes (see `check.py`) instead of syncing."""
        if value != CliTestOptionValue.All.value:
            super().cb_test(ctx, param, value)
            return
        config, catalog = ctx.params.get("config"), ctx.params.get("catalog")
        try:
            catalog_dict = None if catalog is None else json.loads(catalog.read())
        except ValueError:
            raise ConfigError("the --catalog file is not valid JSON") from None
        tap = cls(
            config=getattr(config, "config", None),
            parse_env_config=getattr(config, "parse_env", False),
            catalog=catalog_dict,
        )
        check_credentials(tap)
        ctx.exit()

    @classmethod
    def get_singer_command(cls) -> click.Command:
        """The SDK's command, reading `--catalog` before `--test` wherever it is given."""
        command = super().get_singer_command()
        command.help = (
            "Execute the Singer tap. Members consent with `tap-whoop auth` and are removed with "
            "`tap-whoop revoke` (see their --help)."
        )
        for param in command.params:
            if param.name in ("catalog", "state"):
                param.callback = cls.cb_json_file
            if param.name == "catalog":
                param.is_eager = True
            if param.name == "test" and isinstance(param, click.Option):
                param.help = (
                    "Use --test to check every member's credentials: refresh each token and ask "
                    "each selected endpoint for a record. Use --test=schema to print the schemas."
                )
        return command

    def discover_streams(self) -> list[WhoopStream]:
        """Every WHOOP v2 endpoint; the drill-downs are not selected by default."""
        return [stream_type(tap=self) for stream_type in STREAM_TYPES]

    @cached_property
    def token_store(self) -> TokenStore:
        """Where every member's rotated tokens live between runs."""
        return TokenStore(self.config.get("token_store_path") or default_token_store_path())

    @cached_property
    def app(self) -> WhoopApp:
        """The registered WHOOP app whose credentials every token request sends."""
        return WhoopApp(
            client_id=self.config["client_id"],
            client_secret=self.config["client_secret"],
            oauth_url=self.config.get("oauth_url") or DEFAULT_OAUTH_URL,
        )

    @property
    def api_url(self) -> str:
        """The API root; pointing it elsewhere is how the sandbox is used."""
        return str(self.config.get("api_url") or DEFAULT_API_URL).rstrip("/")

    @cached_property
    def members(self) -> Members:
        """The members of this run, each with its own tokens."""
        return Members(
            [
                Member(key, MemberAuth(key, refresh_token, self.token_store, self.app))
                for key, refresh_token in configured_members(self.config)
            ]
        )

    @cached_property
    def pacer(self) -> AppPacer:
        """The app's rate limit, shared by every stream, member and tap process of the app."""
        app = hashlib.sha256(str(self.config["client_id"]).encode()).hexdigest()[:16]
        return AppPacer(
            int(self.config.get("max_requests_per_minute") or DEFAULT_MAX_REQUESTS_PER_MINUTE),
            shared_file=self.token_store.beside(f"rate-limit-{app}.sqlite"),
        )

    def sync_all(self) -> None:  # type: ignore[misc]
        """Sync every member; fail at the end, naming members that could not be synced.

        Extends the SDK's (final) sync so that one member's revoked authorization neither stops
        the others nor passes unnoticed by the scheduler.
        """
        self._check_members_have_tokens()
        super().sync_all()
        if problems := self.members.problems:
            failing = sum(1 for member in self.members if member.failure or member.stream_failures)
            raise MembersFailedError(
                f"{failing} of {len(self.members.by_key)} member(s) not fully synced "
                "(what is missing keeps its bookmark): " + "; ".join(problems)
            )

    def _check_members_have_tokens(self) -> None:
        stored = self.token_store.read()["members"]
        for key, refresh_token in configured_members(self.config):
            if not refresh_token and key not in stored:
                setting = "refresh_token" if key == DEFAULT_MEMBER else f"users[{key!r}]"
                raise ConfigError(
                    f"{setting}: no refresh token for member {key!r} in the config or in "
                    f"{self.token_store.path}; set it, or run `{reauthorize_command(key)}`"
                )


def _json_file_problem(option: str, data: t.Any) -> str | None:
    """What keeps `data` from being a Singer state or catalog, if anything."""
    if option == "catalog":
        if not isinstance(data, dict) or not isinstance(data.get("streams"), list):
            return "not a Singer catalog (an object with a 'streams' list): see --discover"
        for index, entry in enumerate(data["streams"]):
            if problem := _catalog_entry_problem(entry):
                return f"streams[{index}] {problem}: fix it, or regenerate it with --discover"
        return None
    if not isinstance(data, dict):
        return "not a Singer state (a JSON object with 'bookmarks')"
    bookmarks = data.get("bookmarks", {})
    if not isinstance(bookmarks, dict) or not all(isinstance(b, dict) for b in bookmarks.values()):
        return "'bookmarks' must map each stream to an object; fix it or start without --state"
    for name, bookmark in bookmarks.items():
        partitions = bookmark.get("partitions", [])
        if not isinstance(partitions, list) or not all(isinstance(p, dict) for p in partitions):
            return f"the partitions of bookmark {name!r} must be a list of objects"
        for index, partition in enumerate(partitions):
            if not isinstance(partition.get("context"), dict):
                return (
                    f"partition {index} of bookmark {name!r} has no 'context' object (the "
                    'member\'s {"user_id": …}): fix it, or start without --state'
                )
        for entry in [bookmark, *partitions]:
            if not isinstance(entry.get("progress_markers", {}), dict):
                return f"the progress_markers of bookmark {name!r} must be an object"
    return None


def _catalog_entry_problem(entry: t.Any) -> str | None:
    """What keeps `entry` from being a catalog entry the SDK can read, if anything."""
    if not isinstance(entry, dict):
        return f"is {json.dumps(entry)[:40]}, not a catalog entry (an object)"
    if not isinstance(entry.get("tap_stream_id"), str) or not entry["tap_stream_id"]:
        return "has no 'tap_stream_id' (a stream name)"
    schema = entry.get("schema")
    if not isinstance(schema, dict):
        return f"({entry['tap_stream_id']}) has no 'schema' object"
    if not isinstance(schema.get("properties", {}), dict):
        return f"({entry['tap_stream_id']}): 'schema.properties' must be an object"
    metadata = entry.get("metadata", [])
    if not isinstance(metadata, list) or not all(
        isinstance(item, dict)
        and isinstance(item.get("breadcrumb"), list)
        and isinstance(item.get("metadata"), dict)
        for item in metadata
    ):
        return (
            f"({entry['tap_stream_id']}): 'metadata' must be a list of "
            "{breadcrumb: [...], metadata: {...}} objects"
        )
    return None


def too_deep(what: str, kind: str) -> str:
    """The message for JSON nested deeper than `MAX_JSON_DEPTH` (or the parser follows)."""
    return (
        f"{what} is nested more than {MAX_JSON_DEPTH} levels deep, far deeper than {kind} "
        "is: check that it is the right file"
    )


def _deeper_than(data: t.Any, limit: int) -> bool:
    """Whether JSON `data` nests more than `limit` arrays and objects deep."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return False


def _date_problem(value: datetime.datetime) -> str | None:
    """Why WHOOP would refuse `value` as a date-time, if it would."""
    if EARLIEST <= value <= LATEST:
        return None
    return (
        f"is out of range: use a date-time from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} "
        "(WHOOP has data from 2015 on, and refuses dates before year 1000)"
    )


def _stream_maps_errors(stream_maps: t.Any) -> list[str]:
    """Stream maps the SDK would reject, or fail on, once records flow."""
    if not isinstance(stream_maps, dict):
        return []
    elses = [
        ("stream_maps.__else__", stream_maps.get("__else__")),
        *(
            (f"stream_maps.{name}.__else__", definition.get("__else__"))
            for name, definition in stream_maps.items()
            if isinstance(definition, dict)
        ),
    ]
    errors = [
        f"{where} can only be null (drop what no map names), not {value!r}"
        for where, value in elses
        if value not in (None, NULL_STRING)
    ]
    for where, expression in _stream_map_expressions(stream_maps):
        if problem := _expression_problem(expression):
            errors.append(f"{where} ({_shown(expression)}) {problem}")
    return errors


def _shown(expression: str) -> str:
    """`expression` quoted for a message, cut short when long."""
    return repr(expression if len(expression) <= 60 else f"{expression[:57]}...")


def _stream_map_expressions(stream_maps: t.Any) -> list[tuple[str, str]]:
    """(where, expression) for each expression the stream maps evaluate on records."""
    if not isinstance(stream_maps, dict):
        return []
    return [
        (f"stream_maps.{name}.{key}", expression)
        for name, definition in stream_maps.items()
        if isinstance(definition, dict)
        for key, expression in definition.items()
        if key not in _MAP_OPTIONS and isinstance(expression, str) and expression != NULL_STRING
    ]


def _expression_problem(expression: str) -> str | None:
    """Why the SDK could not parse `expression`, if it could not."""
    try:
        body = ast.parse(expression).body
    except SyntaxError as exc:
        return f"is not a valid expression ({exc.msg}): fix it or remove it"
    except (ValueError, RecursionError, MemoryError):
        return "is not a valid expression: fix it or remove it"
    if len(body) != 1 or not isinstance(body[0], ast.Expr):
        return "is not a single expression (e.g. `str(id)`): fix it or remove it"
    return None


def _unknown_functions(expression: str, functions: set[str]) -> list[str]:
    """The functions `expression` calls by a name no stream map defines (sorted, as `f()`)."""
    return sorted(
        {
            f"{node.func.id}()"
            for node in ast.walk(ast.parse(expression))
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id not in functions
        }
    )


def configured_members(config: t.Mapping[str, t.Any]) -> list[tuple[str, str | None]]:
    """(key, configured refresh token) for each member the config names."""
    if users := config.get("users"):
        return [(user["key"], user.get("refresh_token") or None) for user in users]
    return [(DEFAULT_MEMBER, config.get("refresh_token") or None)]


def settings_errors(config: t.Mapping[str, t.Any]) -> list[str]:
    """Problems with the settings, each naming the setting and how to fix it."""
    errors = [
        f"{name} is missing: copy it from the WHOOP developer dashboard (or use the sandbox's)"
        for name in ("client_id", "client_secret")
        if not config.get(name)
    ]
    errors += secret_setting_errors(config)
    users = config.get("users")
    if users is not None:
        errors += _users_errors(users)
    errors += _stream_maps_errors(config.get("stream_maps"))
    store = config.get("token_store_path")
    if isinstance(store, str) and not store.strip():
        errors.append(
            "token_store_path is empty: remove the setting to use the default token store, "
            "or give the file's path"
        )
    elif isinstance(store, str) and "\x00" in store:
        errors.append(
            "token_store_path contains a NUL character (\\x00), which no file path can hold: "
            "fix the path"
        )
    dates: dict[str, datetime.datetime] = {}
    for name in ("start_date", "end_date"):
        if value := config.get(name):
            try:
                dates[name] = parse_time(str(value))
            except (ValueError, TypeError):
                errors.append(
                    f"{name} {value!r} is not a date-time: use ISO 8601, e.g. 2024-01-31T00:00:00Z"
                )
                continue
            if problem := _date_problem(dates[name]):
                errors.append(f"{name} {value!r} {problem}")
    if "start_date" in dates and "end_date" in dates and dates["start_date"] >= dates["end_date"]:
        errors.append(
            f"start_date ({config['start_date']}) is not before end_date ({config['end_date']}): "
            "swap them or remove end_date"
        )
    for name, least, most in (("lookback_days", 0, 3650), ("max_requests_per_minute", 1, 10**9)):
        value = config.get(name, least)
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
            errors.append(f"{name} must be a whole number from {least} to {most} (got {value!r})")
    for name, kind in (("cycle_ids", int), ("sleep_ids", uuid.UUID), ("workout_ids", uuid.UUID)):
        errors += _ids_errors(name, config.get(name), kind)
    for name in ("api_url", "oauth_url"):
        value = config.get(name)
        if value and urlparse(str(value)).scheme not in ("http", "https"):
            errors.append(f"{name} {value!r} is not an http(s) URL")
    return errors


def _ids_errors(name: str, ids: t.Any, kind: type) -> list[str]:
    """Ids that WHOOP would refuse with a 400 in the middle of a run."""
    if ids is None:
        return []
    what = "WHOOP cycle ids (whole numbers)" if kind is int else "WHOOP UUIDs"
    if not isinstance(ids, list):
        return [f"{name} must be a list of {what}"]
    for index, value in enumerate(ids):
        try:
            valid = (
                isinstance(value, int) and not isinstance(value, bool)
                if kind is int
                else bool(uuid.UUID(str(value)))
            )
        except ValueError:
            valid = False
        if not valid:
            return [f"{name}[{index}] ({value!r}) is not one of the {what} this setting takes"]
    return []


def _users_errors(users: t.Any) -> list[str]:
    if not isinstance(users, list) or not users:
        return ["users must be a non-empty list of {key, refresh_token} objects"]
    errors: list[str] = []
    seen: set[str] = set()
    for index, user in enumerate(users):
        key = user.get("key") if isinstance(user, dict) else None
        if not isinstance(key, str) or not key.strip():
            errors.append(f"users[{index}] has no key: give each member a stable label")
        elif key in seen:
            errors.append(f"users[{index}]: key {key!r} is used twice; keys must be unique")
        else:
            seen.add(key)
    return errors
