"""Shared fixtures: a WHOOP sandbox on loopback and a way to run the tap against it."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import typing as t
from dataclasses import dataclass, field

import pytest

from tap_whoop.clock import NOW_ENV
from tap_whoop.stop import STOP
from tap_whoop.streams.base import CollectionStream, WhoopStream
from tap_whoop.tap import TapWhoop
from whoop_sandbox import Sandbox, SandboxServer

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

NOW = datetime.datetime(2026, 11, 20, 12, 0, tzinfo=datetime.timezone.utc)
CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"


#: Sandbox time well before the wall clock: the SDK caps bookmarks at the wall-clock time a
#: stream's sync begins, so tests that advance the sandbox by days start from here.
PAST = NOW - datetime.timedelta(days=60)

#: stream -> (sandbox record kind, API path)
COLLECTIONS = {
    "cycles": ("cycle", "/v2/cycle"),
    "recovery": ("recovery", "/v2/recovery"),
    "sleep": ("sleep", "/v2/activity/sleep"),
    "workout": ("workout", "/v2/activity/workout"),
}
STREAM_OF_KIND = {kind: stream for stream, (kind, _) in COLLECTIONS.items()}


def key_of(record: dict[str, t.Any]) -> t.Any:
    """A record's primary key: recoveries have none but their cycle."""
    return record["id"] if "id" in record else record["cycle_id"]


def as_sent(records: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    """Records without their null fields: the tap emits every field of the schema (`null` for
    what WHOOP omits), the sandbox omits them as WHOOP does."""
    return [{k: v for k, v in record.items() if v is not None} for record in records]


def fail_page(sandbox: Sandbox, kind: str, page: int, fault: str, times: int) -> None:
    """Serve `fault` `times` times to the request for page `page` of a collection."""
    path = COLLECTIONS[STREAM_OF_KIND[kind]][1]
    if page == 1:
        sandbox.inject_fault(path, fault, times)
        return
    served = 0
    original = sandbox.page

    def spy(key: str, record_kind: str, **window: t.Any) -> t.Any:
        nonlocal served
        if record_kind == kind:
            served += 1
            if served == page - 1:
                sandbox.inject_fault(path, fault, times)
        return original(key, record_kind, **window)  # type: ignore[arg-type]

    sandbox.page = spy  # type: ignore[method-assign]


#: Seconds an attempt may take in tests (`request_timeout`), so fault tests stay fast.
TEST_REQUEST_TIMEOUT = 2


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries, and the second look at a record gone, wait milliseconds: fault tests stay fast.

    And no stop asked of one in-process run (`tap_whoop.stop`) outlives its test.
    """
    STOP.reset()
    monkeypatch.setattr(WhoopStream, "backoff_base_seconds", 0.01)
    monkeypatch.setattr(CollectionStream, "second_look_seconds", 0.01)


@pytest.fixture
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The tap's clock pinned at the sandbox's `NOW`, in this process and in CLI runs.

    For tests that compare the tap's sense of "now" with the sandbox's records (`plan`'s
    estimates): they hold on any date. Returns the environment to give a CLI run.
    """
    pinned = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    monkeypatch.setenv(NOW_ENV, pinned)
    return {NOW_ENV: pinned}


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes with any options; each is stopped after the test."""
    servers: list[SandboxServer] = []

    def start(**options: t.Any) -> Sandbox:
        options.setdefault("members", ("alice",))
        options.setdefault("history_days", 60)
        options.setdefault("now", NOW)
        options.setdefault("per_minute", None)
        options.setdefault("per_day", None)
        sandbox = Sandbox(**options)
        server = SandboxServer(sandbox).start()
        servers.append(server)
        sandbox.server = server  # type: ignore[attr-defined]
        return sandbox

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sandbox(start_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """One member, alice, with 60 days of history and no rate limit."""
    return start_sandbox()


def tap_config(sandbox: Sandbox, tmp_path: Path, **overrides: t.Any) -> dict[str, t.Any]:
    """A config that syncs the sandbox's first member, with its own token store."""
    server: SandboxServer = sandbox.server  # type: ignore[attr-defined]
    first = sandbox.members[0].key
    config = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": sandbox.seed_refresh_token(first),
        "api_url": server.api_url,
        "oauth_url": server.oauth_url,
        "token_store_path": str(tmp_path / "store" / "tokens.json"),
        "max_requests_per_minute": 100_000,
        "request_timeout": TEST_REQUEST_TIMEOUT,
    }
    config.update(overrides)
    return config


def members_config(
    sandbox: Sandbox, tmp_path: Path, keys: t.Iterable[str] | None = None, **overrides: t.Any
) -> dict[str, t.Any]:
    """A config that syncs the members `keys` (every member by default) through `users`."""
    config = tap_config(sandbox, tmp_path, **overrides)
    del config["refresh_token"]
    chosen = [m.key for m in sandbox.members] if keys is None else list(keys)
    config["users"] = [
        {"key": key, "refresh_token": sandbox.seed_refresh_token(key)} for key in chosen
    ]
    return config


@pytest.fixture
def config(sandbox: Sandbox, tmp_path: Path) -> dict[str, t.Any]:
    """The tap's config for the `sandbox` fixture."""
    return tap_config(sandbox, tmp_path)


@dataclass
class SyncResult:
    """What one in-process run of the tap wrote, and how it ended."""

    messages: list[dict[str, t.Any]]
    error: BaseException | None = None
    tap: TapWhoop | None = field(default=None, repr=False)

    def records(self, stream: str) -> list[dict[str, t.Any]]:
        return [
            m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream
        ]

    @property
    def state(self) -> dict[str, t.Any] | None:
        states = [m["value"] for m in self.messages if m["type"] == "STATE"]
        return states[-1] if states else None

    def bookmark(self, stream: str, user_id: int) -> str | None:
        for partition in (
            (self.state or {}).get("bookmarks", {}).get(stream, {}).get("partitions", [])
        ):
            if partition["context"] == {"user_id": user_id}:
                return t.cast("str | None", partition.get("replication_key_value"))
        return None


def catalog_selecting(config: dict[str, t.Any], streams: set[str]) -> dict[str, t.Any]:
    """A discovered catalog with exactly `streams` selected."""
    catalog = TapWhoop(config=config, validate_config=False).catalog_dict
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = entry["tap_stream_id"] in streams
    return catalog


def run_tap(
    config: dict[str, t.Any],
    state: dict[str, t.Any] | None = None,
    select: set[str] | None = None,
) -> SyncResult:
    """Run the tap in-process; an exception ends the run and is returned, not raised."""
    catalog = catalog_selecting(config, select) if select is not None else None
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # the tap writes bytes to .buffer
    tap = None
    error: BaseException | None = None
    with contextlib.redirect_stdout(out):
        try:
            tap = TapWhoop(config=config, state=state, catalog=catalog)
            tap.sync_members()
        except Exception as exc:
            error = exc
    out.flush()
    lines = out.buffer.getvalue().decode().splitlines()  # type: ignore[attr-defined]
    messages = [json.loads(line) for line in lines if line.strip()]
    return SyncResult(messages=messages, error=error, tap=tap)
