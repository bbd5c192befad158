"""RawBlocks: read the voxels of a contiguous block file with plain ``pread``, without opening it in HDF5.

A block file this package writes for a description without chunks or compression is fully determined by
the block's internal path, shape and dtype (and the dataset attributes the description asks for): the
same metadata bytes (:meth:`BlockFiles.raw_layout`, the writer's own skeleton) around one contiguous run
of voxels at a known offset. A file whose every byte outside that run equals those metadata bytes, and
whose size is the skeleton's, IS that HDF5 file: HDF5 would find the dataset at that offset, with that
shape and dtype, and nothing else in it. So after checking that once per file (the two metadata ranges:
two ``pread`` calls), the block's voxels are read with ``preadv`` into a reused buffer (or straight into
the output when the block fills a contiguous part of it) and copied out with numpy. That costs a few
system calls, against about 0.5 ms of HDF5 file open, lookup and hyperslab selection per block for a
reader that has no handle open yet (a new process, a new fileset object).

Any other file (upstream lazyflow's, chunked or compressed datasets, other attributes, a damaged or
truncated file) is not recognised, and the caller reads it through HDF5 as before, with the same errors.
A file is opened with ``O_NOFOLLOW`` and checked to stay inside the cache root (``confine``) before it is
first trusted; files are remembered by ``(st_dev, st_ino, st_mtime_ns, st_size)``, so a replaced or
modified file is checked again.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy

__all__ = ["RawBlocks", "RawLayout", "raw_layout_from_image"]

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TRUSTED_MAX = 65536  # file identities remembered as checked (bounded; cleared when full)


class RawLayout:
    """Where the voxels of a contiguous block file are, and the exact bytes around them."""

    __slots__ = ("head", "offset", "nbytes", "tail", "size", "shape", "dtype")

    def __init__(self, head: bytes, tail: bytes, shape: tuple[int, ...], dtype: numpy.dtype) -> None:
        self.head = head  # bytes [0, offset)
        self.tail = tail  # bytes [offset + nbytes, size)
        self.shape = shape
        self.dtype = dtype
        self.offset = len(head)
        self.nbytes = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
        self.size = self.offset + self.nbytes + len(tail)


class RawBlocks:
    """Reads recognised contiguous block files with ``pread`` (see the module docstring).

    Parameters
    ----------
    layout
        ``layout(internal_path, shape) -> RawLayout | None``: the file a block of that shape would be,
        or None when block files are not contiguous.
    confine
        Raises ``OSError`` for a path that leads out of the cache root.
    """

    def __init__(
        self,
        layout: Callable[[str, tuple[int, ...]], RawLayout | None],
        confine: Callable[[str], None],
    ) -> None:
        self._layout = layout
        self._confine = confine
        self._trusted: set[tuple] = set()
        self._local = threading.local()

    def _scratch(self, nbytes: int) -> numpy.ndarray:
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = numpy.empty(nbytes, dtype=numpy.uint8)
            self._local.buffer = buffer
        return buffer

    def read(
        self,
        path: str,
        internal_path: str,
        shape: tuple[int, ...],
        block_slices: tuple[slice, ...],
        out: numpy.ndarray,
        out_slices: tuple[slice, ...],
    ) -> bool | None:
        """Copy ``block[block_slices]`` of the block file ``path`` into ``out[out_slices]``.

        Returns ``None`` if the file is not a recognised contiguous block file (nothing was copied: read
        it through HDF5), else whether the file changed (size, mtime) while it was read: published block
        files are never written again, so a change means it was overwritten in place and what was copied
        cannot be trusted. Raises ``OSError`` when the file cannot be opened (missing, a symbolic link,
        outside the cache root) or ends early while being read.
        """
        layout = self._layout(internal_path, shape)
        if layout is None or layout.dtype != out.dtype:
            return None
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
        try:
            st = os.fstat(fd)
            key = _identity(st)
            if key not in self._trusted:
                if st.st_size != layout.size or not self._matches(fd, layout):
                    return None
                self._confine(path)
                if len(self._trusted) >= _TRUSTED_MAX:
                    self._trusted.clear()
                self._trusted.add(key)
            self._copy(fd, layout, block_slices, out, out_slices)
            return key != _identity(os.fstat(fd))
        finally:
            os.close(fd)

    @staticmethod
    def _matches(fd: int, layout: RawLayout) -> bool:
        if os.pread(fd, layout.offset, 0) != layout.head:
            return False
        return os.pread(fd, len(layout.tail), layout.offset + layout.nbytes) == layout.tail

    def _copy(
        self,
        fd: int,
        layout: RawLayout,
        block_slices: tuple[slice, ...],
        out: numpy.ndarray,
        out_slices: tuple[slice, ...],
    ) -> None:
        shape = layout.shape
        itemsize = layout.dtype.itemsize
        # The needed part spans, in C order, from its first element to its last: read that run only.
        starts = [s.start for s in block_slices]
        stops = [s.stop for s in block_slices]
        if any(a >= b for a, b in zip(starts, stops)):
            return
        strides = [itemsize] * len(shape)
        for axis in range(len(shape) - 2, -1, -1):
            strides[axis] = strides[axis + 1] * shape[axis + 1]
        first = sum(a * s for a, s in zip(starts, strides))
        last = sum((b - 1) * s for b, s in zip(stops, strides)) + itemsize
        span = last - first
        target = out[out_slices]
        whole_rows = all(a == 0 and b == n for a, b, n in zip(starts[1:], stops[1:], shape[1:]))
        if whole_rows and target.flags.c_contiguous and target.nbytes == span:
            _pread_into(fd, memoryview(target.reshape(-1).view(numpy.uint8)), layout.offset + first)
            return
        planes = stops[0] - starts[0]
        if len(shape) > 1 and planes > 1 and span > 2 * target.nbytes:
            # A thin part of several planes: read each plane's part, not the planes in between.
            inner = first - starts[0] * strides[0]
            part = span - (planes - 1) * strides[0]
            scratch = self._scratch(planes * part)[: planes * part]
            view = memoryview(scratch)
            for i in range(planes):
                position = layout.offset + (starts[0] + i) * strides[0] + inner
                _pread_into(fd, view[i * part : (i + 1) * part], position)
            strides[0] = part
        else:
            scratch = self._scratch(span)[:span]
            _pread_into(fd, memoryview(scratch), layout.offset + first)
        region = numpy.lib.stride_tricks.as_strided(
            scratch.view(layout.dtype),
            shape=tuple(b - a for a, b in zip(starts, stops)),
            strides=tuple(strides),
            writeable=False,
        )
        target[...] = region


def _identity(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _pread_into(fd: int, view: memoryview, position: int) -> None:
    """Fill ``view`` from ``fd`` at ``position``; ``OSError`` if the file ends first."""
    done = 0
    total = len(view)
    while done < total:
        n = os.preadv(fd, [view[done:]], position + done)
        if n <= 0:
            raise OSError(errno.EIO, f"the file ended {total - done} bytes early while being read")
        done += n


def raw_layout_from_image(
    pages: Iterable[tuple[int, bytes]], offset: int, shape: tuple[int, ...], dtype: Any
) -> RawLayout:
    """A :class:`RawLayout` from the metadata ``pages`` (``(position, bytes)``, clipped to the file's end)
    of a skeleton whose voxels start at ``offset``."""
    dtype = numpy.dtype(dtype)
    nbytes = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
    pages = list(pages)
    size = max([offset + nbytes] + [position + len(data) for position, data in pages])
    image = bytearray(size)
    for position, data in pages:
        image[position : position + len(data)] = data
    if image[offset : offset + nbytes].strip(b"\x00"):  # the skeleton never writes voxels
        raise ValueError("the skeleton holds bytes inside its data region")
    return RawLayout(bytes(image[:offset]), bytes(image[offset + nbytes :]), tuple(shape), dtype)
