"""Raw bodies: the array's bytes, little-endian, C order (neuroglancer precomputed ``raw`` chunks).

A precomputed chunk is x, y, z, c in Fortran order, which is C-order ``(c, z, y, x)``: the expected shape
of a chunk. The body must hold exactly the expected bytes (an HTTP ``Content-Encoding`` such as gzip is
undone by the HTTP client first).
"""

from __future__ import annotations

import numpy as np

from lazyflow_rbfs.remote.codecs.base import Codec, Expected, array_from_bytes, guarded

__all__ = ["CODEC", "decode_precomputed_raw", "encode_raw", "body_limit"]


@guarded("precomputed raw chunk")
def decode_precomputed_raw(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a precomputed ``raw`` chunk: little-endian x,y,z,c in Fortran order, i.e. C-order (c,z,y,x).

    ``expected.shape`` is the chunk's ``(c, z, y, x)`` (edge chunks are cut short).
    """
    return array_from_bytes(
        body,
        expected,
        "precomputed chunk",
        " (a raw chunk, shape (c,z,y,x); wrong info file, or an encoding other than raw)",
    )


def encode_raw(data: np.ndarray) -> bytes:
    """``data`` as little-endian C-order bytes (a precomputed chunk of shape ``(c, z, y, x)``)."""
    return np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()


def body_limit(nbytes: int) -> int:
    """A raw body holds exactly ``nbytes``; the slack only covers a gzip ``Content-Length``."""
    return int(nbytes) + int(nbytes) // 64 + (64 << 10)


CODEC = Codec("raw", decode_precomputed_raw, encode_raw, body_limit)
