"""The sandbox's members look like real people over a year, measured as WHOOP shows them.

Over a member's 365 days, through the records the API serves: recovery rises with HRV and falls
with resting heart rate, a day's strain follows its workouts, sleep performance follows hours
asleep against the night's need, and every figure moves from day to day.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache

import pytest

from whoop_sandbox import Sandbox

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
DAYS = 365
CALIBRATION_DAYS = 4
"""A new member's first recoveries are calibrating; the year is the days after them."""
MEMBERS = ("alice", "bob", "veteran")


@dataclass(frozen=True)
class Year:
    recovery: list[float]
    hrv: list[float]
    resting_heart_rate: list[float]
    day_strain: list[float]
    workout_strain: list[float]
    """Per cycle: the sum of the strain of the workouts that start in it."""
    sleep_performance: list[float]
    asleep_over_need: list[float]


@cache
def year_of(key: str) -> Year:
    sandbox = Sandbox(
        members=(key,), history_days=DAYS + CALIBRATION_DAYS, now=NOW, per_minute=None, per_day=None
    )
    recoveries = [
        r["score"]
        for r in sandbox.records(key, "recovery")
        if r["score_state"] == "SCORED" and not r["score"]["user_calibrating"]
    ]
    workouts = [w for w in sandbox.records(key, "workout") if w["score_state"] == "SCORED"]
    cycles = [c for c in sandbox.records(key, "cycle") if "end" in c and "score" in c]
    sleeps = [s["score"] for s in sandbox.records(key, "sleep") if "score" in s and not s["nap"]]
    return Year(
        recovery=[r["recovery_score"] for r in recoveries],
        hrv=[r["hrv_rmssd_milli"] for r in recoveries],
        resting_heart_rate=[r["resting_heart_rate"] for r in recoveries],
        day_strain=[c["score"]["strain"] for c in cycles],
        workout_strain=[
            sum(w["score"]["strain"] for w in workouts if c["start"] <= w["start"] < c["end"])
            for c in cycles
        ],
        sleep_performance=[s["sleep_performance_percentage"] for s in sleeps],
        asleep_over_need=[_asleep(s) / sum(s["sleep_needed"].values()) for s in sleeps],
    )


def _asleep(score: dict[str, object]) -> int:
    stages = score["stage_summary"]
    assert isinstance(stages, dict)
    return int(
        stages["total_light_sleep_time_milli"]
        + stages["total_slow_wave_sleep_time_milli"]
        + stages["total_rem_sleep_time_milli"]
    )


@pytest.fixture(params=MEMBERS)
def year(request: pytest.FixtureRequest) -> Year:
    return year_of(request.param)


def test_a_year_is_a_year(year: Year) -> None:
    # Unscorable records (WHOOP's, as the sandbox plays them: about 3 in 100) are left out.
    assert DAYS * 0.95 <= len(year.recovery) <= DAYS
    assert DAYS * 0.95 <= len(year.day_strain) <= DAYS + CALIBRATION_DAYS
    assert DAYS * 0.95 <= len(year.sleep_performance) <= DAYS + CALIBRATION_DAYS


def test_recovery_rises_with_hrv(year: Year) -> None:
    assert statistics.correlation(year.recovery, year.hrv) >= 0.5


def test_recovery_falls_with_resting_heart_rate(year: Year) -> None:
    assert statistics.correlation(year.recovery, year.resting_heart_rate) <= -0.3


def test_strain_follows_workouts(year: Year) -> None:
    assert statistics.correlation(year.day_strain, year.workout_strain) >= 0.5
    assert all(0 < strain <= 21 for strain in year.day_strain)
    rest_days = [s for s, w in zip(year.day_strain, year.workout_strain, strict=True) if w == 0]
    busy_days = [s for s, w in zip(year.day_strain, year.workout_strain, strict=True) if w > 10]
    assert statistics.mean(busy_days) > statistics.mean(rest_days) + 5


def test_sleep_performance_follows_hours_slept_against_need(year: Year) -> None:
    assert statistics.correlation(year.sleep_performance, year.asleep_over_need) >= 0.5
    assert 65 <= statistics.mean(year.sleep_performance) <= 95


def test_every_figure_varies_from_day_to_day(year: Year) -> None:
    assert statistics.stdev(year.recovery) >= 10
    steps = [abs(b - a) for a, b in zip(year.recovery, year.recovery[1:], strict=False)]
    assert statistics.mean(steps) >= 5, "recovery drifts, but not only slowly"
    assert 30 <= statistics.mean(year.recovery) <= 75
    assert statistics.stdev(year.hrv) / statistics.mean(year.hrv) >= 0.1
    assert statistics.stdev(year.resting_heart_rate) >= 1.5
    assert statistics.stdev(year.day_strain) >= 2
    assert statistics.stdev(year.sleep_performance) >= 5


def test_members_differ_in_their_baselines() -> None:
    means = {key: statistics.mean(year_of(key).hrv) for key in MEMBERS}
    assert max(means.values()) > 1.2 * min(means.values()), means


def report() -> None:  # pragma: no cover - `python tests/test_sandbox_realism.py` prints figures
    for key in MEMBERS:
        year = year_of(key)
        print(
            f"{key}: corr(recovery, hrv)={statistics.correlation(year.recovery, year.hrv):.3f} "
            "corr(recovery, rhr)="
            f"{statistics.correlation(year.recovery, year.resting_heart_rate):.3f} "
            "corr(strain, workouts)="
            f"{statistics.correlation(year.day_strain, year.workout_strain):.3f} "
            "corr(sleep performance, asleep/need)="
            f"{statistics.correlation(year.sleep_performance, year.asleep_over_need):.3f} "
            f"recovery mean={statistics.mean(year.recovery):.1f} "
            f"std={statistics.stdev(year.recovery):.1f} n={len(year.recovery)}"
        )


if __name__ == "__main__":
    report()
