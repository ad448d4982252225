"""Print what a tap-whoop pipeline loaded into DuckDB, for a person to read at a glance.

    python scripts/report.py output/whoop_sandbox.duckdb [--days 14] [--since 2026-01-31T08:00:00]

Per member and day: recovery, HRV, resting heart rate, day strain, hours of sleep and workouts;
then the row count of every table (and how many rows the run that began at --since wrote).
A day is the calendar day a cycle's waking hours fall on: a cycle starts when the member falls
asleep, so one that starts at 23:00 on Monday is Tuesday's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

MS_PER_HOUR = 3_600_000


def main(argv: list[str] | None = None) -> int:
    """Print the report; 1 when the file or its tables are missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", type=Path, help="DuckDB file written by target-duckdb")
    parser.add_argument("--schema", help="schema holding the tables (default: the one with cycles)")
    parser.add_argument("--days", type=int, default=14, help="how many days to show (default 14)")
    parser.add_argument("--since", help="UTC date-time a run began: count the rows it wrote")
    args = parser.parse_args(argv)
    if not args.database.exists():
        print(f"report: {args.database} does not exist; run the pipeline first", file=sys.stderr)
        return 1
    with duckdb.connect(str(args.database), read_only=True) as db:
        schema = args.schema or _schema_of(db)
        if schema is None:
            print(f"report: no `cycles` table in {args.database}", file=sys.stderr)
            return 1
        tables = _tables(db, schema)
        rows: dict[str, list[dict[str, Any]]] = {
            name: _rows(db, schema, name)
            for name in ("profile", "cycles", "recovery", "sleep", "workout")
            if name in tables
        }
        print_days(rows, args.days)
        print_counts(db, schema, tables, args.since)
    return 0


def _schema_of(db: duckdb.DuckDBPyConnection) -> str | None:
    found = db.execute(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'cycles' "
        "ORDER BY table_schema LIMIT 1"
    ).fetchone()
    return None if found is None else str(found[0])


def _tables(db: duckdb.DuckDBPyConnection, schema: str) -> list[str]:
    found = db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1",
        [schema],
    ).fetchall()
    return [str(name) for (name,) in found]


def _rows(db: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[dict[str, Any]]:
    cursor = db.execute(f'SELECT * FROM "{schema}"."{table}"')  # noqa: S608 - names from the catalog
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def _json(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    loaded = json.loads(value)
    return loaded if isinstance(loaded, dict) else None


def _offset(text: str | None) -> dt.timedelta:
    """'-05:00' as a timedelta (WHOOP's timezone_offset)."""
    if not text:
        return dt.timedelta(0)
    sign = -1 if text.startswith("-") else 1
    hours, _, minutes = text.lstrip("+-").partition(":")
    return sign * dt.timedelta(hours=int(hours), minutes=int(minutes or 0))


def _local(moment: dt.datetime, offset: str | None) -> dt.datetime:
    """target-duckdb stores naive UTC timestamps."""
    return moment + _offset(offset)


def cycle_day(cycle: dict[str, Any]) -> dt.date:
    """The calendar day a cycle's waking hours fall on (local start + 12 h)."""
    return (_local(cycle["start"], cycle.get("timezone_offset")) + dt.timedelta(hours=12)).date()


def print_days(rows: dict[str, list[dict[str, Any]]], days: int) -> None:
    """One table per member: a line per day, newest last."""
    cycles = rows.get("cycles", [])
    if not cycles:
        print("No cycles loaded yet.\n")
        return
    names = {
        p["user_id"]: f"{p.get('first_name') or ''} {p.get('last_name') or ''}".strip()
        for p in rows.get("profile", [])
    }
    recovery = {r["cycle_id"]: r for r in rows.get("recovery", [])}
    sleep_hours: dict[int, float] = defaultdict(float)
    sleep_pending: set[int] = set()
    for sleep in rows.get("sleep", []):
        if sleep.get("nap"):
            continue
        score = _json(sleep.get("score"))
        if score is None:
            sleep_pending.add(sleep["cycle_id"])
            continue
        stages = score.get("stage_summary") or {}
        asleep = sum(
            stages.get(f"total_{stage}_time_milli") or 0
            for stage in ("light_sleep", "slow_wave_sleep", "rem_sleep")
        )
        sleep_hours[sleep["cycle_id"]] += asleep / MS_PER_HOUR
    workouts: dict[tuple[int, dt.date], int] = defaultdict(int)
    for workout in rows.get("workout", []):
        day = _local(workout["start"], workout.get("timezone_offset")).date()
        workouts[(workout["user_id"], day)] += 1

    by_member: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for cycle in cycles:
        by_member[cycle["user_id"]].append(cycle)
    for user_id, member_cycles in sorted(by_member.items()):
        member_cycles.sort(key=lambda c: c["start"])
        shown = member_cycles[-days:]
        who = names.get(user_id) or "member"
        print(f"{who} (WHOOP user {user_id}): the last {len(shown)} days")
        header = ("Day", "Recovery", "HRV", "Resting HR", "Strain", "Sleep", "Workouts")
        table = [header]
        for cycle in shown:
            day = cycle_day(cycle)
            rec = recovery.get(cycle["id"])
            rec_score = _json(rec.get("score")) if rec else None
            cycle_score = _json(cycle.get("score"))
            table.append(
                (
                    f"{day:%a %Y-%m-%d}",
                    _fmt(rec_score, "recovery_score", "{:.0f}%", rec),
                    _fmt(rec_score, "hrv_rmssd_milli", "{:.0f} ms", rec),
                    _fmt(rec_score, "resting_heart_rate", "{:.0f} bpm", rec),
                    _fmt(cycle_score, "strain", "{:.1f}", cycle)
                    + ("" if cycle.get("end") else " (so far)"),
                    f"{sleep_hours[cycle['id']]:.1f} h"
                    if cycle["id"] in sleep_hours
                    else ("pending" if cycle["id"] in sleep_pending else "-"),
                    str(workouts.get((user_id, day), 0)),
                )
            )
        _print_table(table, right=range(1, 7))
        print()


def _fmt(score: dict[str, Any] | None, field: str, pattern: str, row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if score is None or score.get(field) is None:
        state = row.get("score_state")
        return {"PENDING_SCORE": "pending", "UNSCORABLE": "unscorable"}.get(state or "", "-")
    return pattern.format(score[field])


def print_counts(
    db: duckdb.DuckDBPyConnection, schema: str, tables: list[str], since: str | None
) -> None:
    """Rows per table, and how many the run that began at `since` wrote."""
    header = ("Table", "Rows", "Written by this run") if since else ("Table", "Rows")
    table: list[Sequence[str]] = [header]
    for name in tables:
        (rows,) = db.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone() or (0,)  # noqa: S608
        line = [name, str(rows)]
        if since:
            columns = {
                c
                for (c,) in db.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = ? AND table_name = ?",
                    [schema, name],
                ).fetchall()
            }
            if "_sdc_batched_at" in columns:
                (written,) = db.execute(
                    f'SELECT count(*) FROM "{schema}"."{name}" WHERE _sdc_batched_at >= ?',  # noqa: S608
                    [dt.datetime.fromisoformat(since)],
                ).fetchone() or (0,)
                line.append(str(written))
            else:
                line.append("?")
        table.append(tuple(line))
    print(f"Rows per table (schema {schema}):")
    _print_table(table, right=range(1, len(header)))


def _print_table(rows: Sequence[Sequence[str]], right: range) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  " + "  ".join(cells).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(main())
