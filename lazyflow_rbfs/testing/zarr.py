"""zarr and OME-Zarr writers of the test kit (``rbfs serve --format zarr2|zarr3|zarr3-sharded|ome-zarr``).

Written here with the standard library and numpy only (no zarr-python at runtime), as a bucket would hold
them: chunks stored full-size at the array's edges (the part outside the array holds the fill value),
gzip-compressed by default. Registered with :func:`lazyflow_rbfs.testing.static.register_writer`:

* ``"zarr2"``: a zarr v2 array ``volume.zarr`` (``.zarray``; ``compressor`` ``"gzip"``, ``"zlib"`` or
  ``None``; ``separator`` ``"."`` or ``"/"``; ``order`` ``"C"`` or ``"F"``);
* ``"zarr3"``: a zarr v3 array (``zarr.json`` with ``dimension_names``; codecs bytes + gzip);
* ``"zarr3-sharded"``: the same with ``sharding_indexed`` (``shards``: inner chunks per shard along each
  axis, default 2; ``index_location`` ``"end"`` or ``"start"``);
* ``"ome-zarr"``: an OME-Zarr image ``image.ome.zarr`` with ``levels`` levels (y and x halved per level),
  NGFF ``version`` ``"0.4"`` (zarr v2) or ``"0.5"`` (zarr v3).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from lazyflow_rbfs.testing.static import register_writer

__all__ = ["write_zarr2", "write_zarr3", "write_ome_zarr", "default_chunks"]

_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def default_chunks(shape: Sequence[int], axes: str) -> tuple[int, ...]:
    """Chunks of 16 z, 32 y and 32 x voxels (cut to the shape), one t, every c."""
    size = {"t": 1, "z": 16, "y": 32, "x": 32}
    return tuple(n if a == "c" else min(n, size.get(a, 32)) for n, a in zip(shape, axes))


def _chunks_of(volume: np.ndarray, chunks: Sequence[int]):
    """``(grid position, full-size chunk)`` of every chunk, the part outside the volume zero."""
    grid = [math.ceil(n / c) for n, c in zip(volume.shape, chunks)]
    for pos in np.ndindex(*grid):
        lo = [p * c for p, c in zip(pos, chunks)]
        part = volume[tuple(slice(a, a + c) for a, c in zip(lo, chunks))]
        full = np.zeros(tuple(chunks), dtype=volume.dtype)
        full[tuple(slice(0, n) for n in part.shape)] = part
        yield pos, full


def _compress(data: bytes, compressor: str | None) -> bytes:
    if compressor is None:
        return data
    if compressor == "gzip":
        return gzip.compress(data, mtime=0)
    if compressor == "zlib":
        return zlib.compress(data)
    raise ValueError(f"compressor {compressor!r}: the test kit writes gzip, zlib or None")


def _write(path: str, body: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(body)


def _json(path: str, obj: dict[str, Any]) -> None:
    _write(path, json.dumps(obj, indent=1).encode())


def write_zarr2(
    volume: np.ndarray,
    axes: str,
    directory: str,
    *,
    name: str = "volume.zarr",
    chunks: Sequence[int] | None = None,
    compressor: str | None = "gzip",
    separator: str = ".",
    order: str = "C",
    big_endian: bool = False,
) -> str:
    """Write ``volume`` as the zarr v2 array ``name`` under ``directory``; returns ``name``."""
    chunks = tuple(chunks or default_chunks(volume.shape, axes))
    stored = (
        volume.dtype.newbyteorder(">" if big_endian else "<") if volume.dtype.itemsize > 1 else volume.dtype
    )
    root = os.path.join(directory, name)
    _json(
        os.path.join(root, ".zarray"),
        {
            "zarr_format": 2,
            "shape": list(volume.shape),
            "chunks": list(chunks),
            "dtype": stored.str,
            "compressor": None if compressor is None else {"id": compressor},
            "fill_value": 0,
            "order": order,
            "filters": None,
            "dimension_separator": separator,
        },
    )
    for pos, chunk in _chunks_of(volume, chunks):
        raw = np.asarray(chunk, dtype=stored).tobytes(order=order)  # type: ignore[arg-type]
        _write(os.path.join(root, *separator.join(map(str, pos)).split("/")), _compress(raw, compressor))
    return name


def _v3_metadata(
    volume: np.ndarray, axes: str, chunks: tuple[int, ...], codecs: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(volume.shape),
        "data_type": volume.dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": codecs,
        "dimension_names": list(axes),
        "attributes": {},
    }


_BYTES = {"name": "bytes", "configuration": {"endian": "little"}}
_GZIP = {"name": "gzip", "configuration": {"level": 5}}


def write_zarr3(
    volume: np.ndarray,
    axes: str,
    directory: str,
    *,
    name: str = "volume.zarr",
    chunks: Sequence[int] | None = None,
    shards: int | Sequence[int] | None = None,
    index_location: str = "end",
) -> str:
    """Write ``volume`` as the zarr v3 array ``name`` (sharded when ``shards`` is given: inner chunks per
    shard along each axis); returns ``name``."""
    chunks = tuple(chunks or default_chunks(volume.shape, axes))
    root = os.path.join(directory, name)
    stored = volume.dtype.newbyteorder("<")
    if shards is None:
        _json(os.path.join(root, "zarr.json"), _v3_metadata(volume, axes, chunks, [_BYTES, _GZIP]))
        for pos, chunk in _chunks_of(volume, chunks):
            body = gzip.compress(np.asarray(chunk, dtype=stored).tobytes(), mtime=0)
            _write(os.path.join(root, "c", *map(str, pos)), body)
        return name
    per = (shards,) * volume.ndim if isinstance(shards, int) else tuple(shards)
    shard_shape = tuple(c * p for c, p in zip(chunks, per))
    sharding = {
        "name": "sharding_indexed",
        "configuration": {
            "chunk_shape": list(chunks),
            "codecs": [_BYTES, _GZIP],
            "index_codecs": [_BYTES],
            "index_location": index_location,
        },
    }
    _json(os.path.join(root, "zarr.json"), _v3_metadata(volume, axes, shard_shape, [sharding]))
    index_size = 16 * math.prod(per)
    for pos, shard in _chunks_of(volume, shard_shape):
        bodies, index = [], []
        offset = index_size if index_location == "start" else 0
        for inner_pos in np.ndindex(*per):
            lo = [(p * s + i * c) for p, s, i, c in zip(pos, shard_shape, inner_pos, chunks)]
            if any(a >= n for a, n in zip(lo, volume.shape)):
                index.append((2**64 - 1, 2**64 - 1))  # wholly outside the array: not stored
                continue
            part = shard[tuple(slice(i * c, (i + 1) * c) for i, c in zip(inner_pos, chunks))]
            body = gzip.compress(np.asarray(part, dtype=stored).tobytes(), mtime=0)
            index.append((offset, len(body)))
            bodies.append(body)
            offset += len(body)
        table = b"".join(struct.pack("<QQ", o, n) for o, n in index)
        data = b"".join(bodies)
        _write(
            os.path.join(root, "c", *map(str, pos)),
            table + data if index_location == "start" else data + table,
        )
    return name


def write_ome_zarr(
    volume: np.ndarray,
    axes: str,
    directory: str,
    *,
    name: str = "image.ome.zarr",
    version: str = "0.4",
    levels: int = 2,
    chunks: Sequence[int] | None = None,
) -> str:
    """Write ``volume`` as an OME-Zarr image of ``levels`` levels (paths ``"0"``, ``"1"``, ...; y and x
    halved per level) with NGFF ``version`` 0.4 (zarr v2) or 0.5 (zarr v3); returns ``name``."""
    if version not in ("0.4", "0.5"):
        raise ValueError(f"version {version!r}: the test kit writes OME-Zarr 0.4 or 0.5")
    root = os.path.join(directory, name)
    datasets = []
    for level in range(max(1, levels)):
        step = tuple(2**level if a in "yx" else 1 for a in axes)
        data = np.ascontiguousarray(volume[tuple(slice(None, None, s) for s in step)])
        if version == "0.4":
            write_zarr2(data, axes, root, name=str(level), chunks=chunks, separator="/")
        else:
            write_zarr3(data, axes, root, name=str(level), chunks=chunks)
        scale = [float(s) for s in step]
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    multiscale = {
        "name": name,
        "axes": [{"name": a, "type": _AXIS_TYPES[a]} for a in axes],
        "datasets": datasets,
    }
    if version == "0.4":
        _json(os.path.join(root, ".zgroup"), {"zarr_format": 2})
        _json(os.path.join(root, ".zattrs"), {"multiscales": [{"version": "0.4", **multiscale}]})
    else:
        _json(
            os.path.join(root, "zarr.json"),
            {
                "zarr_format": 3,
                "node_type": "group",
                "attributes": {"ome": {"version": "0.5", "multiscales": [multiscale]}},
            },
        )
    return name


def _sharded(volume: np.ndarray, axes: str, directory: str, **settings: Any) -> str:
    settings.setdefault("shards", 2)
    return write_zarr3(volume, axes, directory, **settings)


register_writer("zarr2", write_zarr2)
register_writer("zarr3", write_zarr3)
register_writer("zarr3-sharded", _sharded)
register_writer("ome-zarr", write_ome_zarr)
