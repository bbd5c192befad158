"""RESTfulBlockwiseFileset: a remote volume read through a local, shared, crash-safe block cache.

The cache is a :class:`~lazyflow_rbfs.store.BlockwiseFileset` (so upstream ``isinstance`` checks hold)
composed with a :class:`~lazyflow_rbfs.cache.fetcher.BlockFetcher` that downloads missing blocks and
publishes them through the store's :class:`~lazyflow_rbfs.store.BlockStore` (``self.blocks``). Prefetching
many blocks is :mod:`lazyflow_rbfs.cache.prefetch`.

``close()`` (and a Ctrl-C) never waits for the network: queued downloads are dropped, the downloads in
flight are abandoned (their waiters are woken, their block locks released, and they can no longer
publish), and the worker threads left blocked on a slow server end on their own without holding up
the interpreter's exit.
"""

from __future__ import annotations

import atexit
import logging
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import numpy as np

from lazyflow_rbfs import description as _description
from lazyflow_rbfs import geometry, identity
from lazyflow_rbfs.cache.fetcher import BlockFetcher
from lazyflow_rbfs.cache.limit import CacheLimit
from lazyflow_rbfs.cache.prefetch import (
    DEFAULT_MAX_FAILURES,
    PrefetchReport,
    check_max_failures,
    run_prefetch,
    scheduler_backend,
)
from lazyflow_rbfs.errors import (
    ArgumentError,
    BlockNotReadyError,
    ClosedError,
    PrefetchError,
    ReadOnlyError,
    SchemaError,
)
from lazyflow_rbfs.locks import LockWaitCancelled
from lazyflow_rbfs.pool import wait_for_running_tasks
from lazyflow_rbfs.remote import RESTfulVolume
from lazyflow_rbfs.store import BlockwiseFileset
from lazyflow_rbfs.store.eviction import check_max_cache_bytes
from lazyflow_rbfs.store.export import subset_view_roi

__all__ = ["RESTfulBlockwiseFileset"]

logger = logging.getLogger(__name__)

#: At interpreter exit, how long to let abandoned downloads end (their HTTP requests are aborted by close())
#: before the process exits without them.
EXIT_GRACE_SECONDS = 1.0

