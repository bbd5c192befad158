"""zlib-compressed ``.npy`` bodies: ``npz`` of openconnecto.me/ndstore, ``application/npygz`` of BossDB.

Never unpickles: the ``.npy`` header (dtype, shape, data length) is checked against the expected block
before the array is made, and the body is inflated with a limit.
"""

from __future__ import annotations

import io
import math
import zlib

import numpy as np

from lazyflow_rbfs.errors import InvalidResponseError
from lazyflow_rbfs.remote.codecs.base import Codec, Expected, check_shape_dtype, guarded

__all__ = ["CODEC", "decode_npy_zlib", "encode_npy_zlib"]

_NPY_MAGIC = b"\x93NUMPY"


def _unzlib(body: bytes, limit: int, expected: Expected, what: str) -> bytes:
    """zlib-decompress at most ``limit`` bytes (a compression bomb is refused, not inflated)."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidResponseError(
            f"response from {expected.url} is not a usable {what}: the body ({len(body)} bytes, beginning "
            f"{body[:20]!r}) is not zlib-compressed ({exc})",
            url=expected.url,
            status=200,
        ) from exc
    if len(data) > limit:
        raise InvalidResponseError(
            f"response from {expected.url} inflates to more than {limit} bytes, more than a {what} of shape "
            f"{tuple(expected.shape)} can hold; refusing it",
            url=expected.url,
            status=200,
        )
    if not inflater.eof:
        raise InvalidResponseError(
            f"response from {expected.url} is not a usable {what}: the zlib stream is truncated",
            url=expected.url,
            status=200,
        )
    return data


#: Room for the .npy header in an inflated body (numpy refuses headers above 10,000 bytes by default).
_NPY_HEADER_ROOM = 1 << 16


@guarded("zlib-compressed .npy cutout")
def decode_npy_zlib(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a zlib-compressed ``.npy`` file (formats ``npz`` and ``npygz``); never unpickles.

    The body is inflated with a limit (the expected block plus room for the header), then the ``.npy``
    header is parsed and its dtype and shape checked against the expected block before the array is
    made, as a view of the inflated bytes, which must hold exactly the declared data: a header cannot make
    the client allocate anything. Leading axes of length 1 beyond the expected number of axes are dropped
    (ndstore and cloud-volume add a channel axis of 1). A zip archive (``numpy.savez``) is not a cutout and
    is refused before anything is inflated.
    """
    what = "zlib-compressed .npy cutout"
    size = math.prod(int(n) for n in expected.shape)
    data = _unzlib(body, size * expected.dtype.itemsize + _NPY_HEADER_ROOM, expected, what)
    if not data.startswith(_NPY_MAGIC):
        raise InvalidResponseError(
            f"response from {expected.url} is not a usable {what}: the inflated body begins {data[:20]!r}, "
            f"not the .npy magic {_NPY_MAGIC!r}",
            url=expected.url,
            status=200,
        )
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise InvalidResponseError(
            f"response from {expected.url} is a .npy file of format version {version}; expected version "
            f"1.0 or 2.0 (numeric arrays)",
            url=expected.url,
            status=200,
        )
    shape = tuple(int(n) for n in shape)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufc":
        raise InvalidResponseError(
            f"response from {expected.url} holds a non-numeric .npy array (dtype {dtype}); expected "
            f"{expected.dtype.name} (object arrays are never accepted)",
            url=expected.url,
            status=200,
        )
    squeezed = shape
    while len(squeezed) > len(expected.shape) and squeezed[0] == 1:
        squeezed = squeezed[1:]
    check_shape_dtype(squeezed, dtype, expected)
    offset = stream.tell()
    nbytes = math.prod(squeezed) * dtype.itemsize
    if len(data) - offset != nbytes:
        raise InvalidResponseError(
            f"response from {expected.url} is a .npy file of shape {shape} and dtype {dtype} ({nbytes} "
            f"bytes), but holds {len(data) - offset} bytes of data",
            url=expected.url,
            status=200,
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(squeezed), offset=offset)
    # A writable C-order copy, as numpy.load gave before: the block's size, checked above.
    return array.reshape(squeezed, order="F" if fortran_order else "C").copy(order="C")


def encode_npy_zlib(data: np.ndarray, level: int = 1) -> bytes:
    """``data`` as an ``.npy`` file, zlib-compressed at ``level`` (never a pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(data), allow_pickle=False)
    return zlib.compress(buffer.getvalue(), level)


CODEC = Codec("npy-zlib", decode_npy_zlib, encode_npy_zlib, aliases=("npz", "npygz"))
