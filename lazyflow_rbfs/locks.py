"""Per-block locks: OS advisory locks across processes, a table of in-flight work within one.

``BlockLock`` is an exclusive ``flock`` on a small lock file. The kernel drops it when the holder's
process dies, so a killed process never leaves a block blocked. The holder removes the file when it
releases; a waiter that wakes up on a removed file notices (its inode no longer matches the path) and
locks the new one, which makes removal race-free. A file left behind by a killed process is harmless: the
next holder locks it and removes it. Lock files are named ``.rbfs.lock``, never ``<blockfile>.lock``, so
upstream lazyflow never mistakes one for its own lock.

``InFlight`` lets threads of one process share a single download per block: the first to claim a key
owns the work, later claimers wait on the same future and are woken the moment it is finished.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from collections.abc import Hashable
from concurrent.futures import Future

from lazyflow_rbfs.errors import LockTimeoutError

__all__ = ["BlockLock", "InFlight", "IN_FLIGHT"]

logger = logging.getLogger(__name__)


def _open_and_lock(path: str, blocking: bool) -> int | None:
    """Return a file descriptor holding an exclusive flock on ``path``, or ``None`` if it is taken."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        except BaseException:  # e.g. KeyboardInterrupt while blocked in flock: do not leak the descriptor
            os.close(fd)
            raise
        try:
            on_disk = os.stat(path)
        except FileNotFoundError:
            on_disk = None
        mine = os.fstat(fd)
        if on_disk is not None and (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        # The previous holder removed the file while we waited for it: lock the current one instead.
        os.close(fd)


class BlockLock:
    """An exclusive, process-death-safe lock on ``path``.

    One instance is one would-be holder: it is not re-entrant. Threads of the same process exclude each
    other too, because each instance opens its own file description.

    Parameters
    ----------
    path
        The lock file. Its directory is created if missing.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this instance holds the lock."""
        return self._fd is not None

    def acquire(self, timeout: float | None = None, blocking: bool = True) -> bool:
        """Take the lock.

        Parameters
        ----------
        timeout
            Seconds to wait at most; ``None`` waits as long as the holder lives.
        blocking
            ``False`` tries once and returns at once.

        Returns
        -------
        bool
            ``True`` once held; ``False`` only for a non-blocking attempt that found it taken.

        Raises
        ------
        LockTimeoutError
            ``timeout`` passed before the lock could be taken.
        """
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this instance")
        if not blocking:
            self._fd = _open_and_lock(self.path, blocking=False)
            return self._fd is not None
        if timeout is None:
            self._fd = _open_and_lock(self.path, blocking=True)
            return True
        fd = _open_and_lock(self.path, blocking=False)
        if fd is None:
            fd = self._wait_with_timeout(timeout)
        self._fd = fd
        return True

    def _wait_with_timeout(self, timeout: float) -> int:
        # flock has no timed wait, and polling is what this package avoids. A helper thread makes the
        # blocking call (the kernel wakes it when the holder releases or dies). If we stop waiting first,
        # by timeout or by an exception such as KeyboardInterrupt, the helper is marked abandoned and
        # releases the lock the moment it gets it, so nothing is left held; it lives until then.
        done = threading.Event()
        decide = threading.Lock()
        outcome: dict = {}

        def wait_for_lock() -> None:
            try:
                fd = _open_and_lock(self.path, blocking=True)
            except BaseException as exc:  # handed to the waiting thread below
                with decide:
                    outcome["error"] = exc
                done.set()
                return
            with decide:
                if outcome.get("abandoned"):
                    _unlink_and_close(self.path, fd)
                    return
                outcome["fd"] = fd
            done.set()

        threading.Thread(target=wait_for_lock, name=f"rbfs-lock-wait {self.path}", daemon=True).start()
        try:
            done.wait(timeout)
        except BaseException:
            with decide:
                fd = outcome.pop("fd", None)
                outcome["abandoned"] = True
            if fd is not None:
                _unlink_and_close(self.path, fd)
            raise
        with decide:
            if "fd" in outcome:
                return outcome["fd"]
            if "error" in outcome:
                raise outcome["error"]
            outcome["abandoned"] = True
        raise LockTimeoutError(
            f"waited {timeout:g} s for the lock {self.path}, which another process holds; "
            "raise lock_timeout or check that process",
            path=self.path,
        )

    def release(self) -> None:
        """Release the lock and remove its file. Releasing a lock not held is an error."""
        fd = self._fd
        if fd is None:
            raise RuntimeError(f"lock {self.path} is not held by this instance")
        self._fd = None
        _unlink_and_close(self.path, fd)

    def locked_elsewhere(self) -> bool:
        """Whether another holder (any thread or process) has the lock right now. Takes nothing."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            raise
        finally:
            os.close(fd)
        return False

    def __enter__(self) -> BlockLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"BlockLock({self.path!r}, held={self.held})"


def _unlink_and_close(path: str, fd: int) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


class InFlight:
    """A table ``key → Future`` of work under way in this process."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._futures: dict[Hashable, Future] = {}

    def claim(self, key: Hashable) -> tuple[Future, bool]:
        """Return the future for ``key`` and whether the caller owns the work (first claimer)."""
        with self._mutex:
            future = self._futures.get(key)
            if future is not None:
                return future, False
            future = Future()
            future.set_running_or_notify_cancel()
            self._futures[key] = future
            return future, True

    def finish(self, key: Hashable, exc: BaseException | None = None, result: object = None) -> None:
        """End the work for ``key``: wake every waiter with ``result`` or ``exc``."""
        with self._mutex:
            future = self._futures.pop(key)
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def __len__(self) -> int:
        with self._mutex:
            return len(self._futures)

    def _reset(self) -> None:
        # A forked child has none of its parent's worker threads: their work will never finish there.
        self._mutex = threading.Lock()
        self._futures = {}


IN_FLIGHT = InFlight()
os.register_at_fork(after_in_child=IN_FLIGHT._reset)
