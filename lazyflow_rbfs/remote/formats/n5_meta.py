"""N5 metadata and block headers: ``attributes.json`` parsed and validated, a block's header checked.

Part of the ``"n5"`` format (:mod:`.n5`). N5 lists ``dimensions``, ``blockSize`` and ``axes`` fastest axis
first; everything here is returned in C order (slowest first), as the package presents every source.

A block file starts with a big-endian header: ``uint16`` mode (0 default, 1 varlength, 2 object),
``uint16`` ndim, ndim ``uint32`` block sizes (fastest first), and for mode 1 a ``uint32`` element count;
then the compressed data, big-endian, fastest axis first (a C-order array of the reversed sizes).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lazyflow_rbfs.description import SUPPORTED_DTYPES
from lazyflow_rbfs.errors import DescriptionError, InvalidResponseError
from lazyflow_rbfs.remote.codecs import compressors
from lazyflow_rbfs.remote.formats.base import json_object

__all__ = [
    "MAX_ATTRIBUTES_BYTES",
    "MAX_BLOCK_BYTES",
    "COMPRESSIONS",
    "N5Attributes",
    "parse_attributes",
    "parse_json_object",
    "compression_name",
    "axis_names",
    "check_compression_available",
    "max_block_body",
    "parse_block_header",
    "BlockHeader",
]

#: Largest ``attributes.json`` accepted (real ones are a few hundred bytes; multiscale groups a few kB).
MAX_ATTRIBUTES_BYTES = 4 * 1024 * 1024

#: Largest block accepted (``blockSize`` voxels x item size), as for precomputed chunks: every read fetches
#: whole blocks, so a larger one would let the metadata make the client allocate far more than a small
#: cache block needs. Real N5 blocks are 64^3..256^3 voxels.
MAX_BLOCK_BYTES = 128 * 1024 * 1024

#: N5 ``compression.type`` -> the decompressor of :mod:`~lazyflow_rbfs.remote.codecs.compressors` (gzip
#: with ``useZlib`` is ``zlib``).
COMPRESSIONS = {"raw": "raw", "gzip": "gzip", "bzip2": "bzip2", "xz": "xz", "blosc": "blosc", "zstd": "zstd"}

_N5_DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64")

#: N5 axis names (lower case) -> the package's axis letters.
_AXIS_NAMES = {"t": "t", "time": "t", "c": "c", "ch": "c", "channel": "c", "z": "z", "y": "y", "x": "x"}

#: Default names of unnamed axes, by dimensionality (``zyx``-style for the last three).
_DEFAULT_AXES = {1: "x", 2: "yx", 3: "zyx", 4: "czyx", 5: "tczyx"}

_MAX_COORDINATE = 2**53


@dataclass(frozen=True)
class N5Attributes:
    """A validated N5 dataset's ``attributes.json``; shapes in C order (reversed from the file)."""

    url: str
    shape: tuple[int, ...]
    block_shape: tuple[int, ...]
    dtype: np.dtype
    #: The decompressor name (see :data:`COMPRESSIONS`).
    compression: str
    #: Axis names from ``axes`` (C order, the package's letters), ``None`` if the file has none.
    axes: str | None


def _bad(url: str, what: str) -> InvalidResponseError:
    return InvalidResponseError(f"the N5 attributes file {url} is not usable: {what}", url=url, status=200)


def parse_json_object(body: bytes, url: str) -> dict[str, Any]:
    """``body`` as a JSON object (:func:`~lazyflow_rbfs.remote.formats.base.json_object`).

    Raises
    ------
    InvalidResponseError
        Not JSON, or not an object.
    """
    return json_object(body, url, "the N5 attributes file")


def _int_list(value: Any, url: str, what: str, ndim: int | None = None) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(v, bool) or not isinstance(v, int) or not 0 < v < _MAX_COORDINATE for v in value)
        or (ndim is not None and len(value) != ndim)
    ):
        count = f"{ndim} " if ndim is not None else ""
        raise _bad(url, f"expected {what} as a list of {count}integers > 0, found {value!r}"[:300])
    return [int(v) for v in value]


