"""BlockFetcher: gets missing blocks of a remote volume into the local store, each once.

How a block gets into the cache (see DESIGN.md, "Concurrency model"):

1. In this process, the first thread that needs a missing block claims it in the process-wide
   :data:`~lazyflow_rbfs.locks.IN_FLIGHT` table and queues one download task; every other thread that needs
   it waits on the same future and is woken the moment the task ends.
2. The task tries the block's OS lock without blocking. If another process holds it, the task goes to the
   back of the queue and then waits on the lock (the kernel wakes it; the lock dies with its holder).
3. Holding the lock, it checks ``STATUS.txt`` again, downloads and validates the block, publishes it
   through the store (temp file, rename, ``STATUS.txt``) and releases the lock.

Only the download tasks touch the network, on one bounded pool of ``max_parallel`` daemon threads
(:class:`~lazyflow_rbfs.pool.WorkerPool`); readers only wait on futures. :meth:`BlockFetcher.close` never
waits for the network: queued downloads are dropped, the ones in flight are abandoned (their waiters are
woken, their block locks released) and can no longer publish; only a publish already writing to the local
disk is waited for.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from functools import partial
from typing import Any

import numpy as np

from lazyflow_rbfs import geometry
from lazyflow_rbfs.errors import ClosedError
from lazyflow_rbfs.locks import IN_FLIGHT, BlockLock, Cancel, LockWaitCancelled
from lazyflow_rbfs.pool import PoolClosed, Task, WorkerPool
from lazyflow_rbfs.store import BlockStore  # (imports h5py first: see _ForkGate)

__all__ = ["BlockFetcher", "Abandoned"]

logger = logging.getLogger(__name__)


class Abandoned(Exception):
    """A download was dropped (its fileset closed, or the read that queued it was interrupted).

    Whoever waits on it claims the block again, unless it is a fileset that is closing itself.
    """


#: Downloads a read queued: claim → (key, pool, task).
_Queued = dict[Future, tuple[str, WorkerPool, Task]]


class _ForkGate:
    """Sections of code that no ``fork`` may split: a publish writing a block file through HDF5.

    HDF5 knows open files by inode. A child forked while a block's temp file is open for writing would
    keep that half-written file open in its copy of the library: opening the published block later
    would hand it that stale file (wrong or missing dataset), and its exit could flush stale metadata
    into the block its parent just published. Before a fork, the forking thread waits for the publishes
    under way (local writes) and keeps new ones from starting until the fork is done.

    Registered here, after :mod:`lazyflow_rbfs.store` imported h5py: fork calls "before" hooks in reverse
    order of registration, so this one waits for publishes before h5py's hook takes the library lock they
    need.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0

    def __enter__(self) -> None:
        with self._cond:
            self._active += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._cond:
            self._active -= 1
            if not self._active:
                self._cond.notify_all()

    def before_fork(self) -> None:
        self._cond.acquire()
        self._cond.wait_for(lambda: self._active == 0)  # returns holding the lock: no section starts

    def after_fork_in_parent(self) -> None:
        self._cond.release()

    def after_fork_in_child(self) -> None:
        self._cond = threading.Condition()
        self._active = 0


_NO_FORK = _ForkGate()
os.register_at_fork(
    before=_NO_FORK.before_fork,
    after_in_parent=_NO_FORK.after_fork_in_parent,
    after_in_child=_NO_FORK.after_fork_in_child,
)


