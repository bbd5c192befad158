"""Prefetching on a dask.distributed cluster, and RESTfulBlockwiseFileset views as dask arrays.

The only module of the package that imports dask (install the ``distributed`` extra). Workers must share
the cache directory with each other (a shared filesystem) and see the description file under the same
absolute path; the per-block OS locks of the cache keep concurrent downloads from any number of workers,
threads and machines correct, each block being fetched once.

* :func:`prefetch_on_cluster` streams the blocks of a roi to the workers in batches, each batch downloaded
  by :meth:`RESTfulBlockwiseFileset.downloadBlocks` in a worker process, and aggregates one
  :class:`~lazyflow_rbfs.cache.PrefetchReport`.
* :func:`to_dask` gives a lazy ``dask.array.Array`` whose chunks are the cache blocks.
* :func:`parse_scheduler_address` checks a scheduler address before anything connects to it.

Connecting is bounded: a malformed address is an :class:`~lazyflow_rbfs.errors.ArgumentError` at once;
a scheduler that cannot be reached is a :class:`~lazyflow_rbfs.errors.RemoteTimeoutError` after dask's
connect timeout (``distributed.comm.timeouts.connect``, 30 s unless configured); a scheduler without
workers is waited on for ``wait_for_workers`` seconds (a warning says so), then a ``RemoteTimeoutError``.

In a worker process one fileset per description and option set is opened and shared by every task
(:func:`worker_fileset`), so a worker keeps at most ``max_parallel`` requests in flight whatever the number
of its threads.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import dask.config
import distributed
import numpy as np
from distributed.comm import registry as _comm_registry
from distributed.comm.addressing import parse_host_port

from lazyflow_rbfs import geometry
from lazyflow_rbfs.cache import RESTfulBlockwiseFileset
from lazyflow_rbfs.cache.prefetch import (
    DEFAULT_MAX_FAILURES,
    MAX_ERROR_DETAILS,
    PrefetchReport,
    SystematicFailures,
    check_max_failures,
    finish_report,
    progress_reporter,
)
from lazyflow_rbfs.errors import ArgumentError, RemoteTimeoutError

if TYPE_CHECKING:  # pragma: no cover
    import dask.array

__all__ = [
    "prefetch_on_cluster",
    "to_dask",
    "worker_fileset",
    "close_worker_filesets",
    "parse_scheduler_address",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_WAIT_FOR_WORKERS",
]

logger = logging.getLogger(__name__)

#: Blocks per task when ``batch_size`` is not given.
DEFAULT_BATCH_SIZE = 64

#: Times a batch task is run again after it raised (worker loss is retried by the scheduler on its own,
#: up to ``distributed.scheduler.allowed-failures`` times).
TASK_RETRIES = 2

#: Filesets kept open per worker process (least recently used ones are dropped beyond this).
MAX_CACHED_FILESETS = 16

#: Seconds :func:`prefetch_on_cluster` waits for a first worker when the cluster has none.
DEFAULT_WAIT_FOR_WORKERS = 60.0

#: Address schemes that name a host and a port (``inproc://`` addresses name a process instead).
_HOST_PORT_SCHEMES = frozenset({"tcp", "tls", "ws", "wss", "ucx", "ucxx"})


# ---------------------------------------------------------------------------------------------------
# What to open: a picklable, hashable description of a fileset
# ---------------------------------------------------------------------------------------------------


class _FilesetSpec:
    """``(class, absolute description path, open options)``: enough to open the same fileset anywhere.

    Options are sent with every task (in memory only, like the fileset's own pickle); headers are never
    logged: ``repr`` leaves them out.
    """

    __slots__ = ("cls", "path", "options", "key")

    def __init__(self, cls: type, path: str, options: dict[str, Any]) -> None:
        self.cls = cls
        self.path = path
        # Workers never draw progress bars or call the client's callbacks.
        self.options = {**options, "progress": False}
        self.key = (cls.__module__, cls.__qualname__, path, _freeze(self.options))

    def __reduce__(self):
        return (_FilesetSpec, (self.cls, self.path, self.options))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _FilesetSpec) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.options.items() if k != "headers"}
        return f"<fileset {self.cls.__name__}({self.path!r}, {shown})>"

    def open(self) -> RESTfulBlockwiseFileset:
        return self.cls(self.path, **self.options)


def _freeze(value: Any) -> Any:
    """A hashable, order-independent stand-in for an options value."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _spec_of(
    fileset_or_path: Any, options: dict[str, Any]
) -> tuple[_FilesetSpec, RESTfulBlockwiseFileset | None]:
    """The spec for a fileset object or a description path (``options`` override the fileset's own)."""
    if isinstance(fileset_or_path, RESTfulBlockwiseFileset):
        path = fileset_or_path.description_path
        merged = {**fileset_or_path.open_options, **options}
        fileset = fileset_or_path if not options else None
        return _FilesetSpec(type(fileset_or_path), path, merged), fileset
    if isinstance(fileset_or_path, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(fileset_or_path))
        return _FilesetSpec(RESTfulBlockwiseFileset, path, dict(options)), None
    raise TypeError(
        "expected a RESTfulBlockwiseFileset or the path of its composite description, "
        f"got {type(fileset_or_path).__name__}"
    )


