"""The PostgreSQL store across machines: what only a shared database must also get right.

Workers here are separate processes, each in a folder (home, working directory, token store
path) of its own: nothing is shared but the database. Refreshes of short-lived tokens, the app's
rate-limit window, killed processes and lost connections, the first use of an empty database,
and the one-line errors of a `store_url` that cannot work.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import psycopg
import pytest
import requests

from tap_whoop.errors import TokenStoreError
from tap_whoop.http import AppPacer
from tap_whoop.oauth.member import MemberAuth
from tap_whoop.run import Run
from tap_whoop.stores import tokens as token_rules
from tap_whoop.stores.inbox import Event
from tap_whoop.stores.postgres import SCHEMA_VERSION, Database, PostgresTokenStore, PostgresWindow
from tap_whoop.stores.postgres import database as pg_database
from tap_whoop.webhooks.receiver import WEBHOOK_PATH, Receiver, WebhookServer
from tests.auth_support import (
    catalog_file,
    cli_env,
    error_line,
    refresh_directly,
    run_cli,
    write_json,
)
from tests.conftest import run_tap
from tests.test_store_support import (
    Backend,
    PostgresProxy,
    files_left,
    in_schema,
    postgres_server,
    query,
    run_script,
    store_url,
    use_tokens_for,
)
from tests.test_webhooks import ALICE, an_event, signed, webhook_config

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from whoop_sandbox import Sandbox

__all__ = ["postgres_server", "store_url"]  # fixtures

PROFILE = {"profile"}
TOKEN_PATH = "/oauth/oauth2/token"


@pytest.fixture
def pg(store_url: str) -> Backend:
    return Backend("postgres", store_url)


@pytest.fixture
def config(pg: Backend, sandbox: Sandbox, tmp_path: Path) -> dict[str, t.Any]:
    return pg.config(sandbox, tmp_path)


def cli_files(config: dict[str, t.Any], folder: Path) -> list[str]:
    config_file = write_json(folder / "config.json", config)
    catalog = catalog_file(folder / "catalog.json", config, PROFILE)
    return ["--config", str(config_file), "--catalog", str(catalog)]


# 1. Refreshing across machines: once per expiry, never invalid_grant


def test_workers_on_four_machines_refresh_a_three_second_token_once_per_expiry(
    pg: Backend, start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """Every 50 ms each worker asks for the token and uses it; the sandbox counts refreshes.

    One refresh per expiry: a token is replaced only within its last tenth of life (the margin
    for a 3-second token is 0.3 s), every token refreshed is one the workers used, and no worker
    ever held an expired one.
    """
    ttl, seconds, workers = 3, 9.0, 4
    sandbox = start_sandbox(access_token_ttl=ttl)
    config = pg.config(sandbox, tmp_path)
    folders = [tmp_path / f"machine{index}" for index in range(workers)]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = []
    for folder in folders:
        folder.mkdir()
        processes.append(
            context.Process(target=use_tokens_for, args=(config, str(folder), seconds, results))
        )
    for process in processes:
        process.start()
    answers = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert not [answer for answer in answers if isinstance(answer, str)], answers
    # A token exists by the first answer that carries it, and was asked for last when last used.
    first_had: dict[str, float] = {}
    last_asked: dict[str, float] = {}
    for asked, answered, token in (use for answer in answers for use in answer):
        first_had[token] = min(first_had.get(token, math.inf), answered)
        last_asked[token] = max(last_asked.get(token, -math.inf), asked)
    stats = sandbox.stats()
    assert stats["invalid_grant"] == 0
    assert stats["refreshes"] == len(first_had)
    assert stats["refreshes"] <= math.ceil(seconds / (ttl * 0.9)) + 1
    starts = sorted(first_had.values())
    assert all(later - earlier > ttl * 0.9 - 0.5 for earlier, later in itertools.pairwise(starts))
    assert all(last_asked[token] < first_had[token] + ttl for token in first_had)
    assert files_left(folders) == []


def _hold_member_lock(url: str, key: str) -> psycopg.Connection[t.Any]:
    """Another session in the middle of member `key`'s refresh (as another process would be)."""
    holder = psycopg.connect(url, autocommit=True)
    holder.execute(
        "SELECT pg_advisory_lock_shared(hashtextextended(current_schema() || %s, 0)), "
        "pg_advisory_lock(hashtextextended(current_schema() || %s, 0))",
        (".tap_whoop_tokens", f".tap_whoop_tokens:{key}"),
    )
    return holder


