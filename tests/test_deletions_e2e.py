"""End to end: deletions made in WHOOP reach PostgreSQL and DuckDB through Meltano.

A member with 20 days of history is loaded by a first `meltano run`. Then records are deleted in
the sandbox, and each of the tap's three ways of finding deletions is put to work in turn:

(a) webhooks: `meltano invoke tap-whoop webhooks --port 0` (the tap's receiver, with the tap's
    config) receives the sandbox's signed events; the next run passes them on without reading the
    member's collections (the member rests between reconciliations);
(b) reconciliation: webhooks lost, `reconcile_interval_hours: 0`; the next incremental run checks
    by id what its window no longer returns;
(c) a full refresh: a deletion older than the lookback window, which no incremental run sees, is
    found by comparing with the ledger;
(d) with target-duckdb's `hard_delete`, the documented alternative, a deleted row is removed
    (target-postgres applies its `hard_delete` to ACTIVATE_VERSION only; the README gives the
    SQL instead).

After each step, the rows marked deleted (`_sdc_deleted_at`) are exactly the records the sandbox
deleted, and the live rows exactly the records it still has.

The sandbox is served in-process (the Meltano runs reach it over loopback), so its records,
deletions and request counts are read directly. The prerequisites (Meltano, its plugins,
PostgreSQL) are those of tests/test_pipelines.py, whose fixtures and helpers are reused.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import typing as t
from pathlib import Path

import pytest

from tap_whoop.settings import DEFAULT_LOOKBACK_DAYS
from tests import test_pipelines
from tests.test_pipelines import (
    COLLECTIONS,
    MELTANO,
    PLUGINS,
    ROOT,
    MeltanoProject,
    Postgres,
    Reader,
    clean_env,
    instant,
    log_tail,
    reader_for,
)
from whoop_sandbox import Sandbox, SandboxServer

if t.TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.e2e

#: The sandbox's clock: a morning (before the wall clock, as bookmarks need) whose last sleep and
#: recovery are still pending; 20 days of history hold one nap.
NOW = datetime.datetime(2026, 11, 12, 15, tzinfo=datetime.timezone.utc)
HISTORY_DAYS = 20
MEMBER = "alice"
#: Retries of a failed delivery, fast (the receiver may still be starting its first answer).
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
DELIVERY_TIMEOUT = 30
RECEIVER_START_TIMEOUT = 180
#: API paths of the collections whose pages a resting member's run must not read.
COLLECTION_READS = ("/v2/activity/sleep", "/v2/activity/workout", "/v2/recovery")
#: The documented way to run the receiver under Meltano (the tap's config, its token store).
RECEIVER = ("invoke", "tap-whoop", "webhooks", "--port", "0")
#: The tap's line for deletions found by reconciliation: (stream, count).
NO_LONGER = re.compile(r"(\w+): member '\w+': (\d+) record\(s\) that WHOOP no longer has")
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+/webhooks/whoop)")

# test_pipelines' fixtures, registered here under their names.
meltano_installed = test_pipelines.meltano_installed
postgres = test_pipelines.postgres
pg_schema = test_pipelines.pg_schema

Deleted = dict[str, set[str]]
"""Per table, the keys (as text) of the records the sandbox deleted."""


# The sandbox, in-process, and a Meltano project pointed at it


@pytest.fixture
def whoop() -> Iterator[Sandbox]:
    """One member with 20 days of history, no rate limit, deliveries retried fast."""
    sandbox = Sandbox(
        members=(MEMBER,), history_days=HISTORY_DAYS, now=NOW, per_minute=None, per_day=None
    )
    sandbox.configure_webhooks(retry_delays=RETRY_DELAYS)
    with test_pipelines.served(sandbox):
        yield sandbox


@pytest.fixture
def project(
    tmp_path: Path,
    meltano_installed: None,
    whoop: Sandbox,
    postgres: Postgres,
    pg_schema: str,
) -> MeltanoProject:
    """As test_pipelines' `project`, pointed at the in-process sandbox."""
    server: SandboxServer = whoop.server  # type: ignore[attr-defined]
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "meltano.yml", root / "meltano.yml")
    (root / "output").mkdir()
    for plugin in PLUGINS:
        (root / ".meltano" / plugin).mkdir(parents=True)
        (root / ".meltano" / plugin / "venv").symlink_to(ROOT / ".meltano" / plugin / "venv")
    env = clean_env() | {
        "MELTANO_PROJECT_ROOT": str(root),
        "MELTANO_AUTO_INSTALL": "false",
        "MELTANO_CLI_DISABLE_VERSION_CHECK": "1",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "TAP_WHOOP_API_URL": server.api_url,
        "TAP_WHOOP_OAUTH_URL": server.oauth_url,
        **postgres.target_env(pg_schema),
    }
    return MeltanoProject(root, env)


