"""End to end: the sandbox as its own process, Meltano, and real PostgreSQL and DuckDB loaders.

Every test gets a throw-away Meltano project (a copy of meltano.yml whose plugin venvs link to the
ones `scripts/bootstrap.sh` installed), so its state (meltano.db), token store and DuckDB file
never touch the checkout's `.meltano/` or `output/`; and a PostgreSQL schema of its own.

Prerequisites (`bash scripts/test.sh` provides them): .venv-meltano with Meltano, the plugins
from `meltano install`, and PostgreSQL at TAP_WHOOP_TEST_POSTGRES_URL (default: the server
scripts/postgres.sh sets up). Without them these tests fail; they never skip.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import typing as t
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import duckdb
import psycopg
import pytest
from psycopg import sql

from whoop_sandbox import Sandbox, SandboxServer

if t.TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"
BIN = Path(sys.executable).parent
PLUGINS = {
    "extractors/tap-whoop": "tap-whoop",
    "loaders/target-postgres": "target-postgres",
    "loaders/target-duckdb": "target-duckdb",
}
TARGET_POSTGRES = (
    ROOT / ".meltano" / "loaders" / "target-postgres" / "venv" / "bin" / "target-postgres"
)
DEFAULT_POSTGRES_URL = "postgresql://tap_whoop:tap_whoop@127.0.0.1:5432/tap_whoop"
SETUP_HINT = (
    "run the tests with `bash scripts/test.sh`: it installs Meltano and the plugins "
    "(scripts/bootstrap.sh) and starts PostgreSQL (scripts/postgres.sh)"
)

#: Sandbox clock of every test: a morning with alice's last sleep and recovery still pending,
#: and a workout she enters by hand (3 days late) during the next day.
NOW = "2026-11-12T15:00:00Z"
HISTORY_DAYS = 180
ADVANCE_DAYS = 1
MEMBER = "alice"
RUN_TIMEOUT = 600

#: table -> (sandbox record kind, primary key)
COLLECTIONS = {
    "cycles": ("cycle", "id"),
    "recovery": ("recovery", "cycle_id"),
    "sleep": ("sleep", "id"),
    "workout": ("workout", "id"),
}
PRIMARY_KEYS = {"profile": "user_id", "body_measurement": "user_id"} | {
    table: key for table, (_, key) in COLLECTIONS.items()
}


# The sandbox, as a separate process


@dataclass
class SandboxProcess:
    """`tap-whoop-sandbox` on a free port, plus an identical in-process model of its data."""

    process: subprocess.Popen[str]
    url: str
    model: Sandbox = field(repr=False)

    @property
    def api_url(self) -> str:
        return f"{self.url}/developer"

    @property
    def oauth_url(self) -> str:
        return f"{self.url}/oauth/oauth2"

    def admin(self, method: str, path: str, body: dict[str, t.Any] | None = None) -> t.Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/_sandbox/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def requests(self) -> int:
        """WHOOP API requests served since the last reset (OAuth and admin not counted)."""
        return int(self.admin("GET", "stats")["requests"])

    def reset_stats(self) -> None:
        self.admin("POST", "stats/reset")

    def advance(self, days: int) -> None:
        """A day passes, in the server and in the model alike."""
        self.admin("POST", "advance", {"days": days})
        self.model.advance(days=days)

    def records(self, kind: str) -> list[dict[str, t.Any]]:
        return self.model.records(MEMBER, kind)  # type: ignore[arg-type]


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[SandboxProcess]:
    args = [
        str(BIN / "tap-whoop-sandbox"),
        "--port=0",
        f"--members={MEMBER}",
        f"--history-days={HISTORY_DAYS}",
        f"--now={NOW}",
        "--per-minute=none",
        "--per-day=none",
        f"--state-file={tmp_path / 'sandbox.json'}",
        "--quiet",
    ]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        found = re.search(r"api_url=(http://\S+)/developer", banner)
        if not found:
            process.kill()
            rest = process.stdout.read()
            pytest.fail(f"tap-whoop-sandbox did not start: {banner}{rest}")
        model = Sandbox(
            members=(MEMBER,),
            history_days=HISTORY_DAYS,
            now=datetime.datetime.fromisoformat(NOW.replace("Z", "+00:00")),
            per_minute=None,
            per_day=None,
        )
        yield SandboxProcess(process, found.group(1), model)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# PostgreSQL


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str

    def connect(self, **kwargs: t.Any) -> psycopg.Connection[t.Any]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.database,
            connect_timeout=5,
            **kwargs,
        )

    def target_env(self, schema: str) -> dict[str, str]:
        """Meltano's env vars for target-postgres's settings."""
        return {
            "TARGET_POSTGRES_HOST": self.host,
            "TARGET_POSTGRES_PORT": str(self.port),
            "TARGET_POSTGRES_USER": self.user,
            "TARGET_POSTGRES_PASSWORD": self.password,
            "TARGET_POSTGRES_DATABASE": self.database,
            "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema,
        }


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    url = os.environ.get("TAP_WHOOP_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    parts = urlsplit(url)
    server = Postgres(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/"),
    )
    try:
        with server.connect() as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL at {server.host}:{server.port} (database {server.database}, user "
            f"{server.user}) is not reachable: {str(exc).strip()}; {SETUP_HINT}",
            pytrace=False,
        )
    return server


@pytest.fixture
def pg_schema(postgres: Postgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """A schema for this test alone, dropped afterwards."""
    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40]
    schema = f"e2e_{name}_{secrets.token_hex(3)}"
    yield schema
    with postgres.connect(autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


def pg_rows(postgres: Postgres, schema: str, table: str) -> list[dict[str, t.Any]]:
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            sql.SQL(
                "SELECT *, jsonb_typeof(to_jsonb(t)->'score') AS score_type FROM {}.{} t"
            ).format(sql.Identifier(schema), sql.Identifier(table))
            if table in COLLECTIONS
            else sql.SQL("SELECT * FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        )
        names = [column.name for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def pg_columns(postgres: Postgres, schema: str, table: str) -> tuple[dict[str, str], list[str]]:
    """Column types, and the primary key's columns."""
    with postgres.connect() as connection:
        types = dict(
            connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                (schema, table),
            ).fetchall()
        )
        keys = [
            name
            for (name,) in connection.execute(
                "SELECT kcu.column_name FROM information_schema.table_constraints tc "
                "JOIN information_schema.key_column_usage kcu "
                "ON kcu.constraint_schema = tc.constraint_schema "
                "AND kcu.constraint_name = tc.constraint_name "
                "WHERE tc.table_schema = %s AND tc.table_name = %s "
                "AND tc.constraint_type = 'PRIMARY KEY'",
                (schema, table),
            ).fetchall()
        ]
    return types, keys


