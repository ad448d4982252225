"""End to end: docs/operations.md's recipe for several workers, as separate `meltano run`s.

"Several workers, containers, no local disk": n copies of one configuration, each with its own
`member_shard` (TAP_WHOOP_MEMBER_SHARD) and its own Meltano state ID (`--state-id-suffix`), all
started at once against one PostgreSQL `store_url` (tokens, the app's rate-limit window), one
Meltano system database in PostgreSQL (`MELTANO_DATABASE_URI`, where Meltano keeps the state)
and one target schema. Here three workers, each a throw-away copy of this Meltano project in a
folder of its own (its HOME and working directory; plugin venvs linked, as in
tests/test_pipelines.py): nothing on disk is shared, as between containers without a volume.
The second round runs in new folders, as new pods would: whatever it resumes from came from
PostgreSQL.

The sandbox is served in-process (the Meltano runs reach it over loopback) with six members,
WHOOP's real rate limit and access tokens that live 5 seconds, so the second round must refresh
with the rotated tokens the first round stored in PostgreSQL. Both rounds run once per module
(`rounds`); each test checks one promise of the recipe on what they left. The prerequisites
(Meltano, its plugins, PostgreSQL) are those of tests/test_pipelines.py, whose fixtures and
helpers are reused.
"""

from __future__ import annotations

import datetime
import json
import secrets
import shutil
import subprocess
import time
import typing as t
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tap_whoop.settings import shard_of
from tests import test_pipelines, test_store_support
from tests.test_pipelines import (
    COLLECTIONS,
    PLUGINS,
    PRIMARY_KEYS,
    ROOT,
    MeltanoProject,
    Postgres,
    clean_env,
    log_tail,
    pg_rows,
)
from tests.test_store_support import in_schema, query
from whoop_sandbox import Sandbox, SandboxServer

if t.TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.e2e

# test_pipelines' and test_store_support's fixtures, registered here under their names.
meltano_installed = test_pipelines.meltano_installed
postgres = test_pipelines.postgres
postgres_server = test_store_support.postgres_server

#: Six members that the stable hash spreads over three shards as 1, 2 and 3.
MEMBERS = ("ana", "ben", "cai", "dee", "eli", "fay")
SHARDS = 3
#: A sandbox clock before the wall clock (bookmarks are capped at the wall clock); 60 days of
#: history take three pages per collection, so a full sync costs about twice an incremental one.
NOW = datetime.datetime(2026, 11, 12, 15, tzinfo=datetime.timezone.utc)
HISTORY_DAYS = 60
ACCESS_TOKEN_TTL = 5
#: Requests of a member's incremental run: one page per selected stream (six), plus slack.
INCREMENTAL_REQUESTS_PER_MEMBER = 7
STATE_ID = "dev:tap-whoop-to-target-postgres:shard-{}"
#: What would be kept on disk without `store_url` and `MELTANO_DATABASE_URI`: the tap's token
#: store, rate window, inbox and locks, and Meltano's system database (its state).
STORE_FILES = ("tokens.json*", "rate-limit-*.sqlite", "inbox.sqlite", "meltano.db")


def shard_members(index: int) -> set[str]:
    return {key for key in MEMBERS if shard_of(key, SHARDS) == index}


@dataclass
class Round:
    """What one round of concurrent `meltano run`s left: exits, requests, rows, states."""

    runs: list[subprocess.CompletedProcess[str]]
    stats: dict[str, t.Any]
    """The sandbox's counters for this round alone (requests, refreshes, 429s, invalid_grant)."""
    rows: dict[str, list[dict[str, t.Any]]]
    expected: dict[str, dict[str, int]]
    """Per table, every record the sandbox holds at the round's end: key -> user_id."""
    states: dict[int, subprocess.CompletedProcess[str]]
    """`meltano state get` of each shard's suffixed state ID, after the round."""
    seconds: float
    """From starting the runs to the last one's exit."""

    def assert_ran(self) -> None:
        for index, run in enumerate(self.runs):
            assert run.returncode == 0, f"shard {index}/{SHARDS} failed:\n{log_tail(run)}"


@dataclass
class Workers:
    sandbox: Sandbox
    projects: list[MeltanoProject]
    """Both rounds' worker folders (pods): the first round's, then the second's."""
    store_url: str
    meltano_database: str
    first: Round
    second: Round


def worker_project(folder: Path, env: dict[str, str]) -> MeltanoProject:
    """This Meltano project as a container would hold it: plugins installed, nothing else."""
    root = folder / "project"
    root.mkdir(parents=True)
    shutil.copy(ROOT / "meltano.yml", root / "meltano.yml")
    for plugin in PLUGINS:
        (root / ".meltano" / plugin).mkdir(parents=True)
        (root / ".meltano" / plugin / "venv").symlink_to(ROOT / ".meltano" / plugin / "venv")
    home = {"HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"), "TMPDIR": str(folder)}
    return MeltanoProject(root, env | home | {"MELTANO_PROJECT_ROOT": str(root)})


