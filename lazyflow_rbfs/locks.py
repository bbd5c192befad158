"""Per-block locks: OS advisory locks across processes, a table of in-flight work within one.

``BlockLock`` is an exclusive ``flock`` on a small lock file. The kernel drops it when the holder's
process dies, so a killed process never leaves a block blocked. The holder removes the file when it
releases; a waiter that wakes up on a removed file notices (its inode no longer matches the path) and
locks the new one, which makes removal race-free. A file left behind by a killed process is harmless: the
next holder locks it and removes it. Lock files are named ``.rbfs.lock``, never ``<blockfile>.lock``, so
upstream lazyflow never mistakes one for its own lock.

``InFlight`` lets threads of one process share a single download per block: the first to claim a key
owns the work, later claimers wait on the same future and are woken the moment it is finished.

Fork: an flock belongs to the open file description, which a forked child shares with its parent. A child
that kept an inherited lock descriptor would hold its parent's lock for as long as it lives (and wait
forever on itself if it wanted the same block). Every lock-file descriptor this module opens is therefore
registered, and a forked child closes them all at once (closing a shared description's descriptor in the
child leaves the parent's lock alone: the lock goes only when the last descriptor of the description is
closed, and the parent still has its own). ``O_CLOEXEC`` covers ``exec`` only.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from collections.abc import Hashable
from concurrent.futures import Future, InvalidStateError

from lazyflow_rbfs.errors import CacheWriteError, LockTimeoutError

__all__ = ["BlockLock", "FileLock", "Cancel", "LockWaitCancelled", "InFlight", "IN_FLIGHT"]

logger = logging.getLogger(__name__)


#: Never open a lock file through a symbolic link (one planted in a cache would redirect it elsewhere).
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class _Descriptors:
    """The lock-file descriptors this process has open (held, being taken or probed), for fork.

    Opening and registering, and unregistering and closing, happen under one mutex that a fork takes
    first, so a forked child sees every such descriptor and no half-registered one.
    """

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.fds: set[int] = set()

    def open(self, path: str, flags: int) -> int:
        with self.mutex:
            fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
            self.fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        with self.mutex:
            self.fds.discard(fd)
            os.close(fd)

    def before_fork(self) -> None:
        self.mutex.acquire()

    def after_fork_in_parent(self) -> None:
        self.mutex.release()

    def after_fork_in_child(self) -> None:
        # Close without unlocking: LOCK_UN would release the parent's lock too (same description).
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = set()
        self.mutex = threading.Lock()


_DESCRIPTORS = _Descriptors()
os.register_at_fork(
    before=_DESCRIPTORS.before_fork,
    after_in_parent=_DESCRIPTORS.after_fork_in_parent,
    after_in_child=_DESCRIPTORS.after_fork_in_child,
)


def _open_and_lock(path: str, blocking: bool) -> int | None:
    """Return a file descriptor holding an exclusive flock on ``path``, or ``None`` if it is taken."""
    while True:
        try:
            fd = _DESCRIPTORS.open(path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW)
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
            _DESCRIPTORS.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        except BaseException:  # e.g. KeyboardInterrupt while blocked in flock: do not leak the descriptor
            _DESCRIPTORS.close(fd)
            raise
        try:
            on_disk = os.stat(path)
        except FileNotFoundError:
            on_disk = None
        mine = os.fstat(fd)
        if on_disk is not None and (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        # The previous holder removed the file while we waited for it: lock the current one instead.
        _DESCRIPTORS.close(fd)


class BlockLock:
    """An exclusive, process-death-safe lock on ``path``.

    One instance is one would-be holder: it is not re-entrant. Threads of the same process exclude each
    other too, because each instance opens its own file description. A lock is held by the process that
    took it: in a forked child an inherited instance is not held, and releasing it there does nothing.

    Parameters
    ----------
    path
        The lock file. Its directory is created if missing.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._fd: int | None = None
        self._pid = 0  # the process that holds it
        self._abandoned = False

    @property
    def held(self) -> bool:
        """Whether this instance holds the lock (in this process)."""
        return self._fd is not None and self._pid == os.getpid()

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
        if self.held:
            raise RuntimeError(f"lock {self.path} is already held by this instance")
        if not blocking:
            fd = _open_and_lock(self.path, blocking=False)
        elif timeout is None and cancel is None:
            fd = _open_and_lock(self.path, blocking=True)
        else:
            fd = _open_and_lock(self.path, blocking=False)
            if fd is None:
                fd = self._wait_in_helper(timeout, cancel)
        if fd is None:
            return False
        with _DESCRIPTORS.mutex:
            self._fd, self._pid, self._abandoned = fd, os.getpid(), False
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
        """Release the lock and remove its file.

        Releasing a lock not held is an error, except after :meth:`abandon` (it was released already) and
        in a forked child (the lock is the parent's: the child neither unlocks nor removes it).
        """
        fd, inherited = self._take()
        if fd is None:
            if self._abandoned or inherited:
                return
            raise RuntimeError(f"lock {self.path} is not held by this instance")
        _unlink_and_close(self.path, fd)

    def abandon(self) -> None:
        """Release the lock now if it is held, from any thread; the holder's own :meth:`release` then does
        nothing. Used by a fileset's ``close()`` for downloads it stops waiting for."""
        fd, _ = self._take(abandon=True)
        if fd is not None:
            _unlink_and_close(self.path, fd)

    def _take(self, abandon: bool = False) -> tuple[int | None, bool]:
        # Exactly one of release() and abandon() gets the descriptor; in a forked child, neither does.
        with _DESCRIPTORS.mutex:
            fd, self._fd = self._fd, None
            inherited = fd is not None and self._pid != os.getpid()
            if abandon and fd is not None and not inherited:
                self._abandoned = True
        return (None if inherited else fd), inherited

    def locked_elsewhere(self) -> bool:
        """Whether another holder (any thread or process) has the lock right now. Takes nothing."""
        try:
            fd = _DESCRIPTORS.open(self.path, os.O_RDWR | _O_NOFOLLOW)
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
            _DESCRIPTORS.close(fd)
        return False

    def __enter__(self) -> BlockLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"BlockLock({self.path!r}, held={self.held})"


