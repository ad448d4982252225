"""Print what a tap-whoop pipeline loaded into DuckDB and what the models made of it.

    python scripts/report.py output/whoop_sandbox.duckdb [--days 14] [--since 2026-01-31T08:00:00]
        [--chart output/whoop_report.html]

Per member and day, from the `whoop_daily` model (transform/, built by `dbt-duckdb:build`):
recovery, HRV, resting heart rate, day strain, hours asleep, naps and workouts; then the row
count of every table the tap loaded (and how many rows the run that began at --since wrote).
With --chart, an HTML chart of the last 90 days that opens offline (plotly, its JS embedded).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

MARTS_SCHEMA = "analytics"
BUILD_HINT = ".venv/bin/meltano --environment=sandbox invoke dbt-duckdb:build"


def main(argv: list[str] | None = None) -> int:
    """Print the report (and write the chart); 1 when the file, tables or models are missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", type=Path, help="DuckDB file written by target-duckdb")
    parser.add_argument("--schema", help="schema holding the tables (default: the one with cycles)")
    parser.add_argument(
        "--marts", default=MARTS_SCHEMA, help=f"schema of the models (default {MARTS_SCHEMA})"
    )
    parser.add_argument("--days", type=int, default=14, help="how many days to show (default 14)")
    parser.add_argument("--since", help="UTC date-time a run began: count the rows it wrote")
    parser.add_argument("--chart", type=Path, help="write an HTML chart of the last 90 days here")
    args = parser.parse_args(argv)
    if not args.database.exists():
        print(f"report: {args.database} does not exist; run the pipeline first", file=sys.stderr)
        return 1
    since = None
    if args.since:
        try:
            since = dt.datetime.fromisoformat(args.since)
        except ValueError:
            print(f"report: --since {args.since!r} is not an ISO date-time", file=sys.stderr)
            return 1
    with duckdb.connect(str(args.database), read_only=True) as db:
        schema = args.schema or _schema_of(db)
        if schema is None:
            print(f"report: no `cycles` table in {args.database}", file=sys.stderr)
            return 1
        if "whoop_daily" not in _tables(db, args.marts):
            print(
                f"report: no {args.marts}.whoop_daily in {args.database}; build the models: "
                f"{BUILD_HINT}",
                file=sys.stderr,
            )
            return 1
        days = _daily(db, args.marts)
        names = _names(db, schema)
        print_days(days, args.days, names)
        print_counts(db, schema, _tables(db, schema), since)
    if args.chart:
        write_chart(days, args.chart)
        size = args.chart.stat().st_size / 1_000_000
        print(f"\nChart of the last {CHART_DAYS} days: {args.chart} ({size:.1f} MB, opens offline)")
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


def _daily(db: duckdb.DuckDBPyConnection, schema: str) -> list[dict[str, Any]]:
    cursor = db.execute(f'SELECT * FROM "{schema}".whoop_daily ORDER BY user_id, day')  # noqa: S608
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


STATES = {"PENDING_SCORE": "pending", "UNSCORABLE": "unscorable"}


def _fmt(value: float | None, pattern: str, state: str | None) -> str:
    """A score, or why there is none (no record, or WHOOP has not scored it)."""
    if value is not None:
        return pattern.format(value)
    return STATES.get(state or "", "-")


def _names(db: duckdb.DuckDBPyConnection, schema: str) -> dict[int, str]:
    """Members' names from the tap's `profile` (the marts keep only the member's key)."""
    if "profile" not in _tables(db, schema):
        return {}
    found = db.execute(
        f"SELECT user_id, concat_ws(' ', first_name, last_name) FROM \"{schema}\".profile "  # noqa: S608
        "WHERE _sdc_deleted_at IS NULL"
    ).fetchall()
    return {int(user_id): str(name) for user_id, name in found if name}