def run_round(
    sandbox: Sandbox,
    projects: list[MeltanoProject],
    postgres: Postgres,
    schema: str,
    *,
    first_alone: bool = False,
) -> Round:
    """The loop of docs/operations.md: every shard's `meltano run` at once; wait for all.

    `first_alone`: the very first round starts shard 0 alone, as docs/operations.md says: it
    creates the loader's schema and tables, which target-postgres creates without a lock (two
    shards doing so at once can fail; CI met it once, a target dead mid-run).
    """

    def run(index: int) -> subprocess.CompletedProcess[str]:
        return projects[index].meltano(
            "run",
            f"--state-id-suffix=shard-{index}",
            "tap-whoop",
            "target-postgres",
            env={"TAP_WHOOP_MEMBER_SHARD": f"{index}/{SHARDS}"},
            environment="dev",
        )

    def state(index: int) -> subprocess.CompletedProcess[str]:
        return projects[index].meltano("state", "get", STATE_ID.format(index), environment="dev")

    before, started = sandbox.stats(), time.monotonic()
    with ThreadPoolExecutor(len(projects)) as pool:
        alone = [run(0)] if first_alone else []
        runs = alone + list(pool.map(run, range(len(alone), len(projects))))
        after, seconds = sandbox.stats(), time.monotonic() - started
        states = list(pool.map(state, range(len(projects))))
    stats = {
        name: after[name] - before[name]
        for name in ("requests", "refreshes", "rate_limited", "invalid_grant")
    }
    rows = {}
    if all(run.returncode == 0 for run in runs):
        rows = {table: pg_rows(postgres, schema, table) for table in PRIMARY_KEYS}
    return Round(runs, stats, rows, expected_rows(sandbox), dict(enumerate(states)), seconds)


def expected_rows(sandbox: Sandbox) -> dict[str, dict[str, int]]:
    """Per table, key (as text) -> user_id of every record the sandbox holds now."""
    expected: dict[str, dict[str, int]] = {table: {} for table in PRIMARY_KEYS}
    for member in sandbox.members:
        expected["profile"][str(member.user_id)] = member.user_id
        expected["body_measurement"][str(member.user_id)] = member.user_id
        for table, (kind, key) in COLLECTIONS.items():
            for record in sandbox.records(member.key, kind):  # type: ignore[arg-type]
                expected[table][str(record[key])] = member.user_id
    return expected


