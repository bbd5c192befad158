"""zarr metadata: v2 ``.zarray`` and v3 ``zarr.json`` of an array, validated.

Part of the ``"zarr"`` format (:mod:`.zarr`). :func:`parse_v2_array` and :func:`parse_v3_array` turn an
array's metadata into a :class:`ZarrArray` (shape, chunk grid, dtype, fill value, chunk keys, codecs,
sharding); OME-Zarr images are :mod:`.zarr_ome`.

Everything a chunk read allocates is bounded here: a chunk (or inner chunk) larger than
:data:`MAX_CHUNK_BYTES`, or a shard index larger than :data:`MAX_INDEX_BYTES`, is refused when the
metadata is read, before any chunk is requested. Unsupported features (filters, other codecs, nested
sharding, codecs around a shard) are a :class:`~lazyflow_rbfs.errors.DescriptionError` naming them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lazyflow_rbfs.errors import DescriptionError, InvalidResponseError
from lazyflow_rbfs.remote.formats.base import json_object
from lazyflow_rbfs.remote.formats.zarr_codecs import CHECKSUM, ChunkCodec, crc32c_available

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_CHUNK_BYTES",
    "MAX_INDEX_BYTES",
    "ShardSpec",
    "ZarrArray",
    "parse_json",
    "parse_v2_array",
    "parse_v3_array",
]

#: Largest metadata file accepted (real ones are a few kB).
MAX_METADATA_BYTES = 16 * 1024 * 1024
#: Largest chunk (inner chunk when sharded) accepted, decoded: 128 MiB (see the precomputed format).
MAX_CHUNK_BYTES = 128 * 1024 * 1024
#: Largest shard index accepted (16 bytes per inner chunk): 16 MiB, a million inner chunks per shard.
MAX_INDEX_BYTES = 16 * 1024 * 1024
_MAX_COORDINATE = 2**53

#: zarr v3 ``data_type`` -> numpy dtype.
_V3_TYPES = {
    "bool": "bool",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "float16": "float16",
    "float32": "float32",
    "float64": "float64",
    "complex64": "complex64",
    "complex128": "complex128",
}
#: zarr v2 compressor ``id`` -> compressor name of :mod:`lazyflow_rbfs.remote.codecs.compressors`.
_V2_COMPRESSORS = {
    "blosc": "blosc",
    "zstd": "zstd",
    "gzip": "gzip",
    "zlib": "zlib",
    "lz4": "lz4",
    "bz2": "bz2",
    "lzma": "xz",
}
_V3_COMPRESSORS = {"gzip": "gzip", "zstd": "zstd", "blosc": "blosc"}


def _bad(url: str, what: str) -> InvalidResponseError:
    return InvalidResponseError(f"the zarr metadata {url} is not usable: {what}"[:600], url=url, status=200)


def _unsupported(url: str, what: str) -> DescriptionError:
    return DescriptionError(f"source: {url}: {what}"[:600], field="source")


def parse_json(body: bytes, url: str) -> dict[str, Any]:
    """A metadata file as a JSON object (``NaN`` and ``Infinity`` allowed, as zarr v2 writes them).

    Raises
    ------
    InvalidResponseError
        Not JSON, or not an object.
    """
    return json_object(body, url, "the zarr metadata")


def _int_list(value: Any, url: str, what: str, *, positive: bool, ndim: int | None = None) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or (ndim is not None and len(value) != ndim)
        or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < _MAX_COORDINATE for v in value)
        or (positive and any(v == 0 for v in value))
    ):
        n = f"{ndim} " if ndim is not None else ""
        sign = "positive" if positive else "non-negative"
        raise _bad(url, f"expected {what} as a list of {n}{sign} integers below 2**53, found {value!r}"[:300])
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class ShardSpec:
    """zarr v3 ``sharding_indexed``: inner chunks of a shard, their codec, where the index is."""

    inner: tuple[int, ...]
    codec: ChunkCodec
    index_at_end: bool
    index_crc: bool


@dataclass(frozen=True)
class ZarrArray:
    """A validated zarr array: what reading chunks needs.

    ``chunks`` is the chunk grid (the shard shape when sharded); ``fill_value`` a scalar of ``dtype``.
    """

    url: str
    zarr_format: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    fill_value: Any
    codec: ChunkCodec | None
    shard: ShardSpec | None
    key_prefix: str | None
    separator: str
    dimension_names: tuple[str | None, ...] | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def unit(self) -> tuple[int, ...]:
        """The unit a read fetches: the chunk, or the inner chunk of a sharded array."""
        return self.shard.inner if self.shard is not None else self.chunks

    @property
    def chunks_per_shard(self) -> tuple[int, ...]:
        if self.shard is None:
            return tuple(1 for _ in self.shape)
        return tuple(c // i for c, i in zip(self.chunks, self.shard.inner))

    def chunk_key(self, grid: Sequence[int]) -> str:
        """The key (path below the array) of the chunk (shard) at grid position ``grid``."""
        parts = [str(int(g)) for g in grid]
        if self.key_prefix is not None:
            parts = [self.key_prefix, *parts]
        elif not parts:
            parts = ["0"]
        return self.separator.join(parts)


# ---------------------------------------------------------------------------------------------------------
# Fill values


def _fill_value(value: Any, dtype: np.dtype, url: str, zarr_format: int) -> Any:
    """The fill value as a scalar of ``dtype`` (``null`` in v2: zero)."""
    what = f"fill_value {value!r} for data type {dtype.name}"
    if value is None:
        if zarr_format == 3:
            raise _bad(url, "expected a fill_value, found null")
        return dtype.type(0)
    try:
        if dtype.kind == "b":
            if not isinstance(value, (bool, int)):
                raise ValueError
            return np.bool_(bool(value))
        if dtype.kind in "iu":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
                raise ValueError
            info = np.iinfo(dtype)
            if not info.min <= int(value) <= info.max:
                raise ValueError
            return dtype.type(int(value))
        if dtype.kind == "f":
            return dtype.type(_float(value, dtype))
        if dtype.kind == "c":
            if isinstance(value, list) and len(value) == 2:
                real = dtype.type(0).real.dtype
                return dtype.type(complex(_float(value[0], real), _float(value[1], real)))
            raise ValueError
    except (ValueError, TypeError, OverflowError):
        raise _bad(url, f"expected a {dtype.name} value, found {what}") from None
    raise _bad(url, f"unsupported {what}")  # pragma: no cover - dtypes are checked before


def _float(value: Any, dtype: np.dtype) -> float:
    special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    if isinstance(value, str):
        if value in special:
            return special[value]
        if value.startswith("0x"):  # v3: the value's bytes, big-endian hex
            raw = bytes.fromhex(value[2:])
            if len(raw) != dtype.itemsize:
                raise ValueError(value)
            return float(np.frombuffer(raw, dtype=dtype.newbyteorder(">"))[0])
        raise ValueError(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(value)
    return float(value)


# ---------------------------------------------------------------------------------------------------------
# zarr v2


def _v2_dtype(value: Any, url: str) -> np.dtype:
    if not isinstance(value, str) or len(value) < 3 or value[0] not in "<>|" or value[1] not in "biufc":
        raise _unsupported(
            url, f"expected a numeric dtype such as '<u2', '>f4' or '|u1', found dtype {value!r}"[:200]
        )
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise _bad(url, f"expected a numpy dtype string, found {value!r}") from None
    if dtype.newbyteorder("=").name not in _V3_TYPES:
        raise _unsupported(url, f"dtype {value!r} is not supported (expected one of {sorted(_V3_TYPES)})")
    return dtype


def _check_chunk_size(url: str, chunk: Sequence[int], itemsize: int, what: str) -> None:
    nbytes = math.prod(chunk) * itemsize
    if nbytes > MAX_CHUNK_BYTES:
        raise _bad(
            url,
            f"{what} {list(chunk)} holds {nbytes} bytes, more than the {MAX_CHUNK_BYTES} bytes (128 MiB) "
            f"accepted; every read fetches whole chunks, so this array cannot be cached in small blocks",
        )


def parse_v2_array(obj: dict[str, Any], url: str) -> ZarrArray:
    """A zarr v2 ``.zarray`` (``url``: the file, for messages; the array is its folder).

    Raises
    ------
    InvalidResponseError
        A field missing or of the wrong kind, a chunk larger than :data:`MAX_CHUNK_BYTES`.
    DescriptionError
        A feature this reader does not read (filters, another compressor, object dtypes).
    """
    if obj.get("zarr_format") != 2:
        raise _bad(url, f"expected zarr_format 2, found {obj.get('zarr_format')!r}")
    shape = _int_list(obj.get("shape"), url, "shape", positive=False)
    chunks = _int_list(obj.get("chunks"), url, "chunks", positive=True, ndim=len(shape))
    stored = _v2_dtype(obj.get("dtype"), url)
    order = obj.get("order", "C")
    if order not in ("C", "F"):
        raise _bad(url, f"expected order 'C' or 'F', found {order!r}")
    filters = obj.get("filters")
    if filters not in (None, []):
        ids = (
            [f.get("id") if isinstance(f, dict) else f for f in filters]
            if isinstance(filters, list)
            else filters
        )
        raise _unsupported(
            url, f"zarr v2 filters are not supported (found filters {ids!r}); expected none (null)"
        )
    steps: tuple[str, ...] = ()
    compressor = obj.get("compressor")
    if compressor is not None:
        cid = compressor.get("id") if isinstance(compressor, dict) else None
        if cid not in _V2_COMPRESSORS:
            raise _unsupported(
                url,
                f"compressor {cid if cid is not None else compressor!r} is not supported (expected null or "
                f"one of {sorted(_V2_COMPRESSORS)})",
            )
        if cid == "lzma" and compressor.get("format", 1) not in (0, 1, 2):
            raise _unsupported(url, "lzma with format FORMAT_RAW is not supported (expected xz or alone)")
        steps = (_V2_COMPRESSORS[cid],)
    separator = obj.get("dimension_separator", ".")
    if separator is None:
        separator = "."
    if separator not in (".", "/"):
        raise _bad(url, f"expected dimension_separator '.' or '/', found {separator!r}")
    _check_chunk_size(url, chunks, stored.itemsize, "chunks")
    dtype = stored.newbyteorder("=")
    return ZarrArray(
        url=url,
        zarr_format=2,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=_fill_value(obj.get("fill_value"), dtype, url, 2),
        codec=ChunkCodec(stored, order, None, steps),
        shard=None,
        key_prefix=None,
        separator=separator,
    )


# ---------------------------------------------------------------------------------------------------------
# zarr v3


def _named(item: Any, url: str, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(item, str):
        return item, {}
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise _bad(url, f"expected {where} an object with a 'name', found {item!r}"[:300])
    config = item.get("configuration", {})
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise _bad(url, f"expected {where}.configuration an object, found {config!r}"[:300])
    return item["name"], config


def _v3_codecs(
    codecs: Any, url: str, data_type: np.dtype, chunk: tuple[int, ...], where: str, *, inner: bool
) -> tuple[ChunkCodec | None, ShardSpec | None]:
    """The chunk codec of a v3 ``codecs`` list, or the shard spec when it is ``sharding_indexed``."""
    if not isinstance(codecs, list) or not codecs:
        raise _bad(url, f"expected {where} a non-empty list, found {codecs!r}"[:300])
    ndim = len(chunk)
    transpose: tuple[int, ...] | None = None
    endian: str | None = None
    shard: ShardSpec | None = None
    steps: list[str] = []
    seen_bytes = False
    for position, item in enumerate(codecs):
        name, config = _named(item, url, f"{where}[{position}]")
        if not seen_bytes:
            if name == "transpose":
                order = config.get("order")
                if order == "C":
                    order = list(range(ndim))
                elif order == "F":
                    order = list(range(ndim))[::-1]
                if not isinstance(order, list) or sorted(order) != list(range(ndim)):
                    raise _bad(
                        url, f"expected transpose order a permutation of 0..{ndim - 1}, found {order!r}"
                    )
                step = tuple(int(a) for a in order)
                transpose = step if transpose is None else tuple(transpose[a] for a in step)
                continue
            if name == "bytes":
                endian = config.get("endian")
                if endian not in (None, "little", "big"):
                    raise _bad(url, f"expected bytes endian 'little' or 'big', found {endian!r}")
                if endian is None and data_type.itemsize > 1:
                    raise _bad(url, f"expected an endian for the bytes codec of {data_type.name}")
                seen_bytes = True
                continue
            if name == "sharding_indexed":
                if inner:
                    raise _unsupported(url, "nested sharding_indexed is not supported")
                if transpose is not None:
                    raise _unsupported(url, "a transpose codec before sharding_indexed is not supported")
                if position != len(codecs) - 1:
                    raise _unsupported(
                        url,
                        "codecs after sharding_indexed (compressing whole shards) are not supported: shards "
                        "are read in byte ranges",
                    )
                shard = _sharding(config, url, data_type, chunk)
                seen_bytes = True
                continue
            raise _unsupported(
                url,
                f"codec {name!r} is not supported before the bytes codec (expected transpose, bytes or "
                f"sharding_indexed)",
            )
        if name == CHECKSUM:
            if not crc32c_available():
                raise _unsupported(
                    url, "the crc32c codec needs the package 'crc32c': pip install 'lazyflow-rbfs[formats]'"
                )
            steps.append(CHECKSUM)
        elif name in _V3_COMPRESSORS:
            if any(s != CHECKSUM for s in steps):
                raise _unsupported(url, f"more than one compressor in {where} is not supported")
            steps.append(_V3_COMPRESSORS[name])
        else:
            raise _unsupported(
                url,
                f"codec {name!r} is not supported (expected transpose, bytes, sharding_indexed, "
                f"{', '.join(sorted(_V3_COMPRESSORS))} or crc32c)",
            )
    if not seen_bytes:
        raise _bad(url, f"expected a bytes (or sharding_indexed) codec in {where}")
    if shard is not None:
        return None, shard
    stored = data_type.newbyteorder(">" if endian == "big" else "<") if data_type.itemsize > 1 else data_type
    _check_chunk_size(
        url, chunk, data_type.itemsize, "the chunk shape" if not inner else "the inner chunk shape"
    )
    return ChunkCodec(stored, "C", transpose, tuple(steps)), None


def _sharding(config: dict[str, Any], url: str, data_type: np.dtype, shard: tuple[int, ...]) -> ShardSpec:
    inner = _int_list(
        config.get("chunk_shape"), url, "sharding_indexed chunk_shape", positive=True, ndim=len(shard)
    )
    if any(s % i for s, i in zip(shard, inner)):
        raise _bad(
            url, f"expected the shard shape {list(shard)} to be a multiple of the inner chunks {list(inner)}"
        )
    codec, nested = _v3_codecs(
        config.get("codecs"), url, data_type, inner, "sharding_indexed codecs", inner=True
    )
    location = config.get("index_location", "end")
    if location not in ("start", "end"):
        raise _bad(url, f"expected index_location 'start' or 'end', found {location!r}")
    index_codecs = config.get("index_codecs", [{"name": "bytes", "configuration": {"endian": "little"}}])
    names = (
        [_named(c, url, "index_codecs")[0] for c in index_codecs] if isinstance(index_codecs, list) else None
    )
    if names not in (["bytes"], ["bytes", CHECKSUM]):
        raise _unsupported(
            url,
            f"index_codecs {names or index_codecs!r} are not supported (expected bytes, optionally crc32c)",
        )
    endian = _named(index_codecs[0], url, "index_codecs[0]")[1].get("endian", "little")
    if endian != "little":
        raise _unsupported(url, f"a shard index of endian {endian!r} is not supported (expected 'little')")
    index_crc = names == ["bytes", CHECKSUM]
    if index_crc and not crc32c_available():
        raise _unsupported(
            url, "the crc32c codec needs the package 'crc32c': pip install 'lazyflow-rbfs[formats]'"
        )
    count = math.prod(s // i for s, i in zip(shard, inner))
    if count * 16 > MAX_INDEX_BYTES:
        raise _bad(
            url,
            f"a shard of {list(shard)} holds {count} inner chunks of {list(inner)}: its index of "
            f"{count * 16} bytes is more than the {MAX_INDEX_BYTES} accepted",
        )
    if codec is None or nested is not None:  # pragma: no cover - _v3_codecs(inner=True) returns a codec
        raise _unsupported(url, "nested sharding_indexed is not supported")
    return ShardSpec(inner, codec, location == "end", index_crc)


def parse_v3_array(obj: dict[str, Any], url: str) -> ZarrArray:
    """A zarr v3 ``zarr.json`` of an array (``node_type`` ``"array"``).

    Raises
    ------
    InvalidResponseError
        A field missing or of the wrong kind, a chunk larger than :data:`MAX_CHUNK_BYTES`.
    DescriptionError
        A feature this reader does not read (another chunk grid, codec or data type, extensions).
    """
    if obj.get("zarr_format") != 3 or obj.get("node_type") != "array":
        raise _bad(
            url,
            f"expected zarr_format 3 and node_type 'array', found {obj.get('zarr_format')!r} and "
            f"{obj.get('node_type')!r}",
        )
    shape = _int_list(obj.get("shape"), url, "shape", positive=False)
    data_type = obj.get("data_type")
    if data_type not in _V3_TYPES:
        raise _unsupported(
            url, f"data_type {data_type!r} is not supported (expected one of {sorted(_V3_TYPES)})"[:300]
        )
    dtype = np.dtype(_V3_TYPES[data_type])
    grid_name, grid = _named(obj.get("chunk_grid"), url, "chunk_grid")
    if grid_name != "regular":
        raise _unsupported(url, f"chunk_grid {grid_name!r} is not supported (expected 'regular')")
    chunks = _int_list(grid.get("chunk_shape"), url, "chunk_grid chunk_shape", positive=True, ndim=len(shape))
    key_name, key_config = _named(
        obj.get("chunk_key_encoding", {"name": "default"}), url, "chunk_key_encoding"
    )
    if key_name == "default":
        prefix: str | None = "c"
        separator = key_config.get("separator", "/")
    elif key_name == "v2":
        prefix, separator = None, key_config.get("separator", ".")
    else:
        raise _unsupported(url, f"chunk_key_encoding {key_name!r} is not supported (expected default or v2)")
    if separator not in (".", "/"):
        raise _bad(url, f"expected a chunk key separator '.' or '/', found {separator!r}")
    for extension in obj.get("storage_transformers") or []:
        raise _unsupported(url, f"storage_transformers are not supported (found {extension!r})"[:200])
    codec, shard = _v3_codecs(obj.get("codecs"), url, dtype, chunks, "codecs", inner=False)
    names = obj.get("dimension_names")
    dims: tuple[str | None, ...] | None = None
    if names is not None:
        if (
            not isinstance(names, list)
            or len(names) != len(shape)
            or any(n is not None and not isinstance(n, str) for n in names)
        ):
            raise _bad(
                url,
                f"expected dimension_names a list of {len(shape)} strings or nulls, found {names!r}"[:300],
            )
        dims = tuple(names)
    return ZarrArray(
        url=url,
        zarr_format=3,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=_fill_value(obj.get("fill_value"), dtype, url, 3),
        codec=codec,
        shard=shard,
        key_prefix=prefix,
        separator=separator,
        dimension_names=dims,
    )
