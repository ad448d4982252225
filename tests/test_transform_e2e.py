"""End to end: the dbt models (transform/) built by Meltano on DuckDB and on PostgreSQL.

`meltano run tap-whoop LOADER dbt-WAREHOUSE:build` loads a member's 20 days from the sandbox and
builds and tests the models; then every day of `whoop_daily` is compared with the day as computed
here from the sandbox's own records (the local-day rule, the cycle's recovery and main sleep, its
naps and the workouts that started in it). Without the optional `sleep_signals` table the build
passes and `whoop_sleep_heart_rate` is empty.

Then a workout and a nap are deleted in WHOOP and `sleep_signals` records of the stream's shape
(one per sleep, its points in `stream`) are loaded by the same loader for the nap and a main
sleep; a full refresh marks the deleted rows and the build runs again: the deleted records are
in no mart, and the main sleep's heart rate per minute and while asleep is the fixture's. Last,
on DuckDB, the demo's report prints whoop_daily's days and writes its chart (offline HTML), and
`dbt docs generate` writes the models' docs.

The sandbox is served in-process (the Meltano runs reach it over loopback); the prerequisites
are those of tests/test_pipelines.py, whose fixtures and helpers are reused.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
import sys
import typing as t
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest
from psycopg import sql

from tests import test_pipelines
from tests.test_pipelines import (
    MELTANO,
    PLUGINS,
    ROOT,
    RUN_TIMEOUT,
    MeltanoProject,
    Postgres,
    clean_env,
    instant,
    log_tail,
)
from whoop_sandbox import Sandbox, SandboxServer

if t.TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.e2e

#: The sandbox's clock: a morning whose last sleep and recovery are still pending; 20 days of
#: history hold a nap, an unscorable recovery and days with two workouts.
NOW = datetime.datetime(2026, 11, 12, 15, tzinfo=datetime.timezone.utc)
HISTORY_DAYS = 20
MEMBER = "alice"
#: loader -> the dbt utility that builds the models in its warehouse
WAREHOUSES = {"target-duckdb": "dbt-duckdb", "target-postgres": "dbt-postgres"}
UTILITIES = {f"utilities/{name}": "dbt" for name in WAREHOUSES.values()}
#: dbt's last line: every model built and every test passed
DONE = re.compile(r"Done\. PASS=(\d+) WARN=0 ERROR=0 SKIP=0")
MS_PER_HOUR = 3_600_000
#: The `sleep_signals` stream as the tap will send it: one record per sleep, WHOOP's points in
#: `stream` (fields WHOOP does not send are absent).
SLEEP_SIGNALS_SCHEMA = {
    "type": "object",
    "properties": {
        "sleep_id": {"type": "string", "format": "uuid"},
        "user_id": {"type": "integer"},
        "algorithm_version": {"type": ["string", "null"]},
        "types": {"type": ["array", "null"], "items": {"type": "string"}},
        "stream": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "properties": {
                    "timestamp": {"type": "string", "format": "date-time"},
                    "hr": {"type": ["integer", "null"]},
                    "skin_temp": {"type": ["number", "null"]},
                    "board_temp": {"type": ["number", "null"]},
                    "battery_temp": {"type": ["number", "null"]},
                    "is_sleeping": {"type": ["boolean", "null"]},
                    "is_charging": {"type": ["boolean", "null"]},
                },
            },
        },
        "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
    },
    "required": ["sleep_id", "user_id"],
}

# test_pipelines' fixtures, registered here under their names.
meltano_installed = test_pipelines.meltano_installed
postgres = test_pipelines.postgres
pg_schema = test_pipelines.pg_schema


@pytest.fixture(scope="session")
def dbt_installed(meltano_installed: None) -> None:
    missing = [
        str(ROOT / ".meltano" / plugin / "venv" / "bin" / executable)
        for plugin, executable in UTILITIES.items()
        if not (ROOT / ".meltano" / plugin / "venv" / "bin" / executable).exists()
    ]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)}; {test_pipelines.SETUP_HINT}")


@pytest.fixture
def whoop() -> Iterator[Sandbox]:
    sandbox = Sandbox(
        members=(MEMBER,), history_days=HISTORY_DAYS, now=NOW, per_minute=None, per_day=None
    )
    with test_pipelines.served(sandbox):
        yield sandbox


@pytest.fixture
def project(
    tmp_path: Path,
    dbt_installed: None,
    whoop: Sandbox,
    postgres: Postgres,
    pg_schema: str,
) -> Iterator[MeltanoProject]:
    """meltano.yml and transform/ in a temp dir, the plugins' venvs linked; the models go to a
    schema of their own beside the test's."""
    server: SandboxServer = whoop.server  # type: ignore[attr-defined]
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "meltano.yml", root / "meltano.yml")
    (root / "transform").symlink_to(ROOT / "transform")
    (root / "output").mkdir()
    for plugin in [*PLUGINS, *UTILITIES]:
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
        "DBT_POSTGRES_HOST": postgres.host,
        "DBT_POSTGRES_PORT": str(postgres.port),
        "DBT_POSTGRES_USER": postgres.user,
        "DBT_POSTGRES_PASSWORD": postgres.password,
        "DBT_POSTGRES_DBNAME": postgres.database,
        "DBT_POSTGRES_SOURCE_SCHEMA": pg_schema,
        "DBT_POSTGRES_SCHEMA": f"{pg_schema}_marts",
    }
    yield MeltanoProject(root, env)
    with postgres.connect(autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(f"{pg_schema}_marts"))
        )


