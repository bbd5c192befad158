"""Body codecs, keyed by body encoding: turn a response body into a validated numpy array, and back.

A response is data, never instructions. Every decoder checks what a body *declares* (dataset layout,
links, filters, chunk shapes, .npy headers, blosc headers, image sizes) against the expected block before
it inflates or allocates anything, so no body can make the client read a local file or allocate much more
than the block it stands for. Whatever else goes wrong while parsing hostile bytes becomes an
:class:`~lazyflow_rbfs.errors.InvalidResponseError` naming the URL in one place (:func:`.base.guarded`).

Encodings (one module each): ``"hdf5"`` (:mod:`.hdf5`), ``"npy-zlib"`` alias ``"npz"``/``"npygz"``
(:mod:`.npy`), ``"blosc"`` (:mod:`.blosc`), ``"raw"`` (:mod:`.raw`), ``"jpeg"`` and ``"png"`` (:mod:`.image`),
``"compressed_segmentation"`` (:mod:`.segmentation`). A remote
format decodes a body with ``codecs.get(encoding).decode(body, expected)`` (decode, then
:func:`validate_array`); the test server encodes with ``codecs.get(encoding).encode(array, ...)``. A new
encoding is one module holding a :class:`Codec` plus one :func:`register` call here.

Chunked array formats (zarr, N5, sharded precomputed) compress chunks with byte compressors rather than
body encodings: :mod:`.compressors` (``compressors.decompress(name, data, nbytes, url)``) inflates them to
exactly the chunk's size.
"""

from __future__ import annotations

import numpy as np

from lazyflow_rbfs.errors import DescriptionError
from lazyflow_rbfs.remote.codecs import blosc, compressors, hdf5, image, npy, raw, segmentation
from lazyflow_rbfs.remote.codecs.base import (
    Codec,
    Decoder,
    Encoder,
    Expected,
    MissingCodecError,
    guarded,
    validate_array,
)
from lazyflow_rbfs.remote.codecs.blosc import blosc_decompressor, decode_blosc
from lazyflow_rbfs.remote.codecs.hdf5 import decode_hdf5
from lazyflow_rbfs.remote.codecs.image import decode_precomputed_jpeg, jpeg_available
from lazyflow_rbfs.remote.codecs.npy import decode_npy_zlib
from lazyflow_rbfs.remote.codecs.raw import decode_precomputed_raw

__all__ = [
    "Codec",
    "Expected",
    "Decoder",
    "Encoder",
    "register",
    "get",
    "names",
    "decode",
    "validate_array",
    "max_body_bytes",
    "register_decoder",
    "get_decoder",
    "decode_hdf5",
    "decode_npy_zlib",
    "decode_blosc",
    "decode_precomputed_raw",
    "decode_precomputed_jpeg",
    "blosc_decompressor",
    "jpeg_available",
    "MissingCodecError",
    "compressors",
]

_CODECS: dict[str, Codec] = {}


def register(codec: Codec) -> None:
    """Make ``codec`` the one for its name and aliases (replacing any codec registered under them)."""
    for name in (codec.name, *codec.aliases):
        _CODECS[name] = codec


def get(encoding: str) -> Codec:
    """The codec of the body encoding ``encoding`` (a name or an alias).

    Raises
    ------
    LookupError
        No codec of that name is registered (the message lists the registered ones).
    """
    try:
        return _CODECS[encoding]
    except (KeyError, TypeError):
        raise LookupError(f"no codec for the body encoding {encoding!r}; registered: {names()}") from None


def names() -> list[str]:
    """The registered encoding names and aliases, sorted."""
    return sorted(_CODECS)


def decode(encoding: str, body: bytes, expected: Expected) -> np.ndarray:
    """``get(encoding).decode(body, expected)``: decode ``body`` and validate it against ``expected``.

    Raises
    ------
    InvalidResponseError
        The body is not a block of ``expected`` (for a user's decoder too: any exception it raises on a
        malformed body becomes one).
    DescriptionError
        (field ``format``) No codec is registered under ``encoding``.
    """
    return _codec_for_format(encoding).decode(body, expected)


def max_body_bytes(encoding: str, nbytes: int) -> int:
    """The largest response body accepted for a block of ``nbytes`` raw bytes in ``encoding``.

    Callers pass it to :meth:`HttpClient.get` as ``max_bytes`` (checked against ``Content-Length`` and
    while reading, after any ``Content-Encoding`` is undone). Generous enough for incompressible data:
    ``raw`` bodies must hold exactly ``nbytes`` (the slack covers a gzip ``Content-Length``); HDF5 bodies
    may be 4x the array (headers and the chunk index of small chunks), every other encoding 2x; each plus
    1 MiB (64 KiB for ``raw``) of headers. An unknown encoding gets the 2x limit.
    """
    codec = _CODECS.get(encoding)
    if codec is None:
        return 2 * int(nbytes) + (1 << 20)
    return codec.max_body_bytes(nbytes)


# -- the decoder API of earlier versions (a decoder function per name) ---------------------------------------


def register_decoder(fmt: str, decoder: Decoder) -> None:
    """Register a decode-only codec named ``fmt`` (earlier API; see :func:`register`)."""
    register(Codec(fmt, guarded(f"{fmt} cutout")(decoder)))


def get_decoder(fmt: str) -> Decoder:
    """The decoder of ``fmt`` (earlier API); a :class:`DescriptionError` on field ``format`` if there is
    none."""
    return _codec_for_format(fmt).decoder


def _codec_for_format(fmt: str) -> Codec:
    codec = _CODECS.get(fmt)
    if codec is None:
        raise DescriptionError(
            f"remote format {fmt!r} is not supported; expected one of {names()}", field="format"
        )
    return codec


for _codec in (hdf5.CODEC, npy.CODEC, blosc.CODEC, raw.CODEC, image.JPEG, image.PNG, segmentation.CODEC):
    register(_codec)
del _codec
