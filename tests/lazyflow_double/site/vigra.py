"""Test double of ``vigra.defaultAxistags``, the vigra name lazyflow_rbfs calls (operator and block files).

Written from vigra's documented behaviour: a string of distinct axis keys out of ``txyzc`` gives axis
tags, a sequence of objects with a ``.key``, whose ``toJSON()`` is what lazyflow stores as a dataset's
``axistags`` attribute; anything else raises.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

__double__ = True

_TYPE_FLAGS = {"c": 1, "x": 2, "y": 2, "z": 2, "t": 8}  # vigra's Channels, Space, Time


class AxisTags(list):
    def toJSON(self) -> str:
        axes = [
            {"key": a.key, "typeFlags": _TYPE_FLAGS[a.key], "resolution": 0, "description": ""} for a in self
        ]
        return json.dumps({"axes": axes}, indent=2)

    def __repr__(self) -> str:
        return " ".join(a.key for a in self)


def defaultAxistags(tagSpec, order=None, noChannels: bool = False) -> AxisTags:
    if not isinstance(tagSpec, str):
        raise TypeError(f"defaultAxistags(): the vigra double models only string specs, got {tagSpec!r}")
    if len(set(tagSpec)) != len(tagSpec) or not set(tagSpec) <= set(_TYPE_FLAGS):
        raise RuntimeError(f"defaultAxistags(): invalid axis specification {tagSpec!r}")
    return AxisTags(SimpleNamespace(key=k) for k in tagSpec if not (noChannels and k == "c"))
