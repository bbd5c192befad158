"""Region-of-interest types (only ``SubRegion``, the one array slots use).

As in ``lazyflow/rtype.py``: ``start``/``stop`` are :class:`~lazyflow.roi.TinyVector` (a list subclass),
built with ``sliceToRoi`` from a key, or ``TinyVector(start)``/``TinyVector(stop)`` when given directly.
"""

from __future__ import annotations

from lazyflow.roi import TinyVector, roiToSlice, sliceToRoi


class Roi:
    def __init__(self, slot) -> None:
        self.slot = slot


class SubRegion(Roi):
    def __init__(self, slot, start=None, stop=None, pslice=None) -> None:
        super().__init__(slot)
        if pslice is not None or (start is not None and stop is None):
            self.start, self.stop = sliceToRoi(start if pslice is None else pslice, slot.meta.shape)
        elif start is None:
            self.start, self.stop = sliceToRoi(slice(None), slot.meta.shape)
        else:
            self.start = TinyVector(start)
            self.stop = TinyVector(stop)
        self.dim = len(self.start)

    def toSlice(self) -> tuple[slice, ...]:
        return roiToSlice(self.start, self.stop)

    def __str__(self) -> str:
        return f"Subregion: start '{self.start}' stop '{self.stop}'"

    __repr__ = __str__
