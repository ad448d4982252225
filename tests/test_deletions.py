"""Deletions reach every target, and webhook events are passed on by the next run.

Three ways: webhook events read from the inbox's log after the pipeline's position, the
reconciliation of each incremental window against what the last run saw there, and a full
refresh against the ledger. Nothing counts as done until a later run's incoming state shows
that a target committed it.
"""

from __future__ import annotations

import copy
import typing as t
import uuid
from pathlib import Path

import pytest
from conftest import COLLECTIONS, PAST, run_tap, tap_config
from jsonschema import Draft7Validator

from tap_whoop.stores.inbox import Event, LedgerRow
from tap_whoop.stores.sql_inbox import SqliteInbox
from tap_whoop.tap import TapWhoop
from tap_whoop.webhooks.drain import WEBHOOKS_KEY

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from tap_whoop.streams.base import CollectionStream
    from whoop_sandbox import Sandbox


def _inbox(config: dict[str, t.Any]) -> SqliteInbox:
    return SqliteInbox(Path(config["token_store_path"]).parent / "inbox.sqlite")


def _deleted(records: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    return [record for record in records if record.get("_sdc_deleted_at")]


def _partition(state: dict[str, t.Any], stream: str, user_id: int) -> dict[str, t.Any]:
    for partition in state["bookmarks"][stream]["partitions"]:
        if partition["context"] == {"user_id": user_id}:
            return t.cast("dict[str, t.Any]", partition)
    raise LookupError(stream)


def _webhooks(state: dict[str, t.Any] | None) -> dict[str, t.Any]:
    """The pipeline's position in the inbox's log, as its state carries it."""
    assert state is not None
    return t.cast("dict[str, t.Any]", state[WEBHOOKS_KEY])


def _user_id(sandbox: Sandbox) -> int:
    return sandbox.members[0].user_id


def test_a_live_record_carries_a_null_deletion_mark(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    result = run_tap(tap_config(sandbox, tmp_path))
    assert result.error is None
    for stream in ("cycles", "recovery", "sleep", "workout"):
        records = result.records(stream)
        assert records
        assert all(record["_sdc_deleted_at"] is None for record in records)


def test_the_state_keeps_only_the_window_the_next_run_rereads(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST, history_days=400)
    result = run_tap(tap_config(sandbox, tmp_path, lookback_days=3))
    assert result.error is None
    assert result.state is not None
    sleep = _partition(result.state, "sleep", _user_id(sandbox))
    assert len(result.records("sleep")) > 400
    assert 0 < len(sleep["window_ids"]) <= 12  # about four days of sleeps and naps, not history


def test_a_record_the_last_run_saw_in_the_window_and_whoop_no_longer_has_is_deleted(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = run_tap(config)
    assert first.error is None
    assert first.state is not None
    state = copy.deepcopy(first.state)
    workouts = _partition(state, "workout", _user_id(sandbox))
    kept = workouts["window_ids"]
    assert kept, "the window holds workouts"
    vanished = str(uuid.uuid4())
    workouts["window_ids"] = [*kept, [vanished, kept[0][1]]]

    second = run_tap(config, state=state)

    assert second.error is None
    deleted = _deleted(second.records("workout"))
    assert [record["id"] for record in deleted] == [vanished]
    assert deleted[0]["user_id"] == _user_id(sandbox)
    live = [r["id"] for r in second.records("workout") if not r["_sdc_deleted_at"]]
    assert {row[0] for row in kept} <= set(live)


def test_a_full_refresh_marks_deleted_what_the_ledger_holds_and_whoop_no_longer_has(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    assert run_tap(config).error is None

    vanished = str(uuid.uuid4())
    _inbox(config).remember(
        _user_id(sandbox), "sleep", [LedgerRow(vanished, "2020-01-01T00:00:00.000Z")]
    )

    again = run_tap(config)  # no state: a full refresh

    assert again.error is None
    assert [record["id"] for record in _deleted(again.records("sleep"))] == [vanished]
    # kept until a later run's incoming state shows a target committed the deletion
    assert vanished in _inbox(config).known(_user_id(sandbox), "sleep")
    target_failed = run_tap(config)  # rerun from the last committed state: none
    assert [record["id"] for record in _deleted(target_failed.records("sleep"))] == [vanished]
    committed = run_tap(config, state=again.state)
    assert committed.error is None
    assert vanished not in _inbox(config).known(_user_id(sandbox), "sleep")


def test_webhook_events_are_passed_on_by_the_next_run_without_moving_bookmarks(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = run_tap(config)
    assert first.error is None
    user_id = _user_id(sandbox)
    sleep = first.records("sleep")[0]
    workout = first.records("workout")[0]
    inbox = _inbox(config)
    inbox.add(Event(user_id, "sleep.updated", sleep["id"], "t1"))
    inbox.add(Event(user_id, "workout.deleted", workout["id"], "t2"))
    inbox.add(Event(user_id, "recovery.deleted", sleep["id"], "t3"))

    second = run_tap(config, state=first.state)

    assert second.error is None
    assert sleep["id"] in {r["id"] for r in second.records("sleep") if not r["_sdc_deleted_at"]}
    assert [r["id"] for r in _deleted(second.records("workout"))] == [workout["id"]]
    assert [r["cycle_id"] for r in _deleted(second.records("recovery"))] == [sleep["cycle_id"]]
    assert _webhooks(second.state)["owed"] == []
    assert _webhooks(second.state)["position"] == max(e.seq for e in inbox.after(0))
    for stream in ("sleep", "workout", "recovery"):
        assert second.bookmark(stream, user_id) == first.bookmark(stream, user_id)
    assert second.state is not None
    window = _partition(second.state, "workout", user_id)["window_ids"]
    assert workout["id"] not in {record_id for record_id, _ in window}  # not confirmed twice


def test_an_event_whose_record_keeps_failing_stays_owed_and_the_run_goes_on(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path, max_request_attempts=2)
    first = run_tap(config)
    assert first.error is None
    user_id = _user_id(sandbox)
    workout, sleep = first.records("workout")[0], first.records("sleep")[0]
    inbox = _inbox(config)
    inbox.add(Event(user_id, "workout.updated", workout["id"], "t1"))
    inbox.add(Event(user_id, "sleep.updated", sleep["id"], "t2"))
    sandbox.inject_fault(f"/v2/activity/workout/{workout['id']}", "500", times=2)

    failed = run_tap(config, state=first.state)

    assert failed.error is None
    assert sleep["id"] in {r["id"] for r in failed.records("sleep")}
    owed = _webhooks(failed.state)["owed"]
    assert [(seq, tries) for seq, tries, _ in owed] == [(inbox.after(0)[0].seq, 1)]
    again = run_tap(config, state=failed.state)
    assert again.error is None
    assert workout["id"] in {r["id"] for r in again.records("workout")}
    assert _webhooks(again.state)["owed"] == []


def test_while_webhooks_arrive_a_member_read_within_the_interval_rests(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = run_tap(config)
    assert first.error is None
    user_id = _user_id(sandbox)
    sleep = first.records("sleep")[0]
    _inbox(config).add(Event(user_id, "sleep.updated", sleep["id"], "t1"))
    sandbox.reset_stats()

    second = run_tap(config, state=first.state)

    assert second.error is None
    paths = sandbox.stats()["by_path"]
    assert set(paths) == {f"/v2/activity/sleep/{sleep['id']}"}, paths
    assert second.records("profile") == []
    assert [r["id"] for r in second.records("sleep")] == [sleep["id"]]

    sandbox.reset_stats()
    every_run = run_tap({**config, "reconcile_interval_hours": 0}, state=second.state)
    assert every_run.error is None
    read = sandbox.stats()["by_path"]
    assert all(read.get(path) for _, path in COLLECTIONS.values()), read


def _events_of(changes: list[dict[str, t.Any]]) -> list[Event]:
    return [Event(c["user_id"], c["type"], str(c["id"]), c["trace_id"]) for c in changes]


def test_a_deleted_sleeps_recovery_is_marked_by_its_cycle_though_the_sleep_is_gone(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = run_tap(config)
    assert first.error is None
    main = next(s for s in first.records("sleep") if not s["nap"])
    changes = sandbox.delete_record("alice", "sleep", main["id"])
    assert {c["type"] for c in changes} == {"sleep.deleted", "recovery.deleted"}
    inbox = _inbox(config)
    for event in _events_of(changes):
        inbox.add(event)

    second = run_tap(config, state=first.state)

    assert second.error is None
    assert [r["id"] for r in _deleted(second.records("sleep"))] == [main["id"]]
    assert [r["cycle_id"] for r in _deleted(second.records("recovery"))] == [main["cycle_id"]]


def test_deletions_whoop_never_announced_are_found_in_the_window_and_by_a_full_refresh(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST, history_days=30)
    config = tap_config(sandbox, tmp_path, lookback_days=3)
    first = run_tap(config)
    assert first.error is None
    workouts = first.records("workout")  # newest first
    recent, old = workouts[0], workouts[-1]
    sandbox.delete_record("alice", "workout", recent["id"])
    sandbox.delete_record("alice", "workout", old["id"])

    incremental = run_tap(config, state=first.state)
    assert incremental.error is None
    assert [r["id"] for r in _deleted(incremental.records("workout"))] == [recent["id"]]

    full = run_tap(config)  # no state: the incremental run's deletion is not known committed
    assert full.error is None
    assert {r["id"] for r in _deleted(full.records("workout"))} == {old["id"], recent["id"]}
    live = {r["id"] for r in full.records("workout") if not r["_sdc_deleted_at"]}
    assert live == {w["id"] for w in sandbox.records("alice", "workout")}


@pytest.mark.parametrize("stream", ["cycles", "recovery", "sleep", "workout"])
def test_a_deletion_record_passes_its_streams_schema_as_targets_validate_it(
    stream: str, config: dict[str, t.Any]
) -> None:
    tap = TapWhoop(config=config, validate_config=False)
    collection = t.cast("CollectionStream", tap.streams[stream])
    record = collection.deletion_record(
        10129, "1" if stream in ("cycles", "recovery") else str(uuid.uuid4())
    )
    validator = Draft7Validator(collection.schema, format_checker=Draft7Validator.FORMAT_CHECKER)
    assert [error.message for error in validator.iter_errors(record)] == []
    assert record["_sdc_deleted_at"] is not None


def test_a_new_nights_sleep_brings_its_new_cycle_with_one_page_of_cycles(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = run_tap(config)
    assert first.error is None
    known_cycles = {c["id"] for c in first.records("cycles")}
    sandbox.clear_webhook_log()
    sandbox.advance(days=2)  # the first run saw tonight's cycle open; the next night's is new
    inbox = _inbox(config)
    for event in _events_of(sandbox.webhook_log()):
        inbox.add(event)
    sandbox.reset_stats()

    second = run_tap(config, state=first.state)

    assert second.error is None
    paths = sandbox.stats()["by_path"]
    assert paths["/v2/cycle"] == 1, paths
    assert not {"/v2/activity/sleep", "/v2/activity/workout", "/v2/recovery"} & set(paths)
    new_cycles = {c["id"] for c in second.records("cycles")} - known_cycles
    assert new_cycles, "the cycle the night's sleep opened"
    nights = [s for s in second.records("sleep") if not s["nap"]]
    newest = max(nights, key=lambda sleep: sleep["start"])
    assert newest["cycle_id"] in new_cycles
