"""Conversions between numpy-style keys and ``(start, stop)`` vectors, as lazyflow's ``roi`` module does them.

Modelled from ``lazyflow/roi.py``:

* ``TinyVector`` is a ``list`` subclass with element-wise arithmetic and comparisons (a comparison returns
  another ``TinyVector``, so ``a == b`` is truthy whenever the vectors are non-empty). This, not a numpy
  array, is what ``roi.start``/``roi.stop`` are in ``execute``.
* ``sliceToRoi`` does **not** wrap negative indices and does **not** clip to the shape: ``-3`` stays
  ``-3`` and ``0:1000`` stays ``[0, 1000)``, so such keys reach ``execute`` as given. An int ``k`` becomes
  ``[k, k + 1)`` and, as in lazyflow, so does an empty slice ``k:k``. Only ``...`` and a missing trailing
  axis are expanded.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable


def _elementwise(op, reflected: bool = False):
    def method(self, other):
        if isinstance(other, Iterable):
            pairs = zip(other, self) if reflected else zip(self, other)
            return TinyVector(op(a, b) for a, b in pairs)
        return TinyVector(op(other, a) if reflected else op(a, other) for a in self)

    return method


class TinyVector(list):
    """A list with element-wise ``+ - * // %`` and element-wise comparisons."""

    __slots__ = ()

    __add__ = __radd__ = _elementwise(operator.add)
    __sub__ = _elementwise(operator.sub)
    __rsub__ = _elementwise(operator.sub, reflected=True)
    __mul__ = __rmul__ = _elementwise(operator.mul)
    __floordiv__ = _elementwise(operator.floordiv)
    __mod__ = _elementwise(operator.mod)
    __eq__ = _elementwise(operator.eq)
    __ne__ = _elementwise(operator.ne)
    __lt__ = _elementwise(operator.lt)
    __le__ = _elementwise(operator.le)
    __gt__ = _elementwise(operator.gt)
    __ge__ = _elementwise(operator.ge)
    __hash__ = None

    def __neg__(self) -> TinyVector:
        return TinyVector(-x for x in self)

    def copy(self) -> TinyVector:
        return TinyVector(self)

    def all(self) -> bool:
        return all(self)

    def any(self) -> bool:
        return any(self)


def expandSlicing(key, shape) -> tuple:
    """``key`` as a tuple of one entry per axis (``...`` and missing trailing axes become ``:``)."""
    if isinstance(key, list):
        key = tuple(key)
    if not isinstance(key, tuple):
        key = (key,)
    if len(key) > len(shape) and key not in ((Ellipsis,), (slice(None),)):
        raise AssertionError(
            f"Slicing must not have more elements than the shape, except for [:] and [...] slices.\n"
            f"Your slicing: {key}, your shape: {shape}"
        )
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (len(shape) - len(key))
    return key


def sliceToRoi(key, shape, extendSingleton: bool = True) -> tuple[TinyVector, TinyVector]:
    """``(start, stop)`` for a key of ints and slices; no wrapping, no clipping (see the module doc)."""
    key = expandSlicing(key, shape)
    start = [(k.start if k.start is not None else 0) if isinstance(k, slice) else k for k in key]
    stop = [(k.stop if k.stop is not None else n) if isinstance(k, slice) else k for k, n in zip(key, shape)]
    if extendSingleton:
        stop = [b + 1 if a == b else b for a, b in zip(start, stop)]
    return TinyVector(start), TinyVector(stop)


def roiToSlice(start, stop) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))


def roiToShape(start, stop) -> tuple[int, ...]:
    return tuple(int(b) - int(a) for a, b in zip(start, stop))
