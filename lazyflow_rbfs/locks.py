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

from lazyflow_rbfs.errors import CacheWriteError, LockTimeoutError

__all__ = ["BlockLock", "Cancel", "LockWaitCancelled", "InFlight", "IN_FLIGHT"]

logger = logging.getLogger(__name__)


#: Never open a lock file through a symbolic link (one planted in a cache would redirect it elsewhere).
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _open_and_lock(path: str, blocking: bool) -> int | None:
    """Return a file descriptor holding an exclusive flock on ``path``, or ``None`` if it is taken."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | _O_NOFOLLOW, 0o644)
        except FileNotFoundError:
            try:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            except OSError as exc:
                raise CacheWriteError.from_os_error(
                    exc, os.path.dirname(path), "create the directory"
                ) from exc
            continue
        except OSError as exc:  # read-only or full file system, permissions, a symbolic link (ELOOP)
            action = (
                "open the lock file (a symbolic link?)"
                if exc.errno == errno.ELOOP
                else "create the lock file"
            )
            raise CacheWriteError.from_os_error(exc, path, action) from exc
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

    def acquire(
        self, timeout: float | None = None, blocking: bool = True, cancel: Cancel | None = None
    ) -> bool:
        """Take the lock.

        Parameters
        ----------
        timeout
            Seconds to wait at most; ``None`` waits as long as the holder lives.
        blocking
            ``False`` tries once and returns at once.
        cancel
            A :class:`Cancel` that, when cancelled, ends the wait with :class:`LockWaitCancelled`
            (a fileset's ``close()`` uses this so it never waits on another process's download).

        Returns
        -------
        bool
            ``True`` once held; ``False`` only for a non-blocking attempt that found it taken.

        Raises
        ------
        LockTimeoutError
            ``timeout`` passed before the lock could be taken.
        LockWaitCancelled
            ``cancel`` was cancelled before the lock could be taken.
        """
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this instance")
        if not blocking:
            self._fd = _open_and_lock(self.path, blocking=False)
            return self._fd is not None
        if timeout is None and cancel is None:
            self._fd = _open_and_lock(self.path, blocking=True)
            return True
        fd = _open_and_lock(self.path, blocking=False)
        if fd is None:
            fd = self._wait_in_helper(timeout, cancel)
        self._fd = fd
        return True

    def _wait_in_helper(self, timeout: float | None, cancel: Cancel | None) -> int:
        # flock has no timed or cancellable wait, and polling is what this package avoids. A helper
        # thread makes the blocking call (the kernel wakes it when the holder releases or dies) and
        # notifies a condition; this thread waits on that condition, which a Cancel can notify too. If
        # we stop waiting first (timeout, cancel, or an exception such as KeyboardInterrupt), the helper
        # is marked abandoned and releases the lock the moment it gets it; it lives until then.
        cond = cancel.condition if cancel is not None else threading.Condition()
        outcome: dict = {}

        def wait_for_lock() -> None:
            try:
                fd = _open_and_lock(self.path, blocking=True)
            except BaseException as exc:  # handed to the waiting thread below
                with cond:
                    outcome["error"] = exc
                    cond.notify_all()
                return
            with cond:
                abandoned = outcome.get("abandoned", False)
                if not abandoned:
                    outcome["fd"] = fd
                    cond.notify_all()
            if abandoned:
                _unlink_and_close(self.path, fd)

        def settled() -> bool:
            return "fd" in outcome or "error" in outcome or (cancel is not None and cancel.cancelled)

        threading.Thread(target=wait_for_lock, name=f"rbfs-lock-wait {self.path}", daemon=True).start()
        fd = None
        try:
            with cond:
                cond.wait_for(settled, timeout)
                if "fd" in outcome:
                    return outcome.pop("fd")
                if "error" in outcome:
                    raise outcome["error"]
                outcome["abandoned"] = True
                cancelled = cancel is not None and cancel.cancelled
        except BaseException:
            with cond:
                fd = outcome.pop("fd", None)
                outcome["abandoned"] = True
            if fd is not None:
                _unlink_and_close(self.path, fd)
            raise
        if cancelled:
            raise LockWaitCancelled(f"stopped waiting for the lock {self.path}: cancelled", path=self.path)
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
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | _O_NOFOLLOW)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a planted link: nobody holds a lock through it
                return False
            raise
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


class LockWaitCancelled(LockTimeoutError):
    """A lock wait ended because its :class:`Cancel` was cancelled (internal; the cache reports closing)."""


class Cancel:
    """Ends :meth:`BlockLock.acquire` waits that were given it, at once, when :meth:`cancel` is called."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.cancelled = False

    def cancel(self) -> None:
        with self.condition:
            self.cancelled = True
            self.condition.notify_all()


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
