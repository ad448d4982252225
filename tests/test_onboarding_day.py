"""Onboarding on a schedule of several runs a day: histories take a share of each run.

WHOOP's headers show the day's remaining requests only near the day's end, so a run cannot see
what later runs of the day will need. Four members sync every 3 hours; a fifth joins with years
of history. With `max_history_requests_per_run` as `tap-whoop plan` advises, every run of the
day syncs the four; without it (the control), the day's first run spends the day on the history
and the later runs stop with exit 75.
"""

from __future__ import annotations

import copy
import re
import types
import typing as t

import pytest
from auth_support import run_cli, write_json
from conftest import COLLECTIONS, SyncResult, key_of, members_config, run_tap

from tap_whoop import http
from tap_whoop.errors import QuotaExhaustedError
from tap_whoop.tap import DAY_SPENT_KEY

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from whoop_sandbox import Sandbox

MEMBERS = ("ana", "ben", "cai", "dee")
RUNS_PER_DAY = 8
PER_DAY = 300
ADVICE = re.compile(r"set max_history_requests_per_run to (\d+)")


def a_day_of_runs(
    sandbox: Sandbox, config: dict[str, t.Any], state: dict[str, t.Any] | None
) -> list[SyncResult]:
    runs: list[SyncResult] = []
    for index in range(RUNS_PER_DAY):
        if index:
            sandbox.advance(hours=24 / RUNS_PER_DAY)
        result = run_tap(config, state=copy.deepcopy(state))
        runs.append(result)
        state = result.state or state  # as runners do: a run without STATE keeps the last
    return runs


@pytest.mark.parametrize("as_planned", [True, False])
def test_onboarding_leaves_every_run_of_the_day_its_members_new_records(
    start_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    as_planned: bool,
) -> None:
    # WHOOP's ratios on a shorter clock: a "minute" of one second, the tap's ceiling of 90 in it
    monkeypatch.setattr(http, "Duration", types.SimpleNamespace(MINUTE=1000))
    sandbox = start_sandbox(
        members=MEMBERS,
        history_days=3,
        per_minute=100,
        minute_window=1.0,
        per_day=PER_DAY,
        day_window_clock="sandbox",
        access_token_ttl=7 * 86_400,  # the tap's clock stands still while the sandbox's runs
    )
    first = run_tap(members_config(sandbox, tmp_path))
    assert first.error is None
    sandbox.add_member("eve", history_days=2000)
    sandbox.advance(days=1)  # a new day of WHOOP's window
    config = members_config(sandbox, tmp_path, (*MEMBERS, "eve"), max_requests_per_minute=90)
    if as_planned:
        planned = run_cli(
            "plan",
            "--config",
            str(write_json(tmp_path / "config.json", config)),
            "--state",
            str(write_json(tmp_path / "state.json", first.state)),
            "--runs-per-day",
            str(RUNS_PER_DAY),
            "--daily-limit",
            str(PER_DAY),
        )
        advice = ADVICE.search(planned.stdout)
        assert advice, planned.stdout + planned.stderr
        config["max_history_requests_per_run"] = int(advice.group(1))
    sandbox.reset_stats()

    runs = a_day_of_runs(sandbox, config, first.state)

    assert sandbox.stats()["rate_limited"] == 0
    eve = sandbox.member("eve").user_id
    if not as_planned:  # the control: the first run takes the day, the later ones stop
        assert isinstance(runs[0].error, QuotaExhaustedError)
        assert "history of 1 member(s) still to read" in str(runs[0].error)
        # the later runs of the day know it from the state: no request, no 429, no one synced
        later = [str(run.error) for run in runs[1:]]
        assert all(isinstance(run.error, QuotaExhaustedError) for run in runs[1:]), later
        assert all("no request sent" in error for error in later), later
        return
    assert [run.error for run in runs] == [None] * RUNS_PER_DAY
    for key in MEMBERS:
        user_id = sandbox.member(key).user_id
        for stream, (kind, _) in COLLECTIONS.items():
            delivered = {
                key_of(r)
                for run in [first, *runs]
                for r in run.records(stream)
                if r["user_id"] == user_id
            }
            assert delivered >= {key_of(r) for r in sandbox.records(key, kind)}, (key, stream)
    eve_cycles = {key_of(r) for run in runs for r in run.records("cycles") if r["user_id"] == eve}
    assert eve_cycles, "the history advanced"


def test_a_spent_day_noted_in_the_state_is_forgotten_once_it_has_reset(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(members=("ana",), history_days=3)
    first = run_tap(members_config(sandbox, tmp_path))
    assert first.error is None
    assert first.state is not None
    noted = {**first.state, DAY_SPENT_KEY: "2020-01-01T00:00:00Z"}

    result = run_tap(members_config(sandbox, tmp_path), state=noted)

    assert result.error is None
    assert result.state is not None
    assert DAY_SPENT_KEY not in result.state
    refused = run_tap(
        members_config(sandbox, tmp_path), state={DAY_SPENT_KEY: "2999-01-01T00:00:00Z"}
    )
    assert isinstance(refused.error, QuotaExhaustedError)
    assert "no request sent" in str(refused.error)
