"""RESTfulBlockwiseFileset: a remote volume read through a local, shared, crash-safe block cache.

How a block gets into the cache (see DESIGN.md, "Concurrency model"):

1. In this process, the first thread that needs a missing block claims it in the process-wide
   :data:`~lazyflow_rbfs.locks.IN_FLIGHT` table and queues one download task; every other thread that needs
   it waits on the same future and is woken the moment the task ends.
2. The task tries the block's OS lock without blocking. If another process holds it, the task goes to the
   back of the queue and then waits on the lock (the kernel wakes it; the lock dies with its holder).
3. Holding the lock, it checks ``STATUS.txt`` again, downloads and validates the block, writes it to a
   temporary file, renames it into place, writes ``STATUS.txt`` and releases the lock.

Only the download tasks touch the network, on one bounded pool of ``max_parallel`` daemon threads per
fileset (:class:`~lazyflow_rbfs.pool.WorkerPool`); callers of :meth:`RESTfulBlockwiseFileset.readData`
only wait on futures.

``close()`` (and a Ctrl-C) never waits for the network: queued downloads are dropped, the downloads in
flight are abandoned (their waiters are woken, their block locks released, and they can no longer
publish), and the worker threads left blocked on a slow server end on their own without holding up
the interpreter's exit.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from lazyflow_rbfs import description as _description
from lazyflow_rbfs import geometry, identity
from lazyflow_rbfs.errors import (
    ArgumentError,
    BlockNotReadyError,
    CacheWriteError,
    ClosedError,
    PrefetchError,
    RbfsError,
    ReadOnlyError,
    SchemaError,
)
from lazyflow_rbfs.locks import IN_FLIGHT, BlockLock, Cancel, LockWaitCancelled
from lazyflow_rbfs.pool import PoolClosed, Task, WorkerPool, wait_for_running_tasks
from lazyflow_rbfs.remote import RESTfulVolume
from lazyflow_rbfs.store import BlockwiseFileset
from lazyflow_rbfs.store.export import subset_view_roi

__all__ = ["RESTfulBlockwiseFileset", "PrefetchReport", "PrefetchInterrupted", "BlockList"]

logger = logging.getLogger(__name__)

#: How many failed blocks a :class:`PrefetchReport` describes in full (all are counted).
MAX_ERROR_DETAILS = 100

#: Default ``max_failures`` of a prefetch: it stops when the first this many blocks it attempts all fail
#: with the same error class (see :meth:`RESTfulBlockwiseFileset.downloadBlocks`).
DEFAULT_MAX_FAILURES = 8

#: ``errno`` values of an ``OSError`` from the cache's file system that fail every block alike.
_CACHE_WRITE_ERRNOS = frozenset(
    code
    for code in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, getattr(errno, "EDQUOT", None))
    if code is not None
)
#: At interpreter exit, how long to let abandoned downloads end (their HTTP requests are aborted by close())
#: before the process exits without them.
EXIT_GRACE_SECONDS = 1.0

#: How many times one read looks again at a block whose file it found missing or unreadable (each look
#: follows a new publish of the block by someone: a repair, a re-download after an eviction).
MAX_LOOKS_PER_BLOCK = 4


class _Abandoned(Exception):
    """A download was dropped (its fileset closed, or the read that queued it was interrupted).

    Whoever waits on it claims the block again, unless it is a fileset that is closing itself.
    """


class PrefetchInterrupted(KeyboardInterrupt):
    """A Ctrl-C stopped :meth:`RESTfulBlockwiseFileset.downloadBlocks`; ``report`` says how far it got.

    A :class:`KeyboardInterrupt`, so ``except KeyboardInterrupt`` catches it as before. Blocks neither
    done nor failed (``report.total - report.done``) were not fetched.
    """

    def __init__(self, message: str, report: PrefetchReport) -> None:
        super().__init__(message)
        self.report = report


#: Downloads a read queued: claim → (key, pool, task).
_Queued = dict[Future, tuple[str, WorkerPool, Task]]


class _ForkGate:
    """Sections of code that no ``fork`` may split: a publish writing a block file through HDF5.

    HDF5 knows open files by inode. A child forked while a block's temp file is open for writing would
    keep that half-written file open in its copy of the library: opening the published block later
    would hand it that stale file (wrong or missing dataset), and its exit could flush stale metadata
    into the block its parent just published. Before a fork, the forking thread waits for the publishes
    under way (local writes) and keeps new ones from starting until the fork is done.

    Registered here, after ``store`` imported h5py: fork calls "before" hooks in reverse order of
    registration, so this one waits for publishes before h5py's hook takes the library lock they need.
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

