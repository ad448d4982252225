"""One storage interface, two backends: the token store's and the inbox's promises on both.

Every test here runs on the token store files (`token_store_path`) and on PostgreSQL
(`store_url`), against the sandbox: rotation across runs, racing processes, reseeding, WHOOP
rejecting or garbling a refresh, short-lived tokens, a run killed mid-refresh, and the webhook
inbox. With PostgreSQL each racing process lives in a folder of its own, sharing no file.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import subprocess
import time
import typing as t
from pathlib import Path

import pytest
import requests

from tap_whoop.errors import ConfigError, MembersFailedError, TapWhoopError, TokenStoreError
from tap_whoop.oauth import member as oauth_member
from tap_whoop.oauth.app import WhoopApp
from tap_whoop.oauth.member import MemberAuth
from tap_whoop.run import Run
from tap_whoop.stores.inbox import Event, LedgerRow
from tap_whoop.stores.tokens import fingerprint
from tests.auth_support import (
    TAP_WHOOP,
    catalog_file,
    cli_env,
    error_line,
    race_for_token,
    refresh_directly,
    run_cli,
    write_json,
)
from tests.conftest import CLIENT_ID, CLIENT_SECRET, PAST, run_tap
from tests.test_store_support import (
    Backend,
    backend,
    files_left,
    postgres_server,
    race_on_machine,
    run_script,
    store_url,
    tap_on_machine,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from whoop_sandbox import Sandbox

__all__ = ["backend", "postgres_server", "store_url"]  # fixtures

TOKEN_PATH = "/oauth/oauth2/token"
PROFILE = {"profile"}
ALL_STREAMS = {"profile", "body_measurement", "cycles", "recovery", "sleep", "workout"}
RACERS = 6


@pytest.fixture
def config(backend: Backend, sandbox: Sandbox, tmp_path: Path) -> dict[str, t.Any]:
    return backend.config(sandbox, tmp_path)


def synced(config: dict[str, t.Any], select: set[str] = PROFILE) -> None:
    result = run_tap(config, select=select)
    assert result.error is None, result.error
    assert result.records("profile")


def cli_files(config: dict[str, t.Any], tmp_path: Path, streams: set[str] = PROFILE) -> list[str]:
    config_file = write_json(tmp_path / "config.json", config)
    catalog = catalog_file(tmp_path / "catalog.json", config, streams)
    return ["--config", str(config_file), "--catalog", str(catalog)]


# 1. Rotation across runs


def test_the_first_run_seeds_the_store_holding_only_a_hash_of_the_config_token(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    synced(config)
    entry = backend.members(config)["default"]
    assert entry["seeded_from"] == fingerprint(config["refresh_token"])
    assert config["refresh_token"] not in backend.text(config)
    assert sandbox.stats()["refreshes"] == 1
    if backend.name == "postgres":
        assert not Path(config["token_store_path"]).parent.exists(), "no file is written"


@pytest.mark.parametrize("expiry", ["at_whoop", "in_store"])
def test_the_second_run_uses_the_rotated_token_and_the_seed_is_dead(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any], expiry: str
) -> None:
    synced(config)
    rotated = backend.members(config)["default"]["refresh_token"]
    if expiry == "at_whoop":
        sandbox.advance(hours=2)  # the store still trusts its access token: a 401, one refresh
    else:
        backend.expire(config)
    synced(config)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (2, 0)
    assert backend.members(config)["default"]["refresh_token"] != rotated
    for dead in (config["refresh_token"], rotated):
        response = refresh_directly(sandbox, dead)
        assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_the_rotated_token_is_committed_before_any_data_request(
    backend: Backend,
    sandbox: Sandbox,
    config: dict[str, t.Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[tuple[str, t.Any]] = []
    store_class = type(backend.store(config))
    put, prove = store_class.put, store_class.record  # the in-flight record proves the write
    token_request, note = sandbox.token_request, sandbox.note_api_request

    def recording_prove(store: t.Any, key: str, entry: dict[str, t.Any]) -> None:
        prove(store, key, entry)
        events.append(("proved", None))

    def recording_write(store: t.Any, key: str, entry: dict[str, t.Any]) -> None:
        put(store, key, entry)
        events.append(("stored", entry.get("refresh_token")))

    def recording_token_request(form: t.Any, **options: t.Any) -> dict[str, t.Any]:
        body = token_request(form, **options)
        events.append(("issued", body.get("refresh_token")))
        return body

    monkeypatch.setattr(store_class, "record", recording_prove)
    monkeypatch.setattr(store_class, "put", recording_write)
    monkeypatch.setattr(sandbox, "token_request", recording_token_request)
    monkeypatch.setattr(sandbox, "note_api_request", lambda p: (events.append(("api", p)), note(p)))
    synced(config)
    assert [kind for kind, _ in events[:3]] == ["proved", "issued", "stored"]
    assert events[2][1] == events[1][1]
    assert events[3:]
    assert all(kind == "api" or value == events[2][1] for kind, value in events[3:])


def test_a_rotated_token_that_cannot_be_saved_stops_the_run_before_any_data_request(
    backend: Backend,
    sandbox: Sandbox,
    config: dict[str, t.Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(store: t.Any, key: str, entry: dict[str, t.Any]) -> None:
        raise TokenStoreError(f"cannot write token store {store.path}: the disk is full")

    monkeypatch.setattr(type(backend.store(config)), "put", failing)
    monkeypatch.setattr(oauth_member, "PERSIST_ATTEMPTS", 2)
    result = run_tap(config, select=PROFILE)
    assert isinstance(result.error, TokenStoreError)
    message = str(result.error)
    assert "member 'default': WHOOP rotated the refresh token but it could not be saved" in message
    assert "re-authorize with `tap-whoop auth --config CONFIG --member default`" in message
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["requests"]) == (1, 0)


# 2. WHOOP refusing or garbling a refresh changes nothing


@pytest.mark.parametrize("rejection", ["HTTP 400 invalid_grant", "HTTP 401 unauthorized"])
def test_a_rejected_refresh_changes_nothing_in_the_store(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any], rejection: str
) -> None:
    synced(config)
    backend.expire(config)
    before = backend.state(config)
    if "invalid_grant" in rejection:
        sandbox.revoke("alice")
    else:
        sandbox.inject_fault(TOKEN_PATH, "401")
    result = run_tap(config, select=PROFILE)
    assert isinstance(result.error, MembersFailedError)
    message = str(result.error)
    assert f"member 'default': WHOOP rejected the refresh token ({rejection})" in message
    assert "re-authorize with `tap-whoop auth --config CONFIG --member default`" in message
    assert backend.state(config) == before


def test_a_wrong_client_secret_is_a_config_error_that_keeps_the_store(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    backend.expire(config)
    before = backend.state(config)
    result = run_tap({**config, "client_secret": "not-the-secret"}, select=PROFILE)
    assert isinstance(result.error, ConfigError)
    assert "client_secret" in str(result.error)
    assert "not-the-secret" not in str(result.error)
    assert backend.state(config) == before


@pytest.mark.parametrize("fault", ["garbage", "500"])
def test_an_unreadable_token_response_keeps_the_stored_token(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any], fault: str
) -> None:
    synced(config)
    backend.expire(config)
    before = backend.state(config)
    sandbox.inject_fault(TOKEN_PATH, fault)
    result = run_tap(config, select=PROFILE)
    assert isinstance(result.error, TapWhoopError)
    assert "the stored token was kept" in str(result.error)
    assert backend.state(config) == before
    synced(config)
    assert sandbox.stats()["invalid_grant"] == 0


def test_a_token_response_without_a_refresh_token_keeps_the_old_one(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    entry = backend.members(config)["default"]
    backend.expire(config)
    sandbox.inject_fault(TOKEN_PATH, "no_refresh_token")
    synced(config)
    kept = backend.members(config)["default"]
    assert kept["refresh_token"] == entry["refresh_token"]
    assert kept["access_token"] != entry["access_token"]
    backend.expire(config)
    synced(config)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (3, 0)


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
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    store = backend.store(config)
    answer = _Answering({"refresh_token": "successor", "expires_in": "soon"})
    auth = MemberAuth("default", "seed", store, WhoopApp("id", "secret", "http://x", answer))
    with pytest.raises(TapWhoopError, match="no access_token; its refresh token was saved"):
        auth.access_token()
    assert backend.members(config)["default"]["refresh_token"] == "successor"


# 3. Reseeding, detected by hash


def test_a_new_configured_refresh_token_is_noticed_by_its_hash_and_used(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    new = sandbox.issue_refresh_token("alice")
    reseeded = {**config, "refresh_token": new}
    synced(reseeded)
    assert sandbox.stats()["refreshes"] == 2
    assert backend.members(config)["default"]["seeded_from"] == fingerprint(new)
    assert new not in backend.text(config)
    synced(reseeded)
    synced(config)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (2, 0)


def test_a_configured_token_the_store_holds_or_moved_past_is_not_new(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    copied = {**config, "refresh_token": backend.members(config)["default"]["refresh_token"]}
    synced(copied)
    assert sandbox.stats()["refreshes"] == 1
    backend.expire(config)
    synced(copied)
    synced(copied)
    backend.expire(config)
    synced(copied)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (3, 0)


def test_a_rejected_new_configured_token_keeps_the_store(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    spent = sandbox.issue_refresh_token("alice")
    assert refresh_directly(sandbox, spent).status_code == 200
    before = backend.state(config)
    result = run_tap({**config, "refresh_token": spent}, select=PROFILE)
    assert isinstance(result.error, MembersFailedError)
    assert "WHOOP rejected the refresh token from the config" in str(result.error)
    assert backend.state(config) == before


def test_members_share_one_store_with_one_entry_each(
    backend: Backend, start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(members=("alice", "bob"))
    alice, bob = sandbox.members
    config = backend.config(
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
    assert set(backend.members(config)) == {"a", "b"}
    backend.expire(config)
    before = backend.members(config)
    sandbox.revoke("bob")
    result = run_tap(config, select=PROFILE)
    assert isinstance(result.error, MembersFailedError)
    assert "member 'b': WHOOP rejected the refresh token" in str(result.error)
    after = backend.members(config)
    assert after["b"] == before["b"]
    assert after["a"]["refresh_token"] != before["a"]["refresh_token"]


# 4. Racing processes (with PostgreSQL: each on a machine of its own, sharing no file)


def start_taps(
    backend: Backend, config: dict[str, t.Any], tmp_path: Path, count: int, streams: set[str]
) -> tuple[list[subprocess.Popen[str]], list[Path]]:
    """`count` tap processes: on one machine sharing the store file, or each on its own."""
    folders = [tmp_path / f"machine{index}" for index in range(count)]
    if backend.name == "postgres":
        return [tap_on_machine(config, folder, streams) for folder in folders], folders
    args = [*TAP_WHOOP, *cli_files(config, tmp_path, streams)]
    taps = [
        subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
        )
        for _ in folders
    ]
    return taps, []


@pytest.mark.parametrize("start", ["seed", "expired"])
def test_racing_processes_spend_the_refresh_token_once(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path, start: str
) -> None:
    if start == "expired":
        synced(config)
        backend.expire(config)
        sandbox.reset_stats()
    folders = [tmp_path / f"machine{index}" for index in range(RACERS)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(RACERS), context.Queue()
    racers = []
    for folder in folders:
        folder.mkdir()
        if backend.name == "postgres":
            args: tuple[t.Any, ...] = (barrier, config, str(folder), results)
            racers.append(context.Process(target=race_on_machine, args=args))
        else:
            racers.append(
                context.Process(target=race_for_token, args=(barrier, config, "default", results))
            )
    for racer in racers:
        racer.start()
    tokens = [results.get(timeout=120) for _ in racers]
    for racer in racers:
        racer.join(timeout=60)
    assert not [token for token in tokens if token.startswith("error")], tokens
    assert len(set(tokens)) == 1
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (1, 0)
    assert files_left(folders) == []


@pytest.mark.parametrize("start", ["seed", "expired"])
def test_concurrent_tap_processes_refresh_exactly_once(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path, start: str
) -> None:
    if start == "expired":
        synced(config)
        backend.expire(config)
        sandbox.reset_stats()
    sandbox.fault_delay = 1.0
    sandbox.inject_fault(TOKEN_PATH, "timeout")  # the one refresh is slow: the others queue
    taps, folders = start_taps(backend, config, tmp_path, 5, PROFILE)
    outputs = [tap.communicate(timeout=120) for tap in taps]
    assert [tap.returncode for tap in taps] == [0] * len(taps), outputs
    assert all('"stream":"profile"' in out.replace(" ", "") for out, _ in outputs)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"], stats["token_requests"]) == (1, 0, 1)
    assert files_left(folders) == []


def test_a_token_another_process_rotated_is_picked_up_after_a_401(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    """E.g. `--test` forcing a refresh while a sync runs: WHOOP kills the sync's access token."""
    app = WhoopApp(CLIENT_ID, CLIENT_SECRET, config["oauth_url"])
    syncing = MemberAuth("default", config["refresh_token"], backend.store(config), app)
    checking = MemberAuth("default", config["refresh_token"], backend.store(config), app)
    killed = syncing.access_token()
    fresh = checking.access_token(force_refresh=True)
    assert syncing.reject(killed)
    assert syncing.access_token() == fresh
    assert sandbox.stats()["refreshes"] == 2


