"""Response bodies of the test server: one encoder per body encoding the server sends.

Each encoder turns the array to answer with into the bytes of a response body, as the real service of
that encoding would: an HDF5 file (the seed's cutout API), zlib-compressed ``.npy`` (``npz``/``npygz``,
also the Boss's), blosc (the Boss), raw little-endian chunks and JPEG (neuroglancer precomputed). The
``gzip`` ``Content-Encoding`` of precomputed chunks is the server's, not an encoder's.

They are kept together so that the client's decoders and these can later share one codec table keyed by
body encoding.
"""

from __future__ import annotations

import io
import zlib
from typing import Any

import h5py
import numpy as np

__all__ = [
    "encode_hdf5",
    "encode_npy_zlib",
    "blosc_module",
    "encode_blosc",
    "encode_raw_chunk",
    "encode_jpeg",
]


def encode_hdf5(data: np.ndarray, dataset_name: str, compression: str | None = None) -> bytes:
    """An in-memory HDF5 file holding ``data`` as ``dataset_name`` (h5py ``compression``, if any)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset(dataset_name, data=data, compression=compression)
    return buffer.getvalue()


def encode_npy_zlib(data: np.ndarray) -> bytes:
    """``data`` as an ``.npy`` file, zlib-compressed (formats ``npz``/``npygz``; the Boss's ``npygz``)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(data), allow_pickle=False)
    return zlib.compress(buffer.getvalue(), 1)


def blosc_module() -> Any:
    """python-blosc (the Boss's own, blosc1 bodies), else blosc2, else ``None``."""
    for name in ("blosc", "blosc2"):
        try:
            return __import__(name)
        except ImportError:
            continue
    return None


def encode_blosc(data: np.ndarray) -> bytes:
    """``data`` as the Boss sends it: raw C-order bytes, blosc-compressed (needs :func:`blosc_module`)."""
    # The Boss passes the bit depth as blosc's typesize.
    module = blosc_module()
    raw = np.ascontiguousarray(data).tobytes()
    if module.__name__ == "blosc":
        return module.compress(raw, typesize=min(255, data.dtype.itemsize * 8))
    return module.compress(raw, typesize=data.dtype.itemsize)


def encode_raw_chunk(data: np.ndarray) -> bytes:
    """A precomputed ``raw`` chunk: ``data`` of shape ``(c, z, y, x)``, little-endian."""
    # (c, z, y, x) in C order is x, y, z, c in Fortran order.
    return np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()


def encode_jpeg(data: np.ndarray, quality: int) -> bytes:
    """A precomputed ``jpeg`` chunk: ``data`` of shape ``(c, z, y, x)`` as one image of ``z * y`` rows."""
    from PIL import Image  # type: ignore[import-not-found]

    c, z, y, x = data.shape
    pixels = np.ascontiguousarray(data.astype(np.uint8).transpose(1, 2, 3, 0).reshape(z * y, x, c))
    image = Image.fromarray(pixels[..., 0] if c == 1 else pixels, mode=None)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
