"""RESTfulBlockwiseFileset views as lazy dask arrays whose chunks are the cache blocks: :func:`to_dask`."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import dask.config
import numpy as np

from lazyflow_rbfs import geometry
from lazyflow_rbfs.cache import RESTfulBlockwiseFileset
from lazyflow_rbfs.distributed.workers import _FilesetSpec, _spec_of, worker_fileset

if TYPE_CHECKING:  # pragma: no cover
    import dask.array

__all__ = ["to_dask"]


class _BlockSource:
    """An array-like over a fileset's view for ``dask.array.from_array``: ``shape``, ``dtype``, slicing.

    Pickles as its spec (reopened, once per process, by :func:`worker_fileset`); in the process that made
    it, it reads through the fileset it was given.
    """

    def __init__(
        self, spec: _FilesetSpec, shape: tuple[int, ...], dtype: np.dtype, fileset: Any = None
    ) -> None:
        self.spec = spec
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self._fileset = fileset

    def __reduce__(self):
        return (_BlockSource, (self.spec, self.shape, self.dtype))

    def __dask_tokenize__(self) -> Any:
        return ("lazyflow_rbfs", self.spec.key, self.shape, self.dtype.str)

    def __repr__(self) -> str:
        return f"<_BlockSource {self.spec!r} shape={self.shape} dtype={self.dtype.name}>"

    def _fileset_for_read(self) -> RESTfulBlockwiseFileset:
        if self._fileset is not None and not self._fileset.closed:
            return self._fileset
        return worker_fileset(self.spec)

    def __getitem__(self, key: Any) -> np.ndarray:
        start, stop, post, out_shape = _selection(key, self.shape)
        if math.prod(out_shape) == 0:
            return np.empty(out_shape, dtype=self.dtype)
        data = self._fileset_for_read().readData((start, stop))
        return data[post]


def _selection(key: Any, shape: tuple[int, ...]):
    """``(start, stop, post, out_shape)``: the bounding roi of ``key`` and what to take from it.

    ``key`` may hold ints, slices of any step and one ``...``.
    """
    key = geometry.expand_index(key, len(shape))
    start, stop, post, out_shape = [], [], [], []
    for k, n in zip(key, shape):
        if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            i = int(k) + n if int(k) < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"index {int(k)} is out of bounds for an axis of size {n}")
            start.append(i)
            stop.append(i + 1)
            post.append(0)
        elif isinstance(k, slice):
            r = range(*k.indices(n))
            out_shape.append(len(r))
            if len(r) == 0:
                start.append(0)
                stop.append(0)
                post.append(slice(0, 0))
                continue
            lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
            start.append(lo)
            stop.append(hi)
            end = r.stop - lo
            post.append(slice(r.start - lo, end if end >= 0 else None, r.step))
        else:
            raise TypeError(f"only integers, slices and '...' index a cache view, got {type(k).__name__}")
    return start, stop, tuple(post), tuple(out_shape)


def _block_chunks(shape: tuple[int, ...], block_shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """dask chunks along each axis: whole blocks, the last one clipped to the view."""
    chunks = []
    for n, b in zip(shape, block_shape):
        full, rest = divmod(int(n), int(b))
        chunks.append((int(b),) * full + ((rest,) if rest else ()))
    return tuple(chunks)


def to_dask(fileset_or_path: RESTfulBlockwiseFileset | str | os.PathLike, **options: Any) -> dask.array.Array:
    """A lazy dask array of the fileset's view whose chunks are exactly its cache blocks.

    Each chunk is read with ``readData`` where the task runs (downloading the block if it is missing):
    in this process through the given fileset, in worker processes through a fileset reopened there once
    per process (workers must share the cache directory and see the description's path). Building the
    graph costs no I/O and is lazy in the number of blocks.

    Parameters
    ----------
    fileset_or_path
        A fileset or the path of a composite description.
    **options
        Options to open the fileset with (``max_parallel``, ``timeout``, ``headers``...); they override
        a given fileset's own.

    Returns
    -------
    dask.array.Array
        Shape ``fileset.shape`` (the view), the fileset's dtype, chunks the block grid of the view
        (edge chunks clipped).

    Examples
    --------
    >>> x = to_dask("bock11.json")                                   # doctest: +SKIP
    >>> x[0:64].mean().compute()                                     # doctest: +SKIP
    """
    import dask.array as da
    from dask.base import tokenize

    spec, fileset = _spec_of(fileset_or_path, options)
    if fileset is not None:
        shape, dtype, block_shape = tuple(fileset.shape), np.dtype(fileset.dtype), tuple(fileset.block_shape)
    else:
        local = RESTfulBlockwiseFileset.readDescription(spec.path).local_description
        shape = tuple(int(n) for n in local.view_shape)
        dtype = np.dtype(local.dtype)
        block_shape = tuple(int(b) for b in local.block_shape)
    source = _BlockSource(spec, shape, dtype, fileset)
    return da.from_array(
        source,
        chunks=_block_chunks(shape, block_shape),
        name=f"rbfs-{tokenize(source)}",
        meta=np.empty((0,) * len(shape), dtype=dtype),
        asarray=False,
        fancy=False,
        inline_array=True,
    )
