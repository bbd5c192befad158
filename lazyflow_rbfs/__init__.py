"""lazyflow_rbfs: remote electron-microscopy volumes served from a crash-safe local block cache.

Names are loaded on first use, so ``import lazyflow_rbfs`` stays cheap and never needs lazyflow or vigra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "BlockwiseFileset": "lazyflow_rbfs.store",
    "RESTfulVolume": "lazyflow_rbfs.remote",
    "RESTfulBlockwiseFileset": "lazyflow_rbfs.cache",
    "BlockwiseFilesetFactory": "lazyflow_rbfs.factory",
    "open": "lazyflow_rbfs.opener",
}

__all__ = [
    "BlockwiseFileset",
    "RESTfulVolume",
    "RESTfulBlockwiseFileset",
    "BlockwiseFilesetFactory",
    "errors",
]
# ``lazyflow_rbfs.open`` is loaded on first use like the names above, but left out of ``__all__``: a
# ``from lazyflow_rbfs import *`` must not shadow the built-in ``open``.

from lazyflow_rbfs import errors  # noqa: E402  (cheap, imports nothing else)

if TYPE_CHECKING:  # pragma: no cover
    from lazyflow_rbfs.cache import RESTfulBlockwiseFileset
    from lazyflow_rbfs.factory import BlockwiseFilesetFactory
    from lazyflow_rbfs.opener import open as open  # noqa: A004
    from lazyflow_rbfs.remote import RESTfulVolume
    from lazyflow_rbfs.store import BlockwiseFileset


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lazyflow_rbfs' has no attribute {name!r}")
    # Importing the factory registers every fileset class, so load it whatever was asked for.
    importlib.import_module("lazyflow_rbfs.factory")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
