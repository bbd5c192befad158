"""Region-of-interest types (only ``SubRegion``, the one array slots use)."""

from __future__ import annotations

import numpy as np

from lazyflow.roi import roiToSlice, sliceToRoi


class Roi:
    def __init__(self, slot) -> None:
        self.slot = slot


class SubRegion(Roi):
    """``start``/``stop`` are 1-D int64 numpy vectors (never lists) in the slot's coordinates."""

    def __init__(self, slot, start=None, stop=None, pslice=None) -> None:
        super().__init__(slot)
        if pslice is not None or (start is not None and stop is None):
            self.start, self.stop = sliceToRoi(start if pslice is None else pslice, slot.meta.shape)
        elif start is None:
            self.start, self.stop = sliceToRoi(slice(None), slot.meta.shape)
        else:
            self.start = np.array(start, dtype=np.int64).reshape(-1)
            self.stop = np.array(stop, dtype=np.int64).reshape(-1)
        if self.start.shape != self.stop.shape:
            raise ValueError(f"roi start {self.start} and stop {self.stop} differ in length")
        self.dim = len(self.start)

    def toSlice(self) -> tuple[slice, ...]:
        return roiToSlice(self.start, self.stop)

    def __str__(self) -> str:
        return f"SubRegion: start '{list(self.start)}' stop '{list(self.stop)}'"

    __repr__ = __str__
