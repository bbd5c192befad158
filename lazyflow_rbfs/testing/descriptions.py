"""Descriptions of what a test server serves: remote and composite JSON, written atomically.

The functions take the :class:`~lazyflow_rbfs.testing.CutoutServer` (its volume, levels and the
format fields of its emulators); the server's ``remote_description_dict``, ``write_remote_description``
and ``write_description`` methods call them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lazyflow_rbfs import atomic

if TYPE_CHECKING:  # pragma: no cover
    from lazyflow_rbfs.testing.server import CutoutServer

__all__ = ["remote_description", "composite_description", "write_json"]


def remote_description(
    server: CutoutServer, name: str | None = None, *, format: str = "hdf5", level: int = 0, **fields: Any
) -> dict[str, Any]:
    """The JSON dict of a ``"RESTful-volume-description"`` of the volume ``server`` serves.

    ``format`` is ``"hdf5"``, ``"npz"``/``"npygz"`` (zlib-compressed ``.npy`` cutouts), ``"boss"`` or
    ``"precomputed"``; ``level`` the Boss resolution / precomputed scale index; ``fields`` are added
    (e.g. ``fill_missing``, ``max_cutout_bytes``).
    """
    shape, origin = server.served.level(level)
    desc: dict[str, Any] = {
        "_schema_name": "RESTful-volume-description",
        "_schema_version": 1.0,
        "name": name or "cutout-server",
        "format": format,
        "axes": server.axes,
        "origin_offset": list(origin),
        "bounds": [s + o for s, o in zip(shape, origin)],
        "dtype": server.dtype.name,
    }
    desc.update(server.format_fields(format, level))
    desc.update(fields)
    return desc


def composite_description(
    server: CutoutServer,
    path: str | os.PathLike,
    *,
    block_shape: Sequence[int],
    cache_dir: str | os.PathLike | None = None,
    view_origin: Sequence[int] | None = None,
    view_shape: Sequence[int] | None = None,
    name: str | None = None,
    local_shape: Sequence[int] | None = None,
    compression: str | None = None,
    format: str = "hdf5",
    level: int = 0,
    **remote_fields: Any,
) -> dict[str, Any]:
    """The JSON dict of a ``"RESTful-blockwise-fileset-description"`` to be written at ``path``.

    ``cache_dir`` becomes the local ``dataset_root_dir`` (``None``: ``<stem of path>-blocks``, as
    ``rbfs describe`` names it). ``format``, ``level`` and ``remote_fields`` go to
    :func:`remote_description`.
    """
    remote = remote_description(server, name, format=format, level=level, **remote_fields)
    local: dict[str, Any] = {
        "_schema_name": "blockwise-fileset-description",
        "_schema_version": 1.1,
        "name": (name or "cutout-server") + "-blocks",
        "format": "hdf5",
        "axes": server.axes,
        "shape": [
            int(s)
            for s in (
                local_shape
                if local_shape is not None
                else [b - o for b, o in zip(remote["bounds"], remote["origin_offset"])]
            )
        ],
        "dtype": server.dtype.name,
        "block_shape": [int(b) for b in block_shape],
        "block_file_name_format": f"block-{{roiString}}.h5/{server.dataset_name.lstrip('/')}",
    }
    if cache_dir is None:
        cache_dir = f"{os.path.splitext(os.path.basename(os.fspath(path)))[0] or 'volume'}-blocks"
    local["dataset_root_dir"] = os.fspath(cache_dir)
    if view_origin is not None:
        local["view_origin"] = [int(v) for v in view_origin]
    if view_shape is not None:
        local["view_shape"] = [int(v) for v in view_shape]
    if compression is not None:
        local["compression"] = compression
    return {
        "_schema_name": "RESTful-blockwise-fileset-description",
        "_schema_version": 1.0,
        "remote_description": remote,
        "local_description": local,
    }


def write_json(path: str | os.PathLike, obj: dict[str, Any]) -> str:
    """Write ``obj`` as indented JSON to ``path``, atomically (not fsynced: test data); returns the path."""
    path = os.fspath(path)
    atomic.write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"), fsync=False)
    return path