class Receiver:
    """`meltano invoke tap-whoop webhooks --port 0` in the project, until `stop()`."""

    def __init__(self, project: MeltanoProject) -> None:
        self.process = subprocess.Popen(
            [str(MELTANO), "--environment=sandbox", *RECEIVER],
            cwd=project.root,
            env=project.base_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: Meltano and the tap under it
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + RECEIVER_START_TIMEOUT
        while not (found := [m for line in list(self.lines) if (m := LISTENING.search(line))]):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("the webhook receiver did not start:\n" + self.output())
            time.sleep(0.1)
        self.url = found[0].group(1)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self, lines: int = 40) -> str:
        return "\n".join(self.lines[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(10)


# What the sandbox has and what the loaders hold


def key_text(value: t.Any) -> str:
    return str(value)  # PostgreSQL returns uuid.UUID


def day(record: dict[str, t.Any]) -> datetime.datetime:
    return instant(record["start"])


def pick(records: list[dict[str, t.Any]], what: str, test: t.Callable[..., bool]) -> dict:
    """The newest record that passes `test`; the scenario needs one."""
    found = [record for record in records if test(record)]
    assert found, f"the scenario needs {what} in the sandbox's {HISTORY_DAYS} days"
    return found[0]


def delete(sandbox: Sandbox, kind: str, record: dict[str, t.Any], *into: Deleted) -> None:
    """Delete a sleep or workout in the sandbox (a main sleep takes its recovery along)."""
    changes = sandbox.delete_record(MEMBER, kind, record["id"])  # type: ignore[arg-type]
    gone = {kind: {key_text(record["id"])}}
    if kind == "sleep" and not record["nap"]:
        gone["recovery"] = {key_text(record["cycle_id"])}
    assert {change["type"] for change in changes} == {f"{k}.deleted" for k in gone}, changes
    for deleted in into:
        for table, keys in gone.items():
            deleted.setdefault(table, set()).update(keys)


def window_ids(state: dict[str, t.Any], table: str) -> set[str]:
    """The ids the tap's state keeps for the next run to check (step b's premise)."""
    partitions = state["singer_state"]["bookmarks"][table]["partitions"]
    return {key_text(pair[0]) for partition in partitions for pair in partition["window_ids"]}


def assert_marked_as_sandbox(
    read: Reader,
    sandbox: Sandbox,
    deleted: Deleted,
    *,
    unseen: Deleted | None = None,
    fresh: Deleted | None = None,
    since: float = 0.0,
) -> None:
    """Rows marked deleted: exactly `deleted`; live rows: exactly the records the sandbox has.

    `unseen`: deleted in the sandbox but, as documented, beyond what this run checks: still live.
    `fresh`: deletions this step found, marked no earlier than `since` (wall-clock seconds).
    """
    user_id = sandbox.member(MEMBER).user_id
    for table, (kind, key) in COLLECTIONS.items():
        rows = read(table)
        keys = [key_text(row[key]) for row in rows]
        duplicates = {k for k in keys if keys.count(k) > 1}
        assert not duplicates, f"{table}: several rows for {sorted(duplicates)[:5]}"
        live = {key_text(row[key]) for row in rows if row["_sdc_deleted_at"] is None}
        marked = {key_text(row[key]): row for row in rows if row["_sdc_deleted_at"] is not None}
        has = {key_text(record[key]) for record in sandbox.records(MEMBER, kind)}  # type: ignore[arg-type]
        still = (unseen or {}).get(table, set())
        gone = deleted[table] - still
        assert set(marked) == gone, (
            f"{table}: marked deleted though WHOOP still has {sorted(set(marked) - gone)}; "
            f"deleted in WHOOP but not marked {sorted(gone - set(marked))}"
        )
        assert live == has | still, (
            f"{table}: live rows WHOOP does not have {sorted(live - has - still)[:5]}; "
            f"records WHOOP has without a live row {sorted((has | still) - live)[:5]}"
        )
        assert len(rows) == len(has) + len(deleted[table]), (table, len(rows), len(has))
        for record_key, row in marked.items():
            assert row["user_id"] == user_id, f"{table} {record_key}: {row}"
            if record_key in (fresh or {}).get(table, set()):
                mark = instant(row["_sdc_deleted_at"])
                assert mark.timestamp() >= since - 1, f"{table} {record_key}: an old mark {mark}"


# The test


@pytest.mark.parametrize("loader", ["target-postgres", "target-duckdb"])
def test_webhooks_reconciliation_and_full_refresh_mark_deleted_rows_and_hard_delete_removes_them(
    loader: str,
    whoop: Sandbox,
    project: MeltanoProject,
    postgres: Postgres,
    pg_schema: str,
) -> None:
    read, _ = reader_for(loader, project, postgres, pg_schema)
    deleted: Deleted = {table: set() for table in COLLECTIONS}
    lookback = datetime.timedelta(days=DEFAULT_LOOKBACK_DAYS)

    # 0. The first run loads everything; nothing is marked.
    project.run(loader)
    assert_marked_as_sandbox(read, whoop, deleted)
    state = project.state(loader)
    sleeps = whoop.records(MEMBER, "sleep")
    workouts = whoop.records(MEMBER, "workout")

    receiver = Receiver(project)
    try:
        # (a) Webhooks: a workout, a nap and a main sleep (with its recovery) deleted, and a
        # workout edited; the receiver stores the events, the next run passes them on while the
        # member rests (its collections were read within reconcile_interval_hours).
        whoop.configure_webhooks(url=receiver.url)
        older = NOW - 2 * lookback  # outside every window: only the events can tell
        nap = pick(sleeps, "a nap", lambda s: s["nap"])
        sleep = pick(
            sleeps,
            "a scored main sleep a week old",
            lambda s: (
                not s["nap"]
                and s["score_state"] == "SCORED"
                and s["cycle_id"] != nap["cycle_id"]
                and day(s) < older
            ),
        )
        workout = pick(workouts, "a workout a week old", lambda w: day(w) < older)
        edited = pick(workouts, "an older workout", lambda w: day(w) < day(workout))
        step: Deleted = {}
        since = time.time()
        whoop.edit_record(MEMBER, "workout", edited["id"], {"sport_name": "rowing"})
        for kind, record in (("workout", workout), ("sleep", nap), ("sleep", sleep)):
            delete(whoop, kind, record, deleted, step)
        assert whoop.wait_for_webhooks(DELIVERY_TIMEOUT), whoop.stats()["webhooks"]
        log = whoop.webhook_log()
        assert len(log) == 5, log
        assert all(entry["delivered"] for entry in log), (log, receiver.output())

        whoop.reset_stats()
        output = log_tail(project.run(loader), 400)
        paths = whoop.stats()["by_path"]
        pages = {path: n for path, n in paths.items() if path in COLLECTION_READS}
        assert not pages, f"a resting member's collections were read: {paths}\n{output}"
        # Only the edited workout, by id: deletions need no request, and no new night's sleep
        # opened a cycle to read.
        assert set(paths) == {f"/v2/activity/workout/{edited['id']}"}, paths
        assert "1 of 1 member(s) rest" in output, output
        assert re.search(r"5 event\(s\) of 1 member\(s\) passed on: .*, 4 deleted", output), output
        assert_marked_as_sandbox(read, whoop, deleted, fresh=step, since=since)
        rows = [row for row in read("workout") if key_text(row["id"]) == edited["id"]]
        assert [row["sport_name"] for row in rows] == ["rowing"], rows

        # (b) Webhooks lost, and every run reads each member in full: the incremental run's
        # reconciliation finds a workout and a main sleep (and its recovery) of its window.
        # (c) Deleted alongside, a workout far older than the lookback: the incremental run
        # does not look that far back; a full refresh compares with the ledger.
        whoop.configure_webhooks(drop=1.0)
        # Set with `meltano config set`: TAP_WHOOP_RECONCILE_INTERVAL_HOURS=0 in the environment
        # makes Meltano 4.4.1 fail ("Object of type Decimal is not JSON serializable").
        setting = project.meltano("config", "set", "tap-whoop", "reconcile_interval_hours", "0")
        assert setting.returncode == 0, log_tail(setting)
        recent = NOW - datetime.timedelta(days=2)
        sleep = pick(
            whoop.records(MEMBER, "sleep"),
            "a scored main sleep of the last two days",
            lambda s: not s["nap"] and s["score_state"] == "SCORED" and day(s) >= recent,
        )
        workout = pick(
            whoop.records(MEMBER, "workout")[1:],
            "a workout of the last two days, not the newest",
            lambda w: day(w) >= recent,
        )
        old = pick(
            whoop.records(MEMBER, "workout"),
            "a workout over ten days old",
            lambda w: day(w) < NOW - datetime.timedelta(days=10),
        )
        assert workout["id"] in window_ids(state, "workout"), state
        assert sleep["id"] in window_ids(state, "sleep"), state
        assert str(sleep["cycle_id"]) in window_ids(state, "recovery"), state
        assert old["id"] not in window_ids(state, "workout"), state
        step = {}
        unseen: Deleted = {}
        since = time.time()
        delete(whoop, "workout", workout, deleted, step)
        delete(whoop, "sleep", sleep, deleted, step)
        delete(whoop, "workout", old, deleted, unseen)
        assert whoop.wait_for_webhooks(DELIVERY_TIMEOUT)
        assert [entry["dropped"] for entry in whoop.webhook_log()[5:]] == [True] * 4

        whoop.reset_stats()
        output = log_tail(project.run(loader), 400)
        paths = whoop.stats()["by_path"]
        assert all(path in paths for path in COLLECTION_READS), f"{paths}\n{output}"
        assert sorted(re.findall(NO_LONGER, output)) == [
            ("recovery", "1"),
            ("sleep", "1"),
            ("workout", "1"),
        ], output
        assert_marked_as_sandbox(read, whoop, deleted, unseen=unseen, fresh=step, since=since)

        output = log_tail(project.run(loader, "--full-refresh"), 400)
        # --full-refresh gives the tap no state, so nothing shows it that (b)'s deletions were
        # committed: they are marked again (the same rows), with the one only the ledger finds.
        assert sorted(re.findall(NO_LONGER, output)) == [
            ("recovery", "1"),
            ("sleep", "1"),
            ("workout", "2"),
        ], output
        assert_marked_as_sandbox(read, whoop, deleted, fresh=unseen, since=since)

        if loader != "target-duckdb":
            return  # target-postgres's hard_delete acts on ACTIVATE_VERSION only (README)
        # (d) The documented alternative: with hard_delete, a deleted row is removed, not marked.
        setting = project.meltano("config", "set", loader, "hard_delete", "true")
        assert setting.returncode == 0, log_tail(setting)
        removed = pick(
            whoop.records(MEMBER, "workout")[1:],
            "another workout of the last two days",
            lambda w: day(w) >= recent,
        )
        whoop.delete_record(MEMBER, "workout", removed["id"])
        output = log_tail(project.run(loader), 400)
        assert re.findall(NO_LONGER, output) == [("workout", "1")], output
        rows = read("workout")
        assert removed["id"] not in {key_text(row["id"]) for row in rows}, output
        live = {key_text(row["id"]) for row in rows if row["_sdc_deleted_at"] is None}
        assert live == {key_text(w["id"]) for w in whoop.records(MEMBER, "workout")}
    finally:
        receiver.stop()
