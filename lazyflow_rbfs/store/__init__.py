"""The local block store: a dataset kept as a directory tree of HDF5 block files.

Modules, bottom up: :mod:`.grid` (the block grid as a value), :mod:`.layout` (names, paths, safe
directory access, the walk over the tree), :mod:`.handles` (the bounded cache of open block files),
:mod:`.publish` (atomic block files), :mod:`.blocks` (:class:`BlockStore`, the interface a fileset and
the remote cache use), :mod:`.maintenance` (status summary, verify, repair, purge), :mod:`.export` and
:mod:`.fileset` (:class:`BlockwiseFileset`, the public class). Nothing here touches the network.
"""

from __future__ import annotations

from lazyflow_rbfs.store.blocks import BlockStore
from lazyflow_rbfs.store.fileset import BlockwiseFileset
from lazyflow_rbfs.store.grid import BlockGrid
from lazyflow_rbfs.store.layout import (
    LOCK_FILE_NAME,
    PARTIAL_SUFFIX,
    STATUS_FILE_NAME,
    UPSTREAM_LOCK_SUFFIX,
    BlockPaths,
    PathComponents,
)
from lazyflow_rbfs.store.maintenance import BadBlock, StatusSummary, VerifyReport

__all__ = [
    "BlockwiseFileset",
    "BlockPaths",
    "PathComponents",
    "StatusSummary",
    "BadBlock",
    "VerifyReport",
    "BlockStore",
    "BlockGrid",
    "STATUS_FILE_NAME",
    "LOCK_FILE_NAME",
    "UPSTREAM_LOCK_SUFFIX",
    "PARTIAL_SUFFIX",
]
