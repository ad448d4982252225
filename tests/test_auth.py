"""The token store and each member's tokens against the sandbox: what must never strand a member.

Rotation across runs, racing processes, reseeding, WHOOP rejecting or garbling a refresh, and a
store that cannot be read or written. Tests run as root, which ignores permission bits, so real
permission failures are produced by running the tap as `nobody`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest
import requests

from tap_whoop.errors import (
    ConfigError,
    MemberError,
    MembersFailedError,
    TapWhoopError,
    TokenStoreError,
)
from tap_whoop.oauth import app as oauth_app
from tap_whoop.oauth import member as oauth_member
from tap_whoop.oauth.app import WhoopApp
from tap_whoop.oauth.member import MemberAuth
from tap_whoop.stores.file import TokenStore
from tap_whoop.stores.tokens import fingerprint
from tests.auth_support import (
    TAP_WHOOP,
    catalog_file,
    cli_env,
    error_line,
    expire_access_tokens,
    race_for_token,
    refresh_directly,
    run_cli,
    store_path,
    stored,
    write_json,
)
from tests.conftest import CLIENT_ID, CLIENT_SECRET, run_tap, tap_config

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from whoop_sandbox import Sandbox

TOKEN_PATH = "/oauth/oauth2/token"
PROFILE = {"profile"}
RACERS = 6


def synced(config: dict[str, t.Any]) -> None:
    result = run_tap(config, select=PROFILE)
    assert result.error is None, result.error
    assert result.records("profile")


def test_first_run_seeds_a_private_store_holding_only_a_hash_of_the_config_token(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    path = store_path(config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(f"{path}.lock").stat().st_mode) == 0o600
    assert stored(config)["default"]["seeded_from"] == fingerprint(config["refresh_token"])
    assert config["refresh_token"] not in path.read_text()
    assert not list(path.parent.glob(".tokens-*"))
    assert sandbox.stats()["refreshes"] == 1


@pytest.mark.parametrize("expiry", ["at_whoop", "in_store"])
def test_second_run_uses_the_rotated_token_and_the_seed_is_dead(
    sandbox: Sandbox, config: dict[str, t.Any], expiry: str
) -> None:
    synced(config)
    rotated = stored(config)["default"]["refresh_token"]
    if expiry == "at_whoop":
        sandbox.advance(hours=2)  # the store still trusts its access token: a 401, one refresh
    else:
        expire_access_tokens(config)
    synced(config)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (2, 0)
    assert stored(config)["default"]["refresh_token"] != rotated
    for dead in (config["refresh_token"], rotated):
        response = refresh_directly(sandbox, dead)
        assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_the_rotated_token_is_stored_before_any_data_request(
    sandbox: Sandbox, config: dict[str, t.Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, t.Any]] = []
    put, token_request, note = TokenStore.put, sandbox.token_request, sandbox.note_api_request
    prove = TokenStore.record  # the in-flight record, written the way the successor will be

    def recording_prove(store: TokenStore, key: str, entry: dict[str, t.Any]) -> None:
        prove(store, key, entry)
        events.append(("proved", None))

    def recording_write(store: TokenStore, key: str, entry: dict[str, t.Any]) -> None:
        put(store, key, entry)
        events.append(("stored", entry.get("refresh_token")))

    def recording_token_request(form: t.Any, **options: t.Any) -> dict[str, t.Any]:
        body = token_request(form, **options)
        events.append(("issued", body.get("refresh_token")))
        return body

    monkeypatch.setattr(TokenStore, "record", recording_prove)
    monkeypatch.setattr(TokenStore, "put", recording_write)
    monkeypatch.setattr(sandbox, "token_request", recording_token_request)
    monkeypatch.setattr(sandbox, "note_api_request", lambda p: (events.append(("api", p)), note(p)))
    synced(config)
    assert [kind for kind, _ in events[:3]] == ["proved", "issued", "stored"]
    assert events[2][1] == events[1][1]
    assert events[3:]
    # later writes only add facts (the member's WHOOP user id), never another token
    assert all(kind == "api" or value == events[2][1] for kind, value in events[3:])


def test_refresh_sends_offline_scope_and_client_credentials_in_the_body(
    sandbox: Sandbox, config: dict[str, t.Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    forms: list[dict[str, str]] = []
    token_request = sandbox.token_request

    def recording(form: t.Any, **options: t.Any) -> dict[str, t.Any]:
        forms.append(dict(form))
        return token_request(form, **options)

    monkeypatch.setattr(sandbox, "token_request", recording)
    synced(config)
    assert forms == [
        {
            "grant_type": "refresh_token",
            "refresh_token": config["refresh_token"],
            "scope": "offline",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }
    ]


def test_a_store_without_room_for_the_rotated_token_fails_before_spending_it(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    """A file-size limit (a quota, a full disk) stops the proof write, not the rotated token's."""
    config_file = write_json(tmp_path / "config.json", config)
    catalog = catalog_file(tmp_path / "catalog.json", config, PROFILE)
    limited = (
        "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
        "from tap_whoop.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", limited, "--config", str(config_file), "--catalog", str(catalog)],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
        check=False,
    )
    line = error_line(result)
    # the first file the run writes there fails: the app's rate-limit window, taken before the
    # first request's token, or the token store's proof write
    assert (
        f"cannot write token store {store_path(config)}: File too large" in line
        and "no refresh token was spent" in line
    ) or f"cannot open the shared rate-limit file {store_path(config).parent}/" in line, line
    assert sandbox.stats()["token_requests"] == 0
    assert not store_path(config).exists()
    synced(config)


