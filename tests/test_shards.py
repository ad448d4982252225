"""`member_shard`: n processes with one config share the members, each syncing its own."""

from __future__ import annotations

import typing as t

import pytest
from conftest import PAST, run_tap, tap_config

from tap_whoop.settings import member_shard, settings_errors, shard_of

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from whoop_sandbox import Sandbox

MEMBERS = ("ana", "ben", "cai", "dee", "eli", "fay")


def test_shards_split_the_members_into_disjoint_parts_that_cover_them_all() -> None:
    keys = [f"athlete-{number}" for number in range(1000)]
    parts = [{key for key in keys if shard_of(key, 4) == index} for index in range(4)]
    assert set().union(*parts) == set(keys)
    assert sum(len(part) for part in parts) == len(keys)
    assert all(200 <= len(part) <= 300 for part in parts), [len(part) for part in parts]


def test_a_members_shard_is_the_same_in_every_process() -> None:
    assert shard_of("athlete-7", 4) == shard_of("athlete-7", 4)
    assert [shard_of(key, 3) for key in MEMBERS] == [shard_of(key, 3) for key in MEMBERS]


@pytest.mark.parametrize("text", ["4/4", "-1/4", "1/0", "one/two", "1", "", "1/2/3"])
def test_a_shard_that_is_not_i_of_n_is_refused_in_one_line(text: str) -> None:
    assert member_shard(text) is None
    (problem,) = [e for e in settings_errors({"member_shard": text}) if "member_shard" in e]
    assert "0/4" in problem
    assert "\n" not in problem


def test_each_shard_syncs_only_its_members_and_its_state_holds_only_theirs(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST, members=MEMBERS, history_days=5)
    users = [{"key": key, "refresh_token": sandbox.seed_refresh_token(key)} for key in MEMBERS]
    synced: list[set[int]] = []
    for index in range(2):
        config = tap_config(sandbox, tmp_path, users=users, member_shard=f"{index}/2")
        result = run_tap(config)
        assert result.error is None
        profiles = {record["user_id"] for record in result.records("profile")}
        mine = {m.user_id for m in sandbox.members if shard_of(m.key, 2) == index}
        assert profiles == mine
        assert result.state is not None
        partitions = result.state["bookmarks"]["sleep"]["partitions"]
        assert {p["context"]["user_id"] for p in partitions} == mine
        synced.append(profiles)
    assert synced[0].isdisjoint(synced[1])
    assert synced[0] | synced[1] == {m.user_id for m in sandbox.members}
