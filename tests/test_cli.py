"""The `tap-whoop` command as a scheduler and a Singer pipe see it: exit codes and one-line ends."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import typing as t

import pytest

from tests.auth_support import TAP_WHOOP, cli_env, write_json
from tests.conftest import run_tap

if t.TYPE_CHECKING:
    from pathlib import Path

    from whoop_sandbox import Sandbox


def test_a_target_that_stops_reading_ends_the_tap_in_one_line(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    path = write_json(tmp_path / "config.json", config)
    tap = subprocess.Popen(
        [*TAP_WHOOP, "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert tap.stdout is not None
    first = tap.stdout.readline()
    tap.stdout.close()  # the target is gone
    _, stderr = tap.communicate(timeout=120)
    lines = stderr.decode().strip().splitlines()

    assert first.startswith(b'{"type":"SCHEMA"')
    assert tap.returncode == 1
    assert lines[-1] == (
        "tap-whoop: error: the target stopped reading (broken pipe); the last STATE message it "
        "received is safe to resume from: check the target's own error"
    )
    assert "Traceback" not in stderr.decode()
    assert "Exception ignored" not in stderr.decode()


def test_meltanos_order_and_the_subcommands_own_config_both_reach_the_token_store(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    path = str(write_json(tmp_path / "config.json", config))
    for args in (
        ["--config", path, "revoke", "--member", "default", "--local-only"],
        ["revoke", "--config", path, "--member", "default", "--local-only"],
    ):
        result = subprocess.run(
            [*TAP_WHOOP, *args], capture_output=True, text=True, env=cli_env(), check=False
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip() == (
            "tap-whoop: error: member 'default' is not in the token store "
            f"{config['token_store_path']} (members there: none)"
        )


def test_revoking_a_key_that_shares_its_whoop_user_names_the_others_first(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    del config["refresh_token"]
    config["users"] = [
        {"key": "alice", "refresh_token": sandbox.seed_refresh_token("alice")},
        {"key": "alice-again", "refresh_token": sandbox.issue_refresh_token("alice")},
    ]
    assert run_tap(config, select={"profile"}).error is None
    path = str(write_json(tmp_path / "config.json", config))

    refused = subprocess.run(
        [*TAP_WHOOP, "revoke", "--config", path, "--member", "alice"],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
    )
    assert refused.returncode == 1
    line = refused.stderr.strip()
    assert "as are 'alice-again'" in line
    assert "nothing was revoked" in line
    assert f"`tap-whoop revoke --config {path} --member alice --also-disconnect-shared`" in line
    assert sandbox.stats()["by_path"].get("/v2/user/access") is None

    done = subprocess.run(
        [*TAP_WHOOP, "revoke", "--config", path, "--member", "alice", "--also-disconnect-shared"],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "'alice-again' (the same WHOOP user) lost access too" in done.stdout


def test_an_unreachable_whoop_fails_in_one_line_naming_the_host(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {**config, "api_url": f"http://127.0.0.1:{port}/developer", "max_request_attempts": 2}
    path = write_json(tmp_path / "config.json", config)
    result = subprocess.run(
        [*TAP_WHOOP, "--config", str(path)],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"tap-whoop: error: cannot reach WHOOP at 127.0.0.1:{port} (ConnectionError), gave up "
        "after retries: check api_url (and oauth_url) and the network"
    )


class _HtmlPage(http.server.BaseHTTPRequestHandler):
    """A web server that is not WHOOP: every address is the same HTML page."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>Welcome</title><p>Hello"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: t.Any) -> None:
        """Quiet."""


@pytest.fixture
def html_site() -> t.Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("args", [[], ["--test"]])
def test_an_api_url_that_is_not_whoops_api_is_named_in_sync_and_test(
    sandbox: Sandbox,
    config: dict[str, t.Any],
    tmp_path: Path,
    html_site: str,
    args: list[str],
) -> None:
    root = config["api_url"].removesuffix("/developer")
    for api_url, expected in (
        (root, f"api_url: {root} answered HTTP 404 for /v2/"),
        (html_site, f"api_url ({html_site}) is not WHOOP's API root"),
    ):
        path = write_json(
            tmp_path / "config.json", {**config, "api_url": api_url, "max_request_attempts": 2}
        )
        result = subprocess.run(
            [*TAP_WHOOP, "--config", str(path), *args],
            capture_output=True,
            text=True,
            env=cli_env(),
            check=False,
            timeout=120,
        )
        line = result.stderr.strip().splitlines()[-1]
        assert result.returncode != 0
        assert expected in line
        assert "https://api.prod.whoop.com/developer" in line
        assert "Traceback" not in result.stderr


