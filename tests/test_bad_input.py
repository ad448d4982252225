"""Malformed files and settings, through the real `tap-whoop` command: one line, exit 2.

Each run must end in exactly one stderr line naming what is wrong and how to fix it, with no
traceback, no request to WHOOP (the sandbox), nothing in the token store, and no secret printed.
The bad config files go through the tap, its `--test`, `auth` and `revoke` alike.
"""

from __future__ import annotations

import json
import typing as t

import pytest

from tests.auth_support import catalog_file, cli_env, run_cli, write_json
from tests.conftest import tap_config

if t.TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from pathlib import Path

    from whoop_sandbox import Sandbox

DEEP = "is nested more than 100 levels deep, far deeper than {} is: check that it is the right file"
DATE_RANGE = (
    "is out of range: use a date-time from 2000-01-01 to 9999-12-31 (WHOOP has data from 2015 "
    "on, and refuses dates before year 1000)"
)
MAP_FUNCTIONS = "bool, datetime, float, int, json, md5, rand, randint, sha256, str"


def _deep_list(levels: int) -> str:
    return "[" * levels + "]" * levels


def _deep_object(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


#: id -> (what to do to a good config, or the file's text; the error after `tap-whoop: error: `)
BAD_CONFIGS: dict[str, tuple[t.Callable[[dict[str, t.Any]], t.Any], str]] = {
    "config 100,000 arrays deep": (lambda _: _deep_list(100_000), DEEP.format("a tap config")),
    "config 100,000 objects deep": (lambda _: _deep_object(100_000), DEEP.format("a tap config")),
    "NUL in token_store_path": (
        lambda config: config | {"token_store_path": config["token_store_path"] + "\x00x"},
        "token_store_path contains a NUL character (\\x00), which no file path can hold: fix "
        "the path",
    ),
    "empty token_store_path": (
        lambda config: config | {"token_store_path": ""},
        "token_store_path is empty: remove the setting to use the default token store, or give "
        "the file's path",
    ),
    "stream map syntax": (
        lambda config: config | {"stream_maps": {"cycles": {"x": "1 +"}}},
        "stream_maps.cycles.x ('1 +') is not a valid expression (invalid syntax): fix it or "
        "remove it",
    ),
    "stream map unknown function": (
        lambda config: config | {"stream_maps": {"cycles": {"x": "nosuch(id) + str(id)"}}},
        "stream_maps.cycles.x ('nosuch(id) + str(id)') calls unknown function(s) nosuch(): a "
        f"stream map can call {MAP_FUNCTIONS}",
    ),
    "start_date year 999": (
        lambda config: config | {"start_date": "0999-01-01T00:00:00Z"},
        f"start_date '0999-01-01T00:00:00Z' {DATE_RANGE}",
    ),
}

#: Checked through the tap only: the same setting checks as above.
MORE_BAD_CONFIGS: dict[str, tuple[t.Callable[[dict[str, t.Any]], t.Any], str]] = {
    "start_date year 1": (
        lambda config: config | {"start_date": "0001-01-01"},
        f"start_date '0001-01-01' {DATE_RANGE}",
    ),
    "end_date year 999": (
        lambda config: config | {"end_date": "0999-12-31T00:00:00Z"},
        f"end_date '0999-12-31T00:00:00Z' {DATE_RANGE}",
    ),
    "end_date past 9999 in UTC": (
        lambda config: config | {"end_date": "9999-12-31T23:00:00-05:00"},
        f"end_date '9999-12-31T23:00:00-05:00' {DATE_RANGE}",
    ),
    "whitespace token_store_path": (
        lambda config: config | {"token_store_path": "  "},
        "token_store_path is empty: remove the setting to use the default token store, or give "
        "the file's path",
    ),
    "stream map filter syntax": (
        lambda config: config | {"stream_maps": {"sleep": {"__filter__": "id =="}}},
        "stream_maps.sleep.__filter__ ('id ==') is not a valid expression (invalid syntax): fix "
        "it or remove it",
    ),
    "stream map __else__ not null": (
        lambda config: config | {"stream_maps": {"cycles": {"__else__": "drop"}}},
        "stream_maps.cycles.__else__ can only be null (drop what no map names), not 'drop'",
    ),
    "stream map removes a key property": (
        lambda config: config | {"stream_maps": {"cycles": {"id": None}}},
        "stream_maps: Removing key property 'id' is not permitted in 'cycles' stream map config. "
        "To remove a key property, use the `__key_properties__` operator to specify either a new "
        "list of key property names or `null` to replicate with no key properties in the "
        "stream. (fix the stream map; see the Singer SDK's stream maps documentation)",
    ),
    "flattening without a depth": (
        lambda config: config | {"flattening_enabled": True},
        "flattening_max_depth is required when flattening is enabled",
    ),
}

#: How each command is given the config file `{}`.
COMMANDS = {
    "tap": ["--config", "{}"],
    "--test": ["--config", "{}", "--test"],
    "auth": ["auth", "--config", "{}", "--no-browser"],
    "revoke": ["--config", "{}", "revoke", "--member", "default"],
}


@pytest.fixture
def bad_run(
    sandbox: Sandbox, tmp_path: Path
) -> Callable[[list[str], dict[str, t.Any]], subprocess.CompletedProcess[str]]:
    """Run `tap-whoop args` and check what every bad input must leave untouched."""
    home = tmp_path / "home"
    home.mkdir()

    def run(args: list[str], config: dict[str, t.Any]) -> subprocess.CompletedProcess[str]:
        env = cli_env(HOME=str(home), XDG_DATA_HOME=str(home / "data"))
        result = run_cli(*args, stdin="", env=env)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stdout + result.stderr
        assert sandbox.stats()["requests"] == 0
        assert sandbox.stats()["token_requests"] == 0
        assert not (tmp_path / "store").exists(), "the token store was touched"
        assert list(home.iterdir()) == [], "the default token store was touched"
        output = result.stdout + result.stderr
        assert config["client_secret"] not in output
        assert config["refresh_token"] not in output
        return result

    return run


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tap-whoop: error: ")
    return lines[0].removeprefix("tap-whoop: error: ")


def _config_file(tmp_path: Path, config: dict[str, t.Any], mistake: t.Callable[..., t.Any]) -> str:
    bad = mistake(dict(config))
    path = tmp_path / "config.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_fails_in_one_line_in_every_command(
    sandbox: Sandbox,
    tmp_path: Path,
    bad_run: Callable[..., subprocess.CompletedProcess[str]],
    case: str,
    command: str,
) -> None:
    config = tap_config(sandbox, tmp_path)
    mistake, expected = BAD_CONFIGS[case]
    path = _config_file(tmp_path, config, mistake)
    result = bad_run([arg.format(path) for arg in COMMANDS[command]], config)

    # `--config` before the command (the tap, Meltano's `--config F revoke`) is the SDK's option
    if case.startswith("config ") and command in ("tap", "--test", "revoke"):
        expected = f"Invalid value for '--config': {path} {expected}"
    elif case.startswith("config "):
        expected = f"--config {path} {expected}"
    assert _one_line(result) == expected


