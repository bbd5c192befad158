"""Size-bounded caches: least recently used blocks are evicted, each under its own block lock.

* Footprint: the root's :class:`~lazyflow_rbfs.store.ledger.Ledger` (no walk per publish).
* Recency: the mtime of each block's ``STATUS.txt`` (:mod:`lazyflow_rbfs.store.usage`).
* Eviction (:class:`Evictor`): one evictor per root at a time (``flock`` on ``<root>/.rbfs-evict.lock``).
  It walks the root once for the oldest blocks (enough of them for the excess), then evicts from that
  list, oldest first. Each block is taken with a *non-blocking* try of its block lock (a block being
  published or repaired is never evicted), its ``STATUS.txt`` mtime is compared with the walk's (a
  block read since is skipped), then ``STATUS.txt`` is removed before the block file, so no reader
  ever trusts a half-removed block. A reader that loses a block mid-read fetches it again (the cache's
  "look again" path). Block files without ``STATUS.txt`` (left by a killed process) go first.
* A killed evictor leaves the ledger's ``pending`` count up; the next process rebuilds it by a walk.
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lazyflow_rbfs import atomic, locks
from lazyflow_rbfs.description import fields
from lazyflow_rbfs.errors import ArgumentError, CacheWriteError
from lazyflow_rbfs.store.blocks import BlockStore
from lazyflow_rbfs.store.grid import Roi, ints
from lazyflow_rbfs.store.layout import STATUS_FILE_NAME, BlockPaths
from lazyflow_rbfs.store.ledger import Footprint, Ledger

__all__ = [
    "parse_size",
    "check_max_cache_bytes",
    "BlockEntry",
    "iter_entries",
    "walk_footprint",
    "EvictionReport",
    "Evictor",
    "EVICT_LOCK_NAME",
]

logger = logging.getLogger(__name__)

EVICT_LOCK_NAME = ".rbfs-evict.lock"
#: Test-only hook: set to ``1``, an eviction that has removed a block's ``STATUS.txt`` (but not yet its
#: file) writes a line to stderr and waits for a byte on stdin, so a test can kill it at that point.
PAUSE_ENV = "RBFS_TEST_PAUSE_EVICTION"
#: Evictions applied to the ledger at once (one ledger change each).
_BATCH = 256
#: Sort key of a block file without STATUS.txt: before every block in use.
_ORPHAN = -1


def parse_size(text: str) -> int:
    """Bytes of ``"500M"``, ``"50G"``, ``"2T"``, ``"1.5G"``, ``"12345"`` (units are powers of 1024;
    ``K``, ``KB`` and ``KiB`` mean the same). Raises :class:`ArgumentError`."""
    size = fields.parse_size(text)
    if size is None:
        raise ArgumentError(f"expected a size such as 500M, 50G, 2T or a number of bytes, found {text!r}")
    return size


def check_max_cache_bytes(value: Any) -> int | None:
    """``max_cache_bytes`` as given to a fileset: ``None``, an int >= 0 or a size string (``"50G"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_size(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ArgumentError(
            f"max_cache_bytes must be None, an integer >= 0 or a size such as '50G', got {value!r}"
        )
    return int(value)


@dataclass(frozen=True)
class BlockEntry:
    """A block the root holds: ``mtime_ns`` of its ``STATUS.txt`` (``None``: no STATUS.txt) and the size
    of its block file (0 if there is none)."""

    start: tuple[int, ...]
    paths: BlockPaths
    mtime_ns: int | None
    size: int


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def iter_entries(
    blocks: BlockStore, roi: Roi | None = None, *, whole_root: bool = False
) -> Iterator[BlockEntry]:
    """Stream the blocks present under the root: of ``roi`` (default the view), or of the whole root.

    Symbolic links are neither followed nor counted.
    """
    layout = blocks.layout
    if whole_root:
        dirs = layout.iter_root_block_dirs()
    else:
        start, stop = blocks.grid.full_roi(roi)
        dirs = layout.iter_block_dirs(ints(start), ints(stop))
    for start, directory in dirs:
        paths = layout.leaf_paths(start, directory)
        st = _lstat(paths.status_path)
        mtime = st.st_mtime_ns if st is not None and stat.S_ISREG(st.st_mode) else None
        fst = _lstat(paths.file_path)
        size = fst.st_size if fst is not None and stat.S_ISREG(fst.st_mode) else 0
        if mtime is None and not size:
            continue
        yield BlockEntry(start, paths, mtime, size)


def walk_footprint(blocks: BlockStore) -> tuple[int, int]:
    """``(bytes, blocks)`` of the block files under the whole root, by a walk."""
    nbytes = count = 0
    for entry in iter_entries(blocks, whole_root=True):
        if entry.size:
            nbytes += entry.size
            count += 1
    return nbytes, count


@dataclass
class EvictionReport:
    """What an eviction did (or, with ``dry_run``, would do)."""

    limit: int | None
    before: int = 0  # footprint (bytes) when it started
    after: int = 0  # footprint (bytes) when it ended
    evicted: int = 0
    evicted_bytes: int = 0
    skipped_locked: int = 0  # blocks in use by a publish or repair: left alone
    dry_run: bool = False
    planned: list[BlockEntry] = field(default_factory=list)  # dry run: the blocks it would evict


def _pause_for_test(paths: BlockPaths) -> None:
    if os.environ.get(PAUSE_ENV) != "1":
        return
    os.write(2, f"rbfs-test: evicting {paths.directory}\n".encode())
    os.read(0, 1)  # until the test writes a byte, closes our stdin, or kills us


class Evictor:
    """Keeps a cache root within ``limit`` bytes of block files by evicting least recently used blocks.

    Parameters
    ----------
    blocks
        The store of the fileset that evicts (its grid names every block of the root).
    ledger
        The root's footprint ledger.
    limit
        Bytes; ``None``: no limit (explicit :meth:`evict_to` and :meth:`purge` still work).
    """

    def __init__(self, blocks: BlockStore, ledger: Ledger, limit: int | None) -> None:
        self.blocks = blocks
        self.ledger = ledger
        self.limit = limit
        self.evicted = 0  # blocks this evictor removed
        #: (mtime_ns, directory, start) of the oldest blocks of the last walk, the oldest last.
        self._candidates: list[tuple[int, str, tuple[int, ...]]] = []

    # -- the footprint --

    def footprint(self) -> Footprint:
        """The ledger's record, rebuilt by a walk first if missing or damaged."""
        fp = self.ledger.read()
        if fp is None:
            fp = self.ledger.reconcile(wait=True)
        return fp

    def after_publish(self, after: Footprint | None) -> None:
        """Called after each publish with the ledger record it left: evict if over the limit."""
        if self.limit is None or after is None:
            return
        if not after.trusted:
            after = self.ledger.reconcile(wait=False) or after
        if after.bytes > self.limit:
            self.evict_to(self.limit)

    # -- evicting --

    def evict_to(self, target: int, *, dry_run: bool = False) -> EvictionReport:
        """Evict least recently used blocks until the footprint is at most ``target`` bytes."""
        report = EvictionReport(limit=target, dry_run=dry_run)
        with locks.FileLock(os.path.join(self.ledger.root, EVICT_LOCK_NAME)):
            fp = self.footprint()
            report.before = report.after = fp.bytes
            if fp.bytes <= target:
                return report
            if dry_run:
                self._plan(fp, target, report)
                return report
            current = fp.bytes
            refilled = False
            while current > target:
                with self.ledger.change() as change:
                    for _ in range(_BATCH):
                        if current + change.bytes <= target:
                            break
                        if not self._candidates:
                            if refilled:
                                break  # a fresh walk found nothing more to evict
                            self._refill(fp, current + change.bytes - target)
                            refilled = True
                            if not self._candidates:
                                break
                        mtime, directory, start = self._candidates.pop()
                        freed = self._evict_one(start, directory, mtime, change)
                        if freed is None:
                            report.skipped_locked += 1
                        elif freed:
                            report.evicted += 1
                            report.evicted_bytes += freed
                            refilled = False
                current = change.after.bytes if change.after is not None else current + change.bytes
                if not self._candidates and refilled:
                    break
            report.after = current
        if report.evicted:
            logger.debug(
                "evicted %d least recently used blocks (%d bytes) from %s: %d -> %d bytes (target %d)",
                report.evicted,
                report.evicted_bytes,
                self.ledger.root,
                report.before,
                report.after,
                target,
            )
        if report.after > target:
            logger.warning(
                "the cache %s holds %d bytes, more than %d, and nothing more can be evicted now "
                "(%d blocks are being written or repaired)",
                self.ledger.root,
                report.after,
                target,
                report.skipped_locked,
            )
        return report

    def _refill(self, fp: Footprint, excess: int) -> None:
        """Walk the root for the oldest blocks: enough for ``excess`` bytes (twice over, at least 4096)."""
        average = fp.bytes // fp.blocks if fp.blocks else 1
        want = max(4096, 2 * (excess // max(average, 1) + 1))
        oldest = heapq.nsmallest(
            want,
            (
                (_ORPHAN if e.mtime_ns is None else e.mtime_ns, e.paths.directory, e.start)
                for e in iter_entries(self.blocks, whole_root=True)
            ),
        )
        oldest.reverse()  # pop() takes the oldest
        self._candidates = oldest

    def _plan(self, fp: Footprint, target: int, report: EvictionReport) -> None:
        entries = sorted(
            iter_entries(self.blocks, whole_root=True),
            key=lambda e: (_ORPHAN if e.mtime_ns is None else e.mtime_ns, e.paths.directory),
        )
        current = fp.bytes
        for entry in entries:
            if current <= target:
                break
            report.planned.append(entry)
            report.evicted += 1
            report.evicted_bytes += entry.size
            current -= entry.size
        report.after = current

    def _evict_one(self, start: tuple[int, ...], directory: str, mtime: int, change: Any) -> int | None:
        """Evict one block if it is as the walk saw it: bytes freed, 0 if it changed or went, ``None``
        if its lock is held (being published or repaired)."""
        paths = self.blocks.layout.leaf_paths(start, directory)
        return self.remove(paths, change, expected_mtime_ns=mtime, blocking=False)

    def remove(
        self,
        paths: BlockPaths,
        change: Any,
        *,
        expected_mtime_ns: int | None = None,
        blocking: bool = False,
    ) -> int | None:
        """Remove one block under its lock (``STATUS.txt`` first, then the block file): bytes freed.

        ``expected_mtime_ns`` (from a walk) skips a block read since (0 returned); :data:`_ORPHAN`
        expects no ``STATUS.txt``. ``None`` when the lock is held elsewhere and not ``blocking``.
        """
        layout = self.blocks.layout
        lock = locks.BlockLock(paths.lock_path)
        try:
            with layout.block_dirs(paths, create=False) as (block_fd, file_fd):
                if not lock.acquire(blocking=blocking):
                    return None
                try:
                    return self._remove_locked(paths, block_fd, file_fd, change, expected_mtime_ns)
                finally:
                    lock.release()
        except FileNotFoundError:
            return 0
        except CacheWriteError as exc:
            if exc.errno != errno.ELOOP:
                raise
            logger.warning("not evicting %s: %s", paths.directory, exc)
            return 0

    def _remove_locked(
        self, paths: BlockPaths, block_fd: int, file_fd: int, change: Any, expected: int | None
    ) -> int:
        try:
            st = os.stat(STATUS_FILE_NAME, dir_fd=block_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if expected is not None:
            now = _ORPHAN if st is None else st.st_mtime_ns
            if now != expected:
                return 0  # read (or evicted and published again) since the walk: not the oldest now
        name = os.path.basename(paths.file_path)
        try:
            fst = os.stat(name, dir_fd=file_fd, follow_symlinks=False)
            size = fst.st_size if stat.S_ISREG(fst.st_mode) else 0
        except FileNotFoundError:
            size = 0
        if st is not None:
            atomic.remove(STATUS_FILE_NAME, dir_fd=block_fd, shown=paths.status_path)
            _pause_for_test(paths)
        removed = atomic.remove(name, dir_fd=file_fd, shown=paths.file_path)
        self.blocks.handles.invalidate(paths.file_path)
        if removed and size:
            change.add(-size, -1)
            self.evicted += 1
            logger.debug("evicted block %s (%d bytes)", paths.directory, size)
            return size
        return 0

    # -- purge --

    def purge(self, roi: Roi | None) -> EvictionReport:
        """Remove every block of ``roi`` (view coordinates) now; a block being written is waited for."""
        report = EvictionReport(limit=None)
        fp = self.footprint()
        report.before = fp.bytes
        with self.ledger.change() as change:
            for entry in iter_entries(self.blocks, roi):
                freed = self.remove(entry.paths, change, blocking=True)
                if freed:
                    report.evicted += 1
                    report.evicted_bytes += freed
        report.after = change.after.bytes if change.after is not None else fp.bytes - report.evicted_bytes
        return report
