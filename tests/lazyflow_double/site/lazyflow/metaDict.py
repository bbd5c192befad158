"""Slot metadata: a dict with attribute access, ``None`` for anything unset (like lazyflow's MetaDict)."""

from __future__ import annotations

from collections import OrderedDict


class MetaDict(dict):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name)

    def __setattr__(self, name: str, value) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        self.pop(name, None)

    def copy(self) -> MetaDict:
        return MetaDict(self)

    def getAxisKeys(self) -> list[str]:
        return [tag.key for tag in self.axistags]

    def getTaggedShape(self) -> OrderedDict:
        return OrderedDict(zip(self.getAxisKeys(), self.shape))