def duckdb_rows(path: Path, table: str) -> list[dict[str, t.Any]]:
    with duckdb.connect(str(path), read_only=True) as connection:
        cursor = connection.execute(f'SELECT * FROM tap_whoop."{table}"')
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        if isinstance(row.get("score"), str):
            row["score"] = json.loads(row["score"])
    return rows


def duckdb_columns(path: Path, table: str) -> tuple[dict[str, str], list[str]]:
    with duckdb.connect(str(path), read_only=True) as connection:
        types = dict(
            connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'tap_whoop' AND table_name = ?",
                [table],
            ).fetchall()
        )
        keys = connection.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() "
            "WHERE schema_name = 'tap_whoop' AND table_name = ? "
            "AND constraint_type = 'PRIMARY KEY'",
            [table],
        ).fetchall()
    return types, [name for (names,) in keys for name in names]


# A throw-away Meltano project


@dataclass
class MeltanoProject:
    root: Path
    base_env: dict[str, str]

    @property
    def duckdb_file(self) -> Path:
        """Where the sandbox environment's target-duckdb writes (${MELTANO_PROJECT_ROOT}/output)."""
        return self.root / "output" / "whoop_sandbox.duckdb"

    @property
    def token_store(self) -> Path:
        return self.root / ".meltano" / "tap-whoop-sandbox" / "tokens.json"

    def meltano(
        self, *args: str, env: dict[str, str] | None = None, environment: str = "sandbox"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MELTANO), f"--environment={environment}", *args],
            cwd=self.root,
            env={**self.base_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )

    def run(
        self, loader: str, *options: str, env: dict[str, str] | None = None, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`meltano --environment=sandbox run [options] tap-whoop LOADER`."""
        result = self.meltano("run", *options, "tap-whoop", loader, env=env)
        if ok:
            assert result.returncode == 0, f"meltano run failed:\n{log_tail(result)}"
        return result

    def state(self, loader: str) -> dict[str, t.Any]:
        result = self.meltano("state", "get", f"sandbox:tap-whoop-to-{loader}")
        assert result.returncode == 0, log_tail(result)
        return t.cast(dict[str, t.Any], json.loads(result.stdout))


def log_tail(result: subprocess.CompletedProcess[str], lines: int = 40) -> str:
    """The end of a run's output, without the SDK's metric lines."""
    text = (result.stdout or "") + (result.stderr or "")
    kept = [line for line in text.splitlines() if "METRIC" not in line]
    return "\n".join(kept[-lines:])


def clean_env() -> dict[str, str]:
    """This process's environment minus anything that would configure Meltano or a plugin."""
    prefixes = ("TAP_WHOOP_", "TARGET_POSTGRES_", "TARGET_DUCKDB_", "MELTANO_", "PG")
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(prefixes) and name != "VIRTUAL_ENV"
    }