# ---------------------------------------------------------------------------------------------------
# Worker side: one fileset per process and spec
# ---------------------------------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: OrderedDict[tuple, RESTfulBlockwiseFileset] = OrderedDict()
_atexit_registered = False


def worker_fileset(spec: _FilesetSpec) -> RESTfulBlockwiseFileset:
    """The fileset of ``spec`` for this process, opened on first use and shared by all its threads.

    Filesets beyond :data:`MAX_CACHED_FILESETS` are dropped least recently used first (not closed: a task
    may still be using one; it closes when garbage collected). All are closed when the process exits.
    """
    global _atexit_registered
    with _cache_lock:
        fileset = _cache.get(spec.key)
        if fileset is not None and not fileset.closed:
            _cache.move_to_end(spec.key)
            return fileset
        fileset = spec.open()
        _cache[spec.key] = fileset
        while len(_cache) > MAX_CACHED_FILESETS:
            _cache.popitem(last=False)
        if not _atexit_registered:
            atexit.register(close_worker_filesets)
            _atexit_registered = True
        logger.debug("pid %s opened %r", os.getpid(), spec)
        return fileset


def close_worker_filesets() -> int:
    """Close and forget every fileset this process opened for tasks; returns how many.

    Runs at process exit; call it on every worker with ``client.run(close_worker_filesets)``.
    """
    with _cache_lock:
        filesets = list(_cache.values())
        _cache.clear()
    for fileset in filesets:
        try:
            fileset.close()
        except Exception as exc:  # noqa: BLE001 - closing at exit must not stop the others
            logger.warning("could not close %r: %s", fileset, exc)
    return len(filesets)


def _prefetch_batch(
    spec: _FilesetSpec, batch: list[tuple[int, ...]], stop_on_systematic: bool = True
) -> PrefetchReport:
    """Task body: download one batch of blocks in a worker; failures are in the report, not raised.

    The "first blocks all failed" rule is the client's, over all batches; in the worker only a cache that
    cannot be written stops the batch (a ``max_failures`` larger than the batch never trips the other rule).
    """
    fileset = worker_fileset(spec)
    # The batch uses the fileset's max_parallel: concurrent batches in one process share its request slots.
    report = fileset.downloadBlocks(
        batch,
        total=len(batch),
        progress=False,
        raise_on_failure=False,
        max_failures=len(batch) + 1 if stop_on_systematic else 0,
    )
    if report.done != len(batch) and not report.stopped_early:
        # The fileset was closed under us: run the task again (retries=) rather than lose blocks.
        raise RuntimeError(f"only {report.done} of {len(batch)} blocks of the batch were processed")
    return report


# ---------------------------------------------------------------------------------------------------
# Client side: prefetching
# ---------------------------------------------------------------------------------------------------