_LIVE_FILESETS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Let the interpreter exit cleanly while download threads are still out.

    Worker threads are daemon threads: nothing joins them, so the exit is never held up by the network.
    But a worker must not be inside h5py (decoding a response, writing a block) while the interpreter and
    HDF5 tear down: ended there, it would leave h5py's lock held (the teardown then waits forever) or an
    HDF5 file open on a Python object (HDF5's own exit handler then crashes closing it). So: close every
    fileset (no publish is under way or can start; requests in flight are aborted where the HTTP client
    can), give the abandoned downloads a short grace to end, and if some are still out (blocked on a
    server that does not answer), keep h5py's lock from then on so none of them can start using h5py.
    """
    for fileset in list(_LIVE_FILESETS):
        try:
            fileset.close()
        except Exception:  # noqa: BLE001 - exiting anyway
            logger.debug("closing %r at exit failed", fileset, exc_info=True)
    if wait_for_running_tasks(EXIT_GRACE_SECONDS):
        _keep_h5py_lock_until_exit()


def _keep_h5py_lock_until_exit() -> None:
    """Take h5py's global lock for the rest of the interpreter's life (called at exit only).

    Held by the main thread (it is re-entrant for it), it lets the teardown use h5py while any worker
    that would start using h5py waits instead, so none is ended holding it.
    """
    try:
        from h5py._objects import phil
    except ImportError:  # pragma: no cover - h5py always has it; nothing to protect otherwise
        return
    phil.acquire()


class BlockList(list):
    """A list of block starts that also compares with an int as its length.

    ``report.failed`` lists the failed blocks, yet ``report.failed == 0`` and ``report.failed > 0``
    read naturally as counts, like ``downloaded`` and ``skipped``.
    """

    __hash__ = None  # type: ignore[assignment]

    def _cmp(self, other: Any, op: Callable[[Any, Any], bool]) -> Any:
        if isinstance(other, int) and not isinstance(other, bool):
            return op(len(self), other)
        return NotImplemented

    def __eq__(self, other: Any) -> bool:  # type: ignore[override]
        result = self._cmp(other, lambda a, b: a == b)
        return list.__eq__(self, other) if result is NotImplemented else result

    def __ne__(self, other: Any) -> bool:  # type: ignore[override]
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __lt__(self, other: Any) -> bool:  # type: ignore[override]
        result = self._cmp(other, lambda a, b: a < b)
        return list.__lt__(self, other) if result is NotImplemented else result

    def __le__(self, other: Any) -> bool:  # type: ignore[override]
        result = self._cmp(other, lambda a, b: a <= b)
        return list.__le__(self, other) if result is NotImplemented else result

    def __gt__(self, other: Any) -> bool:  # type: ignore[override]
        result = self._cmp(other, lambda a, b: a > b)
        return list.__gt__(self, other) if result is NotImplemented else result

    def __ge__(self, other: Any) -> bool:  # type: ignore[override]
        result = self._cmp(other, lambda a, b: a >= b)
        return list.__ge__(self, other) if result is NotImplemented else result

    def __int__(self) -> int:
        return len(self)

    def __reduce__(self):
        return (BlockList, (list(self),))


@dataclass
class PrefetchReport:
    """What :meth:`RESTfulBlockwiseFileset.downloadAllBlocks` did.

    Attributes
    ----------
    total
        Blocks in the region.
    downloaded
        Blocks this call fetched and published (a block another process or thread published while this
        call waited for it counts as skipped).
    skipped
        Blocks that were already available.
    failed
        Starts (view coordinates) of the blocks that could not be fetched, as a :class:`BlockList`
        (compares with an int as its count: ``report.failed == 0``).
    errors
        ``block start → error message`` for the first :data:`MAX_ERROR_DETAILS` failures.
    seconds
        Wall time of the call.
    error_types
        ``error class name → number of failed blocks`` (all failures counted).
    stop_reason
        Why the call stopped before attempting every block (its failures were systematic), or ``None``.
        Blocks it did not get to are neither failed nor skipped: see :attr:`not_attempted`.
    """

    total: int = 0
    downloaded: int = 0
    skipped: int = 0
    failed: BlockList = field(default_factory=BlockList)
    errors: dict[tuple[int, ...], str] = field(default_factory=dict)
    seconds: float = 0.0
    error_types: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None

    _KEYS = ("total", "downloaded", "skipped", "failed", "errors", "seconds", "error_types", "stop_reason")

    def __getitem__(self, key: str) -> Any:
        """``report["downloaded"]`` works like ``report.downloaded`` (mapping-style access)."""
        if key not in self._KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> tuple[str, ...]:
        return self._KEYS

    @property
    def done(self) -> int:
        return self.downloaded + self.skipped + len(self.failed)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def stopped_early(self) -> bool:
        """``True`` if the call gave up on systematic failures (:attr:`stop_reason` says why)."""
        return self.stop_reason is not None

    @property
    def not_attempted(self) -> int:
        """Blocks of :attr:`total` the call did not download, find cached or see fail: it stopped early."""
        return max(self.total - self.done, 0)

    def record_failure(self, block_start: tuple[int, ...], message: str, error_type: str) -> None:
        """Count one failed block (its message kept for the first :data:`MAX_ERROR_DETAILS`)."""
        self.failed.append(block_start)
        if len(self.errors) < MAX_ERROR_DETAILS:
            self.errors[block_start] = message
        self.error_types[error_type] = self.error_types.get(error_type, 0) + 1

    def summary(self) -> str:
        text = (
            f"{self.total} blocks: {self.downloaded} downloaded, {self.skipped} already cached, "
            f"{len(self.failed)} failed"
        )
        if self.not_attempted:
            text += f", {self.not_attempted} not attempted"
        text += f", in {self.seconds:.1f} s"
        if self.stop_reason:
            text += f"; stopped early: {self.stop_reason}"
        if self.failed:
            first = self.failed[0]
            text += f"; first failure at block {list(first)}: {self.errors.get(first, '?')}"
        return text


class _SystematicFailures:
    """Decides when a prefetch gives up because every block it has not tried yet would fail as well.

    * The cache cannot be written (:class:`~lazyflow_rbfs.errors.CacheWriteError`, or an ``OSError`` of
      the cache's file system saying it is full, read-only, over quota or forbidden): at the first one.
    * The first ``max_failures`` blocks attempted (downloaded or failed; blocks found cached do not count)
      all failed with the same error class: a dead server, a wrong URL. Once a block was downloaded, or
      two error classes were seen among those first blocks, later failures never stop the call (they are
      about single blocks: a missing region, a flaky response).

    ``max_failures`` ``0`` or ``None`` never stops early. Not thread-safe: callers hold their own lock.
    """

    def __init__(self, max_failures: int | None) -> None:
        self.limit = max_failures or 0
        self.attempts = 0
        self.kinds: set[str] = set()
        self.armed = self.limit > 0

    def cache_failure(self, exc: BaseException) -> str | None:
        """The reason to stop if ``exc`` says the cache cannot be written at all."""
        if self.limit <= 0:
            return None
        if isinstance(exc, CacheWriteError) or (
            isinstance(exc, OSError) and not isinstance(exc, RbfsError) and exc.errno in _CACHE_WRITE_ERRNOS
        ):
            return (
                f"the cache cannot be written ({type(exc).__name__}: {exc}); downloading more blocks would "
                "only throw them away"
            )
        return None

    def observe(self, downloaded: int, failures: Mapping[str, int]) -> str | None:
        """Count finished blocks (``failures``: error class name → count); the reason to stop, once."""
        if not self.armed:
            return None
        self.attempts += downloaded + sum(failures.values())
        self.kinds.update(kind for kind, n in failures.items() if n)
        if downloaded or len(self.kinds) > 1:
            self.armed = False
            return None
        if self.attempts < self.limit:
            return None
        self.armed = False
        (kind,) = self.kinds
        return (
            f"the first {self.attempts} blocks attempted all failed with {kind} (max_failures={self.limit})"
        )


def _check_max_failures(max_failures: Any) -> int:
    if max_failures is None:
        return 0
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise ArgumentError(
            f"max_failures must be None or an integer >= 0 (0: never stop early), got {max_failures!r}"
        )
    return max_failures


class RESTfulBlockwiseFileset(BlockwiseFileset):
    """A remote volume with every block it serves downloaded once into a local blockwise cache.

    Read-only. Any number of threads, processes and machines may share one cache directory.

    Parameters
    ----------
    compositeDescriptionPath
        A ``"RESTful-blockwise-fileset-description"`` JSON file.
    max_parallel
        Downloads in flight at once from this fileset (default 8).
    timeout
        Seconds per request, or ``(connect, read)``.
    retries
        Attempts after the first for each request (``retries=2``: at most 3 requests per block).
    lock_timeout
        Seconds to wait for a block another process is downloading; ``None`` waits as long as it lives.
    headers
        Extra HTTP headers (e.g. authorisation). Never written to disk or logs.
    progress
        Default for :meth:`downloadAllBlocks`: ``True`` for a progress bar, or a callable
        ``progress(done, total)``.
    max_open_files
        Block files held open at most for reading.
    fsync
        fsync each block file before its rename and ``STATUS.txt`` after it (default ``True``);
        ``False`` trades surviving a power loss for speed (scratch caches).

    Examples
    --------
    >>> vol = RESTfulBlockwiseFileset("bock11.json", max_parallel=16)  # doctest: +SKIP
    >>> data = vol[0:32, 0:512, 0:512]                                    # doctest: +SKIP
    """

    DescriptionFields = _description.COMPOSITE_FIELDS

    @classmethod
    def readDescription(cls, descriptionFilePath: str) -> _description.Namespace:
        """Parse and validate a composite description (defaults filled in)."""
        return _description.read_composite(descriptionFilePath)

    @classmethod
    def writeDescription(cls, descriptionFilePath: str, descriptionFields: _description.Namespace) -> None:
        """Validate ``descriptionFields`` and replace the file atomically."""
        _description.write_description(descriptionFilePath, descriptionFields, "composite")

    @classmethod
    def _createAndReturnBlockwiseFileset(cls, descriptionFilePath: str, mode: str):
        """Factory hook: the fileset, or ``None`` if the file is not a composite description."""
        try:
            return cls(descriptionFilePath, mode=mode)
        except SchemaError:
            return None

    def __init__(
        self,
        compositeDescriptionPath: str,
        mode: str = "r",
        *,
        max_parallel: int = 8,
        timeout: float | tuple[float, float] = (10.0, 60.0),
        retries: int = 3,
        lock_timeout: float | None = None,
        headers: dict[str, str] | None = None,
        progress: bool | Callable[[int, int], Any] = False,
        max_open_files: int = 256,
        fsync: bool = True,
    ) -> None:
        # Read the description first: on a file that is not ours, SchemaError ("not mine") must win.
        self.compositeDescription = self.readDescription(compositeDescriptionPath)
        if mode != "r":
            raise ReadOnlyError(
                f"a RESTfulBlockwiseFileset is read-only: open it with mode 'r', not {mode!r}"
            )
        if not isinstance(max_parallel, int) or isinstance(max_parallel, bool) or max_parallel < 1:
            raise ArgumentError(f"max_parallel must be a positive integer, got {max_parallel!r}")
        if lock_timeout is not None and lock_timeout < 0:
            raise ArgumentError(f"lock_timeout must be None or >= 0 seconds, got {lock_timeout!r}")
        self._open_args = (
            os.path.abspath(os.fspath(compositeDescriptionPath)),
            dict(
                max_parallel=max_parallel,
                timeout=timeout,
                retries=retries,
                lock_timeout=lock_timeout,
                headers=headers,
                progress=progress if not callable(progress) else False,
                max_open_files=max_open_files,
                fsync=fsync,
            ),
        )
        self.localDescription = self.compositeDescription.local_description
        self.remoteDescription = self.compositeDescription.remote_description
        super().__init__(
            compositeDescriptionPath,
            "r",
            preparsedDescription=self.localDescription,
            max_open_files=max_open_files,
            fsync=fsync,
        )
        self._remoteVolume = self._open_remote()
        self.max_parallel = max_parallel
        self.lock_timeout = lock_timeout
        self.progress = progress
        self._init_download_state()
        self._closing = False
        self._generation = 0  # bumped by close(): downloads started before cannot publish after
        _LIVE_FILESETS.add(self)
        self.blocks_downloaded = 0

    def _check_cache_root(self) -> None:
        # Called by BlockwiseFileset.__init__ before anything is read: the root must not hold another volume.
        self._volume_identity = identity.identity_of(self.compositeDescription)
        recorded = identity.check(self._root_dir, self._volume_identity, self._descriptionFilePath)
        # Until the root records this volume, reads look at the record again (see _confirm_volume).
        self._volume_confirmed = recorded is not None

    def _publish(self, block_start: Any, data: Any) -> None:
        """Publish a downloaded block (the caller holds its lock); the first publish of this fileset
        records the root's volume first."""
        self._check_open()
        if not self._volume_confirmed:
            identity.record(self._root_dir, self._volume_identity, self._descriptionFilePath)
            self._volume_confirmed = True
        self.blocks.publish(block_start, data)

    def _confirm_volume(self) -> None:
        """After a read: if the root had no record when this fileset opened, look at it again.

        Any block another volume published since was published after that volume's record: look now,
        before handing out what was read.
        """
        if not self._volume_confirmed:
            recorded = identity.check(self._root_dir, self._volume_identity, self._descriptionFilePath)
            self._volume_confirmed = recorded is not None

    def _init_download_state(self) -> None:
        """Locks, pools and bookkeeping of the downloads (new ones in a forked child, see below)."""
        self._pool: WorkerPool | None = None
        self._pool_mutex = threading.Lock()
        self._prefetch_pools: set[WorkerPool] = set()
        self._cancel_lock_waits = Cancel()  # close() ends waits on other processes' locks
        self._counter_mutex = threading.Lock()
        # The gate: close() waits for publishes under way (local writes only) and then lets none start;
        # it abandons the downloads still in flight (wakes their waiters, releases their locks).
        self._gate = threading.Condition()
        self._publishing = 0
        self._in_flight: dict[Future, tuple[str, BlockLock | None]] = {}  # claim -> (key, lock held)

    def _after_fork_in_child(self) -> None:
        # Only the forking thread lives on in a child. The parent's download threads, their queues and
        # whatever locks they held at the fork are not ours: start afresh. (Their lock descriptors were
        # closed by locks.py; the in-flight table was reset.)
        super()._after_fork_in_child()
        self._init_download_state()

    def _open_remote(self) -> RESTfulVolume:
        options = self._open_args[1]
        return RESTfulVolume(
            preparsedDescription=self.remoteDescription,
            timeout=options["timeout"],
            retries=options["retries"],
            headers=options["headers"],
            max_parallel=options["max_parallel"],
        )

    def __reduce__(self):
        # Pickles as "open this description with these options" (dask workers, multiprocessing).
        # The headers travel with the pickle, in memory only; nothing is written to disk.
        path, options = self._open_args
        return (_reopen, (type(self), path, options))

    # ------------------------------------------------------------------ properties and numpy-style access

    @property
    def remote(self) -> RESTfulVolume:
        """The :class:`~lazyflow_rbfs.remote.RESTfulVolume` this cache downloads from."""
        return self._remoteVolume

    def __getitem__(self, key: Any) -> np.ndarray:
        """``vol[0:10, 5:27, 10:33]``: ints, step-1 slices and ``...``; ints drop their axis."""
        start, stop, squeeze = geometry.index_to_roi(key, self.shape)
        data = self.readData((start, stop))
        return data.reshape([n for i, n in enumerate(data.shape) if i not in squeeze]) if squeeze else data

    def __repr__(self) -> str:
        return (
            f"<RESTfulBlockwiseFileset {self.remoteDescription.name or ''!s} shape={tuple(self.shape)} "
            f"dtype={np.dtype(self.dtype).name} axes={self.axes!r} block_shape={tuple(self.block_shape)} "
            f"cache={self._root_dir!r}{' closed' if self._closed else ''}>"
        )

    # ------------------------------------------------------------------ reading

    def readData(self, roi: Any, out_array: np.ndarray | None = None) -> np.ndarray:
        """Read ``roi`` (view coordinates), downloading every block it needs that is not cached yet.

        Parameters
        ----------
        roi
            ``(start, stop)`` per axis.
        out_array
            Optional C-contiguous array of the roi's shape to fill; returned.

        Raises
        ------
        OutOfBoundsError
            The roi is not inside the view.
        DownloadError
            A block could not be fetched (after retries); names the URL and the HTTP status.
        LockTimeoutError
            Another process held a needed block longer than ``lock_timeout``.
        """
        self._check_open()
        start, stop = self.blocks.grid.check_roi(roi)
        out_array = self.blocks.output_array(start, stop, out_array)
        desc = self.description
        blocks = partial(geometry.iter_block_starts, start, stop, desc.block_shape)
        copied: set[tuple[int, ...]] = set()

        def take(block_start: tuple[int, ...], data: np.ndarray) -> None:
            # A block this call waited for is copied from memory as soon as it lands (then dropped),
            # not read back from its new file.
            block_slices, out_slices = geometry.block_projection(
                block_start, desc.block_shape, desc.view_shape, start, stop
            )
            out_array[out_slices] = data[block_slices]
            copied.add(block_start)

        self._ensure_blocks(blocks(), on_data=take)
        looked: dict[tuple[int, ...], list] = {}
        while True:
            try:
                self.blocks.read_into(start, stop, out_array, check_status=False, skip=copied)
                self._confirm_volume()
                return out_array
            except BlockNotReadyError as exc:
                # STATUS.txt said available but the block file is missing or unreadable: damaged by hand,
                # or someone is repairing, re-publishing or evicting it right now. Look again.
                self._look_again(exc, looked)
            self._ensure_blocks(blocks(), on_data=take)

    def _look_again(self, exc: BlockNotReadyError, looked: dict[tuple[int, ...], list]) -> None:
        """Decide whether a read that found a block's file missing or unreadable may try again.

        Returns when a retry is justified by progress, having discarded the block if it is still bad;
        otherwise raises ``exc``. ``looked`` (one dict per read) remembers, per block, what each earlier
        look found. A retry is justified when the block is missing now (this call or someone else
        discarded or evicted it; the next ensure downloads it or finds it re-published by someone else),
        or when its file is good now and is not the very file a retry already failed on. Each of these is
        a new publish of the block by someone, and :data:`MAX_LOOKS_PER_BLOCK` bounds them, so a read
        cannot spin.
        """
        block_start = tuple(int(x) for x in exc.block_start)
        seen = looked.setdefault(block_start, [])
        if len(seen) >= MAX_LOOKS_PER_BLOCK:
            raise exc
        try:
            what, identity = self.blocks.discard_broken(
                block_start, lock_timeout=self.lock_timeout, cancel=self._cancel_lock_waits
            )
        except LockWaitCancelled:
            raise ClosedError("the fileset was closed during the read") from exc
        if what == "intact" and identity in seen:
            raise exc  # this file checks good yet cannot be read: not something fetching again fixes
        logger.debug("block %s: %s after a failed read; reading it again", list(block_start), what)
        seen.append(identity)

    def _ensure_blocks(
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
        try:
            for block_start in block_starts:
                if self.getBlockStatus(block_start) != self.BLOCK_AVAILABLE:
                    waiting[self._request_block(block_start, queued)] = block_start
            first_error: BaseException | None = None
            while waiting:
                done, _ = wait(waiting, return_when=FIRST_COMPLETED)
                for future in done:
                    block_start = waiting.pop(future)
                    queued.pop(future, None)  # (holds the block's array until popped)
                    try:
                        _, data = future.result()
                    except _Abandoned:
                        if self._closing:
                            first_error = first_error or ClosedError(
                                "the fileset was closed during the download"
                            )
                        else:  # dropped by another fileset's close or another read's interrupt: fetch it
                            waiting[self._request_block(block_start, queued)] = block_start
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
                IN_FLIGHT.finish(
                    key, exc=_Abandoned("the read that queued it was interrupted"), future=future
                )

    def _request_block(self, block_start: tuple[int, ...], queued: _Queued | None = None) -> Future:
        """The future of ``block_start``'s download in this process, queueing the download if nobody has."""
        key = self.blocks.paths(block_start).file_path
        future, owner = IN_FLIGHT.claim(key)
        if owner:
            try:
                pool = self._get_pool()
            except BaseException as exc:  # closed under us: let other waiters claim it again
                IN_FLIGHT.finish(key, exc=_Abandoned(str(exc) or type(exc).__name__), future=future)
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
        IN_FLIGHT.finish(key, exc=_Abandoned(why), future=future)

    def _download_task(
        self,
        block_start: tuple[int, ...],
        key: str,
        future: Future,
        pool: WorkerPool,
        wait_for_lock: bool,
    ) -> None:
        try:
            outcome, data = self._fetch_block(block_start, future, wait_for_lock)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter through the future
            if self._closing and not isinstance(exc, _Abandoned):
                # close() abandoned this request (and may have aborted it): not a download failure.
                logger.debug("download of block %s abandoned at close: %s", list(block_start), exc)
                exc = _Abandoned("the fileset was closed during the download")
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
        Raises :class:`_Abandoned` when the fileset closes first.
        """
        with self._gate:
            if self._closing:
                raise _Abandoned("the fileset was closed")
            generation = self._generation
            key = self.blocks.paths(block_start).file_path
            self._in_flight[future] = (key, None)
        held: BlockLock | None = None
        try:
            if self.getBlockStatus(block_start) == self.BLOCK_AVAILABLE:
                return "present", None
            lock = self.blocks.lock(block_start)
            if wait_for_lock:
                logger.debug(
                    "block %s is being downloaded by another process; waiting for it", list(block_start)
                )
                try:
                    lock.acquire(timeout=self.lock_timeout, cancel=self._cancel_lock_waits)
                except LockWaitCancelled:
                    raise _Abandoned("the fileset was closed") from None
            elif not lock.acquire(blocking=False):
                return "busy", None
            held = lock
            with self._gate:
                if generation != self._generation:
                    raise _Abandoned("the fileset was closed")
                self._in_flight[future] = (key, lock)  # close() releases it
            if self.getBlockStatus(block_start) == self.BLOCK_AVAILABLE:
                return "present", None
            disk_start, disk_stop = self.blocks.disk_roi(block_start)
            logger.debug(
                "downloading block %s (disk %s)", block_start, geometry.roi_string(disk_start, disk_stop)
            )
            data = self._remoteVolume.fetch((disk_start, disk_stop))
            with self._gate:
                # Past this point close() waits for the publish; before it, close() wins and the block is
                # left to the next download.
                if generation != self._generation:
                    raise _Abandoned("the fileset was closed during the download")
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
            self.blocks_downloaded += 1
        return "downloaded", data

    def _get_pool(self) -> WorkerPool:
        self._check_open()
        with self._pool_mutex:
            if self._closing:
                raise ClosedError(f"I/O on a closing fileset ({self._descriptionFilePath})")
            if self._pool is None:
                self._pool = WorkerPool(self.max_parallel, "rbfs-download")
            return self._pool

    # ------------------------------------------------------------------ prefetching

    def downloadAllBlocks(
        self,
        max_parallel: int | None = None,
        skip_preparation: bool = False,
        *,
        roi: Any = None,
        progress: bool | Callable[[int, int], Any] | None = None,
        raise_on_failure: bool = True,
        scheduler: Any = None,
        batch_size: int | None = None,
        max_failures: int | None = DEFAULT_MAX_FAILURES,
        wait_for_workers: float | None = None,
    ) -> PrefetchReport:
        """Download every missing block of the view, or of ``roi``, and report what happened.

        Streams over the blocks (memory does not grow with their number), skips cached ones, keeps going
        past failures and raises :class:`~lazyflow_rbfs.errors.PrefetchError` at the end if any failed.
        Systematic failures stop it early (see ``max_failures``).
        Safe to run from several processes or machines on one cache at once: each block is fetched once.

        Parameters
        ----------
        max_parallel
            Downloads in flight at once for this call (default: the fileset's ``max_parallel``). A
            larger value also raises the fileset's limit on requests in flight to match.
        skip_preparation
            Accepted for upstream compatibility; block directories are created on demand.
        roi
            ``(start, stop)`` in view coordinates; default the whole view.
        progress
            ``True`` shows a tqdm bar on stderr, a callable gets ``(done, total)`` after each block;
            default the fileset's ``progress`` option.
        raise_on_failure
            ``False`` returns the report even when blocks failed.
        scheduler
            A ``dask.distributed`` ``Client``, cluster or scheduler address: hand the blocks to its workers
            in batches (needs the ``distributed`` extra). The workers must see this description at the same
            absolute path and share the cache directory; ``max_parallel`` then limits each worker process.
        batch_size
            Blocks per task with ``scheduler`` (default 64).
        max_failures
            Stop early when the first this many blocks attempted all fail with the same error class (default
            :data:`DEFAULT_MAX_FAILURES`), or at once when the cache cannot be written; ``0`` or ``None``
            never stops early. See :meth:`downloadBlocks`.
        wait_for_workers
            With ``scheduler``: seconds to wait for a first worker when the cluster has none (default
            :data:`lazyflow_rbfs.distributed.DEFAULT_WAIT_FOR_WORKERS`).

        Returns
        -------
        PrefetchReport

        Raises
        ------
        PrefetchError
            Blocks failed (and ``raise_on_failure``); ``.report`` holds the report.
        ArgumentError
            A bad option, or a ``scheduler`` address that is not of a form dask accepts.
        RemoteTimeoutError
            With ``scheduler``: the scheduler could not be reached, or no worker joined it in time.
        """
        del skip_preparation  # directories are made when a block is locked
        self._check_open()
        max_failures = _check_max_failures(max_failures)
        if scheduler is not None:
            from lazyflow_rbfs.distributed import DEFAULT_WAIT_FOR_WORKERS, prefetch_on_cluster

            return prefetch_on_cluster(
                self,
                scheduler,
                roi=roi,
                batch_size=batch_size,
                max_parallel=max_parallel,
                progress=progress,
                raise_on_failure=raise_on_failure,
                max_failures=max_failures,
                wait_for_workers=DEFAULT_WAIT_FOR_WORKERS if wait_for_workers is None else wait_for_workers,
            )
        view_shape = self.description.view_shape
        if roi is None:
            start, stop = np.zeros_like(view_shape), np.asarray(view_shape)
        else:
            start, stop = geometry.check_roi(roi, view_shape)
        block_shape = self.description.block_shape
        return self.downloadBlocks(
            geometry.iter_block_starts(start, stop, block_shape),
            max_parallel,
            total=geometry.count_blocks(start, stop, block_shape),
            progress=progress,
            raise_on_failure=raise_on_failure,
            max_failures=max_failures,
        )

    def downloadBlocks(
        self,
        block_starts: Iterable[Any],
        max_parallel: int | None = None,
        *,
        total: int | None = None,
        progress: bool | Callable[[int, int], Any] | None = None,
        raise_on_failure: bool = True,
        max_failures: int | None = DEFAULT_MAX_FAILURES,
    ) -> PrefetchReport:
        """Download the given blocks (view block starts) unless cached: the engine of downloadAllBlocks.

        ``block_starts`` may be any iterable, consumed lazily; ``total`` (for the report and progress)
        defaults to its ``len()`` when it has one. Used by distributed prefetching to run one batch of
        blocks on a worker.

        The call stops early, and says why in ``report.stop_reason``, when its failures are systematic:

        * the first ``max_failures`` blocks it attempts (downloaded or failed; blocks found cached do not
          count) all fail with the same error class — a dead server, a wrong ``url_format``;
        * at the first block whose failure says the cache cannot be written
          (:class:`~lazyflow_rbfs.errors.CacheWriteError`: full disk, read-only, quota).

        Once a block was downloaded, or the first blocks failed in different ways, later failures never stop
        the call. ``max_failures`` ``0`` or ``None`` never stops early. On a stop no further block is
        started (queued ones are dropped, running ones finish); the blocks not reached are counted in
        ``report.not_attempted``, neither failed nor skipped, and :class:`~lazyflow_rbfs.errors.PrefetchError`
        is raised at the end as for any failure.
        """
        self._check_open()
        rule = _SystematicFailures(_check_max_failures(max_failures))
        max_parallel = self.max_parallel if max_parallel is None else max_parallel
        if not isinstance(max_parallel, int) or max_parallel < 1:
            raise ArgumentError(f"max_parallel must be a positive integer, got {max_parallel!r}")
        if max_parallel > self.max_parallel:
            # Asking this call for more downloads at once than the fileset was opened with raises the
            # fileset's limit on requests in flight to match.
            self._remoteVolume.raise_max_parallel(max_parallel)
        if total is None:
            total = len(block_starts) if hasattr(block_starts, "__len__") else 0
        report = PrefetchReport(total=total)
        progress = self.progress if progress is None else progress
        bar, tick = _progress_reporter(progress, report.total)
        t0 = time.monotonic()
        mutex = threading.Lock()
        window = threading.Semaphore(max_parallel * 4)
        stop = threading.Event()  # set when the failures are systematic: start no further block
        dropped = [0]

        def watch(block_start: tuple[int, ...]) -> None:
            # Holds one window slot until record() has counted the block.
            key = self.blocks.paths(block_start).file_path
            future, owner = IN_FLIGHT.claim(key)
            if owner:
                # A pool that was shut down (close(), an interrupt, an early stop) between the loop's check
                # and here ends the claim with _Abandoned: record() sorts it out.
                self._submit(pool, block_start, key, future, False)
            future.add_done_callback(lambda f, b=block_start, o=owner: record(b, o, f))

        def record(block_start: tuple[int, ...], owner: bool, future: Future) -> None:
            exc = future.exception()
            if isinstance(exc, _Abandoned) and not self._closing:
                if pool.closed:
                    # This call was interrupted or stopped early and its pool dropped the queued download:
                    # the block is neither done nor failed (not attempted).
                    with mutex:
                        dropped[0] += 1
                    window.release()
                    return
                try:
                    watch(block_start)  # someone else dropped it: fetch it ourselves (keeps the slot)
                    return
                except BaseException as again:  # noqa: BLE001 - counted as this block's failure
                    exc = again
            try:
                if isinstance(exc, _Abandoned):
                    exc = ClosedError("the fileset was closed during the download")
                reason = None
                with mutex:
                    if exc is not None:
                        kind = type(exc).__name__
                        report.record_failure(block_start, f"{kind}: {exc}", kind)
                        if not isinstance(exc, ClosedError):  # closing is not a failure of the blocks
                            reason = rule.cache_failure(exc) or rule.observe(0, {kind: 1})
                    elif owner and future.result()[0] == "downloaded":
                        report.downloaded += 1
                        rule.observe(1, {})
                    else:
                        report.skipped += 1
                    if reason is not None and report.stop_reason is None:
                        report.stop_reason = reason
                        stop.set()
                    else:
                        reason = None
                    done = report.done
            finally:
                window.release()
            if exc is not None:
                logger.warning("block %s failed: %s", list(block_start), exc)
            if reason is not None:
                logger.warning("stopping the prefetch early: %s", reason)
                # Drop the queued downloads now (never waits: running ones finish and are recorded).
                pool.shutdown()
            tick(done)

        pool = WorkerPool(max_parallel, "rbfs-prefetch")
        with self._pool_mutex:
            self._check_open()
            if self._closing:
                raise ClosedError(f"I/O on a closing fileset ({self._descriptionFilePath})")
            self._prefetch_pools.add(pool)
        stopped_before_the_end = False
        interrupted: KeyboardInterrupt | None = None
        try:
            for block_start in block_starts:
                if self._closing:
                    break
                if stop.is_set():
                    stopped_before_the_end = True
                    break
                block_start = tuple(int(x) for x in block_start)
                if self.getBlockStatus(block_start) == self.BLOCK_AVAILABLE:
                    with mutex:
                        report.skipped += 1
                        done = report.done
                    tick(done)
                    continue
                window.acquire()
                try:
                    watch(block_start)
                except BaseException:
                    window.release()
                    raise
            # Wait for the tail: every submission holds a window slot until it is recorded.
            for _ in range(max_parallel * 4):
                window.acquire()
        except KeyboardInterrupt as exc:
            interrupted = exc
        finally:
            # Never waits: after an interrupt the queued blocks are dropped and the ones in flight go on
            # alone (close() abandons them).
            pool.shutdown()
            with self._pool_mutex:
                self._prefetch_pools.discard(pool)
            report.seconds = time.monotonic() - t0
            report.total = max(report.total, report.done)
            if report.stop_reason is not None and not (stopped_before_the_end or dropped[0]):
                report.stop_reason = None  # the stop came with the last blocks: nothing was left out
            if bar is not None:
                bar.close()
        if interrupted is not None:
            logger.info("prefetch interrupted: %s", report.summary())
            raise PrefetchInterrupted(f"prefetch interrupted: {report.summary()}", report) from interrupted
        return _finish_report(report, raise_on_failure, "prefetch")

    def to_dask(self, **options: Any) -> Any:
        """A dask array of the view whose chunks are the cache blocks (needs the ``distributed`` extra).

        Each chunk is read through the cache: in this process through this fileset, on a dask worker
        through a fileset the worker opens from the same description and options.
        """
        from lazyflow_rbfs.distributed import to_dask

        return to_dask(self, **options)

    # ------------------------------------------------------------------ exports

    def exportSubset(self, roi: Any, exportDirectory: str, use_view_coordinates: bool = True) -> str:
        """Download the blocks of a block-aligned ``roi`` if needed, then copy them into a new local fileset.

        The result is a plain ``blockwise-fileset-description`` with its blocks, readable without the
        remote and after this cache is deleted. Returns the new description's path.
        """
        self._check_open()
        start, stop = subset_view_roi(self.blocks.grid, roi, use_view_coordinates)
        self._ensure_blocks(geometry.iter_block_starts(start, stop, self.description.block_shape))
        if not self._volume_confirmed:
            identity.check(self._root_dir, self._volume_identity, self._descriptionFilePath)
        return super().exportSubset(roi, exportDirectory, use_view_coordinates)

    # ------------------------------------------------------------------ life cycle

    def purgeAllLocks(self) -> int:
        """Remove stale upstream lock files and stray temporary files; returns how many were removed."""
        return super().purgeAllLocks()

    def close(self) -> None:
        """Stop downloading and close every file, without waiting for the network.

        Queued downloads are dropped; downloads in flight are abandoned: whoever waits for them is woken
        (a read or prefetch of this fileset raises :class:`~lazyflow_rbfs.errors.ClosedError`, another
        fileset fetches the block itself), their block locks are released at once, and they can no
        longer publish. Only a publish already writing to the local disk is waited for (it completes
        atomically). Their threads may stay blocked on a slow server in the background; they never hold
        up the interpreter's exit. Idempotent.
        """
        with self._gate:
            self._closing = True
            self._generation += 1
        self._cancel_lock_waits.cancel()  # a worker waiting on another process's lock stops at once
        with self._pool_mutex:
            pools = [self._pool, *self._prefetch_pools]
            self._pool = None
        for pool in pools:  # downloadBlocks running in other threads stop too
            if pool is not None:
                pool.shutdown()  # queued downloads are dropped: their waiters are woken now
        with self._gate:
            self._gate.wait_for(lambda: self._publishing == 0)
            abandoned = list(self._in_flight.items())
        for future, (key, lock) in abandoned:
            if lock is not None:
                lock.abandon()  # another process may fetch the block now; ours can no longer publish
            IN_FLIGHT.finish(key, exc=_Abandoned("the fileset was closed during the download"), future=future)
        self._remoteVolume.close()  # (aborts the requests still in flight where the HTTP client can)
        super().close()

    def reopen(self, mode: str = "r") -> None:
        if mode != "r":
            raise ReadOnlyError(
                f"a RESTfulBlockwiseFileset is read-only: reopen it with mode 'r', not {mode!r}"
            )
        super().reopen(mode)
        if self._remoteVolume.closed:  # close() closed its HTTP sessions
            self._remoteVolume = self._open_remote()
        self._cancel_lock_waits = Cancel()
        with self._gate:
            self._closing = False


def _finish_report(report: PrefetchReport, raise_on_failure: bool, what: str) -> PrefetchReport:
    """Log a finished prefetch; raise :class:`PrefetchError` carrying it if blocks failed (and asked to)."""
    logger.info("%s finished: %s", what, report.summary())
    if report.failed and raise_on_failure:
        raise PrefetchError(f"{what} incomplete: {report.summary()}", report=report)
    return report


def _reopen(cls: type, path: str, options: dict) -> RESTfulBlockwiseFileset:
    return cls(path, **options)


def _progress_reporter(progress: Any, total: int):
    """Return ``(bar or None, tick(done))`` for ``progress`` (bool or callable)."""
    if callable(progress):
        return None, lambda done: progress(done, total)
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="block", dynamic_ncols=True, smoothing=0.05)
        state = {"shown": 0}
        mutex = threading.Lock()

        def tick(done: int) -> None:
            with mutex:
                if done > state["shown"]:
                    bar.update(done - state["shown"])
                    state["shown"] = done

        return bar, tick
    return None, lambda done: None
