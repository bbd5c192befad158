"""A bounded pool of daemon worker threads whose queued work can be dropped at once.

The cache runs its downloads here rather than on a ``concurrent.futures.ThreadPoolExecutor``, whose
threads the interpreter joins at exit: a download blocked on a hung server would then hold the process
(and a Ctrl-C) for as long as the request lasts. Here:

* at most ``size`` threads, started on demand and kept while the pool is open (each keeps its HTTP
  connections warm);
* the threads are daemon threads and nothing joins them: they never delay the interpreter's exit;
* :meth:`WorkerPool.shutdown` never waits for a task: queued tasks are handed back (their ``drop``
  callback runs instead of the task), and a thread still running a task finishes it in the background,
  then ends (idle threads are gone when it returns);
* :meth:`WorkerPool.cancel` drops one queued task (a read that was interrupted);
* in a forked child the pool starts over empty: its parent's threads do not exist there.

Tasks report their own outcome (the cache finishes an :class:`~lazyflow_rbfs.locks.InFlight` future);
an exception escaping a task is logged, never raised in the pool.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

__all__ = ["WorkerPool", "PoolClosed", "Task", "wait_for_running_tasks"]

logger = logging.getLogger(__name__)

_QUEUED, _RUNNING, _DROPPED = "queued", "running", "dropped"


class PoolClosed(RuntimeError):
    """A task was submitted to a pool that was shut down."""


class Task:
    """A submitted task: ``run()`` on a worker thread, or ``drop()`` if it never gets to run."""

    __slots__ = ("run", "drop", "state")

    def __init__(self, run: Callable[[], object], drop: Callable[[], object] | None) -> None:
        self.run = run
        self.drop = drop
        self.state = _QUEUED

    @property
    def started(self) -> bool:
        return self.state == _RUNNING


_LIVE_POOLS: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_LIVE_POOLS):
        pool._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def wait_for_running_tasks(timeout: float) -> int:
    """Wait up to ``timeout`` seconds until no pool of this process runs a task; return how many still do.

    For the interpreter's exit only (see the cache's ``_close_at_exit``).
    """
    deadline = time.monotonic() + timeout
    running = 0
    for pool in list(_LIVE_POOLS):
        with pool._cond:
            pool._cond.wait_for(lambda p=pool: p._running == 0, max(0.0, deadline - time.monotonic()))
            running += pool._running
    return running


class WorkerPool:
    """At most ``size`` daemon threads running submitted tasks in order of submission.

    Parameters
    ----------
    size
        Most threads (and so tasks running) at once.
    name
        Thread name prefix.
    """

    def __init__(self, size: int, name: str) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"a worker pool needs a positive number of threads, got {size!r}")
        self.size = size
        self.name = name
        self._cond = threading.Condition()
        self._queue: deque[Task] = deque()
        self._threads = 0
        self._running = 0
        self._idle: set[threading.Thread] = set()
        self._started = 0
        self._closed = False
        _LIVE_POOLS.add(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def refuse(self) -> None:
        """Refuse new tasks from now on (:attr:`closed` is true) without dropping the queued ones yet.

        Cheap and runs no callback, so it may be called under a caller's own lock; tasks that look at
        :attr:`closed` before starting their work (the cache's downloads do) then end at once, and
        :meth:`shutdown` drops what is still queued.
        """
        with self._cond:
            self._closed = True

    @property
    def threads(self) -> int:
        """Worker threads alive (idle or running a task)."""
        with self._cond:
            return self._threads

    def submit(self, run: Callable[[], object], drop: Callable[[], object] | None = None) -> Task:
        """Queue ``run``; if the pool is shut down before it starts, ``drop()`` is called instead.

        Raises
        ------
        PoolClosed
            The pool was shut down.
        """
        task = Task(run, drop)
        with self._cond:
            if self._closed:
                raise PoolClosed(f"the {self.name} pool is shut down")
            self._queue.append(task)
            if len(self._queue) > len(self._idle) and self._threads < self.size:
                self._start_thread()
            self._cond.notify()
        return task

    def cancel(self, task: Task) -> bool:
        """Drop ``task`` if it has not started (its ``drop`` is NOT called); return whether it was dropped."""
        with self._cond:
            if task.state != _QUEUED:
                return False
            task.state = _DROPPED  # left in the queue; the workers skip it
            return True

    def shutdown(self) -> None:
        """Stop: drop every queued task (calling its ``drop``), let running ones finish alone.

        Never waits for a task; the threads that were idle have ended when it returns.
        """
        with self._cond:
            self._closed = True
            dropped = [task for task in self._queue if task.state == _QUEUED]
            for task in dropped:
                task.state = _DROPPED
            self._queue.clear()
            idle = list(self._idle)
            self._cond.notify_all()
        for task in dropped:
            if task.drop is not None:
                try:
                    task.drop()
                except Exception:  # noqa: BLE001 - one owner's failure must not keep others waiting
                    logger.exception("dropping a queued task of the %s pool failed", self.name)
        for thread in idle:
            thread.join()  # woken with nothing to do: it ends at once

    # -- workers ----------------------------------------------------------------------------------------

    def _start_thread(self) -> None:
        # Called with the condition held.
        self._threads += 1
        self._started += 1
        thread = threading.Thread(target=self._work, name=f"{self.name}-{self._started}", daemon=True)
        try:
            thread.start()
        except BaseException:
            self._threads -= 1
            raise

    def _next(self) -> Task | None:
        with self._cond:
            while True:
                while self._queue:
                    task = self._queue.popleft()
                    if task.state == _QUEUED:
                        task.state = _RUNNING
                        self._running += 1
                        return task
                if self._closed:
                    self._threads -= 1
                    return None
                me = threading.current_thread()
                self._idle.add(me)
                try:
                    self._cond.wait()
                finally:
                    self._idle.discard(me)

    def _work(self) -> None:
        while True:
            task = self._next()
            if task is None:
                return
            try:
                task.run()
            except BaseException:  # noqa: BLE001 - tasks report their own errors; keep the thread alive
                logger.exception("a task of the %s pool failed", self.name)
            finally:
                del task
                with self._cond:
                    self._running -= 1
                    if not self._running:
                        self._cond.notify_all()

    def _after_fork_in_child(self) -> None:
        # The parent's workers (and whatever they ran) do not exist here; what they had queued belonged to
        # work the child does not wait for (the in-flight table is reset too).
        self._cond = threading.Condition()
        self._queue = deque()
        self._threads = 0
        self._running = 0
        self._idle = set()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<WorkerPool {self.name} size={self.size} threads={self._threads} {state}>"