def _batches(block_starts: Iterator[tuple[int, ...]], size: int) -> Iterator[list[tuple[int, ...]]]:
    batch: list[tuple[int, ...]] = []
    for block_start in block_starts:
        batch.append(tuple(int(x) for x in block_start))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def parse_scheduler_address(address: str) -> str:
    """Check a dask scheduler address without connecting; return it with its scheme (``tcp://`` default).

    Accepted are the forms dask's own ``Client`` accepts: ``SCHEME://LOCATION`` for a scheme dask knows
    (``tcp``, ``tls``, ``ws``, ``wss``, ``ucx``, ``inproc``, and any a plug-in registers), or a bare
    ``HOST:PORT`` (dask's default scheme, ``tcp``). For schemes with a host, LOCATION is ``HOST:PORT`` or
    ``[IPv6]:PORT`` with a port in 1..65535 and nothing after it.

    Raises
    ------
    ArgumentError
        The address is not of that form (the message says what was expected and what was found).
    """
    expected = "a dask scheduler address such as tcp://10.0.0.1:8786 or 10.0.0.1:8786"
    if not isinstance(address, str) or not address.strip() or any(c.isspace() for c in address.strip()):
        raise ArgumentError(f"expected {expected}, found {address!r}")
    text = address.strip()
    scheme, sep, location = text.partition("://")
    if not sep:
        scheme, location = dask.config.get("distributed.comm.default-scheme", "tcp"), text
    scheme = scheme.lower()
    if scheme in ("http", "https"):
        raise ArgumentError(
            f"{address!r} is a web address (the dashboard, perhaps); expected {expected}: the scheduler's "
            "own address, which its log prints as 'Scheduler at:'"
        )
    try:
        _comm_registry.get_backend(scheme)
    except ValueError:
        known = ", ".join(f"{name}://" for name in sorted(_comm_registry.backends))
        raise ArgumentError(
            f"unknown scheme {scheme!r} in scheduler address {address!r}; expected one of {known}"
        ) from None
    if not location or "://" in location:
        raise ArgumentError(f"expected {expected}, found {address!r}")
    if scheme in _HOST_PORT_SCHEMES:
        try:
            host, port = parse_host_port(location)
        except ValueError:
            host, port = "", -1
        if not host or not 0 < port < 65536:
            raise ArgumentError(f"expected {expected} (HOST:PORT, a port from 1 to 65535), found {address!r}")
    return f"{scheme}://{location}"


def _address_of(client: distributed.Client) -> str:
    return str(getattr(client.scheduler, "address", None) or "the scheduler")


def _connect(scheduler: Any, wait_for_workers: float | None) -> tuple[distributed.Client, bool]:
    """``(client, owned)``: the given client, or a new one (closed by the caller) for an address/cluster.

    Returns once the cluster has a worker (waiting up to ``wait_for_workers`` seconds, ``None`` for ever).
    """
    if isinstance(scheduler, distributed.Client):
        client, owned = scheduler, False
    else:
        address = getattr(scheduler, "scheduler_address", scheduler)  # a cluster object works too
        if not isinstance(address, str):
            raise TypeError(
                "scheduler must be a distributed.Client, a cluster or a scheduler address such as "
                f"'tcp://10.0.0.1:8786', got {type(scheduler).__name__}"
            )
        address = parse_scheduler_address(address)
        try:
            client = distributed.Client(address, set_as_default=False)
        except OSError as exc:  # dask's connect timeout (refused, unreachable, no scheduler there)
            connect = dask.config.get("distributed.comm.timeouts.connect", "30s")
            raise RemoteTimeoutError(
                f"cannot connect to the dask scheduler at {address}: {exc}; check that the scheduler runs "
                f"and that the address is right (dask's distributed.comm.timeouts.connect is {connect})",
                url=address,
                status=None,
            ) from exc
        owned = True
    try:
        _wait_for_a_worker(client, wait_for_workers)
    except BaseException:
        if owned:
            client.close()
        raise
    return client, owned


def _wait_for_a_worker(client: distributed.Client, timeout: float | None) -> None:
    """Return once the cluster has a worker; ``RemoteTimeoutError`` after ``timeout`` seconds without."""
    if client.nthreads():
        return
    address = _address_of(client)
    if timeout is not None and timeout <= 0:
        raise RemoteTimeoutError(
            f"the dask scheduler at {address} has no worker; start one with 'dask worker {address}'",
            url=address,
            status=None,
        )
    logger.warning(
        "no worker on the dask scheduler at %s yet: waiting %s for one",
        address,
        "as long as it takes" if timeout is None else f"up to {timeout:g} s",
    )
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError) as exc:
        raise RemoteTimeoutError(
            f"no worker joined the dask scheduler at {address} within {timeout:g} s; start one with "
            f"'dask worker {address}', or wait longer (wait_for_workers=, --wait-for-workers)",
            url=address,
            status=None,
        ) from exc
    logger.info("a worker joined the dask scheduler at %s", address)


