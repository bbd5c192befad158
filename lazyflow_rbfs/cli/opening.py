"""How ``rbfs`` opens the description a command is given: composite or local, read-only.

A composite description's cache root must hold blocks of the volume it describes (see
:mod:`lazyflow_rbfs.identity`); every command that opens one checks that first.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from lazyflow_rbfs.cli.exits import UsageError
from lazyflow_rbfs.errors import SchemaError

__all__ = [
    "COMPOSITE",
    "LOCAL",
    "Opened",
    "read_description",
    "local_description",
    "open_fileset",
    "cache_root",
]

COMPOSITE = "RESTful-blockwise-fileset-description"
LOCAL = "blockwise-fileset-description"


@dataclasses.dataclass
class Opened:
    """A description file as a command opened it."""

    kind: str  # "composite" or "local"
    path: str
    description: Any  # composite: the composite namespace; local: the local namespace


def read_description(path: str) -> Opened:
    """Parse ``path`` as a composite, else as a local description. Errors here are usage errors (2)."""
    from lazyflow_rbfs import description as _description

    if not os.path.exists(path):
        raise UsageError(f"description file {path!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"expected a description file, found the directory {path!r}")
    try:
        composite = _description.read_composite(path)
    except SchemaError as composite_error:
        try:
            return Opened("local", path, _description.read_local(path))
        except SchemaError:
            raise SchemaError(
                f"{path}: expected a {COMPOSITE!r} or {LOCAL!r} description; {composite_error}"
            ) from None
    except OSError as exc:
        raise UsageError(f"cannot read description {path!r}: {exc.strerror or exc}") from None
    from lazyflow_rbfs import identity

    identity.check_composite(composite, path)  # a cache root of another volume is refused by every command
    return Opened("composite", path, composite)


def local_description(opened: Opened) -> Any:
    """The local description of ``opened`` (a composite's ``local_description``)."""
    return opened.description.local_description if opened.kind == "composite" else opened.description


def _network_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {}
    for name in ("max_parallel", "timeout", "retries", "lock_timeout"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    if getattr(args, "max_cache_size", None) is not None:
        options["max_cache_bytes"] = args.max_cache_size
    return options


def open_fileset(args: argparse.Namespace, *, store_only: bool = False) -> tuple[Opened, Any]:
    """Open the description of ``args``, read-only.

    A composite gives a ``RESTfulBlockwiseFileset`` (with the network options of ``args``), or with
    ``store_only`` just its local block tree as a ``BlockwiseFileset`` (never touching the network); a
    local description gives a ``BlockwiseFileset``.
    """
    opened = read_description(args.description)
    if opened.kind == "composite" and not store_only:
        from lazyflow_rbfs.cache import RESTfulBlockwiseFileset

        return opened, RESTfulBlockwiseFileset(opened.path, **_network_options(args))
    from lazyflow_rbfs.store import BlockwiseFileset

    return opened, BlockwiseFileset(opened.path, "r", preparsedDescription=local_description(opened))


def cache_root(opened: Opened) -> str:
    """The absolute cache directory (``dataset_root_dir``) of ``opened``."""
    local = local_description(opened)
    root = local.dataset_root_dir or "."
    base = os.path.dirname(os.path.abspath(opened.path))
    return os.path.normpath(os.path.join(base, root))