def _unlink_and_close(path: str, fd: int) -> None:
    # Unlinking first is safe: whoever opened this file and waits for it re-checks the inode once it has
    # the lock (see _open_and_lock) and locks the file now at ``path`` instead.
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        _DESCRIPTORS.close(fd)


class FileLock:
    """A shared or exclusive ``flock`` on a file that is never removed (cache-level files such as the
    footprint ledger), with the fork safety of :class:`BlockLock`.

    Unlike :class:`BlockLock` the file stays: shared holders and an exclusive one must lock the same
    inode. It is opened without following a symbolic link. One instance is one would-be holder; threads
    exclude each other through separate instances. ``fd`` is the open descriptor while held (the ledger
    reads and writes its record through it).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.fd: int | None = None
        self._pid = 0

    def acquire(self, *, shared: bool = False, blocking: bool = True) -> bool:
        """Take the lock; ``False`` only when ``blocking`` is false and another holder excludes us.

        Raises :class:`~lazyflow_rbfs.errors.CacheWriteError` when the file cannot be opened or created
        (a symbolic link is refused).
        """
        if self.fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this instance")
        try:
            fd = _DESCRIPTORS.open(self.path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW)
        except OSError as exc:
            raise CacheWriteError.from_os_error(exc, self.path, "open the lock file") from exc
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, mode)
        except OSError as exc:
            _DESCRIPTORS.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        except BaseException:
            _DESCRIPTORS.close(fd)
            raise
        self.fd, self._pid = fd, os.getpid()
        return True

    def release(self) -> None:
        """Drop the lock (closing the descriptor); does nothing when not held (or held by the parent of
        a forked child: the child's copy was closed at the fork)."""
        fd, self.fd = self.fd, None
        if fd is not None and self._pid == os.getpid():
            _DESCRIPTORS.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


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

    def finish(
        self,
        key: Hashable,
        exc: BaseException | None = None,
        result: object = None,
        future: Future | None = None,
    ) -> None:
        """End the work for ``key``: wake every waiter with ``result`` or ``exc``.

        With ``future`` (the one :meth:`claim` gave the owner), only that claim is ended: if it was
        ended already (a closing fileset abandoned it) this does nothing, and a newer claim of the same
        key is left alone.
        """
        with self._mutex:
            current = self._futures.get(key)
            if future is None:
                future = current
            if future is None:
                raise KeyError(key)
            if current is future:
                del self._futures[key]
        try:
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)
        except InvalidStateError:  # ended already by whoever abandoned it
            pass

    def __len__(self) -> int:
        with self._mutex:
            return len(self._futures)

    def _reset(self) -> None:
        # A forked child has none of its parent's worker threads: their work will never finish there.
        self._mutex = threading.Lock()
        self._futures = {}


IN_FLIGHT = InFlight()
os.register_at_fork(after_in_child=IN_FLIGHT._reset)
