"""`tap-whoop plan`: the next run's and a day's requests, per member and in total, for nothing."""

from __future__ import annotations

import re
import typing as t

from auth_support import cli_env, run_cli, write_json
from conftest import members_config, run_tap, tap_config

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from whoop_sandbox import Sandbox


def row(output: str, member: str) -> list[str]:
    for line in output.splitlines():
        if line.split()[:1] == [member]:
            return line.split()
    raise AssertionError(f"no row for {member} in:\n{output}")


def test_plan_costs_a_synced_member_four_requests_and_a_new_ones_history_without_a_request(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, pinned_clock: dict[str, str]
) -> None:
    sandbox = start_sandbox(members=("alice", "carol"), history_days=400)
    start = {"start_date": "2026-01-01T00:00:00Z"}  # within the sandbox's 400 days
    first = run_tap(members_config(sandbox, tmp_path, ("alice",), **start))
    assert first.error is None
    config = write_json(
        tmp_path / "config.json", members_config(sandbox, tmp_path, ("alice", "carol"), **start)
    )
    state = write_json(tmp_path / "state.json", first.state)
    sandbox.reset_stats()

    done = run_cli(
        "plan",
        "--config",
        str(config),
        "--state",
        str(state),
        "--runs-per-day",
        "8",
        env=cli_env(**pinned_clock),
    )

    assert done.returncode == 0, done.stderr
    assert sandbox.stats()["requests"] == 0
    assert sandbox.stats()["token_requests"] == 0
    alice, carol = row(done.stdout, "alice"), row(done.stdout, "carol")
    assert alice[2:] == ["0", "4", "0", "4"]  # profile read within the day, a page per collection
    assert carol[1] == "-"
    assert carol[2] == "2"
    history = int(carol[4])
    assert 4 * 323 / 25 * 0.8 < history < 4 * 323 / 25 * 1.5  # 323 days, 4 collections
    assert re.search(rf"^total .* {4 + 2 + history}$", done.stdout, re.MULTILINE)
    assert "a day of 8 run(s) (one every 3 h)" in done.stdout
    assert "of the app's 10,000 a day" in done.stdout
    assert "done in 1 day(s)" in done.stdout
    assert "max_history_requests_per_run" not in done.stdout  # one run's share holds it

    planned = 4 + 2 + history
    run = run_tap(members_config(sandbox, tmp_path, ("alice", "carol"), **start), first.state)
    assert run.error is None
    sent = sandbox.stats()["by_status"].get("200", 0)
    assert abs(sent - planned) <= 0.15 * planned, (sent, planned)


def test_plan_says_how_many_days_a_history_takes_and_where_the_run_cap_cuts(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, pinned_clock: dict[str, str]
) -> None:
    sandbox = start_sandbox(members=("carol",), history_days=10)
    config = write_json(
        tmp_path / "config.json",
        members_config(
            sandbox,
            tmp_path,
            ("carol",),
            start_date="2016-01-01T00:00:00Z",
            max_requests_per_run=50,
        ),
    )

    done = run_cli(
        "plan",
        "--config",
        str(config),
        "--runs-per-day",
        "1",
        "--daily-limit",
        "100",
        env=cli_env(**pinned_clock),
    )

    assert done.returncode == 0, done.stderr
    history = int(row(done.stdout, "carol")[4])
    assert "max_requests_per_run caps it at 50" in done.stdout
    spare = min(100 - 6, 1 * (50 - 4))
    assert f"with {spare} a day to spare, done in {-(-history // spare)} day(s)" in done.stdout


def test_plan_warns_when_the_schedule_alone_exceeds_the_daily_quota(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, pinned_clock: dict[str, str]
) -> None:
    sandbox = start_sandbox(members=("alice", "bob"), history_days=5)
    config = write_json(
        tmp_path / "config.json", members_config(sandbox, tmp_path, ("alice", "bob"))
    )

    done = run_cli(
        "plan",
        "--config",
        str(config),
        "--runs-per-day",
        "24",
        "--daily-limit",
        "50",
        env=cli_env(**pinned_clock),
    )

    assert done.returncode == 0, done.stderr
    assert "the schedule needs more than the app's daily quota" in done.stdout
    assert "at most 0 member(s)" not in done.stdout


def test_plan_refuses_a_state_file_that_is_not_json_in_one_line(
    sandbox: Sandbox, tmp_path: Path, pinned_clock: dict[str, str]
) -> None:
    config = write_json(tmp_path / "config.json", tap_config(sandbox, tmp_path))
    state = tmp_path / "state.json"
    state.write_text("{not json", encoding="utf-8")

    done = run_cli(
        "plan", "--config", str(config), "--state", str(state), env=cli_env(**pinned_clock)
    )

    assert done.returncode == 2
    assert "is not valid JSON" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_plan_reads_a_state_as_meltano_state_get_prints_it_and_as_meltano_invoke_passes_it(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, pinned_clock: dict[str, str]
) -> None:
    """`meltano state get` wraps the state in `singer_state`; `meltano invoke tap-whoop plan`
    gives --state and --catalog to the tap, before the subcommand."""
    sandbox = start_sandbox(members=("alice",), history_days=30)
    first = run_tap(members_config(sandbox, tmp_path))
    assert first.error is None
    config = write_json(tmp_path / "config.json", members_config(sandbox, tmp_path))
    state = write_json(tmp_path / "state.json", first.state)
    wrapped = write_json(tmp_path / "meltano-state.json", {"singer_state": first.state})

    plain = run_cli(
        "plan", "--config", str(config), "--state", str(state), env=cli_env(**pinned_clock)
    )
    from_meltano = run_cli(
        "plan", "--config", str(config), "--state", str(wrapped), env=cli_env(**pinned_clock)
    )
    invoked = run_cli(
        "--config", str(config), "--state", str(wrapped), "plan", env=cli_env(**pinned_clock)
    )

    assert plain.returncode == 0, plain.stderr
    assert row(plain.stdout, "alice")[2:] == ["0", "4", "0", "4"]
    assert from_meltano.stdout == plain.stdout
    assert invoked.stdout == plain.stdout, invoked.stderr


def test_plan_and_test_name_a_damaged_state_field_in_one_line(
    sandbox: Sandbox, tmp_path: Path, pinned_clock: dict[str, str]
) -> None:
    config = write_json(tmp_path / "config.json", tap_config(sandbox, tmp_path))
    partition = {"context": {"user_id": 1}, "backfill_end": "soon"}
    state = write_json(
        tmp_path / "state.json", {"bookmarks": {"sleep": {"partitions": [partition]}}}
    )

    for args in (
        ("plan", "--config", str(config), "--state", str(state)),
        ("--config", str(config), "--state", str(state), "--test"),
    ):
        done = run_cli(*args, env=cli_env(**pinned_clock))

        assert done.returncode == 2, done.stderr
        assert "the state's backfill_end for sleep ('soon') is not a date-time" in done.stderr
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
