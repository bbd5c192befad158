"""Response decoders: turn a response body into a validated numpy array.

A decoder is a plain function ``decode(body, expected) -> numpy.ndarray`` registered under the remote
description's ``format`` name. It only has to get *an* array out of the body (or raise
:class:`~lazyflow_rbfs.errors.InvalidResponseError`); :func:`decode` then checks the shape and dtype the
same way for every format, so a new wire format is one small function plus one :func:`register_decoder`
call.
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import h5py
import numpy as np

from lazyflow_rbfs.errors import DescriptionError, InvalidResponseError

__all__ = [
    "Expected",
    "Decoder",
    "register_decoder",
    "get_decoder",
    "decode",
    "validate_array",
    "decode_hdf5",
    "decode_npy_zlib",
    "decode_blosc",
    "decode_precomputed_raw",
    "decode_precomputed_jpeg",
    "blosc_decompressor",
    "jpeg_available",
    "MissingCodecError",
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


Decoder = Callable[[bytes, Expected], np.ndarray]

_DECODERS: dict[str, Decoder] = {}


def register_decoder(fmt: str, decoder: Decoder) -> None:
    """Make ``decoder`` responsible for remote descriptions whose ``format`` is ``fmt``."""
    _DECODERS[fmt] = decoder


def get_decoder(fmt: str) -> Decoder:
    """The decoder for ``fmt``; a :class:`DescriptionError` on field ``format`` if there is none."""
    try:
        return _DECODERS[fmt]
    except KeyError:
        raise DescriptionError(
            f"remote format {fmt!r} is not supported; expected one of {sorted(_DECODERS)}", field="format"
        ) from None


def decode(fmt: str, body: bytes, expected: Expected) -> np.ndarray:
    """Decode ``body`` with the decoder of ``fmt`` and validate the result against ``expected``."""
    return validate_array(get_decoder(fmt)(body, expected), expected)


def validate_array(array: np.ndarray, expected: Expected) -> np.ndarray:
    """Check shape and dtype; return the array in the expected (native) dtype.

    Raises
    ------
    InvalidResponseError
        The shape differs from the requested one, or the dtype does not cast safely to the expected one.
    """
    _check_shape_dtype(array.shape, array.dtype, expected)
    if array.dtype != expected.dtype:
        array = array.astype(expected.dtype)
    return array


def _check_shape_dtype(shape: tuple[int, ...], dtype: np.dtype, expected: Expected) -> None:
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


def _invalid(expected: Expected, what: str, exc: BaseException | None = None) -> InvalidResponseError:
    detail = f" ({exc})" if exc is not None else ""
    return InvalidResponseError(
        f"response from {expected.url} is not a usable HDF5 cutout: {what}{detail}",
        url=expected.url,
        status=200,
    )


def _normalize(name: str) -> str:
    return "/" + name.strip("/")


def decode_hdf5(body: bytes, expected: Expected) -> np.ndarray:
    """Decode an HDF5 file held in ``body`` and return its dataset ``expected.dataset``.

    Shape and dtype are checked on the dataset's metadata before any voxel is read.
    """
    name = _normalize(expected.dataset or "")
    try:
        with h5py.File(io.BytesIO(body), "r") as f:
            node = f.get(name)
            if not isinstance(node, h5py.Dataset):
                found = sorted(_dataset_names(f))
                raise _invalid(expected, f"expected a dataset {name!r}, found datasets {found}")
            _check_shape_dtype(node.shape, node.dtype, expected)
            return node[()]
    except InvalidResponseError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        start = body[:40].decode("latin-1", "replace")
        raise _invalid(
            expected, f"the body ({len(body)} bytes, beginning {start!r}) is not a complete HDF5 file", exc
        ) from exc


def _dataset_names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda key, obj: names.append("/" + key) if isinstance(obj, h5py.Dataset) else None)
    return names


register_decoder("hdf5", decode_hdf5)


# ---------------------------------------------------------------------------------------------------------
# zlib-compressed .npy ("npz" of openconnecto.me/ndstore, "application/npygz" of BossDB)

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


def decode_npy_zlib(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a zlib-compressed ``.npy`` file (formats ``npz`` and ``npygz``); never unpickles.

    Leading axes of length 1 beyond the expected number of axes are dropped (ndstore and cloud-volume
    add a channel axis of 1).
    """
    size = int(np.prod(expected.shape, dtype=np.int64))
    data = _unzlib(body, size * 16 + (1 << 16), expected, "zlib-compressed .npy cutout")
    if not data.startswith(_NPY_MAGIC):
        raise InvalidResponseError(
            f"response from {expected.url} is not a usable zlib-compressed .npy cutout: the inflated body "
            f"begins {data[:20]!r}, not the .npy magic {_NPY_MAGIC!r}",
            url=expected.url,
            status=200,
        )
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidResponseError(
            f"response from {expected.url} is not a usable .npy cutout ({exc}); object arrays are never "
            f"accepted",
            url=expected.url,
            status=200,
        ) from exc
    while array.ndim > len(expected.shape) and array.shape[0] == 1:
        array = array[0]
    if array.dtype.kind not in "biufc":
        raise InvalidResponseError(
            f"response from {expected.url} holds a non-numeric .npy array (dtype {array.dtype}); "
            f"expected {expected.dtype.name}",
            url=expected.url,
            status=200,
        )
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


register_decoder("npz", decode_npy_zlib)
register_decoder("npygz", decode_npy_zlib)