@pytest.fixture(scope="session")
def meltano_installed() -> None:
    missing = [str(MELTANO)] if not MELTANO.exists() else []
    missing += [
        str(ROOT / ".meltano" / plugin / "venv" / "bin" / executable)
        for plugin, executable in PLUGINS.items()
        if not (ROOT / ".meltano" / plugin / "venv" / "bin" / executable).exists()
    ]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)}; {SETUP_HINT}", pytrace=False)


@pytest.fixture
def project(
    tmp_path: Path,
    meltano_installed: None,
    sandbox_process: SandboxProcess,
    postgres: Postgres,
    pg_schema: str,
) -> MeltanoProject:
    """meltano.yml in a temp dir; plugin venvs linked, everything else (state, tokens) its own."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "meltano.yml", root / "meltano.yml")
    (root / "output").mkdir()
    for plugin in PLUGINS:
        (root / ".meltano" / plugin).mkdir(parents=True)
        (root / ".meltano" / plugin / "venv").symlink_to(ROOT / ".meltano" / plugin / "venv")
    env = clean_env() | {
        "MELTANO_PROJECT_ROOT": str(root),
        # Never reinstall a plugin here: its venv is the checkout's.
        "MELTANO_AUTO_INSTALL": "false",
        "MELTANO_CLI_DISABLE_VERSION_CHECK": "1",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "TAP_WHOOP_API_URL": sandbox_process.api_url,
        "TAP_WHOOP_OAUTH_URL": sandbox_process.oauth_url,
        **postgres.target_env(pg_schema),
    }
    return MeltanoProject(root, env)


# What the loaders hold, against what the sandbox has


Reader = t.Callable[[str], list[dict[str, t.Any]]]


@contextlib.contextmanager
def served(sandbox: Sandbox) -> Iterator[Sandbox]:
    """`sandbox` answering on a loopback port for the block (its server as `sandbox.server`)."""
    server = SandboxServer(sandbox).start()
    sandbox.server = server  # type: ignore[attr-defined]
    try:
        yield sandbox
    finally:
        server.stop()


def reader_for(
    loader: str, project: MeltanoProject, postgres: Postgres, schema: str
) -> tuple[Reader, t.Callable[[str], tuple[dict[str, str], list[str]]]]:
    if loader == "target-postgres":
        return (
            lambda table: pg_rows(postgres, schema, table),
            lambda table: pg_columns(postgres, schema, table),
        )
    return (
        lambda table: duckdb_rows(project.duckdb_file, table),
        lambda table: duckdb_columns(project.duckdb_file, table),
    )


def instant(value: t.Any) -> datetime.datetime:
    """A loaded timestamp (naive means UTC, as both loaders store it) or WHOOP's ISO text."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert isinstance(value, datetime.datetime), value
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


