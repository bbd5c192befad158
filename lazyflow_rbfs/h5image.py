"""HDF5 files built where a failed write cannot go unseen.

When HDF5 itself writes to a file and the disk fills, the failure surfaces in ``H5Fclose``: h5py may
ignore it (a truncated file then looks fine) or the process may crash. So this package never lets HDF5
write to disk directly:

* :func:`build_image` builds a small file (a cache block) entirely in memory with HDF5's ``core``
  driver; the caller writes the bytes with checked writes (:mod:`lazyflow_rbfs.atomic`).
* :func:`skeleton` (and :func:`contiguous_skeleton`) builds only the metadata of a file whose one dataset
  is contiguous and allocated but never written (no fill), and reports where its raw data goes: the
  caller writes the metadata and then the data itself, from the caller's buffer or slab by slab, at that
  offset. For uncompressed blocks this costs no more than letting HDF5 write the file.
* :class:`SparseFile` is the file object behind both the skeleton and larger files HDF5 must write
  itself (compressed exports): HDF5 is never told about a failed write, so it always closes cleanly;
  the failure is kept in :attr:`SparseFile.error` for the caller to raise.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import h5py
import numpy

from lazyflow_rbfs.atomic import pwrite_all

__all__ = [
    "build_image",
    "unwritten_contiguous",
    "skeleton",
    "contiguous_skeleton",
    "write_skeleton",
    "SparseFile",
]

_PAGE = 4096
_image_names = itertools.count()


def build_image(populate: Callable[[h5py.File], Any], *, size_hint: int = 0) -> bytes:
    """The bytes of a new HDF5 file that ``populate(file)`` fills, built in memory only.

    ``size_hint`` (the expected size) lets the memory buffer grow in one step.
    """
    increment = max(64 * 1024, size_hint + 16 * 1024)
    name = f"rbfs-image-{os.getpid()}-{next(_image_names)}.h5"  # never touches the disk
    f = h5py.File(name, "w", driver="core", backing_store=False, block_size=increment)
    try:
        populate(f)
        f.flush()
        return f.id.get_file_image()
    finally:
        f.close()


def unwritten_contiguous() -> h5py.h5p.PropDCID:
    """Dataset creation properties for :func:`skeleton`: contiguous, space allocated at creation, never
    filled (pass as ``create_dataset(..., dcpl=unwritten_contiguous())``, without chunks or filters)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def skeleton(populate: Callable[[h5py.File], h5py.Dataset]) -> tuple[SparseFile, int]:
    """An in-memory HDF5 file whose data the caller writes itself.

    ``populate(file)`` creates the one dataset with :func:`unwritten_contiguous` properties (and any
    attributes) and returns it. Returns the image and the byte offset of the dataset's raw data (C
    order, the dataset's dtype). The image's :meth:`SparseFile.pages` are the metadata: write them first
    (:func:`write_skeleton`), then the data at the offset; the file is complete at :attr:`SparseFile.size`
    bytes.
    """
    image = SparseFile()
    with h5py.File(image, "w") as f:
        offset = populate(f).id.get_offset()
    if offset is None:  # an empty dataset has no storage; nothing to write
        offset = image.size
    return image, int(offset)


def contiguous_skeleton(
    name: str, shape: tuple[int, ...], dtype: Any, attrs: Mapping[str, Any] | None = None
) -> tuple[SparseFile, int]:
    """:func:`skeleton` of a file with the one dataset ``name`` and the attributes ``attrs``."""

    def populate(f: h5py.File) -> h5py.Dataset:
        dataset = f.create_dataset(name, shape=shape, dtype=numpy.dtype(dtype), dcpl=unwritten_contiguous())
        for key, value in (attrs or {}).items():
            dataset.attrs[key] = value
        return dataset

    return skeleton(populate)