# The warehouses, read and written alike


class Warehouse:
    """The tap's tables and the models in one warehouse (the loader's)."""

    def __init__(
        self, loader: str, project: MeltanoProject, postgres: Postgres, schema: str
    ) -> None:
        self.loader = loader
        self.project = project
        self.postgres = postgres
        self.source = schema if loader == "target-postgres" else "tap_whoop"
        self.marts = f"{schema}_marts" if loader == "target-postgres" else "analytics"

    def rows(self, schema: str, table: str) -> list[dict[str, t.Any]]:
        query = f'SELECT * FROM "{schema}"."{table}"'
        if self.loader == "target-postgres":
            with self.postgres.connect() as connection, connection.cursor() as cursor:
                cursor.execute(query)  # type: ignore[arg-type]
                names = [column.name for column in cursor.description or []]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        with duckdb.connect(str(self.project.duckdb_file), read_only=True) as db:
            found = db.execute(query)
            columns = [column[0] for column in found.description or []]
            return [dict(zip(columns, row, strict=True)) for row in found.fetchall()]

    def mart(self, name: str) -> list[dict[str, t.Any]]:
        return self.rows(self.marts, name)

    def load_sleep_signals(self, rows: list[dict[str, t.Any]]) -> None:
        """`sleep_signals` records, of the stream's shape, loaded by the loader itself (so that
        its columns are typed as the loader types them: `stream` is jsonb[] in PostgreSQL)."""
        messages = [
            {
                "type": "SCHEMA",
                "stream": "sleep_signals",
                "key_properties": ["sleep_id"],
                "schema": SLEEP_SIGNALS_SCHEMA,
            },
            *({"type": "RECORD", "stream": "sleep_signals", "record": row} for row in rows),
        ]
        result = subprocess.run(
            [str(MELTANO), "--environment=sandbox", "invoke", self.loader],
            cwd=self.project.root,
            env=self.project.base_env,
            input="".join(json.dumps(message) + "\n" for message in messages),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, log_tail(result)


def build(project: MeltanoProject, *args: str) -> str:
    """A `meltano run` (or invoke) that ends with the models built and tested: dbt's output."""
    result = project.meltano(*args)
    output = (result.stdout or "") + (result.stderr or "")
    # dbt's lines for what failed, and the error of each (Meltano prefixes every line)
    failures = [
        line
        for line in output.splitlines()
        if re.search(r"\b(ERROR|FAIL|WARN)\b|Error in|Failure in|Got \d+ result", line)
    ]
    assert result.returncode == 0, (
        f"meltano {' '.join(args)} failed:\n" + "\n".join(failures[-30:]) + "\n" + log_tail(result)
    )
    done = DONE.findall(output)
    assert done, "dbt: not every model and test passed:\n" + "\n".join(failures[-30:])
    assert int(done[-1]) >= 40, done
    return output


# What the marts must hold, computed from the sandbox's records


def local_day(record: dict[str, t.Any]) -> datetime.date:
    """The README's rule: the calendar day of the cycle's local start plus 12 hours."""
    sign = -1 if record["timezone_offset"].startswith("-") else 1
    hours, minutes = record["timezone_offset"][1:].split(":")
    offset = sign * datetime.timedelta(hours=int(hours), minutes=int(minutes))
    return (instant(record["start"]) + offset + datetime.timedelta(hours=12)).date()


def asleep_hours(sleep: dict[str, t.Any]) -> float | None:
    if "score" not in sleep:
        return None
    stages = sleep["score"]["stage_summary"]
    stage_times = ("light_sleep", "slow_wave_sleep", "rem_sleep")
    return sum(stages[f"total_{stage}_time_milli"] for stage in stage_times) / MS_PER_HOUR


def expected_days(sandbox: Sandbox) -> dict[datetime.date, dict[str, t.Any]]:
    cycles = sandbox.records(MEMBER, "cycle")
    recovery = {r["cycle_id"]: r for r in sandbox.records(MEMBER, "recovery")}
    sleeps = sandbox.records(MEMBER, "sleep")
    workouts = sandbox.records(MEMBER, "workout")
    days: dict[datetime.date, dict[str, t.Any]] = {}
    for cycle in cycles:
        start = instant(cycle["start"])
        end = instant(cycle["end"]) if cycle.get("end") else None
        rec = recovery.get(cycle["id"], {})
        mains = [s for s in sleeps if s["cycle_id"] == cycle["id"] and not s["nap"]]
        main = next((s for s in mains if s["id"] == rec.get("sleep_id")), None) or (
            max(mains, key=lambda s: s["start"]) if mains else None
        )
        within = [
            w
            for w in workouts
            if start <= instant(w["start"]) and (end is None or instant(w["start"]) < end)
        ]
        day = local_day(cycle)
        assert day not in days, f"two cycles on {day}: the scenario assumes one"
        days[day] = {
            "cycle_id": cycle["id"],
            "recovery_state": rec.get("score_state"),
            "recovery_percent": rec.get("score", {}).get("recovery_score"),
            "hrv_ms": rec.get("score", {}).get("hrv_rmssd_milli"),
            "resting_heart_rate": rec.get("score", {}).get("resting_heart_rate"),
            "day_strain": cycle.get("score", {}).get("strain"),
            "kilojoules": cycle.get("score", {}).get("kilojoule"),
            "sleep_id": main["id"] if main else None,
            "hours_asleep": asleep_hours(main) if main else None,
            "naps": sum(1 for s in sleeps if s["cycle_id"] == cycle["id"] and s["nap"]),
            "workouts": len(within),
            "workout_zone_4_minutes": sum(
                w["score"]["zone_durations"]["zone_four_milli"] / 60000
                for w in within
                if "score" in w
            )
            if any("score" in w for w in within)
            else None,
        }
    return days


def assert_daily_as_sandbox(warehouse: Warehouse, sandbox: Sandbox) -> list[dict[str, t.Any]]:
    rows = warehouse.mart("whoop_daily")
    user_id = sandbox.member(MEMBER).user_id
    assert {row["user_id"] for row in rows} == {user_id}
    found = {row["day"]: row for row in rows}
    assert len(found) == len(rows), "several rows for one day"
    expected = expected_days(sandbox)
    assert sorted(found) == sorted(expected)
    for day, want in expected.items():
        got = found[day]
        for column, value in want.items():
            have = got[column]
            if column == "sleep_id" and have is not None:
                have = str(have)
            if isinstance(value, float):
                assert have == pytest.approx(value, rel=1e-9), (day, column, have, value)
            else:
                assert have == value, (day, column, have, value)
    return rows


def signal_points(sleep: dict[str, t.Any], minutes: int) -> list[dict[str, t.Any]]:
    """Points every 20 s from the sleep's start, as WHOOP sends them: asleep after the first
    minute, heart rate falling; the battery reading missing on some (absent fields)."""
    start = instant(sleep["start"])
    points = []
    for n in range(minutes * 3):
        point: dict[str, t.Any] = {
            "timestamp": (start + datetime.timedelta(seconds=20 * n))
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "hr": 70 - n % 7 - n // 3,
            "skin_temp": 34.1,
            "board_temp": 30.0,
            "is_sleeping": n >= 3,
            "is_charging": False,
        }
        if n % 2:
            point["battery_temp"] = 29.5
        points.append(point)
    return points


def assert_demo_report(
    project: MeltanoProject, days: dict[datetime.date, dict[str, t.Any]]
) -> None:
    """scripts/report.py, as the demo runs it: whoop_daily's last days, and an offline chart."""
    chart = project.root / "output" / "whoop_report.html"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "report.py"),
            str(project.duckdb_file),
            "--days",
            "5",
            "--chart",
            str(chart),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    shown = [line for line in lines if re.match(r"  \w{3} \d{4}-\d\d-\d\d ", line)]
    assert [line.split()[1] for line in shown] == [str(day) for day in sorted(days)[-5:]]
    for line in shown:
        day = days[datetime.date.fromisoformat(line.split()[1])]
        recovery = line.split()[2]
        if day["recovery_percent"] is None:
            why = {"PENDING_SCORE": "pending", "UNSCORABLE": "unscorable"}
            assert recovery == why.get(day["recovery_state"], "-"), line
        else:
            assert recovery == f"{day['recovery_percent']:.0f}%", line
        assert line.split()[-1] == str(day["workouts"]), line
    html = chart.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc=", html), "the chart loads a script from the network"
    assert len(html) > 1_000_000, "plotly.js is not embedded"
    for trace in ("Recovery %", "HRV (ms)", "Day strain", "REM sleep"):
        assert f'"name":"{trace}"' in html, trace


