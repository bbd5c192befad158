"""The block tree on disk: names, paths, directory descriptors, the walk over existing block directories.

Layout (interchangeable with lazyflow's caches)::

    <root>/<axis0>_<start0:08d>/<axis1>_<start1:08d>/.../<block file>   (disk coordinates)
    <root>/.../STATUS.txt                                                (empty: block complete and valid)
    <root>/.../.rbfs.lock                                                (the block's OS lock)

Writes open the block directories one component at a time from the root and never follow a symbolic
link (:func:`lazyflow_rbfs.atomic.open_dir`); reads never take a block file whose real path leaves the root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from lazyflow_rbfs import atomic, geometry, locks
from lazyflow_rbfs.store.grid import BlockGrid

__all__ = [
    "BlockPaths",
    "PathComponents",
    "BlockLayout",
    "STATUS_FILE_NAME",
    "LOCK_FILE_NAME",
    "UPSTREAM_LOCK_SUFFIX",
    "PARTIAL_SUFFIX",
]

STATUS_FILE_NAME = "STATUS.txt"
LOCK_FILE_NAME = ".rbfs.lock"
UPSTREAM_LOCK_SUFFIX = ".lock"
PARTIAL_SUFFIX = atomic.PARTIAL_SUFFIX
#: Block paths remembered per fileset (about 1 KiB each).
_PATHS_CACHE_SIZE = 16384


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


def is_link(name: str, dir_fd: int) -> bool:
    """Whether ``name`` in the directory ``dir_fd`` is a symbolic link (False if it does not exist)."""
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def listdir(directory: str) -> set[str]:
    """Names in ``directory``; empty if it does not exist."""
    try:
        return set(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return set()


class BlockLayout:
    """Where the blocks of one grid live under ``root``, and safe access to their directories.

    ``external_format`` and ``internal_format`` are the two halves of ``block_file_name_format``
    (``{roiString}`` is replaced by the block's disk roi).
    """

    def __init__(self, grid: BlockGrid, root: str, external_format: str, internal_format: str) -> None:
        self.grid = grid
        self.root = root
        self.external_format = external_format
        self.internal_format = "/" + internal_format.lstrip("/")
        self._real_root: str | None = None  # realpath of the root, resolved when first needed
        self._paths_cache: dict[tuple[int, ...], BlockPaths] = {}

    # -- names --

    def paths(self, block_start: object) -> BlockPaths:
        """Absolute paths of the block at view ``block_start`` (remembered for recently used blocks)."""
        cache = self._paths_cache
        if type(block_start) is tuple:
            hit = cache.get(block_start)
            if hit is not None:
                return hit
        start = self.grid.check_block_start(block_start)
        disk_start, _ = self.grid.disk_bounds(start)
        directory = os.path.join(self.root, *geometry.block_dir_names(self.grid.axes, disk_start))
        paths = self.leaf_paths(start, directory)
        if len(cache) >= _PATHS_CACHE_SIZE:
            cache.clear()  # cheap bound; reads revisit few blocks at a time
        cache[start] = paths
        return paths

    def status_path(self, block_start: object) -> str:
        """Path of the block's ``STATUS.txt``, without building the block file name (hot in scans)."""
        hit = self._paths_cache.get(block_start) if type(block_start) is tuple else None  # type: ignore[arg-type]
        if hit is not None:
            return hit.status_path
        start = self.grid.check_block_start(block_start)
        disk_start = (s + o for s, o in zip(start, self.grid.view_origin))
        names = geometry.block_dir_names(self.grid.axes, disk_start)
        return os.path.join(self.root, *names, STATUS_FILE_NAME)

    def leaf_paths(self, start: tuple[int, ...], directory: str) -> BlockPaths:
        """:meth:`paths` for a validated view ``start`` whose block ``directory`` is known (fast path)."""
        disk_start, disk_stop = self.grid.disk_bounds(start)
        roi_string = geometry.roi_string(disk_start, disk_stop)
        sep = os.sep
        return BlockPaths(
            directory=directory,
            file_path=directory + sep + self.external_format.format(roiString=roi_string),
            internal_path=self.internal_format.format(roiString=roi_string),
            status_path=directory + sep + STATUS_FILE_NAME,
            lock_path=directory + sep + LOCK_FILE_NAME,
        )

    def partials(self, paths: BlockPaths, names: set[str]) -> list[str]:
        """Paths of the block file's temp files among ``names`` (of the block file's directory)."""
        base = os.path.basename(paths.file_path) + "."
        file_dir = os.path.dirname(paths.file_path)
        return sorted(
            os.path.join(file_dir, n) for n in names if n.startswith(base) and n.endswith(PARTIAL_SUFFIX)
        )

    @staticmethod
    def names_near_file(paths: BlockPaths, dir_names: set[str]) -> set[str]:
        """Names in the block file's directory (``dir_names`` when it is the block directory)."""
        file_dir = os.path.dirname(paths.file_path)
        return dir_names if file_dir == paths.directory else listdir(file_dir)

    # -- locks --

    def lock(self, block_start: object) -> locks.BlockLock:
        """The OS lock of a block; its directory is created first, refusing symbolic links on the way."""
        paths = self.paths(block_start)
        with self.block_dirs(paths, create=True):
            pass
        return locks.BlockLock(paths.lock_path)

    @staticmethod
    def locked_elsewhere(paths: BlockPaths) -> bool:
        """True iff another thread or process holds the block's lock right now."""
        if not os.path.exists(paths.lock_path):
            return False  # a holder keeps its lock file: no file means no holder
        return bool(locks.BlockLock(paths.lock_path).locked_elsewhere())

    # -- no symbolic links written through or followed out of the root --

    def escape(self, path: str) -> str | None:
        """Why reading ``path`` would leave the cache root through a symbolic link, or None."""
        # Fast path (a few lstat calls): no component below the root is a link. The root itself may be
        # one: where the cache lives is the user's choice.
        prefix = self.root + os.sep
        if path.startswith(prefix):
            current = self.root
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
                self._real_root = os.path.realpath(self.root)  # the root itself may be a link
            if real.startswith(os.path.join(self._real_root, "")):
                return None
        return f"it leads out of the cache root {self.root} through a symbolic link (to {real})"

    def check_confined(self, path: str) -> None:
        """Raise ``OSError`` (``ELOOP``) if reading ``path`` would leave the cache root."""
        reason = self.escape(path)
        if reason is not None:
            raise OSError(errno.ELOOP, f"{path} is not read: {reason}", path)

    def block_dir_names(self, block_start: tuple[int, ...]) -> list[str]:
        """Directory names from the root to the directory of the block at view ``block_start``."""
        start = self.grid.check_block_start(block_start)
        disk_start = (s + o for s, o in zip(start, self.grid.view_origin))
        return list(geometry.block_dir_names(self.grid.axes, disk_start))

    def _dir_parts(self, paths: BlockPaths) -> tuple[list[str], list[str]]:
        """Directory names from the root to the block directory, and from there to the block file's."""
        block_parts = os.path.relpath(paths.directory, self.root).split(os.sep)
        file_parts = os.path.relpath(os.path.dirname(paths.file_path), paths.directory).split(os.sep)
        return block_parts, [] if file_parts == ["."] else file_parts

    @contextlib.contextmanager
    def block_dirs(self, paths: BlockPaths, create: bool = True) -> Iterator[tuple[int, int]]:
        """Descriptors of the block directory and of the block file's directory (often the same one),
        opened from the root without following symbolic links (see :func:`atomic.open_dir`)."""
        block_parts, file_parts = self._dir_parts(paths)
        block_fd = atomic.open_dir(self.root, block_parts, create=create)
        try:
            if not file_parts:
                yield block_fd, block_fd
                return
            file_fd = atomic.open_dir(self.root, block_parts + file_parts, create=create)
            try:
                yield block_fd, file_fd
            finally:
                os.close(file_fd)
        finally:
            os.close(block_fd)

    def remove_link(self, path: str) -> bool:
        """Remove the symbolic link ``path`` of the block tree (never its target); True if removed."""
        parts = os.path.relpath(os.path.dirname(path), self.root).split(os.sep)
        try:
            with atomic.opened_dir(self.root, [] if parts == ["."] else parts, create=False) as fd:
                if not is_link(os.path.basename(path), fd):
                    return False
                atomic.remove(os.path.basename(path), dir_fd=fd, shown=path)
        except FileNotFoundError:
            return False
        return True

    # -- the walk over existing block directories --

    def iter_block_dirs(
        self, view_start: Sequence[int], view_stop: Sequence[int], links: list[str] | None = None
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        """Stream ``(view block start, directory)`` of the EXISTING block directories of a view roi, C order.

        Walks the directory tree level by level with ``os.scandir``, so it costs time for the blocks
        present on disk, not for every block of the roi. Symbolic links are never followed; those named
        like block directories are appended to ``links`` if given.
        """
        g = self.grid
        lo = [(s // b) * b + o for s, b, o in zip(view_start, g.block_shape, g.view_origin)]
        hi = [s + o for s, o in zip(view_stop, g.view_origin)]
        yield from self._walk_level(0, self.root, (), lo, hi, links)

    def iter_root_block_dirs(self, links: list[str] | None = None) -> Iterator[tuple[tuple[int, ...], str]]:
        """Like :meth:`iter_block_dirs` over the whole on-disk shape, not only the view: every block the
        root holds (a root may be shared by descriptions with different views). Starts are in this
        grid's view coordinates (negative, or past the view, for blocks outside it)."""
        g = self.grid
        yield from self._walk_level(0, self.root, (), [0] * g.ndim, list(g.disk_shape), links)

    def _walk_level(
        self,
        level: int,
        directory: str,
        prefix: tuple[int, ...],
        lo: list[int],
        hi: list[int],
        links: list[str] | None,
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        axis_prefix = self.grid.axes[level] + "_"
        step = self.grid.block_shape[level]
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
        origin = self.grid.view_origin[level]
        for value, path in found:
            start = prefix + (value - origin,)
            if level == self.grid.ndim - 1:
                yield start, path
            else:
                yield from self._walk_level(level + 1, path, start, lo, hi, links)