def compression_name(obj: Mapping[str, Any], url: str) -> str:
    """The decompressor of a dataset's ``compression`` (or old-style ``compressionType``); raw if neither.

    Raises
    ------
    InvalidResponseError
        A compression that is not an object with a string ``type``.
    DescriptionError
        (field ``source``) A compression this package does not read (the message lists those it reads).
    """
    spec = obj.get("compression")
    if spec is None:
        kind = obj.get("compressionType", "raw")
        params: Mapping[str, Any] = {}
    elif isinstance(spec, dict):
        kind, params = spec.get("type"), spec
    else:
        raise _bad(url, f"expected 'compression' an object with a 'type', found {spec!r}"[:300])
    if not isinstance(kind, str):
        raise _bad(url, f"expected the compression type a string, found {kind!r}"[:300])
    if kind not in COMPRESSIONS:
        raise DescriptionError(
            f"source: expected an N5 dataset compressed with one of {sorted(COMPRESSIONS)}, found "
            f"compression {kind!r} in {url}",
            field="source",
        )
    if kind == "gzip" and params.get("useZlib") is True:
        return "zlib"
    return COMPRESSIONS[kind]


def axis_names(value: Any, ndim: int, url: str) -> str | None:
    """The ``axes`` attribute (fastest first) as the package's letters in C order; ``None`` if absent.

    Raises
    ------
    DescriptionError
        (field ``axes``) Names that are not t, c, z, y, x (or time, channel), repeated, or the wrong count.
    """
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != ndim or not all(isinstance(v, str) for v in value):
        raise DescriptionError(
            f"axes: expected the 'axes' of {url} to be {ndim} names, found {value!r}"[:400], field="axes"
        )
    letters = []
    for name in value:
        letter = _AXIS_NAMES.get(name.strip().lower())
        if letter is None:
            raise DescriptionError(
                f"axes: expected N5 axis names among x, y, z, c (or channel), t (or time), found {name!r} "
                f"in {url} (axes {value!r}); this package names axes with the letters txyzc",
                field="axes",
            )
        letters.append(letter)
    if len(set(letters)) != len(letters):
        raise DescriptionError(f"axes: expected distinct axis names in {url}, found {value!r}", field="axes")
    return "".join(reversed(letters))


def default_axes(ndim: int, url: str) -> str:
    """``zyx``-style names of an N5 dataset without ``axes``.

    Raises
    ------
    DescriptionError
        More than five dimensions.
    """
    if ndim not in _DEFAULT_AXES:
        raise DescriptionError(
            f"source: expected an N5 dataset of 1 to 5 dimensions, found {ndim} in {url}", field="source"
        )
    return _DEFAULT_AXES[ndim]


def parse_attributes(obj: Mapping[str, Any], url: str) -> N5Attributes:
    """A dataset's attributes (an object with ``dimensions``), validated, in C order.

    Raises
    ------
    InvalidResponseError
        A field missing or of the wrong kind (the message names it), or blocks over
        :data:`MAX_BLOCK_BYTES`.
    DescriptionError
        A data type, compression or axis names this package does not read.
    """
    dims = _int_list(obj.get("dimensions"), url, "'dimensions'")
    block = _int_list(obj.get("blockSize"), url, "'blockSize'", len(dims))
    data_type = obj.get("dataType")
    if data_type not in _N5_DTYPES or data_type not in SUPPORTED_DTYPES:
        raise DescriptionError(
            f"dtype: expected an N5 dataType among {list(_N5_DTYPES)}, found {data_type!r} in {url}"[:400],
            field="dtype",
        )
    dtype = np.dtype(SUPPORTED_DTYPES[data_type])
    nbytes = math.prod(block) * dtype.itemsize
    if nbytes > MAX_BLOCK_BYTES:
        raise _bad(
            url,
            f"blockSize {block} of {data_type} makes blocks of {nbytes} bytes, more than the "
            f"{MAX_BLOCK_BYTES} bytes (128 MiB) accepted; every read fetches whole blocks",
        )
    compression = compression_name(obj, url)
    axes = axis_names(obj.get("axes"), len(dims), url)
    return N5Attributes(
        url=url,
        shape=tuple(reversed(dims)),
        block_shape=tuple(reversed(block)),
        dtype=dtype,
        compression=compression,
        axes=axes,
    )


