"""`tap-whoop set-aside`: what runs gave up on, as an operator lists, retries or drops it.

An event is set aside here the way a run does it: its record answers 400 in `MAX_EVENT_TRIES`
runs in a row. The command is the real `tap-whoop` in a subprocess, on the same config; the runs
are in-process against the sandbox over real HTTP.
"""

from __future__ import annotations

import typing as t

from tap_whoop.run import Run
from tap_whoop.stores.inbox import Event
from tap_whoop.webhooks.drain import MAX_EVENT_TRIES, WEBHOOKS_KEY
from tests.auth_support import error_line, run_cli, write_json
from tests.conftest import PAST, run_tap, tap_config

if t.TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import SyncResult
    from whoop_sandbox import Sandbox


def set_aside(
    config: dict[str, t.Any], tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """`tap-whoop set-aside ARGS` on `config`, as an operator types it."""
    path = write_json(tmp_path / "config.json", config)
    return run_cli("set-aside", "--config", str(path), *args)


def the_edit_set_aside(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> tuple[Sandbox, dict[str, t.Any], SyncResult, str]:
    """An edit of alice's oldest workout whose record answered 400 until it was set aside.

    The oldest workout is outside every incremental window: only its event passes it on.
    """
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path, max_request_attempts=1)
    first = run_tap(config)
    assert first.error is None, first.error
    workout = first.records("workout")[-1]["id"]
    sandbox.clear_webhook_log()
    sandbox.edit_record("alice", "workout", workout, {"sport_name": "rowing"})
    [change] = sandbox.webhook_log()
    Run(config).inbox.add(Event(change["user_id"], change["type"], workout, change["trace_id"]))
    sandbox.inject_fault(f"/v2/activity/workout/{workout}", "400", times=MAX_EVENT_TRIES)
    last = first
    for _ in range(MAX_EVENT_TRIES):
        last = run_tap(config, state=last.state)
        assert last.error is None, last.error
    assert last.state is not None
    assert last.state[WEBHOOKS_KEY]["owed"] == []
    return sandbox, config, last, workout


def rowing(result: SyncResult, workout: str) -> bool:
    return any(
        r["id"] == workout and r["sport_name"] == "rowing" for r in result.records("workout")
    )


def test_set_aside_lists_each_event_with_its_seq_user_type_record_tries_and_why(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox, config, _, workout = the_edit_set_aside(start_sandbox, tmp_path)
    [aside] = Run(config).inbox.set_aside_events()

    listed = set_aside(config, tmp_path)

    assert listed.returncode == 0, listed.stderr
    header, row, hint = listed.stdout.splitlines()
    assert header.split() == ["seq", "user", "id", "type", "record", "tries", "why"]
    seq, user_id, kind, record, tries, *why = row.split()
    assert (int(seq), int(user_id)) == (aside.event.seq, sandbox.members[0].user_id)
    assert (kind, record, int(tries)) == ("workout.updated", workout, MAX_EVENT_TRIES)
    assert "400" in " ".join(why)
    assert "--retry SEQ" in hint
    assert "--drop SEQ" in hint


def test_set_aside_says_so_when_no_event_is_set_aside(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    assert run_tap(config).error is None

    listed = set_aside(config, tmp_path)

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "no event is set aside"


def test_set_aside_retry_puts_the_event_back_and_the_next_run_passes_it_on(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox, config, last, workout = the_edit_set_aside(start_sandbox, tmp_path)
    [aside] = Run(config).inbox.set_aside_events()

    retried = set_aside(config, tmp_path, "--retry", str(aside.event.seq))

    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"event {aside.event.seq} (workout.updated {workout} ")
    assert "is back in the log as event" in retried.stdout
    assert set_aside(config, tmp_path).stdout.strip() == "no event is set aside"
    sandbox.reset_stats()
    again = run_tap(config, state=last.state)
    assert again.error is None, again.error
    assert rowing(again, workout)
    assert sandbox.stats()["by_path"][f"/v2/activity/workout/{workout}"] == 1
    assert again.state is not None
    assert again.state[WEBHOOKS_KEY]["owed"] == []


def test_set_aside_drop_forgets_the_event_and_no_run_fetches_it(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox, config, last, workout = the_edit_set_aside(start_sandbox, tmp_path)
    [aside] = Run(config).inbox.set_aside_events()

    dropped = set_aside(config, tmp_path, "--drop", str(aside.event.seq))

    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout.strip() == (
        f"event {aside.event.seq} (workout.updated {workout} of user "
        f"{sandbox.members[0].user_id}) dropped"
    )
    assert set_aside(config, tmp_path).stdout.strip() == "no event is set aside"
    sandbox.reset_stats()
    again = run_tap(config, state=last.state)
    assert again.error is None, again.error
    assert not rowing(again, workout)
    assert f"/v2/activity/workout/{workout}" not in sandbox.stats()["by_path"]


def test_set_aside_with_an_unknown_seq_is_one_line_and_exit_2(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    config = tap_config(sandbox, tmp_path)
    assert run_tap(config).error is None

    for option in ("--retry", "--drop"):
        result = set_aside(config, tmp_path, option, "4242")

        assert result.returncode == 2, result.stderr
        assert error_line(result) == (
            "tap-whoop: error: no event 4242 is set aside: list them with `tap-whoop set-aside`"
        )
