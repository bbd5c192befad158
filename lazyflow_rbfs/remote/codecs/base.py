"""What every codec shares: the expected block, the codec record, validation and the error guard.

A codec turns a response body of one *body encoding* (``"hdf5"``, ``"npy-zlib"``, ``"blosc"``, ``"raw"``,
``"jpeg"``) into an array and back. Its ``decode`` only has to get *an* array out of the body (or raise
:class:`~lazyflow_rbfs.errors.InvalidResponseError`); :meth:`Codec.decode` then checks shape and dtype the
same way for every encoding (:func:`validate_array`).

Whatever a decoder raises on hostile bytes (``OverflowError`` from h5py, ``struct.error``, a tokenizer
error in a .npy header, Pillow's ``DecompressionBombError``, ...) is turned into an
:class:`~lazyflow_rbfs.errors.InvalidResponseError` naming the URL in one place, :func:`guarded`, which
wraps every decoder.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lazyflow_rbfs.errors import InvalidResponseError, RbfsError

__all__ = [
    "Expected",
    "Decoder",
    "Encoder",
    "Codec",
    "MissingCodecError",
    "guarded",
    "validate_array",
    "check_shape_dtype",
    "array_from_bytes",
    "twice_plus_headers",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Expected:
    """What a response must contain.

    Attributes
    ----------
    url:
        The request's URL (for error messages only).
    shape:
        The requested roi's shape.
    dtype:
        The description's dtype; a body of another dtype is accepted only if it casts safely to it.
    dataset:
        The dataset/key name inside the body, for formats that have one (``hdf5_dataset``).
    """

    url: str
    shape: tuple[int, ...]
    dtype: np.dtype
    dataset: str | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the expected array (``shape`` x item size)."""
        return math.prod(int(n) for n in self.shape) * np.dtype(self.dtype).itemsize


Decoder = Callable[[bytes, Expected], np.ndarray]
Encoder = Callable[..., bytes]


class MissingCodecError(ImportError):
    """Internal: an optional codec package is not installed (turned into a package error by callers)."""


def twice_plus_headers(nbytes: int) -> int:
    """The default body limit: twice the array (incompressible data) plus 1 MiB of headers."""
    return 2 * int(nbytes) + (1 << 20)


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Codec:
    """One body encoding: how to decode (and, for the test server, encode) a block.

    Attributes
    ----------
    name:
        The encoding's name in the registry (``"hdf5"``).
    decoder:
        ``decoder(body, expected) -> array``, wrapped by :func:`guarded`; may return another dtype that
        casts safely, or raise :class:`InvalidResponseError`.
    encoder:
        ``encoder(array, **options) -> bytes``, the body a service of this encoding sends (``None`` if
        this package never writes it).
    body_limit:
        ``body_limit(nbytes)`` is the largest body accepted for an array of ``nbytes`` raw bytes.
    aliases:
        Other names of the encoding (``"npz"``, ``"npygz"``).
    available:
        False when an optional package it needs is not installed.
    """

    name: str
    decoder: Decoder
    encoder: Encoder | None = None
    body_limit: Callable[[int], int] = twice_plus_headers
    aliases: tuple[str, ...] = ()
    available: Callable[[], bool] = field(default=_always)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", guarded(f"{self.name} body")(self.decoder))

    def decode(self, body: bytes, expected: Expected) -> np.ndarray:
        """Decode ``body`` and validate it against ``expected``; the array is in ``expected.dtype``.

        Raises
        ------
        InvalidResponseError
            The body is not an array of the expected shape and of a dtype that casts safely.
        MissingCodecError
            An optional package the encoding needs is not installed.
        """
        return validate_array(self.decoder(body, expected), expected)

    def encode(self, array: np.ndarray, **options: Any) -> bytes:
        """The body of ``array`` in this encoding (``options`` are the encoding's, e.g. ``quality``)."""
        if self.encoder is None:
            raise NotImplementedError(f"the {self.name} codec decodes only")
        return self.encoder(array, **options)

    def max_body_bytes(self, nbytes: int) -> int:
        """The largest response body accepted for an array of ``nbytes`` raw bytes (``max_bytes`` of
        :meth:`HttpClient.get <lazyflow_rbfs.remote.http.HttpClient.get>`)."""
        return int(self.body_limit(int(nbytes)))