def prefetch_on_cluster(
    fileset_or_path: RESTfulBlockwiseFileset | str | os.PathLike,
    scheduler: Any,
    *,
    roi: Any = None,
    batch_size: int | None = None,
    max_parallel: int | None = None,
    progress: bool | Callable[[int, int], Any] | None = None,
    raise_on_failure: bool = True,
    max_failures: int | None = DEFAULT_MAX_FAILURES,
    wait_for_workers: float | None = DEFAULT_WAIT_FOR_WORKERS,
    **options: Any,
) -> PrefetchReport:
    """Download every missing block of the view (or of ``roi``) on a dask.distributed cluster.

    The block starts are streamed to the workers in batches, with a bounded number of batches outstanding
    (memory does not grow with the number of blocks). Each batch runs
    :meth:`~lazyflow_rbfs.cache.RESTfulBlockwiseFileset.downloadBlocks` in a worker process, which skips
    cached blocks and de-duplicates with every other process through the per-block locks. A batch whose
    worker dies is run again elsewhere. The batch reports are aggregated into one report.

    Parameters
    ----------
    fileset_or_path
        A fileset (reopened in the workers with its options) or the path of a composite description.
        The workers must see the description under the same absolute path and share the cache directory.
    scheduler
        A ``distributed.Client``, a cluster object, or a scheduler address (``"tcp://host:8786"``,
        ``"host:8786"``; see :func:`parse_scheduler_address`); for the latter two a client is connected
        and closed afterwards.
    roi
        ``(start, stop)`` in view coordinates; default the whole view.
    batch_size
        Blocks per task (default :data:`DEFAULT_BATCH_SIZE`).
    max_parallel
        Downloads in flight at once per worker process, whatever its number of threads (the
        ``max_parallel`` option of the fileset each worker opens); default the fileset's own option.
    progress
        ``True`` for a tqdm bar on stderr, or a callable ``progress(done, total)`` called in this process
        as batches finish; default the fileset's ``progress`` option (``False`` for a path).
    raise_on_failure
        ``False`` returns the report even when blocks failed.
    max_failures
        The rule of :meth:`~lazyflow_rbfs.cache.RESTfulBlockwiseFileset.downloadBlocks`, applied to the
        batch reports as they arrive: stop when the first this many blocks attempted (over all batches)
        failed with one error class and none was downloaded, or at once when a worker finds the cache
        cannot be written. Batches not started then are cancelled; their blocks count as not attempted.
        ``0`` or ``None`` never stops early.
    wait_for_workers
        Seconds to wait for a first worker when the cluster has none (a warning says it waits);
        ``None`` waits for ever.
    **options
        Options to open the fileset with in the workers (``max_parallel``, ``timeout``, ``retries``,
        ``lock_timeout``, ``headers``...); they override a given fileset's own.

    Returns
    -------
    PrefetchReport
        ``total``, ``downloaded``, ``skipped``, ``failed`` (block starts), ``errors`` (the first
        :data:`~lazyflow_rbfs.cache.prefetch.MAX_ERROR_DETAILS`), ``seconds``.

    Raises
    ------
    PrefetchError
        Some blocks failed (and ``raise_on_failure``); ``.report`` holds the report.
    OutOfBoundsError
        ``roi`` is not inside the view.
    ArgumentError
        A bad option, or a scheduler address of a form dask does not accept.
    RemoteTimeoutError
        The scheduler could not be reached, or no worker joined it within ``wait_for_workers`` seconds.
    """
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_parallel is not None and (
        isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1
    ):
        raise ArgumentError(f"max_parallel must be None or a positive integer, got {max_parallel!r}")
    max_failures = check_max_failures(max_failures)
    if wait_for_workers is not None and (
        isinstance(wait_for_workers, bool)
        or not isinstance(wait_for_workers, (int, float))
        or not wait_for_workers >= 0
    ):
        raise ArgumentError(f"wait_for_workers must be None or seconds >= 0, got {wait_for_workers!r}")
    if max_parallel is not None:
        options["max_parallel"] = max_parallel
    spec, _ = _spec_of(fileset_or_path, options)
    if progress is None:
        progress = fileset_or_path.progress if isinstance(fileset_or_path, RESTfulBlockwiseFileset) else False

    local = RESTfulBlockwiseFileset.readDescription(spec.path).local_description
    view_shape = np.asarray(local.view_shape, dtype=np.int64)
    block_shape = np.asarray(local.block_shape, dtype=np.int64)
    if roi is None:
        start, stop = np.zeros_like(view_shape), view_shape
    else:
        start, stop = geometry.check_roi(roi, view_shape)
    total = geometry.count_blocks(start, stop, block_shape)

    report = PrefetchReport(total=total)
    rule = SystematicFailures(max_failures)
    t0 = time.monotonic()
    client, owned = _connect(scheduler, wait_for_workers)
    bar, tick = progress_reporter(progress, total)
    pending: dict[distributed.Future, list[tuple[int, ...]]] = {}
    try:
        threads = sum(client.nthreads().values())
        window = 2 * threads if threads > 0 else 4
        batches = _batches(geometry.iter_block_starts(start, stop, block_shape), batch_size)

        def submit_next() -> distributed.Future | None:
            batch = next(batches, None)
            if batch is None:
                return None
            future = client.submit(
                _prefetch_batch, spec, batch, max_failures > 0, pure=False, retries=TASK_RETRIES
            )
            pending[future] = batch
            return future

        first = [f for f in (submit_next() for _ in range(window)) if f is not None]
        logger.info(
            "prefetching %s blocks of %s on %s worker threads, %s blocks per task",
            total,
            spec.path,
            threads,
            batch_size,
        )
        completed = distributed.as_completed(first, loop=client.loop)
        for future in completed:
            batch = pending.pop(future)
            reason = _merge(report, future, batch, rule)
            future.release()
            tick(report.done)
            if reason is not None:
                report.stop_reason = reason
                logger.warning("stopping the distributed prefetch early: %s", reason)
                break
            nxt = submit_next()
            if nxt is not None:
                completed.add(nxt)
    finally:
        if pending:
            client.cancel(list(pending))
        if owned:
            client.close()
        report.seconds = time.monotonic() - t0
        if report.stop_reason is not None and not report.not_attempted:
            report.stop_reason = None  # the stop came with the last blocks: nothing was left out
        if bar is not None:
            bar.close()
    return finish_report(report, raise_on_failure, "distributed prefetch")