def assert_loaded_as_sandbox(read: Reader, sandbox: SandboxProcess) -> None:
    """One row per WHOOP record, each as WHOOP has it now (state, score, updated_at, end)."""
    member = sandbox.model.member(MEMBER)
    profile = read("profile")
    assert [(row["user_id"], row["email"]) for row in profile] == [
        (member.user_id, member.profile()["email"])
    ]
    body = read("body_measurement")
    assert [(row["user_id"], row["max_heart_rate"]) for row in body] == [
        (member.user_id, member.body()["max_heart_rate"])
    ]
    for table, (kind, key) in COLLECTIONS.items():
        rows = read(table)
        loaded = [str(row[key]) for row in rows]  # PostgreSQL returns uuid.UUID
        duplicates = {k for k in loaded if loaded.count(k) > 1}
        assert not duplicates, f"{table}: duplicate rows for {sorted(duplicates)[:5]}"
        expected = {str(record[key]): record for record in sandbox.records(kind)}
        assert set(loaded) == set(expected), (
            f"{table}: missing {sorted(set(expected) - set(loaded))[:5]}, "
            f"unexpected {sorted(set(loaded) - set(expected))[:5]}"
        )
        for row in rows:
            record = expected[str(row[key])]
            where = f"{table} {row[key]}"
            assert row["score_state"] == record["score_state"], where
            assert row["score"] == record.get("score"), where
            assert row["user_id"] == member.user_id, where
            assert instant(row["updated_at"]) == instant(record["updated_at"]), where
            if "start" in record:
                assert instant(row["start"]) == instant(record["start"]), where
                if record.get("end"):
                    assert instant(row["end"]) == instant(record["end"]), where
                else:
                    assert row["end"] is None, where


def pending_keys(sandbox: SandboxProcess) -> dict[str, set[t.Any]]:
    """Per table, the records WHOOP may still change: pending scores, the current cycle."""
    keys: dict[str, set[t.Any]] = {}
    for table, (kind, key) in COLLECTIONS.items():
        keys[table] = {
            record[key]
            for record in sandbox.records(kind)
            if record["score_state"] == "PENDING_SCORE"
            or ("start" in record and not record.get("end"))
        }
    return keys


def late_workouts(sandbox: SandboxProcess, before: set[t.Any]) -> list[dict[str, t.Any]]:
    """Workouts new since `before` that started over two days before they were entered."""
    return [
        record
        for record in sandbox.records("workout")
        if record["id"] not in before
        and instant(record["created_at"]) - instant(record["start"]) > datetime.timedelta(days=2)
    ]


# The tests