# The test


@pytest.mark.parametrize("loader", ["target-duckdb", "target-postgres"])
def test_models_built_by_meltano_hold_the_sandboxs_days_and_no_deleted_record(
    loader: str,
    whoop: Sandbox,
    project: MeltanoProject,
    postgres: Postgres,
    pg_schema: str,
) -> None:
    utility = WAREHOUSES[loader]
    warehouse = Warehouse(loader, project, postgres, pg_schema)

    # 1. Load and build: whoop_daily is the sandbox's days; no sleep_signals, no heart rates.
    build(project, "run", "tap-whoop", loader, f"{utility}:build")
    rows = assert_daily_as_sandbox(warehouse, whoop)
    by_day = {row["day"]: row for row in rows}
    assert any(row["naps"] == 1 for row in rows), "the scenario needs a day with a nap"
    assert any(row["workouts"] == 2 for row in rows), "the scenario needs a day with 2 workouts"
    assert {"PENDING_SCORE", "UNSCORABLE"} <= {row["recovery_state"] for row in rows}
    assert all(row["recovery_percent"] is None for row in rows if row["recovery_state"] != "SCORED")
    assert warehouse.mart("whoop_sleep_heart_rate") == []
    workouts = warehouse.mart("whoop_workouts")
    assert {str(w["workout_id"]) for w in workouts} == {
        w["id"] for w in whoop.records(MEMBER, "workout")
    }

    # 2. A workout of a two-workout day and the nap deleted in WHOOP; sleep signals for the nap
    # and for a scored main sleep. A full refresh marks the deletions; the build runs again.
    sleeps = whoop.records(MEMBER, "sleep")
    nap = next(s for s in sleeps if s["nap"])
    main = next(s for s in sleeps if not s["nap"] and s["score_state"] == "SCORED")
    two = next(row for row in rows if row["workouts"] == 2)
    gone = next(w for w in workouts if w["day"] == two["day"] and w["score_state"] == "SCORED")
    user_id = whoop.member(MEMBER).user_id
    warehouse.load_sleep_signals(
        [
            {
                "sleep_id": sleep["id"],
                "user_id": user_id,
                "algorithm_version": "v1",
                "types": ["hr", "is_sleeping"],
                "stream": signal_points(sleep, 5),
            }
            for sleep in (nap, main)
        ]
    )
    whoop.delete_record(MEMBER, "workout", str(gone["workout_id"]))
    whoop.delete_record(MEMBER, "sleep", nap["id"])
    output = build(project, "run", "--full-refresh", "tap-whoop", loader, f"{utility}:build")
    assert "no_deleted_row_reaches_a_mart" in output, output[-2000:]

    marked = {
        str(row["id"])
        for table in ("workout", "sleep")
        for row in warehouse.rows(warehouse.source, table)
        if row["_sdc_deleted_at"] is not None
    }
    assert marked == {str(gone["workout_id"]), nap["id"]}, "the deletions were not loaded"
    rows = assert_daily_as_sandbox(warehouse, whoop)
    after = {row["day"]: row for row in rows}
    assert after[two["day"]]["workouts"] == 1
    nap_day = next(day for day, row in by_day.items() if row["naps"] == 1)
    assert after[nap_day]["naps"] == 0
    assert str(gone["workout_id"]) not in {
        str(w["workout_id"]) for w in warehouse.mart("whoop_workouts")
    }

    # The main sleep's heart rate: a row per minute, the nap's gone with it.
    heart = warehouse.mart("whoop_sleep_heart_rate")
    assert {str(row["sleep_id"]) for row in heart} == {main["id"]}
    points = signal_points(main, 5)
    per_minute: dict[datetime.datetime, list[int]] = defaultdict(list)
    for point in points:
        at = instant(point["timestamp"]).replace(second=0, microsecond=0, tzinfo=None)
        per_minute[at].append(point["hr"])
    assert sorted(row["minute_at"] for row in heart) == sorted(per_minute)
    for row in heart:
        beats = per_minute[row["minute_at"]]
        assert float(row["heart_rate"]) == pytest.approx(sum(beats) / len(beats))
        assert float(row["min_heart_rate"]) == min(beats)
    asleep = [p["hr"] for p in points if p["is_sleeping"]]
    assert {float(row["min_heart_rate_asleep"]) for row in heart} == {min(asleep)}
    averages = {float(row["avg_heart_rate_asleep"]) for row in heart}
    assert len(averages) == 1, averages
    assert averages.pop() == pytest.approx(sum(asleep) / len(asleep))

    if loader != "target-duckdb":
        return  # the docs and the demo's report are DuckDB's alone
    assert_demo_report(project, after)
    result = project.meltano("invoke", f"{utility}:docs-generate")
    assert result.returncode == 0, log_tail(result)
    catalog = json.loads(
        (project.root / ".meltano" / "dbt" / "duckdb" / "target" / "catalog.json").read_text()
    )
    assert {"model.whoop.whoop_daily", "model.whoop.whoop_workouts"} <= set(catalog["nodes"])
    manifest = json.loads(
        (project.root / ".meltano" / "dbt" / "duckdb" / "target" / "manifest.json").read_text()
    )
    daily = manifest["nodes"]["model.whoop.whoop_daily"]
    assert "local day" in daily["description"]
    assert daily["columns"]["recovery_percent"]["description"]
