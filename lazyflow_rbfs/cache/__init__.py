"""The remote cache: a remote volume read through a local, shared, crash-safe block store.

Modules: :mod:`.fetcher` (:class:`~.fetcher.BlockFetcher`: claim, lock, download and publish one block,
once across threads, processes and machines), :mod:`.prefetch` (the prefetch engine and
:class:`PrefetchReport`) and :mod:`.fileset` (:class:`RESTfulBlockwiseFileset` = a
:class:`~lazyflow_rbfs.store.BlockwiseFileset` + a fetcher).
"""

from __future__ import annotations

from lazyflow_rbfs.cache.fileset import EXIT_GRACE_SECONDS, MAX_LOOKS_PER_BLOCK, RESTfulBlockwiseFileset
from lazyflow_rbfs.cache.prefetch import (
    DEFAULT_MAX_FAILURES,
    MAX_ERROR_DETAILS,
    PrefetchInterrupted,
    PrefetchReport,
    ProgressBar,
)

__all__ = [
    "RESTfulBlockwiseFileset",
    "PrefetchReport",
    "PrefetchInterrupted",
    "ProgressBar",
    "DEFAULT_MAX_FAILURES",
    "MAX_ERROR_DETAILS",
    "EXIT_GRACE_SECONDS",
    "MAX_LOOKS_PER_BLOCK",
]
