"""Maintenance of a block tree: status summary, verify (and repair), purge of stale lock and temp files.

Each function takes the fileset's :class:`~lazyflow_rbfs.store.blocks.BlockStore` and visits only the
block directories that exist (:meth:`~lazyflow_rbfs.store.layout.BlockLayout.iter_block_dirs`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from lazyflow_rbfs import locks
from lazyflow_rbfs.store.blocks import BlockStore
from lazyflow_rbfs.store.grid import Roi, ints
from lazyflow_rbfs.store.layout import (
    LOCK_FILE_NAME,
    STATUS_FILE_NAME,
    UPSTREAM_LOCK_SUFFIX,
    BlockPaths,
    listdir,
)

__all__ = ["StatusSummary", "BadBlock", "VerifyReport", "status_summary", "verify", "purge_locks"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatusSummary:
    """Block counts of a roi (see :meth:`BlockwiseFileset.statusSummary`).

    ``partial`` blocks have a block file or a ``*.partial`` temp file but no ``STATUS.txt``;
    ``available_bytes`` is the total size of the block files of the available blocks.
    """

    total: int
    available: int
    partial: int
    missing: int
    available_bytes: int


@dataclass(frozen=True)
class BadBlock:
    """An available block whose file is not what ``STATUS.txt`` promises."""

    block_start: tuple[int, ...]
    path: str
    reason: str


@dataclass
class VerifyReport:
    """Result of :meth:`BlockwiseFileset.verify`.

    ``checked`` counts the available blocks examined, ``bad_blocks`` lists the broken ones,
    ``stray_partials`` the temp files no live writer owns, ``links`` the symbolic links planted in the
    block tree (the cache never writes through or follows them; a repair removes the links, never their
    targets), ``removed`` what a repair deleted and ``skipped_locked`` the blocks a repair left alone
    because another process held their lock.
    """

    checked: int = 0
    bad_blocks: list[BadBlock] = field(default_factory=list)
    stray_partials: list[str] = field(default_factory=list)
    repaired: bool = False
    removed: list[str] = field(default_factory=list)
    skipped_locked: list[tuple[int, ...]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing bad was found."""
        return not self.bad_blocks and not self.stray_partials and not self.links


def _dirs(blocks: BlockStore, roi: Roi | None, links: list[str] | None = None):
    start, stop = blocks.grid.full_roi(roi)
    return blocks.layout.iter_block_dirs(ints(start), ints(stop), links)


def status_summary(blocks: BlockStore, roi: Roi | None = None) -> StatusSummary:
    """Count available, partial and missing blocks of ``roi`` (default: the view), streaming."""
    layout = blocks.layout
    total = blocks.grid.count_blocks(roi)
    available = partial = nbytes = 0
    stat, sep = os.stat, os.sep
    for block_start, directory in _dirs(blocks, roi):
        paths = layout.leaf_paths(block_start, directory)
        try:
            stat(directory + sep + STATUS_FILE_NAME)
        except FileNotFoundError:
            pass
        else:
            available += 1
            try:
                nbytes += stat(paths.file_path).st_size
            except FileNotFoundError:
                pass
            continue
        near = layout.names_near_file(paths, listdir(directory))
        if os.path.basename(paths.file_path) in near or layout.partials(paths, near):
            partial += 1
    return StatusSummary(
        total=total,
        available=available,
        partial=partial,
        missing=total - available - partial,
        available_bytes=nbytes,
    )


def _scan_block_dir(directory: str) -> tuple[set[str], set[str]]:
    """Names in a block directory, and those of them that are symbolic links."""
    names: set[str] = set()
    linked: set[str] = set()
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                names.add(entry.name)
                if entry.is_symlink():
                    linked.add(entry.name)
    except (FileNotFoundError, NotADirectoryError):
        pass
    return names, linked


def _remove_link(blocks: BlockStore, path: str, report: VerifyReport) -> None:
    if blocks.layout.remove_link(path):
        logger.warning("removed the symbolic link %s", path)
        report.removed.append(path)