def test_a_store_holding_another_oauth_hosts_tokens_is_neither_used_nor_overwritten(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    """The sandbox pointed at the real store (a Meltano `.env` overriding an environment's
    `config:`) must not replace a real member's rotated token with the sandbox's seed."""
    store = TokenStore(store_path(config))
    real = {
        "refresh_token": "real-rotated-token",
        "access_token": "real-access-token",
        "expires_at": time.time() + 3000,
        "lifetime": 3600.0,
        "user_id": 10129,
        "issuer": "api.prod.whoop.com",
    }
    store.put("default", real)
    before = store_path(config).read_bytes()
    app = WhoopApp(CLIENT_ID, CLIENT_SECRET, config["oauth_url"])
    with pytest.raises(MemberError) as raised:
        MemberAuth("default", config["refresh_token"], store, app).access_token()
    message = str(raised.value)
    assert "holds tokens issued by api.prod.whoop.com" in message
    assert "oauth_url is at 127.0.0.1; nothing was spent or changed" in message
    assert "real-rotated-token" not in message
    assert "real-access-token" not in message
    assert store_path(config).read_bytes() == before
    assert sandbox.stats()["token_requests"] == 0


def test_a_refreshed_entry_records_the_host_that_issued_it(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    assert stored(config)["default"]["issuer"] == "127.0.0.1"


def test_the_store_file_is_written_exactly_as_json_would_write_it_whatever_was_reused(
    tmp_path: Path,
) -> None:
    """Entries encoded once are reused across writes; the file is still `json.dumps` of it all."""
    path = tmp_path / "store" / "tokens.json"
    store = TokenStore(path)
    for round_ in range(3):
        for key in ("zoe", "al", "mo\u00e9", 'b"q'):
            store.put(key, {"refresh_token": f"{key}-{round_}", "expires_at": 1.5e9, "seen": []})
            text = path.read_text()
            assert text == json.dumps(json.loads(text), sort_keys=True)
    store.update_member("al", user_id=7)
    assert json.loads(path.read_text())["members"]["al"] == {
        "refresh_token": "al-2",
        "expires_at": 1.5e9,
        "seen": [],
        "user_id": 7,
    }


def test_a_store_file_another_process_rewrote_is_read_again_not_served_from_memory(
    tmp_path: Path,
) -> None:
    """The file store keeps what it last read; a write by anyone else makes it read again."""
    path = tmp_path / "store" / "tokens.json"
    mine, theirs = TokenStore(path), TokenStore(path)
    mine.put("alice", {"refresh_token": "a1"})
    mine.put("bob", {"refresh_token": "b1"})
    assert (mine.get("alice") or {})["refresh_token"] == "a1"
    theirs.put("alice", {"refresh_token": "a2"})
    assert (mine.get("alice") or {})["refresh_token"] == "a2"
    data = json.loads(path.read_text())
    data["members"]["bob"]["refresh_token"] = "b2"  # in place, the same size: a bind mount
    with path.open("r+") as handle:
        handle.write(json.dumps(data, sort_keys=True))
    assert (mine.get("bob") or {})["refresh_token"] == "b2"
    mine.put("carol", {"refresh_token": "c1"})
    assert {key: entry["refresh_token"] for key, entry in theirs.read()["members"].items()} == {
        "alice": "a2",
        "bob": "b2",
        "carol": "c1",
    }


def test_a_rotated_token_that_cannot_be_saved_stops_the_run_before_any_data_request(
    sandbox: Sandbox, config: dict[str, t.Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store breaks between the proof and the write: say the token is lost, sync nothing."""

    def failing(store: TokenStore, key: str, entry: dict[str, t.Any]) -> None:
        raise TokenStoreError(f"cannot write token store {store.path}: No space left on device")

    monkeypatch.setattr(TokenStore, "put", failing)
    monkeypatch.setattr(oauth_member, "PERSIST_ATTEMPTS", 2)
    result = run_tap(config, select=PROFILE)
    assert isinstance(result.error, TokenStoreError)
    message = str(result.error)
    assert "member 'default': WHOOP rotated the refresh token but it could not be saved" in message
    assert "No space left on device" in message
    assert "re-authorize with `tap-whoop auth --config CONFIG --member default`" in message
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["requests"]) == (1, 0)
    assert not result.records("profile")


def test_a_store_that_cannot_be_created_fails_before_spending_the_token(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    """The store's parent is a file: what root meets where others meet a read-only directory."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    result = run_tap({**config, "token_store_path": str(blocker / "tokens.json")}, select=PROFILE)
    assert isinstance(result.error, TokenStoreError)
    assert str(blocker) in str(result.error)
    assert sandbox.stats()["refreshes"] == 0
    synced(config)


def _permission_bits_bind(path: Path, *, readable: bool) -> list[str]:
    """Make the store's directory read-only (and the store unreadable unless `readable`).

    Returns the command prefix under which that binds: root keeps its uid but loses the
    capabilities that override permission bits.
    """
    path.parent.chmod(0o555)
    if not readable:
        path.chmod(0o000)
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.fail(
            "root ignores permission bits unless setpriv drops its capabilities; "
            "install util-linux (apt-get install util-linux), which provides setpriv",
            pytrace=False,
        )
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--"]


@pytest.mark.parametrize("readable", [True, False], ids=["unwritable_dir", "unreadable_store"])
def test_store_permission_problems_fail_clearly_and_spend_nothing(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path, readable: bool
) -> None:
    config_file = write_json(tmp_path / "config.json", config)
    catalog = catalog_file(tmp_path / "catalog.json", config, PROFILE)
    synced(config)
    expire_access_tokens(config)
    path = store_path(config)
    before = path.read_bytes()
    sandbox.reset_stats()
    try:
        prefix = _permission_bits_bind(path, readable=readable)
        result = run_cli("--config", str(config_file), "--catalog", str(catalog), prefix=prefix)
    finally:
        path.parent.chmod(0o700)
        path.chmod(0o600)
    line = error_line(result)
    assert f"token store {path}" in line
    assert ("cannot lock" in line or "cannot write" in line) if readable else "cannot read" in line
    assert "Permission denied" in line
    assert sandbox.stats()["token_requests"] == 0
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"members": []}',
        b'{"members": {"default": "a token"}}',
        b'{"members": {"default": {"refresh_token": "r", "expires_at": "soon"}}}',
        b"\xff\xfe",
    ],
)
def test_a_corrupt_store_fails_clearly_and_is_left_as_it_is(
    sandbox: Sandbox, config: dict[str, t.Any], content: bytes
) -> None:
    path = store_path(config)
    path.parent.mkdir(mode=0o700, parents=True)
    path.write_bytes(content)
    result = run_tap(config, select=PROFILE)
    assert isinstance(result.error, TokenStoreError)
    assert f"token store {path}" in str(result.error)
    assert path.read_bytes() == content
    assert sandbox.stats()["token_requests"] == 0


@pytest.mark.parametrize("rejection", ["HTTP 400 invalid_grant", "HTTP 401 unauthorized"])
def test_a_rejected_refresh_keeps_the_store_byte_for_byte(
    sandbox: Sandbox, config: dict[str, t.Any], rejection: str
) -> None:
    synced(config)
    expire_access_tokens(config)
    before = store_path(config).read_bytes()
    if "invalid_grant" in rejection:
        sandbox.revoke("alice")
    else:
        sandbox.inject_fault(TOKEN_PATH, "401")
    result = run_tap(config, select=PROFILE)
    assert isinstance(result.error, MembersFailedError)
    message = str(result.error)
    assert f"member 'default': WHOOP rejected the refresh token ({rejection})" in message
    assert "re-authorize with `tap-whoop auth --config CONFIG --member default`" in message
    assert store_path(config).read_bytes() == before


def test_a_rejected_refresh_names_the_exact_command_to_reauthorize(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    config_file = write_json(tmp_path / "config.json", config)
    catalog = catalog_file(tmp_path / "catalog.json", config, PROFILE)
    assert run_cli("--config", str(config_file), "--catalog", str(catalog)).returncode == 0
    expire_access_tokens(config)
    before = store_path(config).read_bytes()
    sandbox.revoke("alice")
    line = error_line(run_cli("--config", str(config_file), "--catalog", str(catalog)))
    assert "member 'default': WHOOP rejected the refresh token (HTTP 400 invalid_grant)" in line
    assert f"`tap-whoop auth --config {config_file} --member default`" in line
    assert store_path(config).read_bytes() == before


def test_a_wrong_client_secret_is_a_config_error_that_keeps_the_store(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    expire_access_tokens(config)
    before = store_path(config).read_bytes()
    result = run_tap({**config, "client_secret": "not-the-secret"}, select=PROFILE)
    assert isinstance(result.error, ConfigError)
    assert "client_secret" in str(result.error)
    assert "not-the-secret" not in str(result.error)
    assert store_path(config).read_bytes() == before


@pytest.mark.parametrize("fault", ["garbage", "500"])
def test_an_unreadable_token_response_keeps_the_stored_token(
    sandbox: Sandbox, config: dict[str, t.Any], fault: str
) -> None:
    synced(config)
    expire_access_tokens(config)
    before = store_path(config).read_bytes()
    sandbox.inject_fault(TOKEN_PATH, fault)
    result = run_tap(config, select=PROFILE)
    assert isinstance(result.error, TapWhoopError)
    assert "the stored token was kept" in str(result.error)
    assert store_path(config).read_bytes() == before
    assert sandbox.stats()["token_requests"] == 2
    synced(config)
    assert sandbox.stats()["invalid_grant"] == 0


def test_a_token_response_without_a_refresh_token_keeps_the_old_one(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    entry = stored(config)["default"]
    expire_access_tokens(config)
    sandbox.inject_fault(TOKEN_PATH, "no_refresh_token")
    synced(config)
    kept = stored(config)["default"]
    assert kept["refresh_token"] == entry["refresh_token"]
    assert kept["access_token"] != entry["access_token"]
    expire_access_tokens(config)
    synced(config)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (3, 0)


def test_a_refresh_whose_answer_is_lost_is_not_sent_again(
    sandbox: Sandbox, config: dict[str, t.Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oauth_app, "OAUTH_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(sandbox, "fault_delay", 0.8)
    sandbox.inject_fault(TOKEN_PATH, "timeout")
    result = run_tap(config, select=PROFILE)
    assert isinstance(result.error, TapWhoopError)
    assert "did not answer (ReadTimeout)" in str(result.error)
    time.sleep(1)
    assert sandbox.stats()["token_requests"] == 1


def test_an_unreachable_token_endpoint_is_retried_because_nothing_was_spent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []
    monkeypatch.setattr(oauth_app.time, "sleep", waits.append)
    app = WhoopApp(CLIENT_ID, CLIENT_SECRET, f"http://127.0.0.1:{port}/oauth/oauth2")
    with pytest.raises(TapWhoopError, match="nothing was spent"):
        app.refresh("a-refresh-token", "default")
    assert waits == [1, 2]


class _Answering(requests.Session):
    """A token endpoint that answers 200 with `body`."""

    def __init__(self, body: dict[str, t.Any]) -> None:
        super().__init__()
        self.body = body

    def post(self, *args: t.Any, **kwargs: t.Any) -> requests.Response:  # type: ignore[override]
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps(self.body).encode()
        return response


def test_a_new_refresh_token_is_saved_even_when_the_access_token_is_missing(
    tmp_path: Path,
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    answer = _Answering({"refresh_token": "successor", "expires_in": "soon"})
    auth = MemberAuth("default", "seed", store, WhoopApp("id", "secret", "http://x", answer))
    with pytest.raises(TapWhoopError, match="no access_token; its refresh token was saved"):
        auth.access_token()
    assert json.loads(store.path.read_text())["members"]["default"]["refresh_token"] == "successor"


def test_a_new_configured_refresh_token_is_noticed_and_used(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    new = sandbox.issue_refresh_token("alice")
    reseeded = {**config, "refresh_token": new}
    synced(reseeded)
    assert sandbox.stats()["refreshes"] == 2
    assert stored(config)["default"]["seeded_from"] == fingerprint(new)
    assert new not in store_path(config).read_text()
    synced(reseeded)
    synced(config)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (2, 0)


def test_a_configured_token_the_store_holds_or_moved_past_is_not_new(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    """E.g. the token `auth --print-refresh-token` printed, pasted into the config later."""
    synced(config)
    copied = {**config, "refresh_token": stored(config)["default"]["refresh_token"]}
    synced(copied)
    assert sandbox.stats()["refreshes"] == 1
    expire_access_tokens(config)
    synced(copied)
    synced(copied)
    expire_access_tokens(config)
    synced(copied)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (3, 0)


def test_a_rejected_new_configured_token_keeps_the_store(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    spent = sandbox.issue_refresh_token("alice")
    assert refresh_directly(sandbox, spent).status_code == 200
    before = store_path(config).read_bytes()
    result = run_tap({**config, "refresh_token": spent}, select=PROFILE)
    assert isinstance(result.error, MembersFailedError)
    assert "WHOOP rejected the refresh token from the config" in str(result.error)
    assert "remove it from the config" in str(result.error)
    assert store_path(config).read_bytes() == before


def test_members_share_one_store_with_one_entry_each(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(members=("alice", "bob"))
    alice, bob = sandbox.members
    config = tap_config(
        sandbox,
        tmp_path,
        users=[
            {"key": "a", "refresh_token": sandbox.seed_refresh_token("alice")},
            {"key": "b", "refresh_token": sandbox.seed_refresh_token("bob")},
        ],
    )
    del config["refresh_token"]
    result = run_tap(config, select=PROFILE)
    assert result.error is None
    assert {r["user_id"] for r in result.records("profile")} == {alice.user_id, bob.user_id}
    assert set(stored(config)) == {"a", "b"}
    expire_access_tokens(config)
    before = stored(config)
    sandbox.revoke("bob")
    result = run_tap(config, select=PROFILE)
    assert isinstance(result.error, MembersFailedError)
    assert "member 'b': WHOOP rejected the refresh token" in str(result.error)
    assert [r["user_id"] for r in result.records("profile")] == [alice.user_id]
    after = stored(config)
    assert after["b"] == before["b"]
    assert after["a"]["refresh_token"] != before["a"]["refresh_token"]


@pytest.mark.parametrize("start", ["seed", "expired"])
def test_racing_processes_spend_the_refresh_token_once(
    sandbox: Sandbox, config: dict[str, t.Any], start: str
) -> None:
    if start == "expired":
        synced(config)
        expire_access_tokens(config)
        sandbox.reset_stats()
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(RACERS), context.Queue()
    racers = [
        context.Process(target=race_for_token, args=(barrier, config, "default", results))
        for _ in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    tokens = [results.get(timeout=120) for _ in racers]
    for racer in racers:
        racer.join(timeout=60)
    assert not [token for token in tokens if token.startswith("error")], tokens
    assert len(set(tokens)) == 1
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (1, 0)


@pytest.mark.parametrize("start", ["seed", "expired"])
def test_concurrent_tap_processes_refresh_exactly_once(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path, start: str
) -> None:
    config_file = write_json(tmp_path / "config.json", config)
    catalog = catalog_file(tmp_path / "catalog.json", config, PROFILE)
    args = [*TAP_WHOOP, "--config", str(config_file), "--catalog", str(catalog)]
    if start == "expired":
        synced(config)
        expire_access_tokens(config)
        sandbox.reset_stats()
    sandbox.fault_delay = 1.0
    sandbox.inject_fault(TOKEN_PATH, "timeout")  # the one refresh is slow: the others queue
    taps = [
        subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
        )
        for _ in range(5)
    ]
    outputs = [tap.communicate(timeout=120) for tap in taps]
    assert [tap.returncode for tap in taps] == [0] * len(taps), outputs
    assert all('"stream":"profile"' in out.replace(" ", "") for out, _ in outputs)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"], stats["token_requests"]) == (1, 0, 1)


def test_a_token_another_process_rotated_is_picked_up_after_a_401(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    """E.g. `--test` forcing a refresh while a sync runs: WHOOP kills the sync's access token."""
    store = TokenStore(config["token_store_path"])
    app = WhoopApp(CLIENT_ID, CLIENT_SECRET, config["oauth_url"])
    syncing = MemberAuth("default", config["refresh_token"], store, app)
    checking = MemberAuth("default", config["refresh_token"], store, app)
    killed = syncing.access_token()
    fresh = checking.access_token(force_refresh=True)
    assert syncing.reject(killed)
    assert syncing.access_token() == fresh
    assert sandbox.stats()["refreshes"] == 2


def test_a_store_readable_by_others_is_made_private_again(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    store_path(config).chmod(0o644)
    synced(config)
    assert stat.S_IMODE(store_path(config).stat().st_mode) == 0o600