@pytest.mark.parametrize("case", list(MORE_BAD_CONFIGS))
def test_more_bad_settings_fail_in_one_line(
    sandbox: Sandbox,
    tmp_path: Path,
    bad_run: Callable[..., subprocess.CompletedProcess[str]],
    case: str,
) -> None:
    config = tap_config(sandbox, tmp_path)
    mistake, expected = MORE_BAD_CONFIGS[case]
    result = bad_run(["--config", _config_file(tmp_path, config, mistake)], config)

    assert _one_line(result) == expected


def _entry(**changes: t.Any) -> dict[str, t.Any]:
    entry = {"tap_stream_id": "cycles", "stream": "cycles", "schema": {}, "metadata": []}
    return {"streams": [entry | changes]}


REGENERATE = "fix it, or regenerate it with --discover"
BAD_CATALOGS = {
    "streams of numbers": (
        {"streams": [1, 2]},
        f"streams[0] is 1, not a catalog entry (an object): {REGENERATE}",
    ),
    "metadata a string": (
        _entry(metadata="x"),
        "streams[0] (cycles): 'metadata' must be a list of {breadcrumb: [...], metadata: {...}} "
        f"objects: {REGENERATE}",
    ),
    "metadata entry without breadcrumb": (
        _entry(metadata=[{"metadata": {"selected": True}}]),
        "streams[0] (cycles): 'metadata' must be a list of {breadcrumb: [...], metadata: {...}} "
        f"objects: {REGENERATE}",
    ),
    "schema null": (
        _entry(schema=None),
        f"streams[0] (cycles) has no 'schema' object: {REGENERATE}",
    ),
    "schema properties a list": (
        _entry(schema={"properties": []}),
        f"streams[0] (cycles): 'schema.properties' must be an object: {REGENERATE}",
    ),
    "no tap_stream_id": (
        {"streams": [{"stream": "cycles", "schema": {}, "metadata": []}]},
        f"streams[0] has no 'tap_stream_id' (a stream name): {REGENERATE}",
    ),
    "schema 500 levels deep": (
        _entry(schema=json.loads(_deep_object(500))),
        DEEP.format("a Singer catalog"),
    ),
}

