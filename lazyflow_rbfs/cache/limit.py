"""CacheLimit: a cache root kept within ``max_cache_bytes``, least recently read blocks evicted first.

Wires the store's parts to one fileset: the root's footprint :class:`~lazyflow_rbfs.store.ledger.Ledger`
(updated by every publish and removal), the :class:`~lazyflow_rbfs.store.usage.UseTracker` (every read
records its blocks' use in their ``STATUS.txt`` mtime) and the
:class:`~lazyflow_rbfs.store.eviction.Evictor` (called after each publish with the ledger's record).
The footprint therefore stays within the limit plus the blocks being published at that moment (at most
``max_parallel`` per fileset). ``rbfs gc``, ``rbfs purge`` and ``rbfs status`` use it on a store alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lazyflow_rbfs.errors import ArgumentError, CacheWriteError, RbfsError
from lazyflow_rbfs.store.blocks import BlockStore
from lazyflow_rbfs.store.eviction import (
    EvictionReport,
    Evictor,
    check_max_cache_bytes,
    iter_entries,
    walk_footprint,
)
from lazyflow_rbfs.store.grid import Roi
from lazyflow_rbfs.store.ledger import Footprint, Ledger
from lazyflow_rbfs.store.usage import UseTracker

__all__ = ["CacheLimit", "CacheFootprint"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheFootprint:
    """Bytes and block files under the root (from the ledger), and the limit (``None``: unbounded)."""

    bytes: int
    blocks: int
    limit: int | None
    trusted: bool


class CacheLimit:
    """The size bound of one fileset's cache root (see the module docstring).

    Parameters
    ----------
    blocks
        The fileset's store; this sets its ``ledger`` and ``usage``.
    limit
        ``max_cache_bytes``: an int, a size string (``"50G"``) or ``None`` (no bound).
    track_use
        Record reads in ``STATUS.txt`` mtimes (default ``True``; ``False`` for benchmarks and read-only
        inspection).
    """

    def __init__(self, blocks: BlockStore, limit: Any, *, track_use: bool = True) -> None:
        self.blocks = blocks
        self.limit = check_max_cache_bytes(limit)
        self.ledger = Ledger(blocks.layout.root, lambda: walk_footprint(blocks))
        self.evictor = Evictor(blocks, self.ledger, self.limit)
        blocks.ledger = self.ledger
        if track_use:
            blocks.usage = UseTracker(blocks.layout)
        try:
            fp = self.ledger.read()
            if fp is not None and not fp.trusted:
                # Left unfinished by a killed process (or counted without a walk): rebuild now if no
                # change is under way, else at a later check. A missing or damaged record is rebuilt
                # when first needed (footprint(), or the first publish).
                self.ledger.reconcile(wait=False)
        except CacheWriteError as exc:  # a cache we may read but not write
            logger.info("cache footprint not tracked for %s: %s", blocks.layout.root, exc)
            blocks.ledger = None

    def after_publish(self, after: Footprint | None) -> None:
        """Evict least recently used blocks if the publish that left ``after`` passed the limit.

        The block is published whatever happens here: an eviction that fails (a file system that
        refuses a removal) is logged, never the download's failure.
        """
        if self.blocks.ledger is None:
            return
        try:
            self.evictor.after_publish(after)
        except (RbfsError, OSError) as exc:
            logger.warning("could not evict blocks to stay within %s bytes: %s", self.limit, exc)

    def footprint(self) -> CacheFootprint:
        """The ledger's record (rebuilt by a walk first only if missing or damaged): no tree walk."""
        fp = self.evictor.footprint()
        return CacheFootprint(bytes=fp.bytes, blocks=fp.blocks, limit=self.limit, trusted=fp.trusted)

    def gc(self, max_cache_bytes: Any = None, *, dry_run: bool = False) -> EvictionReport:
        """Evict now until the footprint fits ``max_cache_bytes`` (default: this limit).

        The ledger is first rebuilt by a walk when no change is under way (so blocks other programs
        wrote are counted). ``dry_run`` only says what would be evicted.
        """
        target = check_max_cache_bytes(max_cache_bytes)
        if target is None:
            target = self.limit
        if target is None:
            raise ArgumentError(
                "no cache limit to collect garbage to: give max_cache_bytes (rbfs gc --max-cache-size SIZE) "
                "or set max_cache_bytes in the local description"
            )
        return self.evictor.evict_to(target, dry_run=dry_run, rebuild=True)

    def oldest_use_ns(self) -> int | None:
        """When the least recently used block of the root was last used (``STATUS.txt`` mtime, ns since
        the epoch), by a walk; ``None`` for an empty cache."""
        times = (e.mtime_ns for e in iter_entries(self.blocks, whole_root=True) if e.mtime_ns is not None)
        return min(times, default=None)

    def not_held(self, report: Any, roi: Roi) -> int:
        """How many blocks of ``roi`` a prefetch got (``report``) that the cache no longer holds."""
        if self.limit is None:
            return 0
        held = sum(1 for e in iter_entries(self.blocks, roi) if e.mtime_ns is not None)
        return max(report.downloaded + report.skipped - held, 0)

    def purge(self, roi: Roi | None) -> EvictionReport:
        """Remove every cached block of ``roi`` (view coordinates); the next read downloads them again."""
        return self.evictor.purge(roi)
