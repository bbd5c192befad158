"""The ``info`` file of a neuroglancer precomputed volume: parsed, validated, and a scale chosen.

Part of the ``"precomputed"`` format (:mod:`.precomputed`, which re-exports these names).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lazyflow_rbfs.description import SUPPORTED_DTYPES
from lazyflow_rbfs.errors import DescriptionError, InvalidResponseError
from lazyflow_rbfs.remote import codecs
from lazyflow_rbfs.remote.codecs import image, segmentation
from lazyflow_rbfs.remote.formats.precomputed_shards import (
    MMH3_HINT,
    ShardingSpec,
    murmurhash_available,
    parse_sharding,
)

__all__ = [
    "SUPPORTED_ENCODINGS",
    "MAX_INFO_BYTES",
    "MAX_CHUNK_BYTES",
    "PrecomputedScale",
    "PrecomputedInfo",
    "parse_info",
    "select_scale",
    "check_scale_supported",
    "scale_sharding",
]

#: Chunk encodings this reader decodes.
SUPPORTED_ENCODINGS = ("raw", "jpeg", "png", "compressed_segmentation")

#: The largest compressed_segmentation block accepted (voxels); real ones are 8^3 or 8x8x4 or so.
MAX_SEGMENTATION_BLOCK = 64**3

#: Largest info file accepted (real ones are a few kB; many scales make tens of kB).
MAX_INFO_BYTES = 16 * 1024 * 1024

#: Largest chunk accepted (``chunk_sizes[0]`` voxels x ``num_channels`` x item size): 128 MiB. Real EM
#: chunks are at most 256^3 voxels, i.e. 128 MiB for uint64 segmentation, usually 64^3..128^3 (256 KiB to
#: 16 MiB). Every roi reads whole chunks, so a larger chunk would let an info file make the client
#: allocate far more than a small block needs; such a scale is refused when the info file is read (at
#: open and by ``rbfs describe``), before any chunk is requested.
MAX_CHUNK_BYTES = 128 * 1024 * 1024

#: Sizes and offsets in an info file must be below this in magnitude (2^53, JSON's exact integers).
_MAX_COORDINATE = 2**53

_INFO_DTYPES = (
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float32",
    "float64",
)


@dataclass(frozen=True)
class PrecomputedScale:
    """One scale of a precomputed volume; vectors in x, y, z order (as in the info file)."""

    index: int
    key: str
    size: tuple[int, int, int]
    voxel_offset: tuple[int, int, int]
    chunk_size: tuple[int, int, int]
    encoding: str
    resolution: tuple[float, float, float] | None
    sharded: bool
    #: The ``sharding`` member as the info file has it (checked by :func:`scale_sharding`), or ``None``.
    sharding: Mapping[str, Any] | None = None
    #: ``compressed_segmentation_block_size`` (x, y, z), or ``None``.
    segmentation_block: tuple[int, int, int] | None = None

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return (self.size[2], self.size[1], self.size[0])

    @property
    def offset_zyx(self) -> tuple[int, int, int]:
        return (self.voxel_offset[2], self.voxel_offset[1], self.voxel_offset[0])

    @property
    def chunk_zyx(self) -> tuple[int, int, int]:
        return (self.chunk_size[2], self.chunk_size[1], self.chunk_size[0])


@dataclass(frozen=True)
class PrecomputedInfo:
    """A validated ``info`` file."""

    url: str
    type: str
    dtype: np.dtype
    num_channels: int
    scales: tuple[PrecomputedScale, ...]


def _bad_info(url: str, what: str) -> InvalidResponseError:
    return InvalidResponseError(f"the precomputed info file {url} is not usable: {what}", url=url, status=200)


def _int_vector(value: Any, url: str, what: str, n: int = 3) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or len(value) != n
        or any(isinstance(v, bool) or not isinstance(v, int) or abs(v) >= _MAX_COORDINATE for v in value)
    ):
        raise _bad_info(
            url, f"expected {what} as a list of {n} integers below 2**53 in magnitude, found {value!r}"[:300]
        )
    return tuple(int(v) for v in value)


def parse_info(body: bytes, url: str) -> PrecomputedInfo:
    """Parse and validate an ``info`` file (``data_type``, ``num_channels``, ``scales`` with ``key``,
    ``size``, ``voxel_offset``, ``chunk_sizes``, ``encoding``).

    Raises
    ------
    InvalidResponseError
        Not JSON, or a field missing or of the wrong kind (the message names it).
    """
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad_info(url, f"expected JSON, found {body[:60]!r} ({exc})") from exc
    if not isinstance(obj, dict):
        raise _bad_info(url, f"expected a JSON object, found {type(obj).__name__}")
    data_type = obj.get("data_type")
    if data_type not in _INFO_DTYPES or data_type not in SUPPORTED_DTYPES:
        raise _bad_info(url, f"expected data_type one of {list(_INFO_DTYPES)}, found {data_type!r}")
    channels = obj.get("num_channels", 1)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise _bad_info(url, f"expected num_channels an integer >= 1, found {channels!r}")
    raw_scales = obj.get("scales")
    if not isinstance(raw_scales, list) or not raw_scales:
        raise _bad_info(url, "expected a non-empty list 'scales'")
    scales = []
    for index, item in enumerate(raw_scales):
        if not isinstance(item, dict):
            raise _bad_info(url, f"expected scales[{index}] to be an object")
        key = item.get("key")
        if not isinstance(key, str) or not key or key.startswith("/") or ".." in key.split("/"):
            raise _bad_info(url, f"expected scales[{index}].key a relative path, found {key!r}")
        size = _int_vector(item.get("size"), url, f"scales[{index}].size")
        if min(size) <= 0:
            raise _bad_info(url, f"expected scales[{index}].size > 0, found {list(size)}")
        offset = _int_vector(item.get("voxel_offset", [0, 0, 0]), url, f"scales[{index}].voxel_offset")
        chunk_sizes = item.get("chunk_sizes")
        if not isinstance(chunk_sizes, list) or not chunk_sizes:
            raise _bad_info(url, f"expected scales[{index}].chunk_sizes a non-empty list of [x, y, z]")
        chunk = _int_vector(chunk_sizes[0], url, f"scales[{index}].chunk_sizes[0]")
        if min(chunk) <= 0:
            raise _bad_info(url, f"expected scales[{index}].chunk_sizes[0] > 0, found {list(chunk)}")
        encoding = item.get("encoding")
        if not isinstance(encoding, str):
            raise _bad_info(url, f"expected scales[{index}].encoding a string, found {encoding!r}")
        resolution = item.get("resolution")
        res: tuple[float, float, float] | None = None
        if (
            isinstance(resolution, list)
            and len(resolution) == 3
            and all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in resolution)
        ):
            res = (float(resolution[0]), float(resolution[1]), float(resolution[2]))
        block = item.get("compressed_segmentation_block_size")
        seg_block = None
        if encoding == "compressed_segmentation":
            seg_block = _int_vector(block, url, f"scales[{index}].compressed_segmentation_block_size")
            if min(seg_block) <= 0 or math.prod(seg_block) > MAX_SEGMENTATION_BLOCK:
                raise _bad_info(
                    url,
                    f"expected scales[{index}].compressed_segmentation_block_size > 0 and at most "
                    f"{MAX_SEGMENTATION_BLOCK} voxels, found {list(seg_block)}",
                )
        sharding = item.get("sharding")
        scales.append(
            PrecomputedScale(
                index=index,
                key=key,
                size=size,  # type: ignore[arg-type]
                voxel_offset=offset,  # type: ignore[arg-type]
                chunk_size=chunk,  # type: ignore[arg-type]
                encoding=encoding,
                resolution=res,
                sharded=sharding is not None,
                sharding=sharding,
                segmentation_block=seg_block,  # type: ignore[arg-type]
            )
        )
    return PrecomputedInfo(
        url=url,
        type=str(obj.get("type", "image")),
        dtype=np.dtype(SUPPORTED_DTYPES[data_type]),
        num_channels=channels,
        scales=tuple(scales),
    )


def select_scale(info: PrecomputedInfo, scale: str | int | None, *, field: str = "scale") -> PrecomputedScale:
    """The scale named by key, or by index (an int, or a string of digits that is no key).

    Raises
    ------
    DescriptionError
        No such scale (the message lists the keys).
    """
    keys = [s.key for s in info.scales]
    if scale is None:
        scale = 0
    if isinstance(scale, str):
        for s in info.scales:
            if s.key == scale:
                return s
        if not scale.isdigit():
            raise DescriptionError(
                f"{field}: expected a scale key of {info.url} (one of {keys}) or an index below "
                f"{len(keys)}, found {scale!r}",
                field=field,
            )
        scale = int(scale)
    if not 0 <= int(scale) < len(info.scales):
        raise DescriptionError(
            f"{field}: expected a scale index below {len(keys)} or a key of {info.url} (one of {keys}), "
            f"found {scale!r}",
            field=field,
        )
    return info.scales[int(scale)]


def scale_sharding(
    scale: PrecomputedScale, info: PrecomputedInfo, *, field: str = "scale"
) -> ShardingSpec | None:
    """The scale's sharding specification (``None``: unsharded).

    Raises
    ------
    DescriptionError
        The ``sharding`` member is not a ``neuroglancer_uint64_sharded_v1`` specification read here.
    """
    if scale.sharding is None:
        return None
    try:
        return parse_sharding(scale.sharding, f"scales[{scale.index}].sharding of {info.url}")
    except ValueError as exc:
        raise DescriptionError(
            f"{field}: scale {scale.key!r} is sharded in a way this reader does not read: {exc}", field=field
        ) from None


def check_scale_supported(scale: PrecomputedScale, info: PrecomputedInfo, *, field: str = "scale") -> None:
    """Raise :class:`DescriptionError` if this reader cannot read ``scale`` (its sharding, its encoding, or a
    package the encoding or the sharding hash needs is missing).

    Raises
    ------
    DescriptionError
        The scale's sharding is not read here (or needs ``mmh3``), its encoding is not read here, or its
        encoding does not fit the dtype and channels, or needs a package that is not installed.
    InvalidResponseError
        The info file declares chunks of more than :data:`MAX_CHUNK_BYTES` for the scale.
    """
    chunk_bytes = math.prod(scale.chunk_size) * info.num_channels * info.dtype.itemsize
    if chunk_bytes > MAX_CHUNK_BYTES:
        raise _bad_info(
            info.url,
            f"scales[{scale.index}].chunk_sizes[0] is {list(scale.chunk_size)} (x, y, z): chunks of "
            f"{chunk_bytes} bytes with {info.num_channels} channel(s) of {info.dtype.name}, more than the "
            f"{MAX_CHUNK_BYTES} bytes (128 MiB) accepted; every read fetches whole chunks, so this volume "
            f"cannot be cached in small blocks",
        )
    spec = scale_sharding(scale, info, field=field)
    if spec is not None and spec.hash == "murmurhash3_x86_128" and not murmurhash_available():
        raise DescriptionError(
            f"{field}: scale {scale.key!r} of {info.url} is sharded with the murmurhash3_x86_128 hash, which "
            f"needs the package 'mmh3' ({MMH3_HINT}); expected it installed, found it missing",
            field=field,
        )
    if scale.encoding not in SUPPORTED_ENCODINGS:
        raise DescriptionError(
            f"{field}: expected a scale with encoding in {list(SUPPORTED_ENCODINGS)}, found scale "
            f"{scale.key!r} of {info.url} with encoding {scale.encoding!r}",
            field=field,
        )
    where = f"scale {scale.key!r} of {info.url}"
    if scale.encoding == "jpeg":
        if info.dtype != np.uint8 or info.num_channels not in (1, 3):
            raise DescriptionError(
                f"{field}: expected jpeg scales of uint8 with 1 or 3 channels, found {info.dtype.name} with "
                f"{info.num_channels} channels in {info.url}",
                field=field,
            )
        _need(codecs.jpeg_available(), field, where, "jpeg", "Pillow", "pillow")
    elif scale.encoding == "png":
        if (info.num_channels, info.dtype.name) not in image.PNG_MODES:
            raise DescriptionError(
                f"{field}: expected png scales of uint8 with 1 to 4 channels or of uint16 with 1 channel, "
                f"found {info.dtype.name} with {info.num_channels} channels in {info.url}",
                field=field,
            )
        _need(image.png_available(), field, where, "png", "Pillow", "pillow")
    elif scale.encoding == "compressed_segmentation":
        if info.dtype not in (np.uint32, np.uint64):
            raise DescriptionError(
                f"{field}: expected compressed_segmentation scales of uint32 or uint64, found "
                f"{info.dtype.name} in {info.url}",
                field=field,
            )
        _need(
            segmentation.available(),
            field,
            where,
            "compressed_segmentation",
            "the package 'compressed-segmentation'",
            "compressed-segmentation",
        )


def _need(ok: bool, field: str, where: str, encoding: str, what: str, package: str) -> None:
    if not ok:
        raise DescriptionError(
            f"{field}: {where} is {encoding}-encoded, which needs {what} (pip install "
            f"'lazyflow-rbfs[precomputed]' or pip install {package}); expected it installed, found it "
            f"missing",
            field=field,
        )
