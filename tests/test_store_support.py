"""Helpers for the store tests (no tests here): a PostgreSQL schema per test, both backends.

PostgreSQL is the server at TAP_WHOOP_TEST_POSTGRES_URL (default: the one scripts/postgres.sh
sets up). Tests that need it fail, never skip, when it cannot be reached. Each test gets a schema
of its own (through the URL's search_path), dropped afterwards, so concurrent runs never meet.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import typing as t
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from tap_whoop.run import Run
from tests.auth_support import TAP_WHOOP, catalog_file, cli_env, expire_access_tokens, write_json
from tests.conftest import tap_config

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

    from tap_whoop.stores.tokens import TokenStorage
    from whoop_sandbox import Sandbox

DEFAULT_POSTGRES_URL = "postgresql://tap_whoop:tap_whoop@127.0.0.1:5432/tap_whoop"
SETUP_HINT = (
    "run the tests with `bash scripts/test.sh` (it starts PostgreSQL with scripts/postgres.sh), "
    "or set TAP_WHOOP_TEST_POSTGRES_URL to a server where the user may CREATE schemas"
)
BACKENDS = ["file", "postgres"]


def server_url() -> str:
    """The test server's URL."""
    return os.environ.get("TAP_WHOOP_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def in_schema(url: str, schema: str) -> str:
    """`url` with its search_path set to `schema` (libpq's `options`)."""
    joiner = "&" if urlsplit(url).query else "?"
    return f"{url}{joiner}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The server's URL, once it answered; the test fails when it does not."""
    url = server_url()
    try:
        with psycopg.connect(url, connect_timeout=5) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        parts = urlsplit(url)
        pytest.fail(
            f"PostgreSQL at {parts.hostname}:{parts.port or 5432} (database "
            f"{parts.path.lstrip('/')}) is not reachable: {str(exc).strip()}; {SETUP_HINT}",
            pytrace=False,
        )
    return url


@pytest.fixture
def store_url(postgres_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A `store_url` whose schema belongs to this test alone (dropped afterwards)."""
    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:36].strip("_")
    schema = f"store_{name}_{secrets.token_hex(3)}"
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield in_schema(postgres_server, schema)
    gc.collect()  # the runs' connections
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def query(url: str, statement: str, params: t.Sequence[t.Any] = ()) -> list[tuple[t.Any, ...]]:
    """Run one statement in the store's schema; its rows (none for a statement without)."""
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(t.cast("t.LiteralString", statement), params)
        return cursor.fetchall() if cursor.description else []


@dataclass
class Backend:
    """One way of keeping the store, seen from outside the tap: its files, or its rows."""

    name: str
    url: str | None = None
    _stores: list[t.Any] = field(default_factory=list)

    def config(self, sandbox: Sandbox, tmp_path: Path, **overrides: t.Any) -> dict[str, t.Any]:
        """`tap_config` for this backend (PostgreSQL: with `store_url`)."""
        config = tap_config(sandbox, tmp_path, **overrides)
        if self.url is not None:
            config["store_url"] = self.url
        return config

    def store(self, config: dict[str, t.Any]) -> TokenStorage:
        """The config's token store, as the tap opens it."""
        store = Run(config).token_store
        self._stores.append(store)
        return store

    def members(self, config: dict[str, t.Any]) -> dict[str, t.Any]:
        """Every member's stored entry."""
        if self.url is None:
            data = json.loads(Path(config["token_store_path"]).read_text())
            return t.cast(dict[str, t.Any], data["members"])
        return {member: entry for member, entry in query(self.url, _ROWS)}

    def state(self, config: dict[str, t.Any]) -> t.Any:
        """Everything the store holds, exactly (file bytes; rows with their update times)."""
        if self.url is None:
            return Path(config["token_store_path"]).read_bytes()
        return query(self.url, "SELECT member, entry::text, updated_at FROM tap_whoop_tokens")

    def text(self, config: dict[str, t.Any]) -> str:
        """Everything the store holds, as text to search for a secret."""
        if self.url is None:
            return Path(config["token_store_path"]).read_text()
        rows = query(self.url, "SELECT member, entry::text FROM tap_whoop_tokens")
        return json.dumps(rows)

    def expire(self, config: dict[str, t.Any]) -> None:
        """Make every stored access token look expired, so the next use refreshes."""
        if self.url is None:
            expire_access_tokens(config)
        else:
            query(
                self.url,
                "UPDATE tap_whoop_tokens SET entry = jsonb_set(entry, '{expires_at}', '0')",
            )

    def set_field(self, config: dict[str, t.Any], key: str, name: str, raw: str) -> None:
        """Set a member's field to the JSON text `raw`, as a hand edit would."""
        if self.url is None:
            path = Path(config["token_store_path"])
            data = json.loads(path.read_text())
            data["members"][key][name] = "RAW-VALUE"
            path.write_text(json.dumps(data).replace('"RAW-VALUE"', raw))
        else:
            query(
                self.url,
                "UPDATE tap_whoop_tokens SET entry = jsonb_set(entry, %s, %s::jsonb) "
                "WHERE member = %s",
                ([name], raw, key),
            )

    def close(self) -> None:
        for store in self._stores:
            if hasattr(store, "close"):
                store.close()
            if hasattr(store, "database"):
                store.database.close()


_ROWS = "SELECT member, entry FROM tap_whoop_tokens ORDER BY member"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each test runs on the token store files and on PostgreSQL."""
    url = request.getfixturevalue("store_url") if request.param == "postgres" else None
    chosen = Backend(request.param, url)
    yield chosen
    chosen.close()


# Workers on separate machines: own working folder, own home, nothing shared but the database


def machine_env(folder: Path) -> dict[str, str]:
    """The environment of a process on a machine of its own, living in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    return cli_env(HOME=str(folder), XDG_DATA_HOME=str(folder / "data"), TMPDIR=str(folder))


def machine_config(config: dict[str, t.Any], folder: Path) -> dict[str, t.Any]:
    """`config` as a machine living in `folder` has it: its own (unused) token store path."""
    return {**config, "token_store_path": str(folder / "store" / "tokens.json")}


def files_left(folders: t.Iterable[Path]) -> list[Path]:
    """Store files a worker left in its folder (there should be none with store_url)."""
    return [
        path
        for folder in folders
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix in (".json", ".sqlite", ".lock")
        and path.name not in ("config.json", "catalog.json")
    ]


def tap_on_machine(
    config: dict[str, t.Any], folder: Path, streams: set[str]
) -> subprocess.Popen[str]:
    """Start `tap-whoop` as a machine living in `folder` would (its own config and catalog)."""
    config = machine_config(config, folder)
    config_file = write_json(folder / "config.json", config)
    catalog = catalog_file(folder / "catalog.json", config, streams)
    return subprocess.Popen(
        [*TAP_WHOOP, "--config", str(config_file), "--catalog", str(catalog)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=folder,
        env=machine_env(folder),
    )


def race_on_machine(
    barrier: Barrier, config: dict[str, t.Any], folder: str, results: Queue[str]
) -> None:
    """One racing process on a machine of its own: ask for the member's access token at once."""
    os.chdir(folder)
    run = Run(machine_config(config, Path(folder)))
    auth = run.member_auth("default")
    barrier.wait()
    try:
        results.put(auth.access_token())
    except Exception as exc:
        results.put(f"error: {exc}")


def use_tokens_for(
    config: dict[str, t.Any], folder: str, seconds: float, results: Queue[t.Any]
) -> None:
    """A worker on a machine of its own: ask for an access token every 50 ms for `seconds`.

    Puts (asked, answered, token) for every answer, or the error that stopped it: the token was
    valid at some moment between the two times.
    """
    import time

    os.chdir(folder)
    auth = Run(machine_config(config, Path(folder))).member_auth("default")
    seen: list[tuple[float, float, str]] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            asked = time.time()
            token = auth.access_token()
            seen.append((asked, time.time(), token))
            time.sleep(0.05)
    except Exception as exc:
        results.put(f"error: {exc}")
        return
    results.put(seen)


def run_script(
    script: str, args: t.Sequence[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run Python `script` with `args` as the `tap-whoop` command would run."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env or cli_env(),
        check=False,
    )


class PostgresProxy:
    """A TCP relay on loopback in front of PostgreSQL whose server can "restart".

    `outage(seconds)` drops every relayed connection and, for `seconds`, closes each new one at
    once, as a server that is restarting or failing over does; then it relays again.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = url.replace(
            f"@{parts.hostname}:{parts.port or 5432}/", f"@127.0.0.1:{self.port}/"
        )
        self.refused = 0
        self._down_until = 0.0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def outage(self, seconds: float) -> None:
        with self._lock:
            self._down_until = time.monotonic() + seconds
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def close(self) -> None:
        self.outage(0)
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if time.monotonic() < self._down_until:
                    self.refused += 1
                    client.close()
                    continue
                server = socket.create_connection(self.upstream)
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
