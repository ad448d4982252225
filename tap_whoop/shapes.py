"""The shapes of the Singer state and catalog the tap is given, as JSON Schema.

Checked before any request, so a damaged file is one line naming what is wrong and how to fix
it, not a failure half-way through a run. Each schema node carries the line it stands for
(`x-problem`); the first failure in document order is the one told.
"""

from __future__ import annotations

import json
import typing as t

from jsonschema import Draft202012Validator, FormatChecker

from tap_whoop.settings import date_problem, parse_time

if t.TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

PROBLEM = "x-problem"
_DATE_TIME = "whoop-date-time"
_FORMATS = FormatChecker(formats=())


@_FORMATS.checks(_DATE_TIME)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # the type says what else it may be
    try:
        parse_time(value)
    except ValueError:
        return False
    return True


def _state_time(field: str, fix: str) -> dict[str, t.Any]:
    return {
        "type": ["string", "null"],
        "format": _DATE_TIME,
        PROBLEM: f"the state's {field} for {{name}} ({{value!r}}) is not a date-time: {fix}",
    }


_HISTORY_AGAIN = "clear the state (`meltano state clear …`) to read the history again"
#: What the tap keeps beside a bookmark, in the stream's entry and in each member's partition.
_BESIDE_A_BOOKMARK: dict[str, t.Any] = {
    "progress_markers": {
        "type": "object",
        PROBLEM: "the progress_markers of bookmark {name!r} must be an object",
    },
    "backfill_start": _state_time("backfill_start", _HISTORY_AGAIN),
    "backfill_end": _state_time("backfill_end", _HISTORY_AGAIN),
    "polled_at": _state_time(
        "polled_at", "remove the field (the member's collections are then read in full)"
    ),
    "read_at": _state_time("read_at", "remove the field (the profile is then read again)"),
    "window_ids": {
        "type": ["array", "null"],
        "items": {
            "type": "array",
            "prefixItems": [
                {"type": ["string", "integer"]},
                {"type": "string", "format": _DATE_TIME},
            ],
            "minItems": 2,
            "maxItems": 2,
        },
        PROBLEM: "the state's window_ids for {name} are not [id, date-time] pairs: remove the "
        "field (that run then finds no deletions in its window; a full refresh finds them)",
    },
}
_PARTITIONS_PROBLEM = "the partitions of bookmark {name!r} must be a list of objects"
STATE_SCHEMA: dict[str, t.Any] = {
    "type": "object",
    PROBLEM: "not a Singer state (a JSON object with 'bookmarks')",
    "properties": {
        "bookmarks": {
            "type": "object",
            PROBLEM: "'bookmarks' must map each stream to an object; fix it or start without "
            "--state",
            "additionalProperties": {
                "type": "object",
                PROBLEM: "'bookmarks' must map each stream to an object; fix it or start "
                "without --state",
                "properties": {
                    "partitions": {
                        "type": "array",
                        PROBLEM: _PARTITIONS_PROBLEM,
                        "items": {
                            "type": "object",
                            PROBLEM: _PARTITIONS_PROBLEM,
                            "required": ["context"],
                            "properties": {
                                "context": {
                                    "type": "object",
                                    PROBLEM: "partition {index} of bookmark {name!r} has no "
                                    "'context' object (the member's {{\"user_id\": …}}): fix it, "
                                    "or start without --state",
                                },
                                **_BESIDE_A_BOOKMARK,
                            },
                        },
                    },
                    **_BESIDE_A_BOOKMARK,
                },
            },
        }
    },
}