@pytest.fixture(scope="module")
def store_capable_tap(meltano_installed: None) -> None:
    """The tap's plugin venv has psycopg (`store_url`); a venv installed before it does not."""
    python = ROOT / ".meltano" / "extractors" / "tap-whoop" / "venv" / "bin" / "python"
    check = subprocess.run(
        [str(python), "-c", "import psycopg"],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        pytest.fail(
            f"{python} cannot import psycopg, which store_url needs: the plugin was installed "
            f"before tap-whoop depended on it; run `bash scripts/bootstrap.sh` (meltano install)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def rounds(
    tmp_path_factory: pytest.TempPathFactory,
    store_capable_tap: None,
    postgres: Postgres,
    postgres_server: str,
) -> Iterator[Workers]:
    """Two rounds of three concurrent shard runs, a sandbox day apart."""
    sandbox = Sandbox(
        members=MEMBERS,
        history_days=HISTORY_DAYS,
        now=NOW,
        per_minute=100,
        per_day=10_000,
        access_token_ttl=ACCESS_TOKEN_TTL,
    )
    server = SandboxServer(sandbox).start()
    suffix = secrets.token_hex(3)
    target_schema, store_schema = f"e2e_workers_{suffix}", f"store_workers_{suffix}"
    meltano_schema = f"meltano_workers_{suffix}"
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        for schema in (store_schema, meltano_schema):
            connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    store_url = in_schema(postgres_server, store_schema)
    meltano_database = in_schema(postgres_server, meltano_schema)
    # One configuration for every worker, all of it in the environment (as a container's
    # secrets would give it); only TAP_WHOOP_MEMBER_SHARD differs.
    env = clean_env() | {
        "MELTANO_AUTO_INSTALL": "false",
        "MELTANO_CLI_DISABLE_VERSION_CHECK": "1",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "TAP_WHOOP_CLIENT_ID": sandbox.client_id,
        "TAP_WHOOP_CLIENT_SECRET": sandbox.client_secret,
        "TAP_WHOOP_API_URL": server.api_url,
        "TAP_WHOOP_OAUTH_URL": server.oauth_url,
        "TAP_WHOOP_USERS": json.dumps(
            [{"key": key, "refresh_token": sandbox.seed_refresh_token(key)} for key in MEMBERS]
        ),
        "TAP_WHOOP_STORE_URL": store_url,
        "MELTANO_DATABASE_URI": meltano_database.replace("postgresql://", "postgresql+psycopg://"),
        **postgres.target_env(target_schema),
    }
    folders = tmp_path_factory.mktemp("workers")

    def pods(round_: int) -> list[MeltanoProject]:
        return [
            worker_project(folders / f"round{round_}-pod{index}", env) for index in range(SHARDS)
        ]

    first_pods, second_pods = pods(1), pods(2)
    try:
        # docs/operations.md's one-off step before the first schedule: concurrent first runs would
        # race to create Meltano's tables.
        upgrade = first_pods[0].meltano("upgrade", "database", environment="dev")
        assert upgrade.returncode == 0, log_tail(upgrade)
        first = run_round(sandbox, first_pods, postgres, target_schema, first_alone=True)
        sandbox.advance(days=1)
        second = run_round(sandbox, second_pods, postgres, target_schema)
        yield Workers(sandbox, first_pods + second_pods, store_url, meltano_database, first, second)
    finally:
        server.stop()
        with psycopg.connect(postgres_server, autocommit=True) as connection:
            for schema in (target_schema, store_schema, meltano_schema):
                connection.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


def assert_loaded_once(round_: Round) -> None:
    """Every record of every member in its table exactly once, under its member's user_id."""
    for table, key in PRIMARY_KEYS.items():
        rows = round_.rows[table]
        counts = Counter(str(row[key]) for row in rows)
        twice = sorted(k for k, n in counts.items() if n > 1)
        assert not twice, f"{table}: rows loaded more than once: {twice[:5]}"
        expected = round_.expected[table]
        assert set(counts) == set(expected), (
            f"{table}: missing {sorted(set(expected) - set(counts))[:5]}, "
            f"unexpected {sorted(set(counts) - set(expected))[:5]}"
        )
        wrong = [row[key] for row in rows if row["user_id"] != expected[str(row[key])]]
        assert not wrong, f"{table}: rows under another member's user_id: {wrong[:5]}"


def state_members(state: dict[str, t.Any], sandbox: Sandbox) -> dict[str, set[str]]:
    """Per stream, the members whose partitions a Meltano state holds."""
    key_of = {member.user_id: member.key for member in sandbox.members}
    found: dict[str, set[str]] = {}
    for stream, bookmark in state["singer_state"]["bookmarks"].items():
        found[stream] = {
            partition["context"].get("member") or key_of[partition["context"]["user_id"]]
            for partition in bookmark.get("partitions", [])
        }
    return found


# The tests


def test_the_members_spread_over_every_shard() -> None:
    """The scenario's premise: each worker has members of its own (1, 2 and 3 of the six)."""
    assert sorted(len(shard_members(index)) for index in range(SHARDS)) == [1, 2, 3]


def test_concurrent_shard_runs_load_every_members_records_exactly_once_per_key(
    rounds: Workers,
) -> None:
    rounds.first.assert_ran()
    assert_loaded_once(rounds.first)


def test_each_shards_state_id_holds_only_that_shards_members(rounds: Workers) -> None:
    for round_ in (rounds.first, rounds.second):
        round_.assert_ran()
        for index in range(SHARDS):
            got = round_.states[index]
            assert got.returncode == 0, f"{STATE_ID.format(index)}:\n{log_tail(got)}"
            held = state_members(json.loads(got.stdout), rounds.sandbox)
            assert {"profile", *COLLECTIONS} <= set(held), sorted(held)
            for stream, members in held.items():
                assert members == shard_members(index), (index, stream, members)


def test_concurrent_shards_never_spend_a_rotated_refresh_token_twice_nor_get_a_429(
    rounds: Workers,
) -> None:
    for round_ in (rounds.first, rounds.second):
        round_.assert_ran()
        assert round_.stats["invalid_grant"] == 0, round_.stats
        assert round_.stats["rate_limited"] == 0, round_.stats
    # 5-second tokens have expired between the rounds, and the seeds are spent: the second
    # round refreshed every member with the rotated token the first stored in PostgreSQL.
    assert rounds.second.stats["refreshes"] >= len(MEMBERS), rounds.second.stats


def test_a_second_round_a_day_later_is_incremental_and_loads_the_new_day_exactly_once(
    rounds: Workers,
) -> None:
    first, second = rounds.first, rounds.second
    second.assert_ran()
    assert second.stats["requests"] <= INCREMENTAL_REQUESTS_PER_MEMBER * len(MEMBERS), second.stats
    assert second.stats["requests"] * 2 <= first.stats["requests"], (first.stats, second.stats)
    new = {table: set(second.expected[table]) - set(first.expected[table]) for table in COLLECTIONS}
    assert new["cycles"], "the scenario needs a new day of records"
    assert_loaded_once(second)


def test_workers_keep_no_token_store_rate_window_or_meltano_state_on_their_own_disk(
    rounds: Workers,
) -> None:
    rounds.first.assert_ran()
    rounds.second.assert_ran()
    left = [
        str(path)
        for project in rounds.projects
        for pattern in STORE_FILES
        for path in project.root.parent.rglob(pattern)
        if "venv" not in path.parts
    ]
    assert not left, left
    stored = query(rounds.store_url, "SELECT member FROM tap_whoop_tokens ORDER BY member")
    assert [member for (member,) in stored] == sorted(MEMBERS)
    state_ids = query(rounds.meltano_database, "SELECT state_id FROM state ORDER BY state_id")
    assert [state_id for (state_id,) in state_ids] == [
        STATE_ID.format(index) for index in range(SHARDS)
    ]
