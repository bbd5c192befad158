"""Exports of a fileset: one roi into one HDF5 file, or a block-aligned roi into a new local fileset.

Both write temp files first and remove whatever they created on failure.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import h5py
import numpy

from lazyflow_rbfs import atomic, geometry, h5image, identity
from lazyflow_rbfs import description as _desc
from lazyflow_rbfs.errors import CacheWriteError, DescriptionError, OutOfBoundsError
from lazyflow_rbfs.store.grid import BlockGrid, Roi
from lazyflow_rbfs.store.layout import STATUS_FILE_NAME, PathComponents

if TYPE_CHECKING:  # pragma: no cover
    from lazyflow_rbfs.store.fileset import BlockwiseFileset

__all__ = ["export_roi_to_hdf5", "export_subset", "subset_view_roi"]

logger = logging.getLogger(__name__)


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


def _view_roi(grid: BlockGrid, roi: Roi, use_view_coordinates: bool) -> tuple[numpy.ndarray, numpy.ndarray]:
    try:
        start = numpy.asarray(roi[0], dtype=numpy.int64)
        stop = numpy.asarray(roi[1], dtype=numpy.int64)
    except (TypeError, ValueError, IndexError) as exc:
        raise OutOfBoundsError(f"roi must be a (start, stop) pair of integer sequences, got {roi!r}") from exc
    if not use_view_coordinates:
        if start.shape != (grid.ndim,) or stop.shape != (grid.ndim,):
            raise OutOfBoundsError(f"roi {roi!r} must have {grid.ndim} coordinates per bound")
        start, stop = start - grid.view_origin_v, stop - grid.view_origin_v
    return grid.check_roi((start, stop))


def subset_view_roi(
    grid: BlockGrid, roi: Roi, use_view_coordinates: bool
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The view roi of an :func:`export_subset` request, checked to lie on block boundaries."""
    view_start, view_stop = _view_roi(grid, roi, use_view_coordinates)
    grid.check_block_aligned(view_start, view_stop, "exportSubset")
    return view_start, view_stop


