"""Nothing is done until the warehouse has it: every update and deletion survives a failed target.

The only durable thing is a STATE a target emitted after committing the records before it. A
run whose target failed is rerun from the last committed state (here: the state the failed run
was given), and must deliver everything again; what the tap keeps beside the state (the inbox's
log, the ledger) counts as done only once a later run's incoming state shows it.

Each test runs the tap in-process against the sandbox over real HTTP. A "failed target" is a run
whose output is thrown away: its state is never handed on, exactly as Meltano does when the
loader fails (see tests/test_delivery_e2e.py for the same with Meltano and a loader that dies).
"""

from __future__ import annotations

import copy
import datetime
import logging
import subprocess
import time
import typing as t
import uuid
from pathlib import Path

import pytest
from auth_support import TAP_WHOOP, cli_env, write_json
from conftest import PAST, members_config, run_tap, tap_config

from tap_whoop.run import Run
from tap_whoop.stores.inbox import Event, LedgerRow
from tap_whoop.webhooks.drain import MAX_EVENT_TRIES, WEBHOOKS_KEY

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import SyncResult

    from whoop_sandbox import Sandbox


def publish(sandbox: Sandbox, config: dict[str, t.Any]) -> None:
    """What WHOOP announced since the last call, delivered into the config's inbox."""
    inbox = Run(config).inbox
    for change in sandbox.webhook_log():
        inbox.add(Event(change["user_id"], change["type"], str(change["id"]), change["trace_id"]))
    sandbox.clear_webhook_log()


def live(result: SyncResult, stream: str) -> dict[str, dict[str, t.Any]]:
    return {r["id"]: r for r in result.records(stream) if not r["_sdc_deleted_at"]}


def deleted(result: SyncResult, stream: str) -> list[t.Any]:
    key = "cycle_id" if stream == "recovery" else "id"
    return [r[key] for r in result.records(stream) if r["_sdc_deleted_at"]]


def owed(result: SyncResult) -> list[list[int]]:
    assert result.state is not None
    return t.cast("list[list[int]]", result.state[WEBHOOKS_KEY]["owed"])


def fetched(sandbox: Sandbox) -> str:
    return " ".join(sandbox.stats()["by_path"])


def synced(sandbox: Sandbox, config: dict[str, t.Any]) -> SyncResult:
    first = run_tap(config)
    assert first.error is None, first.error
    sandbox.clear_webhook_log()
    return first


# 1. A target that fails after the tap wrote its records


