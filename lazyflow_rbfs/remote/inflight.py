"""Requests in flight: the sockets they read, their deadlines, and cutting them short.

An :class:`Attempt` is one attempt of a GET. While a thread makes it (:func:`begin` .. :func:`end`), the
tracked urllib3 connections of :class:`Adapter` (direct, and through HTTP proxies; not SOCKS) tell it
which socket it reads, and once the connection is ready its deadline is ``read`` seconds away (at most
``connect + read`` after it began). One watchdog thread per process keeps every deadline in a heap and
shuts down (``SHUT_RDWR``) the socket of an overdue attempt: the blocked read returns at once and the
attempt ends as :data:`TIMED_OUT`. :meth:`Attempt.abort` does the same for a client that closes
(:data:`ABANDONED`). DNS resolution and the TCP connect are not cut short (the connect timeout bounds
them); a connection that completes after an abort is shut down as soon as it is ready. Reset in forked
children.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["Attempt", "Adapter", "begin", "end", "TIMED_OUT", "ABANDONED"]

#: Why an attempt was cut short: its deadline passed.
TIMED_OUT = "timed out"

#: Why an attempt was cut short: its client closed.
ABANDONED = "abandoned"


def _shutdown(sock: object) -> None:
    """Make a read blocked on ``sock`` in another thread return (at once, with EOF or an error)."""
    raw = sock if isinstance(sock, socket.socket) else getattr(sock, "socket", None)
    if not isinstance(raw, socket.socket):
        return
    try:
        # The base method: SSLSocket.shutdown would also drop its SSL object under the reading thread.
        socket.socket.shutdown(raw, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or never connected


class Attempt:
    """One attempt of a GET: the sockets it uses, its deadline and why it was cut short, if it was."""

    __slots__ = ("deadline", "read", "reason", "_socks", "_done", "_lock")

    def __init__(self, connect: float, read: float) -> None:
        self.deadline = time.monotonic() + connect + read
        self.read = read
        self.reason: str | None = None
        self._socks: list[object] = []
        self._done = False
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self._done

    def attach(self, conn: HTTPConnection) -> None:
        """A connection is (about to be) used by this attempt; a connected one starts the read clock."""
        sock = getattr(conn, "sock", None)
        if sock is None:
            return  # connect() attaches it again once it is connected
        with self._lock:
            if self._done:
                return
            if self.reason is not None:
                _shutdown(sock)
                return
            if sock not in self._socks:
                self._socks.append(sock)
        deadline = time.monotonic() + self.read
        if deadline < self.deadline:
            self.deadline = deadline
            _watchdog.watch(self, deadline)

    def abort(self, reason: str) -> bool:
        """Cut the attempt short (``TIMED_OUT`` or ``ABANDONED``); False if it already ended."""
        with self._lock:
            if self._done or self.reason is not None:
                return False
            self.reason = reason
            # Under the lock: finish() cannot return (and the thread reuse a socket) before this is done.
            for sock in self._socks:
                _shutdown(sock)
        return True

    def finish(self) -> str | None:
        """End the attempt; returns why it was cut short (``None``: it was not)."""
        with self._lock:
            self._done = True
            return self.reason


class _Watchdog:
    """One thread per process: shuts down the sockets of attempts past their deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Attempt]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._compact_at = 4096

    def watch(self, flight: Attempt, deadline: float) -> None:
        with self._cond:
            if len(self._heap) >= self._compact_at:
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._compact_at = max(4096, 2 * len(self._heap))
            heapq.heappush(self._heap, (deadline, next(self._seq), flight))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rbfs-http-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is flight:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            overdue: list[Attempt] = []
            with self._cond:
                while not overdue:
                    now = time.monotonic()
                    while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                        _, _, flight = heapq.heappop(self._heap)
                        if not flight.done and flight.deadline <= now:
                            overdue.append(flight)
                    if not overdue:
                        self._cond.wait(self._heap[0][0] - now if self._heap else None)
            for flight in overdue:
                flight.abort(TIMED_OUT)


_watchdog = _Watchdog()
_current = threading.local()  # .flight: the attempt the calling thread is making


def _attach_current(conn: HTTPConnection) -> None:
    flight = getattr(_current, "flight", None)
    if flight is not None:
        flight.attach(conn)


class _Tracked:
    """Mixed into a urllib3 connection class: tells the calling thread's attempt which socket it reads."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _attach_current(self)  # type: ignore[arg-type]

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _attach_current(self)  # type: ignore[arg-type]
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _TrackedHTTPConnection(_Tracked, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _TrackedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


_TRACKED_POOLS = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}


class Adapter(HTTPAdapter):
    """``HTTPAdapter`` whose pools (direct and through HTTP proxies) use the tracked connections."""

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _TRACKED_POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):  # type: ignore[no-untyped-def]
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not str(proxy).lower().startswith("socks"):
            manager.pool_classes_by_scheme = _TRACKED_POOLS
        return manager


def begin(flight: Attempt) -> None:
    """The calling thread makes ``flight`` now: watch its deadline, and attach the connections it uses."""
    _watchdog.watch(flight, flight.deadline)
    _current.flight = flight


def end() -> None:
    """The calling thread's attempt is over (call :meth:`Attempt.finish` too)."""
    _current.flight = None


def _after_fork_in_child() -> None:
    # The parent's watchdog thread and requests in flight do not exist in a forked child.
    global _watchdog, _current
    _watchdog = _Watchdog()
    _current = threading.local()


os.register_at_fork(after_in_child=_after_fork_in_child)