def guarded(what: str) -> Callable[[Decoder], Decoder]:
    """Make a decoder raise only :class:`InvalidResponseError` on a malformed body (the one place where
    errors from parsing hostile bytes are translated).

    Errors of this package and a missing optional codec pass through unchanged; every other ``Exception``
    (``MemoryError`` included) becomes an ``InvalidResponseError`` naming the URL, with the original
    chained. ``KeyboardInterrupt`` and ``SystemExit`` are never caught. A decoder guarded once is
    returned as it is.
    """

    def wrap(decoder: Decoder) -> Decoder:
        if getattr(decoder, "_rbfs_guarded", False):
            return decoder

        @functools.wraps(decoder)
        def guarded_decoder(body: bytes, expected: Expected) -> np.ndarray:
            try:
                return decoder(body, expected)
            except (RbfsError, MissingCodecError):
                raise
            except Exception as exc:  # noqa: BLE001 - hostile bytes reach C parsers with many error types
                logger.debug("decoding %s as a %s failed", expected.url, what, exc_info=True)
                detail = f"{type(exc).__name__}: {exc}"
                raise InvalidResponseError(
                    f"response from {expected.url} is not a usable {what}: the body ({len(body)} bytes, "
                    f"beginning {bytes(body[:16])!r}) is malformed ({detail[:300]})",
                    url=expected.url,
                    status=200,
                ) from exc

        guarded_decoder._rbfs_guarded = True  # type: ignore[attr-defined]
        return guarded_decoder

    return wrap


def validate_array(array: np.ndarray, expected: Expected) -> np.ndarray:
    """Check shape and dtype; return the array in the expected (native) dtype.

    Raises
    ------
    InvalidResponseError
        The shape differs from the requested one, or the dtype does not cast safely to the expected one.
    """
    check_shape_dtype(array.shape, array.dtype, expected)
    if array.dtype != expected.dtype:
        array = array.astype(expected.dtype)
    return array


def check_shape_dtype(shape: tuple[int, ...], dtype: np.dtype, expected: Expected) -> None:
    """Raise :class:`InvalidResponseError` unless ``shape`` is the expected one and ``dtype`` casts safely
    to the expected dtype (checked on what a body *declares*, before anything is inflated)."""
    if tuple(int(s) for s in shape) != tuple(expected.shape):
        raise InvalidResponseError(
            f"response from {expected.url} holds an array of shape {tuple(int(s) for s in shape)}, "
            f"but the request asked for shape {tuple(expected.shape)}; the server does not serve the "
            f"requested region (check the description's axes, origin_offset and url_format)",
            url=expected.url,
            status=200,
        )
    if not np.can_cast(dtype, expected.dtype, "safe"):
        raise InvalidResponseError(
            f"response from {expected.url} holds dtype {np.dtype(dtype).name}, which does not convert "
            f"safely to the description's dtype {expected.dtype.name}; fix the description's dtype",
            url=expected.url,
            status=200,
        )


def array_from_bytes(data: bytes, expected: Expected, what: str, hint: str = "") -> np.ndarray:
    """``data`` as the little-endian C-order array of ``expected``; it must hold exactly that many bytes.

    ``what`` names the body in the error (``"precomputed chunk"``), ``hint`` is appended to it.
    """
    if len(data) != expected.nbytes:
        raise InvalidResponseError(
            f"{what} {expected.url} has {len(data)} bytes, but an array of shape {tuple(expected.shape)} "
            f"and dtype {expected.dtype.name} has {expected.nbytes} bytes{hint}",
            url=expected.url,
            status=200,
        )
    little = expected.dtype.newbyteorder("<")
    return np.frombuffer(data, dtype=little).reshape(expected.shape).astype(expected.dtype, copy=False)