PARTITION = {"replication_key": "start", "replication_key_value": "2026-01-01T00:00:00Z"}
NO_CONTEXT = (
    "partition 0 of bookmark 'cycles' has no 'context' object (the member's {\"user_id\": …}): "
    "fix it, or start without --state"
)
BAD_STATES: dict[str, tuple[t.Any, str]] = {
    "partition without context": (
        {"bookmarks": {"cycles": {"partitions": [PARTITION]}}},
        NO_CONTEXT,
    ),
    "partition context not an object": (
        {"bookmarks": {"cycles": {"partitions": [PARTITION | {"context": "alice"}]}}},
        NO_CONTEXT,
    ),
    "progress_markers not an object": (
        {"bookmarks": {"cycles": {"partitions": [{"context": {}, "progress_markers": "x"}]}}},
        "the progress_markers of bookmark 'cycles' must be an object",
    ),
    "window_ids not pairs": (
        {"bookmarks": {"cycles": {"partitions": [PARTITION | {"context": {}, "window_ids": "x"}]}}},
        "the state's window_ids for cycles are not [id, date-time] pairs: remove the field (that "
        "run then finds no deletions in its window; a full refresh finds them)",
    ),
    "window_ids with a date that is none": (
        {
            "bookmarks": {
                "cycles": {"partitions": [PARTITION | {"context": {}, "window_ids": [["1", 7]]}]}
            }
        },
        "the state's window_ids for cycles are not [id, date-time] pairs: remove the field (that "
        "run then finds no deletions in its window; a full refresh finds them)",
    ),
    "backfill_end not a date-time": (
        {
            "bookmarks": {
                "cycles": {"partitions": [PARTITION | {"context": {}, "backfill_end": "soon"}]}
            }
        },
        "the state's backfill_end for cycles ('soon') is not a date-time: clear the state "
        "(`meltano state clear …`) to read the history again",
    ),
    "backfill_start a number": (
        {
            "bookmarks": {
                "cycles": {"partitions": [PARTITION | {"context": {}, "backfill_start": 3}]}
            }
        },
        "the state's backfill_start for cycles ('3') is not a date-time: clear the state "
        "(`meltano state clear …`) to read the history again",
    ),
    "50,000 objects deep": (_deep_object(50_000), DEEP.format("a Singer state")),
    "50,000 arrays deep": (_deep_list(50_000), DEEP.format("a Singer state")),
    "context 500 levels deep": (
        {"bookmarks": {"cycles": {"partitions": [{"context": json.loads(_deep_object(500))}]}}},
        DEEP.format("a Singer state"),
    ),
}


