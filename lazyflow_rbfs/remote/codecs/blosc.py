"""blosc bodies (BossDB ``application/blosc``): a blosc-compressed C-order array.

The blosc header is checked against the expected block before anything is decompressed. Needs the
package ``blosc`` (python-blosc, the Boss's own) or ``blosc2``; neither is a hard dependency.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from lazyflow_rbfs.errors import InvalidResponseError
from lazyflow_rbfs.remote.codecs.base import Codec, Expected, MissingCodecError, array_from_bytes, guarded

__all__ = ["CODEC", "blosc_decompressor", "blosc_module", "decode_blosc", "encode_blosc"]

_INSTALL = "(pip install 'lazyflow-rbfs[boss]' or pip install blosc)"


def blosc_module() -> Any:
    """python-blosc (the Boss's own, blosc1 bodies), else blosc2, else ``None``."""
    for name in ("blosc", "blosc2"):
        try:
            return __import__(name)
        except ImportError:
            continue
    return None


def blosc_decompressor() -> Callable[[bytes], bytes]:
    """The ``decompress`` of ``blosc`` (python-blosc) or, failing that, of ``blosc2``; both read Boss bodies.

    Raises
    ------
    MissingCodecError
        Neither package is installed.
    """
    module = blosc_module()
    if module is None:
        raise MissingCodecError(
            f"decoding BossDB 'application/blosc' bodies needs the package 'blosc' {_INSTALL}"
        )
    return module.decompress


_BLOSC_HEADER = 16


@guarded("blosc body")
def decode_blosc(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a blosc-compressed C-order array of ``expected.shape`` and ``expected.dtype`` (BossDB).

    The blosc header (version, versionlz, flags, typesize, then little-endian nbytes, blocksize, cbytes)
    is checked before anything is decompressed: ``nbytes`` must be the expected block's size, ``cbytes``
    the body's length, and ``typesize`` the expected item size, in bytes or (as the Boss passes it) in
    bits, so a body of another item size with the same byte count is refused. The body is raw bytes,
    never a pickle (``application/blosc-python`` is not accepted anywhere).
    """
    dtype = expected.dtype.newbyteorder("<")
    nbytes = expected.nbytes
    if len(body) < _BLOSC_HEADER:
        raise InvalidResponseError(
            f"response from {expected.url} is not a blosc body: {len(body)} bytes, shorter than a "
            f"blosc header",
            url=expected.url,
            status=200,
        )
    typesize = body[3]
    announced, _blocksize, cbytes = struct.unpack_from("<III", body, 4)
    if announced != nbytes:
        raise InvalidResponseError(
            f"response from {expected.url} is a blosc body of {announced} uncompressed bytes, but a "
            f"cutout of "
            f"shape {tuple(expected.shape)} and dtype {expected.dtype.name} has {nbytes} bytes (wrong region "
            f"or dtype; check the description's dtype and bounds, or the body is not blosc)",
            url=expected.url,
            status=200,
        )
    typesizes = (dtype.itemsize, min(255, 8 * dtype.itemsize))
    if typesize not in typesizes:
        raise InvalidResponseError(
            f"response from {expected.url} is a blosc body of typesize {typesize}, but the description's "
            f"dtype {expected.dtype.name} has items of {dtype.itemsize} bytes (typesize {typesizes[0]}, or "
            f"{typesizes[1]} as the Boss writes it); the server holds another dtype: check the "
            f"description's dtype",
            url=expected.url,
            status=200,
        )
    if cbytes != len(body):
        raise InvalidResponseError(
            f"response from {expected.url} is a blosc body whose header announces {cbytes} compressed "
            f"bytes, but {len(body)} bytes arrived",
            url=expected.url,
            status=200,
        )
    decompress = blosc_decompressor()
    try:
        raw = decompress(body)
    except Exception as exc:  # noqa: BLE001 - blosc raises plain Exception/RuntimeError/ValueError subtypes
        raise InvalidResponseError(
            f"response from {expected.url} is not a usable blosc body ({type(exc).__name__}: {exc})",
            url=expected.url,
            status=200,
        ) from exc
    return array_from_bytes(raw, expected, "the decompressed blosc body of")


def encode_blosc(data: np.ndarray) -> bytes:
    """``data`` as the Boss sends it: raw C-order bytes, blosc-compressed.

    Raises
    ------
    MissingCodecError
        Neither ``blosc`` nor ``blosc2`` is installed.
    """
    module = blosc_module()
    if module is None:
        raise MissingCodecError(f"encoding blosc bodies needs the package 'blosc' {_INSTALL}")
    raw = np.ascontiguousarray(data).tobytes()
    if module.__name__ == "blosc":  # the Boss passes the bit depth as blosc's typesize
        return module.compress(raw, typesize=min(255, data.dtype.itemsize * 8))
    return module.compress(raw, typesize=data.dtype.itemsize)


CODEC = Codec("blosc", decode_blosc, encode_blosc, available=lambda: blosc_module() is not None)
