"""BlockGrid: the block grid of one fileset as a value, built once from its description.

Shapes are kept both as tuples of ``int`` (keys, messages, per-axis loops) and as ``int64`` vectors (the
pure functions of :mod:`lazyflow_rbfs.geometry`), so nothing converts them again on every call.
Nothing here touches files.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy

from lazyflow_rbfs import geometry
from lazyflow_rbfs.errors import OutOfBoundsError

__all__ = ["BlockGrid", "ints"]

Roi = Sequence[Sequence[int]]


def ints(values: Any) -> tuple[int, ...]:
    """``values`` as a tuple of plain ``int`` (``TypeError`` for non-integers)."""
    return tuple(operator.index(v) for v in values)


def _vector(values: tuple[int, ...]) -> numpy.ndarray:
    vector = numpy.asarray(values, dtype=numpy.int64)
    vector.setflags(write=False)
    return vector


@dataclass(frozen=True)
class BlockGrid:
    """Axes, on-disk shape, block shape and view (origin, shape) of a fileset.

    The ``*_v`` attributes are the same shapes as read-only ``int64`` vectors.
    """

    axes: str
    disk_shape: tuple[int, ...]
    block_shape: tuple[int, ...]
    view_origin: tuple[int, ...]
    view_shape: tuple[int, ...]
    disk_shape_v: numpy.ndarray = field(init=False, repr=False, compare=False)
    block_shape_v: numpy.ndarray = field(init=False, repr=False, compare=False)
    view_origin_v: numpy.ndarray = field(init=False, repr=False, compare=False)
    view_shape_v: numpy.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("disk_shape", "block_shape", "view_origin", "view_shape"):
            object.__setattr__(self, name + "_v", _vector(getattr(self, name)))

    @classmethod
    def of(cls, description: Any) -> BlockGrid:
        """The grid of a parsed local description."""
        d = description
        return cls(
            axes=str(d.axes),
            disk_shape=ints(d.shape),
            block_shape=ints(d.block_shape),
            view_origin=ints(d.view_origin),
            view_shape=ints(d.view_shape),
        )

    @property
    def ndim(self) -> int:
        return len(self.axes)

    # -- view rois and block starts --

    def check_roi(self, roi: Roi) -> tuple[numpy.ndarray, numpy.ndarray]:
        """``roi`` checked against the view: ``(start, stop)`` int64 vectors."""
        return geometry.check_roi(roi, self.view_shape_v)

    def full_roi(self, roi: Roi | None) -> tuple[numpy.ndarray, numpy.ndarray]:
        """``roi`` checked, or the whole view when it is None."""
        if roi is None:
            return numpy.zeros(self.ndim, dtype=numpy.int64), self.view_shape_v.copy()
        return self.check_roi(roi)

    def check_block_start(self, block_start: Any) -> tuple[int, ...]:
        """``block_start`` as ints, checked to be the view start of a block."""
        try:
            start = ints(block_start)
        except TypeError as exc:
            raise OutOfBoundsError(
                f"block start must be a sequence of integers, got {block_start!r}"
            ) from exc
        if len(start) != self.ndim:
            raise OutOfBoundsError(
                f"block start {start} has {len(start)} coordinates; expected {self.ndim} (axes {self.axes!r})"
            )
        for s, b, v in zip(start, self.block_shape, self.view_shape):
            if s < 0 or s >= v or s % b:
                raise OutOfBoundsError(
                    f"{start} is not the start of a block of the view: expected multiples of "
                    f"{self.block_shape} inside the view shape {self.view_shape}"
                )
        return start

    def iter_block_starts(self, roi: Roi | None = None) -> Iterator[tuple[int, ...]]:
        """View starts of the blocks intersecting ``roi`` (default: the view), C order."""
        start, stop = self.full_roi(roi)
        for block_start in geometry.iter_block_starts(start, stop, self.block_shape_v):
            yield ints(block_start)

    def count_blocks(self, roi: Roi | None = None) -> int:
        start, stop = self.full_roi(roi)
        return int(geometry.count_blocks(start, stop, self.block_shape_v))

    def projections(self, start: numpy.ndarray, stop: numpy.ndarray) -> Iterator[geometry.Projection]:
        """The (block, block slices, out slices) projections of the view roi ``[start, stop)``."""
        return geometry.projections(start, stop, self.block_shape_v, self.view_shape_v)

    def view_block_roi(self, start: tuple[int, ...]) -> tuple[numpy.ndarray, numpy.ndarray]:
        """View ``(start, stop)`` of the block at the (checked) view ``start``, clipped to the view."""
        stop = tuple(min(s + b, v) for s, b, v in zip(start, self.block_shape, self.view_shape))
        return numpy.array(start, dtype=numpy.int64), numpy.array(stop, dtype=numpy.int64)

    # -- disk coordinates --

    def disk_bounds(self, start: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Disk ``(start, stop)`` of the block at the (checked) view ``start``, clipped to the disk shape."""
        disk_start = tuple(s + o for s, o in zip(start, self.view_origin))
        disk_stop = tuple(min(d + b, n) for d, b, n in zip(disk_start, self.block_shape, self.disk_shape))
        return disk_start, disk_stop

    def disk_block_shape(self, start: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the block file of the block at the (checked) view ``start``."""
        disk_start, disk_stop = self.disk_bounds(start)
        return tuple(b - a for a, b in zip(disk_start, disk_stop))

    def check_block_aligned(self, view_start: numpy.ndarray, view_stop: numpy.ndarray, what: str) -> None:
        """Raise :class:`OutOfBoundsError` unless the view roi starts on a block boundary (disk
        coordinates) and stops on one or on the edge of the view or of the dataset."""
        abs_start, abs_stop = view_start + self.view_origin_v, view_stop + self.view_origin_v
        bs = self.block_shape_v
        if (abs_start % bs).any():
            raise OutOfBoundsError(
                f"{what} needs a roi starting on a block boundary (multiples of {self.block_shape} "
                f"in disk coordinates); got start {tuple(int(x) for x in abs_start)}"
            )
        aligned_stop = (
            (abs_stop % bs == 0) | (abs_stop == self.disk_shape_v) | (view_stop == self.view_shape_v)
        )
        if not aligned_stop.all():
            raise OutOfBoundsError(
                f"{what} needs a roi stopping on a block boundary or the dataset edge; got stop "
                f"{tuple(int(x) for x in abs_stop)} "
                f"(block shape {self.block_shape}, shape {self.disk_shape})"
            )
