"""``compressed_segmentation`` bodies: neuroglancer's block-wise encoding of uint32/uint64 label volumes.

Decoded by the package ``compressed-segmentation`` (an optional dependency: ``pip install
'lazyflow-rbfs[precomputed]'``). That library trusts its input (a damaged body can crash the process), so
:func:`check_structure` first checks everything a body declares against its own length: the channel
offsets, every block header (offsets, bit widths), every block's encoded values and the lookup-table
entries they index. Only a body that passes is handed to the library, and the array it returns has the
expected shape, allocated from the chunk's size, never from the body.

Layout (neuroglancer's ``compressed_segmentation`` README): ``num_channels`` little-endian ``uint32``
offsets (in 32-bit words) of each channel's data; per channel a grid of block headers (x fastest), each
two words: lookup table offset (low 24 bits) and encoded bits (high 8 bits: 0, 1, 2, 4, 8, 16 or 32),
then the encoded values offset; offsets are relative to the channel's data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from lazyflow_rbfs.errors import InvalidResponseError
from lazyflow_rbfs.remote.codecs.base import Codec, Expected, MissingCodecError

__all__ = [
    "CODEC",
    "codec_for",
    "check_structure",
    "decode_compressed_segmentation",
    "encode_compressed_segmentation",
    "available",
    "INSTALL_HINT",
]

INSTALL_HINT = "pip install 'lazyflow-rbfs[precomputed]' (or pip install compressed-segmentation)"
_BITS = (0, 1, 2, 4, 8, 16, 32)
DEFAULT_BLOCK = (8, 8, 8)


def _library() -> object:
    try:
        import compressed_segmentation  # type: ignore[import-not-found]
    except ImportError:
        raise MissingCodecError(
            f"decoding precomputed 'compressed_segmentation' chunks needs the package "
            f"'compressed-segmentation' ({INSTALL_HINT})"
        ) from None
    return compressed_segmentation


def available() -> bool:
    """True if the package ``compressed-segmentation`` is installed."""
    try:
        _library()
    except MissingCodecError:
        return False
    return True


def _invalid(url: str, message: str) -> InvalidResponseError:
    return InvalidResponseError(
        f"precomputed chunk {url} is not valid compressed_segmentation data: {message}", url=url, status=200
    )


def _max_index(words: np.ndarray, bits: int, nvox: int) -> int:
    """The largest value among the first ``nvox`` ``bits``-wide values packed in ``words``."""
    if bits == 32:
        return int(words[:nvox].max())
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    values = ((words[:, None] >> shifts) & np.uint32((1 << bits) - 1)).ravel()[:nvox]
    return int(values.max())


def check_structure(
    body: bytes, channels: int, size_xyz: Sequence[int], block_xyz: Sequence[int], itemsize: int, url: str
) -> list[np.ndarray]:
    """Check a body against its own length; return each channel's data as ``uint32`` words.

    Raises
    ------
    InvalidResponseError
        An offset, bit width or table index points outside the body (the message says which).
    """
    if len(body) % 4:
        raise _invalid(url, f"{len(body)} bytes is not a whole number of 32-bit words")
    words = np.frombuffer(body, dtype="<u4")
    if len(words) <= channels:
        raise _invalid(url, f"{len(body)} bytes cannot hold the headers of {channels} channel(s)")
    offsets = [int(v) for v in words[:channels]] + [len(words)]
    if offsets[0] != channels or any(a >= b for a, b in zip(offsets, offsets[1:])):
        raise _invalid(url, f"channel offsets {offsets[:channels]} are not increasing from {channels}")
    grid = [-(-int(s) // int(b)) for s, b in zip(size_xyz, block_xyz)]
    nblocks = math.prod(grid)
    nvox = math.prod(int(b) for b in block_xyz)
    per_entry = itemsize // 4
    out = []
    for c in range(channels):
        data = words[offsets[c] : offsets[c + 1]]
        n = len(data)
        if n < 2 * nblocks:
            raise _invalid(url, f"channel {c} has {n} words, fewer than its {nblocks} block headers need")
        headers = data[: 2 * nblocks].reshape(-1, 2)
        tables = (headers[:, 0] & 0xFFFFFF).astype(np.int64)
        bits = (headers[:, 0] >> 24).astype(np.int64)
        values = headers[:, 1].astype(np.int64)
        bad_bits = ~np.isin(bits, _BITS)
        if bad_bits.any():
            i = int(np.nonzero(bad_bits)[0][0])
            raise _invalid(url, f"block {i} of channel {c} declares {int(bits[i])} bits per value")
        nwords = (nvox * bits + 31) // 32
        over = (values + nwords > n) | (tables + per_entry > n)
        if over.any():
            i = int(np.nonzero(over)[0][0])
            raise _invalid(url, f"block {i} of channel {c} points past the end of the channel's {n} words")
        # A table may hold fewer than 2**bits entries: where the full width would not fit, the values used
        # must index entries that exist.
        short = np.nonzero(tables + per_entry * (np.int64(1) << bits) > n)[0]
        for i in short.tolist():
            entries = (n - int(tables[i])) // per_entry
            b = int(bits[i])
            start = int(values[i])
            if b and _max_index(data[start : start + int(nwords[i])], b, nvox) >= entries:
                raise _invalid(url, f"block {i} of channel {c} indexes past the end of its lookup table")
        out.append(data)
    return out


def decode_compressed_segmentation(
    body: bytes, expected: Expected, block_xyz: Sequence[int] = DEFAULT_BLOCK
) -> np.ndarray:
    """Decode a chunk of shape ``(c, z, y, x)`` (``expected.shape``) of uint32 or uint64.

    Raises
    ------
    MissingCodecError
        ``compressed-segmentation`` is not installed.
    InvalidResponseError
        The body is not valid (checked by :func:`check_structure` before the library sees it), or the
        dtype is not uint32/uint64.
    """
    library = _library()
    dtype = np.dtype(expected.dtype)
    if dtype not in (np.dtype(np.uint32), np.dtype(np.uint64)):
        raise _invalid(expected.url, f"compressed_segmentation holds uint32 or uint64, not {dtype.name}")
    c, z, y, x = (int(n) for n in expected.shape)
    channels = check_structure(body, c, (x, y, z), block_xyz, dtype.itemsize, expected.url)
    out = np.empty((c, z, y, x), dtype=dtype)
    one = np.array([1], dtype="<u4").tobytes()
    for i, data in enumerate(channels):
        decoded = library.decompress(  # type: ignore[attr-defined]
            one + data.tobytes(), (x, y, z), dtype, tuple(int(b) for b in block_xyz), order="F"
        )
        out[i] = np.asarray(decoded).reshape((x, y, z), order="F").transpose(2, 1, 0)
    return out


def encode_compressed_segmentation(data: np.ndarray, block_xyz: Sequence[int] = DEFAULT_BLOCK) -> bytes:
    """A ``compressed_segmentation`` chunk of ``data`` (shape ``(c, z, y, x)``, uint32 or uint64)."""
    library = _library()
    parts = []
    for channel in data:
        xyz = np.asfortranarray(channel.transpose(2, 1, 0))
        encoded = library.compress(xyz, block_size=tuple(int(b) for b in block_xyz), order="F")  # type: ignore[attr-defined]
        parts.append(bytes(encoded)[4:])  # drop the single-channel header (one word: 1)
    offsets, at = [], len(parts)
    for part in parts:
        offsets.append(at)
        at += len(part) // 4
    return np.asarray(offsets, dtype="<u4").tobytes() + b"".join(parts)


def codec_for(block_xyz: Sequence[int]) -> Codec:
    """The codec of chunks encoded with compression blocks of ``block_xyz`` (x, y, z)."""
    block = tuple(int(b) for b in block_xyz)
    return Codec(
        "compressed_segmentation",
        functools.partial(decode_compressed_segmentation, block_xyz=block),  # type: ignore[arg-type]
        functools.partial(encode_compressed_segmentation, block_xyz=block),
        available=available,
    )


#: The codec with the default compression block (8, 8, 8); readers use :func:`codec_for` the scale's own.
CODEC = codec_for(DEFAULT_BLOCK)
