"""Neuroglancer precomputed volumes over HTTP(S) (remote format ``"precomputed"``).

A volume is a folder holding an ``info`` JSON file and one sub-folder per scale (its ``key``). A scale is
cut into chunks of ``chunk_sizes[0]`` voxels (x, y, z) on a grid anchored at ``voxel_offset``; the chunk at
``[x0, x1) x [y0, y1) x [z0, z1)`` (absolute coordinates, cut short at the volume's far edge) is the file
``<key>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>``. Encodings read here: ``raw`` (little-endian x,y,z,c in Fortran
order, possibly gzip-encoded by HTTP) and ``jpeg`` (needs Pillow). Sharded scales are not supported.

A roi is read by fetching every chunk it touches (one after the other: the cache already runs several
blocks in parallel) and copying their intersections into the result. A chunk the server does not have
(HTTP 404) is a :class:`~lazyflow_rbfs.errors.DownloadError` with ``status=404`` saying so, unless the
description sets ``fill_missing``; then that chunk reads as zeros.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lazyflow_rbfs.description import SUPPORTED_DTYPES
from lazyflow_rbfs.errors import DescriptionError, DownloadError, InvalidResponseError
from lazyflow_rbfs.remote import codecs
from lazyflow_rbfs.remote.http import HttpClient

__all__ = [
    "PrecomputedScale",
    "PrecomputedInfo",
    "parse_info",
    "select_scale",
    "chunk_boxes",
    "chunk_key",
    "PrecomputedReader",
    "SUPPORTED_ENCODINGS",
]

logger = logging.getLogger(__name__)

#: Chunk encodings this reader decodes.
SUPPORTED_ENCODINGS = ("raw", "jpeg")

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
        scales.append(
            PrecomputedScale(
                index=index,
                key=key,
                size=size,  # type: ignore[arg-type]
                voxel_offset=offset,  # type: ignore[arg-type]
                chunk_size=chunk,  # type: ignore[arg-type]
                encoding=encoding,
                resolution=res,
                sharded=item.get("sharding") is not None,
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


def check_scale_supported(scale: PrecomputedScale, info: PrecomputedInfo, *, field: str = "scale") -> None:
    """Raise :class:`DescriptionError` if this reader cannot read ``scale`` (sharded, other encodings).

    Raises
    ------
    DescriptionError
        The scale is sharded, of an encoding not read here, or jpeg without Pillow or of another dtype.
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
    if scale.sharded:
        raise DescriptionError(
            f"{field}: expected an unsharded scale, found scale {scale.key!r} of {info.url} sharded "
            f"(sharded precomputed volumes are not supported yet)",
            field=field,
        )
    if scale.encoding not in SUPPORTED_ENCODINGS:
        raise DescriptionError(
            f"{field}: expected a scale with encoding in {list(SUPPORTED_ENCODINGS)}, found scale "
            f"{scale.key!r} of {info.url} with encoding {scale.encoding!r}",
            field=field,
        )
    if scale.encoding == "jpeg":
        if info.dtype != np.uint8 or info.num_channels not in (1, 3):
            raise DescriptionError(
                f"{field}: expected jpeg scales of uint8 with 1 or 3 channels, found {info.dtype.name} with "
                f"{info.num_channels} channels in {info.url}",
                field=field,
            )
        if not codecs.jpeg_available():
            raise DescriptionError(
                f"{field}: scale {scale.key!r} of {info.url} is jpeg-encoded, which needs Pillow "
                f"(pip install 'lazyflow-rbfs[precomputed]' or pip install pillow); expected it installed, "
                f"found it missing",
                field=field,
            )


# ---------------------------------------------------------------------------------------------------------
# Chunk geometry (pure; z, y, x order like the description's axes)


