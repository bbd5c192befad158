"""N5 datasets written into a folder (format ``n5``), for ``rbfs serve --format n5`` and the tests.

:func:`write_n5` writes a multiscale group ``volume.n5`` holding datasets ``s0``, ``s1``, ... (each level
halves y and x), as N5's own writers do: ``attributes.json`` with ``dimensions``, ``blockSize`` and
``axes`` fastest axis first, blocks at ``<i0>/<i1>/...`` (fastest first) with a big-endian header and
big-endian data, edge blocks cropped to the dataset, blocks of zeros left out. Registered as the static
writer ``"n5"`` (:mod:`lazyflow_rbfs.testing.static`).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from lazyflow_rbfs.testing.static import register_writer

__all__ = ["write_n5", "write_n5_dataset", "encode_block", "N5_COMPRESSIONS"]

#: Compressions :func:`encode_block` writes (``zlib``: gzip with ``useZlib``).
N5_COMPRESSIONS = ("raw", "gzip", "zlib", "bzip2", "xz", "blosc", "zstd")


def _compress(name: str, data: bytes) -> bytes:
    if name == "raw":
        return data
    if name == "gzip":
        return gzip.compress(data, mtime=0)
    if name == "zlib":
        return zlib.compress(data)
    if name == "bzip2":
        return bz2.compress(data)
    if name == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    import numcodecs

    if name == "blosc":
        return bytes(numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE).encode(data))
    if name == "zstd":
        return bytes(numcodecs.Zstd(level=3).encode(data))
    raise ValueError(f"unknown N5 compression {name!r}; known: {', '.join(N5_COMPRESSIONS)}")


def _compression_attributes(name: str) -> dict[str, Any]:
    if name == "zlib":
        return {"type": "gzip", "level": -1, "useZlib": True}
    params: dict[str, dict[str, Any]] = {
        "raw": {},
        "gzip": {"level": -1, "useZlib": False},
        "bzip2": {"blockSize": 9},
        "xz": {"preset": 6},
        "blosc": {"cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
        "zstd": {"level": 3},
    }
    if name not in params:
        raise ValueError(f"unknown N5 compression {name!r}; known: {', '.join(N5_COMPRESSIONS)}")
    return {"type": name, **params[name]}


def encode_block(block: np.ndarray, compression: str = "raw", *, mode: int = 0) -> bytes:
    """One N5 block file: the header (mode, ndim, sizes fastest first) and the compressed big-endian data
    of ``block`` (a C-order array)."""
    shape = block.shape[::-1]
    header = struct.pack(f">HH{len(shape)}I", mode, len(shape), *shape)
    if mode == 1:
        header += struct.pack(">I", int(block.size))
    data = np.ascontiguousarray(block, dtype=block.dtype.newbyteorder(">")).tobytes()
    return header + _compress(compression, data)


def write_n5_dataset(
    volume: np.ndarray,
    folder: str | os.PathLike,
    *,
    block_shape: Sequence[int],
    compression: str = "gzip",
    axes: str | None = None,
    old_style: bool = False,
    skip_zero_blocks: bool = True,
    extra: dict[str, Any] | None = None,
) -> list[str]:
    """Write ``volume`` as the N5 dataset ``folder``; the block keys written (``"i0/i1/..."``).

    ``old_style`` writes ``compressionType`` instead of a ``compression`` object (raw, gzip, bzip2, xz).
    """
    volume = np.asarray(volume)
    block = [int(n) for n in block_shape]
    if len(block) != volume.ndim:
        raise ValueError(f"block_shape {block} does not match the volume's {volume.ndim} axes")
    os.makedirs(folder, exist_ok=True)
    attrs: dict[str, Any] = {
        "dimensions": list(volume.shape[::-1]),
        "blockSize": block[::-1],
        "dataType": volume.dtype.name,
    }
    if old_style:
        if compression not in ("raw", "gzip", "bzip2", "xz"):
            raise ValueError(f"old-style compressionType has no {compression!r}")
        attrs["compressionType"] = compression
    else:
        attrs["compression"] = _compression_attributes(compression)
    if axes is not None:
        attrs["axes"] = list(axes[::-1])
    attrs.update(extra or {})
    with open(os.path.join(folder, "attributes.json"), "w", encoding="utf-8") as f:
        json.dump(attrs, f)
    written = []
    grid = [-(-n // b) for n, b in zip(volume.shape, block)]
    for index in np.ndindex(*grid):
        box = tuple(slice(i * b, min((i + 1) * b, n)) for i, b, n in zip(index, block, volume.shape))
        part = volume[box]
        if skip_zero_blocks and not part.any():
            continue
        key = "/".join(str(i) for i in index[::-1])
        path = os.path.join(folder, *key.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(encode_block(part, compression))
        written.append(key)
    return written


def write_n5(
    volume: np.ndarray,
    axes: str,
    directory: str,
    *,
    block_shape: Sequence[int] | None = None,
    compression: str = "gzip",
    levels: int = 2,
    name: str = "volume.n5",
) -> str:
    """Write ``volume`` as the multiscale N5 group ``directory/name`` (``s0`` full resolution, each further
    level halving y and x); the group's path relative to ``directory`` (what ``rbfs describe`` is given)."""
    volume = np.asarray(volume)
    if block_shape is None:
        block_shape = tuple(min(n, 64) for n in volume.shape)
    group = os.path.join(directory, name)
    os.makedirs(group, exist_ok=True)
    halved = [i for i, a in enumerate(axes) if a in "yx"]
    scales = []
    level_volume = volume
    for level in range(max(1, levels)):
        factors = [2**level if i in halved else 1 for i in range(volume.ndim)]
        scales.append(factors[::-1])
        write_n5_dataset(
            level_volume,
            os.path.join(group, f"s{level}"),
            block_shape=block_shape,
            compression=compression,
            axes=axes,
            extra={"downsamplingFactors": factors[::-1]},
        )
        step = tuple(slice(None, None, 2) if i in halved else slice(None) for i in range(volume.ndim))
        level_volume = level_volume[step]
    with open(os.path.join(group, "attributes.json"), "w", encoding="utf-8") as f:
        json.dump({"n5": "2.5.1", "multiScale": True, "scales": scales, "axes": list(axes[::-1])}, f)
    return name


register_writer("n5", write_n5)