def test_an_oauth_url_that_is_not_whoops_is_named(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    wrong = config["oauth_url"].removesuffix("/oauth/oauth2")
    path = write_json(tmp_path / "config.json", {**config, "oauth_url": wrong})
    result = subprocess.run(
        [*TAP_WHOOP, "--config", str(path)],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
        timeout=120,
    )
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0
    assert f"oauth_url: {wrong}/token answered HTTP 404" in line
    assert "https://api.prod.whoop.com/oauth/oauth2" in line


def _run_cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TAP_WHOOP, "--config", str(path), *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
        timeout=120,
    )


def test_settings_given_as_text_are_read_as_their_kind(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    """As Meltano passes settings a project does not declare: every value a string."""
    del config["refresh_token"]
    config |= {
        "users": f'[{{"key": "alice", "refresh_token": "{sandbox.seed_refresh_token("alice")}"}}]',
        "lookback_days": "2",
        "max_requests_per_minute": "100000",
        "request_timeout": "30.5",
        "max_request_attempts": "3",
        "per_cycle_streams": "false",
    }
    result = _run_cli(write_json(tmp_path / "config.json", config))

    assert result.returncode == 0, result.stderr[-2000:]
    assert '"type":"RECORD"' in result.stdout.replace(" ", "")


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        (
            "lookback_days",
            "two",
            "lookback_days: 'two' is not a whole number; give a whole number, or declare the "
            "setting with `kind: integer` in meltano.yml",
        ),
        (
            "per_cycle_streams",
            "maybe",
            "per_cycle_streams: 'maybe' is not true or false; give true or false, or declare the "
            "setting with `kind: boolean` in meltano.yml",
        ),
        (
            "users",
            "[{not json",
            "users: the value given is not a JSON array; give a JSON array, or declare the "
            "setting with `kind: array` in meltano.yml",
        ),
    ],
)
def test_text_that_makes_no_sense_names_the_setting_and_the_kind_to_declare(
    sandbox: Sandbox,
    config: dict[str, t.Any],
    tmp_path: Path,
    setting: str,
    value: str,
    expected: str,
) -> None:
    result = _run_cli(write_json(tmp_path / "config.json", {**config, setting: value}))

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"tap-whoop: error: {expected}"]
    assert sandbox.stats()["requests"] == 0


def test_an_unknown_setting_is_a_warning_naming_the_closest_one(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    result = _run_cli(write_json(tmp_path / "config.json", {**config, "lookback_day": 2}))

    assert result.returncode == 0, result.stderr[-2000:]
    assert "`lookback_day` is not a tap-whoop setting; did you mean `lookback_days`?" in (
        result.stderr
    )


def test_a_failure_prints_its_one_line_alone(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    result = _run_cli(
        write_json(tmp_path / "config.json", {**config, "client_secret": "not-the-secret"})
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tap-whoop: error: WHOOP rejected client_id/client_secret (invalid_client); copy them "
        "again from the WHOOP developer dashboard"
    ]


@pytest.mark.parametrize("command", [["--about"], ["--discover"], ["--version"]])
def test_commands_that_open_no_inbox_do_not_load_a_database_library(
    command: list[str], tmp_path: Path
) -> None:
    """SQLAlchemy and psycopg take a quarter of a second to load: only a run that uses them does."""
    config = write_json(
        tmp_path / "config.json", {"client_id": "a", "client_secret": "b", "refresh_token": "c"}
    )
    probe = (
        "import sys\nfrom tap_whoop.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(sorted({'sqlalchemy', 'psycopg'} & set(sys.modules)), file=sys.stderr)"
    )
    argv = [*command, "--config", str(config)] if command != ["--version"] else command
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, env=cli_env()
    )
    assert done.stderr.strip().splitlines()[-1] == "[]"
