"""The tap's settings: their schema, and the checks JSON Schema cannot say.

Single settings are checked by the schema (types, ranges); what is left here are rules across
settings and checks whose messages must not echo a secret, all before any request. The shapes of
`--state` and `--catalog` files are `tap_whoop.shapes`'.
"""

from __future__ import annotations

import ast
import datetime
import difflib
import functools
import hashlib
import json
import math
import re
import typing as t
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse, urlsplit

import pendulum
from singer_sdk import typing as th
from singer_sdk.mapper import NULL_STRING, CustomStreamMap
from singer_sdk.plugin_base import JSONSchemaValidator

from tap_whoop.errors import ConfigError

DEFAULT_API_URL = "https://api.prod.whoop.com/developer"
DEFAULT_OAUTH_URL = "https://api.prod.whoop.com/oauth/oauth2"
DEFAULT_MEMBER = "default"
DEFAULT_LOOKBACK_DAYS = 3
DEFAULT_MAX_REQUESTS_PER_MINUTE = 90
DEFAULT_RECONCILE_INTERVAL_HOURS = 24
DEFAULT_WEBHOOK_RETENTION_DAYS = 7
DEFAULT_STORE_TIMEOUT_SECONDS = 120
DEFAULT_PROFILE_INTERVAL_HOURS = 24
DEFAULT_WEBHOOK_HOST = "127.0.0.1"
DEFAULT_WEBHOOK_PORT = 8787
DEFAULT_REQUEST_TIMEOUT = 60
"""Seconds one attempt may take, connecting and reading the whole answer included."""
DEFAULT_MAX_REQUEST_ATTEMPTS = 8
"""Tries per request before the run fails with the last error."""
#: The date-times a setting or bookmark may hold: WHOOP has data from 2015 on, and a date
#: before year 1000 draws a 400 from it (it is sent as e.g. `999-01-01T00:00:00.000Z`).
EARLIEST = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
LATEST = datetime.datetime(9999, 12, 31, tzinfo=datetime.timezone.utc)
#: WHOOP's `types` of the sleep signal stream (`GET /v2/activity/sleep/{sleepId}/stream`).
SLEEP_SIGNAL_TYPES = (
    "hr",
    "skin_temp",
    "board_temp",
    "battery_temp",
    "sleep_classification",
    "charging_status",
)
#: Deeper state or catalog JSON is refused: the SDK walks it recursively (and no Singer
#: state or catalog comes near it).
MAX_JSON_DEPTH = 100
#: Stream-map keys that hold no expression to evaluate on records.
_MAP_OPTIONS = ("__alias__", "__source__", "__else__", "__key_properties__")


def _never_null(schema: dict[str, t.Any], *names: str) -> dict[str, t.Any]:
    """`schema` with `names` refusing null: settings with a default (the SDK allows null)."""
    for name in names:
        types = schema["properties"][name]["type"]
        schema["properties"][name]["type"] = [kind for kind in types if kind != "null"]
    return schema