class SparseFile(io.RawIOBase):
    """A seekable binary file for h5py's ``fileobj`` driver that never reports a failed write.

    Without ``fd`` the content lives in memory, in 4 KiB pages; what was never written reads as zeros and
    costs nothing, so a dataset's space can be allocated without being held.

    With ``fd`` (a file opened for reading and writing, empty) writes go to it with checked ``pwrite``.
    The first ``OSError`` is kept in :attr:`error`; from then on writes are kept in memory instead, so HDF5
    reads back what it wrote and closes cleanly. The caller stops producing data as soon as :attr:`error`
    is set, and raises it after closing the HDF5 file.
    """

    def __init__(self, fd: int | None = None) -> None:
        super().__init__()
        self._fd = fd
        self._pages: dict[int, bytearray] = {}
        self._pos = 0
        self._size = 0
        self.error: OSError | None = None

    # -- io.RawIOBase --

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        elif whence == io.SEEK_END:
            self._pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        length = len(view)
        pos = self._pos
        view[:] = bytes(length)
        if self._fd is not None and pos < self._size:
            try:
                data = os.pread(self._fd, min(length, self._size - pos), pos)
            except OSError as exc:  # reported by the caller, never to HDF5
                self.error = self.error or exc
                data = b""
            view[: len(data)] = data
        if self._pages:
            for page_index in range(pos // _PAGE, (pos + length - 1) // _PAGE + 1):
                page = self._pages.get(page_index)
                if page is None:
                    continue
                page_start = page_index * _PAGE
                lo = max(pos, page_start)
                hi = min(pos + length, page_start + _PAGE)
                view[lo - pos : hi - pos] = page[lo - page_start : hi - page_start]
        self._pos = pos + length
        return length

    def write(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        length = len(view)
        pos = self._pos
        if self._fd is not None and self.error is None:
            try:
                pwrite_all(self._fd, view, pos)
            except OSError as exc:
                self.error = exc
                self._keep(view, pos)
        else:
            self._keep(view, pos)
        self._pos = pos + length
        self._size = max(self._size, self._pos)
        return length

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self._fd is not None and self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                self.error = exc
        for page_index in [i for i in self._pages if i * _PAGE >= size]:
            del self._pages[page_index]
        last = self._pages.get(size // _PAGE)
        if last is not None:
            last[size % _PAGE :] = bytes(_PAGE - size % _PAGE)
        self._size = size
        return size

    def flush(self) -> None:
        pass

    # -- the content --

    @property
    def size(self) -> int:
        """The file's length in bytes."""
        return self._size

    def pages(self) -> Iterator[tuple[int, bytes]]:
        """``(offset, bytes)`` of the content held in memory, in file order (4 KiB pages, clipped to
        :attr:`size`); bytes never written are zeros."""
        for page_index in sorted(self._pages):
            start = page_index * _PAGE
            if start < self._size:
                yield start, bytes(self._pages[page_index][: self._size - start])

    def _keep(self, view: memoryview, pos: int) -> None:
        end = pos + len(view)
        for page_index in range(pos // _PAGE, (end - 1) // _PAGE + 1 if end > pos else pos // _PAGE):
            page = self._pages.get(page_index)
            page_start = page_index * _PAGE
            if page is None:
                page = bytearray(_PAGE)
                if self._fd is not None and page_start < self._size:
                    # Writes before the failure are on disk: keep the rest of this page consistent.
                    try:
                        on_disk = os.pread(self._fd, _PAGE, page_start)
                    except OSError:  # the file is discarded anyway (self.error is set)
                        on_disk = b""
                    page[: len(on_disk)] = on_disk
                self._pages[page_index] = page
            lo = max(pos, page_start)
            hi = min(end, page_start + _PAGE)
            page[lo - page_start : hi - page_start] = view[lo - pos : hi - pos]


def write_skeleton(fd: int, image: SparseFile) -> None:
    """Write the metadata pages of a :func:`contiguous_skeleton` to ``fd`` (before its data)."""
    for offset, data in image.pages():
        pwrite_all(fd, data, offset)
