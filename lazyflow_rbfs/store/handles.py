"""HandleCache: a bounded, thread-safe LRU cache of read-only ``h5py.File`` handles of block files.

Reads pin a handle while they copy from it; eviction, invalidation and ``close_all`` retire a pinned
handle and its last reader closes it. A handle whose file was replaced on disk is re-opened.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable

import h5py

from lazyflow_rbfs.errors import ClosedError

__all__ = ["HandleCache", "file_key"]

logger = logging.getLogger(__name__)


class _Handle:
    __slots__ = ("path", "file", "key", "fd", "pins", "retired", "datasets")

    def __init__(self, path: str, file: h5py.File, key: tuple) -> None:
        self.path = path
        self.file = file
        self.key = key
        self.fd = file.id.get_vfd_handle()  # the open file's descriptor, to see it changed in place
        self.pins = 0
        self.retired = False
        self.datasets: dict[str, h5py.Dataset] = {}

    def dataset(self, internal_path: str) -> h5py.Dataset:
        ds = self.datasets.get(internal_path)
        if ds is None:
            ds = self.file[internal_path]
            self.datasets[internal_path] = ds
        return ds


def file_key(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class HandleCache:
    """At most ``max_open`` read-only ``h5py.File`` handles, least recently used evicted first.

    A handle in use is *pinned*: eviction, invalidation and ``close_all`` never close a pinned handle;
    they retire it and the last ``release`` closes it. When every slot is pinned, ``acquire`` waits until
    one is released (each reader pins one handle at a time, so this cannot deadlock). A cached handle
    whose file was replaced on disk (different inode, mtime or size) is retired and the file re-opened.
    """

    def __init__(
        self,
        max_open: int,
        reclaim: Callable[[], bool] | None = None,
        confine: Callable[[str], None] | None = None,
        *,
        condition: threading.Condition | None = None,
    ) -> None:
        self._max = max_open
        self._reclaim = reclaim  # closes one file held outside the cache; called without our lock
        self._confine = confine  # raises OSError for a path that leads out of the cache root
        self._entries: OrderedDict[str, _Handle] = OrderedDict()
        self._cond = condition if condition is not None else threading.Condition()
        self._open = 0
        self._reserved = 0  # files held open outside this cache (getOpenHdf5FileForBlock), same budget
        self._closed = False

    @property
    def max_open(self) -> int:
        return self._max

    @property
    def open_count(self) -> int:
        """Number of HDF5 files this cache holds open right now (cached plus retired-but-pinned)."""
        with self._cond:
            return self._open

    def cached_paths(self) -> list[str]:
        with self._cond:
            return list(self._entries)

    def reopen(self) -> None:
        with self._cond:
            self._closed = False

    def after_fork_in_child(self, reserved: int) -> None:
        # Only the forking thread lives on in a child: the condition may have been copied held, and the
        # pins of the other threads are never released. h5py takes its own lock around fork, so the
        # handles themselves are consistent; keep the cached ones, unpinned, and forget the retired ones.
        self._cond = threading.Condition()
        for entry in self._entries.values():
            entry.pins = 0
        self._open = len(self._entries)
        self._reserved = reserved

    def acquire(self, path: str) -> _Handle:
        key = file_key(os.stat(path))
        with self._cond:
            while True:
                if self._closed:
                    raise ClosedError(f"cannot read {path}: the fileset is closed")
                entry = self._entries.get(path)
                if entry is not None:
                    if entry.key == key:
                        entry.pins += 1
                        self._entries.move_to_end(path)
                        return entry
                    logger.debug("block file %s was replaced on disk; re-opening it", path)
                    self._retire(entry)
                    continue
                if self._open + self._reserved < self._max or self._evict_one():
                    break
                if self._reserved and self._reclaim is not None:
                    # Files handed out (getOpenHdf5FileForBlock) fill the budget: take one back. The
                    # owner takes its own lock first, so call it with ours released.
                    self._cond.release()
                    try:
                        reclaimed = self._reclaim()
                    finally:
                        self._cond.acquire()
                    if reclaimed:
                        continue
                self._cond.wait()
            if self._confine is not None:
                self._confine(path)  # once per opened handle, never on a cached one
            handle = h5py.File(path, "r")
            if handle.id.get_filesize() != key[3]:
                # HDF5 shares one open file per inode in a process: if another handle still holds this
                # inode open, "opening" it again reuses that older state. A file whose size differs
                # from it was overwritten in place since (by hand, by another program), and reading it
                # would return zeros past its new end.
                handle.close()
                raise OSError(f"{path} was modified in place while open in this process")
            entry = _Handle(path, handle, key)
            entry.pins = 1
            self._entries[path] = entry
            self._open += 1
            return entry

    def release(self, entry: _Handle) -> None:
        with self._cond:
            entry.pins -= 1
            if entry.pins == 0:
                if entry.retired:
                    self._close(entry)
                self._cond.notify_all()

    def reserve(self, count: int) -> bool:
        """Account for ``count`` files held open outside the cache, evicting unpinned handles to make room.

        Returns ``False`` if the budget cannot fit them (every cached handle is in use).
        """
        with self._cond:
            while self._open + self._reserved + count > self._max:
                if not self._evict_one():
                    return False
            self._reserved += count
            return True

    def unreserve(self, count: int) -> None:
        with self._cond:
            self._reserved -= count
            self._cond.notify_all()

    def invalidate(self, path: str) -> None:
        with self._cond:
            entry = self._entries.get(path)
            if entry is not None:
                self._retire(entry)

    def close_all(self) -> None:
        with self._cond:
            self._closed = True
            for entry in list(self._entries.values()):
                self._retire(entry)
            self._cond.notify_all()

    # -- helpers, called with the condition held --

    def _evict_one(self) -> bool:
        for entry in self._entries.values():
            if entry.pins == 0:
                self._retire(entry)
                return True
        return False

    def _retire(self, entry: _Handle) -> None:
        if self._entries.get(entry.path) is entry:
            del self._entries[entry.path]
        entry.retired = True
        if entry.pins == 0:
            self._close(entry)
            self._cond.notify_all()

    def _close(self, entry: _Handle) -> None:
        if entry.file is None:
            return
        entry.datasets.clear()
        try:
            entry.file.close()
        except Exception as exc:  # closing must not mask the caller's work
            logger.warning("could not close block file %s: %s", entry.path, exc)
        entry.file = None
        self._open -= 1
