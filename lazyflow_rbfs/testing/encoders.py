"""Response bodies of the test server: one encoder per body encoding the server sends.

Each encoder turns the array to answer with into the bytes of a response body, as the real service of
that encoding would: an HDF5 file (the seed's cutout API), zlib-compressed ``.npy`` (``npz``/``npygz``,
also the Boss's), blosc (the Boss), raw little-endian chunks and JPEG (neuroglancer precomputed). The
``gzip`` ``Content-Encoding`` of precomputed chunks is the server's, not an encoder's.

They are the ``encode`` of the client's codecs (:mod:`lazyflow_rbfs.remote.codecs`, keyed by body
encoding), so the server sends exactly what the client decodes.
"""

from __future__ import annotations

import numpy as np

from lazyflow_rbfs.remote import codecs
from lazyflow_rbfs.remote.codecs.blosc import blosc_module

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
    return codecs.get("hdf5").encode(data, dataset=dataset_name, compression=compression)


def encode_npy_zlib(data: np.ndarray) -> bytes:
    """``data`` as an ``.npy`` file, zlib-compressed (formats ``npz``/``npygz``; the Boss's ``npygz``)."""
    return codecs.get("npy-zlib").encode(data)


def encode_blosc(data: np.ndarray) -> bytes:
    """``data`` as the Boss sends it: raw C-order bytes, blosc-compressed (needs :func:`blosc_module`)."""
    return codecs.get("blosc").encode(data)


def encode_raw_chunk(data: np.ndarray) -> bytes:
    """A precomputed ``raw`` chunk: ``data`` of shape ``(c, z, y, x)``, little-endian."""
    return codecs.get("raw").encode(data)


def encode_jpeg(data: np.ndarray, quality: int) -> bytes:
    """A precomputed ``jpeg`` chunk: ``data`` of shape ``(c, z, y, x)`` as one image of ``z * y`` rows."""
    return codecs.get("jpeg").encode(data, quality=quality)
