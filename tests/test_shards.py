"""`member_shard`: n processes with one config share the members, each syncing its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


#: Shards pinned from the implementation (SHA-256 of the key): a new hash moves members.
PINNED_SHARDS = {
    3: {"ana": 1, "ben": 2, "cai": 2, "dee": 2, "eli": 1, "fay": 0},
    4: {f"athlete-{number}": shard for number, shard in enumerate([3, 3, 3, 1, 2, 3, 2, 0])},
}


def _shards_in_a_new_process(hash_seed: str) -> dict[int, dict[str, int]]:
    """`PINNED_SHARDS`' keys' shards, as a new interpreter with `PYTHONHASHSEED` computes them."""
    keys = {count: list(shards) for count, shards in PINNED_SHARDS.items()}
    script = (
        "import json, sys\n"
        "from tap_whoop.settings import shard_of\n"
        "keys = json.loads(sys.argv[1])\n"
        "print(json.dumps({n: {k: shard_of(k, int(n)) for k in ks} for n, ks in keys.items()}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(keys)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return {int(count): shards for count, shards in json.loads(result.stdout).items()}


def test_a_members_shard_is_the_same_in_every_process_and_never_changes() -> None:
    here = {
        count: {key: shard_of(key, count) for key in shards}
        for count, shards in PINNED_SHARDS.items()
    }
    assert here == PINNED_SHARDS
    for seed in ("1", "2"):
        assert _shards_in_a_new_process(seed) == PINNED_SHARDS, f"PYTHONHASHSEED={seed}"


@pytest.mark.parametrize("text", ["4/4", "-1/4", "1/0", "one/two", "1", "", "1/2/3"])
def test_a_shard_that_is_not_i_of_n_is_refused_in_one_line(text: str) -> None:
    assert member_shard(text) is None
    (problem,) = [e for e in settings_errors({"member_shard": text}) if "member_shard" in e]
    assert "0/4" in problem
    assert "\n" not in problem


def test_a_shard_with_no_member_still_gives_the_loader_every_selected_table_before_anything(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """docs/operations.md's first lone shard makes every table: later shards never race."""
    sandbox = start_sandbox(now=PAST, members=MEMBERS, history_days=5)
    users = [{"key": key, "refresh_token": sandbox.seed_refresh_token(key)} for key in MEMBERS]
    empty = next(i for i in range(8) if all(shard_of(key, 8) != i for key in MEMBERS))
    config = tap_config(sandbox, tmp_path, users=users, member_shard=f"{empty}/8")
    selected = {"profile", "body_measurement", "cycles", "recovery", "sleep", "workout"}
    result = run_tap(config, select=selected | {"cycle_by_id"})
    assert result.error is None
    assert not [m for m in result.messages if m["type"] == "RECORD"]
    schemas = [m for m in result.messages if m["type"] == "SCHEMA"]
    assert {m["stream"] for m in schemas} == selected | {"cycle_by_id"}
    first_other = next(i for i, m in enumerate(result.messages) if m["type"] != "SCHEMA")
    assert {m["stream"] for m in result.messages[:first_other]} == selected | {"cycle_by_id"}
    assert all(m["key_properties"] for m in schemas)


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