def _merge(
    report: PrefetchReport,
    future: distributed.Future,
    batch: list[tuple[int, ...]],
    rule: SystematicFailures,
) -> str | None:
    """Add one finished task to ``report``: its batch report, or the whole batch failed with its error.

    Returns the reason to stop the prefetch when ``rule`` finds the failures systematic.
    """
    try:
        part = future.result()
    except Exception as exc:  # noqa: BLE001 - a task that failed for good fails its whole batch
        logger.warning("a prefetch task of %s blocks failed: %s: %s", len(batch), type(exc).__name__, exc)
        kind = type(exc).__name__
        for block_start in batch:
            report.record_failure(block_start, f"{kind}: {exc}", kind)
        return rule.cache_failure(exc) or rule.observe(0, {kind: len(batch)})
    report.downloaded += part.downloaded
    report.skipped += part.skipped
    for block_start in part.failed:
        block_start = tuple(int(x) for x in block_start)
        report.failed.append(block_start)
        if len(report.errors) < MAX_ERROR_DETAILS:
            report.errors[block_start] = part.errors.get(block_start, "unknown error")
    for kind, n in part.error_types.items():
        report.error_types[kind] = report.error_types.get(kind, 0) + n
    # A worker stops its batch only when the cache cannot be written: that stops everything.
    return part.stop_reason or rule.observe(part.downloaded, part.error_types)


# ---------------------------------------------------------------------------------------------------
# dask arrays
# ---------------------------------------------------------------------------------------------------


