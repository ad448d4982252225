"""One failure stays one failure: a member who cannot be synced is skipped, the others go on.

The run then fails at the end, naming each skipped member and its fix, so that a scheduler
records the failure while every other member's data and state are delivered.
"""

from __future__ import annotations

import typing as t

from conftest import PAST, members_config, run_tap

from tap_whoop.errors import MembersFailedError

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