def _refresh_under_the_lock(config: dict[str, t.Any], held: t.Any, done: t.Any) -> None:
    """Another process: take the lock, then rotate the member's tokens slowly."""
    run = Run(config)
    store = run.token_store
    other = MemberAuth("default", config["refresh_token"], store, run.app)
    with store.locked():
        held.set()
        time.sleep(1.0)
        other.access_token(force_refresh=True)
        done.set()  # before the lock is let go: the waiter cannot return before this


def test_a_401_waits_for_a_refresh_another_process_holds_the_lock_for_and_adopts_its_token(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    app = WhoopApp(CLIENT_ID, CLIENT_SECRET, config["oauth_url"])
    syncing = MemberAuth("default", config["refresh_token"], backend.store(config), app)
    first = syncing.access_token()
    assert syncing.reject(first)
    retried = syncing.access_token()
    assert retried != first
    context = multiprocessing.get_context("spawn")
    held, done = context.Event(), context.Event()
    other = context.Process(target=_refresh_under_the_lock, args=(config, held, done))
    other.start()
    try:
        assert held.wait(timeout=60)
        assert syncing.reject(retried)
        assert done.is_set()
    finally:
        other.join(timeout=60)
    adopted = syncing.access_token()
    assert adopted == backend.members(config)["default"]["access_token"]
    assert adopted not in (first, retried)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (3, 0)


# 5. A run killed in the middle of a refresh


KILLED_AFTER_TOKEN_RESPONSE = """
import os, signal, sys
from tap_whoop.oauth import app as oauth_app
request = oauth_app.WhoopApp._token_request
oauth_app.WhoopApp._token_request = lambda self, *a: (request(self, *a), os.kill(os.getpid(), 9))
sys.argv[0] = "tap-whoop"
from tap_whoop.cli import main
main()
"""


def test_a_run_killed_after_whoop_rotated_the_token_makes_the_next_run_say_exactly_that(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    args = cli_files(config, tmp_path)
    assert run_cli(*args).returncode == 0
    backend.expire(config)
    killed = run_script(KILLED_AFTER_TOKEN_RESPONSE, args)
    assert killed.returncode == -9, killed.stderr
    before = backend.state(config)
    assert "refreshing" in backend.members(config)["default"]
    line = error_line(run_cli(*args))
    assert "member 'default': WHOOP rejected the stored refresh token (HTTP 400" in line
    assert "the previous run was interrupted while refreshing it" in line
    assert "re-authorizing is the only fix" in line
    assert f"`tap-whoop auth --config {args[1]} --member default`" in line
    assert backend.state(config) == before


# 6. Short-lived access tokens: the refresh margin scales with the lifetime


def test_a_sync_with_two_minute_tokens_refreshes_once(
    backend: Backend, start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(access_token_ttl=120)
    config = backend.config(sandbox, tmp_path)
    synced(config, ALL_STREAMS)
    stats = sandbox.stats()
    assert stats["requests"] > 10
    assert (stats["token_requests"], stats["refreshes"]) == (1, 1)
    assert backend.members(config)["default"]["lifetime"] == 120


def test_twelve_processes_with_five_second_tokens_never_ask_to_reauthorize(
    backend: Backend, start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(access_token_ttl=5)
    config = backend.config(sandbox, tmp_path)
    started = time.monotonic()
    taps, folders = start_taps(backend, config, tmp_path, 12, ALL_STREAMS)
    outputs = [tap.communicate(timeout=180) for tap in taps]
    assert time.monotonic() - started < 120
    assert [tap.returncode for tap in taps] == [0] * 12, [err[-2000:] for _, err in outputs]
    assert not [err for _, err in outputs if "re-authorize" in err]
    assert sandbox.stats()["invalid_grant"] == 0
    assert files_left(folders) == []


# 7. Entries that make no sense


@pytest.mark.parametrize("expires_at", ["1e400", "-1e400", "1e300", "-5"])
def test_an_absurd_expiry_just_means_refresh(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any], expires_at: str
) -> None:
    """(NaN too, in a file: tests/test_store_faults.py; jsonb cannot hold it.)"""
    synced(config)
    backend.set_field(config, "default", "expires_at", expires_at)
    synced(config)
    entry = backend.members(config)["default"]
    assert math.isfinite(entry["expires_at"])
    assert entry["expires_at"] < time.time() + 7200
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (2, 0)


def test_a_malformed_entry_fails_clearly_and_is_left_as_it_is(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    backend.set_field(config, "default", "expires_at", '"soon"')
    before = backend.state(config)
    sandbox.reset_stats()
    result = run_tap(config, select=PROFILE)
    assert isinstance(result.error, TokenStoreError)
    assert f"token store {backend.store(config).path}: member 'default' has a malformed" in str(
        result.error
    )
    assert backend.state(config) == before
    assert sandbox.stats()["token_requests"] == 0


# 8. The webhook inbox and the ledger


@pytest.fixture
def inbox(backend: Backend, sandbox: Sandbox, config: dict[str, t.Any]) -> t.Any:
    return Run(config).inbox


def test_the_inbox_is_a_log_appended_once_per_trace_and_read_after_a_position(
    inbox: t.Any,
) -> None:
    assert inbox.add(Event(1, "sleep.updated", "s1", "t1", received_at=1000.0))
    assert not inbox.add(Event(1, "sleep.updated", "s1", "t1", received_at=1001.0))
    assert inbox.add(Event(1, "sleep.updated", "s1", "t2", received_at=1002.0))
    assert inbox.add(Event(1, "sleep.deleted", "s1", "t3", received_at=1003.0))
    assert inbox.add(Event(2, "workout.updated", "w1", "t4", received_at=1004.0))
    log = inbox.after(0)
    assert [(e.user_id, e.type, e.trace_id, e.received_at) for e in log] == [
        (1, "sleep.updated", "t1", 1000.0),
        (1, "sleep.updated", "t2", 1002.0),
        (1, "sleep.deleted", "t3", 1003.0),
        (2, "workout.updated", "t4", 1004.0),
    ]
    assert [e.seq for e in log] == sorted(e.seq for e in log)
    assert [e.trace_id for e in inbox.after(log[1].seq)] == ["t3", "t4"]
    assert [e.trace_id for e in inbox.by_seqs([log[3].seq, log[0].seq, 10**9])] == ["t1", "t4"]
    assert inbox.last_received_at() == 1004.0
    assert not inbox.add(Event(1, "sleep.updated", "s1", "t1"))  # a late retry of a trace
    assert inbox.exists()
    assert inbox.identity() == inbox.identity() != ""


def test_events_older_than_the_retention_are_pruned_and_the_horizon_says_so(
    inbox: t.Any,
) -> None:
    now = time.time()
    inbox.add(Event(1, "sleep.updated", "s1", "old-1", received_at=now - 10 * 86_400))
    inbox.add(Event(1, "sleep.updated", "s2", "old-2", received_at=now - 8 * 86_400))
    inbox.add(Event(1, "sleep.updated", "s3", "new", received_at=now - 3600))
    old = inbox.after(0)[1].seq
    assert inbox.horizon() == 0

    inbox.prune(7 * 86_400)

    assert [e.trace_id for e in inbox.after(0)] == ["new"]
    assert inbox.horizon() == old
    inbox.prune(7 * 86_400)
    assert inbox.horizon() == old


def test_an_event_set_aside_is_listed_then_retried_as_a_new_delivery_or_dropped(
    inbox: t.Any,
) -> None:
    inbox.add(Event(1, "sleep.updated", "s1", "t1", received_at=1000.0))
    inbox.add(Event(1, "workout.updated", "w1", "t2", received_at=1001.0))
    first, second = inbox.after(0)
    inbox.set_aside(first, "WHOOP answered 400", 5)
    inbox.set_aside(second, "WHOOP answered 500", 5)

    listed = inbox.set_aside_events()
    assert [(e.event.seq, e.event.record_id, e.reason, e.tries) for e in listed] == [
        (first.seq, "s1", "WHOOP answered 400", 5),
        (second.seq, "w1", "WHOOP answered 500", 5),
    ]
    retried = inbox.release(first.seq, retry=True)
    assert retried is not None
    assert retried.seq > second.seq
    assert [(e.seq, e.record_id) for e in inbox.after(second.seq)] == [(retried.seq, "s1")]
    dropped = inbox.release(second.seq, retry=False)
    assert dropped is not None
    assert dropped.record_id == "w1"
    assert inbox.set_aside_events() == []
    assert inbox.release(second.seq, retry=True) is None


def test_the_ledger_remembers_forgets_and_finds_a_sleeps_cycle(inbox: t.Any) -> None:
    inbox.remember(7, "sleep", [LedgerRow("s1", "2026-11-01T00:00:00Z", None, 100)])
    inbox.remember(7, "recovery", [LedgerRow("100", "2026-11-01T01:00:00Z", "s2", 101)])
    inbox.remember(7, "sleep", [LedgerRow("s1", "2026-11-02T00:00:00Z", None, 100)])
    inbox.remember(8, "sleep", [LedgerRow("s9", None, None, None)])
    inbox.remember(7, "sleep", [])
    assert inbox.known(7, "sleep") == {"s1": "2026-11-02T00:00:00Z"}
    assert inbox.cycle_of_sleep(7, "s1") == 100
    assert inbox.cycle_of_sleep(7, "s2") == 101
    assert inbox.cycle_of_sleep(8, "s9") is None
    assert inbox.sleep_of_recovery(7, 100) == "s2"
    assert inbox.sleep_of_recovery(7, 101) is None
    inbox.forget(7, "sleep", ["s1"])
    assert inbox.known(7, "sleep") == {}
    assert inbox.known(8, "sleep") == {"s9": None}


def test_webhook_events_are_passed_on_by_the_next_run(
    backend: Backend, start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = backend.config(sandbox, tmp_path)
    first = run_tap(config)
    assert first.error is None, first.error
    user_id = sandbox.members[0].user_id
    sleep = first.records("sleep")[0]
    workout = first.records("workout")[0]
    inbox = Run(config).inbox
    assert workout["id"] in inbox.known(user_id, "workout")
    inbox.add(Event(user_id, "sleep.updated", sleep["id"], "t1"))
    inbox.add(Event(user_id, "workout.deleted", workout["id"], "t2"))
    second = run_tap(config, state=first.state)
    assert second.error is None, second.error
    assert sleep["id"] in {r["id"] for r in second.records("sleep")}
    deleted = [r["id"] for r in second.records("workout") if r["_sdc_deleted_at"]]
    assert deleted == [workout["id"]]
    assert workout["id"] in inbox.known(user_id, "workout")  # until a target committed it
    sandbox.reset_stats()
    third = run_tap(config, state=second.state)
    assert third.error is None, third.error
    assert workout["id"] not in inbox.known(user_id, "workout")
    fetched = " ".join(sandbox.stats()["by_path"])
    assert sleep["id"] not in fetched  # the events were passed on: not again
    assert workout["id"] not in [r["id"] for r in third.records("workout")]


def test_an_event_of_a_member_removed_from_the_config_is_owed_not_dropped(
    backend: Backend, start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST, members=("alice", "bob"))
    config = backend.config(sandbox, tmp_path)
    del config["refresh_token"]
    config["users"] = [
        {"key": key, "refresh_token": sandbox.seed_refresh_token(key)} for key in ("alice", "bob")
    ]
    streams = {"profile", "workout"}
    first = run_tap(config, select=streams)
    assert first.error is None, first.error
    bob = sandbox.members[1]
    inbox = Run(config).inbox
    inbox.add(
        Event(bob.user_id, "workout.updated", sandbox.records("bob", "workout")[0]["id"], "b")
    )
    [event] = inbox.after(0)

    second = run_tap({**config, "users": config["users"][:1]}, select=streams, state=first.state)

    assert second.error is None, second.error
    assert second.state is not None
    assert second.state["whoop_webhooks"]["owed"] == [[event.seq, 1, bob.user_id]]


# 9. Consent and revocation


def test_a_member_authorized_synced_and_revoked_lives_and_leaves_in_the_store(
    backend: Backend, sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    from tests.test_auth_cli import AuthRun

    del config["refresh_token"]
    config_file = str(write_json(tmp_path / "config.json", config))
    consent = AuthRun("--config", config_file, "--no-browser")
    result = consent.finish(consent.consent())
    assert result.returncode == 0, result.stderr
    assert f"tokens saved to {backend.store(config).path}" in result.stdout
    entry = backend.members(config)["default"]
    assert entry["user_id"] == sandbox.members[0].user_id
    assert entry["refresh_token"] not in result.stdout + result.stderr
    synced(config)
    assert sandbox.stats()["refreshes"] == 0
    revoked = run_cli("revoke", "--config", config_file, "--member", "default")
    assert revoked.returncode == 0, revoked.stderr
    assert backend.members(config) == {}