def test_a_target_that_failed_after_a_drain_gets_every_update_and_deletion_on_the_rerun(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    edited, gone = first.records("workout")[:2]
    sandbox.edit_record("alice", "workout", edited["id"], {"sport_name": "rowing"})
    sandbox.delete_record("alice", "workout", gone["id"])
    publish(sandbox, config)

    lost = run_tap(config, state=first.state)  # the target failed: this state never committed
    assert lost.error is None
    rerun = run_tap(config, state=first.state)

    assert rerun.error is None
    assert live(rerun, "workout")[edited["id"]]["sport_name"] == "rowing"
    assert deleted(rerun, "workout") == [gone["id"]]
    assert gone["id"] in Run(config).inbox.known(sandbox.members[0].user_id, "workout")
    sandbox.reset_stats()
    after = run_tap(config, state=rerun.state)  # the rerun's state was committed
    assert after.error is None
    assert edited["id"] not in fetched(sandbox)
    assert deleted(after, "workout") == []
    assert gone["id"] not in Run(config).inbox.known(sandbox.members[0].user_id, "workout")


def test_a_full_refreshs_deletion_is_found_again_when_its_target_failed(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    gone = first.records("sleep")[-1]  # the oldest, outside any incremental window
    sandbox.delete_record("alice", "sleep", gone["id"])

    lost = run_tap(config)  # full refresh; the target failed
    assert deleted(lost, "sleep") == [gone["id"]]
    rerun = run_tap(config)

    assert deleted(rerun, "sleep") == [gone["id"]]


# 2. A notice that arrives while its record is being passed on


def test_a_notice_arriving_while_its_record_is_fetched_is_passed_on_by_the_next_run(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    workout = first.records("workout")[0]
    sandbox.edit_record("alice", "workout", workout["id"], {"sport_name": "rowing"})
    publish(sandbox, config)

    def edited_again() -> None:  # once the first version is on its way to the tap
        sandbox.edit_record("alice", "workout", workout["id"], {"sport_name": "cycling"})
        publish(sandbox, config)

    sandbox.after_answering(f"/v2/activity/workout/{workout['id']}", edited_again)
    second = run_tap(config, state=first.state)
    assert live(second, "workout")[workout["id"]]["sport_name"] == "rowing"
    third = run_tap(config, state=second.state)

    assert third.error is None
    assert live(third, "workout")[workout["id"]]["sport_name"] == "cycling"


# 3. Two pipelines, two token stores


def test_two_pipelines_with_their_own_states_each_receive_every_change(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """As `meltano run tap-whoop target-postgres` then `tap-whoop target-jsonl` in one project:
    one token store and inbox, two state ids."""
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    to_postgres = synced(sandbox, config)
    to_jsonl = synced(sandbox, config)
    edited, gone = to_postgres.records("workout")[:2]
    sandbox.advance(days=1)  # a new night, a new workout
    sandbox.edit_record("alice", "workout", edited["id"], {"sport_name": "rowing"})
    sandbox.delete_record("alice", "workout", gone["id"])
    new = {
        r["id"]
        for r in sandbox.records("alice", "workout")
        if r["id"] not in live(to_postgres, "workout")
    }
    assert new
    publish(sandbox, config)

    for first in (to_postgres, to_jsonl):
        second = run_tap(config, state=first.state)
        assert second.error is None
        workouts = live(second, "workout")
        assert new <= set(workouts)
        assert workouts[edited["id"]]["sport_name"] == "rowing"
        assert deleted(second, "workout") == [gone["id"]]


def test_two_token_stores_in_one_folder_keep_their_events_apart(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    mine = tap_config(sandbox, tmp_path, token_store_path=str(tmp_path / "store" / "mine.json"))
    theirs = tap_config(sandbox, tmp_path, token_store_path=str(tmp_path / "store" / "theirs.json"))
    assert Run(mine).inbox.path != Run(theirs).inbox.path
    first = synced(sandbox, theirs)
    workout = first.records("workout")[0]
    sandbox.edit_record("alice", "workout", workout["id"], {"sport_name": "rowing"})
    publish(sandbox, mine)

    theirs_run = run_tap(theirs, state=first.state)

    assert theirs_run.error is None
    assert Run(mine).inbox.after(0), "mine still has its event"
    assert Run(theirs).inbox.after(0) == []


# 4. Deletions only on strong evidence


def _claim_in_window(result: SyncResult, user_id: int, record_id: str) -> dict[str, t.Any]:
    """The state as if the last run had seen `record_id` in the workout window: this run, not
    finding it listed, looks it up by id."""
    assert result.state is not None
    state = copy.deepcopy(result.state)
    for partition in state["bookmarks"]["workout"]["partitions"]:
        if partition["context"] == {"user_id": user_id}:
            window = partition["window_ids"]
            window.append([record_id, window[0][1]])
    return state


def test_a_gateways_html_404_never_marks_a_record_deleted(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path, max_request_attempts=2)
    first = synced(sandbox, config)
    user_id = sandbox.members[0].user_id
    vanished = str(uuid.uuid4())
    state = _claim_in_window(first, user_id, vanished)
    sandbox.inject_fault(f"/v2/activity/workout/{vanished}", "gateway_404", times=100)

    behind_a_gateway = run_tap(config, state=state)

    assert behind_a_gateway.error is None
    assert deleted(behind_a_gateway, "workout") == []
    sandbox.clear_faults()
    again = run_tap(config, state=behind_a_gateway.state)  # still unsettled: looked up again
    assert deleted(again, "workout") == [vanished]


def test_a_live_record_that_answers_one_404_is_not_marked_deleted(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path, lookback_days=1)
    first = synced(sandbox, config)
    user_id = sandbox.members[0].user_id
    old = first.records("workout")[-1]  # alive, but outside the next window
    state = _claim_in_window(first, user_id, old["id"])
    sandbox.inject_fault(f"/v2/activity/workout/{old['id']}", "404", times=1)
    sandbox.reset_stats()

    second = run_tap(config, state=state)

    assert second.error is None
    assert deleted(second, "workout") == []
    assert old["id"] in live(second, "workout")
    assert sandbox.stats()["by_path"][f"/v2/activity/workout/{old['id']}"] == 2  # two looks


def test_an_updated_event_whose_record_answers_404_is_owed_never_a_deletion(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    workout = first.records("workout")[0]
    sandbox.edit_record("alice", "workout", workout["id"], {"sport_name": "rowing"})
    publish(sandbox, config)
    sandbox.inject_fault(f"/v2/activity/workout/{workout['id']}", "404", times=1)
    sandbox.reset_stats()

    second = run_tap(config, state=first.state)

    assert second.error is None
    assert deleted(second, "workout") == []
    assert [tries for _, tries, _ in owed(second)] == [1]
    assert sandbox.stats()["by_path"].get("/v2/activity/workout"), "the member is read in full"
    third = run_tap(config, state=second.state)
    assert live(third, "workout")[workout["id"]]["sport_name"] == "rowing"
    assert owed(third) == []


def test_a_late_recovery_deleted_for_a_cycles_previous_sleep_keeps_its_current_recovery(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    user_id = sandbox.members[0].user_id
    recovery = first.records("recovery")[0]
    previous_sleep = str(uuid.uuid4())  # the cycle's sleep before WHOOP re-scored it
    inbox = Run(config).inbox
    inbox.remember(
        user_id,
        "sleep",
        [LedgerRow(previous_sleep, recovery["created_at"], None, recovery["cycle_id"])],
    )
    inbox.add(Event(user_id, "recovery.deleted", previous_sleep, "late"))

    second = run_tap(config, state=first.state)

    assert second.error is None
    assert deleted(second, "recovery") == []
    assert inbox.sleep_of_recovery(user_id, recovery["cycle_id"]) == recovery["sleep_id"]


# 5. No poison events


@pytest.mark.parametrize("fault", ["400", "500"])
def test_an_event_that_keeps_failing_is_retried_then_set_aside_and_never_stops_the_others(
    start_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    sandbox = start_sandbox(now=PAST, members=("alice", "bob"))
    config = members_config(sandbox, tmp_path, max_request_attempts=1)  # no backoff waits
    first = synced(sandbox, config)
    alice, bob = sandbox.members
    poisoned = str(uuid.uuid4())
    inbox = Run(config).inbox
    inbox.add(Event(alice.user_id, "workout.updated", poisoned, "poison"))
    sandbox.inject_fault(f"/v2/activity/workout/{poisoned}", fault, times=100)
    bobs = live(first, "workout")
    bobs_workout = next(w for w in bobs.values() if w["user_id"] == bob.user_id)
    sandbox.edit_record("bob", "workout", bobs_workout["id"], {"sport_name": "rowing"})
    publish(sandbox, config)

    runs = [run_tap(config, state=first.state)]
    assert runs[0].error is None
    assert live(runs[0], "workout")[bobs_workout["id"]]["sport_name"] == "rowing"
    while owed(runs[-1]):
        assert len(runs) <= MAX_EVENT_TRIES
        runs.append(run_tap(config, state=runs[-1].state))
        assert runs[-1].error is None

    assert len(runs) == MAX_EVENT_TRIES
    [aside] = inbox.set_aside_events()
    assert (aside.event.record_id, aside.tries) == (poisoned, MAX_EVENT_TRIES)
    assert fault in aside.reason
    [warning] = [m for m in caplog.messages if "set aside after" in m]
    assert (
        f"member 'alice': workout.updated {poisoned} set aside after {MAX_EVENT_TRIES} tries"
        in warning
    )
    retried = inbox.release(aside.event.seq, retry=True)
    assert retried is not None
    sandbox.reset_stats()
    again = run_tap(config, state=runs[-1].state)
    assert again.error is None
    assert poisoned in fetched(sandbox)


def test_a_pipeline_whose_position_was_pruned_reads_every_member_in_full(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    inbox = Run(config).inbox
    week_ago = time.time() - datetime.timedelta(days=8).total_seconds()
    user_id = sandbox.members[0].user_id
    workout = first.records("workout")[0]
    inbox.add(Event(user_id, "workout.updated", workout["id"], "old", received_at=week_ago))
    noticed = run_tap(config, state=first.state)  # reads the position that is now behind
    assert noticed.error is None
    inbox.add(Event(user_id, "workout.updated", workout["id"], "older", received_at=week_ago))
    inbox.add(Event(user_id, "sleep.updated", first.records("sleep")[0]["id"], "fresh"))
    sandbox.reset_stats()

    behind = run_tap(config, state=noticed.state)

    assert behind.error is None
    assert sandbox.stats()["by_path"].get("/v2/activity/workout"), "read in full, not rested"
    assert any("were pruned" in message for message in caplog.messages)


def test_a_shorter_webhook_retention_prunes_sooner_and_a_pipeline_behind_it_reads_in_full(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path, webhook_retention_days=1)  # the minimum
    first = synced(sandbox, config)
    inbox = Run(config).inbox
    two_days_ago = time.time() - datetime.timedelta(days=2).total_seconds()  # kept by default
    user_id = sandbox.members[0].user_id
    workout = first.records("workout")[0]
    inbox.add(Event(user_id, "workout.updated", workout["id"], "old", received_at=two_days_ago))
    noticed = run_tap(config, state=first.state)
    assert noticed.error is None, noticed.error
    inbox.add(Event(user_id, "workout.updated", workout["id"], "older", received_at=two_days_ago))
    inbox.add(Event(user_id, "sleep.updated", first.records("sleep")[0]["id"], "fresh"))
    sandbox.reset_stats()

    behind = run_tap(config, state=noticed.state)

    assert behind.error is None, behind.error
    assert [e.trace_id for e in inbox.after(0)] == ["fresh"]
    assert sandbox.stats()["by_path"].get("/v2/activity/workout"), "read in full, not rested"
    [warning] = [m for m in caplog.messages if "were pruned" in m]
    assert "older than webhook_retention_days" in warning
    assert "every member is read in full" in warning


def test_another_users_refresh_token_pasted_into_the_config_is_refused_with_nothing_marked(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST, members=("alice", "bob"))
    config = tap_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    alice, bob = sandbox.members
    pasted = {**config, "refresh_token": sandbox.seed_refresh_token("bob")}

    mixed_up = run_tap(pasted, state=first.state)

    assert mixed_up.error is not None
    message = str(mixed_up.error)
    assert f"WHOOP user {bob.user_id}'s" in message
    assert f"as user {alice.user_id}" in message
    for stream in ("cycles", "recovery", "sleep", "workout"):
        assert deleted(mixed_up, stream) == []
        assert not [r for r in mixed_up.records(stream) if r["user_id"] == bob.user_id]
    again = run_tap(pasted, state=first.state)  # refused again, not taken as alice's now
    assert again.error is not None
    assert f"WHOOP user {bob.user_id}'s" in str(again.error)
    assert deleted(again, "workout") == []


def test_a_full_refresh_split_over_runs_by_the_budget_compares_every_part_with_the_ledger(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST, history_days=200)  # 8 pages of workouts
    config = tap_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    oldest = first.records("workout")[-1]
    sandbox.delete_record("alice", "workout", oldest["id"])
    capped = {**config, "max_requests_per_run": 7}

    runs = [run_tap(capped)]  # a full refresh: no state
    while _history_left(runs[-1]):
        assert runs[-1].error is None, runs[-1].error
        assert len(runs) < 20
        runs.append(run_tap(capped, state=runs[-1].state))

    workout_walks = [run for run in runs if run.records("workout")]
    assert len(workout_walks) > 1, "the budget split the workouts' history"
    assert [key for run in runs for key in deleted(run, "workout")] == [oldest["id"]]
    found = {key for run in runs for key in live(run, "workout")}
    assert found == {w["id"] for w in sandbox.records("alice", "workout")}


def _history_left(result: SyncResult) -> bool:
    """Whether a collection has no bookmark yet, or history a budget stopped."""
    assert result.state is not None
    bookmarks = result.state["bookmarks"]
    return any(
        not partition.get("replication_key_value") or partition.get("backfill_end")
        for stream in ("cycles", "recovery", "sleep", "workout")
        for partition in bookmarks.get(stream, {}).get("partitions", [{}])
    )


def test_a_full_refresh_without_its_ledger_says_what_it_cannot_find_and_how_to_rebuild(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    synced(sandbox, config)
    inbox = Run(config).file_stores.inbox_path
    for file in inbox.parent.glob(inbox.name + "*"):
        file.unlink()

    full = run_tap(config)

    assert full.error is None
    [warning] = [r.getMessage() for r in caplog.records if "ledger" in r.getMessage()]
    assert "missing or was reset" in warning
    assert "cannot find records WHOOP deleted outside the incremental window" in warning
    assert "run a full refresh again" in warning
    caplog.clear()
    assert run_tap(config).error is None  # rebuilt: the next full refresh compares, silently
    assert not [r for r in caplog.records if "ledger" in r.getMessage()]


def test_a_damaged_inbox_file_is_one_line_saying_how_to_start_over(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    synced(sandbox, config)
    inbox = Run(config).file_stores.inbox_path
    for file in inbox.parent.glob(inbox.name + "*"):
        file.unlink()
    inbox.write_bytes(b"not a database, whatever a disk did to it " * 200)
    config_file = write_json(tmp_path / "config.json", config)

    damaged = subprocess.run(
        [*TAP_WHOOP, "--config", str(config_file)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )

    assert damaged.returncode != 0
    assert "Traceback" not in damaged.stderr
    [line] = [line for line in damaged.stderr.splitlines() if "is damaged" in line]
    assert str(inbox) in line
    assert "move it aside and run again" in line
    assert "full refresh" in line
    inbox.rename(inbox.with_suffix(".damaged"))
    assert run_tap(config).error is None  # moved aside, as the line says: the runs go on


@pytest.mark.parametrize("fault", ["403", "gateway_403"])  # WHOOP's JSON 403, a proxy's HTML
def test_a_403_while_confirming_one_members_deletion_fails_that_member_alone(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, fault: str
) -> None:
    sandbox = start_sandbox(now=PAST, members=("alice", "bob"))
    config = members_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    alice, bob = sandbox.members
    vanished = str(uuid.uuid4())
    state = _claim_in_window(first, alice.user_id, vanished)
    sandbox.inject_fault(f"/v2/activity/workout/{vanished}", fault, times=10)
    sandbox.edit_record(
        "bob", "workout", sandbox.records("bob", "workout")[0]["id"], {"sport_name": "rowing"}
    )

    second = run_tap({**config, "reconcile_interval_hours": 0}, state=state)

    assert second.error is not None
    assert "1 of 2 member(s) not fully synced" in str(second.error)
    assert "member 'alice'" in str(second.error)
    assert "\n" not in str(second.error)
    assert "<" not in str(second.error), "no HTML page in the line"
    if fault == "gateway_403":
        assert "with a page that is not WHOOP's JSON (text/html)" in str(second.error)
    assert "rowing" in {
        r["sport_name"] for r in second.records("workout") if r["user_id"] == bob.user_id
    }
    assert deleted(second, "workout") == []
    assert second.state is not None
    for partition in second.state["bookmarks"]["workout"]["partitions"]:
        if partition["context"] == {"user_id": alice.user_id}:
            assert vanished in {pair[0] for pair in partition["window_ids"]}


def test_events_of_a_member_removed_from_the_config_are_warned_about_owed_then_set_aside(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = start_sandbox(now=PAST, members=("alice", "bob"))
    config = members_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    alice = sandbox.members[0]
    without_alice = members_config(sandbox, tmp_path, keys=["bob"])
    alices = sandbox.records("alice", "workout")[0]["id"]
    bobs = sandbox.records("bob", "workout")[0]["id"]
    sandbox.edit_record("alice", "workout", alices, {"sport_name": "rowing"})
    sandbox.edit_record("bob", "workout", bobs, {"sport_name": "rowing"})
    publish(sandbox, config)  # alice's entry stays in the token store: her events keep coming
    inbox = Run(config).inbox

    runs = [run_tap(without_alice, state=first.state)]
    assert runs[0].error is None, runs[0].error
    assert live(runs[0], "workout")[bobs]["sport_name"] == "rowing"
    assert [user_id for _, _, user_id in owed(runs[0])] == [alice.user_id]
    [warning] = [m for m in caplog.messages if f"WHOOP user {alice.user_id}" in m]
    assert f"1 event(s) owed, try 1 of {MAX_EVENT_TRIES}" in warning
    assert "(member 'alice' in the token store, not in `users`)" in warning
    assert "add the member back to `users`" in warning
    assert "`tap-whoop revoke --member alice`" in warning
    while owed(runs[-1]):
        assert len(runs) < MAX_EVENT_TRIES
        runs.append(run_tap(without_alice, state=runs[-1].state))
        assert runs[-1].error is None, runs[-1].error

    assert len(runs) == MAX_EVENT_TRIES
    assert not [r for run in runs for r in run.records("workout") if r["user_id"] == alice.user_id]
    [aside] = inbox.set_aside_events()
    assert (aside.event.user_id, aside.event.record_id) == (alice.user_id, alices)
    assert aside.tries == MAX_EVENT_TRIES
    assert f"no configured member is WHOOP user {alice.user_id}" in aside.reason
    [last] = [m for m in caplog.messages if "set aside after" in m]
    assert f"set aside after {MAX_EVENT_TRIES} tries (seq {aside.event.seq})" in last
    assert f"no configured member is WHOOP user {alice.user_id}" in last
    assert "`tap-whoop set-aside --retry SEQ`" in last
    assert "`tap-whoop set-aside --drop SEQ`" in last


def test_an_event_of_a_member_another_shard_syncs_is_left_to_that_shards_pipeline(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = start_sandbox(now=PAST, members=("alice", "bob"))  # shards of 2: bob 0, alice 1
    config = members_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    alice = sandbox.members[0]
    alices = sandbox.records("alice", "workout")[0]["id"]
    bobs = sandbox.records("bob", "workout")[0]["id"]
    sandbox.edit_record("alice", "workout", alices, {"sport_name": "rowing"})
    sandbox.edit_record("bob", "workout", bobs, {"sport_name": "rowing"})
    publish(sandbox, config)
    bobs_shard = {**config, "member_shard": "0/2"}

    runs = [run_tap(bobs_shard, state=first.state)]
    for _ in range(MAX_EVENT_TRIES):
        runs.append(run_tap(bobs_shard, state=runs[-1].state))
        assert runs[-1].error is None, runs[-1].error

    assert live(runs[0], "workout")[bobs]["sport_name"] == "rowing"
    assert all(owed(run) == [] for run in runs)
    assert Run(config).inbox.set_aside_events() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in warnings if str(alice.user_id) in m]
    alices_shard = run_tap({**config, "member_shard": "1/2"}, state=first.state)
    assert alices_shard.error is None, alices_shard.error
    assert live(alices_shard, "workout")[alices]["sport_name"] == "rowing"


def test_an_event_of_a_member_whose_token_is_new_to_the_store_waits_for_its_profile(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = start_sandbox(now=PAST, members=("alice", "bob"))
    config = members_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    alice = sandbox.members[0]
    alices = sandbox.records("alice", "workout")[0]["id"]
    sandbox.edit_record("alice", "workout", alices, {"sport_name": "rowing"})
    publish(sandbox, config)
    pasted = copy.deepcopy(config)  # a new refresh token: whose it is, the profile says
    pasted["users"][0]["refresh_token"] = sandbox.issue_refresh_token("alice")

    unsure = run_tap(pasted, state=first.state)

    assert unsure.error is None, unsure.error
    assert [[tries, user_id] for _, tries, user_id in owed(unsure)] == [[0, alice.user_id]]
    assert not [m for m in caplog.messages if "no configured member" in m]
    sure = run_tap(pasted, state=unsure.state)
    assert live(sure, "workout")[alices]["sport_name"] == "rowing"
    assert owed(sure) == []


def test_several_notices_for_one_record_cost_one_request_and_are_all_passed_on(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    first = synced(sandbox, config)
    workout = first.records("workout")[-1]["id"]  # the oldest: no collection read has it
    for sport in ("rowing", "cycling", "running"):
        sandbox.edit_record("alice", "workout", workout, {"sport_name": sport})
    publish(sandbox, config)
    notices = Run(config).inbox.after(0)
    assert [(e.type, e.record_id) for e in notices] == [("workout.updated", workout)] * 3
    sandbox.reset_stats()

    second = run_tap(config, state=first.state)

    assert second.error is None, second.error
    assert sandbox.stats()["by_path"][f"/v2/activity/workout/{workout}"] == 1
    assert [r["sport_name"] for r in second.records("workout") if r["id"] == workout] == ["running"]
    assert second.state is not None
    assert second.state[WEBHOOKS_KEY]["position"] == max(e.seq for e in notices)
    assert owed(second) == []