# ---------------------------------------------------------------------------------------------------------
# Optional codecs: blosc (BossDB "application/blosc") and JPEG (neuroglancer precomputed)


class MissingCodecError(ImportError):
    """Internal: an optional codec package is not installed (turned into a package error by callers)."""


def blosc_decompressor() -> Callable[[bytes], bytes]:
    """The ``decompress`` of ``blosc`` (python-blosc) or, failing that, of ``blosc2``; both read Boss bodies.

    Raises
    ------
    MissingCodecError
        Neither package is installed.
    """
    try:
        import blosc  # type: ignore[import-not-found]

        return blosc.decompress
    except ImportError:
        pass
    try:
        import blosc2  # type: ignore[import-not-found]

        return blosc2.decompress
    except ImportError:
        raise MissingCodecError(
            "decoding BossDB 'application/blosc' bodies needs the package 'blosc' "
            "(pip install 'lazyflow-rbfs[boss]' or pip install blosc)"
        ) from None


def jpeg_available() -> bool:
    """True if Pillow (needed for precomputed ``jpeg`` chunks) is installed."""
    try:
        import PIL.Image  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


_BLOSC_HEADER = 16


def decode_blosc(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a blosc-compressed C-order array of ``expected.shape`` and ``expected.dtype`` (BossDB).

    The uncompressed size in the blosc header is checked before anything is decompressed. The body is
    raw bytes, never a pickle (``application/blosc-python`` is not accepted anywhere).
    """
    dtype = expected.dtype.newbyteorder("<")
    nbytes = int(np.prod(expected.shape, dtype=np.int64)) * dtype.itemsize
    if len(body) < _BLOSC_HEADER:
        raise InvalidResponseError(
            f"response from {expected.url} is not a blosc body: {len(body)} bytes, shorter than a "
            f"blosc header",
            url=expected.url,
            status=200,
        )
    announced = int.from_bytes(body[4:8], "little")
    if announced != nbytes:
        raise InvalidResponseError(
            f"response from {expected.url} is a blosc body of {announced} uncompressed bytes, but a "
            f"cutout of "
            f"shape {tuple(expected.shape)} and dtype {expected.dtype.name} has {nbytes} bytes (wrong region "
            f"or dtype; check the description's dtype and bounds, or the body is not blosc)",
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
    if len(raw) != nbytes:
        raise InvalidResponseError(
            f"response from {expected.url} decompressed to {len(raw)} bytes, expected {nbytes}",
            url=expected.url,
            status=200,
        )
    return np.frombuffer(raw, dtype=dtype).reshape(expected.shape).astype(expected.dtype, copy=False)


def decode_precomputed_raw(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a precomputed ``raw`` chunk: little-endian x,y,z,c in Fortran order, i.e. C-order (c,z,y,x).

    ``expected.shape`` is the chunk's ``(c, z, y, x)`` (edge chunks are cut short).
    """
    dtype = expected.dtype.newbyteorder("<")
    nbytes = int(np.prod(expected.shape, dtype=np.int64)) * dtype.itemsize
    if len(body) != nbytes:
        raise InvalidResponseError(
            f"precomputed chunk {expected.url} has {len(body)} bytes, but a raw chunk of shape (c,z,y,x) "
            f"{tuple(expected.shape)} and dtype {expected.dtype.name} has {nbytes} bytes (wrong info file, "
            f"or an encoding other than raw)",
            url=expected.url,
            status=200,
        )
    return np.frombuffer(body, dtype=dtype).reshape(expected.shape).astype(expected.dtype, copy=False)


def decode_precomputed_jpeg(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a precomputed ``jpeg`` chunk: an image x wide and y*z high, 1 (L) or 3 (RGB) channels.

    ``expected.shape`` is the chunk's ``(c, z, y, x)``; ``expected.dtype`` must be ``uint8``.

    Raises
    ------
    MissingCodecError
        Pillow is not installed.
    InvalidResponseError
        Not a JPEG of the expected size and channel count.
    """
    try:
        from PIL import Image, UnidentifiedImageError  # type: ignore[import-not-found]
    except ImportError:
        raise MissingCodecError(
            "decoding precomputed 'jpeg' chunks needs Pillow (pip install 'lazyflow-rbfs[precomputed]' or "
            "pip install pillow)"
        ) from None
    c, z, y, x = (int(n) for n in expected.shape)
    mode = {1: "L", 3: "RGB"}.get(c)
    try:
        with Image.open(io.BytesIO(body)) as image:
            if image.format != "JPEG" or image.size != (x, y * z) or mode is None:
                raise InvalidResponseError(
                    f"precomputed chunk {expected.url} is a {image.format} image of size {image.size} "
                    f"and mode "
                    f"{image.mode}; expected a JPEG of size {(x, y * z)} (x by y*z) with {c} channel(s)",
                    url=expected.url,
                    status=200,
                )
            if image.mode != mode:
                image = image.convert(mode)
            pixels = np.asarray(image, dtype=np.uint8)
    except InvalidResponseError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidResponseError(
            f"precomputed chunk {expected.url} is not a decodable JPEG ({type(exc).__name__}: {exc})",
            url=expected.url,
            status=200,
        ) from exc
    # Rows are (z, y) with y fastest; columns x; then the colour channels.
    return np.ascontiguousarray(pixels.reshape(z, y, x, c).transpose(3, 0, 1, 2))
