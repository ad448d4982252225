"""Bad settings, through the real `tap-whoop` command: one line naming the setting, no request."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import secrets
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from conftest import CLIENT_ID, CLIENT_SECRET, catalog_selecting

from tap_whoop.errors import ConfigError
from tap_whoop.settings import CONFIG_SCHEMA, Settings
from tap_whoop.tap import TapWhoop

if t.TYPE_CHECKING:
    from whoop_sandbox import Sandbox

TAP = Path(sys.executable).with_name("tap-whoop")


def run_cli(
    tmp_path: Path, config: dict[str, t.Any], *args: str
) -> subprocess.CompletedProcess[str]:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAP_WHOOP_", "MELTANO_"))}
    return subprocess.run(
        [str(TAP), "--config", str(config_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def secrets_in(config: dict[str, t.Any]) -> list[str]:
    """Everything secret a run could leak: client secret, refresh tokens, stored tokens."""
    found = [config["client_secret"]] if config.get("client_secret") else []
    found += [config["refresh_token"]] if config.get("refresh_token") else []
    found += [u["refresh_token"] for u in config.get("users", []) if u.get("refresh_token")]
    store = Path(config["token_store_path"])
    if store.exists():
        for entry in json.loads(store.read_text())["members"].values():
            found += [entry[k] for k in ("access_token", "refresh_token") if entry.get(k)]
    return found


def assert_no_secrets(result: subprocess.CompletedProcess[str], config: dict[str, t.Any]) -> None:
    leaked = [s for s in secrets_in(config) if s in result.stdout or s in result.stderr]
    assert not leaked, "a secret was printed"


def base_config(sandbox: Sandbox, tmp_path: Path) -> dict[str, t.Any]:
    server = sandbox.server  # type: ignore[attr-defined]
    return {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": f"rt-{secrets.token_hex(16)}",
        "api_url": server.api_url,
        "oauth_url": server.oauth_url,
        "token_store_path": str(tmp_path / "store" / "tokens.json"),
    }


def test_a_valid_config_reaches_the_sandbox_and_prints_no_secret(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The control for the cases below: the same command, run right, does reach the sandbox."""
    config = base_config(sandbox, tmp_path) | {
        "refresh_token": sandbox.seed_refresh_token("alice"),
        "start_date": (sandbox.now.replace(microsecond=0)).isoformat(),
    }
    result = run_cli(tmp_path, config)

    assert result.returncode == 0, result.stderr[-2000:]
    assert sandbox.stats()["requests"] > 0
    assert sandbox.stats()["refreshes"] == 1
    assert '"type":"RECORD"' in result.stdout.replace(" ", "")
    assert "Traceback" not in result.stdout + result.stderr
    assert len(secrets_in(config)) >= 4  # client secret, the seed, rotated and access tokens
    assert_no_secrets(result, config)


def _drop(*names: str) -> t.Callable[[dict[str, t.Any]], dict[str, t.Any]]:
    return lambda config: {k: v for k, v in config.items() if k not in names}


def _with(**changes: t.Any) -> t.Callable[[dict[str, t.Any]], dict[str, t.Any]]:
    return lambda config: config | changes


def _users(*users: dict[str, t.Any]) -> t.Callable[[dict[str, t.Any]], dict[str, t.Any]]:
    return lambda config: _drop("refresh_token")(config) | {"users": list(users)}


BAD_SETTINGS = [
    pytest.param(_drop("client_id"), ("client_id",), id="missing client_id"),
    pytest.param(_drop("client_secret"), ("client_secret",), id="missing client_secret"),
    pytest.param(_drop("refresh_token"), ("refresh_token",), id="no refresh token anywhere"),
    pytest.param(_with(start_date="last tuesday"), ("start_date",), id="malformed start_date"),
    pytest.param(_with(end_date="2024-13-45"), ("end_date",), id="malformed end_date"),
    pytest.param(
        _with(start_date="2024-02-01T00:00:00Z", end_date="2024-01-01T00:00:00Z"),
        ("start_date", "end_date"),
        id="reversed window",
    ),
    pytest.param(_with(lookback_days=-1), ("lookback_days",), id="negative lookback"),
    pytest.param(
        _users({"key": "alice", "refresh_token": "rt-alice"}, {"refresh_token": "rt-nobody"}),
        ("users[1]",),
        id="users entry without key",
    ),
    pytest.param(  # with another member to sync, bob alone is skipped (test_isolation.py)
        _users({"key": "bob"}),
        ("users", "'bob'"),
        id="the only users entry without refresh token",
    ),
    pytest.param(_with(lookback_days=None), ("lookback_days",), id="null lookback"),
    pytest.param(_with(lookback_days=10**9), ("lookback_days",), id="absurd lookback"),
    pytest.param(_with(sleep_ids=["not-a-uuid"]), ("sleep_ids[0]",), id="sleep id not a uuid"),
    pytest.param(_with(workout_ids=[42]), ("workout_ids[0]",), id="workout id not a uuid"),
    pytest.param(_with(cycle_ids=[1, "two"]), ("cycle_ids[1]",), id="cycle id not a number"),
]


@pytest.mark.parametrize(("mistake", "named"), BAD_SETTINGS)
def test_a_bad_setting_fails_in_one_line_before_any_request(
    sandbox: Sandbox,
    tmp_path: Path,
    mistake: t.Callable[[dict[str, t.Any]], dict[str, t.Any]],
    named: tuple[str, ...],
) -> None:
    config = mistake(base_config(sandbox, tmp_path))
    result = run_cli(tmp_path, config)

    assert_fails_in_one_line(result, named)
    assert_nothing_requested(sandbox)
    assert_no_secrets(result, config)


