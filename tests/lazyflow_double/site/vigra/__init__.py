"""Test double of the few ``vigra`` names lazyflow readers use: axis tags and ``impex.listExtensions``.

Written from vigra's documented behaviour, not from its code. Only ``defaultAxistags`` with a string of
axis keys is modelled (that is what readers of described volumes call).
"""

from __future__ import annotations

import json
import types

__double__ = True

_TYPE = {"t": "Time", "c": "Channels", "x": "Space", "y": "Space", "z": "Space"}
_FLAGS = {"Channels": 1, "Space": 2, "Time": 8}


class AxisInfo:
    """One axis: ``key`` (``"x"``, ``"c"``, ...) and a coarse ``typeFlags`` name."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.typeFlags = _TYPE[key]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AxisInfo) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"AxisInfo: '{self.key}' ({self.typeFlags})"


class AxisTags:
    """An ordered sequence of :class:`AxisInfo` with vigra's lookup helpers."""

    def __init__(self, infos: list[AxisInfo]) -> None:
        self._infos = list(infos)

    def __iter__(self):
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def __getitem__(self, index):
        if isinstance(index, str):
            return self._infos[self.index(index)]
        return self._infos[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AxisTags) and self.keys() == other.keys()

    def __hash__(self) -> int:
        return hash(tuple(self.keys()))

    def keys(self) -> list[str]:
        return [info.key for info in self._infos]

    def index(self, key: str) -> int:
        """Position of ``key``; ``len(self)`` when absent, as vigra returns."""
        keys = self.keys()
        return keys.index(key) if key in keys else len(keys)

    @property
    def channelIndex(self) -> int:
        return self.index("c")

    def __repr__(self) -> str:
        return " ".join(self.keys())

    def toJSON(self) -> str:
        """vigra's JSON form: ``{"axes": [{"key", "typeFlags", "resolution", "description"}, ...]}``."""
        axes = [
            {"key": i.key, "typeFlags": _FLAGS[i.typeFlags], "resolution": 0, "description": ""} for i in self
        ]
        return json.dumps({"axes": axes}, indent=2)

    @staticmethod
    def fromJSON(text: str) -> AxisTags:
        return AxisTags([AxisInfo(axis["key"]) for axis in json.loads(text)["axes"]])


def defaultAxistags(tagSpec: str, order: str | None = None, noChannels: bool = False) -> AxisTags:
    """Axis tags for a string of distinct keys out of ``txyzc`` (vigra raises for anything else)."""
    if not isinstance(tagSpec, str):
        raise TypeError(f"defaultAxistags(): this double only models string specs, got {tagSpec!r}")
    if len(set(tagSpec)) != len(tagSpec) or not set(tagSpec) <= set(_TYPE):
        raise RuntimeError(f"defaultAxistags(): invalid axis specification {tagSpec!r}")
    keys = [k for k in tagSpec if not (noChannels and k == "c")]
    return AxisTags([AxisInfo(k) for k in keys])


def _list_extensions() -> str:
    return "bmp gif hdr jpeg jpg pbm pgm png pnm ppm ras tif tiff xv"


impex = types.SimpleNamespace(listExtensions=_list_extensions)
