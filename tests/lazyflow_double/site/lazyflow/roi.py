"""Conversions between numpy-style keys and ``(start, stop)`` integer vectors."""

from __future__ import annotations

import numpy as np


def sliceToRoi(key, shape) -> tuple[np.ndarray, np.ndarray]:
    """``(start, stop)`` as int64 vectors for a key of ints, step-1 slices and at most one ``...``.

    Ints keep their axis (a request always returns an array of ``len(shape)`` dimensions). Negative
    values count from the end; nothing is clipped, so an out-of-range key reaches ``execute`` as is.
    """
    shape = tuple(int(n) for n in shape)
    if not isinstance(key, tuple):
        key = (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("a key may contain at most one '...'")
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices: {len(key)} for {len(shape)} axes")
    key = key + (slice(None),) * (len(shape) - len(key))
    start, stop = [], []
    for k, n in zip(key, shape):
        if isinstance(k, slice):
            if k.step not in (None, 1):
                raise IndexError(f"lazyflow slots only support step-1 slices, got {k!r}")
            a = 0 if k.start is None else int(k.start)
            b = n if k.stop is None else int(k.stop)
            a, b = (a + n if a < 0 else a), (b + n if b < 0 else b)
        elif isinstance(k, (int, np.integer)):
            a = int(k) + n if int(k) < 0 else int(k)
            b = a + 1
        else:
            raise TypeError(f"unsupported index {k!r}")
        start.append(a)
        stop.append(b)
    return np.array(start, dtype=np.int64), np.array(stop, dtype=np.int64)


def roiToSlice(start, stop) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))


def roiToShape(start, stop) -> tuple[int, ...]:
    return tuple(int(b) - int(a) for a, b in zip(start, stop))