@pytest.mark.parametrize("loader", ["target-postgres", "target-duckdb"])
def test_full_incremental_and_full_refresh_runs(
    loader: str,
    project: MeltanoProject,
    sandbox_process: SandboxProcess,
    postgres: Postgres,
    pg_schema: str,
) -> None:
    read, describe = reader_for(loader, project, postgres, pg_schema)

    # 1. First run: the whole history.
    project.run(loader)
    first_requests = sandbox_process.requests()
    assert_loaded_as_sandbox(read, sandbox_process)
    pending = pending_keys(sandbox_process)
    assert pending["sleep"], "the scenario needs a pending sleep score at NOW"
    assert pending["recovery"], "the scenario needs a pending recovery at NOW"
    for table, key in PRIMARY_KEYS.items():
        types, keys = describe(table)
        assert keys == [key], f"{table}: primary key {keys}"
        assert types["user_id"].lower() in ("bigint", "hugeint"), f"{table}.user_id: {types}"
    for table in COLLECTIONS:
        types, _ = describe(table)
        assert types["score"].lower() in ("jsonb", "json"), f"{table}.score is {types['score']}"
        assert "timestamp" in types["updated_at"].lower(), f"{table}.updated_at: {types}"
    if loader == "target-postgres":
        # Scores are JSON objects (not text), a missing score is JSON null or NULL.
        for table in COLLECTIONS:
            for row in read(table):
                expected = "object" if row["score_state"] == "SCORED" else None
                assert (row["score_type"] if row["score_type"] != "null" else None) == expected
    state = project.state(loader)
    assert state["singer_state"]["bookmarks"]["cycles"], state

    # 2. A day later: a new day, finished scores, a workout entered by hand 3 days late.
    workouts_before = {record["id"] for record in sandbox_process.records("workout")}
    sandbox_process.advance(ADVANCE_DAYS)
    late = late_workouts(sandbox_process, workouts_before)
    assert late, "the scenario needs a late manual workout within the advance"
    pending_now = pending_keys(sandbox_process)
    for table, held in pending.items():
        still = held & pending_now[table]
        assert not still, f"{table}: {still} should be final after the advance"
    sandbox_process.reset_stats()
    project.run(loader)
    second_requests = sandbox_process.requests()
    assert_loaded_as_sandbox(read, sandbox_process)  # new rows, and changed rows updated in place
    assert {str(row["id"]) for row in read("workout")} >= {record["id"] for record in late}
    assert second_requests * 3 <= first_requests, (first_requests, second_requests)

    # 3. --full-refresh re-reads everything, and still no row is there twice.
    sandbox_process.reset_stats()
    project.run(loader, "--full-refresh")
    assert sandbox_process.requests() >= first_requests
    assert_loaded_as_sandbox(read, sandbox_process)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("wrong-password", r"password authentication failed"),
        ("server-down", r"(?i)connection refused|could not connect"),
    ],
)
def test_postgres_failure_then_recovery(
    failure: str,
    message: str,
    project: MeltanoProject,
    sandbox_process: SandboxProcess,
    postgres: Postgres,
    pg_schema: str,
) -> None:
    read, _ = reader_for("target-postgres", project, postgres, pg_schema)
    project.run("target-postgres")
    state_before = project.state("target-postgres")
    counts_before = {table: len(read(table)) for table in COLLECTIONS}

    sandbox_process.advance(ADVANCE_DAYS)
    broken = (
        {"TARGET_POSTGRES_PASSWORD": "wrong"}
        if failure == "wrong-password"
        else {"TARGET_POSTGRES_PORT": str(closed_port())}
    )
    result = project.run("target-postgres", env=broken, ok=False)
    assert result.returncode != 0
    assert re.search(message, log_tail(result, 400)), log_tail(result)
    assert "Loader failed" in result.stderr + result.stdout, log_tail(result)
    # Nothing was loaded, and the bookmarks are those of the last good run.
    assert {table: len(read(table)) for table in COLLECTIONS} == counts_before
    assert project.state("target-postgres") == state_before

    project.run("target-postgres")
    assert_loaded_as_sandbox(read, sandbox_process)


def test_unreachable_whoop_then_recovery(
    project: MeltanoProject, sandbox_process: SandboxProcess, postgres: Postgres, pg_schema: str
) -> None:
    read, _ = reader_for("target-postgres", project, postgres, pg_schema)
    project.run("target-postgres")
    state_before = project.state("target-postgres")

    sandbox_process.advance(ADVANCE_DAYS)
    # An hour or more later (as between scheduled runs) the access token has expired; the
    # tap must reach the token endpoint first.
    store = json.loads(project.token_store.read_text())
    for entry in store["members"].values():
        entry["expires_at"] = 0
    project.token_store.write_text(json.dumps(store))
    dead = f"http://127.0.0.1:{closed_port()}"
    result = project.run(
        "target-postgres",
        env={
            "TAP_WHOOP_API_URL": f"{dead}/developer",
            "TAP_WHOOP_OAUTH_URL": f"{dead}/oauth/oauth2",
        },
        ok=False,
    )
    assert result.returncode != 0
    output = log_tail(result, 400)
    assert "tap-whoop: error:" in output, output
    assert "cannot reach WHOOP" in output, output
    assert "Extractor failed" in output, output
    assert project.state("target-postgres") == state_before

    # meltano.yml's job for schedules: same pipeline, same state ID.
    result = project.meltano("run", "whoop-to-postgres")
    assert result.returncode == 0, log_tail(result)
    assert_loaded_as_sandbox(read, sandbox_process)
    assert project.state("target-postgres") != state_before


