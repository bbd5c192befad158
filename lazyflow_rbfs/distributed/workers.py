"""What a task opens in a worker: a picklable spec of a fileset, and one fileset per process and spec.

In a worker process one fileset per description and option set is opened and shared by every task
(:func:`worker_fileset`), so a worker keeps at most ``max_parallel`` requests in flight whatever the number
of its threads. All are closed at process exit (:func:`close_worker_filesets`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import OrderedDict
from typing import Any

from lazyflow_rbfs.cache import RESTfulBlockwiseFileset

__all__ = ["worker_fileset", "close_worker_filesets", "MAX_CACHED_FILESETS"]

logger = logging.getLogger(__name__)

#: Filesets kept open per worker process (least recently used ones are dropped beyond this).
MAX_CACHED_FILESETS = 16


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
