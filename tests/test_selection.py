"""Safe under any selection, records of a stable shape, and no warnings on a healthy run."""

from __future__ import annotations

import datetime
import logging
import re
import typing as t

import pytest
from conftest import COLLECTIONS, PAST, members_config, run_tap, tap_config

from tap_whoop.settings import parse_time
from tap_whoop.tap import TapWhoop

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from whoop_sandbox import Sandbox

PER_CYCLE = ("recovery_for_cycle", "sleep_for_cycle")
SKIP_LINE = "selected, but not synced"


def every_stream(config: dict[str, t.Any]) -> set[str]:
    """What Meltano's default `*.*` selects: everything the catalog has."""
    catalog = TapWhoop(config=config, validate_config=False).catalog_dict
    return {entry["tap_stream_id"] for entry in catalog["streams"]}


def info_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


# Safe under any selection


def test_a_star_star_selection_costs_what_the_curated_one_does(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    curated = start_sandbox()
    assert run_tap(tap_config(curated, tmp_path / "curated")).error is None

    sandbox = start_sandbox()
    config = tap_config(sandbox, tmp_path / "all")
    with caplog.at_level(logging.INFO):
        result = run_tap(config, select=every_stream(config))

    assert result.error is None
    assert sandbox.stats()["by_path"] == curated.stats()["by_path"]
    assert sandbox.stats()["requests"] == curated.stats()["requests"] == 13
    for name in (*PER_CYCLE, "sleep_signals", "cycle_by_id", "sleep_by_id", "workout_by_id"):
        assert result.records(name) == [], name
    for name in (*PER_CYCLE, "sleep_signals"):
        assert not [m for m in result.messages if m.get("stream") == name], name
    line, signals = info_lines(caplog, SKIP_LINE)
    assert "recovery_for_cycle and sleep_for_cycle" in line
    assert "one request per cycle" in line
    assert "per_cycle_streams" in line
    assert signals.startswith("sleep_signals: ")
    assert "one request per sleep" in signals
    assert "sleep_signal_types" in signals


def test_skipped_per_cycle_streams_are_said_once_for_all_members(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = start_sandbox(members=("alice", "bob"), history_days=10)
    config = members_config(sandbox, tmp_path)
    with caplog.at_level(logging.DEBUG):
        result = run_tap(config, select={"profile", "cycles", *PER_CYCLE})

    assert result.error is None
    assert len(info_lines(caplog, SKIP_LINE)) == 1
    assert not [r for r in caplog.records if r.name.endswith(PER_CYCLE)]
    assert set(sandbox.stats()["by_path"]) == {"/v2/user/profile/basic", "/v2/cycle"}


def test_per_cycle_streams_when_asked_for_log_their_cost_per_member(
    sandbox: Sandbox, config: dict[str, t.Any], caplog: pytest.LogCaptureFixture
) -> None:
    config["per_cycle_streams"] = True
    with caplog.at_level(logging.INFO):
        result = run_tap(config, select={"profile", "cycles", *PER_CYCLE})

    assert result.error is None
    cycles = len(sandbox.records("alice", "cycle"))
    per_cycle_requests = sum(
        n for path, n in sandbox.stats()["by_path"].items() if re.match(r"/v2/cycle/\d+/", path)
    )
    assert per_cycle_requests == 2 * cycles
    assert not info_lines(caplog, SKIP_LINE)
    (before,) = info_lines(caplog, "add one request per cycle synced")
    assert before.startswith("member 'default': recovery_for_cycle and sleep_for_cycle")
    assert "one per day of the member's history" in before  # a first sync, no start_date
    (after,) = info_lines(caplog, "asked WHOOP about")
    assert f"{cycles} cycle(s): {per_cycle_requests} request(s)" in after
    assert result.records("recovery_for_cycle")


def test_per_cycle_cost_is_estimated_from_the_window(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path, per_cycle_streams=True, lookback_days=2)
    select = {"profile", "cycles", *PER_CYCLE}
    first = run_tap(config, select=select)
    assert first.error is None
    caplog.clear()
    with caplog.at_level(logging.INFO):
        second = run_tap(config, state=first.state, select=select)

    assert second.error is None
    (before,) = info_lines(caplog, "add one request per cycle synced")
    match = re.search(r"about (\d+) for the (\d+) days", before)
    assert match, before
    estimate, days = int(match[1]), int(match[2])
    # the window opens lookback_days before the bookmark; the wall clock is past sandbox time
    assert days >= 2
    assert 2 * (days + 1) <= estimate <= 2 * (days + 2)  # `days` is rounded in the line
    (after,) = info_lines(caplog, "asked WHOOP about")
    assert f"{len(second.records('cycles'))} cycle(s)" in after


# --test reports the cost


def check_lines(config: dict[str, t.Any], select: set[str]) -> list[str]:
    catalog = TapWhoop(config=config, validate_config=False).catalog_dict
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = entry["tap_stream_id"] in select
    lines: list[str] = []
    TapWhoop(config=config, catalog=catalog).check_credentials(echo=lines.append)
    return lines


def costs(line: str) -> tuple[int, int]:
    match = re.search(
        r"a full sync from start_date costs about (\d+) requests; "
        r"a daily incremental run about (\d+)$",
        line,
    )
    assert match, line
    return int(match[1]), int(match[2])


@pytest.fixture
def sixty_days(sandbox: Sandbox, tmp_path: Path) -> dict[str, t.Any]:
    """A window of exactly 60 days, in the past of the wall clock."""
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=90)
    end = start + datetime.timedelta(days=60)
    return tap_config(sandbox, tmp_path, start_date=start.isoformat(), end_date=end.isoformat())


def test_check_reports_the_cost_of_the_selected_streams(
    sixty_days: dict[str, t.Any],
) -> None:
    config = sixty_days
    (member, summary) = check_lines(config, every_stream(config))
    assert summary.startswith("tap-whoop: credentials OK")
    assert "skipped:" in member
    assert "recovery_for_cycle (per_cycle_streams is off)" in member
    # profile 1, body 1; pages of 25 over 60 days: cycles 3, recovery (61 days) 3,
    # sleep (1.25 a day) 3, workout 3. A daily run reads lookback_days (3) + 1 days: a page each.
    assert costs(member) == (14, 6)

    config["per_cycle_streams"] = True
    config["cycle_ids"] = [1, 2]
    (member, _) = check_lines(config, every_stream(config))
    answered = member.split("answered: ")[1].split(";")[0].split(", ")
    assert {"cycles", *PER_CYCLE, "cycle_by_id"} <= set(answered)
    # + one request per cycle (61 in 60 days, the current one included) for each per-cycle
    # stream, + one per listed cycle id
    assert costs(member) == (14 + 2 * 61 + 2, 6 + 2 * 5 + 2)

    (member, _) = check_lines(config, {"profile", "cycles"})
    assert costs(member) == (1 + 3, 1 + 1)


def test_check_without_start_date_costs_a_year_of_history(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    (member, _) = check_lines(config, {"profile", "body_measurement", *COLLECTIONS})
    # 365 days: cycles, recovery (366 days) and workout 15 pages each; sleep 19
    assert member.endswith(
        "a full sync costs about 66 requests per year of history; a daily incremental run about 6"
    )


def test_the_estimate_is_close_to_a_real_sync(sandbox: Sandbox, config: dict[str, t.Any]) -> None:
    result = run_tap(config)
    assert result.error is None
    tap = t.cast(TapWhoop, result.tap)
    first = min(parse_time(c["start"]) for c in sandbox.records("alice", "cycle"))
    days = (sandbox.now - first).total_seconds() / 86_400
    selected = [s for s in tap.streams.values() if s.selected]
    estimate = sum(t.cast(t.Any, s).estimated_requests(days) for s in selected)
    assert abs(estimate - sandbox.stats()["requests"]) <= 2


# Records have a stable shape


def test_every_record_has_every_property_of_its_schema(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    for _ in range(96):
        if sandbox.records("alice", "recovery")[0]["score_state"] == "PENDING_SCORE":
            break
        sandbox.advance(minutes=30)
    pending = sandbox.records("alice", "recovery")[0]
    assert pending["score_state"] == "PENDING_SCORE"
    assert "score" not in pending  # WHOOP omits it
    current = next(c for c in sandbox.records("alice", "cycle") if "end" not in c)

    config = tap_config(sandbox, tmp_path, per_cycle_streams=True)
    result = run_tap(config, select=every_stream(config))
    assert result.error is None

    got = next(r for r in result.records("recovery") if r["cycle_id"] == pending["cycle_id"])
    assert got["score"] is None
    assert {k: v for k, v in got.items() if k not in ("score", "_sdc_deleted_at")} == pending
    got = next(r for r in result.records("cycles") if r["id"] == current["id"])
    assert "end" in got
    assert got["end"] is None
    schemas = {m["stream"]: m["schema"] for m in result.messages if m["type"] == "SCHEMA"}
    for stream in ("profile", "body_measurement", *COLLECTIONS, *PER_CYCLE):
        records = result.records(stream)
        assert records, stream
        keys = set(schemas[stream]["properties"])
        assert all(set(record) == keys for record in records), stream
    # what WHOOP sends is kept as it sent it
    for stream, (kind, _) in COLLECTIONS.items():
        sent = {str(r.get("id", r.get("cycle_id"))): r for r in sandbox.records("alice", kind)}
        for record in result.records(stream):
            original = sent[str(record.get("id", record.get("cycle_id")))]
            assert {k: v for k, v in record.items() if k in original} == original, stream
            assert all(record[k] is None for k in set(record) - set(original)), stream


def test_a_stream_map_can_read_score_on_every_record(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    assert any("score" not in r for r in sandbox.records("alice", "sleep"))
    config = tap_config(
        sandbox,
        tmp_path,
        stream_maps={"sleep": {"has_score": "record['score'] is not None"}},
    )
    result = run_tap(config, select={"profile", "sleep"})

    assert result.error is None
    assert {r["has_score"] for r in result.records("sleep")} == {True, False}


# No warning noise


def test_a_healthy_run_logs_no_warning(
    sandbox: Sandbox, config: dict[str, t.Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        result = run_tap(config)

    assert result.error is None
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    unsorted = [r for r in caplog.records if "WHOOP lists records newest first" in r.getMessage()]
    assert sorted(r.getMessage().split(":")[0] for r in unsorted) == sorted(COLLECTIONS)
    assert {r.levelno for r in unsorted} == {logging.DEBUG}
    # the bookmarks are still taken when each stream completes
    user_id = sandbox.member("alice").user_id
    for stream in COLLECTIONS:
        assert result.bookmark(stream, user_id) is not None, stream
    for bookmark in t.cast(dict, result.state)["bookmarks"].values():
        for partition in bookmark.get("partitions", []):
            assert "progress_markers" not in partition
