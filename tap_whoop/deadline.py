"""A total deadline for each HTTP attempt: connecting, the headers and the whole body.

requests' timeouts bound the connect and each silence between reads, so an answer that trickles
in a byte at a time never trips them. Mounted on a session, `DeadlineAdapter` makes a numeric
`timeout` the limit of the whole attempt.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import math
import socket
import threading
import time
import typing as t
from urllib.parse import urlparse

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool

from tap_whoop import USER_AGENT

#: The deadline of the attempt under way in this thread (or context), for its connections.
_current: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar(
    "tap_whoop_deadline", default=None
)


class _Deadline:
    """One attempt's total time: when it runs out, the attempt's sockets are shut down.

    A socket read timeout only measures silence, so an answer that trickles in a byte at a time
    never trips it. Shutting the socket down from another thread (`_Watchdog`) wakes the
    blocked read at once, whether it waits for the headers or the body.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def __enter__(self) -> _Deadline:
        self._token = _current.set(self)
        _WATCHDOG.watch(self, time.monotonic() + self.seconds)
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self.done = True
        _current.reset(self._token)

    def watch(self, sock: socket.socket | None) -> None:
        """Shut `sock` down when the time is up (at once if it already is)."""
        with self._lock:
            if sock is None or self.done or any(sock is known for known in self._sockets):
                return
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        """The time is up: shut down the attempt's sockets, unless it has ended."""
        with self._lock:
            if self.done:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


class _Watchdog:
    """One thread that expires every attempt's deadline in turn.

    A timer thread per attempt cost a thread's start for each request. Deadlines are kept in a
    heap by when they run out; an attempt that ends is only marked done, and dropped when its
    time comes, so the thread wakes about once per timeout, not once per request.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._condition = threading.Condition()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: _Deadline, at: float) -> None:
        with self._condition:
            if self._thread is None or not self._thread.is_alive():  # e.g. after a fork
                self._thread = threading.Thread(
                    target=self._run, name="tap-whoop-deadlines", daemon=True
                )
                self._thread.start()
            earliest = self._heap[0][0] if self._heap else math.inf
            heapq.heappush(self._heap, (at, next(self._order), deadline))
            if at < earliest:
                self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    if self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                        continue
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._condition.wait(timeout)
                _, _, deadline = heapq.heappop(self._heap)
            deadline.expire()


_WATCHDOG = _Watchdog()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: nothing left to wake
        sock.shutdown(socket.SHUT_RDWR)


def _watch_current(sock: socket.socket | None) -> None:
    deadline = _current.get()
    if deadline is not None:
        deadline.watch(sock)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self) -> urllib3.connection.HTTPResponse:  # type: ignore[override]
        _watch_current(self.sock)
        return super().getresponse()


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self) -> urllib3.connection.HTTPResponse:  # type: ignore[override]
        _watch_current(self.sock)
        return super().getresponse()


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """Takes a numeric `timeout` as the whole attempt's limit: connecting and the full body.

    requests' own timeouts bound the connect and each silence between reads, not the answer as
    a whole; past the deadline the attempt fails with `requests.exceptions.ReadTimeout`, which
    the SDK retries like any timeout.
    """

    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Pools whose connections hand their socket to the current attempt's deadline."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | None = None,
        **kwargs: t.Any,
    ) -> requests.Response:
        """One attempt, answered in full within `timeout` seconds or failed."""
        if not isinstance(timeout, int | float):
            return super().send(request, stream=stream, timeout=timeout, **kwargs)
        with _Deadline(timeout) as deadline:
            try:
                response = super().send(request, stream=True, timeout=timeout, **kwargs)
                if response.raw is not None:  # e.g. through a proxy: from the headers on
                    deadline.watch(getattr(response.raw.connection, "sock", None))
                if not stream:
                    _ = response.content
            except Exception:
                if deadline.expired:
                    raise _timed_out(request, timeout) from None
                raise
            if deadline.expired:  # cut mid-headers, what came may parse as a short answer
                raise _timed_out(request, timeout)
        return response


def _timed_out(request: requests.PreparedRequest, timeout: float) -> requests.ReadTimeout:
    path = urlparse(str(request.url)).path
    return requests.exceptions.ReadTimeout(
        f"no complete answer for {path} within {timeout:g}s", request=request
    )


def with_deadlines(session: requests.Session) -> requests.Session:
    """`session`, its every attempt bounded by its `timeout` in all (see `DeadlineAdapter`).

    Its requests name the tap (`USER_AGENT`), never Python's default agent.
    """
    session.headers["User-Agent"] = USER_AGENT
    if not isinstance(session.get_adapter("https://"), DeadlineAdapter):
        adapter = DeadlineAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session
