"""Decoding one zarr chunk: bytes -> bytes steps (compressor, crc32c), bytes -> array, array -> array.

Part of the ``"zarr"`` format (:mod:`.zarr`). A :class:`ChunkCodec` is built from the metadata
(:mod:`.zarr_meta`) once and decodes every chunk of an array (or every inner chunk of a shard):

* zarr v2: one optional compressor (``blosc``, ``zstd``, ``gzip``, ``zlib``, ``lz4``, ``bz2``, ``lzma``),
  then the chunk's bytes in the stored dtype (``<u2``, ``>u2``, ``|u1``) and ``order`` ``C`` or ``F``;
* zarr v3: the ``codecs`` list: ``transpose`` (array -> array), ``bytes`` (array -> bytes, ``endian``), then
  ``gzip``, ``zstd``, ``blosc`` and ``crc32c`` (bytes -> bytes), decoded in reverse order.

Bounds: the decoded size of every step is known before it runs (at most one compressor per chunk; the
steps inside it only add a 4-byte checksum each), so a compressor never inflates more than the chunk
(:func:`lazyflow_rbfs.remote.codecs.compressors.decompress`), and a body larger than
:meth:`ChunkCodec.max_body_bytes` is refused before it is read. A ``crc32c`` checksum is verified.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lazyflow_rbfs.errors import InvalidResponseError
from lazyflow_rbfs.remote.codecs.base import MissingCodecError
from lazyflow_rbfs.remote.codecs.compressors import decompress

__all__ = ["ChunkCodec", "crc32c", "crc32c_available", "COMPRESSORS", "CHECKSUM"]

#: Compressor names of :func:`~lazyflow_rbfs.remote.codecs.compressors.decompress` a chunk may use.
COMPRESSORS = frozenset({"gzip", "zlib", "zstd", "blosc", "lz4", "bz2", "xz"})
#: The checksum step's name.
CHECKSUM = "crc32c"

_CRC_HINT = "pip install 'lazyflow-rbfs[formats]' (or pip install crc32c)"


def _crc32c_function() -> object:
    try:
        import crc32c as _crc  # the crc32c package (what numcodecs' CRC32C uses too)

        return _crc.crc32c
    except ImportError:
        pass
    try:
        import google_crc32c  # noqa: F401 - same checksum, another well-kept package

        return google_crc32c.value
    except ImportError:
        return None


def crc32c_available() -> bool:
    """Whether a crc32c package is installed (``crc32c`` or ``google-crc32c``)."""
    return _crc32c_function() is not None


def crc32c(data: bytes) -> int:
    """The CRC-32C (Castagnoli) checksum of ``data``.

    Raises
    ------
    MissingCodecError
        No crc32c package is installed.
    """
    function = _crc32c_function()
    if function is None:
        raise MissingCodecError(f"the crc32c codec needs the package 'crc32c': {_CRC_HINT}")
    return int(function(bytes(data)))  # type: ignore[operator]


def _invalid(url: str, message: str) -> InvalidResponseError:
    return InvalidResponseError(f"zarr chunk {url}: {message}", url=url, status=None)


@dataclass(frozen=True)
class ChunkCodec:
    """How the chunks of one array (or the inner chunks of one sharded array) are stored.

    Attributes
    ----------
    stored:
        The dtype of the chunk bytes, with its byte order (``>u2``, ``<f4``, ``|u1``).
    order:
        ``"C"`` or ``"F"``: the memory order of the (transposed) chunk's bytes (zarr v2 ``order``).
    transpose:
        zarr v3 ``transpose``: the stored array is the chunk's axes in this order (``None``: as they are).
    steps:
        bytes -> bytes steps in *encoding* order (``("gzip", "crc32c")``); decoded last to first.
    """

    stored: np.dtype
    order: str = "C"
    transpose: tuple[int, ...] | None = None
    steps: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        compressors = [s for s in self.steps if s != CHECKSUM]
        if len(compressors) > 1 or any(s not in COMPRESSORS for s in compressors):
            raise ValueError(f"expected at most one known compressor, found steps {list(self.steps)}")

    @property
    def native(self) -> np.dtype:
        """The dtype chunks decode to (native byte order)."""
        return self.stored.newbyteorder("=")

    def raw_nbytes(self, shape: Sequence[int]) -> int:
        """Bytes of a chunk of ``shape`` before any bytes -> bytes step."""
        return math.prod(int(n) for n in shape) * self.stored.itemsize

    def max_body_bytes(self, shape: Sequence[int]) -> int:
        """The largest stored chunk of ``shape`` accepted: its raw size, plus each checksum, plus the
        overhead a compressor can add to incompressible data (a chunk is refused above it)."""
        nbytes = self.raw_nbytes(shape) + 4 * self.steps.count(CHECKSUM)
        if any(s != CHECKSUM for s in self.steps):
            nbytes += nbytes // 16 + (64 << 10)
        return nbytes

    def decode(self, body: bytes, shape: Sequence[int], url: str) -> np.ndarray:
        """The chunk of ``shape`` (C order, native dtype) stored in ``body``.

        Raises
        ------
        InvalidResponseError
            A bad checksum, data that does not inflate to the chunk's size, or a body of the wrong size.
        MissingCodecError
            A step needs a package that is not installed.
        """
        shape = tuple(int(n) for n in shape)
        data = bytes(body)
        if len(data) > self.max_body_bytes(shape):
            raise _invalid(
                url, f"{len(data)} bytes stored, more than the {self.max_body_bytes(shape)} a chunk can need"
            )
        raw = self.raw_nbytes(shape)
        for index in range(len(self.steps) - 1, -1, -1):
            step = self.steps[index]
            if step == CHECKSUM:
                data = self._check_crc(data, url)
            else:
                # What this compressor must inflate to: the raw chunk plus the checksums inside it.
                inner = raw + 4 * self.steps[:index].count(CHECKSUM)
                data = decompress(step, data, inner, url)
        if len(data) != raw:
            raise _invalid(
                url,
                f"expected {raw} bytes ({shape} of {self.stored.str}), found {len(data)} "
                f"(wrong chunk shape, dtype or codecs in the metadata, or a damaged chunk)",
            )
        stored_shape = shape if self.transpose is None else tuple(shape[a] for a in self.transpose)
        array = np.frombuffer(data, dtype=self.stored).reshape(stored_shape, order=self.order)  # type: ignore[call-overload]
        if self.transpose is not None:
            array = array.transpose(np.argsort(self.transpose))
        return np.ascontiguousarray(array, dtype=self.native)

    @staticmethod
    def _check_crc(data: bytes, url: str) -> bytes:
        if len(data) < 4:
            raise _invalid(url, f"{len(data)} bytes, too short for its crc32c checksum")
        (stated,) = struct.unpack_from("<I", data, len(data) - 4)
        payload = data[:-4]
        actual = crc32c(payload)
        if actual != stated:
            raise _invalid(
                url,
                f"crc32c checksum mismatch: the chunk states {stated:#010x}, its bytes give {actual:#010x} "
                f"(the chunk is damaged)",
            )
        return payload
