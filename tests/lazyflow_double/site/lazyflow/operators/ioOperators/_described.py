"""Shared helper of the double's JSON-described readers: output metadata from a parsed description."""

from __future__ import annotations

import numpy as np
import vigra


def set_meta(slot, shape, dtype, axes) -> None:
    if not isinstance(shape, list) or not all(isinstance(n, int) for n in shape):
        raise ValueError(f"the lazyflow double only understands plain integer lists as shapes, got {shape!r}")
    name = str(dtype)
    for prefix in ("numpy.", "np."):
        name = name[len(prefix) :] if name.startswith(prefix) else name
    slot.meta.shape = tuple(shape)
    slot.meta.dtype = np.dtype(name).type
    slot.meta.axistags = vigra.defaultAxistags(str(axes))
