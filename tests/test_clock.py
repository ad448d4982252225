"""The run's clock: the wall clock, or an instant `TAP_WHOOP_NOW` pins for replays and tests."""

from __future__ import annotations

import datetime
import typing as t

import pytest
from auth_support import cli_env, run_cli, write_json
from conftest import NOW, run_tap, tap_config

from tap_whoop import clock

if t.TYPE_CHECKING:
    from pathlib import Path

    from whoop_sandbox import Sandbox


def test_a_pinned_instant_is_read_in_utc_whatever_offset_it_is_written_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(clock.NOW_ENV, "2026-11-20T14:00:00+02:00")

    assert clock.now() == datetime.datetime(2026, 11, 20, 12, tzinfo=datetime.timezone.utc)


def test_without_a_pin_the_clock_is_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(clock.NOW_ENV, raising=False)
    before = datetime.datetime.now(datetime.timezone.utc)

    now = clock.now()

    assert before <= now <= datetime.datetime.now(datetime.timezone.utc)


def test_plan_costs_new_records_up_to_the_pinned_instant_not_todays_date(
    sandbox: Sandbox, tmp_path: Path, pinned_clock: dict[str, str]
) -> None:
    first = run_tap(tap_config(sandbox, tmp_path))
    assert first.error is None
    config = write_json(tmp_path / "config.json", tap_config(sandbox, tmp_path))
    state = write_json(tmp_path / "state.json", first.state)

    def new_records(now: datetime.datetime) -> int:
        pinned = {clock.NOW_ENV: now.strftime("%Y-%m-%dT%H:%M:%SZ")}
        done = run_cli(
            "plan", "--config", str(config), "--state", str(state), env=cli_env(**pinned)
        )
        assert done.returncode == 0, done.stderr
        total = next(line for line in done.stdout.splitlines() if line.startswith("total"))
        return int(total.split()[2])

    assert new_records(NOW) == 4  # a page per collection
    assert new_records(NOW + datetime.timedelta(days=100)) > 4


def test_a_pinned_instant_that_is_not_iso_8601_is_one_line_and_exit_2(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    config = write_json(tmp_path / "config.json", tap_config(sandbox, tmp_path))

    done = run_cli("plan", "--config", str(config), env=cli_env(**{clock.NOW_ENV: "yesterday"}))

    assert done.returncode == 2
    assert "TAP_WHOOP_NOW='yesterday' is not an ISO 8601 date-time" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
