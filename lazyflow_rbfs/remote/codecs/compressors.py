"""Byte compressors of chunked array formats (zarr, N5, sharded precomputed), bounded by the chunk's size.

:func:`decompress` turns the compressed bytes of one chunk into exactly ``nbytes`` bytes, or raises
:class:`~lazyflow_rbfs.errors.InvalidResponseError`. The size a chunk must inflate to is known before
anything is inflated, so no body can make the client allocate much more than the chunk it stands for:

* ``gzip``, ``zlib``, ``bz2``, ``xz``/``lzma`` (standard library): inflated with an output limit of
  ``nbytes + 1``;
* ``zstd``: the frame's content size, when the frame states it, must be ``nbytes`` before inflating; a
  frame that does not state it is inflated by numcodecs and checked after;
* ``lz4`` (numcodecs' framing: a little-endian ``uint32`` size, then an LZ4 block): the size must be
  ``nbytes``;
* ``blosc``: the header's uncompressed size must be ``nbytes`` and its compressed size the body's length.

``zstd``, ``lz4`` and ``blosc`` need the package ``numcodecs`` (``pip install 'lazyflow-rbfs[formats]'``);
without it they raise :class:`~lazyflow_rbfs.remote.codecs.base.MissingCodecError`.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable

from lazyflow_rbfs.errors import InvalidResponseError
from lazyflow_rbfs.remote.codecs.base import MissingCodecError

__all__ = ["decompress", "names", "available", "numcodecs_module", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'lazyflow-rbfs[formats]' (or pip install numcodecs)"


def numcodecs_module() -> object:
    """``numcodecs``, or :class:`MissingCodecError` naming what needs it."""
    try:
        import numcodecs
    except ImportError:
        raise MissingCodecError(f"this compressor needs the package 'numcodecs': {INSTALL_HINT}") from None
    return numcodecs


def _invalid(url: str, message: str) -> InvalidResponseError:
    return InvalidResponseError(f"chunk {url}: {message}", url=url, status=None)


def _too_large(url: str, name: str, nbytes: int) -> InvalidResponseError:
    return _invalid(url, f"{name} data inflates to more than the {nbytes} bytes of the chunk; refusing it")


def _exact(out: bytes, nbytes: int, url: str, name: str) -> bytes:
    if len(out) != nbytes:
        raise _invalid(url, f"{name} data inflates to {len(out)} bytes, but the chunk has {nbytes} bytes")
    return out


def _zlib_like(wbits: int, name: str) -> Callable[[bytes, int, str], bytes]:
    def run(data: bytes, nbytes: int, url: str) -> bytes:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data, nbytes + 1)
        except zlib.error as exc:
            raise _invalid(url, f"not valid {name} data ({exc})") from None
        if len(out) > nbytes or inflater.unconsumed_tail:
            raise _too_large(url, name, nbytes)
        return _exact(out, nbytes, url, name)

    return run


def _bz2(data: bytes, nbytes: int, url: str) -> bytes:
    inflater = bz2.BZ2Decompressor()
    try:
        out = inflater.decompress(data, nbytes + 1)
    except (OSError, ValueError) as exc:
        raise _invalid(url, f"not valid bzip2 data ({exc})") from None
    if len(out) > nbytes or (not inflater.eof and not inflater.needs_input):
        raise _too_large(url, "bzip2", nbytes)
    return _exact(out, nbytes, url, "bzip2")


def _xz(data: bytes, nbytes: int, url: str) -> bytes:
    inflater = lzma.LZMADecompressor()
    try:
        out = inflater.decompress(data, nbytes + 1)
    except lzma.LZMAError as exc:
        raise _invalid(url, f"not valid xz/lzma data ({exc})") from None
    if len(out) > nbytes or (not inflater.eof and not inflater.needs_input):
        raise _too_large(url, "xz", nbytes)
    return _exact(out, nbytes, url, "xz")


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd_content_size(data: bytes) -> int | None:
    """The content size a zstd frame header states, or ``None`` if it states none.

    Raises
    ------
    ValueError
        Not a zstd frame header.
    """
    if len(data) < 6 or data[:4] != _ZSTD_MAGIC:
        raise ValueError("no zstd frame magic")
    descriptor = data[4]
    fcs_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if size == 0:
        return None
    if len(data) < pos + size:
        raise ValueError("zstd frame header cut short")
    value = int.from_bytes(data[pos : pos + size], "little")
    return value + 256 if size == 2 else value


def _zstd(data: bytes, nbytes: int, url: str) -> bytes:
    try:
        stated = zstd_content_size(data)
    except ValueError as exc:
        raise _invalid(url, f"not zstd data ({exc})") from None
    if stated is not None and stated != nbytes:
        raise _invalid(url, f"zstd frame states {stated} bytes, but the chunk has {nbytes} bytes")
    codec = numcodecs_module().Zstd()  # type: ignore[attr-defined]
    try:
        out = bytes(codec.decode(data))
    except Exception as exc:  # noqa: BLE001 - numcodecs raises RuntimeError/ValueError subtypes
        raise _invalid(url, f"not valid zstd data ({type(exc).__name__}: {exc})") from None
    return _exact(out, nbytes, url, "zstd")


def _lz4(data: bytes, nbytes: int, url: str) -> bytes:
    if len(data) < 4:
        raise _invalid(url, "lz4 data shorter than its 4-byte size header")
    (stated,) = struct.unpack_from("<I", data, 0)
    if stated != nbytes:
        raise _invalid(url, f"lz4 data states {stated} bytes, but the chunk has {nbytes} bytes")
    codec = numcodecs_module().LZ4()  # type: ignore[attr-defined]
    try:
        out = bytes(codec.decode(data))
    except Exception as exc:  # noqa: BLE001
        raise _invalid(url, f"not valid lz4 data ({type(exc).__name__}: {exc})") from None
    return _exact(out, nbytes, url, "lz4")


def _blosc(data: bytes, nbytes: int, url: str) -> bytes:
    if len(data) < 16:
        raise _invalid(url, "blosc data shorter than a blosc header")
    stated, _blocksize, cbytes = struct.unpack_from("<III", data, 4)
    if stated != nbytes:
        raise _invalid(url, f"blosc header states {stated} bytes, but the chunk has {nbytes} bytes")
    if cbytes != len(data):
        raise _invalid(url, f"blosc header states {cbytes} compressed bytes, but {len(data)} bytes arrived")
    codec = numcodecs_module().Blosc()  # type: ignore[attr-defined]
    try:
        out = bytes(codec.decode(data))
    except Exception as exc:  # noqa: BLE001
        raise _invalid(url, f"not valid blosc data ({type(exc).__name__}: {exc})") from None
    return _exact(out, nbytes, url, "blosc")


def _raw(data: bytes, nbytes: int, url: str) -> bytes:
    return _exact(bytes(data), nbytes, url, "uncompressed")


_DECOMPRESSORS: dict[str, Callable[[bytes, int, str], bytes]] = {
    "raw": _raw,
    "gzip": _zlib_like(16 + zlib.MAX_WBITS, "gzip"),
    "zlib": _zlib_like(zlib.MAX_WBITS, "zlib"),
    "bz2": _bz2,
    "bzip2": _bz2,
    "xz": _xz,
    "lzma": _xz,
    "zstd": _zstd,
    "lz4": _lz4,
    "blosc": _blosc,
}
_NEEDS_NUMCODECS = frozenset({"zstd", "lz4", "blosc"})


def names() -> tuple[str, ...]:
    """The compressor names :func:`decompress` knows."""
    return tuple(_DECOMPRESSORS)


def available(name: str) -> bool:
    """Whether ``name`` is known and its package is installed."""
    if name not in _DECOMPRESSORS:
        return False
    if name in _NEEDS_NUMCODECS:
        try:
            numcodecs_module()
        except MissingCodecError:
            return False
    return True


def decompress(name: str, data: bytes, nbytes: int, url: str) -> bytes:
    """Inflate one chunk compressed with ``name`` to exactly ``nbytes`` bytes.

    Raises
    ------
    InvalidResponseError
        The data is not valid, or inflates to another size (checked before inflating where the format
        states the size).
    MissingCodecError
        The compressor needs a package that is not installed.
    ValueError
        An unknown compressor name (formats check names when they read the metadata).
    """
    try:
        run = _DECOMPRESSORS[name]
    except KeyError:
        raise ValueError(f"unknown compressor {name!r}; known: {', '.join(_DECOMPRESSORS)}") from None
    return run(data, int(nbytes), url)
