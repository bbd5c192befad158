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

Modules: :mod:`.address` (scheduler addresses), :mod:`.workers` (what a task opens: a fileset spec, one
fileset per worker process), :mod:`.cluster` (:func:`prefetch_on_cluster`), :mod:`.arrays` (:func:`to_dask`).

Connecting is bounded: a malformed address is an :class:`~lazyflow_rbfs.errors.ArgumentError` at once;
a scheduler that cannot be reached is a :class:`~lazyflow_rbfs.errors.RemoteTimeoutError` after dask's
connect timeout (``distributed.comm.timeouts.connect``, 30 s unless configured); a scheduler without
workers is waited on for ``wait_for_workers`` seconds (a warning says so), then a ``RemoteTimeoutError``.

In a worker process one fileset per description and option set is opened and shared by every task
(:func:`worker_fileset`), so a worker keeps at most ``max_parallel`` requests in flight whatever the number
of its threads.
"""

from __future__ import annotations

from lazyflow_rbfs.distributed.address import parse_scheduler_address
from lazyflow_rbfs.distributed.arrays import _BlockSource as _BlockSource
from lazyflow_rbfs.distributed.arrays import to_dask
from lazyflow_rbfs.distributed.cluster import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_WAIT_FOR_WORKERS,
    prefetch_on_cluster,
)
from lazyflow_rbfs.distributed.cluster import TASK_RETRIES as TASK_RETRIES
from lazyflow_rbfs.distributed.workers import MAX_CACHED_FILESETS as MAX_CACHED_FILESETS
from lazyflow_rbfs.distributed.workers import _spec_of as _spec_of
from lazyflow_rbfs.distributed.workers import close_worker_filesets, worker_fileset

# The private names above (_BlockSource, _spec_of) and TASK_RETRIES, MAX_CACHED_FILESETS stay importable
# from here, as when this package was one module (tests use them).
__all__ = [
    "prefetch_on_cluster",
    "to_dask",
    "worker_fileset",
    "close_worker_filesets",
    "parse_scheduler_address",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_WAIT_FOR_WORKERS",
]
