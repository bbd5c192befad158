"""BlockFiles: how one block file is built and atomically put in place.

Every write goes to a ``*.partial`` temp file that is ``os.replace``-d onto the block file, so a reader
never sees half a block. Block files are built in memory and written with checked writes
(:mod:`lazyflow_rbfs.h5image`, :mod:`lazyflow_rbfs.atomic`), so a full disk is an error, never a
truncated block. HDF5 never writes to the disk here.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import h5py
import numpy

from lazyflow_rbfs import atomic, h5image
from lazyflow_rbfs.store.grid import BlockGrid, ints
from lazyflow_rbfs.store.handles import HandleCache
from lazyflow_rbfs.store.layout import BlockLayout, BlockPaths
from lazyflow_rbfs.store.rawread import RawLayout, raw_layout_from_image

__all__ = ["BlockFiles"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _vigra() -> Any:
    """The vigra module if importable (imported on first use only), else None."""
    try:
        import vigra  # noqa: PLC0415
    except ImportError:
        return None
    return vigra


class BlockFiles:
    """Creates block datasets as the description says and writes block files atomically.

    ``handles`` is told about every replaced file, so no reader keeps the old one.
    """

    def __init__(
        self, description: Any, grid: BlockGrid, layout: BlockLayout, handles: HandleCache, *, fsync: bool
    ) -> None:
        self._description = description
        self._grid = grid
        self._layout = layout
        self._handles = handles
        self.fsync = fsync
        self.dtype = numpy.dtype(description.dtype)
        chunks = description.chunks
        self._chunks = None if chunks is None else ints(chunks)
        self._skeletons: dict[tuple[str, tuple[int, ...]], tuple[list[tuple[int, bytes]], int]] = {}
        self._raw_layouts: dict[tuple[str, tuple[int, ...]], RawLayout] = {}

    def contiguous(self) -> bool:
        """Whether block datasets are contiguous (no chunks, no compression): we write their bytes."""
        return self._chunks is None and self._description.compression is None

    def create_dataset(
        self, f: h5py.File, name: str, shape: tuple[int, ...], data: Any = None, *, unwritten: bool = False
    ) -> h5py.Dataset:
        """Create dataset ``name`` as the description says (chunks clipped to ``shape``, compression...).

        ``unwritten`` (only for :meth:`contiguous` descriptions) allocates the space but writes nothing,
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
            dtype=self.dtype,
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
            dataset.attrs["axistags"] = vigra.defaultAxistags(self._grid.axes).toJSON()
        return dataset

    def write(self, paths: BlockPaths, block: numpy.ndarray, file_fd: int) -> None:
        """Replace the block file (in the directory ``file_fd``) with ``block``, atomically.

        An uncompressed block's metadata is built in memory and its voxels are written straight from
        ``block``; a chunked or compressed one is built whole in memory. The bytes go to a temp file with
        checked writes, fsynced (unless ``fsync=False``) and renamed onto the block file; on failure the
        temp file is removed and :class:`CacheWriteError` names the block file.
        """
        name = os.path.basename(paths.file_path)
        options = {"dir_fd": file_fd, "fsync": self.fsync, "shown": paths.file_path}
        try:
            if self.contiguous():
                block = numpy.ascontiguousarray(block, dtype=self.dtype)
                pages, offset = self._skeleton(paths.internal_path, block.shape)

                def fill(fd: int) -> None:
                    for position, metadata in pages:
                        atomic.pwrite_all(fd, metadata, position)
                    atomic.pwrite_all(fd, block, offset)

                atomic.write_file(name, fill, **options)
            else:
                data = h5image.build_image(
                    lambda f: self.create_dataset(f, paths.internal_path, block.shape, data=block),
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
                lambda f: self.create_dataset(f, internal_path, shape, unwritten=True)
            )
            hit = (list(image.pages()), offset)
            if len(self._skeletons) >= 64:
                self._skeletons.clear()
            self._skeletons[key] = hit
        return hit

    def raw_layout(self, internal_path: str, shape: tuple[int, ...]) -> RawLayout | None:
        """The exact file :meth:`write` makes for a block of ``shape`` (metadata bytes around the voxels),
        for :class:`~lazyflow_rbfs.store.rawread.RawBlocks`; None unless block files are contiguous."""
        if not self.contiguous():
            return None
        key = (internal_path, shape)
        hit = self._raw_layouts.get(key)
        if hit is None:
            pages, offset = self._skeleton(internal_path, shape)  # exactly what write() writes
            hit = raw_layout_from_image(pages, offset, shape, self.dtype)
            if len(self._raw_layouts) >= 64:
                self._raw_layouts.clear()
            self._raw_layouts[key] = hit
        return hit

    def load_for_update(self, paths: BlockPaths, disk_shape: tuple[int, ...]) -> numpy.ndarray:
        """The block's current voxels (zeros where there are none), to be modified and written again."""
        block = numpy.zeros(disk_shape, dtype=self.dtype)
        if not os.path.exists(paths.file_path):
            return block
        try:
            self._layout.check_confined(paths.file_path)
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
