"""Prefetching on a dask.distributed cluster: :func:`prefetch_on_cluster`.

The blocks of a roi are streamed to the workers in batches, each batch downloaded by
:meth:`RESTfulBlockwiseFileset.downloadBlocks` in a worker process (:func:`.workers.worker_fileset`), and
one :class:`~lazyflow_rbfs.cache.PrefetchReport` is aggregated. Connecting is bounded: a scheduler that
cannot be reached is a :class:`~lazyflow_rbfs.errors.RemoteTimeoutError` after dask's connect timeout; a
scheduler without workers is waited on for ``wait_for_workers`` seconds (a warning says so), then a
``RemoteTimeoutError``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import dask.config
import distributed
import numpy as np

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
from lazyflow_rbfs.distributed.address import parse_scheduler_address
from lazyflow_rbfs.distributed.workers import _FilesetSpec, _spec_of, worker_fileset
from lazyflow_rbfs.errors import ArgumentError, RemoteTimeoutError

if TYPE_CHECKING:  # pragma: no cover
    import dask.array

__all__ = ["prefetch_on_cluster", "DEFAULT_BATCH_SIZE", "DEFAULT_WAIT_FOR_WORKERS", "TASK_RETRIES"]

logger = logging.getLogger(__name__)

#: Blocks per task when ``batch_size`` is not given.
DEFAULT_BATCH_SIZE = 64

#: Times a batch task is run again after it raised (worker loss is retried by the scheduler on its own,
#: up to ``distributed.scheduler.allowed-failures`` times).
TASK_RETRIES = 2

#: Seconds :func:`prefetch_on_cluster` waits for a first worker when the cluster has none.
DEFAULT_WAIT_FOR_WORKERS = 60.0


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
            tick(report.done, len(report.failed))
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
