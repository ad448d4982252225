"""The tap's Singer output: how messages reach stdout, and how often STATE does."""

from __future__ import annotations

import math
import sys
import time
import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter, serialize_jsonl
from singer_sdk.singerlib import RecordMessage, SchemaMessage, StateMessage

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from singer_sdk.singerlib.encoding.simple import Message

STATE_INTERVAL_SECONDS = 5.0
HOLD_BYTES = 256 * 1024
"""Records held at most before they are written, between two SCHEMA or STATE messages."""
HOLD_SECONDS = 0.25
"""How long records may wait for the next ones before they are written together."""


class SingerOutput(MsgSpecWriter):
    """msgspec's writer, with three costs taken out of the record path.

    - The SDK sends a stream's SCHEMA each time it syncs the stream for a parent's record: ten
      streams per member. A SCHEMA identical to the last one of its stream is not sent again.
    - A STATE is serialized from its value, not through `dataclasses.asdict`, which deep-copies
      every member's bookmarks first.
    - Records are held and written in one go with the next SCHEMA or STATE (or once they are
      `HOLD_SECONDS` old or `HOLD_BYTES` long, and when the run ends), not one write each: a
      target still receives every record before the STATE that covers it, and the records
      after the last STATE count for nothing until a later one. The hold is the tap's own, so
      PYTHONUNBUFFERED (set in many container images) does not make it a write per record.
    """

    def __init__(
        self, hold_seconds: float = HOLD_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._schemas: dict[str, SchemaMessage] = {}
        self._held = bytearray()
        self._held_since = 0.0
        self._hold_seconds = hold_seconds
        self._clock = clock

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

    def write_line(self, line: bytes | bytearray, flush: bool = True) -> None:
        """Write one serialized message: now when `flush`, else with the next one that is."""
        if not self._held:
            self._held_since = self._clock()
        self._held += line
        if (
            flush
            or len(self._held) >= HOLD_BYTES
            or self._clock() - self._held_since >= self._hold_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Write the held messages to stdout, and flush it."""
        held, self._held = self._held, bytearray()
        out = sys.stdout.buffer
        view = memoryview(held)
        while view:  # an unbuffered stdout (PYTHONUNBUFFERED) may take part of it
            written = out.write(view)
            view = view[written if written is not None else 0 :]
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
        """Write `state` if the interval has passed; else hold it for the next write.

        The records before it are written either way: the SDK asks for a STATE where a stream's
        partition ends, and whoever reads the output then expects that partition's records.
        """
        if time.monotonic() - self._written_at < self._interval:
            self._pending = state
            self._output.flush()
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
        """Write the state held back, if any, and every message still held."""
        if self._pending is not None:
            self.write_now(self._pending)
        self._output.flush()