def test_member_authorized_with_tap_whoop_auth_under_meltano(
    project: MeltanoProject, sandbox_process: SandboxProcess, postgres: Postgres, pg_schema: str
) -> None:
    """The README's path for a real account, in the dev environment: no refresh_token anywhere.

    `meltano invoke tap-whoop auth` puts the member's tokens in the project's token store
    (.meltano/tap-whoop/tokens.json); `meltano run` then syncs with only client_id and
    client_secret configured. The sandbox consents at once, so opening the consent URL
    sends the browser (here: urllib) straight to the redirect that `--listen` catches.
    """
    read, _ = reader_for("target-postgres", project, postgres, pg_schema)
    env = project.base_env | {
        "TAP_WHOOP_CLIENT_ID": "sandbox-client",
        "TAP_WHOOP_CLIENT_SECRET": "sandbox-secret",
    }
    config = project.meltano("config", "print", "tap-whoop", env=env, environment="dev")
    assert config.returncode == 0, log_tail(config)
    assert "refresh_token" not in json.loads(config.stdout[config.stdout.index("{") :])

    auth = subprocess.Popen(
        [
            *(str(MELTANO), "--environment=dev", "invoke", "tap-whoop", "auth"),
            *("--member=default", "--listen=0", "--no-browser"),
        ],
        cwd=project.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert auth.stdout is not None
        seen = []
        for line in auth.stdout:
            seen.append(line)
            found = re.search(r"(http://\S+/oauth/oauth2/auth\?\S+)", line)
            if found:
                with urllib.request.urlopen(found.group(1), timeout=30) as response:
                    assert response.status == 200
                break
        else:
            pytest.fail("`tap-whoop auth` printed no consent URL:\n" + "".join(seen[-30:]))
        rest, _ = auth.communicate(timeout=120)
    finally:
        if auth.poll() is None:
            auth.kill()
            auth.wait()
    output = "".join(seen) + rest
    assert auth.returncode == 0, output
    assert "Member 'default' authorized" in output, output
    store = project.root / ".meltano" / "tap-whoop" / "tokens.json"
    assert "default" in json.loads(store.read_text())["members"]

    result = project.meltano("run", "tap-whoop", "target-postgres", env=env, environment="dev")
    assert result.returncode == 0, log_tail(result)
    assert_loaded_as_sandbox(read, sandbox_process)


def test_plain_singer_pipe_without_meltano(
    tmp_path: Path,
    meltano_installed: None,
    sandbox_process: SandboxProcess,
    postgres: Postgres,
    pg_schema: str,
) -> None:
    """The README's commands: tap-whoop | target-postgres, state from the target's last line."""
    tap_config = tmp_path / "tap.json"
    tap_config.write_text(
        json.dumps(
            {
                "client_id": "sandbox-client",
                "client_secret": "sandbox-secret",
                "refresh_token": "sandbox-seed-alice",
                "api_url": sandbox_process.api_url,
                "oauth_url": sandbox_process.oauth_url,
                "token_store_path": str(tmp_path / "tokens.json"),
            }
        )
    )
    target_config = tmp_path / "target.json"
    target_config.write_text(
        json.dumps(
            {
                "host": postgres.host,
                "port": postgres.port,
                "user": postgres.user,
                "password": postgres.password,
                "database": postgres.database,
                "default_target_schema": pg_schema,
                "load_method": "upsert",
                "add_record_metadata": True,
            }
        )
    )
    env = clean_env() | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    state = tmp_path / "state.json"

    def pipe() -> None:
        state_option = f"--state {state}" if state.exists() else ""
        script = (
            "set -euo pipefail\n"
            f"tap-whoop --config {tap_config} {state_option} "
            f"| {TARGET_POSTGRES} --config {target_config} > {tmp_path / 'state-out.jsonl'}\n"
            f"tail -n 1 {tmp_path / 'state-out.jsonl'} > {state}.new && mv {state}.new {state}\n"
        )
        result = subprocess.run(
            ["bash", "-c", script],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, log_tail(result)

    read, _ = reader_for("target-postgres", MeltanoProject(tmp_path, env), postgres, pg_schema)
    pipe()
    first_requests = sandbox_process.requests()
    assert_loaded_as_sandbox(read, sandbox_process)
    assert json.loads(state.read_text())["bookmarks"]["cycles"]

    sandbox_process.advance(ADVANCE_DAYS)
    sandbox_process.reset_stats()
    pipe()
    assert_loaded_as_sandbox(read, sandbox_process)
    assert sandbox_process.requests() * 3 <= first_requests