class _BlockSource:
    """An array-like over a fileset's view for ``dask.array.from_array``: ``shape``, ``dtype``, slicing.

    Pickles as its spec (reopened, once per process, by :func:`worker_fileset`); in the process that made
    it, it reads through the fileset it was given.
    """

    def __init__(
        self, spec: _FilesetSpec, shape: tuple[int, ...], dtype: np.dtype, fileset: Any = None
    ) -> None:
        self.spec = spec
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self._fileset = fileset

    def __reduce__(self):
        return (_BlockSource, (self.spec, self.shape, self.dtype))

    def __dask_tokenize__(self) -> Any:
        return ("lazyflow_rbfs", self.spec.key, self.shape, self.dtype.str)

    def __repr__(self) -> str:
        return f"<_BlockSource {self.spec!r} shape={self.shape} dtype={self.dtype.name}>"

    def _fileset_for_read(self) -> RESTfulBlockwiseFileset:
        if self._fileset is not None and not self._fileset.closed:
            return self._fileset
        return worker_fileset(self.spec)

    def __getitem__(self, key: Any) -> np.ndarray:
        start, stop, post, out_shape = _selection(key, self.shape)
        if math.prod(out_shape) == 0:
            return np.empty(out_shape, dtype=self.dtype)
        data = self._fileset_for_read().readData((start, stop))
        return data[post]


def _selection(key: Any, shape: tuple[int, ...]):
    """``(start, stop, post, out_shape)``: the bounding roi of ``key`` and what to take from it.

    ``key`` may hold ints, slices of any step and one ``...``.
    """
    key = geometry.expand_index(key, len(shape))
    start, stop, post, out_shape = [], [], [], []
    for k, n in zip(key, shape):
        if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            i = int(k) + n if int(k) < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"index {int(k)} is out of bounds for an axis of size {n}")
            start.append(i)
            stop.append(i + 1)
            post.append(0)
        elif isinstance(k, slice):
            r = range(*k.indices(n))
            out_shape.append(len(r))
            if len(r) == 0:
                start.append(0)
                stop.append(0)
                post.append(slice(0, 0))
                continue
            lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
            start.append(lo)
            stop.append(hi)
            end = r.stop - lo
            post.append(slice(r.start - lo, end if end >= 0 else None, r.step))
        else:
            raise TypeError(f"only integers, slices and '...' index a cache view, got {type(k).__name__}")
    return start, stop, tuple(post), tuple(out_shape)


def _block_chunks(shape: tuple[int, ...], block_shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """dask chunks along each axis: whole blocks, the last one clipped to the view."""
    chunks = []
    for n, b in zip(shape, block_shape):
        full, rest = divmod(int(n), int(b))
        chunks.append((int(b),) * full + ((rest,) if rest else ()))
    return tuple(chunks)


def to_dask(fileset_or_path: RESTfulBlockwiseFileset | str | os.PathLike, **options: Any) -> dask.array.Array:
    """A lazy dask array of the fileset's view whose chunks are exactly its cache blocks.

    Each chunk is read with ``readData`` where the task runs (downloading the block if it is missing):
    in this process through the given fileset, in worker processes through a fileset reopened there once
    per process (workers must share the cache directory and see the description's path). Building the
    graph costs no I/O and is lazy in the number of blocks.

    Parameters
    ----------
    fileset_or_path
        A fileset or the path of a composite description.
    **options
        Options to open the fileset with (``max_parallel``, ``timeout``, ``headers``...); they override
        a given fileset's own.

    Returns
    -------
    dask.array.Array
        Shape ``fileset.shape`` (the view), the fileset's dtype, chunks the block grid of the view
        (edge chunks clipped).

    Examples
    --------
    >>> x = to_dask("bock11.json")                                   # doctest: +SKIP
    >>> x[0:64].mean().compute()                                     # doctest: +SKIP
    """
    import dask.array as da
    from dask.base import tokenize

    spec, fileset = _spec_of(fileset_or_path, options)
    if fileset is not None:
        shape, dtype, block_shape = tuple(fileset.shape), np.dtype(fileset.dtype), tuple(fileset.block_shape)
    else:
        local = RESTfulBlockwiseFileset.readDescription(spec.path).local_description
        shape = tuple(int(n) for n in local.view_shape)
        dtype = np.dtype(local.dtype)
        block_shape = tuple(int(b) for b in local.block_shape)
    source = _BlockSource(spec, shape, dtype, fileset)
    return da.from_array(
        source,
        chunks=_block_chunks(shape, block_shape),
        name=f"rbfs-{tokenize(source)}",
        meta=np.empty((0,) * len(shape), dtype=dtype),
        asarray=False,
        fancy=False,
        inline_array=True,
    )
