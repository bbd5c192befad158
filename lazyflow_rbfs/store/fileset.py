"""BlockwiseFileset: a local dataset stored as a directory tree of HDF5 block files.

The fileset is the public face; the work is done by components it owns (see docs/INTERNALS.md):
:class:`~lazyflow_rbfs.store.grid.BlockGrid` (the block grid, a value),
:class:`~lazyflow_rbfs.store.layout.BlockLayout` (names, paths, safe directory access, the tree walk),
:class:`~lazyflow_rbfs.store.handles.HandleCache` (open block files for reading),
:class:`~lazyflow_rbfs.store.publish.BlockFiles` (atomic block files) and
:class:`~lazyflow_rbfs.store.blocks.BlockStore` (``fileset.blocks``: the interface the remote cache uses),
plus :mod:`~lazyflow_rbfs.store.maintenance` and :mod:`~lazyflow_rbfs.store.export`.

Reads never lock: published blocks are immutable. Writes are atomic per block and serialised per block by
an OS lock shared with other processes. This module never touches the network.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import h5py
import numpy

from lazyflow_rbfs import atomic, identity
from lazyflow_rbfs import description as _desc
from lazyflow_rbfs.errors import (
    ArgumentError,
    BlockNotReadyError,
    ClosedError,
    ReadOnlyError,
    SchemaError,
)
from lazyflow_rbfs.store import export, maintenance
from lazyflow_rbfs.store.blocks import BlockStore
from lazyflow_rbfs.store.grid import BlockGrid, Roi, ints
from lazyflow_rbfs.store.handles import HandleCache
from lazyflow_rbfs.store.layout import STATUS_FILE_NAME, BlockLayout, BlockPaths, PathComponents, is_link
from lazyflow_rbfs.store.maintenance import StatusSummary, VerifyReport
from lazyflow_rbfs.store.publish import BlockFiles

__all__ = ["BlockwiseFileset"]

logger = logging.getLogger(__name__)

#: Every fileset not yet garbage, so that a forked child can reset their locks (see ``_after_fork_in_child``).
_LIVE_FILESETS: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for fileset in list(_LIVE_FILESETS):
        fileset._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


class BlockwiseFileset:
    """A dataset stored as a tree of HDF5 block files, described by a JSON description file.

    Parameters
    ----------
    descriptionFilePath
        The ``"blockwise-fileset-description"`` JSON file. Its directory anchors a relative
        ``dataset_root_dir``; it is needed even with ``preparsedDescription``.
    mode
        ``"r"`` (read-only) or ``"a"`` (read and write).
    preparsedDescription
        An already parsed description (a dict or namespace); validated again, the file is not read.
    max_open_files
        Upper bound of block files held open for reading at once.
    fsync
        fsync each block file before its rename and ``STATUS.txt`` after it (default). ``False`` is
        faster, for scratch caches: a power loss may then lose blocks (a killed process never leaves a
        trusted partial block either way).

    Notes
    -----
    Rois are ``(start, stop)`` pairs in view coordinates (disk coordinates minus ``view_origin``).
    Reads are thread-safe and take no lock; writes are atomic per block and serialised per block by an OS
    lock shared with other processes.
    """

    BLOCK_NOT_AVAILABLE = 0
    BLOCK_AVAILABLE = 1
    DescriptionFields = _desc.LOCAL_FIELDS
    BlockNotReadyError = BlockNotReadyError

    # -- description files ----------------------------------------------------------------------------

    @classmethod
    def readDescription(cls, descriptionFilePath: str | os.PathLike) -> Any:
        """Parse and validate a local description file; defaults are filled in."""
        return _desc.read_local(os.fspath(descriptionFilePath))

    @classmethod
    def writeDescription(cls, descriptionFilePath: str | os.PathLike, descriptionFields: Any) -> None:
        """Validate ``descriptionFields`` and atomically replace ``descriptionFilePath`` with it."""
        _desc.write_description(os.fspath(descriptionFilePath), descriptionFields, "local")

    @classmethod
    def _createAndReturnBlockwiseFileset(cls, descriptionFilePath: str, mode: str) -> BlockwiseFileset | None:
        """Factory hook: the fileset, or None when the file is not a local description."""
        try:
            return BlockwiseFileset(descriptionFilePath, mode)
        except SchemaError:
            return None

    # -- life cycle ------------------------------------------------------------------------------------

    def __init__(
        self,
        descriptionFilePath: str | os.PathLike,
        mode: str = "r",
        preparsedDescription: Any = None,
        *,
        max_open_files: int = 256,
        fsync: bool = True,
    ) -> None:
        if mode not in ("r", "a"):
            raise ArgumentError(f"mode must be 'r' or 'a', not {mode!r}")
        if descriptionFilePath is None:
            raise TypeError(
                "descriptionFilePath is required, even with preparsedDescription (it anchors the block tree)"
            )
        if isinstance(max_open_files, bool) or not isinstance(max_open_files, int) or max_open_files < 1:
            raise ArgumentError(f"max_open_files must be an integer >= 1, not {max_open_files!r}")
        if not isinstance(fsync, bool):
            raise ArgumentError(f"fsync must be True or False, not {fsync!r}")
        self._fsync = fsync
        self._descriptionFilePath = os.path.abspath(os.fspath(descriptionFilePath))
        if preparsedDescription is not None:
            self._description = _desc.parse_local(preparsedDescription)
        else:
            self._description = type(self).readDescription(self._descriptionFilePath)
        self.mode = mode
        self._init_geometry()
        self._check_cache_root()
        self._handles = HandleCache(
            max_open_files, reclaim=self._reclaim_user_handle, confine=self._layout.check_confined
        )
        files = BlockFiles(self._description, self._grid, self._layout, self._handles, fsync=fsync)
        #: The blocks on disk: the named interface through which subclasses (the remote cache) find, lock,
        #: publish, read and discard blocks (see :class:`~lazyflow_rbfs.store.blocks.BlockStore`).
        self.blocks = BlockStore(self._grid, self._layout, self._handles, files)
        self._user_handles: OrderedDict[str, h5py.File] = OrderedDict()
        self._user_lock = threading.Lock()
        self._closed = False
        _LIVE_FILESETS.add(self)

    def _after_fork_in_child(self) -> None:
        """Reset what threads of the parent may have held at the fork (called in a forked child)."""
        self._user_lock = threading.Lock()
        self._handles.after_fork_in_child(reserved=len(self._user_handles))

    def _init_geometry(self) -> None:
        d = self._description
        self._grid = BlockGrid.of(d)
        self._axes: str = self._grid.axes
        self._dtype = numpy.dtype(d.dtype)
        root = str(d.dataset_root_dir if d.dataset_root_dir is not None else ".")
        self._root_dir = os.path.normpath(os.path.join(os.path.dirname(self._descriptionFilePath), root))
        external, internal = _desc.split_block_file_name_format(d.block_file_name_format)
        self._layout = BlockLayout(self._grid, self._root_dir, external, internal)

    def _check_cache_root(self) -> None:
        """Refuse a cache root whose volume record says its blocks are not of this description's kind.

        A local fileset knows no remote, so it compares what makes block files readable (dtype, axes,
        shape, block shape, file names); :class:`~lazyflow_rbfs.cache.RESTfulBlockwiseFileset` compares
        the whole identity. Nothing is written.
        """
        identity.check_local(self._root_dir, self._description, self._descriptionFilePath)

    @property
    def description(self) -> Any:
        """The parsed local description (a namespace with attribute access)."""
        return self._description

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the view (what rois refer to)."""
        return self._grid.view_shape

    @property
    def dtype(self) -> numpy.dtype:
        return self._dtype

    @property
    def axes(self) -> str:
        return self._axes

    @property
    def block_shape(self) -> tuple[int, ...]:
        return self._grid.block_shape

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def description_path(self) -> str:
        """Absolute path of the description file this fileset was opened from."""
        return self._descriptionFilePath

    @property
    def root_directory(self) -> str:
        """Absolute directory holding the block tree."""
        return self._root_dir

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (
            f"<{type(self).__name__} {self._descriptionFilePath!r} mode={self.mode!r} shape={self.shape} "
            f"dtype={self._dtype.name} axes={self._axes!r} block_shape={self.block_shape}{state}>"
        )

    def __enter__(self) -> BlockwiseFileset:
        self._check_open()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                BlockwiseFileset.close(self)  # only our own handles: subclasses may be half torn down
        except Exception:  # interpreter shutdown or half-constructed object: nothing sensible to do
            pass

    def close(self) -> None:
        """Close every block file this fileset holds open. Calling it again does nothing."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._handles.close_all()
        with self._user_lock:
            handles, self._user_handles = list(self._user_handles.values()), OrderedDict()
        self._handles.unreserve(len(handles))
        for handle in handles:
            try:
                handle.close()
            except Exception as exc:
                logger.warning("could not close %s: %s", handle, exc)

    def reopen(self, mode: str) -> None:
        """Re-open a (possibly closed) fileset in ``mode`` (``"r"`` or ``"a"``); open handles are dropped."""
        if mode not in ("r", "a"):
            raise ArgumentError(f"mode must be 'r' or 'a', not {mode!r}")
        BlockwiseFileset.close(self)
        self.mode = mode
        self._handles.reopen()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"I/O on a closed fileset ({self._descriptionFilePath})")

    def _check_writable(self) -> None:
        self._check_open()
        if self.mode != "a":
            raise ReadOnlyError(
                f"the fileset {self._descriptionFilePath} is open in mode {self.mode!r}; "
                "writing needs mode 'a'"
            )

    # -- geometry and paths ----------------------------------------------------------------------------

    def iterBlockStarts(self, roi: Roi | None = None) -> Iterator[tuple[int, ...]]:
        """Stream the view starts of the blocks intersecting ``roi`` (default: the whole view), C order."""
        return self._grid.iter_block_starts(roi)

    def getEntireBlockRoi(self, block_start: Any) -> tuple[numpy.ndarray, numpy.ndarray]:
        """View ``(start, stop)`` of the block starting at ``block_start``, clipped to the view."""
        return self._grid.view_block_roi(self._grid.check_block_start(block_start))

    def getAllBlockRois(self) -> list[tuple[numpy.ndarray, numpy.ndarray]]:
        """The view-clipped rois of every block of the view (a list; see :meth:`iterBlockStarts`)."""
        return [self.getEntireBlockRoi(start) for start in self.iterBlockStarts()]

    def getDatasetDirectory(self, block_start: Any) -> str:
        """The directory of the block starting at view ``block_start``."""
        return self._layout.paths(block_start).directory

    def getDatasetPathComponents(self, block_start: Any) -> PathComponents:
        """The block file and its internal dataset path, for the block at view ``block_start``."""
        paths = self._layout.paths(block_start)
        return PathComponents(paths.file_path, paths.internal_path)

    # -- status ----------------------------------------------------------------------------------------

    def getBlockStatus(self, block_start: Any) -> int:
        """``BLOCK_AVAILABLE`` if the block's ``STATUS.txt`` exists, else ``BLOCK_NOT_AVAILABLE``."""
        self._check_open()
        return self.BLOCK_AVAILABLE if self.blocks.is_available(block_start) else self.BLOCK_NOT_AVAILABLE

    def setBlockStatus(self, block_start: Any, status: int) -> None:
        """Mark a block available (create ``STATUS.txt``; its block file must exist) or not (remove it)."""
        self._check_writable()
        self._set_status(self._layout.paths(block_start), status)

    def setBlockStatusesForRoi(self, roi: Roi, status: int) -> None:
        """:meth:`setBlockStatus` for every block intersecting ``roi``."""
        self._check_writable()
        for block_start in self.iterBlockStarts(roi):
            self._set_status(self._layout.paths(block_start), status)

    def _set_status(self, paths: BlockPaths, status: int) -> None:
        if status not in (self.BLOCK_AVAILABLE, self.BLOCK_NOT_AVAILABLE):
            raise ArgumentError(
                f"status must be BLOCK_AVAILABLE ({self.BLOCK_AVAILABLE}) or "
                f"BLOCK_NOT_AVAILABLE ({self.BLOCK_NOT_AVAILABLE}), not {status!r}"
            )
        try:
            with self._layout.block_dirs(paths, create=False) as (block_fd, file_fd):
                if status == self.BLOCK_NOT_AVAILABLE:
                    atomic.remove(STATUS_FILE_NAME, dir_fd=block_fd, shown=paths.status_path)
                    return
                st = os.stat(os.path.basename(paths.file_path), dir_fd=file_fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise atomic.link_error(paths.file_path)
                atomic.create_empty(
                    STATUS_FILE_NAME, dir_fd=block_fd, fsync=self._fsync, shown=paths.status_path
                )
        except FileNotFoundError:  # no block directory or no block file
            if status == self.BLOCK_AVAILABLE:
                raise FileNotFoundError(
                    f"cannot mark the block in {paths.directory} available: its block file "
                    f"{paths.file_path} does not exist (write the block first)"
                ) from None

    def isBlockLocked(self, block_start: Any) -> bool:
        """True iff some thread or process holds the block's lock right now."""
        return self.blocks.locked_elsewhere(block_start)

    # -- reading ---------------------------------------------------------------------------------------

    def readData(self, roi: Roi, out_array: Any = None) -> Any:
        """Read ``roi`` (view coordinates) into ``out_array`` (or a new array) and return it.

        Raises
        ------
        OutOfBoundsError
            The roi is not inside the view.
        BlockNotReadyError
            A block of the roi is not available; ``.block_start`` names it.
        ValueError
            ``out_array`` has the wrong shape or dtype.
        """
        self._check_open()
        start, stop = self._grid.check_roi(roi)
        out_array = self.blocks.output_array(start, stop, out_array)
        self.blocks.read_into(start, stop, out_array)
        return out_array

    def getOpenHdf5FileForBlock(self, block_start: Any) -> h5py.File:
        """An open ``h5py.File`` of the block's file, owned by this fileset until :meth:`close`.

        Read-only in mode ``"r"``. In mode ``"a"`` the file is opened (created if missing) for writing
        as upstream did; such writes bypass the atomic write path, so the caller must hold the block's
        lock and set the block status itself.

        These handles count against ``max_open_files`` together with the ones reads keep open: when the
        budget is full, the least recently requested handle of this kind is closed (use it before asking
        for many more).
        """
        self._check_open()
        paths = self._layout.paths(block_start)
        with self._user_lock:
            handle = self._user_handles.get(paths.file_path)
            if handle is not None and handle.id.valid and handle.mode == ("r" if self.mode == "r" else "r+"):
                self._user_handles.move_to_end(paths.file_path)
                return handle
            self._drop_user_handle(paths.file_path)
            # These handles share the max_open_files budget with the read cache: make room, closing the
            # least recently requested handle of this kind if the read cache cannot give any back.
            while not self._handles.reserve(1):
                if not self._user_handles:
                    raise OSError(
                        f"cannot open {paths.file_path}: all {self._handles.max_open} block files this "
                        "fileset may hold open are in use (raise max_open_files)"
                    )
                self._drop_user_handle(next(iter(self._user_handles)))
            try:
                if self.mode == "a":
                    with self._layout.block_dirs(paths, create=True) as (_, file_fd):
                        if is_link(os.path.basename(paths.file_path), file_fd):
                            raise atomic.link_error(paths.file_path)
                    self._handles.invalidate(paths.file_path)  # HDF5 refuses a read-only and a writable open
                    handle = h5py.File(paths.file_path, "a")
                else:
                    self._layout.check_confined(paths.file_path)
                    handle = h5py.File(paths.file_path, "r")
            except BaseException:
                self._handles.unreserve(1)
                raise
            self._user_handles[paths.file_path] = handle
            return handle

    def _reclaim_user_handle(self) -> bool:
        """Close the least recently requested handle given out, for a reader that needs the room."""
        with self._user_lock:
            if not self._user_handles:
                return False
            self._drop_user_handle(next(iter(self._user_handles)))
            return True

    def _drop_user_handle(self, path: str) -> None:
        """Close a handle given out by :meth:`getOpenHdf5FileForBlock` (caller holds ``_user_lock``)."""
        handle = self._user_handles.pop(path, None)
        if handle is None:
            return
        if handle.id.valid:
            handle.close()
        self._handles.unreserve(1)

    # -- writing ---------------------------------------------------------------------------------------

    def writeData(self, roi: Roi, data: Any) -> None:
        """Write ``data`` into ``roi`` (view coordinates), atomically per block.

        Each touched block is rewritten as a whole under its lock (read, modify, write a temp file,
        ``os.replace``). As upstream, a written block is left *not available*; mark it with
        :meth:`setBlockStatus` once complete.
        """
        self._check_writable()
        start, stop = self._grid.check_roi(roi)
        data = numpy.asarray(data)
        shape = tuple(int(n) for n in stop - start)
        if data.shape != shape:
            raise ArgumentError(f"data has shape {data.shape}; the roi {roi} needs {shape}")
        layout, files = self._layout, self.blocks.files
        for proj in self._grid.projections(start, stop):
            block_start = ints(proj.block_start)
            paths = layout.paths(block_start)
            with layout.lock(block_start), layout.block_dirs(paths) as (block_fd, file_fd):
                atomic.remove(STATUS_FILE_NAME, dir_fd=block_fd, shown=paths.status_path)
                block = files.load_for_update(paths, self._grid.disk_block_shape(block_start))
                block[tuple(proj.block_slices)] = data[tuple(proj.out_slices)]
                files.write(paths, block, file_fd)

    # -- maintenance -----------------------------------------------------------------------------------

    def statusSummary(self, roi: Roi | None = None) -> StatusSummary:
        """Count available, partial and missing blocks of ``roi`` (default: the view), streaming.

        Only existing block directories are visited, so large sparse caches are summarised quickly.
        """
        return maintenance.status_summary(self.blocks, roi)

    def verify(self, repair: bool = False, roi: Roi | None = None, *, deep: bool = False) -> VerifyReport:
        """Check every available block of ``roi`` (default: the view) and look for stray temp files.

        A block is bad when ``STATUS.txt`` exists but its block file is missing, unreadable, lacks the
        dataset, or has another shape than the disk-clipped block bounds or another dtype, or leads out of
        the cache root through a symbolic link. ``deep`` also reads every voxel. Symbolic links planted in
        the block tree (a block directory, ``STATUS.txt``, a block file, a lock file) are listed in
        ``links``. With ``repair``, those links are removed (never their targets), bad blocks lose their
        ``STATUS.txt`` and block file (so they are downloaded again) and stray ``*.partial`` files are
        removed; blocks whose lock another process holds are left alone and listed in ``skipped_locked``.
        """
        self._check_open()
        return maintenance.verify(self.blocks, repair, roi, deep=deep)

    def purgeAllLocks(self) -> int:
        """Remove stale lock and temp files from the view's block directories; return how many.

        Removes upstream lazyflow's ``<blockfile>.lock`` files (left by killed upstream processes) and
        this package's ``*.partial`` temp files whose block lock nobody holds. Locks held by a live
        process are never broken. Call it when no upstream lazyflow process is using the cache.
        """
        self._check_open()
        return maintenance.purge_locks(self.blocks)

    # -- export ----------------------------------------------------------------------------------------

    def exportRoiToHdf5(
        self, roi: Roi, exportDirectory: str | os.PathLike, use_view_coordinates: bool = True
    ) -> str:
        """Export ``roi`` into one HDF5 file in ``exportDirectory``; return its full dataset path.

        The file is named with ``block_file_name_format`` and the roi in disk coordinates, written to a
        temp file first and moved into place, so a failed export leaves no file behind. The roi is read
        one row of blocks at a time (bounded memory); a full disk stops it at once with
        :class:`CacheWriteError`.
        """
        self._check_open()
        return export.export_roi_to_hdf5(self, roi, os.fspath(exportDirectory), use_view_coordinates)

    def exportSubset(
        self, roi: Roi, exportDirectory: str | os.PathLike, use_view_coordinates: bool = True
    ) -> str:
        """Copy the available blocks of a block-aligned ``roi`` into a new, self-contained fileset.

        The roi must start on a block boundary and stop on a block boundary or the edge of the view or
        of the dataset. Only block files and ``STATUS.txt`` are copied (never lock or temp files); the
        new description (a plain local description, ``view_shape`` ending at the roi's stop, no
        ``hash_id``) is written last. An existing export in the same directory is extended. On failure
        everything this call created is removed. Returns the new description's path.
        """
        self._check_open()
        view_start, view_stop = export.subset_view_roi(self._grid, roi, use_view_coordinates)
        return export.export_subset(
            self, view_start, view_stop, os.fspath(exportDirectory), self._descriptionFilePath
        )
