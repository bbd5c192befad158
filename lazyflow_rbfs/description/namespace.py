"""The namespace a parsed description is: ordered fields with attribute access, compared by value."""

from __future__ import annotations

import copy
from typing import Any

import numpy

__all__ = ["Namespace"]


class Namespace:
    """An ordered, mutable bag of fields with attribute access (upstream ``jsonConfig.Namespace``).

    ``vars(ns)`` is the ordered field dict. ``==`` compares numpy arrays by value and nested namespaces
    recursively; ``copy.copy`` and ``copy.deepcopy`` work.
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Namespace):
            return NotImplemented
        mine, theirs = vars(self), vars(other)
        if mine.keys() != theirs.keys():
            return False
        return all(_values_equal(mine[key], theirs[key]) for key in mine)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{key}={_short_repr(value)}" for key, value in vars(self).items())
        return f"Namespace({inner})"

    def __contains__(self, key: str) -> bool:
        return key in self.__dict__

    def __copy__(self) -> Namespace:
        return Namespace(**vars(self))

    def __deepcopy__(self, memo: dict) -> Namespace:
        return Namespace(**{key: copy.deepcopy(value, memo) for key, value in vars(self).items()})


def _short_repr(value: Any) -> str:
    if isinstance(value, numpy.ndarray):
        return repr(value.tolist())
    if isinstance(value, type) and issubclass(value, numpy.generic):
        return f"numpy.{numpy.dtype(value).name}"
    return repr(value)


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, numpy.ndarray) or isinstance(b, numpy.ndarray):
        try:
            return bool(numpy.array_equal(numpy.asarray(a), numpy.asarray(b)))
        except (TypeError, ValueError):
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False