def chunk_boxes(
    start: Sequence[int],
    stop: Sequence[int],
    offset: Sequence[int],
    size: Sequence[int],
    chunk: Sequence[int],
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The chunks touching the box ``[start, stop)`` (absolute coordinates), each as its ``(lo, hi)``.

    The grid starts at ``offset``; chunks are cut short at ``offset + size``. C order of the chunk starts.
    """
    lo = np.asarray(start, dtype=np.int64)
    hi = np.asarray(stop, dtype=np.int64)
    off = np.asarray(offset, dtype=np.int64)
    end = off + np.asarray(size, dtype=np.int64)
    step = np.asarray(chunk, dtype=np.int64)
    first = (lo - off) // step
    last = (hi - 1 - off) // step
    for index in np.ndindex(*(last - first + 1).tolist()):
        grid = first + np.asarray(index, dtype=np.int64)
        c_lo = off + grid * step
        yield c_lo, np.minimum(c_lo + step, end)


def chunk_key(lo: Sequence[int], hi: Sequence[int]) -> str:
    """The chunk file name ``x0-x1_y0-y1_z0-z1`` of a chunk given in z, y, x order."""
    (z0, y0, x0), (z1, y1, x1) = (int(v) for v in lo), (int(v) for v in hi)
    return f"{x0}-{x1}_{y0}-{y1}_{z0}-{z1}"


# ---------------------------------------------------------------------------------------------------------
# Reader


class PrecomputedReader:
    """Fetch rois of a ``"precomputed"`` remote description through an :class:`HttpClient`.

    The info file is fetched at the first read (once; a failed fetch is retried at the next read) and
    checked against the description: dtype, channels and the box ``[origin_offset, bounds)`` inside the
    scale's ``[voxel_offset, voxel_offset + size)``.
    """

    def __init__(self, desc: Any, client: HttpClient) -> None:
        self.desc = desc
        self.client = client
        self.base = str(desc.precomputed_url).rstrip("/")
        self.axes = str(desc.axes)
        self.channels = "c" in self.axes
        self.dtype = np.dtype(desc.dtype)
        self.origin = np.asarray(desc.origin_offset, dtype=np.int64)
        self.bounds = np.asarray(desc.bounds, dtype=np.int64)
        self.fill_missing = bool(desc.fill_missing)
        self._lock = threading.Lock()
        self._info: PrecomputedInfo | None = None
        self._scale: PrecomputedScale | None = None

    @property
    def info_url(self) -> str:
        return f"{self.base}/info"

    def scale(self) -> PrecomputedScale:
        """The description's scale (fetching and checking the info file the first time)."""
        with self._lock:
            if self._scale is None:
                body = self.client.get(self.info_url, max_bytes=MAX_INFO_BYTES)
                info = parse_info(body, self.info_url)
                scale = select_scale(info, self.desc.scale)
                check_scale_supported(scale, info)
                self._check_against_description(info, scale)
                self._info, self._scale = info, scale
                logger.debug(
                    "precomputed %s: scale %r size %s offset %s chunk %s encoding %s",
                    self.base,
                    scale.key,
                    scale.size,
                    scale.voxel_offset,
                    scale.chunk_size,
                    scale.encoding,
                )
            return self._scale

    def _check_against_description(self, info: PrecomputedInfo, scale: PrecomputedScale) -> None:
        where = f"{info.url} (scale {scale.key!r})"
        if info.dtype != self.dtype:
            raise DescriptionError(
                f"dtype: expected the remote data_type {info.dtype.name} of {where}, found {self.dtype.name}",
                field="dtype",
            )
        spatial = slice(1, 4) if self.channels else slice(0, 3)
        if self.channels:
            if self.origin[0] != 0 or self.bounds[0] > info.num_channels:
                raise DescriptionError(
                    f"bounds: expected channels within [0, {info.num_channels}) of {where}, found "
                    f"origin_offset "
                    f"{int(self.origin[0])} and bounds {int(self.bounds[0])} on axis c",
                    field="bounds",
                )
        elif info.num_channels != 1:
            raise DescriptionError(
                f"axes: expected 'czyx' for {where}, which has {info.num_channels} channels, found "
                f"{self.axes!r}",
                field="axes",
            )
        lo = np.asarray(scale.offset_zyx, dtype=np.int64)
        hi = lo + np.asarray(scale.shape_zyx, dtype=np.int64)
        origin, bounds = self.origin[spatial], self.bounds[spatial]
        if (origin < lo).any() or (bounds > hi).any():
            raise DescriptionError(
                f"bounds: expected the box origin_offset..bounds (z, y, x) inside the volume "
                f"{lo.tolist()}..{hi.tolist()} (voxel_offset..voxel_offset+size, z, y, x) of {where}, found "
                f"{origin.tolist()}..{bounds.tolist()}",
                field="bounds",
            )

    def _chunks(self, start: np.ndarray, stop: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        scale = self.scale()
        spatial = slice(1, 4) if self.channels else slice(0, 3)
        yield from chunk_boxes(
            start[spatial] + self.origin[spatial],
            stop[spatial] + self.origin[spatial],
            scale.offset_zyx,
            scale.shape_zyx,
            scale.chunk_zyx,
        )

    def chunk_url(self, lo: Sequence[int], hi: Sequence[int]) -> str:
        scale = self.scale()
        return f"{self.base}/{scale.key}/{chunk_key(lo, hi)}"

    def urls(self, start: np.ndarray, stop: np.ndarray) -> list[str]:
        return [self.chunk_url(lo, hi) for lo, hi in self._chunks(start, stop)]

    def fetch(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        scale = self.scale()
        spatial = slice(1, 4) if self.channels else slice(0, 3)
        out = np.zeros(tuple(int(n) for n in stop - start), dtype=self.dtype)
        abs_lo = start[spatial] + self.origin[spatial]
        abs_hi = stop[spatial] + self.origin[spatial]
        c_sel = slice(int(start[0]), int(stop[0])) if self.channels else slice(0, 1)
        for lo, hi in self._chunks(start, stop):
            chunk = self._fetch_chunk(scale, lo, hi)
            if chunk is None:
                continue  # missing and fill_missing: zeros
            i_lo = np.maximum(lo, abs_lo)
            i_hi = np.minimum(hi, abs_hi)
            src = tuple(slice(int(a), int(b)) for a, b in zip(i_lo - lo, i_hi - lo))
            dst = tuple(slice(int(a), int(b)) for a, b in zip(i_lo - abs_lo, i_hi - abs_lo))
            part = chunk[(c_sel, *src)]
            if self.channels:
                out[(slice(None), *dst)] = part
            else:
                out[dst] = part[0]
        return out

    def _fetch_chunk(self, scale: PrecomputedScale, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
        url = self.chunk_url(lo, hi)
        info = self._info
        channels = info.num_channels if info is not None else 1
        shape = (channels, *(int(n) for n in hi - lo))
        expected = codecs.Expected(url=url, shape=shape, dtype=self.dtype)
        nbytes = math.prod(shape) * self.dtype.itemsize
        try:
            body = self.client.get(url, max_bytes=codecs.max_body_bytes(scale.encoding, nbytes))
        except DownloadError as exc:
            if exc.status != 404 or type(exc) is not DownloadError:
                raise
            if self.fill_missing:
                logger.debug("precomputed chunk %s is missing; fill_missing: zeros", url)
                return None
            raise DownloadError(
                f"precomputed chunk missing: {url} answered HTTP 404 (the volume has no data there); the "
                f"chunk is not read as zeros unless the description sets fill_missing to true",
                url=url,
                status=404,
            ) from exc
        try:
            if scale.encoding == "raw":
                array = codecs.decode_precomputed_raw(body, expected)
            else:
                try:
                    array = codecs.decode_precomputed_jpeg(body, expected)
                except codecs.MissingCodecError as exc:
                    raise DescriptionError(f"scale: {exc}", field="scale") from None
            return codecs.validate_array(array, expected)
        except DownloadError:
            self.client._count(error=True)
            raise
