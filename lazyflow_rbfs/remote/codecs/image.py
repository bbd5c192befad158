"""Image bodies: neuroglancer precomputed ``jpeg`` and ``png`` chunks (need Pillow, an optional dependency).

A chunk of shape ``(c, z, y, x)`` is one image ``x`` wide and ``y * z`` high (rows are ``(z, y)`` with ``y``
fastest): jpeg with 1 (L) or 3 (RGB) channels of uint8; png with 1 to 4 channels of uint8 (L, LA, RGB,
RGBA) or 1 channel of uint16. Only Pillow's parser of that one image format sees a body, and the image
size its header declares is checked before any pixel is decoded.
"""

from __future__ import annotations

import io

import numpy as np

from lazyflow_rbfs.errors import InvalidResponseError
from lazyflow_rbfs.remote.codecs.base import Codec, Expected, MissingCodecError, guarded

__all__ = [
    "JPEG",
    "PNG",
    "jpeg_available",
    "png_available",
    "decode_precomputed_jpeg",
    "decode_precomputed_png",
    "encode_jpeg",
    "encode_png",
]


def jpeg_available() -> bool:
    """True if Pillow (needed for precomputed ``jpeg`` chunks) is installed."""
    try:
        import PIL.Image  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


@guarded("precomputed jpeg chunk")
def decode_precomputed_jpeg(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a precomputed ``jpeg`` chunk: an image x wide and y*z high, 1 (L) or 3 (RGB) channels.

    ``expected.shape`` is the chunk's ``(c, z, y, x)``; ``expected.dtype`` must be ``uint8``. Only Pillow's
    JPEG parser sees the body, and the image size its header declares is checked before any pixel is
    decoded (Pillow's ``open`` is lazy).

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
        with Image.open(io.BytesIO(body), formats=("JPEG",)) as image:
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
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidResponseError(
            f"precomputed chunk {expected.url} is not a decodable JPEG ({type(exc).__name__}: {exc})",
            url=expected.url,
            status=200,
        ) from exc
    # Rows are (z, y) with y fastest; columns x; then the colour channels.
    return np.ascontiguousarray(pixels.reshape(z, y, x, c).transpose(3, 0, 1, 2))


def encode_jpeg(data: np.ndarray, quality: int = 95) -> bytes:
    """A ``jpeg`` chunk: ``data`` of shape ``(c, z, y, x)`` as one image of ``z * y`` rows (needs Pillow)."""
    try:
        from PIL import Image  # type: ignore[import-not-found]
    except ImportError:
        raise MissingCodecError("encoding jpeg chunks needs Pillow (pip install pillow)") from None
    c, z, y, x = data.shape
    pixels = np.ascontiguousarray(data.astype(np.uint8).transpose(1, 2, 3, 0).reshape(z * y, x, c))
    image = Image.fromarray(pixels[..., 0] if c == 1 else pixels, mode=None)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


JPEG = Codec("jpeg", decode_precomputed_jpeg, encode_jpeg, available=jpeg_available)


def png_available() -> bool:
    """True if Pillow (needed for precomputed ``png`` chunks) is installed."""
    return jpeg_available()


#: PNG image modes of a chunk of ``(channels, dtype)``.
PNG_MODES = {
    (1, "uint8"): ("L",),
    (2, "uint8"): ("LA",),
    (3, "uint8"): ("RGB",),
    (4, "uint8"): ("RGBA",),
    (1, "uint16"): ("I;16", "I;16B", "I;16L", "I"),
}


@guarded("precomputed png chunk")
def decode_precomputed_png(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a precomputed ``png`` chunk: an image x wide and y*z high (see :data:`PNG_MODES`).

    ``expected.shape`` is the chunk's ``(c, z, y, x)``. Only Pillow's PNG parser sees the body, and the
    image size and mode its header declares are checked before any pixel is decoded.

    Raises
    ------
    MissingCodecError
        Pillow is not installed.
    InvalidResponseError
        Not a PNG of the expected size, channel count and sample type.
    """
    try:
        from PIL import Image, UnidentifiedImageError  # type: ignore[import-not-found]
    except ImportError:
        raise MissingCodecError(
            "decoding precomputed 'png' chunks needs Pillow (pip install 'lazyflow-rbfs[precomputed]' or "
            "pip install pillow)"
        ) from None
    c, z, y, x = (int(n) for n in expected.shape)
    dtype = np.dtype(expected.dtype)
    modes = PNG_MODES.get((c, dtype.name), ())
    try:
        with Image.open(io.BytesIO(body), formats=("PNG",)) as image:
            if image.format != "PNG" or image.size != (x, y * z) or image.mode not in modes:
                raise InvalidResponseError(
                    f"precomputed chunk {expected.url} is a {image.format} image of size {image.size} and "
                    f"mode {image.mode}; expected a PNG of size {(x, y * z)} (x by y*z) with mode "
                    f"{' or '.join(modes) or '(none: png holds 1-4 channels of uint8 or 1 of uint16)'}",
                    url=expected.url,
                    status=200,
                )
            pixels = np.asarray(image)
    except InvalidResponseError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidResponseError(
            f"precomputed chunk {expected.url} is not a decodable PNG ({type(exc).__name__}: {exc})",
            url=expected.url,
            status=200,
        ) from exc
    if pixels.size != c * z * y * x:
        raise InvalidResponseError(
            f"precomputed chunk {expected.url} decodes to {pixels.size} samples, expected {c * z * y * x}",
            url=expected.url,
            status=200,
        )
    pixels = pixels.astype(dtype, copy=False)
    return np.ascontiguousarray(pixels.reshape(z, y, x, c).transpose(3, 0, 1, 2))


def encode_png(data: np.ndarray) -> bytes:
    """A ``png`` chunk: ``data`` of shape ``(c, z, y, x)`` (uint8 with 1-4 channels, or uint16 with 1) as
    one image of ``z * y`` rows (needs Pillow)."""
    try:
        from PIL import Image  # type: ignore[import-not-found]
    except ImportError:
        raise MissingCodecError("encoding png chunks needs Pillow (pip install pillow)") from None
    c, z, y, x = data.shape
    pixels = np.ascontiguousarray(data.transpose(1, 2, 3, 0).reshape(z * y, x, c))
    if data.dtype == np.uint16:
        image = Image.frombytes("I;16", (x, z * y), pixels[..., 0].astype("<u2").tobytes())
    else:
        image = Image.fromarray(pixels[..., 0] if c == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


PNG = Codec("png", decode_precomputed_png, encode_png, available=png_available)
