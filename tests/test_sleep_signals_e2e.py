"""End to end: `sleep_signals` loads into PostgreSQL and DuckDB under Meltano.

A member with 90 days of history is loaded with `sleep_signal_types: ["hr", "skin_temp"]`: one
row per final sleep, its points as the sandbox sends them, one request per sleep. Then one sleep
is re-scored and one deleted in the sandbox, and the next run replaces the first's row and marks
the second's deleted: no stale points remain among the live rows.

The sandbox is served in-process (the Meltano runs reach it over loopback); the prerequisites
(Meltano, its plugins, PostgreSQL) are those of tests/test_pipelines.py, whose fixtures and
helpers are reused.
"""

from __future__ import annotations

import datetime
import json
import typing as t

import duckdb
import pytest

from tests import test_pipelines
from tests.test_pipelines import (
    PLUGINS,
    ROOT,
    MeltanoProject,
    Postgres,
    clean_env,
    instant,
    reader_for,
)
from whoop_sandbox import Sandbox, SandboxServer
from whoop_sandbox.signals import signal_stream

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.e2e

#: A morning (before the wall clock, as bookmarks need) whose last sleep is still pending.
NOW = datetime.datetime(2026, 11, 12, 15, tzinfo=datetime.timezone.utc)
HISTORY_DAYS = 90
MEMBER = "alice"
TYPES = ["hr", "skin_temp"]

meltano_installed = test_pipelines.meltano_installed
postgres = test_pipelines.postgres
pg_schema = test_pipelines.pg_schema


@pytest.fixture
def whoop() -> Iterator[Sandbox]:
    """One member with 90 days of history, no rate limit."""
    sandbox = Sandbox(
        members=(MEMBER,), history_days=HISTORY_DAYS, now=NOW, per_minute=None, per_day=None
    )
    with test_pipelines.served(sandbox):
        yield sandbox


@pytest.fixture
def project(
    tmp_path: Path, meltano_installed: None, whoop: Sandbox, postgres: Postgres, pg_schema: str
) -> MeltanoProject:
    """As test_pipelines' `project`, pointed at the in-process sandbox, with the signals on."""
    server: SandboxServer = whoop.server  # type: ignore[attr-defined]
    root = tmp_path / "project"
    root.mkdir()
    definition = (ROOT / "meltano.yml").read_text(encoding="utf-8")
    selection = "    - workout.*\n"
    assert definition.count(selection) == 1
    definition = definition.replace(selection, selection + "    - sleep_signals.*\n")
    (root / "meltano.yml").write_text(definition, encoding="utf-8")
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
        "TAP_WHOOP_SLEEP_SIGNAL_TYPES": json.dumps(TYPES),
        **postgres.target_env(pg_schema),
    }
    return MeltanoProject(root, env)


def final_sleeps(whoop: Sandbox) -> dict[str, dict[str, t.Any]]:
    return {
        s["id"]: s
        for s in whoop.records(MEMBER, "sleep")
        if s["score_state"] != "PENDING_SCORE" and s.get("end")
    }


def points(row: dict[str, t.Any]) -> t.Any:
    """The row's points as JSON values (DuckDB loads JSON as text)."""
    value = row["stream"]
    return json.loads(value) if isinstance(value, str) else value


def stream_requests(whoop: Sandbox) -> int:
    return sum(n for path, n in whoop.stats()["by_path"].items() if path.endswith("/stream"))


#: The README's queries of the points (PostgreSQL loads `stream` as jsonb[], DuckDB as JSON).
POINTS_SQL = {
    "target-postgres": (
        "SELECT count(*) FROM {schema}.sleep_signals, unnest(stream) AS p "
        "WHERE _sdc_deleted_at IS NULL AND (p->>'hr') IS NOT NULL"
    ),
    "target-duckdb": (
        "SELECT sum(json_array_length(stream)) FROM tap_whoop.sleep_signals "
        "WHERE _sdc_deleted_at IS NULL"
    ),
}


def points_by_sql(loader: str, project: MeltanoProject, postgres: Postgres, schema: str) -> int:
    """The live points, counted in the warehouse as the README shows."""
    if loader == "target-postgres":
        query = POINTS_SQL[loader].format(schema=f'"{schema}"')
        with postgres.connect() as connection:
            row = connection.execute(query).fetchone()
    else:
        with duckdb.connect(str(project.duckdb_file), read_only=True) as connection:
            row = connection.execute(POINTS_SQL[loader]).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("loader", ["target-postgres", "target-duckdb"])
def test_signals_load_one_row_per_sleep_and_follow_re_scores_and_deletions(
    loader: str, project: MeltanoProject, whoop: Sandbox, postgres: Postgres, pg_schema: str
) -> None:
    read, describe = reader_for(loader, project, postgres, pg_schema)

    project.run(loader)

    finals = final_sleeps(whoop)
    assert len(finals) < len(whoop.records(MEMBER, "sleep")), "a pending sleep is left out"
    assert stream_requests(whoop) == len(finals)
    rows = {str(row["sleep_id"]): row for row in read("sleep_signals")}
    assert set(rows) == set(finals)
    user_id = whoop.member(MEMBER).user_id
    loaded_points = 0
    for sleep_id, sleep in finals.items():
        row = rows[sleep_id]
        assert row["user_id"] == user_id
        assert row["_sdc_deleted_at"] is None
        assert instant(row["updated_at"]) == instant(sleep["updated_at"])
        assert points(row) == signal_stream(sleep, TYPES)["stream"], sleep_id
        loaded_points += len(points(row))
    assert loaded_points > 800 * len(finals) * 0.5
    _, keys = describe("sleep_signals")
    assert keys == ["sleep_id"]
    assert points_by_sql(loader, project, postgres, pg_schema) == loaded_points
    print(f"{loader}: {len(rows)} rows, {loaded_points} points, {stream_requests(whoop)} requests")

    recent = list(finals.values())
    rescored, deleted = recent[0], recent[1]
    whoop.edit_record(MEMBER, "sleep", rescored["id"], {"nap": rescored["nap"]})
    whoop.delete_record(MEMBER, "sleep", deleted["id"])
    whoop.reset_stats()

    project.run(loader)

    assert stream_requests(whoop) == 1, "only the re-scored sleep is asked for again"
    rows = {str(row["sleep_id"]): row for row in read("sleep_signals")}
    assert len(rows) == len(finals), "replaced and marked in place, none added"
    now = whoop.find(MEMBER, "sleep", rescored["id"])
    assert now is not None
    assert instant(rows[rescored["id"]]["updated_at"]) == instant(now["updated_at"])
    assert points(rows[rescored["id"]]) == signal_stream(now, TYPES)["stream"]
    assert rows[deleted["id"]]["_sdc_deleted_at"] is not None
    live = {sleep_id for sleep_id, row in rows.items() if row["_sdc_deleted_at"] is None}
    assert live == set(finals) - {deleted["id"]}
