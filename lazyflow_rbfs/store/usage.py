"""Use tracking: when each block was last read, shared by every process through ``STATUS.txt``'s mtime.

A read of a block records the use by setting the modification time of the block's (empty,
upstream-compatible) ``STATUS.txt`` to now, with ``os.utime`` through directory descriptors that never
follow a symbolic link. Access times are not used (``noatime``/``relatime`` mounts). To keep warm reads
as fast as before, a tracker remembers when it last recorded each block and records it again only after
:data:`USE_RECORD_SECONDS`: a hot block costs a dictionary look-up per read, not a write. Least recently
used therefore means "least recently used, to within :data:`USE_RECORD_SECONDS`".
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from lazyflow_rbfs.store.layout import STATUS_FILE_NAME, BlockLayout

__all__ = ["UseTracker", "USE_RECORD_SECONDS"]

logger = logging.getLogger(__name__)

#: A block's use is written to disk at most once per this many seconds by one tracker.
USE_RECORD_SECONDS = 10.0
#: Blocks a tracker remembers (cheap bound: forgetting only costs one more ``utime``).
_REMEMBERED = 1 << 16


class UseTracker:
    """Records reads of blocks in their ``STATUS.txt`` mtime, at most once per ``interval`` seconds each.

    Parameters
    ----------
    layout
        Where the blocks are.
    interval
        Seconds during which a block recorded by this tracker is not recorded again.
    """

    def __init__(self, layout: BlockLayout, interval: float = USE_RECORD_SECONDS) -> None:
        self.layout = layout
        self.interval = interval
        self.enabled = True
        self._recorded: dict[Any, float] = {}
        self._mutex = threading.Lock()

    def used_all(self, block_starts: Iterable[tuple[int, ...]]) -> None:
        """Note reads of blocks (view starts); writes the mtimes of those not recorded recently, in one
        pass over the tree."""
        if not self.enabled:
            return
        now = time.monotonic()
        recorded = self._recorded
        due = []
        for block_start in block_starts:
            last = recorded.get(block_start)
            if last is None or now - last >= self.interval:
                self._remember(block_start, now)
                due.append(block_start)
        if due:
            self._touch_all(due)

    def published(self, block_start: tuple[int, ...]) -> None:
        """Note a block just published: its new ``STATUS.txt`` already carries the time of this use."""
        self._remember(block_start, time.monotonic())

    def _remember(self, block_start: tuple[int, ...], now: float) -> None:
        recorded = self._recorded
        if len(recorded) >= _REMEMBERED:
            with self._mutex:
                recorded.clear()
        recorded[block_start] = now

    def _touch_all(self, block_starts: list[tuple[int, ...]]) -> None:
        """Set the ``STATUS.txt`` mtime of each block, opening every directory on the way once.

        The blocks are visited in directory order, holding open only the directories of the current
        block's path (a few descriptors, however many blocks). Each component is opened relative to its
        parent with ``O_NOFOLLOW``, as :func:`atomic.open_dir` does, so a planted link is never followed
        (that block's use is then not recorded).
        """
        layout = self.layout
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
        nofollow = getattr(os, "O_NOFOLLOW", 0)
        try:
            root_fd = os.open(layout.root, flags)
        except OSError as exc:
            logger.debug("uses of %d blocks not recorded: %s", len(block_starts), exc)
            return
        # path[i] = (name, descriptor or None when it could not be opened) of the i-th directory below
        # the root on the current block's way; a None makes everything below it None too.
        path: list[tuple[str, int | None]] = []
        try:
            for parts, block_start in sorted((layout.block_dir_names(b), b) for b in block_starts):
                same = 0
                while same < min(len(path), len(parts)) and path[same][0] == parts[same]:
                    same += 1
                while len(path) > same:
                    _, fd = path.pop()
                    if fd is not None:
                        os.close(fd)
                for name in parts[same:]:
                    parent = path[-1][1] if path else root_fd
                    child = None
                    if parent is not None:
                        try:
                            child = os.open(name, flags | nofollow, dir_fd=parent)
                        except OSError as exc:  # missing (evicted), or a planted link: not followed
                            logger.debug("use of block %s not recorded: %s", list(block_start), exc)
                    path.append((name, child))
                leaf = path[-1][1] if path else root_fd
                if leaf is not None and not self._utime(block_start, leaf):
                    return
        finally:
            for _, fd in path:
                if fd is not None:
                    os.close(fd)
            os.close(root_fd)

    def _utime(self, block_start: tuple[int, ...], dir_fd: int) -> bool:
        """Set the mtime of ``STATUS.txt`` in ``dir_fd``; False once tracking switched itself off."""
        try:
            os.utime(STATUS_FILE_NAME, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass  # evicted or discarded meanwhile: nothing to record
        except OSError as exc:
            return self._failed(block_start, exc)
        return True

    def _failed(self, block_start: tuple[int, ...], exc: OSError) -> bool:
        """Log a use not recorded; False (and tracking off) for a cache this process may not write."""
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            # A cache we may read but not write (shared read-only): reads work, uses are not recorded.
            self.enabled = False
            logger.info("block uses are not recorded in %s: %s", self.layout.root, exc)
            return False
        logger.debug("use of block %s not recorded: %s", list(block_start), exc)
        return True