#: How many times one read looks again at a block whose file it found missing or unreadable (each look
#: follows a new publish of the block by someone: a repair, a re-download after an eviction).
MAX_LOOKS_PER_BLOCK = 4


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
    max_cache_bytes
        Bound on the bytes of block files under the cache root (an int, or a size such as ``"50G"``);
        default: the local description's ``max_cache_bytes``, else no bound. Least recently read blocks
        are evicted when a publish passes it (see :mod:`lazyflow_rbfs.cache.limit`).

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
        max_cache_bytes: int | str | None = None,
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
        self._open_options = dict(
            max_parallel=max_parallel,
            timeout=timeout,
            retries=retries,
            lock_timeout=lock_timeout,
            headers=headers,
            progress=progress if not callable(progress) else False,
            max_open_files=max_open_files,
            fsync=fsync,
            max_cache_bytes=check_max_cache_bytes(max_cache_bytes),
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
        self._fetcher = BlockFetcher(
            self.blocks,
            fetch=lambda disk_roi: self._remoteVolume.fetch(disk_roi),
            publish=self._publish,
            available=lambda block_start: self.getBlockStatus(block_start) == self.BLOCK_AVAILABLE,
            check_open=self._check_open,
            max_parallel=max_parallel,
            lock_timeout=lock_timeout,
            name=self._descriptionFilePath,
        )
        limit = self._open_options["max_cache_bytes"]
        self.cache_limit = CacheLimit(
            self.blocks, limit if limit is not None else self.localDescription.max_cache_bytes
        )
        _LIVE_FILESETS.add(self)

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
        self.cache_limit.after_publish(self.blocks.publish(block_start, data))

    def _confirm_volume(self) -> None:
        """After a read: if the root had no record when this fileset opened, look at it again.

        Any block another volume published since was published after that volume's record: look now,
        before handing out what was read.
        """
        if not self._volume_confirmed:
            recorded = identity.check(self._root_dir, self._volume_identity, self._descriptionFilePath)
            self._volume_confirmed = recorded is not None

    def _open_remote(self) -> RESTfulVolume:
        options = self._open_options
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
        return (_reopen, (type(self), self._descriptionFilePath, self.open_options))

    @property
    def open_options(self) -> dict[str, Any]:
        """The keyword options this fileset was opened with (a copy): ``type(fs)(path, **fs.open_options)``
        opens the same cache the same way (a callable ``progress`` is not carried over)."""
        return dict(self._open_options)

    @property
    def blocks_downloaded(self) -> int:
        """Blocks this fileset downloaded and published."""
        return self._fetcher.downloaded

    def _after_fork_in_child(self) -> None:
        # Only the forking thread lives on in a child. The parent's download threads, their queues and
        # whatever locks they held at the fork are not ours: start afresh. (Their lock descriptors were
        # closed by locks.py; the in-flight table was reset.)
        super()._after_fork_in_child()
        fetcher = getattr(self, "_fetcher", None)  # (None while __init__ has not made it yet)
        if fetcher is not None:
            fetcher.after_fork_in_child()

    # ------------------------------------------------------------------ properties and numpy-style access

    @property
    def remote(self) -> RESTfulVolume:
        """The :class:`~lazyflow_rbfs.remote.RESTfulVolume` this cache downloads from."""
        return self._remoteVolume

    def __getitem__(self, key: Any) -> np.ndarray:
        """``vol[0:10, 5:27, 10:33]``: ints, step-1 slices and ``...``; ints drop their axis.

        numpy and h5py semantics: slices are clipped to the view (``vol[0:100]`` on 64 planes gives 64),
        and a slice selecting nothing (``vol[0:0]``) gives an empty array of the view's dtype. An int out
        of range raises :class:`~lazyflow_rbfs.errors.OutOfBoundsError` (an ``IndexError``); steps other
        than 1 (negative ones too), arrays, lists and ``None`` raise ``TypeError``. (:meth:`readData` is
        stricter: a roi reaching outside the view or of zero volume raises ``OutOfBoundsError``.)
        """
        self._check_open()
        start, stop, squeeze = geometry.index_to_roi(key, self.shape, allow_empty=True)
        if (stop <= start).any():
            shape = [int(b - a) for i, (a, b) in enumerate(zip(start, stop)) if i not in squeeze]
            return np.empty(shape, dtype=self.dtype)
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

        self._fetcher.ensure(blocks(), on_data=take)
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
            self._fetcher.ensure(blocks(), on_data=take)

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
                block_start, lock_timeout=self.lock_timeout, cancel=self._fetcher.lock_wait_cancel
            )
        except LockWaitCancelled:
            raise ClosedError("the fileset was closed during the read") from exc
        if what == "intact" and identity in seen:
            raise exc  # this file checks good yet cannot be read: not something fetching again fixes
        logger.debug("block %s: %s after a failed read; reading it again", list(block_start), what)
        seen.append(identity)

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
        max_failures = check_max_failures(max_failures)
        if scheduler is not None:
            backend = scheduler_backend()  # the distributed extra, loaded by name (see cache.prefetch)
            if wait_for_workers is None:
                wait_for_workers = backend.DEFAULT_WAIT_FOR_WORKERS
            return backend.prefetch_on_cluster(
                self,
                scheduler,
                roi=roi,
                batch_size=batch_size,
                max_parallel=max_parallel,
                progress=progress,
                raise_on_failure=raise_on_failure,
                max_failures=max_failures,
                wait_for_workers=wait_for_workers,
            )
        view_shape = self.description.view_shape
        if roi is None:
            start, stop = np.zeros_like(view_shape), np.asarray(view_shape)
        else:
            start, stop = geometry.check_roi(roi, view_shape)
        block_shape = self.description.block_shape
        report = self.downloadBlocks(
            geometry.iter_block_starts(start, stop, block_shape),
            max_parallel,
            total=geometry.count_blocks(start, stop, block_shape),
            progress=progress,
            raise_on_failure=False,
            max_failures=max_failures,
        )
        report.not_held = self.cache_limit.not_held(report, (start, stop))
        if report.not_held:
            logger.info("prefetch: %s", report.summary())
        if report.failed and raise_on_failure:
            raise PrefetchError(f"prefetch incomplete: {report.summary()}", report=report)
        return report

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
        max_failures = check_max_failures(max_failures)
        max_parallel = self.max_parallel if max_parallel is None else max_parallel
        if not isinstance(max_parallel, int) or max_parallel < 1:
            raise ArgumentError(f"max_parallel must be a positive integer, got {max_parallel!r}")
        if max_parallel > self.max_parallel:
            # Asking this call for more downloads at once than the fileset was opened with raises the
            # fileset's limit on requests in flight to match.
            self._remoteVolume.raise_max_parallel(max_parallel)
        if total is None:
            total = len(block_starts) if hasattr(block_starts, "__len__") else 0
        return run_prefetch(
            self._fetcher,
            block_starts,
            max_parallel=max_parallel,
            total=total,
            progress=self.progress if progress is None else progress,
            raise_on_failure=raise_on_failure,
            max_failures=max_failures,
            bytes_received=lambda: self._remoteVolume.stats.bytes_received,
        )

    def to_dask(self, **options: Any) -> Any:
        """A dask array of the view whose chunks are the cache blocks (needs the ``distributed`` extra).

        Each chunk is read through the cache: in this process through this fileset, on a dask worker
        through a fileset the worker opens from the same description and options.
        """
        return scheduler_backend().to_dask(self, **options)

    # ------------------------------------------------------------------ exports

    def exportSubset(self, roi: Any, exportDirectory: str, use_view_coordinates: bool = True) -> str:
        """Download the blocks of a block-aligned ``roi`` if needed, then copy them into a new local fileset.

        The result is a plain ``blockwise-fileset-description`` with its blocks, readable without the
        remote and after this cache is deleted. Returns the new description's path.
        """
        self._check_open()
        start, stop = subset_view_roi(self.blocks.grid, roi, use_view_coordinates)
        self._fetcher.ensure(geometry.iter_block_starts(start, stop, self.description.block_shape))
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
        self._fetcher.close()
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
        self._fetcher.reopen()


def _reopen(cls: type, path: str, options: dict) -> RESTfulBlockwiseFileset:
    return cls(path, **options)
