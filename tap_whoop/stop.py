"""A stop asked for by SIGTERM or SIGINT: the run ends at its next page, with a state to resume.

The first signal asks: every budget check then answers "signal" (`Progress.admits`), so each walk
stops at a page boundary and keeps what it did not reach, as a budget stop does, and the run
exits 128 + the signal's number (143, 130) so that a scheduler records a failed run. Waits (the
pacer's, a retry's backoff) end at once. A second signal ends the process on the spot.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import typing as t

from tap_whoop.errors import StoppedError

if t.TYPE_CHECKING:
    from collections.abc import Iterator

logger = logging.getLogger("tap-whoop")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stop:
    """Whether, and by which signal, this process was asked to stop."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._event = threading.Event()
        #: True while the main thread sleeps before a retry: a stop then ends the sleep.
        self.in_backoff = False

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signal is not None

    def request(self, signum: int) -> None:
        """Ask the run to stop (what the first signal does)."""
        self.signal = signum
        self._event.set()

    def sleep(self, seconds: float) -> None:
        """Sleep `seconds`, or less if a stop is asked for meanwhile."""
        if seconds > 0:
            self._event.wait(seconds)

    def error(self) -> StoppedError:
        """The error a stopped run ends with."""
        assert self.signal is not None
        name = signal.Signals(self.signal).name
        return StoppedError(
            f"stopped by {name}: the last STATE written resumes where this run stopped (run "
            "again with it; nothing delivered is read again)",
            self.signal,
        )

    def reset(self) -> None:
        """Forget a stop (tests run several taps in one process)."""
        self.signal = None
        self.in_backoff = False
        self._event.clear()


STOP = Stop()


def install() -> None:
    """Handle SIGTERM and SIGINT in this process: the first asks to stop, a second insists."""
    for signum in SIGNALS:
        signal.signal(signum, _handle)


@contextlib.contextmanager
def installed_after() -> Iterator[None]:
    """Run the block with SIGTERM and SIGINT held, then handle them here (main thread only).

    The SDK's constructor installs handlers that exit 0 (a scheduler would record a stopped
    run as a success); a signal arriving while it runs waits, and reaches `_handle`.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        install()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def _handle(signum: int, frame: t.Any) -> None:
    if STOP.requested:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
        return
    STOP.request(signum)
    logger.warning(
        "%s: stopping at the next page; a second signal stops at once",
        signal.Signals(signum).name,
    )
    if STOP.in_backoff:
        raise STOP.error()