def test_a_refresh_touches_its_members_row_alone_and_waits_for_no_other_member(
    pg: Backend, sandbox: Sandbox, config: dict[str, t.Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers refreshing different members in parallel never queue behind each other."""
    url = pg.url or ""
    run = Run(config)
    store = t.cast(PostgresTokenStore, run.token_store)
    store.put("bob", {"refresh_token": "bobs", "user_id": 7})
    bob_before = query(
        url, "SELECT entry::text, updated_at FROM tap_whoop_tokens WHERE member = 'bob'"
    )
    monkeypatch.setattr(token_rules, "LOCK_TIMEOUT_SECONDS", 1)
    holder = _hold_member_lock(url, "bob")
    try:
        MemberAuth("default", config["refresh_token"], store, run.app).access_token()
        with pytest.raises(TokenStoreError, match="locked by another tap-whoop process"):
            MemberAuth("bob", None, store, run.app).access_token(force_refresh=True)
        with pytest.raises(TokenStoreError, match="locked by another tap-whoop process"):
            store.write(store.read())  # the whole store (auth, revoke, copy) waits for bob
    finally:
        holder.close()
    assert sandbox.stats()["refreshes"] == 1
    assert "refreshing" not in pg.members(config)["default"]
    assert (
        query(url, "SELECT entry::text, updated_at FROM tap_whoop_tokens WHERE member = 'bob'")
        == bob_before
    )


def test_a_killed_lock_holder_never_blocks_the_others(config: dict[str, t.Any]) -> None:
    """The lock is the holder's database session: the server ends it with the process."""
    script = """
import json, os, sys
from tap_whoop.run import Run
from tap_whoop.webhooks.receiver import WEBHOOK_PATH, Receiver, WebhookServer
store = Run(json.loads(sys.argv[1])).token_store
with store.locked():
    print("locked", flush=True)
    os.kill(os.getpid(), 9)
"""
    killed = run_script(script, [json.dumps(config)])
    assert (killed.returncode, killed.stdout) == (-9, "locked\n"), killed.stderr
    store = Run(config).token_store
    started = time.monotonic()
    with store.locked():
        pass
    assert time.monotonic() - started < 10


KILLED_BEFORE_COMMIT = """
import os, sys
from tap_whoop.stores import postgres as pgstore
pgstore.PostgresTokenStore.put = lambda self, key, entry: os.kill(os.getpid(), 9)
sys.argv[0] = "tap-whoop"
from tap_whoop.cli import main
main()
"""


def test_a_run_killed_before_committing_its_rotated_token_leaves_the_interrupted_diagnosis(
    pg: Backend, sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    """A commit is atomic: no half-written store, and the in-flight record tells what happened."""
    args = cli_files(config, tmp_path)
    assert run_cli(*args).returncode == 0
    pg.expire(config)
    killed = run_script(KILLED_BEFORE_COMMIT, args)
    assert killed.returncode == -9, killed.stderr
    entry = pg.members(config)["default"]
    assert entry["refreshing"]["token"].startswith("sha256:")
    assert sandbox.stats()["refreshes"] == 2
    before = pg.state(config)
    line = error_line(run_cli(*args))
    assert "WHOOP rejected the stored refresh token (HTTP 400 invalid_grant)" in line
    assert "the previous run was interrupted while refreshing it" in line
    assert pg.state(config) == before


def _terminate(url: str, connection: psycopg.Connection[t.Any]) -> None:
    query(url, "SELECT pg_terminate_backend(%s)", (connection.info.backend_pid,))


def test_a_rotated_token_is_saved_though_the_lock_session_died_while_whoop_answered(
    pg: Backend, sandbox: Sandbox, config: dict[str, t.Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write takes the lock again on a new session and commits: nobody wrote meanwhile."""
    run = Run(config)
    store = t.cast(PostgresTokenStore, run.token_store)
    refresh = run.app.refresh

    def session_dies(*args: t.Any, **kwargs: t.Any) -> dict[str, t.Any]:
        tokens = refresh(*args, **kwargs)
        assert store._session is not None
        _terminate(pg.url or "", store._session)
        return tokens

    monkeypatch.setattr(run.app, "refresh", session_dies)
    auth = MemberAuth("default", config["refresh_token"], store, run.app)
    auth.access_token()
    rotated = pg.members(config)["default"]
    assert "refreshing" not in rotated
    assert refresh_directly(sandbox, rotated["refresh_token"]).status_code == 200
    assert sandbox.stats()["invalid_grant"] == 0


@pytest.fixture
def proxy(store_url: str) -> Iterator[PostgresProxy]:
    relay = PostgresProxy(store_url)
    yield relay
    relay.close()


def test_a_store_server_that_restarts_is_waited_for_with_backoff_and_the_operation_done(
    proxy: PostgresProxy, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(proxy.url, timeout=5)
    assert database.run("read", lambda c: c.execute("SELECT 1").fetchone()) == (1,)
    proxy.outage(1.5)
    assert database.run("read", lambda c: c.execute("SELECT 2").fetchone()) == (2,)
    assert proxy.refused >= 2, "tried again during the outage, not only once"
    assert "store database lost, connecting again" in caplog.text
    database.close()


def test_a_store_server_that_does_not_come_back_ends_in_one_line(
    proxy: PostgresProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_database, "RECONNECT_SECONDS", 1.0)
    database = Database(proxy.url, timeout=5)
    database.run("read", lambda c: c.execute("SELECT 1").fetchone())
    proxy.outage(60)
    with pytest.raises(TokenStoreError) as raised:
        database.run("read", lambda c: c.execute("SELECT 1").fetchone())
    message = str(raised.value)
    assert "\n" not in message
    assert "cannot connect to the store database" in message
    assert "did not come back within 1 s" in message
    assert proxy.refused >= 2


def test_a_rotated_token_is_saved_though_the_store_server_restarted_while_whoop_answered(
    proxy: PostgresProxy, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock's session is gone for 1.5 s: the write waits for the server, locks, commits."""
    pg = Backend("postgres", proxy.url)
    config = pg.config(sandbox, tmp_path)
    run = Run(config)
    refresh = run.app.refresh

    def server_restarts(*args: t.Any, **kwargs: t.Any) -> dict[str, t.Any]:
        tokens = refresh(*args, **kwargs)
        proxy.outage(1.5)
        return tokens

    monkeypatch.setattr(run.app, "refresh", server_restarts)
    store = t.cast(PostgresTokenStore, run.token_store)
    auth = MemberAuth("default", config["refresh_token"], store, run.app)
    auth.access_token()
    assert proxy.refused >= 1
    rotated = pg.members(config)["default"]
    assert "refreshing" not in rotated
    assert refresh_directly(sandbox, rotated["refresh_token"]).status_code == 200
    assert sandbox.stats()["invalid_grant"] == 0


def test_a_write_after_the_lock_was_lost_and_another_process_wrote_is_refused(
    pg: Backend, sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced_run = run_tap(config, select=PROFILE)
    assert synced_run.error is None
    mine = t.cast(PostgresTokenStore, Run(config).token_store)
    other = t.cast(PostgresTokenStore, Run(config).token_store)
    with mine.locked():
        data = mine.read()
        assert mine._session is not None
        _terminate(pg.url or "", mine._session)
        other.update_member("default", user_id=42)  # the lock was free: the server let go of it
        data["members"]["default"]["note"] = "stale"
        with pytest.raises(TokenStoreError, match="another process changed it while this one"):
            mine.write(data)
    assert pg.members(config)["default"]["user_id"] == 42
    assert "note" not in pg.members(config)["default"]


# 2. The app's rate-limit window, shared by every machine


def take_slots(url: str, folder: str, times: int, barrier: t.Any, results: t.Any) -> None:
    """A worker on a machine of its own: take `times` slots of a 5-per-second window."""
    os.chdir(folder)
    pacer = AppPacer(5, shared_window=PostgresWindow(Database(url), "app", 5, seconds=1))
    barrier.wait()
    for _ in range(times):
        pacer.wait()
    results.put(times)


def record_admissions(url: str) -> None:
    """Copy every slot the window admits into a table the window's expiry never empties.

    The admission instants are the database's own (the window's clock), so a worker slowed down
    after its slot was granted cannot make the count look worse, or better, than it was.
    """
    Database(url).run("migrate", lambda connection: None)
    query(url, "CREATE TABLE admitted (at timestamptz NOT NULL)")
    query(
        url,
        "CREATE FUNCTION record_admission() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO admitted (at) VALUES (NEW.at); RETURN NEW; END $$",
    )
    query(
        url,
        "CREATE TRIGGER record_admission AFTER INSERT ON tap_whoop_rate_window "
        "FOR EACH ROW EXECUTE FUNCTION record_admission()",
    )


def test_workers_on_three_machines_stay_under_the_apps_ceiling_together(
    store_url: str, tmp_path: Path
) -> None:
    record_admissions(store_url)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    folders = [tmp_path / f"machine{index}" for index in range(3)]
    processes = []
    for folder in folders:
        folder.mkdir()
        processes.append(
            context.Process(target=take_slots, args=(store_url, str(folder), 5, barrier, results))
        )
    for process in processes:
        process.start()
    assert sum(results.get(timeout=60) for _ in processes) == 15
    for process in processes:
        process.join(timeout=30)
    rows = query(store_url, "SELECT extract(epoch FROM at)::float8 FROM admitted ORDER BY at")
    stamps = [row[0] for row in rows]
    assert len(stamps) == 15
    busiest_second = max(sum(1 for s in stamps if start <= s < start + 1) for start in stamps)
    assert busiest_second <= 5
    assert stamps[-1] - stamps[0] >= 2.0  # 15 slots at 5 a second need two more seconds
    assert files_left(folders) == []


def test_a_runs_pacer_counts_its_requests_in_the_database_window(
    config: dict[str, t.Any], store_url: str
) -> None:
    result = run_tap(config, select=PROFILE)
    assert result.error is None, result.error
    (count,) = query(store_url, "SELECT count(*) FROM tap_whoop_rate_window")[0]
    assert count >= 1
    assert not Path(config["token_store_path"]).parent.exists()


# 3. The receiver's inbox fails fast; the tables come with their schema version


def test_the_receivers_inbox_write_fails_within_a_second_while_the_table_is_locked(
    config: dict[str, t.Any], store_url: str
) -> None:
    inbox = Run(config).receiver_inbox
    assert inbox.add(Event(1, "sleep.updated", "s1", "t1"))
    with psycopg.connect(store_url) as holder:
        holder.execute("LOCK TABLE tap_whoop_events IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(TokenStoreError, match="cannot write the webhook inbox"):
            inbox.add(Event(1, "sleep.updated", "s2", "t2"))
        assert time.monotonic() - started < 1.5
    assert inbox.add(Event(1, "sleep.updated", "s2", "t2"))


def _first_use(url: str, barrier: t.Any, results: t.Any) -> None:
    database = Database(url)
    barrier.wait()
    try:
        results.put(PostgresTokenStore(database).read()["members"])
    except Exception as exc:
        results.put(f"error: {exc}")


def test_six_processes_meeting_an_empty_database_create_the_tables_once(store_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(6), context.Queue()
    processes = [
        context.Process(target=_first_use, args=(store_url, barrier, results)) for _ in range(6)
    ]
    for process in processes:
        process.start()
    answers = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert answers == [{}] * 6
    versions = query(store_url, "SELECT version, applied_by FROM tap_whoop_schema_version")
    assert [version for version, _ in versions] == list(range(1, SCHEMA_VERSION + 1))
    assert versions[0][1].startswith("tap-whoop ")


def test_a_database_set_up_by_a_newer_tap_whoop_is_refused_in_one_line(
    config: dict[str, t.Any], store_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    Run(config).token_store.read()
    query(store_url, "INSERT INTO tap_whoop_schema_version (version, applied_by) VALUES (99, 'x')")
    line = error_line(run_cli(*cli_files(config, tmp_path)))
    assert f"(schema version 99; this one knows up to {SCHEMA_VERSION})" in line
    assert "upgrade tap-whoop" in line
    assert sandbox.stats()["token_requests"] == 0


# 4. A store_url that cannot work: one line, no password, nothing spent


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"postgresql://tap_whoop:pw-s3cret-42@127.0.0.1:{_closed_port()}/tap_whoop",
            "cannot connect to the store database postgresql://tap_whoop@127.0.0.1:",
        ),
        ("WRONG_PASSWORD", 'password authentication failed for user "tap_whoop"'),
        ("NO_SCHEMA", "has no schema to keep tap-whoop's tables in"),
    ],
    ids=["unreachable", "wrong_password", "missing_schema"],
)
def test_a_database_that_cannot_be_used_is_one_line_without_the_password(
    sandbox: Sandbox,
    config: dict[str, t.Any],
    postgres_server: str,
    tmp_path: Path,
    url: str,
    expected: str,
) -> None:
    server = postgres_server
    if url == "WRONG_PASSWORD":
        url = server.replace("tap_whoop:tap_whoop@", "tap_whoop:pw-s3cret-42@", 1)
    elif url == "NO_SCHEMA":
        url = in_schema(server, "no_such_schema")
    started = time.monotonic()
    result = run_cli(*cli_files({**config, "store_url": url}, tmp_path))
    assert time.monotonic() - started < 30
    line = error_line(result)
    assert expected in line
    assert "pw-s3cret-42" not in result.stderr + result.stdout
    assert "tap_whoop:tap_whoop@" not in result.stderr + result.stdout
    assert sandbox.stats()["token_requests"] == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://me:pw-s3cret-42@db/whoop", "its scheme is 'mysql'"),
        ("db.example.com:5432/whoop", "it has no scheme"),
        ("postgresql://me:pw-s3cret-42@db:port/whoop", "port that is not a number"),
        ("postgresql://me:pw s3cret-42@db/whoop", "percent-encode them"),
        ("   ", "is empty"),
    ],
)
def test_a_store_url_that_is_no_postgresql_url_is_one_line_before_anything_runs(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path, url: str, expected: str
) -> None:
    result = run_cli(*cli_files({**config, "store_url": url}, tmp_path))
    line = error_line(result)
    assert line.startswith("tap-whoop: error: store_url ")
    assert expected in line
    assert "s3cret" not in result.stderr
    assert result.returncode == 2
    assert sandbox.stats()["token_requests"] == 0


def test_no_token_or_password_reaches_the_output_at_debug_level(
    pg: Backend, sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    args = cli_files(config, tmp_path)
    env = cli_env(TAP_WHOOP_LOGLEVEL="DEBUG")
    outputs = []
    for _ in range(2):
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(result.stdout + result.stderr)
        pg.expire(config)
    sandbox.revoke("alice")
    rejected = run_cli(*args, env=env)
    outputs.append(rejected.stdout + rejected.stderr)
    entry = pg.members(config)["default"]
    output = "\n".join(outputs)
    for secret in (config["refresh_token"], entry["refresh_token"], entry["access_token"]):
        assert secret not in output
    assert "tap_whoop:tap_whoop@" not in output


def test_importing_the_tap_loads_no_database_driver() -> None:
    code = "import sys, tap_whoop.tap, tap_whoop.cli; print('psycopg' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr


def test_a_store_that_cannot_be_written_fails_before_spending_the_token(
    pg: Backend, sandbox: Sandbox, config: dict[str, t.Any], store_url: str
) -> None:
    """A read-only session (a standby, a revoked grant) is found out by the proof write."""
    readonly = store_url + "%20-cdefault_transaction_read_only%3Don"
    run_tap(config, select={"profile"})  # the tables exist
    pg.expire(config)
    before = pg.state(config)
    sandbox.reset_stats()
    result = run_tap({**config, "store_url": readonly}, select=PROFILE)
    assert isinstance(result.error, TokenStoreError)
    message = str(result.error)
    # the first write fails: the app's rate-limit window, taken before the first request's
    # token, or the token store's proof write
    assert (
        "cannot write token store postgresql://" in message
        and "no refresh token was spent" in message
    ) or "cannot use the shared rate-limit window in postgresql://" in message, message
    assert "point store_url at the primary" in message
    assert sandbox.stats()["token_requests"] == 0
    assert pg.state(config) == before


def test_a_read_only_store_met_first_by_creating_the_tables_names_the_fix(
    sandbox: Sandbox, config: dict[str, t.Any], store_url: str
) -> None:
    readonly = store_url + "%20-cdefault_transaction_read_only%3Don"
    result = run_tap({**config, "store_url": readonly}, select=PROFILE)
    assert isinstance(result.error, TokenStoreError)
    message = str(result.error)
    assert "\n" not in message
    assert "CREATE TABLE" in message, message  # the first statement met: no table exists yet
    assert "point store_url at the primary" in message, message
    assert sandbox.stats()["token_requests"] == 0


@contextlib.contextmanager
def receiving(
    store_url: str, tmp_path: Path
) -> Iterator[tuple[Run, Callable[..., requests.Response]]]:
    """A receiver on a real port whose inbox is in `store_url`; and how to deliver to it."""
    config = {**webhook_config(tmp_path), "store_url": store_url}
    run = Run(config)
    run.token_store.write(
        {"version": 1, "members": {"alice": {"refresh_token": "r", "user_id": ALICE}}}
    )
    server = WebhookServer(Receiver(run), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.port}{WEBHOOK_PATH}"

    def deliver(payload: dict[str, t.Any]) -> requests.Response:
        body, headers = signed(payload)
        return requests.post(url, data=body, headers=headers, timeout=10)

    try:
        yield run, deliver
    finally:
        server.stop()
        thread.join(15)


def test_the_receiver_stores_signed_events_in_the_database_and_answers_503_while_it_is_locked(
    store_url: str, tmp_path: Path
) -> None:
    first, second = an_event(), an_event()
    with receiving(store_url, tmp_path) as (run, deliver):
        assert deliver(first).json() == {"stored": True}
        assert deliver(first).json() == {"duplicate": True}
        with psycopg.connect(store_url) as holder:
            holder.execute("LOCK TABLE tap_whoop_events IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            refused = deliver(second)
            assert time.monotonic() - started < 1.5
        assert (refused.status_code, refused.json()) == (503, {"error": "inbox unavailable"})
        assert deliver(second).json() == {"stored": True}
    pending = [event.trace_id for event in run.inbox.after(0)]
    assert pending == [first["trace_id"], second["trace_id"]]
    assert not Path(run.config["token_store_path"]).parent.exists()


def test_the_receiver_answers_503_within_a_second_while_the_store_server_is_away(
    proxy: PostgresProxy, tmp_path: Path
) -> None:
    """A restart does not hold WHOOP's delivery for the tap's 30 s reconnect: 503, retried."""
    first, second = an_event(), an_event()
    with receiving(proxy.url, tmp_path) as (run, deliver):
        assert deliver(first).json() == {"stored": True}
        proxy.outage(3)
        started = time.monotonic()
        refused = deliver(second)
        assert time.monotonic() - started < 1.5
        assert (refused.status_code, refused.json()) == (503, {"error": "inbox unavailable"})
        time.sleep(3)
        assert deliver(second).json() == {"stored": True}
    pending = [event.trace_id for event in run.inbox.after(0)]
    assert pending == [first["trace_id"], second["trace_id"]]


@pytest.mark.parametrize("table", ["tap_whoop_tokens", "tap_whoop_events", "tap_whoop_rate_window"])
def test_a_lock_held_by_another_session_ends_the_run_in_one_line_naming_the_table(
    config: dict[str, t.Any], store_url: str, sandbox: Sandbox, tmp_path: Path, table: str
) -> None:
    """A migration, a LOCK TABLE or a transaction left open: never a silent endless wait."""
    Run(config).token_store.read()  # the tables exist
    with psycopg.connect(store_url) as holder:
        holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        result = run_cli(*cli_files({**config, "store_timeout_seconds": 1}, tmp_path))
        waited = time.monotonic() - started

    line = error_line(result)
    assert waited < 20, waited
    assert f"{table} (AccessExclusiveLock by process" in line, line
    assert "waited 1 s (store_timeout_seconds)" in line
    assert "raise store_timeout_seconds" in line
