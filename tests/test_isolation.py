"""One failure stays one failure: a member who cannot be synced is skipped, the others go on.

The run then fails at the end, naming each skipped member and its fix, so that a scheduler
records the failure while every other member's data and state are delivered.
"""

from __future__ import annotations

import typing as t

from conftest import PAST, members_config, run_tap
from singer_sdk.exceptions import RetriableAPIError

from tap_whoop.errors import MembersFailedError
from tap_whoop.streams.base import FAILING_IN_A_ROW_ENDS_THE_RUN

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from whoop_sandbox import Sandbox


def test_a_member_with_no_refresh_token_is_skipped_and_the_others_are_synced(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST, members=("alice", "bob"))
    config = members_config(sandbox, tmp_path)
    config["users"].append({"key": "carol"})  # listed, not consented yet

    result = run_tap(config)

    assert isinstance(result.error, MembersFailedError)
    message = str(result.error)
    assert "1 of 3 member(s) not fully synced" in message
    assert "users['carol']: no refresh token for member 'carol'" in message
    assert "tap-whoop auth" in message
    synced = {record["user_id"] for record in result.records("workout")}
    assert synced == {member.user_id for member in sandbox.members}
    assert result.state is not None
    assert result.state["bookmarks"]["workout"]["partitions"]


def test_one_members_endpoint_failing_after_every_retry_leaves_the_others_synced(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST, members=("alice", "bob"))
    config = members_config(sandbox, tmp_path, max_request_attempts=2)
    first = run_tap(config)
    assert first.error is None
    bobs = sandbox.records("bob", "workout")[0]["id"]
    sandbox.edit_record("bob", "workout", bobs, {"sport_name": "rowing"})
    # alice's members come first: her two attempts at workouts fail, bob's page is served
    sandbox.inject_fault("/v2/activity/workout", "503", times=2)

    second = run_tap({**config, "reconcile_interval_hours": 0}, state=first.state)

    assert isinstance(second.error, MembersFailedError), second.error
    assert "1 of 2 member(s) not fully synced" in str(second.error)
    assert "member 'alice': stream workout: WHOOP kept failing" in str(second.error)
    rowing = [r for r in second.records("workout") if r["id"] == bobs]
    assert [r["sport_name"] for r in rowing] == ["rowing"]
    alice = sandbox.members[0].user_id
    assert second.bookmark("workout", alice) == first.bookmark("workout", alice)


def test_whoop_failing_every_member_ends_the_run_instead_of_trying_each(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST, members=("alice", "bob", "carol", "dave"))
    config = members_config(sandbox, tmp_path, max_request_attempts=2)
    sandbox.inject_fault("/v2/", "503", times=1_000)  # every endpoint, every member

    result = run_tap(config)

    assert isinstance(result.error, RetriableAPIError)
    assert sandbox.stats()["requests"] == 2 * FAILING_IN_A_ROW_ENDS_THE_RUN  # then it stops