class BlockFetcher:
    """Downloads missing blocks from a remote and publishes them into a :class:`BlockStore`.

    Parameters
    ----------
    blocks
        The local store (paths, locks, disk rois).
    fetch
        ``fetch((disk_start, disk_stop)) -> array``: one validated block from the remote.
    publish
        ``publish(block_start, array)``: store a downloaded block (the caller holds its lock).
    available
        ``available(block_start) -> bool``: whether the block is cached (``STATUS.txt``).
    check_open
        Raises :class:`~lazyflow_rbfs.errors.ClosedError` when the fileset is closed.
    max_parallel, lock_timeout
        Download threads of the shared pool; seconds to wait for another process's block lock.
    name
        Shown in errors (the description path).
    """

    def __init__(
        self,
        blocks: BlockStore,
        *,
        fetch: Callable[[Any], np.ndarray],
        publish: Callable[[tuple[int, ...], np.ndarray], None],
        available: Callable[[tuple[int, ...]], bool],
        check_open: Callable[[], None],
        max_parallel: int,
        lock_timeout: float | None,
        name: str,
    ) -> None:
        self.blocks = blocks
        self._fetch = fetch
        self._publish = publish
        self.available = available
        self._check_open = check_open
        self.max_parallel = max_parallel
        self.lock_timeout = lock_timeout
        self._name = name
        self.downloaded = 0  # blocks this fetcher published
        self._closing = False
        self._generation = 0  # bumped by close(): downloads started before cannot publish after
        self._init_state()

    def _init_state(self) -> None:
        """Locks, pools and bookkeeping of the downloads (new ones in a forked child)."""
        self._pool: WorkerPool | None = None
        self._pool_mutex = threading.Lock()
        self._prefetch_pools: set[WorkerPool] = set()
        #: Cancels waits on other processes' block locks (set by close()).
        self.lock_wait_cancel = Cancel()
        self._counter_mutex = threading.Lock()
        # The gate: close() waits for publishes under way (local writes only) and then lets none start;
        # it abandons the downloads still in flight (wakes their waiters, releases their locks).
        self._gate = threading.Condition()
        self._publishing = 0
        self._in_flight: dict[Future, tuple[str, BlockLock | None]] = {}  # claim -> (key, lock held)

    def after_fork_in_child(self) -> None:
        """Start afresh in a forked child: the parent's download threads, queues and locks are not ours."""
        self._init_state()

    @property
    def closing(self) -> bool:
        """True from :meth:`close` until :meth:`reopen`."""
        return self._closing

    # -- pools of prefetch calls --

    def open_prefetch_pool(self, size: int) -> WorkerPool:
        """A pool of ``size`` threads for one prefetch call; :meth:`close` shuts it down too."""
        pool = WorkerPool(size, "rbfs-prefetch")
        with self._pool_mutex:
            self._check_open()
            if self._closing:
                raise ClosedError(f"I/O on a closing fileset ({self._name})")
            self._prefetch_pools.add(pool)
        return pool

    def close_prefetch_pool(self, pool: WorkerPool) -> None:
        """Shut down a pool of :meth:`open_prefetch_pool` (never waits) and forget it."""
        pool.shutdown()
        with self._pool_mutex:
            self._prefetch_pools.discard(pool)

    def claim(self, pool: WorkerPool, block_start: tuple[int, ...]) -> tuple[Future, bool]:
        """Claim the block's download in this process: ``(future, owner)``; the owner's download is
        queued on ``pool`` (a pool shut down ends the claim with :class:`Abandoned`)."""
        key = self.blocks.paths(block_start).file_path
        future, owner = IN_FLIGHT.claim(key)
        if owner:
            self._submit(pool, block_start, key, future, False)
        return future, owner

    def ensure(
        self,
        block_starts: Iterable[tuple[int, ...]],
        on_data: Callable[[tuple[int, ...], np.ndarray], Any] | None = None,
    ) -> None:
        """Return once every block in ``block_starts`` is available; raise the first failure.

        ``on_data(block_start, array)`` is called, in this thread and in completion order, for each block
        downloaded meanwhile, with its validated array (which is then no longer held). Interrupted
        (``KeyboardInterrupt``), it drops the downloads it queued that have not started.
        """
        waiting: dict[Future, tuple[int, ...]] = {}
        queued: _Queued = {}  # the downloads this call queued, dropped if it is interrupted
        # Each future puts itself here when it ends: one hand-over per block, where
        # concurrent.futures.wait() would arm and disarm every pending future once per completion.
        finished: queue.SimpleQueue[Future] = queue.SimpleQueue()

        def request(block_start: tuple[int, ...]) -> None:
            future = self._request_block(block_start, queued)
            waiting[future] = block_start
            future.add_done_callback(finished.put)

        try:
            for block_start in block_starts:
                if not self.available(block_start):
                    request(block_start)
            first_error: BaseException | None = None
            while waiting:
                future = finished.get()
                if future not in waiting:
                    continue  # a block listed twice: its one download was handled already
                block_start = waiting.pop(future)
                queued.pop(future, None)  # (holds the block's array until popped)
                try:
                    _, data = future.result()
                except Abandoned:
                    if self._closing:
                        first_error = first_error or ClosedError("the fileset was closed during the download")
                    else:  # dropped by another fileset's close or another read's interrupt: fetch it
                        request(block_start)
                    continue
                except Exception as exc:  # noqa: BLE001 - raised below, once every wait has ended
                    first_error = first_error or exc
                    continue
                if data is not None and on_data is not None:
                    on_data(block_start, data)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # KeyboardInterrupt: nobody asked for what is still queued
                self._drop_queued(queued)
            raise
        if first_error is not None:
            raise first_error

    @staticmethod
    def _drop_queued(queued: _Queued) -> None:
        for future, (key, pool, task) in queued.items():
            if not future.done() and pool.cancel(task):
                IN_FLIGHT.finish(key, exc=Abandoned("the read that queued it was interrupted"), future=future)

    def _request_block(self, block_start: tuple[int, ...], queued: _Queued | None = None) -> Future:
        """The future of ``block_start``'s download in this process, queueing the download if nobody has."""
        key = self.blocks.paths(block_start).file_path
        future, owner = IN_FLIGHT.claim(key)
        if owner:
            try:
                pool = self._get_pool()
            except BaseException as exc:  # closed under us: let other waiters claim it again
                IN_FLIGHT.finish(key, exc=Abandoned(str(exc) or type(exc).__name__), future=future)
                raise
            task = self._submit(pool, block_start, key, future, False)
            if task is not None and queued is not None:
                queued[future] = (key, pool, task)
        return future

    def _submit(
        self, pool: WorkerPool, block_start: tuple[int, ...], key: str, future: Future, wait_for_lock: bool
    ) -> Task | None:
        """Queue the download of a block claimed as ``future``; a pool shut down ends the claim."""
        drop = partial(self._abandon_claim, key, future, "the fileset was closed")
        try:
            return pool.submit(
                partial(self._download_task, block_start, key, future, pool, wait_for_lock), drop=drop
            )
        except PoolClosed:
            drop()
            return None
        except BaseException as exc:  # e.g. KeyboardInterrupt: let other waiters claim it again
            self._abandon_claim(key, future, str(exc) or type(exc).__name__)
            raise

    @staticmethod
    def _abandon_claim(key: str, future: Future, why: str) -> None:
        IN_FLIGHT.finish(key, exc=Abandoned(why), future=future)

    def _download_task(
        self,
        block_start: tuple[int, ...],
        key: str,
        future: Future,
        pool: WorkerPool,
        wait_for_lock: bool,
    ) -> None:
        if pool.closed:
            # Queued before its pool was shut down or refused new work (close(), an interrupt, an
            # early stop), dequeued after: not started.
            IN_FLIGHT.finish(key, exc=Abandoned("the download was dropped before it started"), future=future)
            return
        try:
            outcome, data = self._fetch_block(block_start, future, wait_for_lock)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter through the future
            if self._closing and not isinstance(exc, Abandoned):
                # close() abandoned this request (and may have aborted it): not a download failure.
                logger.debug("download of block %s abandoned at close: %s", list(block_start), exc)
                exc = Abandoned("the fileset was closed during the download")
            IN_FLIGHT.finish(key, exc=exc, future=future)
            return
        if outcome == "busy":
            # Another process is downloading it: let blocks nobody else is fetching go first.
            self._submit(pool, block_start, key, future, True)
            return
        IN_FLIGHT.finish(key, result=(outcome, data), future=future)

    def _fetch_block(
        self, block_start: tuple[int, ...], future: Future, wait_for_lock: bool
    ) -> tuple[str, np.ndarray | None]:
        """Make one block available.

        Returns ``("downloaded", data)`` with the published block's array, or ``("present", None)``
        (someone else published it), or ``("busy", None)`` (another process holds its lock; not waited for).
        Raises :class:`Abandoned` when the fileset closes first.
        """
        with self._gate:
            if self._closing:
                raise Abandoned("the fileset was closed")
            generation = self._generation
            key = self.blocks.paths(block_start).file_path
            self._in_flight[future] = (key, None)
        held: BlockLock | None = None
        try:
            if self.available(block_start):
                return "present", None
            lock = self.blocks.lock(block_start)
            if wait_for_lock:
                logger.debug(
                    "block %s is being downloaded by another process; waiting for it", list(block_start)
                )
                try:
                    lock.acquire(timeout=self.lock_timeout, cancel=self.lock_wait_cancel)
                except LockWaitCancelled:
                    raise Abandoned("the fileset was closed") from None
            elif not lock.acquire(blocking=False):
                return "busy", None
            held = lock
            with self._gate:
                if generation != self._generation:
                    raise Abandoned("the fileset was closed")
                self._in_flight[future] = (key, lock)  # close() releases it
            if self.available(block_start):
                return "present", None
            disk_start, disk_stop = self.blocks.disk_roi(block_start)
            logger.debug(
                "downloading block %s (disk %s)", block_start, geometry.roi_string(disk_start, disk_stop)
            )
            data = self._fetch((disk_start, disk_stop))
            with self._gate:
                # Past this point close() waits for the publish; before it, close() wins and the block is
                # left to the next download.
                if generation != self._generation:
                    raise Abandoned("the fileset was closed during the download")
                self._publishing += 1
            try:
                with _NO_FORK:
                    self._publish(block_start, data)
            finally:
                with self._gate:
                    self._publishing -= 1
                    self._gate.notify_all()
        finally:
            with self._gate:
                self._in_flight.pop(future, None)
            if held is not None:
                held.release()  # does nothing if close() released it already
        with self._counter_mutex:
            self.downloaded += 1
        return "downloaded", data

    def _get_pool(self) -> WorkerPool:
        self._check_open()
        with self._pool_mutex:
            if self._closing:
                raise ClosedError(f"I/O on a closing fileset ({self._name})")
            if self._pool is None:
                self._pool = WorkerPool(self.max_parallel, "rbfs-download")
            return self._pool

    def close(self) -> None:
        """Stop downloading without waiting for the network (see the module docstring). Idempotent."""
        with self._gate:
            self._closing = True
            self._generation += 1
        self.lock_wait_cancel.cancel()  # a worker waiting on another process's lock stops at once
        with self._pool_mutex:
            pools = [self._pool, *self._prefetch_pools]
            self._pool = None
        for pool in pools:  # prefetch calls running in other threads stop too
            if pool is not None:
                pool.shutdown()  # queued downloads are dropped: their waiters are woken now
        with self._gate:
            self._gate.wait_for(lambda: self._publishing == 0)
            abandoned = list(self._in_flight.items())
        for future, (key, lock) in abandoned:
            if lock is not None:
                lock.abandon()  # another process may fetch the block now; ours can no longer publish
            IN_FLIGHT.finish(key, exc=Abandoned("the fileset was closed during the download"), future=future)

    def reopen(self) -> None:
        """Accept downloads again after :meth:`close`."""
        self.lock_wait_cancel = Cancel()
        with self._gate:
            self._closing = False