@pytest.mark.parametrize(
    ("option", "case"),
    [("--catalog", case) for case in BAD_CATALOGS] + [("--state", case) for case in BAD_STATES],
)
def test_a_malformed_catalog_or_state_fails_in_one_line(
    sandbox: Sandbox,
    tmp_path: Path,
    bad_run: Callable[..., subprocess.CompletedProcess[str]],
    option: str,
    case: str,
) -> None:
    config = tap_config(sandbox, tmp_path)
    content, expected = (BAD_CATALOGS if option == "--catalog" else BAD_STATES)[case]
    path = tmp_path / f"{option.strip('-')}.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    config_path = str(write_json(tmp_path / "config.json", config))
    result = bad_run(["--config", config_path, option, str(path)], config)

    separator = " " if expected.startswith("is nested") else ": "
    assert _one_line(result) == f"Invalid value for '{option}': {path}{separator}{expected}"


def test_the_date_bounds_and_a_used_stream_map_are_accepted(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The control: dates at the bounds and a stream map with known functions do sync."""
    config = tap_config(
        sandbox,
        tmp_path,
        start_date="2000-01-01T00:00:00Z",
        end_date="9999-12-31T00:00:00Z",
        stream_maps={"cycles": {"id_hash": "md5(str(id))", "__filter__": "bool(id)"}},
    )
    catalog = catalog_file(tmp_path / "catalog.json", config, {"cycles"})
    config_path = str(write_json(tmp_path / "config.json", config))
    result = run_cli("--config", config_path, "--catalog", str(catalog), env=cli_env())

    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if '"RECORD"' in line]
    assert records
    assert all(len(message["record"]["id_hash"]) == 32 for message in records)


SHARD_FORM = (
    "is not `i/n` with 0 <= i < n <= 999999 (e.g. 0/4 for the first of four processes): fix "
    "it, or remove it to sync every member"
)
#: (setting, bad value, the error after `tap-whoop: error: `)
BAD_NEW_SETTINGS: list[tuple[str, t.Any, str]] = [
    ("member_shard", "3/2", f"member_shard '3/2' {SHARD_FORM}"),
    ("member_shard", "a/b", f"member_shard 'a/b' {SHARD_FORM}"),
    ("max_requests_per_run", 0, "max_requests_per_run: 0 is less than the minimum of 1"),
    ("max_requests_per_run", -1, "max_requests_per_run: -1 is less than the minimum of 1"),
    (
        "max_requests_per_run",
        "abc",
        "max_requests_per_run: 'abc' is not a whole number; give a whole number, or declare the "
        "setting with `kind: integer` in meltano.yml",
    ),
    ("profile_interval_hours", -1, "profile_interval_hours: -1 is less than the minimum of 0"),
    (
        "profile_interval_hours",
        "x",
        "profile_interval_hours: 'x' is not a number; give a number",
    ),
    (
        "store_url",
        "mysql://x",
        "store_url must be a PostgreSQL URL, postgresql://USER:PASSWORD@HOST:PORT/DATABASE (its "
        "scheme is 'mysql'); without store_url the token store stays in files",
    ),
]


@pytest.mark.parametrize("command", ["tap", "--test"])
@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    BAD_NEW_SETTINGS,
    ids=[f"{setting}={value!r}" for setting, value, _ in BAD_NEW_SETTINGS],
)
def test_a_bad_shard_request_cap_profile_interval_or_store_url_fails_in_one_line_naming_it(
    sandbox: Sandbox,
    tmp_path: Path,
    bad_run: Callable[..., subprocess.CompletedProcess[str]],
    setting: str,
    value: t.Any,
    expected: str,
    command: str,
) -> None:
    config = tap_config(sandbox, tmp_path)
    path = _config_file(tmp_path, config, lambda good: good | {setting: value})
    result = bad_run([arg.format(path) for arg in COMMANDS[command]], config)

    line = _one_line(result)
    assert line.startswith(setting)
    assert line == expected