def print_days(days: list[dict[str, Any]], shown: int, names: dict[int, str]) -> None:
    """One table per member: a line per day of `whoop_daily`, newest last."""
    if not days:
        print("No days in whoop_daily yet.\n")
        return
    members = sorted({day["user_id"] for day in days})
    for user_id in members:
        rows = [day for day in days if day["user_id"] == user_id][-shown:]
        who = names.get(user_id) or rows[-1]["member"] or "member"
        print(f"{who} (WHOOP user {user_id}): the last {len(rows)} days (whoop_daily)")
        header = ("Day", "Recovery", "HRV", "Resting HR", "Strain", "Asleep", "Naps", "Workouts")
        table: list[Sequence[str]] = [header]
        for day in rows:
            strain = _fmt(day["day_strain"], "{:.1f}", day["cycle_state"])
            table.append(
                (
                    f"{day['day']:%a %Y-%m-%d}",
                    _fmt(day["recovery_percent"], "{:.0f}%", day["recovery_state"]),
                    _fmt(day["hrv_ms"], "{:.0f} ms", day["recovery_state"]),
                    _fmt(day["resting_heart_rate"], "{:.0f} bpm", day["recovery_state"]),
                    strain + ("" if day["cycle_end_at"] else " (so far)"),
                    _fmt(day["hours_asleep"], "{:.1f} h", day["sleep_state"]),
                    str(day["naps"]),
                    str(day["workouts"]),
                )
            )
        _print_table(table, right=range(1, 8))
        print()


CHART_DAYS = 90
SLEEP_STAGES = (
    ("hours_light_sleep", "Light sleep", "#9ecae1"),
    ("hours_slow_wave_sleep", "Slow-wave sleep", "#3182bd"),
    ("hours_rem_sleep", "REM sleep", "#756bb1"),
)


def write_chart(days: list[dict[str, Any]], path: Path) -> None:
    """The last 90 days in one HTML file that needs no network (plotly.js embedded, no CDN).

    Recovery, HRV and day strain over the days, hours asleep by stage under them.
    """
    from plotly.subplots import make_subplots  # the demo's only use of it

    members = sorted({day["user_id"] for day in days})
    last = max((day["day"] for day in days), default=None) or dt.date(1970, 1, 1)
    first = last - dt.timedelta(days=CHART_DAYS - 1)
    figure = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        row_heights=[0.4, 0.25, 0.35],
        specs=[[{"secondary_y": True}], [{}], [{}]],
        subplot_titles=("Recovery and HRV", "Day strain", "Hours asleep by stage"),
    )
    for user_id in members:
        rows = [d for d in days if d["user_id"] == user_id and first <= d["day"] <= last]
        name = rows[-1]["member"] if rows else str(user_id)
        x = [d["day"] for d in rows]
        suffix = f" ({name})" if len(members) > 1 else ""
        figure.add_bar(
            x=x,
            y=[d["recovery_percent"] for d in rows],
            name=f"Recovery %{suffix}",
            marker_color=[_recovery_color(d["recovery_percent"]) for d in rows],
            row=1,
            col=1,
        )
        figure.add_scatter(
            x=x,
            y=[d["hrv_ms"] for d in rows],
            name=f"HRV (ms){suffix}",
            mode="lines+markers",
            line={"color": "#222222"},
            row=1,
            col=1,
            secondary_y=True,
        )
        figure.add_scatter(
            x=x,
            y=[d["day_strain"] for d in rows],
            name=f"Day strain{suffix}",
            mode="lines+markers",
            line={"color": "#e6550d"},
            row=2,
            col=1,
        )
        for column, label, color in SLEEP_STAGES:
            figure.add_bar(
                x=x,
                y=[d[column] for d in rows],
                name=f"{label}{suffix}",
                marker_color=color,
                row=3,
                col=1,
            )
    figure.update_layout(
        title=f"WHOOP: the last {CHART_DAYS} days ({first} to {last})",
        barmode="stack",
        height=900,
        template="plotly_white",
        legend={"orientation": "h", "y": -0.08},
    )
    figure.update_yaxes(title_text="Recovery %", range=[0, 100], row=1, col=1)
    figure.update_yaxes(title_text="HRV (ms)", row=1, col=1, secondary_y=True)
    figure.update_yaxes(title_text="Strain", range=[0, 21], row=2, col=1)
    figure.update_yaxes(title_text="Hours", row=3, col=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(path, include_plotlyjs=True, full_html=True)


def _recovery_color(score: float | None) -> str:
    """WHOOP's bands: red below 34, yellow to 66, green above."""
    if score is None:
        return "#cccccc"
    if score < 34:
        return "#de2d26"
    return "#fdae6b" if score < 67 else "#31a354"


def print_counts(
    db: duckdb.DuckDBPyConnection, schema: str, tables: list[str], since: dt.datetime | None
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
                    [since],
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
