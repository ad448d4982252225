"""The raw signals of a sleep (`GET /v2/activity/sleep/{sleepId}/stream`), synthetic and stable.

A night is a run of sleep cycles of about 90 minutes (light, slow wave, light, REM; more slow
wave early in the night, more REM late), awake at its ends and for a few disturbances. Heart
rate follows the stages (lowest in slow wave sleep, highest awake, REM in between) and drifts
down through the night; skin temperature rises by about a degree through the night, the board
and battery temperatures trail it. The points depend only on the sleep's id, its `updated_at`
(a re-scored sleep has other points) and its start and end, so every request gets the same.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from .data import _rng, iso, to_ms

DEFAULT_INTERVAL_SECONDS = 30
"""One point every 30 s: about 960 points for an eight-hour night."""

#: WHOOP's `types`, and the field of a point each one fills.
SIGNAL_FIELDS = {
    "hr": ("hr",),
    "skin_temp": ("skin_temp",),
    "board_temp": ("board_temp",),
    "battery_temp": ("battery_temp",),
    "sleep_classification": ("is_sleeping",),
    "charging_status": ("is_charging",),
}

ALGORITHM_VERSION = "4.1.0"
CYCLE_MINUTES = 90.0

#: Heart rate above the member's resting rate in each stage, in beats per minute.
_STAGE_HR = {"awake": 14.0, "light": 4.0, "deep": -3.0, "rem": 9.0}


def _stage(minute: float, total: float, disturbances: list[tuple[float, float]]) -> str:
    """The sleep stage `minute` minutes into a night of `total` minutes."""
    if minute < 12 or minute > total - 8:
        return "awake"
    if any(start <= minute < start + length for start, length in disturbances):
        return "awake"
    cycle, into = divmod(minute - 12, CYCLE_MINUTES)
    share = into / CYCLE_MINUTES
    deep = max(0.35 - 0.08 * cycle, 0.05)  # slow wave sleep fades through the night
    rem = min(0.12 + 0.07 * cycle, 0.4)  # REM grows
    if share < 0.15:
        return "light"
    if share < 0.15 + deep:
        return "deep"
    if share < 1 - rem:
        return "light"
    return "rem"


def signal_stream(
    sleep: dict[str, Any], types: list[str], interval_seconds: int = DEFAULT_INTERVAL_SECONDS
) -> dict[str, Any]:
    """The answer for `sleep` (as the sleep endpoint renders it), with the fields of `types`."""
    fields = {name for kind in types for name in SIGNAL_FIELDS[kind]}
    start = to_ms(_parse(sleep["start"]))
    end = to_ms(_parse(sleep["end"])) if sleep.get("end") else start
    rng = _rng(f"{sleep['id']}|{sleep.get('updated_at')}|signals")
    resting = 46 + rng.random() * 14
    total = (end - start) / 60_000
    disturbances = [
        (rng.uniform(30, max(total - 30, 31)), rng.uniform(2, 8)) for _ in range(rng.randint(1, 4))
    ]
    skin_base = rng.uniform(33.2, 34.2)
    charging = rng.random() < 0.03  # now and then the strap was on its battery pack
    step = interval_seconds * 1000
    points = []
    for moment in range(start, end, step):
        minute = (moment - start) / 60_000
        progress = minute / total if total else 0.0
        stage = _stage(minute, total, disturbances)
        point: dict[str, Any] = {"timestamp": iso(moment)}
        if "hr" in fields:
            wobble = 1.5 * math.sin(minute / 7.0) + rng.gauss(0, 1.2)
            point["hr"] = round(resting + _STAGE_HR[stage] - 3 * progress + wobble)
        skin = skin_base + 1.1 * progress - (0.3 if stage == "awake" else 0.0)
        skin += rng.gauss(0, 0.05)
        if "skin_temp" in fields:
            point["skin_temp"] = round(skin, 2)
        board = skin - 1.8 + rng.gauss(0, 0.05)
        if "board_temp" in fields:
            point["board_temp"] = round(board, 2)
        if "battery_temp" in fields:
            point["battery_temp"] = round(board + 0.6 + (1.5 if charging else 0.0), 2)
        if "is_sleeping" in fields:
            point["is_sleeping"] = stage != "awake"
        if "is_charging" in fields:
            point["is_charging"] = charging
        points.append(point)
    return {"algorithm_version": ALGORITHM_VERSION, "stream": points}


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
