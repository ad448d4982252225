"""`tap-whoop auth`, `revoke` and `--test` as a member and an operator use them, over real HTTP.

Every run is the real `tap-whoop` command in a subprocess. The sandbox's consent page approves at
once and redirects, so a test plays the browser: GET the printed URL, take the Location, and paste
it on stdin (or let `--listen` catch it).
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import typing as t
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.auth_support import (
    TAP_WHOOP,
    catalog_file,
    cli_env,
    error_line,
    expire_access_tokens,
    run_cli,
    store_path,
    stored,
    write_json,
)
from tests.conftest import CLIENT_ID, CLIENT_SECRET, run_tap, tap_config
from whoop_sandbox import app as sandbox_app

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from whoop_sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"
MELTANO_TAP_VENV = ROOT / ".meltano" / "extractors" / "tap-whoop" / "venv"
MELTANO_HINT = (
    "run the tests with `bash scripts/test.sh`: it installs Meltano and the plugins "
    "(scripts/bootstrap.sh)"
)
SCOPES = [
    "read:profile",
    "read:body_measurement",
    "read:cycles",
    "read:recovery",
    "read:sleep",
    "read:workout",
    "offline",
]
DEFAULT_REDIRECT = "https://localhost/whoop/callback"


class AuthRun:
    """A `tap-whoop auth` process, driven the way a member at a browser drives it."""

    def __init__(
        self,
        *args: str,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = [*(command or [*TAP_WHOOP, "auth"]), *args]
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or cli_env(),
            cwd=cwd,
        )
        self.lines: list[str] = []
        self.url = self._read_url()
        self.query = {
            name: values[0] for name, values in parse_qs(urlsplit(self.url).query).items()
        }

    def _read_url(self) -> str:
        assert self.process.stdout is not None
        while line := self.process.stdout.readline():
            self.lines.append(line)
            if "/auth?" in line:
                return line.strip()
        self.process.wait(timeout=30)
        raise AssertionError(f"no authorization URL: {self.lines} {self.process.stderr.read()}")  # type: ignore[union-attr]

    def consent(self, member: str | None = None) -> str:
        """Approve at the sandbox's consent page; where it redirects the browser."""
        url = self.url + (f"&member={member}" if member else "")
        response = requests.get(url, allow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    def redirect(self, **params: str) -> str:
        """An address at the redirect URI carrying `params`, as WHOOP would send it."""
        return f"{self.query['redirect_uri']}?{urlencode(params)}"

    def finish(self, pasted: str | None = None) -> subprocess.CompletedProcess[str]:
        """Paste `pasted` (unless --listen) and wait for the end."""
        assert self.process.stdin
        assert self.process.stdout
        assert self.process.stderr
        if pasted is not None:
            self.process.stdin.write(pasted + "\n")
        self.process.stdin.close()
        stdout = "".join(self.lines) + self.process.stdout.read()
        stderr = self.process.stderr.read()
        self.process.wait(timeout=60)
        return subprocess.CompletedProcess(self.args, self.process.returncode, stdout, stderr)

    def kill(self) -> None:
        """Abandon the run."""
        self.process.kill()
        self.process.communicate()


@pytest.fixture
def auth_config(sandbox: Sandbox, tmp_path: Path) -> dict[str, t.Any]:
    """A config with app credentials and a store, but no refresh token: a member to authorize."""
    config = tap_config(sandbox, tmp_path)
    del config["refresh_token"]
    return config


@pytest.fixture
def config_file(auth_config: dict[str, t.Any], tmp_path: Path) -> str:
    return str(write_json(tmp_path / "config.json", auth_config))


def test_auth_end_to_end_by_pasting_the_redirect(
    sandbox: Sandbox, auth_config: dict[str, t.Any], config_file: str
) -> None:
    run = AuthRun("--config", config_file, "--no-browser")
    assert run.query["client_id"] == CLIENT_ID
    assert run.query["redirect_uri"] == DEFAULT_REDIRECT
    assert run.query["response_type"] == "code"
    assert run.query["scope"].split() == SCOPES
    assert len(run.query["state"]) >= 8
    result = run.finish(run.consent())
    assert result.returncode == 0, result.stderr
    alice = sandbox.members[0]
    assert (
        f"Member 'default' authorized: WHOOP user {alice.user_id} (Alice Moreau)" in result.stdout
    )
    entry = stored(auth_config)["default"]
    assert entry["user_id"] == alice.user_id
    for token in (entry["refresh_token"], entry["access_token"]):
        assert token not in result.stdout + result.stderr
    synced = run_tap(auth_config, select={"profile"})
    assert synced.error is None
    assert sandbox.stats()["refreshes"] == 0


def test_auth_rejects_the_redirect_of_another_run(
    auth_config: dict[str, t.Any], config_file: str
) -> None:
    first = AuthRun("--config", config_file, "--no-browser")
    second = AuthRun("--config", config_file, "--no-browser")
    assert first.query["state"] != second.query["state"]
    try:
        line = error_line(second.finish(first.consent()))
    finally:
        first.kill()
    assert "`state` does not match this run's" in line
    assert "nothing was stored" in line
    assert not store_path(auth_config).exists()


@pytest.mark.parametrize(
    ("pasted", "expected"),
    [
        ("", "nothing was pasted"),
        ("yes I clicked allow", "not the address WHOOP redirected to"),
        ("{url}", "not the address WHOOP redirected to"),
        ("{redirect}?state={state}", "not the address WHOOP redirected to"),
        ("{redirect}?code=a&code=b&state={state}", "carries `code`, `state` or `error` twice"),
        ("{redirect}?code=bogus&state={state}", "rejected the authorization code (HTTP 400"),
        (
            "{redirect}?error=access_denied&error_description=The+member+declined&state={state}",
            "WHOOP did not grant access (access_denied: The member declined)",
        ),
    ],
    ids=["empty", "prose", "consent_url", "no_code", "two_codes", "bogus_code", "denied"],
)
def test_auth_rejects_a_wrong_pasted_address(
    auth_config: dict[str, t.Any], config_file: str, pasted: str, expected: str
) -> None:
    run = AuthRun("--config", config_file, "--no-browser")
    text = pasted.format(url=run.url, redirect=DEFAULT_REDIRECT, state=run.query["state"])
    line = error_line(run.finish(text))
    assert expected in line
    assert not store_path(auth_config).exists()


def test_auth_listen_catches_the_redirect_itself(
    sandbox: Sandbox, auth_config: dict[str, t.Any], config_file: str
) -> None:
    run = AuthRun("--config", config_file, "--no-browser", "--listen", "0")
    callback = urlsplit(run.query["redirect_uri"])
    assert (callback.scheme, callback.hostname, callback.path) == (
        "http",
        "127.0.0.1",
        "/whoop/callback",
    )
    assert (
        requests.get(f"http://127.0.0.1:{callback.port}/favicon.ico", timeout=10).status_code == 404
    )
    page = requests.get(run.consent(), timeout=10)
    assert page.status_code == 200
    assert "close this tab" in page.text
    result = run.finish()
    assert result.returncode == 0, result.stderr
    assert f"WHOOP user {sandbox.members[0].user_id}" in result.stdout
    assert "default" in stored(auth_config)


def test_auth_listen_on_a_busy_port_is_one_line(config_file: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = error_line(run_cli("auth", "--config", config_file, "--listen", str(port)))
    assert f"cannot listen on 127.0.0.1:{port}" in line


def test_auth_for_a_named_member_can_print_the_refresh_token(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(members=("alice", "bob"))
    config = tap_config(sandbox, tmp_path, users=[{"key": "bob"}])
    del config["refresh_token"]
    path = str(write_json(tmp_path / "config.json", config))
    run = AuthRun("--config", path, "--member", "bob", "--no-browser", "--print-refresh-token")
    result = run.finish(run.consent(member="bob"))
    assert result.returncode == 0, result.stderr
    assert f"Member 'bob' authorized: WHOOP user {sandbox.members[1].user_id}" in result.stdout
    assert f"refresh_token: {stored(config)['bob']['refresh_token']}\n" in result.stdout
    assert "warning" not in result.stderr
    synced = run_tap(config, select={"profile"})
    assert [record["user_id"] for record in synced.records("profile")] == [
        sandbox.members[1].user_id
    ]


def test_auth_warns_about_a_member_the_config_does_not_sync(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(members=("alice", "bob"), history_days=2)
    config = tap_config(sandbox, tmp_path)
    path = str(write_json(tmp_path / "config.json", config))
    run = AuthRun("--config", path, "--member", "bob", "--no-browser")
    result = run.finish(run.consent(member="bob"))
    assert result.returncode == 0, result.stderr
    assert "member 'bob' is not in this config" in result.stderr


def test_the_printed_reauthorize_command_gets_a_stranded_member_going(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config = tap_config(sandbox, tmp_path)
    path = str(write_json(tmp_path / "config.json", config))
    catalog = str(catalog_file(tmp_path / "catalog.json", config, {"profile"}))
    assert run_cli("--config", path, "--catalog", catalog).returncode == 0
    sandbox.revoke("alice")
    expire_access_tokens(config)
    line = error_line(run_cli("--config", path, "--catalog", catalog))
    command = shlex.split(line.split("re-authorize with `")[1].split("`")[0])
    assert command[:2] == ["tap-whoop", "auth"]
    run = AuthRun("--no-browser", command=[*TAP_WHOOP, *command[1:]])
    assert run.finish(run.consent()).returncode == 0
    result = run_cli("--config", path, "--catalog", catalog)
    assert result.returncode == 0, result.stderr
    assert sandbox.stats()["invalid_grant"] == 1


def test_revoke_revokes_at_whoop_and_forgets_the_member(sandbox: Sandbox, tmp_path: Path) -> None:
    config = tap_config(sandbox, tmp_path)
    path = str(write_json(tmp_path / "config.json", config))
    assert run_tap(config, select={"profile"}).error is None
    refresh_token = stored(config)["default"]["refresh_token"]
    result = run_cli("revoke", "--config", path, "--member", "default")
    assert result.returncode == 0, result.stderr
    assert "Revoked WHOOP access for member 'default'" in result.stdout
    assert "remove its refresh_token from the config" in result.stdout
    assert stored(config) == {}
    assert sandbox.stats()["by_status"].get("204") == 1
    response = requests.post(
        f"{config['oauth_url']}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scope": "offline",
        },
        timeout=10,
    )
    assert response.json()["error"] == "invalid_grant"
    line = error_line(run_cli("revoke", "--config", path, "--member", "someone"))
    assert "member 'someone' is not in the token store" in line


def test_revoke_failures_are_one_line_and_keep_the_member(sandbox: Sandbox, tmp_path: Path) -> None:
    config = tap_config(sandbox, tmp_path)
    path = str(write_json(tmp_path / "config.json", config))
    assert run_tap(config, select={"profile"}).error is None
    sandbox.inject_fault("/v2/user/access", "500")
    line = error_line(run_cli("revoke", "--config", path, "--member", "default"))
    assert "WHOOP answered HTTP 500 internal_server_error to the revocation" in line
    assert "default" in stored(config)
    sandbox.revoke("alice")
    expire_access_tokens(config)
    line = error_line(run_cli("revoke", "--config", path, "--member", "default"))
    assert "WHOOP no longer accepts its tokens" in line
    assert f"`tap-whoop revoke --config {path} --member default --local-only`" in line
    assert "default" in stored(config)
    result = run_cli("revoke", "--config", path, "--member", "default", "--local-only")
    assert result.returncode == 0, result.stderr
    assert stored(config) == {}


@pytest.fixture
def two_members(start_sandbox: Callable[..., Sandbox], tmp_path: Path) -> tuple[Sandbox, dict]:
    """Alice and Bob, both fully consented, as members `a` and `b`."""
    sandbox = start_sandbox(members=("alice", "bob"), history_days=5)
    config = tap_config(
        sandbox,
        tmp_path,
        users=[
            {"key": "a", "refresh_token": sandbox.seed_refresh_token("alice")},
            {"key": "b", "refresh_token": sandbox.seed_refresh_token("bob")},
        ],
    )
    del config["refresh_token"]
    return sandbox, config


def test_check_refreshes_every_member_and_asks_each_endpoint(
    two_members: tuple[Sandbox, dict], tmp_path: Path
) -> None:
    sandbox, config = two_members
    path = str(write_json(tmp_path / "config.json", config))
    for expected_refreshes in (2, 4):
        result = run_cli("--config", path, "--test")
        assert result.returncode == 0, result.stderr
        stats = sandbox.stats()
        assert (stats["refreshes"], stats["invalid_grant"]) == (expected_refreshes, 0)
    alice, bob = sandbox.members
    assert f"member 'a': OK, WHOOP user {alice.user_id} (Alice Moreau)" in result.stdout
    assert f"member 'b': OK, WHOOP user {bob.user_id}" in result.stdout
    assert "answered: profile, body_measurement, cycles, recovery, sleep, workout" in result.stdout
    assert '"RECORD"' not in result.stdout


def test_check_names_the_member_the_endpoint_and_the_missing_scope(
    two_members: tuple[Sandbox, dict], tmp_path: Path
) -> None:
    sandbox, config = two_members
    config["users"][1]["refresh_token"] = sandbox.issue_refresh_token(
        "bob", scopes=["read:profile", "read:cycles"]
    )
    path = str(write_json(tmp_path / "config.json", config))
    result = run_cli("--config", path, "--test")
    line = error_line(result)
    assert "credential check failed for 1 of 2 member(s): member 'b': WHOOP refused" in line
    assert "/v2/activity/sleep (HTTP 403 insufficient_scope, scope read:sleep)" in line
    assert "lacks scope(s) read:body_measurement, read:recovery, read:sleep, read:workout" in line
    assert f"`tap-whoop auth --config {path} --member b`" in line
    assert "member 'a': OK" in result.stdout
    catalog = str(catalog_file(tmp_path / "catalog.json", config, {"profile", "cycles"}))
    result = run_cli("--config", path, "--test", "--catalog", catalog)
    assert result.returncode == 0, result.stderr
    assert "member 'b': OK" in result.stdout


def test_check_names_a_member_whose_refresh_token_is_dead(
    two_members: tuple[Sandbox, dict], tmp_path: Path
) -> None:
    sandbox, config = two_members
    sandbox.revoke("bob")
    path = str(write_json(tmp_path / "config.json", config))
    line = error_line(run_cli("--config", path, "--test"))
    assert "member 'b': WHOOP rejected the refresh token (HTTP 400 invalid_grant)" in line
    assert f"`tap-whoop auth --config {path} --member b`" in line


def test_check_asks_drill_downs_with_a_real_cycle_and_configured_ids(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    workout = sandbox.records("alice", "workout")[0]["id"]
    config["workout_ids"] = [workout]
    config["per_cycle_streams"] = True
    path = str(write_json(tmp_path / "config.json", config))
    streams = {
        "profile",
        "cycles",
        "recovery_for_cycle",
        "sleep_for_cycle",
        "workout_by_id",
        "sleep_by_id",
    }
    catalog = str(catalog_file(tmp_path / "catalog.json", config, streams))
    result = run_cli("--config", path, "--catalog", catalog, "--test")
    assert result.returncode == 0, result.stderr
    assert "answered: profile, cycles, recovery_for_cycle, sleep_for_cycle, workout_by_id" in (
        result.stdout
    )
    assert "skipped: sleep_by_id (no sleep_ids)" in result.stdout
    assert sandbox.stats()["by_path"].get(f"/v2/activity/workout/{workout}") == 1


def test_meltano_runs_subcommands_after_its_own_options(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    """`meltano invoke tap-whoop revoke …` runs `tap-whoop --config F --catalog C revoke …`."""
    path = str(write_json(tmp_path / "config.json", config))
    catalog = str(catalog_file(tmp_path / "catalog.json", config, {"profile"}))
    line = error_line(
        run_cli("--config", path, "--catalog", catalog, "revoke", "--member", "nobody")
    )
    assert f"member 'nobody' is not in the token store {store_path(config)}" in line
    sandbox.revoke("alice")
    env = cli_env(MELTANO_PROJECT_ROOT=str(tmp_path), MELTANO_ENVIRONMENT="sandbox")
    line = error_line(run_cli("--config", path, "--catalog", catalog, env=env))
    assert "`meltano --environment=sandbox invoke tap-whoop auth --member default`" in line


def _bad_inputs(tmp_path: Path, config: dict[str, t.Any]) -> dict[str, tuple[list[str], str]]:
    good = str(write_json(tmp_path / "good.json", config))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    no_secret = str(write_json(tmp_path / "no-secret.json", {**config, "client_secret": ""}))
    numeric = str(write_json(tmp_path / "numeric.json", {**config, "client_secret": 987654321}))
    users = str(write_json(tmp_path / "users.json", {**config, "users": [{"key": "a"}]}))
    corrupt = {**config, "token_store_path": str(broken)}
    corrupt_store = str(write_json(tmp_path / "corrupt-store.json", corrupt))
    return {
        "missing_config": (["--config", str(tmp_path / "nope.json")], "was not found"),
        "broken_config": (["--config", str(broken)], "Invalid value for '--config'"),
        "numeric_secret": (["--config", numeric], "client_secret must be a string"),
        "broken_catalog": (
            ["--config", good, "--catalog", str(broken), "--test"],
            "not valid JSON",
        ),
        "corrupt_store": (["--config", corrupt_store, "--test"], "is not valid JSON (line 1)"),
        "auth_unknown_option": (["auth", "--config", good, "--bogus"], "No such option"),
        "auth_bad_port": (["auth", "--config", good, "--listen", "http"], "--listen"),
        "auth_no_config": (["auth"], "Missing option '--config'"),
        "auth_missing_config": (
            ["auth", "--config", str(tmp_path / "nope.json")],
            "cannot read --config",
        ),
        "auth_no_secret": (["auth", "--config", no_secret], "client_secret is missing"),
        "auth_which_member": (["auth", "--config", users], "choose one with --member"),
        "auth_blank_member": (["auth", "--config", good, "--member", " "], "--member"),
        "revoke_no_member": (["revoke", "--config", good], "Missing option '--member'"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing_config",
        "broken_config",
        "numeric_secret",
        "broken_catalog",
        "corrupt_store",
        "auth_unknown_option",
        "auth_bad_port",
        "auth_no_config",
        "auth_missing_config",
        "auth_no_secret",
        "auth_which_member",
        "auth_blank_member",
        "revoke_no_member",
    ],
)
def test_bad_input_ends_in_one_line_without_a_traceback(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path, case: str
) -> None:
    args, expected = _bad_inputs(tmp_path, config)[case]
    result = run_cli(*args, stdin="")
    assert expected in error_line(result)
    assert "987654321" not in result.stdout + result.stderr
    assert sandbox.stats()["token_requests"] == 0


def test_no_secret_reaches_any_output_on_any_path(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drive every path, success and failure, at DEBUG, and look for every secret in the output."""
    issued: list[str] = []
    token_urlsafe = sandbox_app.secrets.token_urlsafe

    def recording(nbytes: int | None = None) -> str:
        issued.append(token_urlsafe(nbytes))
        return issued[-1]

    monkeypatch.setattr(sandbox_app.secrets, "token_urlsafe", recording)
    sandbox = start_sandbox(members=("alice", "bob"), history_days=3)
    config = tap_config(sandbox, tmp_path)
    path = str(write_json(tmp_path / "config.json", config))
    catalog = str(catalog_file(tmp_path / "catalog.json", config, {"profile", "cycles", "sleep"}))
    env = cli_env(TAP_WHOOP_LOGLEVEL="DEBUG")
    outputs: list[str] = []

    def run(*args: str, stdin: str | None = "") -> subprocess.CompletedProcess[str]:
        result = run_cli(*args, stdin=stdin, env=env)
        outputs.append(result.stdout + result.stderr)
        return result

    def sync() -> subprocess.CompletedProcess[str]:
        return run("--config", path, "--catalog", catalog)

    def fault(path_: str, kind: str, *, expire: bool = True) -> None:
        if expire:
            expire_access_tokens(config)
        sandbox.inject_fault(path_, kind)

    def auth(pasted: Callable[[AuthRun], str]) -> None:
        auth_run = AuthRun("--config", path, "--no-browser", env=env)
        result = auth_run.finish(pasted(auth_run))
        outputs.append(result.stdout + result.stderr)

    assert sync().returncode == 0
    for kind in ("garbage", "500", "401", "no_refresh_token"):
        fault("/oauth/oauth2/token", kind)
        sync()
    for api_path, kind in (
        ("/v2/cycle", "401"),
        ("/v2/activity/sleep", "403"),
        ("/v2/cycle", "500"),
    ):
        fault(api_path, kind, expire=False)
        sync()
    fault("/v2/activity/sleep", "garbage", expire=False)
    sync()
    run(
        "--config",
        str(write_json(tmp_path / "wrong.json", {**config, "client_secret": "wrong-secret-42"})),
        "--test",
    )
    run("--config", path, "--test")
    numeric = {**config, "users": [{"key": "a", "refresh_token": 5550123987654}]}
    run("--config", str(write_json(tmp_path / "numeric.json", numeric)))
    auth(lambda a: a.consent())
    auth(lambda a: a.redirect(code="bogus", state=a.query["state"]))
    auth(lambda a: a.redirect(error="access_denied", state=a.query["state"]))
    auth(lambda a: a.consent().replace("state=", "state=x"))
    sandbox.inject_fault("/v2/user/access", "500")
    run("revoke", "--config", path, "--member", "default")
    run("revoke", "--config", path, "--member", "default")
    sandbox.revoke("alice")
    expire_access_tokens(config)
    sync()
    run("--config", path, "--test")
    run("revoke", "--config", path, "--member", "default")
    store_path(config).write_text("{broken")
    sync()

    secrets = {CLIENT_SECRET, "wrong-secret-42", "5550123987654", *issued}
    secrets |= {sandbox.seed_refresh_token(member.key) for member in sandbox.members}
    output = "\n".join(outputs)
    assert len(outputs) > 20
    assert len(issued) > 8
    assert '"RECORD"' in output
    assert '"STATE"' in output
    leaked = sorted(secret for secret in secrets if secret in output)
    assert not leaked, f"{len(leaked)} secret(s) in the output"


@pytest.mark.e2e
def test_meltano_invoke_auth_and_the_reauthorize_command_it_prints(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The README's path: `meltano invoke tap-whoop auth`, then the command an error names."""
    missing = [str(path) for path in (MELTANO, MELTANO_TAP_VENV) if not path.exists()]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)}; {MELTANO_HINT}", pytrace=False)
    root = tmp_path / "project"
    (root / ".meltano" / "extractors" / "tap-whoop").mkdir(parents=True)
    (root / ".meltano" / "extractors" / "tap-whoop" / "venv").symlink_to(MELTANO_TAP_VENV)
    (root / "meltano.yml").write_text((ROOT / "meltano.yml").read_text())
    server = sandbox.server  # type: ignore[attr-defined]
    env = cli_env(
        MELTANO_PROJECT_ROOT=str(root),
        MELTANO_AUTO_INSTALL="false",
        MELTANO_CLI_DISABLE_VERSION_CHECK="1",
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        TAP_WHOOP_API_URL=server.api_url,
        TAP_WHOOP_OAUTH_URL=server.oauth_url,
    )
    meltano = [str(MELTANO), "--environment=sandbox", "invoke", "tap-whoop"]
    run = AuthRun(
        "--member", "default", "--no-browser", command=[*meltano, "auth"], env=env, cwd=root
    )
    result = run.finish(run.consent())
    assert result.returncode == 0, result.stderr
    assert "Member 'default' authorized" in result.stdout
    store = root / ".meltano" / "tap-whoop-sandbox" / "tokens.json"
    assert "default" in json.loads(store.read_text())["members"]
    sandbox.revoke("alice")
    check = subprocess.run(
        [*meltano, "--test"], cwd=root, env=env, capture_output=True, text=True, timeout=180
    )
    assert check.returncode != 0
    hint = "`meltano --environment=sandbox invoke tap-whoop auth --member default`"
    assert hint in check.stderr
    command = shlex.split(hint.strip("`"))
    run = AuthRun("--no-browser", command=[str(MELTANO), *command[1:]], env=env, cwd=root)
    assert run.finish(run.consent()).returncode == 0
    check = subprocess.run(
        [*meltano, "--test"], cwd=root, env=env, capture_output=True, text=True, timeout=180
    )
    assert check.returncode == 0, check.stderr
    assert "member 'default': OK" in check.stdout
