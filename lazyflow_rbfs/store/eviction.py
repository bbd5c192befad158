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

import contextlib
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

#: The cache-level lock one evictor at a time holds (never removed; no ``.lock`` suffix, which names
#: per-block locks).
EVICT_LOCK_NAME = ".rbfs-evicting"
#: Test-only hook: set to ``1``, an eviction that has removed a block's ``STATUS.txt`` (but not yet its
#: file) writes a line to stderr and waits for a byte on stdin, so a test can kill it at that point.
PAUSE_ENV = "RBFS_TEST_PAUSE_EVICTION"
#: Evictions applied to the ledger at once (one ledger change each).
_BATCH = 256
#: A publish over the limit evicts down to ``limit - limit // LOW_WATER_DIVISOR`` (about 3 % below it).
LOW_WATER_DIVISOR = 32
#: How a block directory is opened from its parent: never through a symbolic link.
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
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
    busy: bool = False  # not waited for: another thread or process was evicting (nothing done)


def _pause_for_test(paths: BlockPaths) -> None:
    if os.environ.get(PAUSE_ENV) != "1":
        return
    os.write(2, f"rbfs-test: evicting {paths.directory}\n".encode())
    os.read(0, 1)  # until the test writes a byte, closes our stdin, or kills us


class _Releaser:
    """Releases a held :class:`~lazyflow_rbfs.locks.FileLock` on ``close()``."""

    def __init__(self, lock: locks.FileLock) -> None:
        self.lock = lock

    def close(self) -> None:
        self.lock.release()


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
        #: (mtime_ns, directory, start, size, paths) of the oldest blocks of the last walk, the oldest last.
        self._candidates: list[tuple[int, str, tuple[int, ...], int, BlockPaths]] = []

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
        if after.bytes <= self.limit:
            return
        # Evict a little below the limit, so that a fill over the limit evicts in batches, not one block
        # per publish (each round costs locks and ledger updates). If another thread or process is
        # evicting already, do not queue behind it: it reads the ledger as it goes, and once it lets go
        # it looks again (below), so a publish that skipped while it held the lock is covered.
        target = self.limit - self.limit // LOW_WATER_DIVISOR
        while True:
            report = self.evict_to(target, wait=False)
            if report.busy or not report.evicted or self.footprint().bytes <= self.limit:
                return

    # -- evicting --

    def evict_to(
        self, target: int, *, dry_run: bool = False, rebuild: bool = False, wait: bool = True
    ) -> EvictionReport:
        """Evict least recently used blocks until the footprint is at most ``target`` bytes.

        ``rebuild`` (``rbfs gc``) walks the root first and rewrites the ledger from that walk when no
        change is under way (one walk serves both the count and the choice of blocks). Without ``wait``
        nothing is done (an empty report) when another thread or process is evicting from the root.
        """
        report = EvictionReport(limit=target, dry_run=dry_run)
        evicting = locks.FileLock(os.path.join(self.ledger.root, EVICT_LOCK_NAME))
        if not evicting.acquire(blocking=wait):
            report.busy = True
            return report
        with contextlib.closing(_Releaser(evicting)):
            if rebuild or dry_run:
                fp, oldest = self._walk(rebuild=rebuild and not dry_run)
                self._candidates = oldest[::-1]  # pop() takes the oldest
            else:
                fp = self.footprint()
            report.before = report.after = fp.bytes
            if fp.bytes <= target:
                return report
            if dry_run:
                self._plan(fp.bytes, target, report)
                return report
            current = fp.bytes
            refilled = rebuild
            while current > target:
                if not self._candidates:
                    if refilled:
                        break  # a fresh walk found nothing more to evict
                    self._refill(fp, current - target)
                    refilled = True
                    if not self._candidates:
                        break
                victims = self._take_victims(current - target)
                with self.ledger.change() as change:
                    self._remove_many(victims, change, report)
                current = change.after.bytes if change.after is not None else current + change.bytes
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

    def _entries(self) -> Iterator[tuple[int, str, tuple[int, ...], int, BlockPaths]]:
        # (directories are unique: sorting never compares the paths)
        for e in iter_entries(self.blocks, whole_root=True):
            yield (_ORPHAN if e.mtime_ns is None else e.mtime_ns, e.paths.directory, e.start, e.size, e.paths)

    def _walk(self, rebuild: bool) -> tuple[Footprint, list]:
        """Every block of the root, oldest first, and the footprint; with ``rebuild`` the ledger is
        rewritten from this walk if no change is under way (else the ledger's record is used)."""
        if rebuild:
            with self.ledger.exclusive(wait=False) as exclusive:
                entries = sorted(self._entries())
                if exclusive:
                    counted = [e[3] for e in entries if e[3]]
                    return self.ledger.write(Footprint(bytes=sum(counted), blocks=len(counted))), entries
        else:
            entries = sorted(self._entries())
        return self.footprint(), entries

    def _refill(self, fp: Footprint, excess: int) -> None:
        """Walk the root for the oldest blocks: enough for ``excess`` bytes (twice over, at least 4096)."""
        average = fp.bytes // fp.blocks if fp.blocks else 1
        want = max(4096, 2 * (excess // max(average, 1) + 1))
        oldest = heapq.nsmallest(want, self._entries())
        oldest.reverse()  # pop() takes the oldest
        self._candidates = oldest

    def _take_victims(self, excess: int) -> list:
        """The oldest candidates whose files add up to ``excess`` bytes (at most :data:`_BATCH` blocks)."""
        victims: list = []
        freed = 0
        while self._candidates and freed < excess and len(victims) < _BATCH:
            victim = self._candidates.pop()
            victims.append(victim)
            freed += victim[3]
        return victims

    def _plan(self, current: int, target: int, report: EvictionReport) -> None:
        while self._candidates and current > target:
            mtime, _, start, size, paths = self._candidates.pop()
            report.planned.append(BlockEntry(start, paths, None if mtime == _ORPHAN else mtime, size))
            report.evicted += 1
            report.evicted_bytes += size
            current -= size
        self._candidates = []
        report.after = current

    def _remove_many(self, victims: list, change: Any, report: EvictionReport) -> None:
        """Evict ``victims`` in directory order, opening each parent directory once (no links followed)."""
        layout = self.blocks.layout
        root = layout.root
        parent_path, parent_fd = None, None
        try:
            for mtime, directory, _, size, paths in sorted(victims, key=lambda v: v[1]):
                parent = os.path.dirname(directory)
                freed: int | None
                if os.path.dirname(paths.file_path) != directory or not directory.startswith(root + os.sep):
                    freed = self.remove(paths, change, expected_mtime_ns=mtime)
                else:
                    if parent != parent_path:
                        if parent_fd is not None:
                            os.close(parent_fd)
                            parent_fd = None
                        parent_path = parent
                        parts = parent[len(root) + 1 :].split(os.sep) if parent != root else []
                        try:
                            parent_fd = atomic.open_dir(root, parts, create=False)
                        except (FileNotFoundError, CacheWriteError) as exc:
                            logger.debug("not evicting under %s: %s", parent, exc)
                    freed = 0 if parent_fd is None else self._remove_in(parent_fd, paths, change, mtime, size)
                if freed is None:
                    report.skipped_locked += 1
                elif freed:
                    report.evicted += 1
                    report.evicted_bytes += freed
        finally:
            if parent_fd is not None:
                os.close(parent_fd)

    def _remove_in(
        self, parent_fd: int, paths: BlockPaths, change: Any, expected: int, size: int
    ) -> int | None:
        """:meth:`remove` of a block whose directory is opened from ``parent_fd`` without following links."""
        try:
            block_fd = os.open(
                os.path.basename(paths.directory),
                _DIR_FLAGS,
                dir_fd=parent_fd,
            )
        except OSError as exc:  # gone, or a planted link (ELOOP/ENOTDIR): nothing of ours to evict
            logger.debug("not evicting %s: %s", paths.directory, exc)
            return 0
        try:
            lock = locks.BlockLock(paths.lock_path)
            if not lock.acquire(blocking=False):
                return None
            try:
                return self._remove_locked(paths, block_fd, block_fd, change, expected, size)
            finally:
                lock.release()
        finally:
            os.close(block_fd)

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
        self,
        paths: BlockPaths,
        block_fd: int,
        file_fd: int,
        change: Any,
        expected: int | None,
        known_size: int | None = None,
    ) -> int:
        """Remove the block (its lock held): bytes freed. ``known_size`` (the walk's) is trusted when its
        ``STATUS.txt`` is the very one the walk saw: a new publish would have made a new one."""
        try:
            st = os.stat(STATUS_FILE_NAME, dir_fd=block_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if expected is not None:
            now = _ORPHAN if st is None else st.st_mtime_ns
            if now != expected:
                return 0  # read (or evicted and published again) since the walk: not the oldest now
        name = os.path.basename(paths.file_path)
        if known_size is not None and st is not None and expected == st.st_mtime_ns:
            size = known_size
        else:
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
        """Remove every block of ``roi`` (view coordinates) now; a block being written is waited for.

        Each block's lock is taken before its ledger change starts (never waiting while a change is
        open, so a rebuild can always get the exclusive lock).
        """
        report = EvictionReport(limit=None)
        report.before = self.footprint().bytes
        layout = self.blocks.layout
        for entry in iter_entries(self.blocks, roi):
            paths = entry.paths
            lock = locks.BlockLock(paths.lock_path)
            try:
                with layout.block_dirs(paths, create=False) as (block_fd, file_fd):
                    lock.acquire()
                    try:
                        with self.ledger.change() as change:
                            freed = self._remove_locked(paths, block_fd, file_fd, change, None)
                    finally:
                        lock.release()
            except FileNotFoundError:
                continue
            except CacheWriteError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                logger.warning("not purging %s: %s", paths.directory, exc)
                continue
            if freed:
                report.evicted += 1
                report.evicted_bytes += freed
        report.after = self.footprint().bytes
        return report
