"""BlockwiseFilesetFactory: open a description file with the first fileset class that accepts it.

Creation functions are tried in registration order. A function says "not mine" by returning ``None``
(upstream's convention) or by raising :class:`~lazyflow_rbfs.errors.SchemaError`; any other exception
means the file *is* of its schema but broken, and propagates. Importing this module registers
``RESTfulBlockwiseFileset`` (composite descriptions, tried first) and ``BlockwiseFileset``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from lazyflow_rbfs.errors import SchemaError
from lazyflow_rbfs.store import BlockwiseFileset

__all__ = ["BlockwiseFilesetFactory"]

logger = logging.getLogger(__name__)

CreationFn = Callable[[str, str], Any]


def _schema_of(fn: CreationFn) -> str:
    """A readable name for what ``fn`` accepts: its class's schema name, else the function's name."""
    owner = getattr(fn, "__self__", None)
    fields = getattr(owner, "DescriptionFields", None)
    if isinstance(fields, dict) and isinstance(fields.get("_schema_name"), str):
        return fields["_schema_name"]
    return getattr(fn, "__qualname__", None) or repr(fn)


class BlockwiseFilesetFactory:
    """Registry of fileset creation functions ``fn(descriptionPath, mode) -> fileset | None``."""

    _creation_fns: list[CreationFn] = []
    _mutex = threading.Lock()

    @classmethod
    def register(cls, creationFn: CreationFn) -> None:
        """Append ``creationFn`` to the registry (registering the same function again does nothing)."""
        if not callable(creationFn):
            raise TypeError(f"creationFn must be callable, got {creationFn!r}")
        with cls._mutex:
            if creationFn not in cls._creation_fns:
                cls._creation_fns.append(creationFn)

    @classmethod
    def unregister(cls, creationFn: CreationFn) -> None:
        """Remove ``creationFn`` from the registry if it is there."""
        with cls._mutex:
            if creationFn in cls._creation_fns:
                cls._creation_fns.remove(creationFn)

    @classmethod
    def creation_functions(cls) -> list[CreationFn]:
        """The registered functions, in the order they are tried."""
        with cls._mutex:
            return list(cls._creation_fns)

    @classmethod
    def create(cls, descriptionPath: str | os.PathLike, mode: str = "r") -> Any:
        """Open ``descriptionPath`` with the first registered class that accepts it.

        Raises
        ------
        SchemaError
            No registered class accepts the file; the message names the file and the schemas tried.
        DescriptionError, OSError, ...
            From the first class whose schema the file has (the file is of that schema but unusable).
        """
        path = os.fspath(descriptionPath)
        tried: list[str] = []
        for fn in cls.creation_functions():
            schema = _schema_of(fn)
            try:
                fileset = fn(path, mode)
            except SchemaError as exc:
                logger.debug("%s is not a %s: %s", path, schema, exc)
                tried.append(schema)
                continue
            if fileset is None:
                tried.append(schema)
                continue
            return fileset
        raise SchemaError(
            f"{path}: not a description any registered fileset accepts; expected one of the schemas "
            f"{tried or '(none registered)'}"
        )


def _register_defaults() -> None:
    try:
        from lazyflow_rbfs.cache import RESTfulBlockwiseFileset
    except ModuleNotFoundError as exc:
        if exc.name != "lazyflow_rbfs.cache":
            raise
        logger.debug("lazyflow_rbfs.cache is not available; only local filesets are registered")
    else:
        BlockwiseFilesetFactory.register(RESTfulBlockwiseFileset._createAndReturnBlockwiseFileset)
    BlockwiseFilesetFactory.register(BlockwiseFileset._createAndReturnBlockwiseFileset)


_register_defaults()