def check_compression_available(compression: str, url: str, field: str = "source") -> None:
    """Raise :class:`DescriptionError` if ``compression`` needs a package that is not installed."""
    if not compressors.available(compression):
        raise DescriptionError(
            f"{field}: the N5 dataset {url} is {compression}-compressed, which needs the package "
            f"'numcodecs' ({compressors.INSTALL_HINT}); expected it installed, found it missing",
            field=field,
        )


def max_block_body(block_shape: Sequence[int], itemsize: int) -> int:
    """The most bytes a block file may hold: its header and its data, with room for compressors that
    expand incompressible data (gzip, bzip2, xz and blosc add well under a quarter)."""
    ndim = len(block_shape)
    nbytes = math.prod(int(n) for n in block_shape) * itemsize
    return 8 + 4 * ndim + nbytes + nbytes // 4 + 4096


@dataclass(frozen=True)
class BlockHeader:
    """A checked block header: the stored block shape (C order) and where the data starts."""

    shape: tuple[int, ...]
    offset: int


def _bad_block(url: str, what: str) -> InvalidResponseError:
    return InvalidResponseError(f"N5 block {url}: {what}", url=url, status=200)


def parse_block_header(body: bytes, url: str, cropped: Sequence[int], full: Sequence[int]) -> BlockHeader:
    """Check a block file's header against the block it stands for, before anything is inflated.

    ``cropped`` is the block's shape inside the dataset and ``full`` the dataset's ``blockSize`` (C order).
    A stored shape may be anything from the cropped shape (N5's own writers crop edge blocks) to the full
    block (other writers pad them); nothing else is accepted.

    Raises
    ------
    InvalidResponseError
        Too short, mode 2 (object) or unknown, another ndim, a shape outside that range, or a mode 1
        element count that does not match the shape.
    """
    ndim = len(full)
    if len(body) < 4:
        raise _bad_block(url, f"expected a header of at least 4 bytes, found {len(body)} bytes")
    mode, stored_ndim = struct.unpack_from(">HH", body, 0)
    if mode == 2:
        raise _bad_block(url, "expected an array block (mode 0 or 1), found mode 2 (object); not readable")
    if mode not in (0, 1):
        raise _bad_block(url, f"expected block mode 0 or 1, found {mode}")
    if stored_ndim != ndim:
        raise _bad_block(url, f"expected a block of {ndim} dimensions, found {stored_ndim} in its header")
    offset = 4 + 4 * ndim + (4 if mode == 1 else 0)
    if len(body) < offset:
        raise _bad_block(url, f"expected a header of {offset} bytes, found {len(body)} bytes")
    stored = tuple(reversed(struct.unpack_from(f">{ndim}I", body, 4)))
    if any(not int(c) <= s <= int(f) for s, c, f in zip(stored, cropped, full)):
        raise _bad_block(
            url,
            f"expected a block shape (C order) between {list(cropped)} (cropped at the dataset's edge) and "
            f"the blockSize {list(full)}, found {list(stored)} in its header",
        )
    if mode == 1:
        (count,) = struct.unpack_from(">I", body, 4 + 4 * ndim)
        if count != math.prod(stored):
            raise _bad_block(
                url, f"expected {math.prod(stored)} elements for shape {list(stored)}, found {count}"
            )
    return BlockHeader(shape=stored, offset=offset)
