"""Pure block geometry: rois, the block grid, and the projections a read or write loops over.

Nothing here touches files or the network. Vectors are 1-D ``numpy.int64`` arrays; block starts handed
out as keys are tuples of plain ``int`` so they hash, compare and format the same under numpy 1 and 2.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lazyflow_rbfs.errors import OutOfBoundsError

__all__ = [
    "Projection",
    "as_vector",
    "check_roi",
    "block_bounds",
    "iter_block_starts",
    "count_blocks",
    "projections",
    "roi_string",
    "block_dir_names",
    "to_slices",
    "index_to_roi",
    "expand_index",
    "block_projection",
    "overlap_slices",
]


def as_vector(
    values: Sequence[int] | np.ndarray, ndim: int | None = None, what: str = "vector"
) -> np.ndarray:
    """Return ``values`` as a 1-D int64 array, checking its length and that every entry is integral."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a sequence of integers, got {values!r}") from exc
    if arr.ndim != 1:
        raise TypeError(f"{what} must be a 1-D sequence of integers, got {values!r}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        elif arr.size:
            raise TypeError(f"{what} must hold integers, got {values!r}")
    arr = arr.astype(np.int64, copy=False)
    if ndim is not None and arr.shape[0] != ndim:
        raise OutOfBoundsError(
            f"{what} has {arr.shape[0]} entries but the volume has {ndim} axes: {values!r}"
        )
    return arr


def check_roi(roi: Sequence, shape: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``roi = (start, stop)`` against a volume of ``shape``.

    Returns
    -------
    (start, stop) as int64 vectors.

    Raises
    ------
    OutOfBoundsError
        Wrong number of axes, negative start, stop beyond ``shape``, reversed or zero-volume roi.
    """
    shape = np.asarray(shape, dtype=np.int64)
    try:
        start, stop = roi
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a roi is a pair (start, stop) of per-axis integers, got {roi!r}") from exc
    start = as_vector(start, len(shape), "roi start")
    stop = as_vector(stop, len(shape), "roi stop")
    if (start < 0).any():
        raise OutOfBoundsError(f"roi {_fmt(start, stop)} starts below zero")
    if (stop <= start).any():
        raise OutOfBoundsError(f"roi {_fmt(start, stop)} is reversed or has zero volume")
    if (stop > shape).any():
        raise OutOfBoundsError(f"roi {_fmt(start, stop)} exceeds the volume shape {[int(s) for s in shape]}")
    return start, stop


def _fmt(start: np.ndarray, stop: np.ndarray) -> str:
    return roi_string(start, stop)


def block_bounds(
    block_start: Sequence[int] | np.ndarray, block_shape: np.ndarray, shape: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The block starting at ``block_start``, clipped to ``shape``."""
    start = np.asarray(block_start, dtype=np.int64)
    stop = np.minimum(start + np.asarray(block_shape, dtype=np.int64), np.asarray(shape, dtype=np.int64))
    return start, stop


def _axis_starts(start: np.ndarray, stop: np.ndarray, block_shape: np.ndarray) -> list[range]:
    first = (start // block_shape) * block_shape
    return [range(int(f), int(e), int(b)) for f, e, b in zip(first, stop, block_shape)]


def iter_block_starts(
    start: np.ndarray, stop: np.ndarray, block_shape: np.ndarray
) -> Iterator[tuple[int, ...]]:
    """Yield the start of every block of the grid ``block_shape`` that intersects ``[start, stop)``.

    C order (last axis fastest); lazy, so a roi of millions of blocks costs no memory.
    """
    block_shape = np.asarray(block_shape, dtype=np.int64)
    return itertools.product(*_axis_starts(np.asarray(start), np.asarray(stop), block_shape))


def count_blocks(start: np.ndarray, stop: np.ndarray, block_shape: np.ndarray) -> int:
    """Number of blocks that :func:`iter_block_starts` yields."""
    block_shape = np.asarray(block_shape, dtype=np.int64)
    return math.prod(len(r) for r in _axis_starts(np.asarray(start), np.asarray(stop), block_shape))


@dataclass(frozen=True)
class Projection:
    """How one block takes part in a roi transfer.

    ``block_start``/``block_stop`` bound the block (clipped to the volume); ``block_slices`` select the
    needed part inside the block's own array; ``out_slices`` say where that part goes in the roi's array.
    """

    block_start: tuple[int, ...]
    block_stop: tuple[int, ...]
    block_slices: tuple[slice, ...]
    out_slices: tuple[slice, ...]


def projections(
    start: np.ndarray, stop: np.ndarray, block_shape: np.ndarray, shape: np.ndarray
) -> Iterator[Projection]:
    """Yield a :class:`Projection` for every block intersecting ``[start, stop)`` (C order)."""
    start = np.asarray(start, dtype=np.int64)
    stop = np.asarray(stop, dtype=np.int64)
    block_shape = np.asarray(block_shape, dtype=np.int64)
    shape = np.asarray(shape, dtype=np.int64)
    # Per axis, the pieces are independent: compute them once and combine.
    per_axis = []
    for s, e, b, n in zip(start.tolist(), stop.tolist(), block_shape.tolist(), shape.tolist()):
        pieces = []
        for bs in range((s // b) * b, e, b):
            be = min(bs + b, n)
            lo, hi = max(s, bs), min(e, be)
            pieces.append((bs, be, slice(lo - bs, hi - bs), slice(lo - s, hi - s)))
        per_axis.append(pieces)
    for combo in itertools.product(*per_axis):
        yield Projection(
            tuple(p[0] for p in combo),
            tuple(p[1] for p in combo),
            tuple(p[2] for p in combo),
            tuple(p[3] for p in combo),
        )


def block_projection(
    block_start: Sequence[int],
    block_shape: np.ndarray,
    shape: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """``(block_slices, out_slices)`` of one block that intersects ``[start, stop)`` (see Projection)."""
    block_stop = [min(int(bs) + int(b), int(n)) for bs, b, n in zip(block_start, block_shape, shape)]
    return overlap_slices(block_start, block_stop, start, stop)


def overlap_slices(
    box_start: Sequence[int] | np.ndarray,
    box_stop: Sequence[int] | np.ndarray,
    start: Sequence[int] | np.ndarray,
    stop: Sequence[int] | np.ndarray,
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Where the box ``[box_start, box_stop)`` and the roi ``[start, stop)`` overlap, as
    ``(box_slices, out_slices)``: the part inside the box's own array, and where it goes in the roi's.

    The two must intersect (a block of the roi, a remote chunk it touches).
    """
    box_slices, out_slices = [], []
    for bs, be, s, e in zip(box_start, box_stop, start, stop):
        bs, be, s, e = int(bs), int(be), int(s), int(e)
        lo, hi = max(s, bs), min(e, be)
        box_slices.append(slice(lo - bs, hi - bs))
        out_slices.append(slice(lo - s, hi - s))
    return tuple(box_slices), tuple(out_slices)


def roi_string(start: Sequence[int] | np.ndarray, stop: Sequence[int] | np.ndarray) -> str:
    """Upstream's ``roiString``: ``"([a, b, c], [d, e, f])"`` with plain ints, whatever numpy prints."""
    return f"({[int(x) for x in start]}, {[int(x) for x in stop]})"


def block_dir_names(axes: str, disk_start: Sequence[int] | np.ndarray) -> list[str]:
    """Directory components of a block: ``["z_00000000", "y_00000256", ...]`` (disk coordinates)."""
    return [f"{axis}_{int(s):08d}" for axis, s in zip(axes, disk_start)]


def to_slices(start: Sequence[int] | np.ndarray, stop: Sequence[int] | np.ndarray) -> tuple[slice, ...]:
    """``(start, stop)`` as a tuple of slices."""
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))


def expand_index(key: Any, ndim: int) -> tuple[Any, ...]:
    """A numpy-style index as one item per axis: ``...`` expanded, missing trailing axes taken whole.

    Raises
    ------
    IndexError
        More than one ``...``, or more items than ``ndim`` axes.
    """
    items = key if isinstance(key, tuple) else (key,)
    # Compare by identity: ``in``/``index`` would use ==, which a numpy array answers element-wise.
    ellipses = [i for i, item in enumerate(items) if item is Ellipsis]
    if len(ellipses) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if ellipses:
        at = ellipses[0]
        fill = ndim - (len(items) - 1)
        if fill < 0:
            raise IndexError(f"too many indices: the volume has {ndim} axes, got {len(items) - 1}")
        items = items[:at] + (slice(None),) * fill + items[at + 1 :]
    if len(items) > ndim:
        raise IndexError(f"too many indices: the volume has {ndim} axes, got {len(items)}")
    return items + (slice(None),) * (ndim - len(items))


def _negative(step: Any) -> bool:
    return isinstance(step, (int, np.integer)) and step < 0


def index_to_roi(
    key: Any, shape: Sequence[int] | np.ndarray, *, allow_empty: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Translate a numpy-style index into a roi.

    Accepts ints (negative ones count from the end; the axis is dropped), slices with step 1 (clamped
    like numpy) and one ``...``. Missing trailing axes are taken whole. With ``allow_empty`` a slice that
    selects nothing (``0:0``, ``5:3``, past the end) gives ``start == stop`` on its axis, as numpy and
    h5py select an empty array; without it, it is an error.

    Returns
    -------
    (start, stop, squeezed_axes)

    Raises
    ------
    TypeError
        Steps other than 1, arrays, lists, ``None``, floats or other index types.
    IndexError
        Too many indices, an int out of range (``OutOfBoundsError``), or an empty selection.
    """
    shape = [int(n) for n in shape]
    items = expand_index(key, len(shape))
    start, stop, squeezed = [], [], []
    for axis, (item, n) in enumerate(zip(items, shape)):
        if isinstance(item, (bool, np.bool_)):
            raise TypeError(f"boolean index on axis {axis} is not supported")
        if isinstance(item, (int, np.integer)):
            i = int(item)
            if not -n <= i < n:
                raise OutOfBoundsError(f"index {i} is out of range for axis {axis} of size {n}")
            i = i + n if i < 0 else i
            start.append(i)
            stop.append(i + 1)
            squeezed.append(axis)
        elif isinstance(item, slice):
            if item.step not in (None, 1):
                hint = (
                    " (read forward and reverse with numpy: vol[a:b][::-1])" if _negative(item.step) else ""
                )
                raise TypeError(
                    f"only step-1 slices are supported, got step {item.step!r} on axis {axis}{hint}"
                )
            for bound in (item.start, item.stop):
                if bound is not None and not isinstance(bound, (int, np.integer)) or isinstance(bound, bool):
                    raise TypeError(f"slice bounds must be integers, got {item!r} on axis {axis}")
            a, b, _ = item.indices(n)
            if b <= a and allow_empty:
                b = a
            elif b <= a:
                raise OutOfBoundsError(f"slice {item!r} selects nothing on axis {axis} of size {n}")
            start.append(a)
            stop.append(b)
        else:
            raise TypeError(f"unsupported index {item!r} on axis {axis}: use ints, step-1 slices and '...'")
    return np.array(start, dtype=np.int64), np.array(stop, dtype=np.int64), tuple(squeezed)