_METADATA_PROBLEM = (
    "({stream}): 'metadata' must be a list of {{breadcrumb: [...], metadata: {{...}}}} objects"
)
_NOT_A_CATALOG = "not a Singer catalog (an object with a 'streams' list): see --discover"
CATALOG_SCHEMA: dict[str, t.Any] = {
    "type": "object",
    PROBLEM: _NOT_A_CATALOG,
    "required": ["streams"],
    "properties": {
        "streams": {
            "type": "array",
            PROBLEM: _NOT_A_CATALOG,
            "items": {
                "type": "object",
                PROBLEM: "is {entry}, not a catalog entry (an object)",
                "required": ["tap_stream_id", "schema"],
                "properties": {
                    "tap_stream_id": {
                        "type": "string",
                        "minLength": 1,
                        PROBLEM: "has no 'tap_stream_id' (a stream name)",
                    },
                    "schema": {
                        "type": "object",
                        PROBLEM: "({stream}) has no 'schema' object",
                        "properties": {
                            "properties": {
                                "type": "object",
                                PROBLEM: "({stream}): 'schema.properties' must be an object",
                            }
                        },
                    },
                    "metadata": {
                        "type": "array",
                        PROBLEM: _METADATA_PROBLEM,
                        "items": {
                            "type": "object",
                            PROBLEM: _METADATA_PROBLEM,
                            "required": ["breadcrumb", "metadata"],
                            "properties": {
                                "breadcrumb": {"type": "array", PROBLEM: _METADATA_PROBLEM},
                                "metadata": {"type": "object", PROBLEM: _METADATA_PROBLEM},
                            },
                        },
                    },
                },
            },
        }
    },
}
#: Which of an entry's problems is told first when it has several.
_ENTRY_ORDER = ("tap_stream_id", "schema", "metadata")

_STATE = Draft202012Validator(STATE_SCHEMA, format_checker=_FORMATS)
_CATALOG = Draft202012Validator(CATALOG_SCHEMA, format_checker=_FORMATS)


def _missing(error: ValidationError) -> str | None:
    """The key a `required` failure is about."""
    if error.validator != "required" or not isinstance(error.instance, dict):
        return None
    return next(name for name in error.validator_value if name not in error.instance)


def _told(error: ValidationError, root: dict[str, t.Any]) -> str:
    """The line of the failing node, or of the nearest node above it that has one."""
    nodes = [root]
    for step in list(error.absolute_schema_path)[:-1]:
        nodes.append(nodes[-1][step])
    if (missing := _missing(error)) is not None:
        nodes.append(nodes[-1]["properties"][missing])
    return next(str(node[PROBLEM]) for node in reversed(nodes) if PROBLEM in node)


def _first(errors: t.Iterable[ValidationError]) -> ValidationError | None:
    """The failure a reader meets first: by position, an entry's keys in `_ENTRY_ORDER`."""

    def order(error: ValidationError) -> tuple[t.Any, ...]:
        path = [
            (0, step, "") if isinstance(step, int) else (1, 0, str(step))
            for step in error.absolute_path
        ]
        within = _missing(error) or (error.absolute_path[2] if len(path) > 2 else None)
        rank = _ENTRY_ORDER.index(within) if within in _ENTRY_ORDER else len(_ENTRY_ORDER)
        return (path[:2], rank, path)

    return min(errors, key=order, default=None)


def catalog_problem(catalog: t.Any) -> str | None:
    """What keeps `catalog` from being a Singer catalog the SDK can read, if anything."""
    error = _first(_CATALOG.iter_errors(catalog))
    if error is None:
        return None
    path = list(error.absolute_path)
    if len(path) < 2:
        return _NOT_A_CATALOG
    index = path[1]
    entry = catalog["streams"][index]
    line = _told(error, CATALOG_SCHEMA).format(
        entry=json.dumps(entry)[:40],
        stream=entry.get("tap_stream_id") if isinstance(entry, dict) else None,
    )
    return f"streams[{index}] {line}: fix it, or regenerate it with --discover"


def state_problem(state: t.Any) -> str | None:
    """What keeps `state` from being a Singer state the tap can resume from, if anything."""
    error = _first(_STATE.iter_errors(state))
    if error is None:
        return None
    path = list(error.absolute_path)
    name = path[1] if len(path) > 1 else None
    index = path[3] if len(path) > 3 and path[2] == "partitions" else None
    return _told(error, STATE_SCHEMA).format(name=name, index=index, value=str(error.instance)[:60])


def bookmark_problem(state: t.Mapping[str, t.Any]) -> str | None:
    """`state_problem`, and a bookmark WHOOP would refuse as a date-time."""
    if problem := state_problem(state):
        return problem
    for name, bookmark in (state.get("bookmarks") or {}).items():
        for entry in [bookmark, *bookmark.get("partitions", [])]:
            value = entry.get("replication_key_value")
            if value is None:
                continue
            try:
                problem = date_problem(parse_time(str(value)))
            except ValueError:
                problem = "is not a date-time"
            if problem:
                return (
                    f"the state's bookmark for {name} ({value!r}) {problem}: fix the state, or "
                    "clear it (`meltano state clear …`) to re-read everything"
                )
    return None