CONFIG_SCHEMA: dict[str, t.Any] = _never_null(
    th.PropertiesList(
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
            "store_url",
            th.StringType,
            secret=True,
            title="Store URL",
            description=(
                "PostgreSQL URL, `postgresql://USER:PASSWORD@HOST:PORT/DATABASE`, of a database "
                "that keeps the token store, the app's rate-limit window and the webhook inbox "
                "(tables made on first use), for tap processes on any machine. Default: none, "
                "they stay files (`token_store_path`, and beside it). Move them with "
                "`tap-whoop store copy`."
            ),
        ),
        th.Property(
            "store_timeout_seconds",
            th.NumberType(exclusive_minimum=0, maximum=3600),
            default=DEFAULT_STORE_TIMEOUT_SECONDS,
            title="Store timeout (seconds)",
            description=(
                "With `store_url`: seconds one statement, or a wait for a lock held by another "
                "session, may take before the run stops in one line naming the table held. "
                "Nothing waits forever; a server that drops the connection (a restart, a "
                "failover) is waited for up to 30 s."
            ),
        ),
        th.Property(
            "member_shard",
            th.StringType,
            title="Member shard",
            description=(
                "`i/n` (0 <= i < n): sync only the members whose key hashes to shard i of n, so "
                "that n processes with the same config share the members (and each state holds "
                "only its own). The hash is stable: a member stays in its shard across runs "
                "while n stays the same."
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
            th.IntegerType(minimum=0, maximum=3650),
            default=DEFAULT_LOOKBACK_DAYS,
            title="Lookback days",
            description=(
                "Days before the bookmark each incremental run re-reads, for late scores, "
                "late strap syncs and activities entered by hand."
            ),
        ),
        th.Property(
            "max_requests_per_minute",
            th.IntegerType(minimum=1, maximum=1_000_000_000),
            default=DEFAULT_MAX_REQUESTS_PER_MINUTE,
            title="Max requests per minute",
            description="Pacing ceiling for the whole app, all members together (WHOOP: 100).",
        ),
        th.Property(
            "max_requests_per_run",
            th.IntegerType(minimum=1, maximum=1_000_000_000),
            title="Max requests per run",
            description=(
                "Requests one run may send, all members together. Every member's incremental "
                "sync comes first; a first full history that does not fit is read newest first "
                "and resumed by the next run."
            ),
        ),
        th.Property(
            "max_history_requests_per_run",
            th.IntegerType(minimum=1, maximum=1_000_000_000),
            title="Max history requests per run",
            description=(
                "Requests one run may spend on histories (new members', and the rest of one a "
                "budget stopped), after every member's new records. With several runs a day, "
                "set it to the day's spare requests divided by the runs (`tap-whoop plan` says "
                "how much), so that onboarding leaves the day's later runs their share."
            ),
        ),
        th.Property(
            "profile_interval_hours",
            th.NumberType(minimum=0, maximum=8760),
            default=DEFAULT_PROFILE_INTERVAL_HOURS,
            title="Profile interval (hours)",
            description=(
                "How often `profile` and `body_measurement` are re-read for a member; they "
                "rarely change, and skipping them saves 2 of a run's 6 requests per member. 0 "
                "reads them on every run."
            ),
        ),
        th.Property(
            "request_timeout",
            th.NumberType(exclusive_minimum=0, maximum=3600),
            default=DEFAULT_REQUEST_TIMEOUT,
            title="Request timeout",
            description=(
                "Seconds one attempt of a WHOOP request may take in all, from connecting to the "
                "last byte of the answer; then it is retried."
            ),
        ),
        th.Property(
            "max_request_attempts",
            th.IntegerType(minimum=1, maximum=20),
            default=DEFAULT_MAX_REQUEST_ATTEMPTS,
            title="Max request attempts",
            description=(
                "Attempts per WHOOP request (timeouts, 5xx, 429) before the run fails; with the "
                "defaults a WHOOP that never answers fails the run after about 10 minutes."
            ),
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
        th.Property(
            "per_cycle_streams",
            th.BooleanType,
            default=False,
            title="Per-cycle streams",
            description=(
                "Sync `recovery_for_cycle` and `sleep_for_cycle` when they are selected. They "
                "cost one request per cycle; the same records come from `recovery` and `sleep`, "
                "25 to a request. Off, they are skipped even if selected."
            ),
        ),
        th.Property(
            "sleep_signal_types",
            th.ArrayType(th.StringType),
            title="Sleep signal types",
            description=(
                "Signals the `sleep_signals` stream reads for each final sleep: any of `hr`, "
                "`skin_temp`, `board_temp`, `battery_temp`, `sleep_classification`, "
                "`charging_status` (WHOOP's `types`). One request per sleep, thousands of "
                "points each. Unset or empty (the default), the stream is skipped even if "
                "selected."
            ),
        ),
        th.Property(
            "reconcile_interval_hours",
            th.NumberType(minimum=0, maximum=8760),
            default=DEFAULT_RECONCILE_INTERVAL_HOURS,
            title="Reconcile interval (hours)",
            description=(
                "While webhooks arrive, how often each member is still read in full, for "
                "missed events, late strap syncs and cycles; in between, a run fetches only what "
                "the events name. 0 reads every member on every run, as runs without webhooks do."
            ),
        ),
        th.Property(
            "webhook_retention_days",
            th.NumberType(minimum=1, maximum=365),
            default=DEFAULT_WEBHOOK_RETENTION_DAYS,
            title="Webhook retention (days)",
            description=(
                "How long `tap-whoop webhooks` deliveries are kept for the pipelines that read "
                "them. A pipeline whose state is older than that reads its members in full on "
                "its next run instead."
            ),
        ),
        th.Property(
            "webhook_host",
            th.StringType,
            default=DEFAULT_WEBHOOK_HOST,
            title="Webhook host",
            description=(
                "Address `tap-whoop webhooks` listens on; behind a reverse proxy on the same "
                "machine keep 127.0.0.1, in a container use 0.0.0.0."
            ),
        ),
        th.Property(
            "webhook_port",
            th.IntegerType(minimum=0, maximum=65535),
            default=DEFAULT_WEBHOOK_PORT,
            title="Webhook port",
            description="Port `tap-whoop webhooks` listens on.",
        ),
    ).to_dict(),
    "lookback_days",
    "max_requests_per_minute",
    "max_requests_per_run",
    "max_history_requests_per_run",
    "profile_interval_hours",
    "request_timeout",
    "store_timeout_seconds",
    "max_request_attempts",
    "per_cycle_streams",
    "reconcile_interval_hours",
    "webhook_retention_days",
    "webhook_host",
    "webhook_port",
)
#: The tap's own settings, in order (the SDK adds its built-in ones to `CONFIG_SCHEMA` in place).
SETTING_NAMES = tuple(CONFIG_SCHEMA["properties"])


def secret_setting_errors(config: t.Mapping[str, t.Any]) -> list[str]:
    """Type errors in secret settings, without their values (jsonschema's messages echo them)."""
    errors = [
        f"{name} must be a string"
        for name in ("client_secret", "refresh_token", "store_url")
        if config.get(name) is not None and not isinstance(config[name], str)
    ]
    users = config.get("users")
    if isinstance(users, list):
        errors += [
            f"users[{index}].refresh_token must be a string"
            for index, user in enumerate(users)
            if isinstance(user, dict)
            and user.get("refresh_token") is not None
            and not isinstance(user["refresh_token"], str)
        ]
    return errors


def too_deep(what: str, kind: str) -> str:
    """The message for JSON nested deeper than `MAX_JSON_DEPTH` (or the parser follows)."""
    return (
        f"{what} is nested more than {MAX_JSON_DEPTH} levels deep, far deeper than {kind} "
        "is: check that it is the right file"
    )


def deeper_than(data: t.Any, limit: int) -> bool:
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


def date_problem(value: datetime.datetime) -> str | None:
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
    for where, expression in stream_map_expressions(stream_maps):
        if problem := _expression_problem(expression):
            errors.append(f"{where} ({shown_expression(expression)}) {problem}")
        elif unknown := unknown_functions(expression, stream_map_functions()):
            errors.append(
                f"{where} ({shown_expression(expression)}) calls unknown function(s) "
                f"{', '.join(unknown)}: a stream map can call "
                f"{', '.join(sorted(stream_map_functions()))}"
            )
    return errors


@functools.cache
def stream_map_functions() -> frozenset[str]:
    """What a stream-map expression can call, as the SDK's own mapper says.

    The SDK finds an unknown function only when the first record reaches the map, after the
    run has spent requests; the lint asks it up front, with a map that maps nothing.
    """
    mapper = CustomStreamMap(
        stream_alias="",
        map_config={},
        faker_config={},
        raw_schema={"properties": {}},
        key_properties=None,
        map_transform={},
        flattening_options=None,
    )
    return frozenset(mapper.functions)


def shown_expression(expression: str) -> str:
    """`expression` quoted for a message, cut short when long."""
    return repr(expression if len(expression) <= 60 else f"{expression[:57]}...")


def stream_map_expressions(stream_maps: t.Any) -> list[tuple[str, str]]:
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


def unknown_functions(expression: str, functions: t.Collection[str]) -> list[str]:
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


def member_shard(text: t.Any) -> tuple[int, int] | None:
    """`member_shard` as (i, n), or None when it is not `i/n` with 0 <= i < n <= 999999."""
    match = (
        re.fullmatch(r"\s*(\d{1,6})\s*/\s*(\d{1,6})\s*", text) if isinstance(text, str) else None
    )
    if match is None:
        return None
    index, count = int(match[1]), int(match[2])
    return (index, count) if 0 <= index < count else None


def shard_of(key: str, count: int) -> int:
    """The shard of `count` a member key belongs to: a hash that no run or machine changes."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


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
    if isinstance(url := config.get("store_url"), str) and (problem := store_url_problem(url)):
        errors.append(f"store_url {problem}")
    if (shard := config.get("member_shard")) is not None and member_shard(shard) is None:
        errors.append(
            f"member_shard {str(shard)[:40]!r} is not `i/n` with 0 <= i < n <= 999999 (e.g. 0/4 "
            "for the first of four processes): fix it, or remove it to sync every member"
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
            if problem := date_problem(dates[name]):
                errors.append(f"{name} {value!r} {problem}")
    if "start_date" in dates and "end_date" in dates and dates["start_date"] >= dates["end_date"]:
        errors.append(
            f"start_date ({config['start_date']}) is not before end_date ({config['end_date']}): "
            "swap them or remove end_date"
        )
    for name, kind in (("cycle_ids", int), ("sleep_ids", uuid.UUID), ("workout_ids", uuid.UUID)):
        errors += _ids_errors(name, config.get(name), kind)
    errors += _signal_types_errors(config.get("sleep_signal_types"))
    for name in ("api_url", "oauth_url"):
        value = config.get(name)
        if value and urlparse(str(value)).scheme not in ("http", "https"):
            errors.append(f"{name} {value!r} is not an http(s) URL")
    return errors


POSTGRES_SCHEMES = ("postgresql", "postgres")


def store_url_problem(url: str) -> str | None:
    """What keeps `url` from being a PostgreSQL URL, without repeating it (it holds a password)."""
    if not url.strip():
        return (
            "is empty: remove the setting to keep the token store in files, or give a "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE URL"
        )
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in POSTGRES_SCHEMES:
        shown = f"its scheme is {scheme[:20]!r}" if scheme else "it has no scheme"
        return (
            f"must be a PostgreSQL URL, postgresql://USER:PASSWORD@HOST:PORT/DATABASE ({shown}); "
            "without store_url the token store stays in files"
        )
    if any(character.isspace() or ord(character) < 32 for character in url):
        return "contains spaces or control characters: percent-encode them (a space is %20)"
    try:
        urlsplit(url).port  # noqa: B018 - raises for a port that is no number
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    return None


def _signal_types_errors(types: t.Any) -> list[str]:
    """Signal types WHOOP would refuse with a 400 for every sleep of the run."""
    known = ", ".join(SLEEP_SIGNAL_TYPES)
    errors = []
    for value in types if isinstance(types, list) else []:  # not a list: the schema says so
        if value not in SLEEP_SIGNAL_TYPES:
            shown = repr(value)[:40]
            close = difflib.get_close_matches(str(value), SLEEP_SIGNAL_TYPES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            errors.append(
                f"sleep_signal_types: {shown} is not a WHOOP signal type: {hint}use any of "
                f"{known}, or [] to leave sleep_signals off"
            )
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


def parse_time(value: str) -> datetime.datetime:
    """An ISO 8601 date-time from WHOOP, the settings or the state, as an aware datetime.

    WHOOP's own form (`2026-11-20T06:13:21.429Z`) takes the standard library's fast path; it
    runs for every record. Anything else is pendulum's to read (UTC when no offset is given).
    """
    if len(value) >= 20 and value[10:11] == "T" and value.endswith("Z"):
        try:
            return datetime.datetime.fromisoformat(value[:-1]).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            pass
    parsed = pendulum.parse(value)
    if not isinstance(parsed, datetime.datetime):
        raise ValueError(f"{value!r} is not a date-time")
    return parsed


def validated(config: dict[str, t.Any]) -> dict[str, t.Any]:
    """`config` with its defaults, as the tap itself would accept it; else a ConfigError.

    For `auth` and `revoke`, which need the settings but not a whole tap: the same checks, in
    the same order (secrets first: a schema error would echo the value), with the same
    validator the SDK uses.
    """
    if errors := secret_setting_errors(config):
        raise ConfigError(errors[0])
    config.update(forgiven(config))
    schema_errors = list(JSONSchemaValidator(CONFIG_SCHEMA).iter_errors(config))
    if schema_errors:
        error = schema_errors[0]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.path)
        raise ConfigError(f"{where.removeprefix('.')}: {error.message}" if where else error.message)
    if errors := settings_errors(config):
        raise ConfigError(errors[0])
    return config


#: What each JSON type reads from text, and the Meltano `kind` that passes it typed.
#: What each JSON type reads as, and the meltano.yml `kind` that passes it typed. Numbers have
#: none: Meltano 4.4's `decimal` fails when the value comes from an environment variable.
_READERS: dict[str, tuple[str, str | None]] = {
    "integer": ("a whole number", "integer"),
    "number": ("a number", None),
    "boolean": ("true or false", "boolean"),
    "array": ("a JSON array", "array"),
    "object": ("a JSON object", "object"),
}


def forgiven(
    config: t.Mapping[str, t.Any], schema: t.Mapping[str, t.Any] = CONFIG_SCHEMA
) -> dict[str, t.Any]:
    """`config`, its numbers, booleans and JSON given as text read as what the schema says.

    Meltano passes settings a project does not declare as strings, and so do environment
    variables; text that still makes no sense is one line naming the setting and the `kind:`
    to declare (a secret's value is never shown).
    """
    result = dict(config)
    for name, value in config.items():
        spec = schema.get("properties", {}).get(name)
        if not isinstance(value, str) or not isinstance(spec, dict):
            continue
        types = spec.get("type", [])
        types = [types] if isinstance(types, str) else [k for k in types if k != "null"]
        if not types or "string" in types or types[0] not in _READERS:
            continue
        try:
            result[name] = _read_text(value, types[0])
        except ValueError:
            what, kind = _READERS[types[0]]
            shown = "the value given" if spec.get("secret") else repr(value[:60])
            declare = f", or declare the setting with `kind: {kind}` in meltano.yml" if kind else ""
            raise ConfigError(f"{name}: {shown} is not {what}; give {what}{declare}") from None
    return result


def _read_text(text: str, kind: str) -> t.Any:
    stripped = text.strip()
    if kind == "integer":
        if not re.fullmatch(r"[+-]?\d+", stripped):
            raise ValueError(text)
        return int(stripped)
    if kind == "number":
        number = float(stripped)
        if not math.isfinite(number):
            raise ValueError(text)
        return number
    if kind == "boolean":
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if stripped.lower() not in words:
            raise ValueError(text)
        return words[stripped.lower()]
    value = json.loads(stripped)
    if not isinstance(value, list if kind == "array" else dict):
        raise ValueError(text)
    return value


def unknown_settings(config: t.Mapping[str, t.Any], known: t.Collection[str]) -> list[str]:
    """A warning for each key that is no setting, naming the closest one when there is one."""
    warnings = []
    for name in sorted(set(config) - set(known)):
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"; did you mean `{close[0]}`?" if close else " (see `tap-whoop --about`)"
        warnings.append(f"`{name}` is not a tap-whoop setting{hint}")
    return warnings


@dataclass(frozen=True)
class Settings:
    """The settings a run uses, typed, with their defaults: the one reader of the raw config.

    Built once from a config the schema and `settings_errors` accepted; a setting left out (or
    null) takes its default here and nowhere else.
    """

    client_id: str = ""
    client_secret: str = ""
    api_url: str = DEFAULT_API_URL
    oauth_url: str = DEFAULT_OAUTH_URL
    start_date: datetime.datetime | None = None
    end_date: datetime.datetime | None = None
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    max_requests_per_minute: int = DEFAULT_MAX_REQUESTS_PER_MINUTE
    max_requests_per_run: int | None = None
    max_history_requests_per_run: int | None = None
    profile_interval_hours: float = DEFAULT_PROFILE_INTERVAL_HOURS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_request_attempts: int = DEFAULT_MAX_REQUEST_ATTEMPTS
    per_cycle_streams: bool = False
    reconcile_interval_hours: float = DEFAULT_RECONCILE_INTERVAL_HOURS
    webhook_retention_days: float = DEFAULT_WEBHOOK_RETENTION_DAYS
    webhook_host: str = DEFAULT_WEBHOOK_HOST
    webhook_port: int = DEFAULT_WEBHOOK_PORT
    token_store_path: str | None = None
    store_url: str | None = None
    store_timeout_seconds: float = DEFAULT_STORE_TIMEOUT_SECONDS
    member_shard: tuple[int, int] | None = None
    cycle_ids: tuple[str, ...] = ()
    sleep_ids: tuple[str, ...] = ()
    workout_ids: tuple[str, ...] = ()
    sleep_signal_types: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> Settings:
        """The typed settings of `config`."""

        def given(name: str) -> t.Any:
            value = config.get(name)
            return None if value is None or value == "" else value

        def number(name: str, kind: type, default: t.Any) -> t.Any:
            value = given(name)
            return default if value is None else kind(value)

        def time(name: str) -> datetime.datetime | None:
            value = given(name)
            return parse_time(str(value)) if value is not None else None

        def ids(name: str) -> tuple[str, ...]:
            return tuple(str(value) for value in given(name) or ())

        per_run, history = given("max_requests_per_run"), given("max_history_requests_per_run")
        return cls(
            client_id=str(given("client_id") or ""),
            client_secret=str(given("client_secret") or ""),
            api_url=str(given("api_url") or DEFAULT_API_URL).rstrip("/"),
            oauth_url=str(given("oauth_url") or DEFAULT_OAUTH_URL),
            start_date=time("start_date"),
            end_date=time("end_date"),
            lookback_days=number("lookback_days", int, DEFAULT_LOOKBACK_DAYS),
            max_requests_per_minute=number(
                "max_requests_per_minute", int, DEFAULT_MAX_REQUESTS_PER_MINUTE
            ),
            max_requests_per_run=int(per_run) if per_run is not None else None,
            max_history_requests_per_run=int(history) if history is not None else None,
            profile_interval_hours=number(
                "profile_interval_hours", float, DEFAULT_PROFILE_INTERVAL_HOURS
            ),
            request_timeout=number("request_timeout", float, DEFAULT_REQUEST_TIMEOUT),
            max_request_attempts=number("max_request_attempts", int, DEFAULT_MAX_REQUEST_ATTEMPTS),
            per_cycle_streams=bool(given("per_cycle_streams")),
            reconcile_interval_hours=number(
                "reconcile_interval_hours", float, DEFAULT_RECONCILE_INTERVAL_HOURS
            ),
            webhook_retention_days=number(
                "webhook_retention_days", float, DEFAULT_WEBHOOK_RETENTION_DAYS
            ),
            webhook_host=str(given("webhook_host") or DEFAULT_WEBHOOK_HOST),
            webhook_port=number("webhook_port", int, DEFAULT_WEBHOOK_PORT),
            token_store_path=given("token_store_path"),
            store_url=given("store_url"),
            store_timeout_seconds=number(
                "store_timeout_seconds", float, DEFAULT_STORE_TIMEOUT_SECONDS
            ),
            member_shard=member_shard(given("member_shard")),
            cycle_ids=ids("cycle_ids"),
            sleep_ids=ids("sleep_ids"),
            workout_ids=ids("workout_ids"),
            sleep_signal_types=tuple(dict.fromkeys(ids("sleep_signal_types"))),
        )
