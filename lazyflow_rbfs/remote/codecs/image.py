"""Image bodies: neuroglancer precomputed ``jpeg`` chunks (needs Pillow, an optional dependency).

A chunk of shape ``(c, z, y, x)`` is one image ``x`` wide and ``y * z`` high (rows are ``(z, y)`` with ``y``
fastest), with 1 (L) or 3 (RGB) channels. Only Pillow's JPEG parser sees a body, and the image size its
header declares is checked before any pixel is decoded.
"""

from __future__ import annotations

import io

import numpy as np

from lazyflow_rbfs.errors import InvalidResponseError
from lazyflow_rbfs.remote.codecs.base import Codec, Expected, MissingCodecError, guarded

__all__ = ["JPEG", "jpeg_available", "decode_precomputed_jpeg", "encode_jpeg"]


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
