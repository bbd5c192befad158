"""BlockwiseFileset: a local dataset stored as a directory tree of HDF5 block files.

The layout is interchangeable with lazyflow's caches::

    <root>/<axis0>_<start0:08d>/<axis1>_<start1:08d>/.../<block file>   (disk coordinates)
    <root>/.../STATUS.txt                                                (empty: block complete and valid)

Every write goes to a ``*.partial`` temp file that is ``os.replace``-d onto the block file, so a reader
never sees half a block; ``STATUS.txt`` is created only after the block file is in place. Block files are
built in memory and written with checked writes (:mod:`lazyflow_rbfs.h5image`, :mod:`lazyflow_rbfs.atomic`),
so a full disk is an error, never a truncated block. Writes open the block directories one component at a
time from the root and never follow a symbolic link; reads never take a block file whose real path leaves
the root. Reads never lock: published blocks are immutable. Open HDF5 handles are kept in a bounded LRU
cache.

This module never touches the network.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import functools
import logging
import operator
import os
import stat
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy

from lazyflow_rbfs import atomic, geometry, h5image, identity, locks
from lazyflow_rbfs import description as _desc
from lazyflow_rbfs.errors import (
    ArgumentError,
    BlockNotReadyError,
    CacheWriteError,
    ClosedError,
    DescriptionError,
    OutOfBoundsError,
    ReadOnlyError,
    SchemaError,
)

__all__ = [
    "BlockwiseFileset",
    "BlockPaths",
    "PathComponents",
    "StatusSummary",
    "BadBlock",
    "VerifyReport",
]

logger = logging.getLogger(__name__)

STATUS_FILE_NAME = "STATUS.txt"
LOCK_FILE_NAME = ".rbfs.lock"
#: Block paths remembered per fileset (about 1 KiB each).
_PATHS_CACHE_SIZE = 16384
UPSTREAM_LOCK_SUFFIX = ".lock"
PARTIAL_SUFFIX = atomic.PARTIAL_SUFFIX

Roi = Sequence[Sequence[int]]


# ----------------------------------------------------------------------------------------------------------
# Small value types
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockPaths:
    """Absolute paths belonging to one block.

    ``directory`` is the block directory, ``file_path`` the HDF5 block file (external path),
    ``internal_path`` the dataset inside it (leading ``/``), ``status_path`` its ``STATUS.txt`` and
    ``lock_path`` the per-block OS lock file.
    """

    directory: str
    file_path: str
    internal_path: str
    status_path: str
    lock_path: str


class PathComponents:
    """An HDF5 dataset path split into the file part and the internal part.

    ``externalPath`` is the file (``/a/b/block.h5``), ``internalPath`` the dataset inside it
    (``/volume/data``), ``totalPath()`` both joined (``/a/b/block.h5/volume/data``).
    """

    __slots__ = ("externalPath", "internalPath")

    def __init__(self, externalPath: str, internalPath: str) -> None:
        self.externalPath = externalPath
        self.internalPath = "/" + internalPath.lstrip("/")

    @property
    def externalDirectory(self) -> str:
        return os.path.dirname(self.externalPath)

    @property
    def filename(self) -> str:
        return os.path.basename(self.externalPath)

    @property
    def extension(self) -> str:
        return os.path.splitext(self.externalPath)[1]

    @property
    def filenameBase(self) -> str:
        return os.path.splitext(self.filename)[0]

    @property
    def internalDatasetName(self) -> str:
        return self.internalPath.rsplit("/", 1)[-1]

    @property
    def internalDirectory(self) -> str:
        return self.internalPath.rsplit("/", 1)[0] or "/"

    def totalPath(self) -> str:
        """The file path followed by the internal dataset path."""
        return self.externalPath + self.internalPath

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PathComponents):
            return NotImplemented
        return (self.externalPath, self.internalPath) == (other.externalPath, other.internalPath)

    def __hash__(self) -> int:
        return hash((self.externalPath, self.internalPath))

    def __repr__(self) -> str:
        return f"PathComponents({self.externalPath!r}, {self.internalPath!r})"


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


# ----------------------------------------------------------------------------------------------------------
# Bounded cache of open HDF5 handles
# ----------------------------------------------------------------------------------------------------------


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


def _file_key(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class _HandleCache:
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
    ) -> None:
        self._max = max_open
        self._reclaim = reclaim  # closes one file held outside the cache; called without our lock
        self._confine = confine  # raises OSError for a path that leads out of the cache root
        self._entries: OrderedDict[str, _Handle] = OrderedDict()
        self._cond = threading.Condition()
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

    def _after_fork_in_child(self, reserved: int) -> None:
        # Only the forking thread lives on in a child: the condition may have been copied held, and the
        # pins of the other threads are never released. h5py takes its own lock around fork, so the
        # handles themselves are consistent; keep the cached ones, unpinned, and forget the retired ones.
        self._cond = threading.Condition()
        for entry in self._entries.values():
            entry.pins = 0
        self._open = len(self._entries)
        self._reserved = reserved

    def acquire(self, path: str) -> _Handle:
        key = _file_key(os.stat(path))
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


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _vigra() -> Any:
    """The vigra module if importable (imported on first use only), else None."""
    try:
        import vigra  # noqa: PLC0415
    except ImportError:
        return None
    return vigra


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(operator.index(v) for v in values)


def _makedirs_tracked(path: str, created: list[str]) -> None:
    """``os.makedirs(path, exist_ok=True)``, appending every directory it created to ``created``."""
    missing = []
    head = os.path.abspath(path)
    while not os.path.isdir(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            continue
        except OSError as exc:
            raise CacheWriteError.from_os_error(exc, directory, "create the directory") from exc
        created.append(directory)


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _undo(files: list[str], dirs: list[str]) -> None:
    """Remove what a failed operation created: files first, then the (now empty) directories."""
    for path in reversed(files):
        try:
            os.remove(path)
        except OSError:
            pass
    for directory in reversed(dirs):
        try:
            os.rmdir(directory)
        except OSError:
            pass


# ----------------------------------------------------------------------------------------------------------
# BlockwiseFileset
# ----------------------------------------------------------------------------------------------------------

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
        self._handles = _HandleCache(
            max_open_files, reclaim=self._reclaim_user_handle, confine=self._check_confined
        )
        self._paths_cache: dict[tuple[int, ...], BlockPaths] = {}
        self._skeletons: dict[tuple[str, tuple[int, ...]], tuple[list[tuple[int, bytes]], int]] = {}
        self._user_handles: OrderedDict[str, h5py.File] = OrderedDict()
        self._user_lock = threading.Lock()
        self._closed = False
        _LIVE_FILESETS.add(self)

    def _after_fork_in_child(self) -> None:
        """Reset what threads of the parent may have held at the fork (called in a forked child)."""
        self._user_lock = threading.Lock()
        self._handles._after_fork_in_child(reserved=len(self._user_handles))

    def _init_geometry(self) -> None:
        d = self._description
        self._axes: str = str(d.axes)
        self._ndim = len(self._axes)
        self._disk_shape = _ints(d.shape)
        self._block_shape_t = _ints(d.block_shape)
        self._view_origin = _ints(d.view_origin)
        self._view_shape = _ints(d.view_shape)
        self._dtype = numpy.dtype(d.dtype)
        root = str(d.dataset_root_dir if d.dataset_root_dir is not None else ".")
        self._root_dir = os.path.normpath(os.path.join(os.path.dirname(self._descriptionFilePath), root))
        self._real_root: str | None = None  # realpath of the root, resolved when first needed
        external, internal = _desc.split_block_file_name_format(d.block_file_name_format)
        self._external_format: str = external
        self._internal_format: str = "/" + internal.lstrip("/")
        chunks = d.chunks
        self._chunks = None if chunks is None else _ints(chunks)

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
        return self._view_shape

    @property
    def dtype(self) -> numpy.dtype:
        return self._dtype

    @property
    def axes(self) -> str:
        return self._axes

    @property
    def block_shape(self) -> tuple[int, ...]:
        return self._block_shape_t

    @property
    def closed(self) -> bool:
        return self._closed

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

    def _check_roi(self, roi: Roi) -> tuple[numpy.ndarray, numpy.ndarray]:
        return geometry.check_roi(roi, numpy.asarray(self._view_shape, dtype=numpy.int64))

    def _check_block_start(self, block_start: Any) -> tuple[int, ...]:
        try:
            start = _ints(block_start)
        except TypeError as exc:
            raise OutOfBoundsError(
                f"block start must be a sequence of integers, got {block_start!r}"
            ) from exc
        if len(start) != self._ndim:
            raise OutOfBoundsError(
                f"block start {start} has {len(start)} coordinates; "
                f"expected {self._ndim} (axes {self._axes!r})"
            )
        for s, b, v in zip(start, self._block_shape_t, self._view_shape):
            if s < 0 or s >= v or s % b:
                raise OutOfBoundsError(
                    f"{start} is not the start of a block of the view: expected multiples of "
                    f"{self.block_shape} inside the view shape {self.shape}"
                )
        return start

    def _disk_bounds(self, start: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        disk_start = tuple(s + o for s, o in zip(start, self._view_origin))
        disk_stop = tuple(min(d + b, n) for d, b, n in zip(disk_start, self._block_shape_t, self._disk_shape))
        return disk_start, disk_stop

    def _disk_block_roi(self, block_start: Any) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Disk ``(start, stop)`` of the block at view ``block_start``, clipped to the on-disk shape."""
        disk_start, disk_stop = self._disk_bounds(self._check_block_start(block_start))
        return numpy.array(disk_start, dtype=numpy.int64), numpy.array(disk_stop, dtype=numpy.int64)

    def _paths(self, block_start: Any) -> BlockPaths:
        """Absolute paths of the block at view ``block_start`` (remembered for recently used blocks)."""
        cache = self._paths_cache
        if type(block_start) is tuple:
            hit = cache.get(block_start)
            if hit is not None:
                return hit
        start = self._check_block_start(block_start)
        disk_start, _ = self._disk_bounds(start)
        directory = os.path.join(self._root_dir, *geometry.block_dir_names(self._axes, disk_start))
        paths = self._leaf_paths(start, directory)
        if len(cache) >= _PATHS_CACHE_SIZE:
            cache.clear()  # cheap bound; reads revisit few blocks at a time
        cache[start] = paths
        return paths

    def _status_path(self, block_start: Any) -> str:
        """Path of the block's ``STATUS.txt``, without building the block file name (hot in scans)."""
        hit = self._paths_cache.get(block_start) if type(block_start) is tuple else None
        if hit is not None:
            return hit.status_path
        start = self._check_block_start(block_start)
        names = geometry.block_dir_names(self._axes, (s + o for s, o in zip(start, self._view_origin)))
        return os.path.join(self._root_dir, *names, STATUS_FILE_NAME)

    def _leaf_paths(self, start: tuple[int, ...], directory: str) -> BlockPaths:
        """:meth:`_paths` for a validated view ``start`` whose block ``directory`` is known (fast path)."""
        disk_start, disk_stop = self._disk_bounds(start)
        roi_string = geometry.roi_string(disk_start, disk_stop)
        external = self._external_format.format(roiString=roi_string)
        sep = os.sep
        return BlockPaths(
            directory=directory,
            file_path=directory + sep + external,
            internal_path=self._internal_format.format(roiString=roi_string),
            status_path=directory + sep + STATUS_FILE_NAME,
            lock_path=directory + sep + LOCK_FILE_NAME,
        )

    def _block_lock(self, block_start: Any) -> locks.BlockLock:
        """The OS lock of a block; its directory is created first, refusing symbolic links on the way."""
        paths = self._paths(block_start)
        with self._block_dirs(paths, create=True):
            pass
        return locks.BlockLock(paths.lock_path)

    # -- the block tree on disk: no symbolic links written through or followed out of the root ---------

    def _escape(self, path: str) -> str | None:
        """Why reading ``path`` would leave the cache root through a symbolic link, or None."""
        # Fast path (a few lstat calls): no component below the root is a link. The root itself may be
        # one: where the cache lives is the user's choice.
        prefix = self._root_dir + os.sep
        if path.startswith(prefix):
            current = self._root_dir
            for name in path[len(prefix) :].split(os.sep):
                current = current + os.sep + name
                try:
                    if stat.S_ISLNK(os.lstat(current).st_mode):
                        break
                except OSError:
                    return None  # missing: opening it fails on its own
            else:
                return None
        real = os.path.realpath(path)
        for attempt in range(2):
            if self._real_root is None or attempt:
                self._real_root = os.path.realpath(self._root_dir)  # the root itself may be a link
            if real.startswith(os.path.join(self._real_root, "")):
                return None
        return f"it leads out of the cache root {self._root_dir} through a symbolic link (to {real})"

    def _check_confined(self, path: str) -> None:
        """Raise ``OSError`` (``ELOOP``) if reading ``path`` would leave the cache root."""
        reason = self._escape(path)
        if reason is not None:
            raise OSError(errno.ELOOP, f"{path} is not read: {reason}", path)

    def _dir_parts(self, paths: BlockPaths) -> tuple[list[str], list[str]]:
        """Directory names from the root to the block directory, and from there to the block file's."""
        block_parts = os.path.relpath(paths.directory, self._root_dir).split(os.sep)
        file_parts = os.path.relpath(os.path.dirname(paths.file_path), paths.directory).split(os.sep)
        return block_parts, [] if file_parts == ["."] else file_parts

    @contextlib.contextmanager
    def _block_dirs(self, paths: BlockPaths, create: bool = True) -> Iterator[tuple[int, int]]:
        """Descriptors of the block directory and of the block file's directory (often the same one),
        opened from the root without following symbolic links (see :func:`atomic.open_dir`)."""
        block_parts, file_parts = self._dir_parts(paths)
        block_fd = atomic.open_dir(self._root_dir, block_parts, create=create)
        try:
            if not file_parts:
                yield block_fd, block_fd
                return
            file_fd = atomic.open_dir(self._root_dir, block_parts + file_parts, create=create)
            try:
                yield block_fd, file_fd
            finally:
                os.close(file_fd)
        finally:
            os.close(block_fd)

    def iterBlockStarts(self, roi: Roi | None = None) -> Iterator[tuple[int, ...]]:
        """Stream the view starts of the blocks intersecting ``roi`` (default: the whole view), C order."""
        if roi is None:
            start = numpy.zeros(self._ndim, dtype=numpy.int64)
            stop = numpy.asarray(self._view_shape, dtype=numpy.int64)
        else:
            start, stop = self._check_roi(roi)
        block_shape = numpy.asarray(self._block_shape_t, dtype=numpy.int64)
        for block_start in geometry.iter_block_starts(start, stop, block_shape):
            yield _ints(block_start)

    def getEntireBlockRoi(self, block_start: Any) -> tuple[numpy.ndarray, numpy.ndarray]:
        """View ``(start, stop)`` of the block starting at ``block_start``, clipped to the view."""
        start = self._check_block_start(block_start)
        stop = tuple(min(s + b, v) for s, b, v in zip(start, self._block_shape_t, self._view_shape))
        return numpy.array(start, dtype=numpy.int64), numpy.array(stop, dtype=numpy.int64)

    def getAllBlockRois(self) -> list[tuple[numpy.ndarray, numpy.ndarray]]:
        """The view-clipped rois of every block of the view (a list; see :meth:`iterBlockStarts`)."""
        return [self.getEntireBlockRoi(start) for start in self.iterBlockStarts()]

    def getDatasetDirectory(self, block_start: Any) -> str:
        """The directory of the block starting at view ``block_start``."""
        return self._paths(block_start).directory

    def getDatasetPathComponents(self, block_start: Any) -> PathComponents:
        """The block file and its internal dataset path, for the block at view ``block_start``."""
        paths = self._paths(block_start)
        return PathComponents(paths.file_path, paths.internal_path)

    # -- status ----------------------------------------------------------------------------------------

    def getBlockStatus(self, block_start: Any) -> int:
        """``BLOCK_AVAILABLE`` if the block's ``STATUS.txt`` exists, else ``BLOCK_NOT_AVAILABLE``."""
        self._check_open()
        exists = os.path.exists(self._status_path(block_start))
        return self.BLOCK_AVAILABLE if exists else self.BLOCK_NOT_AVAILABLE

    def setBlockStatus(self, block_start: Any, status: int) -> None:
        """Mark a block available (create ``STATUS.txt``; its block file must exist) or not (remove it)."""
        self._check_writable()
        self._set_status(self._paths(block_start), status)

    def setBlockStatusesForRoi(self, roi: Roi, status: int) -> None:
        """:meth:`setBlockStatus` for every block intersecting ``roi``."""
        self._check_writable()
        for block_start in self.iterBlockStarts(roi):
            self._set_status(self._paths(block_start), status)

    def _set_status(self, paths: BlockPaths, status: int) -> None:
        if status not in (self.BLOCK_AVAILABLE, self.BLOCK_NOT_AVAILABLE):
            raise ArgumentError(
                f"status must be BLOCK_AVAILABLE ({self.BLOCK_AVAILABLE}) or "
                f"BLOCK_NOT_AVAILABLE ({self.BLOCK_NOT_AVAILABLE}), not {status!r}"
            )
        try:
            with self._block_dirs(paths, create=False) as (block_fd, file_fd):
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
        paths = self._paths(block_start)
        if not os.path.exists(paths.lock_path):
            # A holder keeps its lock file; no file means no holder.
            return False
        return bool(locks.BlockLock(paths.lock_path).locked_elsewhere())

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
        start, stop = self._check_roi(roi)
        out_array = self._output_array(start, stop, out_array)
        self._read_into(start, stop, out_array)
        return out_array

    def _output_array(self, start: numpy.ndarray, stop: numpy.ndarray, out_array: Any) -> Any:
        """``out_array`` checked against the roi (shape, dtype), or a new array for it."""
        shape = tuple(int(n) for n in stop - start)
        if out_array is None:
            return numpy.empty(shape, dtype=self._dtype)
        if tuple(out_array.shape) != shape:
            raise ArgumentError(f"out_array has shape {tuple(out_array.shape)}; the roi needs {shape}")
        if numpy.dtype(out_array.dtype) != self._dtype:
            raise ArgumentError(
                f"out_array has dtype {out_array.dtype}; the fileset's dtype is {self._dtype}"
            )
        return out_array

    def _read_into(
        self,
        start: numpy.ndarray,
        stop: numpy.ndarray,
        out: Any,
        check_status: bool = True,
        skip: set[tuple[int, ...]] | None = None,
    ) -> None:
        """Copy the validated roi ``[start, stop)`` from the available blocks into ``out``.

        ``check_status=False`` skips the ``STATUS.txt`` test, for callers that just ensured the blocks;
        blocks in ``skip`` are already in ``out`` (copied from memory as they were downloaded).
        """
        direct = isinstance(out, numpy.ndarray) and out.flags.c_contiguous and out.dtype == self._dtype
        block_shape = numpy.asarray(self._block_shape_t, dtype=numpy.int64)
        view_shape = numpy.asarray(self._view_shape, dtype=numpy.int64)
        for proj in geometry.projections(start, stop, block_shape, view_shape):
            block_start = proj.block_start
            if skip and block_start in skip:
                continue
            paths = self._paths(block_start)
            if check_status and not os.path.exists(paths.status_path):
                raise BlockNotReadyError(
                    f"block at {block_start} (view coordinates) is not available locally: "
                    f"{paths.status_path} does not exist",
                    block_start=block_start,
                )
            try:
                entry = self._handles.acquire(paths.file_path)
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
                changed = _file_key(os.fstat(entry.fd)) != entry.key
            finally:
                self._handles.release(entry)
            if changed:
                self._handles.invalidate(paths.file_path)
                raise BlockNotReadyError(
                    f"block at {block_start} is marked available but its file {paths.file_path} was "
                    "modified in place while it was read; run `rbfs verify --repair`",
                    block_start=block_start,
                )

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
        paths = self._paths(block_start)
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
                    with self._block_dirs(paths, create=True) as (_, file_fd):
                        if _is_link(os.path.basename(paths.file_path), file_fd):
                            raise atomic.link_error(paths.file_path)
                    self._handles.invalidate(paths.file_path)  # HDF5 refuses a read-only and a writable open
                    handle = h5py.File(paths.file_path, "a")
                else:
                    self._check_confined(paths.file_path)
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
        start, stop = self._check_roi(roi)
        data = numpy.asarray(data)
        shape = tuple(int(n) for n in stop - start)
        if data.shape != shape:
            raise ArgumentError(f"data has shape {data.shape}; the roi {roi} needs {shape}")
        block_shape = numpy.asarray(self._block_shape_t, dtype=numpy.int64)
        view_shape = numpy.asarray(self._view_shape, dtype=numpy.int64)
        for proj in geometry.projections(start, stop, block_shape, view_shape):
            block_start = _ints(proj.block_start)
            paths = self._paths(block_start)
            disk_start, disk_stop = self._disk_bounds(block_start)
            disk_shape = tuple(b - a for a, b in zip(disk_start, disk_stop))
            with self._block_lock(block_start), self._block_dirs(paths) as (block_fd, file_fd):
                atomic.remove(STATUS_FILE_NAME, dir_fd=block_fd, shown=paths.status_path)
                block = self._load_block_for_update(paths, disk_shape)
                block[tuple(proj.block_slices)] = data[tuple(proj.out_slices)]
                self._write_block_file(paths, block, file_fd)

    def _load_block_for_update(self, paths: BlockPaths, disk_shape: tuple[int, ...]) -> numpy.ndarray:
        block = numpy.zeros(disk_shape, dtype=self._dtype)
        if not os.path.exists(paths.file_path):
            return block
        try:
            self._check_confined(paths.file_path)
            with h5py.File(paths.file_path, "r") as f:
                dataset = f[paths.internal_path]
                if dataset.shape == disk_shape:
                    dataset.read_direct(block)
                else:
                    # e.g. an upstream stub clipped to its view: keep what overlaps.
                    overlap = tuple(slice(0, min(a, b)) for a, b in zip(dataset.shape, disk_shape))
                    block[overlap] = dataset[overlap]
        except (OSError, KeyError, ValueError, TypeError) as exc:
            logger.warning(
                "existing block file %s is unreadable (%s); rewriting it from zeros", paths.file_path, exc
            )
        return block

    def _contiguous(self) -> bool:
        """Whether block datasets are contiguous (no chunks, no compression): we write their bytes."""
        return self._chunks is None and self._description.compression is None

    def _create_dataset(
        self, f: h5py.File, name: str, shape: tuple[int, ...], data: Any = None, *, unwritten: bool = False
    ) -> h5py.Dataset:
        """Create dataset ``name`` as the description says (chunks clipped to ``shape``, compression...).

        ``unwritten`` (only for :meth:`_contiguous` descriptions) allocates the space but writes nothing,
        for :func:`h5image.skeleton`.
        """
        d = self._description
        chunks = None
        if self._chunks is not None:
            chunks = tuple(max(1, min(c, s)) for c, s in zip(self._chunks, shape))
        extra = {"dcpl": h5image.unwritten_contiguous()} if unwritten else {}
        dataset = f.create_dataset(
            name,
            shape=shape,
            dtype=self._dtype,
            data=data,
            chunks=chunks,
            compression=d.compression,
            compression_opts=d.compression_opts,
            **extra,
        )
        if d.drange is not None:
            dataset.attrs["drange"] = tuple(d.drange)
        vigra = _vigra()
        if vigra is not None:
            dataset.attrs["axistags"] = vigra.defaultAxistags(self._axes).toJSON()
        return dataset

    def _write_block_file(self, paths: BlockPaths, block: numpy.ndarray, file_fd: int) -> None:
        """Replace the block file (in the directory ``file_fd``) with ``block``, atomically.

        HDF5 never writes to disk here: an uncompressed block's metadata is built in memory and its
        voxels are written straight from ``block``; a chunked or compressed one is built whole in memory.
        The bytes go to a temp file with checked writes, fsynced (unless ``fsync=False``) and renamed onto
        the block file; on failure the temp file is removed and :class:`CacheWriteError` names the block
        file.
        """
        name = os.path.basename(paths.file_path)
        options = {"dir_fd": file_fd, "fsync": self._fsync, "shown": paths.file_path}
        try:
            if self._contiguous():
                block = numpy.ascontiguousarray(block, dtype=self._dtype)
                pages, offset = self._skeleton(paths.internal_path, block.shape)

                def fill(fd: int) -> None:
                    for position, metadata in pages:
                        atomic.pwrite_all(fd, metadata, position)
                    atomic.pwrite_all(fd, block, offset)

                atomic.write_file(name, fill, **options)
            else:
                data = h5image.build_image(
                    lambda f: self._create_dataset(f, paths.internal_path, block.shape, data=block),
                    size_hint=block.nbytes,
                )
                atomic.write_bytes(name, data, **options)
        finally:
            self._handles.invalidate(paths.file_path)

    def _skeleton(self, internal_path: str, shape: tuple[int, ...]) -> tuple[list[tuple[int, bytes]], int]:
        """The metadata pages and data offset of a contiguous block file of ``shape`` (remembered: they
        depend only on the description and the shape, and a view has few distinct block shapes)."""
        key = (internal_path, shape)
        hit = self._skeletons.get(key)
        if hit is None:
            image, offset = h5image.skeleton(
                lambda f: self._create_dataset(f, internal_path, shape, unwritten=True)
            )
            hit = (list(image.pages()), offset)
            if len(self._skeletons) >= 64:
                self._skeletons.clear()
            self._skeletons[key] = hit
        return hit

    def _publish_block(self, block_start: Any, data: Any) -> None:
        """Atomically store a complete block and mark it available. The caller holds the block lock.

        ``data`` must have exactly the block's disk-clipped shape.
        """
        self._check_open()
        paths = self._paths(block_start)
        disk_start, disk_stop = self._disk_bounds(_ints(block_start))
        disk_shape = tuple(b - a for a, b in zip(disk_start, disk_stop))
        data = numpy.asarray(data)
        if data.shape != disk_shape:
            raise ArgumentError(
                f"block at {tuple(block_start)} must have the disk-clipped block shape {disk_shape}, "
                f"got {data.shape}"
            )
        with self._block_dirs(paths) as (block_fd, file_fd):
            self._write_block_file(paths, data, file_fd)
            atomic.create_empty(STATUS_FILE_NAME, dir_fd=block_fd, fsync=self._fsync, shown=paths.status_path)
        logger.debug("published block %s -> %s", tuple(disk_start), paths.file_path)

    # -- maintenance -----------------------------------------------------------------------------------

    def _iter_block_dirs(
        self, roi: Roi | None = None, links: list[str] | None = None
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        """Stream ``(view block start, directory)`` of the EXISTING block directories in ``roi``, C order.

        Walks the directory tree level by level with ``os.scandir``, so it costs time for the blocks
        present on disk, not for every block of the roi. Symbolic links are never followed; those named
        like block directories are appended to ``links`` if given.
        """
        if roi is None:
            view_start = (0,) * self._ndim
            view_stop = self._view_shape
        else:
            start, stop = self._check_roi(roi)
            view_start, view_stop = _ints(start), _ints(stop)
        lo = [(s // b) * b + o for s, b, o in zip(view_start, self._block_shape_t, self._view_origin)]
        hi = [s + o for s, o in zip(view_stop, self._view_origin)]
        yield from self._walk_level(0, self._root_dir, (), lo, hi, links)

    def _walk_level(
        self,
        level: int,
        directory: str,
        prefix: tuple[int, ...],
        lo: list[int],
        hi: list[int],
        links: list[str] | None,
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        axis_prefix = self._axes[level] + "_"
        step = self._block_shape_t[level]
        found = []
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        with entries:
            for entry in entries:
                name = entry.name
                if not name.startswith(axis_prefix):
                    continue
                digits = name[len(axis_prefix) :]
                if not (digits.isascii() and digits.isdigit()):
                    continue
                value = int(digits)
                if (
                    f"{value:08d}" != digits
                    or not lo[level] <= value < hi[level]
                    or (value - lo[level]) % step
                ):
                    continue
                if entry.is_symlink():
                    if links is not None:
                        links.append(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    found.append((value, entry.path))
        found.sort()
        origin = self._view_origin[level]
        for value, path in found:
            start = prefix + (value - origin,)
            if level == self._ndim - 1:
                yield start, path
            else:
                yield from self._walk_level(level + 1, path, start, lo, hi, links)

    @staticmethod
    def _listdir(directory: str) -> set[str]:
        try:
            return set(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return set()

    def _partials(self, paths: BlockPaths, names: set[str]) -> list[str]:
        base = os.path.basename(paths.file_path) + "."
        file_dir = os.path.dirname(paths.file_path)
        return sorted(
            os.path.join(file_dir, n) for n in names if n.startswith(base) and n.endswith(PARTIAL_SUFFIX)
        )

    def _names_near_file(self, paths: BlockPaths, dir_names: set[str]) -> set[str]:
        file_dir = os.path.dirname(paths.file_path)
        return dir_names if file_dir == paths.directory else self._listdir(file_dir)

    def statusSummary(self, roi: Roi | None = None) -> StatusSummary:
        """Count available, partial and missing blocks of ``roi`` (default: the view), streaming.

        Only existing block directories are visited, so large sparse caches are summarised quickly.
        """
        if roi is None:
            total = geometry.count_blocks(
                numpy.zeros(self._ndim, dtype=numpy.int64),
                numpy.asarray(self._view_shape, dtype=numpy.int64),
                numpy.asarray(self._block_shape_t, dtype=numpy.int64),
            )
        else:
            start, stop = self._check_roi(roi)
            total = geometry.count_blocks(start, stop, numpy.asarray(self._block_shape_t, dtype=numpy.int64))
        available = partial = nbytes = 0
        stat, sep = os.stat, os.sep
        for block_start, directory in self._iter_block_dirs(roi):
            paths = self._leaf_paths(block_start, directory)
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
            near = self._names_near_file(paths, self._listdir(directory))
            if os.path.basename(paths.file_path) in near or self._partials(paths, near):
                partial += 1
        total = int(total)
        return StatusSummary(
            total=total,
            available=available,
            partial=partial,
            missing=total - available - partial,
            available_bytes=nbytes,
        )

    def _check_block_file(self, paths: BlockPaths, block_start: tuple[int, ...], deep: bool) -> str | None:
        """Why the block file of an available block is bad, or None if it is good."""
        disk_start, disk_stop = self._disk_bounds(block_start)
        expected = tuple(b - a for a, b in zip(disk_start, disk_stop))
        if not os.path.exists(paths.file_path):
            return "block file missing"
        escape = self._escape(paths.file_path)
        if escape is not None:
            return f"block file not trusted: {escape}"
        try:
            with h5py.File(paths.file_path, "r") as f:
                if f.id.get_filesize() != os.fstat(f.id.get_vfd_handle()).st_size:
                    # Another handle of this process holds an older state of the file (see
                    # _HandleCache.acquire): it was overwritten in place.
                    return "modified in place while open"
                dataset = f.get(paths.internal_path)
                if not isinstance(dataset, h5py.Dataset):
                    return f"no dataset {paths.internal_path!r} in the block file"
                if dataset.shape != expected:
                    return f"dataset shape {dataset.shape}, expected {expected}"
                if dataset.dtype != self._dtype:
                    return f"dataset dtype {dataset.dtype}, expected {self._dtype}"
                if deep:
                    dataset[()]
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            return f"unreadable: {exc}"
        return None

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
        report = VerifyReport(repaired=bool(repair))
        dir_links: list[str] = []
        for block_start, directory in self._iter_block_dirs(roi, links=dir_links):
            names, linked = self._scan_block_dir(directory)
            paths = self._leaf_paths(block_start, directory)
            if linked:
                report.links.extend(os.path.join(directory, name) for name in sorted(linked))
                if repair:
                    for name in sorted(linked):
                        self._remove_link(os.path.join(directory, name), report)
                    names -= linked
            partials = self._partials(paths, self._names_near_file(paths, names))
            if partials and not self._lock_held_elsewhere(paths):
                report.stray_partials.extend(partials)
            else:
                partials = []
            reason = None
            if STATUS_FILE_NAME in names:
                report.checked += 1
                reason = self._check_block_file(paths, block_start, deep)
                if reason is not None:
                    logger.warning("bad block %s (%s): %s", block_start, paths.file_path, reason)
                    report.bad_blocks.append(BadBlock(block_start, paths.file_path, reason))
            if repair and (reason is not None or partials):
                self._repair_block(block_start, paths, reason is not None, report)
        for link in sorted(dir_links):
            logger.warning("symbolic link %s planted in the block tree", link)
            report.links.append(link)
            if repair:
                self._remove_link(link, report)
        return report

    @staticmethod
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

    def _remove_link(self, path: str, report: VerifyReport) -> None:
        """Remove the symbolic link ``path`` of the block tree (never its target)."""
        parts = os.path.relpath(os.path.dirname(path), self._root_dir).split(os.sep)
        try:
            with atomic.opened_dir(self._root_dir, [] if parts == ["."] else parts, create=False) as fd:
                if not _is_link(os.path.basename(path), fd):
                    return
                atomic.remove(os.path.basename(path), dir_fd=fd, shown=path)
        except FileNotFoundError:
            return
        logger.warning("removed the symbolic link %s", path)
        report.removed.append(path)

    def _lock_held_elsewhere(self, paths: BlockPaths) -> bool:
        if not os.path.exists(paths.lock_path):
            return False
        return bool(locks.BlockLock(paths.lock_path).locked_elsewhere())

    def _remove_block_files(
        self, paths: BlockPaths, status: bool, block_file: bool, near_file: Sequence[str] = ()
    ) -> list[str]:
        """Remove the block's ``STATUS.txt``, block file and the named entries next to the block file,
        through directory descriptors (a symbolic link on the way is refused); return what was removed."""
        removed = []
        try:
            with self._block_dirs(paths, create=False) as (block_fd, file_fd):
                if status and atomic.remove(STATUS_FILE_NAME, dir_fd=block_fd, shown=paths.status_path):
                    removed.append(paths.status_path)
                file_dir = os.path.dirname(paths.file_path)
                names = ([os.path.basename(paths.file_path)] if block_file else []) + list(near_file)
                for name in names:
                    path = os.path.join(file_dir, name)
                    if atomic.remove(name, dir_fd=file_fd, shown=path):
                        removed.append(path)
        except FileNotFoundError:
            pass
        self._handles.invalidate(paths.file_path)
        return removed

    def _discard_broken_block(
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
        paths = self._paths(block_start)
        lock = self._block_lock(block_start)
        lock.acquire(timeout=lock_timeout, cancel=cancel)
        try:
            if not os.path.exists(paths.status_path):
                return "missing", None
            problem = self._check_block_file(paths, _ints(block_start), deep=False)
            if problem is None:
                try:
                    return "intact", _file_key(os.stat(paths.file_path))
                except FileNotFoundError:  # only a writer that ignores the lock could do this
                    problem = "block file missing"
            self._remove_block_files(paths, status=True, block_file=True)
        finally:
            lock.release()
        logger.warning(
            "block %s was marked available but its file is bad (%s); it will be fetched again",
            list(block_start),
            problem,
        )
        return "discarded", None

    def _repair_block(
        self, block_start: tuple[int, ...], paths: BlockPaths, bad: bool, report: VerifyReport
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
                and (self._check_block_file(paths, block_start, deep=False) is not None)
            )
            file_dir = os.path.dirname(paths.file_path)
            partials = [os.path.basename(p) for p in self._partials(paths, self._listdir(file_dir))]
            for path in self._remove_block_files(paths, discard, discard, partials):
                logger.warning("removed %s", path)
                report.removed.append(path)
        finally:
            lock.release()

    def purgeAllLocks(self) -> int:
        """Remove stale lock and temp files from the view's block directories; return how many.

        Removes upstream lazyflow's ``<blockfile>.lock`` files (left by killed upstream processes) and
        this package's ``*.partial`` temp files whose block lock nobody holds. Locks held by a live
        process are never broken. Call it when no upstream lazyflow process is using the cache.
        """
        self._check_open()
        removed = 0
        for block_start, directory in self._iter_block_dirs(None):
            names = self._listdir(directory)
            paths = self._leaf_paths(block_start, directory)
            near = self._names_near_file(paths, names)
            upstream_lock = os.path.basename(paths.file_path) + UPSTREAM_LOCK_SUFFIX
            if upstream_lock in near:
                for path in self._remove_block_files(paths, False, False, [upstream_lock]):
                    removed += 1
                    logger.warning("purged stale lock file %s of block %s", path, block_start)
            partials = self._partials(paths, near)
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
                names = [os.path.basename(p) for p in partials]
                for path in self._remove_block_files(paths, False, False, names):
                    removed += 1
                    logger.warning("purged stale temp file %s of block %s", path, block_start)
            finally:
                lock.release()  # also removes our (harmless) leftover lock file
        return removed

    # -- export ----------------------------------------------------------------------------------------

    def _export_view_roi(self, roi: Roi, use_view_coordinates: bool) -> tuple[numpy.ndarray, numpy.ndarray]:
        try:
            start = numpy.asarray(roi[0], dtype=numpy.int64)
            stop = numpy.asarray(roi[1], dtype=numpy.int64)
        except (TypeError, ValueError, IndexError) as exc:
            raise OutOfBoundsError(
                f"roi must be a (start, stop) pair of integer sequences, got {roi!r}"
            ) from exc
        if not use_view_coordinates:
            if start.shape != (self._ndim,) or stop.shape != (self._ndim,):
                raise OutOfBoundsError(f"roi {roi!r} must have {self._ndim} coordinates per bound")
            origin = numpy.asarray(self._view_origin, dtype=numpy.int64)
            start, stop = start - origin, stop - origin
        return self._check_roi((start, stop))

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
        view_start, view_stop = self._export_view_roi(roi, use_view_coordinates)
        origin = numpy.asarray(self._view_origin, dtype=numpy.int64)
        roi_string = geometry.roi_string(view_start + origin, view_stop + origin)
        export_dir = os.path.abspath(os.fspath(exportDirectory))
        target = PathComponents(
            os.path.join(export_dir, self._external_format.format(roiString=roi_string)),
            self._internal_format.format(roiString=roi_string),
        )
        shape = tuple(int(n) for n in view_stop - view_start)

        def fill(fd: int) -> None:
            # HDF5 writes (compressed) chunks through a file object that never reports a failure to it;
            # the first failed write stops the export and is raised here, after a clean close.
            image = h5image.SparseFile(fd)
            with h5py.File(image, "w") as f:
                dataset = self._create_dataset(f, target.internalPath, shape)
                for row_start, row_stop in self._block_rows(view_start, view_stop):
                    if image.error is not None:
                        break
                    rows = slice(int(row_start[0] - view_start[0]), int(row_stop[0] - view_start[0]))
                    dataset[rows] = self.readData((row_start, row_stop))
            if image.error is not None:
                raise image.error

        created_dirs: list[str] = []
        try:
            _makedirs_tracked(os.path.dirname(target.externalPath), created_dirs)
            atomic.write_file(target.externalPath, fill)
        except BaseException:
            _undo([], created_dirs)
            raise
        return target.totalPath()

    def _block_rows(
        self, start: numpy.ndarray, stop: numpy.ndarray
    ) -> Iterator[tuple[numpy.ndarray, numpy.ndarray]]:
        """Split the view roi ``(start, stop)`` along axis 0 at block boundaries (one row of blocks each)."""
        step, origin = self._block_shape_t[0], self._view_origin[0]
        row = int(start[0])
        while row < int(stop[0]):
            row_end = min(int(stop[0]), ((row + origin) // step + 1) * step - origin)
            row_start, row_stop = start.copy(), stop.copy()
            row_start[0], row_stop[0] = row, row_end
            yield row_start, row_stop
            row = row_end

    def _subset_view_roi(self, roi: Roi, use_view_coordinates: bool) -> tuple[numpy.ndarray, numpy.ndarray]:
        """The view roi of an :meth:`exportSubset` request, checked to lie on block boundaries."""
        view_start, view_stop = self._export_view_roi(roi, use_view_coordinates)
        bs = numpy.asarray(self._block_shape_t, dtype=numpy.int64)
        origin = numpy.asarray(self._view_origin, dtype=numpy.int64)
        abs_start, abs_stop = view_start + origin, view_stop + origin
        disk_shape = numpy.asarray(self._disk_shape, dtype=numpy.int64)
        view_end = numpy.asarray(self._view_shape, dtype=numpy.int64)
        if (abs_start % bs).any():
            raise OutOfBoundsError(
                f"exportSubset needs a roi starting on a block boundary (multiples of {self.block_shape} "
                f"in disk coordinates); got start {tuple(int(x) for x in abs_start)}"
            )
        aligned_stop = (abs_stop % bs == 0) | (abs_stop == disk_shape) | (view_stop == view_end)
        if not aligned_stop.all():
            raise OutOfBoundsError(
                f"exportSubset needs a roi stopping on a block boundary or the dataset edge; got stop "
                f"{tuple(int(x) for x in abs_stop)} "
                f"(block shape {self.block_shape}, shape {self._disk_shape})"
            )
        return view_start, view_stop

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
        view_start, view_stop = self._subset_view_roi(roi, use_view_coordinates)
        export_dir = os.path.abspath(os.fspath(exportDirectory))
        dest_desc_path = os.path.join(export_dir, os.path.basename(self._descriptionFilePath))
        dest_desc = self._export_description(dest_desc_path, view_stop)
        dest_root = os.path.normpath(os.path.join(export_dir, str(dest_desc.dataset_root_dir)))
        identity.check_local(dest_root, dest_desc, dest_desc_path)  # not into another volume's cache

        created_files: list[str] = []
        created_dirs: list[str] = []
        try:
            _makedirs_tracked(export_dir, created_dirs)
            copied = 0
            for block_start, directory in self._iter_block_dirs((view_start, view_stop)):
                paths = self._paths(block_start)
                if not os.path.exists(paths.status_path):
                    logger.debug("export: block %s is not available; skipped", block_start)
                    continue
                dest_dir = os.path.join(dest_root, os.path.relpath(directory, self._root_dir))
                dest_status = os.path.join(dest_dir, STATUS_FILE_NAME)
                if os.path.exists(dest_status):
                    logger.info("export: block %s already exported; skipped", block_start)
                    continue
                escape = self._escape(paths.file_path)
                if escape is not None:
                    logger.warning("export: block %s skipped: its file %s", block_start, escape)
                    continue
                dest_file = os.path.join(dest_dir, os.path.relpath(paths.file_path, directory))
                _makedirs_tracked(os.path.dirname(dest_file), created_dirs)
                atomic.copy_file(paths.file_path, dest_file, fsync=self._fsync)
                created_files.append(dest_file)
                atomic.write_bytes(dest_status, b"", fsync=self._fsync)
                created_files.append(dest_status)
                copied += 1
            type(self)._write_export_description(dest_desc_path, dest_desc)
        except BaseException:
            _undo(created_files, created_dirs)
            raise
        logger.info("exported %d blocks to %s", copied, export_dir)
        return dest_desc_path

    def _export_description(self, dest_desc_path: str, view_shape: numpy.ndarray) -> Any:
        """The description of an export: the existing one extended, or a copy of ours."""
        if os.path.exists(dest_desc_path):
            existing = _desc.read_local(dest_desc_path)
            for name in ("axes", "block_file_name_format"):
                if str(getattr(existing, name)) != str(getattr(self._description, name)):
                    raise DescriptionError(
                        f"cannot extend the export {dest_desc_path}: its {name} is "
                        f"{getattr(existing, name)!r}, "
                        f"this fileset's is {getattr(self._description, name)!r}",
                        field=name,
                    )
            for name in ("shape", "block_shape", "view_origin"):
                if not numpy.array_equal(getattr(existing, name), getattr(self._description, name)):
                    raise DescriptionError(
                        f"cannot extend the export {dest_desc_path}: its {name} is "
                        f"{list(getattr(existing, name))}, "
                        f"this fileset's is {list(getattr(self._description, name))}",
                        field=name,
                    )
            if numpy.dtype(existing.dtype) != self._dtype:
                raise DescriptionError(
                    f"cannot extend the export {dest_desc_path}: its dtype is {numpy.dtype(existing.dtype)}, "
                    f"this fileset's is {self._dtype}",
                    field="dtype",
                )
            existing.view_shape = numpy.maximum(
                numpy.asarray(existing.view_shape, dtype=numpy.int64), view_shape
            )
            return existing
        dest = copy.deepcopy(self._description)
        dest.view_shape = numpy.asarray(view_shape, dtype=numpy.int64)
        dest.hash_id = None
        dest.dataset_root_dir = self._export_root_name()
        return dest

    def _export_root_name(self) -> str:
        """The export's ``dataset_root_dir``: relative, and inside the export directory."""
        root = str(self._description.dataset_root_dir or ".")
        if not os.path.isabs(root):
            normalized = os.path.normpath(root)
            if normalized != ".." and not normalized.startswith(".." + os.sep):
                return root
        name = os.path.basename(os.path.normpath(self._root_dir))
        return name or "."

    @classmethod
    def _write_export_description(cls, path: str, desc: Any) -> None:
        # Always the local schema, whatever subclass exports.
        _desc.write_description(path, desc, "local")