def _block_rows(
    grid: BlockGrid, start: numpy.ndarray, stop: numpy.ndarray
) -> Iterator[tuple[numpy.ndarray, numpy.ndarray]]:
    """Split the view roi ``(start, stop)`` along axis 0 at block boundaries (one row of blocks each)."""
    step, origin = grid.block_shape[0], grid.view_origin[0]
    row = int(start[0])
    while row < int(stop[0]):
        row_end = min(int(stop[0]), ((row + origin) // step + 1) * step - origin)
        row_start, row_stop = start.copy(), stop.copy()
        row_start[0], row_stop[0] = row, row_end
        yield row_start, row_stop
        row = row_end


def export_roi_to_hdf5(
    fileset: BlockwiseFileset, roi: Roi, export_directory: str, use_view_coordinates: bool
) -> str:
    """See :meth:`~lazyflow_rbfs.store.BlockwiseFileset.exportRoiToHdf5`.

    Reads through ``fileset.readData``, so a remote cache downloads what it exports.
    """
    blocks = fileset.blocks
    grid, layout = blocks.grid, blocks.layout
    view_start, view_stop = _view_roi(grid, roi, use_view_coordinates)
    roi_string = geometry.roi_string(view_start + grid.view_origin_v, view_stop + grid.view_origin_v)
    export_dir = os.path.abspath(os.fspath(export_directory))
    target = PathComponents(
        os.path.join(export_dir, layout.external_format.format(roiString=roi_string)),
        layout.internal_format.format(roiString=roi_string),
    )
    shape = tuple(int(n) for n in view_stop - view_start)

    def fill(fd: int) -> None:
        # HDF5 writes (compressed) chunks through a file object that never reports a failure to it;
        # the first failed write stops the export and is raised here, after a clean close.
        image = h5image.SparseFile(fd)
        with h5py.File(image, "w") as f:
            dataset = blocks.files.create_dataset(f, target.internalPath, shape)
            for row_start, row_stop in _block_rows(grid, view_start, view_stop):
                if image.error is not None:
                    break
                rows = slice(int(row_start[0] - view_start[0]), int(row_stop[0] - view_start[0]))
                dataset[rows] = fileset.readData((row_start, row_stop))
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


def export_subset(
    fileset: BlockwiseFileset,
    view_start: numpy.ndarray,
    view_stop: numpy.ndarray,
    export_directory: str,
    description_path: str,
) -> str:
    """Copy the available blocks of a checked, block-aligned view roi into a new local fileset.

    See :meth:`~lazyflow_rbfs.store.BlockwiseFileset.exportSubset`. Returns the new description's path.
    """
    blocks = fileset.blocks
    layout, fsync = blocks.layout, blocks.files.fsync
    export_dir = os.path.abspath(os.fspath(export_directory))
    dest_desc_path = os.path.join(export_dir, os.path.basename(description_path))
    dest_desc = _export_description(fileset.description, blocks, dest_desc_path, view_stop)
    dest_root = os.path.normpath(os.path.join(export_dir, str(dest_desc.dataset_root_dir)))
    identity.check_local(dest_root, dest_desc, dest_desc_path)  # not into another volume's cache

    created_files: list[str] = []
    created_dirs: list[str] = []
    try:
        _makedirs_tracked(export_dir, created_dirs)
        copied = 0
        for block_start, directory in layout.iter_block_dirs(tuple(view_start), tuple(view_stop)):
            paths = layout.paths(block_start)
            if not os.path.exists(paths.status_path):
                logger.debug("export: block %s is not available; skipped", block_start)
                continue
            dest_dir = os.path.join(dest_root, os.path.relpath(directory, layout.root))
            dest_status = os.path.join(dest_dir, STATUS_FILE_NAME)
            if os.path.exists(dest_status):
                logger.info("export: block %s already exported; skipped", block_start)
                continue
            escape = layout.escape(paths.file_path)
            if escape is not None:
                logger.warning("export: block %s skipped: its file %s", block_start, escape)
                continue
            dest_file = os.path.join(dest_dir, os.path.relpath(paths.file_path, directory))
            _makedirs_tracked(os.path.dirname(dest_file), created_dirs)
            atomic.copy_file(paths.file_path, dest_file, fsync=fsync)
            created_files.append(dest_file)
            atomic.write_bytes(dest_status, b"", fsync=fsync)
            created_files.append(dest_status)
            copied += 1
        _desc.write_description(dest_desc_path, dest_desc, "local")  # always local, whatever exports
    except BaseException:
        _undo(created_files, created_dirs)
        raise
    logger.info("exported %d blocks to %s", copied, export_dir)
    return dest_desc_path


def _export_description(description: Any, blocks: Any, dest_desc_path: str, view_shape: numpy.ndarray) -> Any:
    """The description of an export: the existing one extended, or a copy of ours."""
    dtype = blocks.dtype
    if os.path.exists(dest_desc_path):
        existing = _desc.read_local(dest_desc_path)
        for name in ("axes", "block_file_name_format"):
            if str(getattr(existing, name)) != str(getattr(description, name)):
                raise DescriptionError(
                    f"cannot extend the export {dest_desc_path}: its {name} is {getattr(existing, name)!r}, "
                    f"this fileset's is {getattr(description, name)!r}",
                    field=name,
                )
        for name in ("shape", "block_shape", "view_origin"):
            if not numpy.array_equal(getattr(existing, name), getattr(description, name)):
                raise DescriptionError(
                    f"cannot extend the export {dest_desc_path}: its {name} is "
                    f"{list(getattr(existing, name))}, "
                    f"this fileset's is {list(getattr(description, name))}",
                    field=name,
                )
        if numpy.dtype(existing.dtype) != dtype:
            raise DescriptionError(
                f"cannot extend the export {dest_desc_path}: its dtype is {numpy.dtype(existing.dtype)}, "
                f"this fileset's is {dtype}",
                field="dtype",
            )
        existing.view_shape = numpy.maximum(numpy.asarray(existing.view_shape, dtype=numpy.int64), view_shape)
        return existing
    dest = copy.deepcopy(description)
    dest.view_shape = numpy.asarray(view_shape, dtype=numpy.int64)
    dest.hash_id = None
    dest.dataset_root_dir = _export_root_name(description, blocks.layout.root)
    return dest


def _export_root_name(description: Any, root_dir: str) -> str:
    """The export's ``dataset_root_dir``: relative, and inside the export directory."""
    root = str(description.dataset_root_dir or ".")
    if not os.path.isabs(root):
        normalized = os.path.normpath(root)
        if normalized != ".." and not normalized.startswith(".." + os.sep):
            return root
    name = os.path.basename(os.path.normpath(root_dir))
    return name or "."
