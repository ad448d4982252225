"""The tap's Singer output: how messages reach stdout, and how often STATE does."""

from __future__ import annotations

import math
import sys
import time
import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter, serialize_jsonl
from singer_sdk.singerlib import RecordMessage, SchemaMessage, StateMessage

if t.TYPE_CHECKING:
    from singer_sdk.singerlib.encoding.simple import Message

STATE_INTERVAL_SECONDS = 5.0


class SingerOutput(MsgSpecWriter):
    """msgspec's writer, with three costs taken out of the record path.

    - The SDK sends a stream's SCHEMA each time it syncs the stream for a parent's record: ten
      streams per member. A SCHEMA identical to the last one of its stream is not sent again.
    - A STATE is serialized from its value, not through `dataclasses.asdict`, which deep-copies
      every member's bookmarks first.
    - stdout is flushed after each SCHEMA and STATE, not after each RECORD: a target still
      receives every record before the STATE that covers it, and the records after the last
      STATE count for nothing until a later one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._schemas: dict[str, SchemaMessage] = {}

    def serialize_message(self, message: Message) -> bytearray:
        """One line of JSON; a STATE straight from its value."""
        if isinstance(message, StateMessage):
            return serialize_jsonl({"type": "STATE", "value": message.value})
        return super().serialize_message(message)

    def write_message(self, message: Message) -> None:
        """Write `message` unless it repeats its stream's last SCHEMA."""
        if isinstance(message, SchemaMessage):
            if self._schemas.get(message.stream) == message:
                return
            self._schemas[message.stream] = message
        self.write_line(self.format_message(message), flush=not isinstance(message, RecordMessage))

    @staticmethod
    def write_line(line: bytes | bytearray, flush: bool = True) -> None:
        """Write one serialized message to stdout."""
        sys.stdout.buffer.write(line)
        if flush:
            sys.stdout.flush()


class PacedStateWriter:
    """Writes the tap's STATE at most every few seconds, and the latest one on `flush`.

    A later STATE supersedes an earlier one, so skipping some loses nothing; the one held back
    is the live state, written whole when the interval has passed or the run ends.
    """

    def __init__(self, output: SingerOutput, interval: float = STATE_INTERVAL_SECONDS) -> None:
        self._output = output
        self._interval = interval
        self._written_at = -math.inf
        self._last: bytes | None = None
        self._pending: dict[str, t.Any] | None = None

    def write_state(self, state: dict[str, t.Any]) -> None:
        """Write `state` if the interval has passed; else hold it for the next write."""
        if time.monotonic() - self._written_at < self._interval:
            self._pending = state
            return
        self.write_now(state)

    def write_now(self, state: dict[str, t.Any]) -> None:
        """Write `state` now, unless it is the last one written."""
        self._pending = None
        self._written_at = time.monotonic()
        line = bytes(self._output.format_message(StateMessage(value=state)))
        if line != self._last:
            self._output.write_line(line)
            self._last = line

    def flush(self) -> None:
        """Write the state held back, if any."""
        if self._pending is not None:
            self.write_now(self._pending)
