"""The tap's Singer output: one SCHEMA per stream, STATE exactly as the SDK writes it, and
records on their way to the target before the STATE that covers them."""

from __future__ import annotations

import collections
import contextlib
import io
import json
import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib import RecordMessage, SchemaMessage, StateMessage

from tap_whoop.output import PacedStateWriter, SingerOutput
from tests.conftest import members_config, run_tap

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from whoop_sandbox import Sandbox

STATE = {
    "bookmarks": {
        "cycles": {"partitions": [{"context": {"user_id": 1}, "replication_key_value": "2026"}]}
    },
    "whoop_webhooks": {"inbox": "x", "position": 3, "owed": []},
}


def frozen_clock() -> float:
    """A clock that never moves: records are never held too long."""
    return 0.0


class Stdout(io.TextIOWrapper):
    """A stdout whose flushes are counted, and whose bytes can be read back."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()

    def lines(self) -> list[dict[str, t.Any]]:
        data = t.cast(io.BytesIO, self.buffer).getvalue()
        return [json.loads(line) for line in data.decode().splitlines()]


def test_a_run_sends_each_streams_schema_once_however_many_members(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(members=("alice", "bob", "carol"), history_days=3)
    result = run_tap(members_config(sandbox, tmp_path))
    assert result.error is None
    schemas = collections.Counter(m["stream"] for m in result.messages if m["type"] == "SCHEMA")
    assert set(schemas) == {"profile", "body_measurement", "cycles", "recovery", "sleep", "workout"}
    assert set(schemas.values()) == {1}
    users = {r["user_id"] for r in result.records("cycles")}
    assert len(users) == 3, "every member's streams were synced"


def test_a_changed_schema_is_sent_again() -> None:
    output, stdout = SingerOutput(clock=frozen_clock), Stdout()
    first = SchemaMessage("cycles", {"properties": {"id": {"type": "integer"}}}, ["id"])
    changed = SchemaMessage("cycles", {"properties": {"id": {"type": "string"}}}, ["id"])
    other = SchemaMessage("sleep", {"properties": {"id": {"type": "string"}}}, ["id"])
    with contextlib.redirect_stdout(stdout):
        for message in (first, first, other, changed, changed, first):
            output.write_message(message)
    stdout.flush()
    sent = [(m["stream"], m["schema"]["properties"]["id"]["type"]) for m in stdout.lines()]
    assert sent == [
        ("cycles", "integer"),
        ("sleep", "string"),
        ("cycles", "string"),
        ("cycles", "integer"),
    ]


def test_a_state_line_is_byte_for_byte_what_the_sdks_writer_writes() -> None:
    ours = bytes(SingerOutput().format_message(StateMessage(value=STATE)))
    sdks = bytes(MsgSpecWriter().format_message(StateMessage(value=STATE)))
    assert ours == sdks
    assert json.loads(ours) == {"type": "STATE", "value": STATE}


def test_records_are_written_with_the_state_that_covers_them_not_one_by_one() -> None:
    output, stdout = SingerOutput(clock=frozen_clock), Stdout()
    with contextlib.redirect_stdout(stdout):
        for index in range(3):
            output.write_message(RecordMessage("cycles", {"id": index}))
        records_only = (stdout.flushes, stdout.lines())
        PacedStateWriter(output).write_now(STATE)
        with_state = stdout.flushes
    assert records_only == (0, [])
    assert with_state == 1
    assert [m["type"] for m in stdout.lines()] == ["RECORD"] * 3 + ["STATE"]


def test_records_after_the_last_state_are_written_when_the_run_ends() -> None:
    output, stdout = SingerOutput(clock=frozen_clock), Stdout()
    writer = PacedStateWriter(output)
    with contextlib.redirect_stdout(stdout):
        writer.write_now(STATE)
        output.write_message(RecordMessage("cycles", {"id": 1}))  # no newer state to cover it
        writer.flush()
    assert [m["type"] for m in stdout.lines()] == ["STATE", "RECORD"]


def test_a_long_stretch_of_records_is_written_in_bounded_pieces() -> None:
    output, stdout = SingerOutput(clock=frozen_clock), Stdout()
    big = {"id": 1, "stream": ["x" * 1000] * 100}  # about 100 kB, like a night of signals
    with contextlib.redirect_stdout(stdout):
        for _ in range(10):
            output.write_message(RecordMessage("sleep_signals", big))
        written = len(stdout.lines())
    assert 0 < written < 10


def test_an_unchanged_state_is_not_written_twice_and_a_changed_one_is() -> None:
    output, stdout = SingerOutput(clock=frozen_clock), Stdout()
    writer = PacedStateWriter(output)
    changed = {**STATE, "whoop_webhooks": {"inbox": "x", "position": 4, "owed": []}}
    with contextlib.redirect_stdout(stdout):
        writer.write_now(STATE)
        writer.write_now(json.loads(json.dumps(STATE)))  # equal, another object
        writer.write_now(changed)
    assert [m["value"] for m in stdout.lines()] == [STATE, changed]


def test_records_held_for_a_quarter_second_are_written_with_the_next_one() -> None:
    now = [0.0]
    output, stdout = SingerOutput(clock=lambda: now[0]), Stdout()
    with contextlib.redirect_stdout(stdout):
        output.write_message(RecordMessage("workout", {"id": "a"}))
        now[0] = 0.2
        output.write_message(RecordMessage("workout", {"id": "b"}))
        before = len(stdout.lines())
        now[0] = 0.3
        output.write_message(RecordMessage("workout", {"id": "c"}))
        after = [m["record"]["id"] for m in stdout.lines()]
    assert before == 0
    assert after == ["a", "b", "c"]