def test_an_unknown_stream_in_the_catalog_fails_in_one_line(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config = base_config(sandbox, tmp_path)
    catalog = TapWhoop(config=config, validate_config=False).catalog_dict
    unknown = json.loads(json.dumps(catalog["streams"][0]))
    unknown["tap_stream_id"] = unknown["stream"] = "heart_rate"
    catalog["streams"].append(unknown)
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps(catalog))
    result = run_cli(tmp_path, config, "--catalog", str(catalog_file))

    assert_fails_in_one_line(result, ("heart_rate", "catalog"))
    assert_nothing_requested(sandbox)
    assert_no_secrets(result, config)


def assert_fails_in_one_line(
    result: subprocess.CompletedProcess[str], named: tuple[str, ...]
) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    lines = result.stderr.strip().splitlines()
    assert lines
    errors = [line for line in lines if "error" in line.lower()]
    assert errors == [lines[-1]], "the error is not exactly one line, the last one"
    assert lines[-1].startswith("tap-whoop: error: ")
    for name in named:
        assert name in lines[-1]
    assert '"type":"RECORD"' not in result.stdout.replace(" ", "")


def assert_nothing_requested(sandbox: Sandbox) -> None:
    stats = sandbox.stats()
    assert stats["requests"] == 0
    assert stats["token_requests"] == 0


BAD_FILES = [
    pytest.param("--state", "{not json", ("state.json", "not valid JSON"), id="state not JSON"),
    pytest.param("--state", "[]", ("state.json", "not a Singer state"), id="state not an object"),
    pytest.param(
        "--state", '{"bookmarks": []}', ("state.json", "bookmarks"), id="bookmarks not an object"
    ),
    pytest.param(
        "--state",
        '{"bookmarks": {"cycles": {"partitions": [{"context": {"user_id": 1}, '
        '"replication_key": "start", "replication_key_value": "yesterday"}]}}}',
        ("cycles", "'yesterday'", "not a date-time"),
        id="bookmark not a date-time",
    ),
    pytest.param(
        "--catalog", "{not json", ("catalog.json", "not valid JSON"), id="catalog not JSON"
    ),
    pytest.param(
        "--catalog", '{"streams": {}}', ("catalog.json", "not a Singer catalog"), id="not a catalog"
    ),
]


@pytest.mark.parametrize(("option", "content", "named"), BAD_FILES)
def test_a_bad_state_or_catalog_file_fails_in_one_line(
    sandbox: Sandbox, tmp_path: Path, option: str, content: str, named: tuple[str, ...]
) -> None:
    config = base_config(sandbox, tmp_path)
    path = tmp_path / f"{option.strip('-')}.json"
    path.write_text(content)
    result = run_cli(tmp_path, config, option, str(path))

    assert_fails_in_one_line(result, named)
    assert_nothing_requested(sandbox)


def test_a_drill_down_without_its_cycles_fails_in_one_line(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config = base_config(sandbox, tmp_path)
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(
        json.dumps(catalog_selecting(config, {"profile", "recovery_for_cycle"}))
    )
    result = run_cli(tmp_path, config, "--catalog", str(catalog_file))

    assert_fails_in_one_line(result, ("recovery_for_cycle", "cycles"))
    assert_nothing_requested(sandbox)


def test_settings_are_typed_and_take_the_schemas_defaults_when_left_out() -> None:
    """One typed reading of the config: every default is the schema's, none is restated."""
    settings = Settings.from_config({"client_id": "app", "client_secret": "s"})
    for name, spec in CONFIG_SCHEMA["properties"].items():
        if "default" in spec and hasattr(settings, name):
            assert getattr(settings, name) == spec["default"], name
    given = Settings.from_config(
        {
            "start_date": "2024-01-01",
            "end_date": "2024-02-01T00:00:00Z",
            "lookback_days": "5",
            "max_requests_per_run": 40,
            "member_shard": "1/4",
            "cycle_ids": [93845, "1002"],
            "api_url": "http://127.0.0.1:9/developer/",
        }
    )
    assert given.start_date == datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    assert given.end_date == datetime.datetime(2024, 2, 1, tzinfo=datetime.timezone.utc)
    assert (given.lookback_days, given.max_requests_per_run) == (5, 40)
    assert given.member_shard == (1, 4)
    assert given.cycle_ids == ("93845", "1002")
    assert given.api_url == "http://127.0.0.1:9/developer"
    with pytest.raises(dataclasses.FrozenInstanceError):
        given.lookback_days = 1  # type: ignore[misc]


def test_sample_config_holds_only_declared_settings_and_no_credential(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`cp sample_config.json tap.json` (README): empty credentials, named until filled in."""
    sample = json.loads((Path(__file__).resolve().parents[1] / "sample_config.json").read_text())
    assert set(sample) <= set(TapWhoop.settings_schema()["properties"])
    secrets_in_it = ("client_id", "client_secret", "refresh_token")
    assert all(sample[name] == "" for name in secrets_in_it)
    with pytest.raises(ConfigError, match=r"^client_id is missing"):
        TapWhoop(config=sample)
    with caplog.at_level("WARNING"):
        TapWhoop(config=sample | {name: f"my-{name}" for name in secrets_in_it})
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