def verify(
    blocks: BlockStore, repair: bool = False, roi: Roi | None = None, *, deep: bool = False
) -> VerifyReport:
    """Check every available block of ``roi`` and look for stray temp files and planted links.

    See :meth:`~lazyflow_rbfs.store.BlockwiseFileset.verify`.
    """
    layout = blocks.layout
    report = VerifyReport(repaired=bool(repair))
    dir_links: list[str] = []
    for block_start, directory in _dirs(blocks, roi, links=dir_links):
        names, linked = _scan_block_dir(directory)
        paths = layout.leaf_paths(block_start, directory)
        if linked:
            report.links.extend(os.path.join(directory, name) for name in sorted(linked))
            if repair:
                for name in sorted(linked):
                    _remove_link(blocks, os.path.join(directory, name), report)
                names -= linked
        partials = layout.partials(paths, layout.names_near_file(paths, names))
        if partials and not layout.locked_elsewhere(paths):
            report.stray_partials.extend(partials)
        else:
            partials = []
        reason = None
        if STATUS_FILE_NAME in names:
            report.checked += 1
            reason = blocks.check_block_file(paths, block_start, deep)
            if reason is not None:
                logger.warning("bad block %s (%s): %s", block_start, paths.file_path, reason)
                report.bad_blocks.append(BadBlock(block_start, paths.file_path, reason))
        if repair and (reason is not None or partials):
            _repair_block(blocks, block_start, paths, reason is not None, report)
    for link in sorted(dir_links):
        logger.warning("symbolic link %s planted in the block tree", link)
        report.links.append(link)
        if repair:
            _remove_link(blocks, link, report)
    return report


def _repair_block(
    blocks: BlockStore, block_start: tuple[int, ...], paths: BlockPaths, bad: bool, report: VerifyReport
) -> None:
    lock = locks.BlockLock(paths.lock_path)
    if not lock.acquire(blocking=False):
        logger.warning("block %s is locked by another process; not repairing it", block_start)
        report.skipped_locked.append(block_start)
        return
    try:
        # Judged without the lock: check again now that nobody can be publishing it.
        discard = (
            bad
            and os.path.exists(paths.status_path)
            and (blocks.check_block_file(paths, block_start, deep=False) is not None)
        )
        file_dir = os.path.dirname(paths.file_path)
        partials = [os.path.basename(p) for p in blocks.layout.partials(paths, listdir(file_dir))]
        for path in blocks.remove_block_files(paths, discard, discard, partials):
            logger.warning("removed %s", path)
            report.removed.append(path)
    finally:
        lock.release()


def purge_locks(blocks: BlockStore) -> int:
    """Remove stale upstream lock files, leftover ``.rbfs.lock`` files nobody holds and unowned temp files
    of the view; return how many.

    See :meth:`~lazyflow_rbfs.store.BlockwiseFileset.purgeAllLocks`.
    """
    layout = blocks.layout
    removed = 0
    for block_start, directory in _dirs(blocks, None):
        names = listdir(directory)
        paths = layout.leaf_paths(block_start, directory)
        near = layout.names_near_file(paths, names)
        upstream_lock = os.path.basename(paths.file_path) + UPSTREAM_LOCK_SUFFIX
        if upstream_lock in near:
            for path in blocks.remove_block_files(paths, False, False, [upstream_lock]):
                removed += 1
                logger.warning("purged stale lock file %s of block %s", path, block_start)
        partials = layout.partials(paths, near)
        if not partials and LOCK_FILE_NAME not in names:
            continue
        lock = locks.BlockLock(paths.lock_path)
        if not lock.acquire(blocking=False):
            if partials:
                logger.info(
                    "block %s is being written by a live process; leaving its temp files", block_start
                )
            continue
        try:
            partial_names = [os.path.basename(p) for p in partials]
            for path in blocks.remove_block_files(paths, False, False, partial_names):
                removed += 1
                logger.warning("purged stale temp file %s of block %s", path, block_start)
        finally:
            lock.release()  # also removes the lock file (one a killed process left behind is counted)
        if LOCK_FILE_NAME in names:
            removed += 1
            logger.info("purged the leftover lock file %s of block %s", paths.lock_path, block_start)
    return removed
