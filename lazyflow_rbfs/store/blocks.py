"""BlockStore: the blocks of one fileset on disk, behind one small interface.

A :class:`~lazyflow_rbfs.store.BlockwiseFileset` owns one (``fileset.blocks``) and so does the remote
cache that extends it: it is how the cache finds, locks, publishes, reads and discards blocks, without
reaching into the fileset. Block starts are view coordinates. Reads never lock (published blocks are
immutable); ``publish`` and ``discard_broken`` work under the block's OS lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from typing import Any

import h5py
import numpy

from lazyflow_rbfs import atomic, locks
from lazyflow_rbfs.errors import ArgumentError, BlockNotReadyError
from lazyflow_rbfs.store.grid import BlockGrid, ints
from lazyflow_rbfs.store.handles import HandleCache, file_key
from lazyflow_rbfs.store.layout import STATUS_FILE_NAME, BlockLayout, BlockPaths
from lazyflow_rbfs.store.ledger import Footprint, Ledger
from lazyflow_rbfs.store.publish import BlockFiles
from lazyflow_rbfs.store.rawread import RawBlocks
from lazyflow_rbfs.store.usage import UseTracker

__all__ = ["BlockStore"]


def _modified_in_place(block_start: tuple[int, ...], path: str) -> BlockNotReadyError:
    return BlockNotReadyError(
        f"block at {block_start} is marked available but its file {path} was modified in place while it "
        "was read; run `rbfs verify --repair`",
        block_start=block_start,
    )


logger = logging.getLogger(__name__)


class BlockStore:
    """Find, lock, publish, read and discard the blocks of one grid under one root.

    Parameters
    ----------
    grid, layout
        The block grid and where its blocks live.
    handles
        The bounded cache of open block files reads go through.
    files
        Builds and atomically writes block files.
    """

    def __init__(self, grid: BlockGrid, layout: BlockLayout, handles: HandleCache, files: BlockFiles) -> None:
        self.grid = grid
        self.layout = layout
        self.handles = handles
        self.files = files
        #: The root's footprint ledger, kept up to date by publish and removals when set (caches).
        self.ledger: Ledger | None = None
        #: Records reads in ``STATUS.txt`` mtimes when set (caches; see :mod:`~lazyflow_rbfs.store.usage`).
        self.usage: UseTracker | None = None
        #: Reads the blocks this package wrote contiguous with pread, no HDF5 open (see rawread).
        self.raw = RawBlocks(files.raw_layout, layout.check_confined)

    @property
    def dtype(self) -> numpy.dtype:
        return self.files.dtype

    # -- where a block is --

    def paths(self, block_start: Any) -> BlockPaths:
        """Absolute paths of the block at view ``block_start`` (checked to be a block start)."""
        return self.layout.paths(block_start)

    def disk_roi(self, block_start: Any) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Disk ``(start, stop)`` of the block at view ``block_start``, clipped to the on-disk shape."""
        disk_start, disk_stop = self.grid.disk_bounds(self.grid.check_block_start(block_start))
        return numpy.array(disk_start, dtype=numpy.int64), numpy.array(disk_stop, dtype=numpy.int64)

    def is_available(self, block_start: Any) -> bool:
        """Whether the block's ``STATUS.txt`` exists."""
        return os.path.exists(self.layout.status_path(block_start))

    # -- locks --

    def lock(self, block_start: Any) -> locks.BlockLock:
        """The block's OS lock (not acquired); its directory is created, refusing symbolic links."""
        return self.layout.lock(block_start)

    def locked_elsewhere(self, block_start: Any) -> bool:
        """True iff some thread or process holds the block's lock right now."""
        return self.layout.locked_elsewhere(self.paths(block_start))

    # -- writing --

    def publish(self, block_start: Any, data: Any) -> Footprint | None:
        """Atomically store a complete block and mark it available. The caller holds the block's lock.

        ``data`` must have exactly the block's disk-clipped shape. Returns the ledger's record after
        the publish (``None`` without a ledger).
        """
        paths = self.paths(block_start)
        start = ints(block_start)
        disk_shape = self.grid.disk_block_shape(start)
        data = numpy.asarray(data)
        if data.shape != disk_shape:
            raise ArgumentError(
                f"block at {tuple(block_start)} must have the disk-clipped block shape {disk_shape}, "
                f"got {data.shape}"
            )
        with self._counted(paths) as counted, self.layout.block_dirs(paths) as (block_fd, file_fd):
            counted.append(_file_size(paths, file_fd))
            self.files.write(paths, data, file_fd)
            counted.append(_file_size(paths, file_fd))
            atomic.create_empty(
                STATUS_FILE_NAME, dir_fd=block_fd, fsync=self.files.fsync, shown=paths.status_path
            )
        if self.usage is not None:
            self.usage.published(start)
        logger.debug("published block %s -> %s", self.grid.disk_bounds(start)[0], paths.file_path)
        return counted[-1] if self.ledger is not None else None

    @contextlib.contextmanager
    def _counted(self, paths: BlockPaths) -> Iterator[list]:
        """Count a change of the block file in the ledger: the body appends the file's size before and
        after; the ledger's record after the change is appended last."""
        counted: list = []
        if self.ledger is None:
            yield counted
            return
        with self.ledger.change() as change:
            try:
                yield counted
            finally:
                if len(counted) >= 2:
                    before, after = counted[0], counted[-1]
                    change.add(after - before, int(after > 0) - int(before > 0))
        counted.append(change.after)

    # -- reading --

    def output_array(self, start: numpy.ndarray, stop: numpy.ndarray, out_array: Any) -> Any:
        """``out_array`` checked against the roi (shape, dtype), or a new array for it."""
        shape = tuple(int(n) for n in stop - start)
        dtype = self.dtype
        if out_array is None:
            return numpy.empty(shape, dtype=dtype)
        if tuple(out_array.shape) != shape:
            raise ArgumentError(f"out_array has shape {tuple(out_array.shape)}; the roi needs {shape}")
        if numpy.dtype(out_array.dtype) != dtype:
            raise ArgumentError(f"out_array has dtype {out_array.dtype}; the fileset's dtype is {dtype}")
        return out_array

    def read_into(
        self,
        start: numpy.ndarray,
        stop: numpy.ndarray,
        out: Any,
        check_status: bool = True,
        skip: set[tuple[int, ...]] | None = None,
    ) -> None:
        """Copy the validated view roi ``[start, stop)`` from the available blocks into ``out``.

        ``check_status=False`` skips the ``STATUS.txt`` test, for callers that just ensured the blocks;
        blocks in ``skip`` are already in ``out`` (copied from memory as they were downloaded).

        Raises
        ------
        BlockNotReadyError
            A block is not available, or its file is missing or unreadable; ``.block_start`` names it.
        """
        direct = isinstance(out, numpy.ndarray) and out.flags.c_contiguous and out.dtype == self.dtype
        raw = self.raw if isinstance(out, numpy.ndarray) and out.dtype == self.dtype else None
        handles = self.handles
        usage = self.usage
        used: list[tuple[int, ...]] | None = [] if usage is not None else None
        try:
            self._read_blocks(start, stop, out, check_status, skip, direct, raw, handles, used)
        finally:
            if usage is not None and used:
                usage.used_all(used)  # one pass over the tree for every block read

    def _read_blocks(
        self,
        start: numpy.ndarray,
        stop: numpy.ndarray,
        out: Any,
        check_status: bool,
        skip: set[tuple[int, ...]] | None,
        direct: bool,
        raw: RawBlocks | None,
        handles: HandleCache,
        used: list[tuple[int, ...]] | None,
    ) -> None:
        for proj in self.grid.projections(start, stop):
            block_start = proj.block_start
            if skip and block_start in skip:
                continue
            paths = self.layout.paths(block_start)
            if check_status and not os.path.exists(paths.status_path):
                raise BlockNotReadyError(
                    f"block at {block_start} (view coordinates) is not available locally: "
                    f"{paths.status_path} does not exist",
                    block_start=block_start,
                )
            changed = None
            if raw is not None:
                try:
                    changed = raw.read(
                        paths.file_path,
                        paths.internal_path,
                        self.grid.disk_block_shape(block_start),
                        proj.block_slices,
                        out,
                        proj.out_slices,
                    )
                except OSError:
                    changed = None  # read through HDF5 below: the same errors as always
            if changed is not None:
                if changed:
                    handles.invalidate(paths.file_path)
                    raise _modified_in_place(block_start, paths.file_path)
                if used is not None:
                    used.append(block_start)
                continue
            try:
                entry = handles.acquire(paths.file_path)
            except OSError as exc:  # missing, or not an HDF5 file (h5py raises OSError for both)
                what = "missing" if isinstance(exc, FileNotFoundError) else f"unreadable ({exc})"
                raise BlockNotReadyError(
                    f"block at {block_start} is marked available but its file {paths.file_path} is {what}; "
                    "run `rbfs verify --repair`",
                    block_start=block_start,
                ) from exc
            try:
                dataset = entry.dataset(paths.internal_path)
                if direct:
                    dataset.read_direct(out, source_sel=proj.block_slices, dest_sel=proj.out_slices)
                else:
                    out[proj.out_slices] = dataset[proj.block_slices]
                # Published block files are never written again (a publish is a rename onto a new inode),
                # so an open file whose size or mtime changed was overwritten in place (by hand, by another
                # program): HDF5 reads past a truncated end as zeros, so what was just read cannot be
                # trusted. One fstat per block read.
                changed = file_key(os.fstat(entry.fd)) != entry.key
            finally:
                handles.release(entry)
            if changed:
                handles.invalidate(paths.file_path)
                raise _modified_in_place(block_start, paths.file_path)
            if used is not None:
                used.append(block_start)

    # -- checking and discarding --

    def check_block_file(self, paths: BlockPaths, block_start: tuple[int, ...], deep: bool) -> str | None:
        """Why the block file of an available block is bad, or None if it is good."""
        expected = self.grid.disk_block_shape(block_start)
        if not os.path.exists(paths.file_path):
            return "block file missing"
        escape = self.layout.escape(paths.file_path)
        if escape is not None:
            return f"block file not trusted: {escape}"
        try:
            with h5py.File(paths.file_path, "r") as f:
                if f.id.get_filesize() != os.fstat(f.id.get_vfd_handle()).st_size:
                    # Another handle of this process holds an older state of the file (see
                    # HandleCache.acquire): it was overwritten in place.
                    return "modified in place while open"
                dataset = f.get(paths.internal_path)
                if not isinstance(dataset, h5py.Dataset):
                    return f"no dataset {paths.internal_path!r} in the block file"
                if dataset.shape != expected:
                    return f"dataset shape {dataset.shape}, expected {expected}"
                if dataset.dtype != self.dtype:
                    return f"dataset dtype {dataset.dtype}, expected {self.dtype}"
                if deep:
                    dataset[()]
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            return f"unreadable: {exc}"
        return None

    def remove_block_files(
        self, paths: BlockPaths, status: bool, block_file: bool, near_file: Sequence[str] = ()
    ) -> list[str]:
        """Remove the block's ``STATUS.txt``, block file and the named entries next to the block file,
        through directory descriptors (a symbolic link on the way is refused); return what was removed."""
        removed = []
        try:
            with (
                self._counted(paths) as counted,
                self.layout.block_dirs(paths, create=False) as (
                    block_fd,
                    file_fd,
                ),
            ):
                if status and atomic.remove(STATUS_FILE_NAME, dir_fd=block_fd, shown=paths.status_path):
                    removed.append(paths.status_path)
                file_dir = os.path.dirname(paths.file_path)
                if block_file:
                    counted.extend((_file_size(paths, file_fd), 0))
                names = ([os.path.basename(paths.file_path)] if block_file else []) + list(near_file)
                for name in names:
                    path = os.path.join(file_dir, name)
                    if atomic.remove(name, dir_fd=file_fd, shown=path):
                        removed.append(path)
        except FileNotFoundError:
            pass
        self.handles.invalidate(paths.file_path)
        return removed

    def discard_broken(
        self,
        block_start: tuple[int, ...],
        *,
        lock_timeout: float | None = None,
        cancel: locks.Cancel | None = None,
    ) -> tuple[str, tuple | None]:
        """Look again, under the block's lock, at a block a read could not open; discard it if still bad.

        A reader that finds an available block's file missing or unreadable may have raced someone who is
        repairing it, re-publishing it or evicting it: what it saw is not final. Holding the block's lock
        (so nobody is writing it), this tells the reader what to do next:

        * ``("discarded", None)``: ``STATUS.txt`` was there and the file is still bad; this call removed
          both, so the block is missing and must be fetched again.
        * ``("missing", None)``: no ``STATUS.txt``: someone else discarded or evicted it; fetch it again.
        * ``("intact", identity)``: ``STATUS.txt`` and a good file (someone repaired or re-published it
          since the read failed); ``identity`` is the file's ``(st_dev, st_ino, st_mtime_ns, st_size)``,
          so a caller can tell a new file from one that already failed.

        ``lock_timeout`` and ``cancel`` bound the wait for the lock as in :meth:`locks.BlockLock.acquire`.
        """
        paths = self.paths(block_start)
        lock = self.lock(block_start)
        lock.acquire(timeout=lock_timeout, cancel=cancel)
        try:
            if not os.path.exists(paths.status_path):
                return "missing", None
            problem = self.check_block_file(paths, ints(block_start), deep=False)
            if problem is None:
                try:
                    return "intact", file_key(os.stat(paths.file_path))
                except FileNotFoundError:  # only a writer that ignores the lock could do this
                    problem = "block file missing"
            self.remove_block_files(paths, status=True, block_file=True)
        finally:
            lock.release()
        logger.warning(
            "block %s was marked available but its file is bad (%s); it will be fetched again",
            list(block_start),
            problem,
        )
        return "discarded", None


def _file_size(paths: BlockPaths, file_fd: int) -> int:
    """Size of the block file (in the directory ``file_fd``) if it is a regular file, else 0."""
    try:
        st = os.stat(os.path.basename(paths.file_path), dir_fd=file_fd, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0
