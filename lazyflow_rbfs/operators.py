"""The lazyflow operator: ``from lazyflow_rbfs.operators import OpRESTfulBlockwiseFilesetReader``.

The public name of :mod:`lazyflow_rbfs.integrations.lazyflow`, where the code lives. Needs lazyflow and
vigra (ilastik's conda environment). Importing it registers this package's fileset classes with lazyflow's
own ``BlockwiseFilesetFactory``, so that its ``create(path, mode)`` returns ours for a composite
description.
"""

from __future__ import annotations

from lazyflow_rbfs.integrations.lazyflow import (
    OpRESTfulBlockwiseFilesetReader,
    SchemaError,
    register_with_lazyflow,
    unregister_from_lazyflow,
)

__all__ = [
    "OpRESTfulBlockwiseFilesetReader",
    "SchemaError",
    "register_with_lazyflow",
    "unregister_from_lazyflow",
]
