"""Neuroglancer precomputed volumes over HTTP(S) (remote format ``"precomputed"``): fields, reading, describe.

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

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from lazyflow_rbfs.description import IdentityLocation
from lazyflow_rbfs.description.fields import check_http_base, field_error, join_field
from lazyflow_rbfs.errors import DescriptionError, DownloadError
from lazyflow_rbfs.geometry import overlap_slices
from lazyflow_rbfs.remote import codecs
from lazyflow_rbfs.remote.formats.base import Probe, ProbeOption, ProbeRequest, RemoteFormat, decode_body
from lazyflow_rbfs.remote.formats.precomputed_info import (
    MAX_CHUNK_BYTES,
    MAX_INFO_BYTES,
    SUPPORTED_ENCODINGS,
    PrecomputedInfo,
    PrecomputedScale,
    check_scale_supported,
    parse_info,
    select_scale,
)
from lazyflow_rbfs.remote.http import HttpClient
from lazyflow_rbfs.remote.locations import LOCATION_SCHEMES, http_url

__all__ = [
    "PrecomputedScale",
    "PrecomputedInfo",
    "parse_info",
    "select_scale",
    "check_scale_supported",
    "MAX_INFO_BYTES",
    "MAX_CHUNK_BYTES",
    "chunk_boxes",
    "chunk_key",
    "PrecomputedReader",
    "PrecomputedFormat",
    "PRECOMPUTED",
    "SUPPORTED_ENCODINGS",
]

logger = logging.getLogger(__name__)

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
            src, dst = overlap_slices(lo, hi, abs_lo, abs_hi)
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
        expected = codecs.Expected(url=url, shape=(channels, *(int(n) for n in hi - lo)), dtype=self.dtype)
        try:
            body = self.client.get(url, max_bytes=codecs.get(scale.encoding).max_body_bytes(expected.nbytes))
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
            return decode_body(self.client, scale.encoding, body, expected)
        except codecs.MissingCodecError as exc:
            raise DescriptionError(f"scale: {exc}", field="scale") from None


# ---------------------------------------------------------------------------------------------------------
# The format


def _parse_scale(value: Any, field: str) -> str | int:
    expected = "a scale key (e.g. '8_8_40') or a scale index >= 0"
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
        raise field_error(field, expected, value)
    if isinstance(value, str):
        if (
            not value.strip()
            or "\0" in value
            or value != value.strip()
            or value.startswith("/")
            or ".." in value
        ):
            raise field_error(field, expected, value)
        return value
    if int(value) < 0:
        raise field_error(field, expected, int(value))
    return int(value)


def _volume_description(url: str, client: HttpClient, scale: str | int | None, fill_missing: bool) -> Probe:
    """The remote description of one scale of the volume at ``url``, from its info file."""
    info_url = f"{url}/info"
    info = parse_info(client.get(info_url, max_bytes=MAX_INFO_BYTES), info_url)
    chosen = select_scale(info, scale)
    check_scale_supported(chosen, info)
    offset = list(chosen.offset_zyx)
    if min(offset) < 0:
        raise DescriptionError(
            f"scale: expected a scale with voxel_offset >= 0, found {list(chosen.voxel_offset)} (x, y, z) in "
            f"scale {chosen.key!r} of {info_url}; negative offsets are not supported",
            field="scale",
        )
    shape = list(chosen.shape_zyx)
    unit = list(chosen.chunk_zyx)
    axes = "zyx"
    if info.num_channels > 1:
        axes = "czyx"
        offset = [0, *offset]
        shape = [info.num_channels, *shape]
        unit = [info.num_channels, *unit]
    remote = {
        "_schema_name": "RESTful-volume-description",
        "_schema_version": 1.0,
        "name": url.rsplit("/", 1)[-1] or "precomputed",
        "format": "precomputed",
        "axes": axes,
        "dtype": info.dtype.name,
        "origin_offset": offset,
        "bounds": [o + s for o, s in zip(offset, shape)],
        "precomputed_url": url,
        "scale": chosen.key,
        "fill_missing": bool(fill_missing),
    }
    return Probe(remote, tuple(unit), info.dtype.itemsize)


class PrecomputedFormat(RemoteFormat):
    """Remote format ``"precomputed"``: one scale of a neuroglancer precomputed volume (unsharded)."""

    names = ("precomputed",)
    fields = {"precomputed_url": str, "scale": (str, int), "fill_missing": bool}
    url_source = "precomputed_url, scale and the volume's info file"
    source_help = "an http(s) URL of a precomputed volume (the folder holding 'info'), gs:// or s3:// of one"
    metadata_help = (
        "the volume's 'info' file (neuroglancer precomputed JSON); the source must be the folder that "
        "holds 'info'"
    )
    source_schemes = ("precomputed",)
    location_schemes = LOCATION_SCHEMES
    probe_options = (
        ProbeOption(
            "fill_missing",
            "--fill-missing",
            "precomputed: read missing chunks (HTTP 404) as zeros",
            switch=True,
        ),
    )

    def validate(self, out: dict[str, Any], prefix: str) -> None:
        def f(name: str) -> str:
            return join_field(prefix, name)

        if out["axes"] not in ("zyx", "czyx"):
            raise field_error(
                f("axes"),
                "'zyx' or 'czyx' for format 'precomputed' (chunks are x,y,z,c in Fortran order)",
                out["axes"],
            )
        out["precomputed_url"] = check_http_base(
            out["precomputed_url"],
            f("precomputed_url"),
            "the URL of the folder holding the volume's info file",
        )
        out["scale"] = _parse_scale(out["scale"], f("scale"))
        fill = out["fill_missing"]
        if fill is None:
            fill = False
        if not isinstance(fill, (bool, np.bool_)):
            raise field_error(f("fill_missing"), "true or false", fill)
        out["fill_missing"] = bool(fill)

    def open_reader(self, desc: Any, client: HttpClient) -> PrecomputedReader:
        return PrecomputedReader(desc, client)

    def source_url(self, desc: Any) -> str:
        """``<precomputed_url> (scale <scale>)``."""
        return f"{str(desc.precomputed_url).rstrip('/')} (scale {desc.scale!r})"

    def identity_location(self, desc: Any) -> IdentityLocation:
        """The volume's folder and the scale; not ``fill_missing``."""
        return IdentityLocation(str(desc.precomputed_url).rstrip("/"), scale=desc.scale)

    def parse_source(self, source: str) -> str | None:
        """The volume's folder URL: an ``http(s)``, ``gs://`` or ``s3://`` location (``precomputed://``
        prefix allowed), without a trailing ``/info``."""
        text = str(source).strip()
        if urlsplit(text).scheme.lower() == "precomputed":
            text = text[len("precomputed://") :]
        url = http_url(text)
        if url is not None and url.endswith("/info"):
            url = url[: -len("/info")]
        return url

    def probe(self, source: str, request: ProbeRequest) -> Probe:
        """Describe one scale (``request.scale``: a key or an index; default the first) from the volume's
        info file; option ``fill_missing`` goes into the description."""
        url = self.parse_source(source)
        if url is None:
            raise DescriptionError(f"source: expected {self.source_help}, found {source!r}", field="source")
        with request.client() as client:
            return _volume_description(url, client, request.scale, bool(request.options.get("fill_missing")))


#: The ``"precomputed"`` format (registered by :mod:`lazyflow_rbfs.remote.formats`).
PRECOMPUTED = PrecomputedFormat()
