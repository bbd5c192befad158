"""A sharded neuroglancer precomputed volume written into a folder (static format ``precomputed-sharded``).

:func:`write_sharded_precomputed` writes ``info`` and ``<key>/<shard>.shard`` files in the
``neuroglancer_uint64_sharded_v1`` layout (each shard: the shard index, then the chunks' data, then the
minishard indexes), one scale, so that ``rbfs serve --format precomputed-sharded`` and the tests have a
sharded source on 127.0.0.1 (served as static files with Range support). Written by this test kit's own
code; tests also read volumes written by tensorstore, an independent implementation.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from lazyflow_rbfs.remote import codecs
from lazyflow_rbfs.remote.codecs import segmentation
from lazyflow_rbfs.remote.formats.precomputed_shards import (
    SHARDING_TYPE,
    compressed_morton_code,
    grid_shape,
    parse_sharding,
)
from lazyflow_rbfs.testing.static import register_writer

__all__ = ["write_sharded_precomputed", "DEFAULT_CHUNK_XYZ"]

#: Chunks of the written volume (x, y, z), as large volumes use them.
DEFAULT_CHUNK_XYZ = (64, 64, 64)


def write_sharded_precomputed(
    volume: np.ndarray,
    axes: str,
    directory: str,
    *,
    chunk_xyz: Sequence[int] = DEFAULT_CHUNK_XYZ,
    encoding: str = "raw",
    data_encoding: str = "gzip",
    minishard_index_encoding: str = "gzip",
    hash: str = "murmurhash3_x86_128",  # noqa: A002 - the specification's name
    preshift_bits: int = 0,
    minishard_bits: int = 2,
    shard_bits: int = 2,
    segmentation_block_xyz: Sequence[int] = (8, 8, 8),
    omit: Collection[tuple[int, int, int]] = (),
    key: str = "1_1_1",
    folder_name: str = "sharded",
    **_: Any,
) -> str:
    """Write ``volume`` (axes ``zyx`` or ``czyx``) as a sharded precomputed volume into
    ``directory/<folder_name>``; returns ``folder_name`` (the folder holding ``info``).

    ``omit`` lists chunk grid positions (x, y, z) left out of the shards (missing chunks).
    """
    if axes not in ("zyx", "czyx"):
        raise ValueError(f"a precomputed volume has axes zyx or czyx, got {axes!r}")
    data = np.asarray(volume)
    if axes == "zyx":
        data = data[np.newaxis]
    channels = data.shape[0]
    size_xyz = tuple(int(n) for n in data.shape[:0:-1])
    chunk = tuple(int(n) for n in chunk_xyz)
    spec = parse_sharding(
        {
            "@type": SHARDING_TYPE,
            "preshift_bits": preshift_bits,
            "hash": hash,
            "minishard_bits": minishard_bits,
            "shard_bits": shard_bits,
            "minishard_index_encoding": minishard_index_encoding,
            "data_encoding": data_encoding,
        },
        "write_sharded_precomputed",
    )
    codec = (
        segmentation.codec_for(segmentation_block_xyz)
        if encoding == "compressed_segmentation"
        else codecs.get(encoding)
    )
    grid = grid_shape(size_xyz, chunk)
    shards: dict[int, dict[int, list[tuple[int, bytes]]]] = {}
    for position in np.ndindex(*grid):
        if tuple(position) in omit:
            continue
        lo = [p * c for p, c in zip(position, chunk)]
        hi = [min(a + c, n) for a, c, n in zip(lo, chunk, size_xyz)]
        part = data[:, lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
        body = codec.encode(np.ascontiguousarray(part))
        if data_encoding == "gzip":
            body = gzip.compress(body, mtime=0)
        cid = compressed_morton_code(position, grid)
        shard, minishard = spec.locate(cid)
        shards.setdefault(shard, {}).setdefault(minishard, []).append((cid, body))
    folder = os.path.join(directory, folder_name)
    os.makedirs(os.path.join(folder, key), exist_ok=True)
    for shard, minishards in shards.items():
        with open(os.path.join(folder, key, spec.shard_name(shard)), "wb") as f:
            f.write(_shard_bytes(minishards, spec.minishard_bits, minishard_index_encoding))
    info = {
        "@type": "neuroglancer_multiscale_volume",
        "type": "segmentation" if encoding == "compressed_segmentation" else "image",
        "data_type": data.dtype.name,
        "num_channels": channels,
        "scales": [
            {
                "key": key,
                "size": list(size_xyz),
                "voxel_offset": [0, 0, 0],
                "chunk_sizes": [list(chunk)],
                "encoding": encoding,
                "resolution": [4.0, 4.0, 40.0],
                "sharding": spec.as_json(),
                **(
                    {"compressed_segmentation_block_size": [int(b) for b in segmentation_block_xyz]}
                    if encoding == "compressed_segmentation"
                    else {}
                ),
            }
        ],
    }
    with open(os.path.join(folder, "info"), "w") as f:
        json.dump(info, f)
    return folder_name


def _shard_bytes(
    minishards: dict[int, list[tuple[int, bytes]]], minishard_bits: int, index_encoding: str
) -> bytes:
    """One shard file: the shard index, the chunks' data (by minishard, chunk ids ascending), then each
    minishard's index."""
    data = bytearray()  # offsets are relative to the end of the shard index
    indexes: dict[int, bytes] = {}
    for minishard in sorted(minishards):
        chunks = sorted(minishards[minishard])
        ids, offsets, sizes = [], [], []
        previous_id, previous_end = 0, 0
        for cid, body in chunks:
            start = len(data)
            ids.append(cid - previous_id)
            offsets.append(start - previous_end)
            sizes.append(len(body))
            data += body
            previous_id, previous_end = cid, start + len(body)
        table = np.asarray([ids, offsets, sizes], dtype="<u8").tobytes()
        indexes[minishard] = gzip.compress(table, mtime=0) if index_encoding == "gzip" else table
    shard_index = np.zeros((1 << minishard_bits, 2), dtype="<u8")
    tail = bytearray()
    for minishard, table in sorted(indexes.items()):
        start = len(data) + len(tail)
        shard_index[minishard] = (start, start + len(table))
        tail += table
    return shard_index.tobytes() + bytes(data) + bytes(tail)


register_writer("precomputed-sharded", write_sharded_precomputed)
