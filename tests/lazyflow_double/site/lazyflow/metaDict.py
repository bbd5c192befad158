"""Slot metadata, modelled on ``lazyflow/metaDict.py``.

* A ``defaultdict`` whose default is ``None``: reading ``meta.x`` (or ``meta["x"]``) of an unset key
  returns ``None`` **and inserts the key**, so ``"x" in meta`` becomes true after a read.
* ``meta.x = v`` first compares ``meta.x != v`` (so a numpy array as a value raises numpy's "truth value
  of an array is ambiguous" error once an old value is there to compare with) and refuses a ``shape`` that
  is not a ``tuple``.
* There is no attribute deletion (``del meta.x`` raises ``AttributeError``); ``del meta["x"]`` works.
* ``==`` compares all keys except ``NOTREADY`` (only its truth value counts); ``_ready`` and ``_dirty``
  are ordinary keys.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict

import numpy as np


def _none():
    return None


class MetaDict(defaultdict):
    def __init__(self, other=None, **kwargs) -> None:
        if other is None:
            super().__init__(_none, **kwargs)
        else:
            super().__init__(_none, other, **kwargs)
        if "_ready" not in self:
            self._ready = False
        self._dirty = True

    def __setattr__(self, name: str, value) -> None:
        if self[name] != value:
            self["_dirty"] = True
        if name == "NOTREADY" and value is None:
            self.pop("NOTREADY", None)
        if name == "shape" and not isinstance(value, tuple):
            raise Exception(f"Slot.meta.shape must always be a tuple, not {type(value)}")
        self[name] = value

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def copy(self) -> MetaDict:
        return MetaDict(dict.copy(self))

    def __eq__(self, other) -> bool:
        if other is None:
            return False
        for key in set(self.keys()) | set(other.keys()):
            if key.startswith("__") or key == "NOTREADY":
                continue
            if key not in other or key not in self:
                return False
            if other[key] != self[key]:
                return False
        return bool(self.get("NOTREADY")) == bool(other.get("NOTREADY"))

    def __ne__(self, other) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(id(self))

    def getAxisKeys(self) -> list[str]:
        if self.axistags is None:
            raise AssertionError("meta.axistags is None")
        return [tag.key for tag in self.axistags]

    def getTaggedShape(self) -> OrderedDict:
        if self.axistags is None or self.shape is None:
            raise AssertionError("meta.axistags and meta.shape must be set")
        return OrderedDict(zip(self.getAxisKeys(), self.shape))

    def getDtypeBytes(self) -> int:
        dtype = self.dtype
        if isinstance(dtype, np.dtype):
            dtype = dtype.type
        return dtype().nbytes
