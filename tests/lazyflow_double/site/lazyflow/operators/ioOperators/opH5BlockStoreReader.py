"""As in lazyflow: the reader class exists only when the optional ``quilted`` package is importable."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

try:
    from quilted.h5blockstore import H5BlockStore  # noqa: F401
except ImportError:
    logger.debug("Couldn't import quilted")
else:  # pragma: no cover - quilted is never installed where this double is used
    from lazyflow.graph import InputSlot, Operator, OutputSlot

    class OpH5BlockStoreReader(Operator):
        IndexFilepath = InputSlot()
        Output = OutputSlot()
