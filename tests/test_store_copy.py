"""`tap-whoop store copy`: from the files to PostgreSQL in one command, spending no token.

Members are copied as they are; one the database already has is decided by token lineage
(which token was rotated from which), never by clocks; unrelated tokens are refused unless
--overwrite. The files are then marked as moved, so nothing still using them spends a token the
database holds.
"""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest

from tap_whoop.errors import TokenStoreError
from tap_whoop.run import Run
from tap_whoop.stores.inbox import Event
from tap_whoop.stores.sql_inbox import SqliteInbox
from tap_whoop.webhooks.drain import WEBHOOKS_KEY
from tests.auth_support import (
    catalog_file,
    error_line,
    refresh_directly,
    run_cli,
    store_path,
    write_json,
)
from tests.conftest import run_tap, tap_config
from tests.test_store_support import Backend, postgres_server, query, store_url

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from whoop_sandbox import Sandbox

__all__ = ["postgres_server", "store_url"]  # fixtures

PROFILE = {"profile"}


@pytest.fixture
def two_members(start_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return start_sandbox(members=("alice", "bob"), history_days=5)


@pytest.fixture
def files_config(two_members: Sandbox, tmp_path: Path) -> dict[str, t.Any]:
    """Members a and b, synced with the token store and inbox files (an event pending)."""
    sandbox = two_members
    config = tap_config(
        sandbox,
        tmp_path,
        users=[
            {"key": "a", "refresh_token": sandbox.seed_refresh_token("alice")},
            {"key": "b", "refresh_token": sandbox.seed_refresh_token("bob")},
        ],
    )
    del config["refresh_token"]
    result = run_tap(config)
    assert result.error is None, result.error
    inbox = SqliteInbox(store_path(config).parent / "inbox.sqlite")
    alice = sandbox.members[0].user_id
    sleep = next(r for r in result.records("sleep") if r["user_id"] == alice)
    inbox.add(Event(alice, "sleep.updated", sleep["id"], "trace-1"))
    inbox.close()
    return config


def file_members(config: dict[str, t.Any]) -> dict[str, t.Any]:
    return t.cast(dict[str, t.Any], json.loads(store_path(config).read_text())["members"])


def copy(config: dict[str, t.Any], tmp_path: Path, *args: str) -> t.Any:
    config_file = write_json(tmp_path / "copy-config.json", config)
    return run_cli("store", "copy", "--config", str(config_file), *args)


def test_copy_moves_every_members_tokens_the_inbox_and_the_ledger_spending_no_token(
    two_members: Sandbox, files_config: dict[str, t.Any], store_url: str, tmp_path: Path
) -> None:
    sandbox = two_members
    alice = sandbox.members[0].user_id
    before = file_members(files_config)
    file_inbox = SqliteInbox(store_path(files_config).parent / "inbox.sqlite")
    ledger = file_inbox.known(alice, "sleep")
    file_inbox.close()
    sandbox.reset_stats()

    result = copy(files_config, tmp_path, "--to", store_url)

    assert result.returncode == 0, result.stderr
    assert sandbox.stats()["token_requests"] == 0
    assert "  member 'a': copied\n  member 'b': copied\n" in result.stdout
    assert "1 event(s) and " in result.stdout
    pg = Backend("postgres", store_url)
    assert pg.members(files_config) == before
    moved = {**files_config, "store_url": store_url}
    inbox = Run(moved).inbox
    assert [e.trace_id for e in inbox.after(0)] == ["trace-1"]
    assert inbox.known(alice, "sleep") == ledger
    output = result.stdout + result.stderr
    assert not [entry for entry in before.values() if entry["refresh_token"] in output]
    assert "tap_whoop:tap_whoop@" not in output

    pg.expire(moved)
    synced = run_tap(moved)
    assert synced.error is None, synced.error
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (2, 0)
    assert synced.state is not None
    passed_on = synced.state[WEBHOOKS_KEY]  # the copied event, read from the database's log
    assert (passed_on["position"], passed_on["owed"]) == (inbox.after(0)[-1].seq, [])


def test_after_the_copy_the_files_refuse_every_use_and_nothing_is_spent(
    two_members: Sandbox, files_config: dict[str, t.Any], store_url: str, tmp_path: Path
) -> None:
    sandbox = two_members
    assert copy(files_config, tmp_path, "--to", store_url).returncode == 0
    sandbox.reset_stats()
    config_file = write_json(tmp_path / "files.json", files_config)
    catalog = catalog_file(tmp_path / "catalog.json", files_config, PROFILE)
    line = error_line(run_cli("--config", str(config_file), "--catalog", str(catalog)))
    assert f"token store {store_path(files_config)} was moved to postgresql://tap_whoop@" in line
    assert "set store_url to that database" in line
    assert sandbox.stats()["token_requests"] == 0
    receiver_inbox = SqliteInbox(store_path(files_config).parent / "inbox.sqlite")
    with pytest.raises(TokenStoreError, match="it was moved to postgresql://tap_whoop@"):
        receiver_inbox.add(Event(1, "sleep.updated", "s9", "trace-9"))


def test_copying_again_changes_nothing_and_reads_store_url_from_the_config(
    two_members: Sandbox, files_config: dict[str, t.Any], store_url: str, tmp_path: Path
) -> None:
    moved = {**files_config, "store_url": store_url}
    assert copy(moved, tmp_path).returncode == 0
    pg = Backend("postgres", store_url)
    rows = pg.state(moved)
    events = query(store_url, "SELECT count(*) FROM tap_whoop_events")
    two_members.reset_stats()
    again = copy(moved, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "  member 'a': already there, the same token\n" in again.stdout
    assert pg.state(moved) == rows
    assert query(store_url, "SELECT count(*) FROM tap_whoop_events") == events
    assert two_members.stats()["token_requests"] == 0


def test_the_newer_token_wins_by_lineage_whichever_side_has_it(
    two_members: Sandbox, files_config: dict[str, t.Any], store_url: str, tmp_path: Path
) -> None:
    """a: the database refreshed after the copy (newer there, kept); b: the file did (updated)."""
    sandbox = two_members
    assert copy(files_config, tmp_path, "--to", store_url).returncode == 0
    moved = {**files_config, "store_url": store_url}
    pg = Backend("postgres", store_url)
    query(
        store_url,
        "UPDATE tap_whoop_tokens SET entry = jsonb_set(entry, '{expires_at}', '0') "
        "WHERE member = 'a'",
    )
    only_a = {**moved, "users": [{"key": "a"}], "reconcile_interval_hours": 0}
    assert run_tap(only_a, select=PROFILE).records("profile")
    database_a = pg.members(moved)["a"]
    path = store_path(files_config)
    data = json.loads(path.read_text())
    del data["moved_to"]  # someone went back to the file for b
    data["members"]["b"]["expires_at"] = 0
    path.write_text(json.dumps(data))
    only_b = {**files_config, "users": [{"key": "b"}], "reconcile_interval_hours": 0}
    assert run_tap(only_b, select=PROFILE).records("profile")
    file_b = file_members(files_config)["b"]
    sandbox.reset_stats()

    result = copy(files_config, tmp_path, "--to", store_url)

    assert result.returncode == 0, result.stderr
    assert "member 'a': kept the database's: its token was rotated from the file's" in result.stdout
    assert "member 'b': updated: the file's token was rotated from the database's" in result.stdout
    assert pg.members(moved)["a"] == database_a
    assert pg.members(moved)["b"] == file_b
    assert sandbox.stats()["token_requests"] == 0
    for entry in pg.members(moved).values():
        assert refresh_directly(sandbox, entry["refresh_token"]).status_code == 200


def test_unrelated_tokens_are_refused_and_nothing_is_copied_unless_overwrite(
    two_members: Sandbox, files_config: dict[str, t.Any], store_url: str, tmp_path: Path
) -> None:
    sandbox = two_members
    elsewhere = {
        **files_config,
        "store_url": store_url,
        "users": [{"key": "a", "refresh_token": sandbox.issue_refresh_token("alice")}],
    }
    assert run_tap(elsewhere, select=PROFILE).error is None
    pg = Backend("postgres", store_url)
    rows = pg.state(elsewhere)

    refused = copy(files_config, tmp_path, "--to", store_url)

    line = error_line(refused)
    assert "nothing was copied: member(s) 'a' hold a refresh token in postgresql://" in line
    assert "--overwrite" in line
    assert pg.state(elsewhere) == rows
    assert "moved_to" not in json.loads(store_path(files_config).read_text())

    replaced = copy(files_config, tmp_path, "--to", store_url, "--overwrite")

    assert replaced.returncode == 0, replaced.stderr
    assert "member 'a': replaced (--overwrite)" in replaced.stdout
    assert "member 'b': copied" in replaced.stdout
    assert pg.members(elsewhere) == file_members(files_config)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "say where to copy to: --to postgresql://"),
        (("--to", "mysql://me:pw-s3cret-42@db/whoop"), "--to must be a PostgreSQL URL"),
        (
            ("--to", "postgresql://me:pw-s3cret-42@127.0.0.1:1/whoop"),
            "cannot connect to the store database postgresql://me@127.0.0.1:1/whoop",
        ),
    ],
    ids=["no_target", "not_postgresql", "unreachable"],
)
def test_a_copy_that_cannot_start_is_one_line_and_leaves_the_files_in_use(
    files_config: dict[str, t.Any], tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    before = store_path(files_config).read_bytes()
    result = copy(files_config, tmp_path, *args)
    line = error_line(result)
    assert expected in line
    assert "pw-s3cret-42" not in result.stdout + result.stderr
    assert store_path(files_config).read_bytes() == before


def test_copying_a_token_store_that_does_not_exist_is_refused_in_one_line(
    files_config: dict[str, t.Any], store_url: str, tmp_path: Path
) -> None:
    missing = tmp_path / "elsewhere" / "tokens.json"
    result = copy({**files_config, "token_store_path": str(missing)}, tmp_path, "--to", store_url)

    line = error_line(result)
    assert f"no token store at {missing}, so nothing to copy" in line
    assert "token_store_path" in line
    assert not missing.exists()
    assert not missing.parent.exists() or not any(missing.parent.iterdir())
