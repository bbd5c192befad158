"""Neuroglancer precomputed volumes over HTTP(S) (remote format ``"precomputed"``): fields, reading, describe.

A volume is a folder holding an ``info`` JSON file and one sub-folder per scale (its ``key``). A scale is
cut into chunks of ``chunk_sizes[0]`` voxels (x, y, z) on a grid anchored at ``voxel_offset``; the chunk at
``[x0, x1) x [y0, y1) x [z0, z1)`` (absolute coordinates, cut short at the volume's far edge) is the file
``<key>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>``. Encodings read here: ``raw`` (little-endian x,y,z,c in Fortran
order, possibly gzip-encoded by HTTP), ``jpeg`` and ``png`` (need Pillow) and ``compressed_segmentation``
(needs the package ``compressed-segmentation``).

A *sharded* scale (``neuroglancer_uint64_sharded_v1``, :mod:`.precomputed_shards`) keeps its chunks in
shard files read with byte ranges: the shard and minishard indexes of the chunks of a roi (each fetched
once per reader and kept in a bounded cache), then the chunks' bytes, adjacent ones in one request.

A roi is read by fetching every chunk it touches (one after the other: the cache already runs several
blocks in parallel) and copying their intersections into the result. A chunk the server does not have
(HTTP 404; for a sharded scale: a chunk its minishard does not list, or a shard file that does not exist)
is a :class:`~lazyflow_rbfs.errors.DownloadError` with ``status=404`` saying so, unless the description
sets ``fill_missing``; then that chunk reads as zeros. A ``403`` is never read as missing (a bucket
answering 403 may be refusing access).

The description records the scale's ``encoding`` and ``sharding`` (``precomputed_encoding``,
``precomputed_sharding``); the reader refuses an info file that no longer matches them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np

from lazyflow_rbfs.description import IdentityLocation
from lazyflow_rbfs.description.fields import check_location_base, field_error, join_field
from lazyflow_rbfs.errors import DescriptionError, DownloadError
from lazyflow_rbfs.geometry import overlap_slices
from lazyflow_rbfs.locations import join
from lazyflow_rbfs.remote import codecs
from lazyflow_rbfs.remote.codecs import compressors, segmentation
from lazyflow_rbfs.remote.formats.base import (
    Probe,
    ProbeOption,
    ProbeRequest,
    RemoteFormat,
    sniff_file,
)
from lazyflow_rbfs.remote.formats.precomputed_info import (
    MAX_CHUNK_BYTES,
    MAX_INFO_BYTES,
    SUPPORTED_ENCODINGS,
    PrecomputedInfo,
    PrecomputedScale,
    check_scale_supported,
    parse_info,
    scale_sharding,
    select_scale,
)
from lazyflow_rbfs.remote.formats.precomputed_shards import (
    ShardedChunks,
    compressed_morton_code,
    grid_shape,
    gunzip_at_most,
    parse_sharding,
)
from lazyflow_rbfs.remote.http import HttpClient
from lazyflow_rbfs.remote.locations import LOCATION_SCHEMES, resolve

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
        self._codec: codecs.Codec | None = None
        self._shards: ShardedChunks | None = None

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
                spec = scale_sharding(scale, info)
                if scale.encoding == "compressed_segmentation":
                    self._codec = segmentation.codec_for(scale.segmentation_block or (8, 8, 8))
                else:
                    self._codec = codecs.get(scale.encoding)
                if spec is not None:
                    grid = grid_shape(scale.size, scale.chunk_size)
                    chunk_nbytes = np.prod(scale.chunk_size) * info.num_channels * info.dtype.itemsize
                    self._shards = ShardedChunks(
                        self.client,
                        join(self.base, scale.key),
                        spec,
                        max_chunk_bytes=self._codec.max_body_bytes(int(chunk_nbytes)),
                        max_chunks=int(np.prod(grid)),
                    )
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
        recorded = getattr(self.desc, "precomputed_encoding", None)
        if recorded is not None:  # descriptions written before these fields were recorded are not checked
            if scale.encoding != recorded:
                raise DescriptionError(
                    f"precomputed_encoding: expected the encoding {recorded!r} the description recorded, "
                    f"found {scale.encoding!r} in {where}; the source changed: describe it again (and use a "
                    f"new cache directory)",
                    field="precomputed_encoding",
                )
            wanted = getattr(self.desc, "precomputed_sharding", None)
            found = scale_sharding(scale, info)
            if (found.as_json() if found else None) != wanted:
                raise DescriptionError(
                    f"precomputed_sharding: expected the sharding {wanted!r} the description recorded, found "
                    f"{found.as_json() if found else None!r} in {where}; the source changed: describe it "
                    f"again (and use a new cache directory)",
                    field="precomputed_sharding",
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
        """The chunk files of ``[start, stop)``; for a sharded scale, the shard files holding its chunks."""
        boxes = list(self._chunks(start, stop))
        if self._shards is not None:
            return self._shards.urls([self._chunk_id(lo) for lo, _ in boxes])
        return [self.chunk_url(lo, hi) for lo, hi in boxes]

    def _chunk_id(self, lo: np.ndarray) -> int:
        """The compressed Morton code of the chunk starting at ``lo`` (z, y, x)."""
        scale = self.scale()
        position = (np.asarray(lo[::-1], dtype=np.int64) - np.asarray(scale.voxel_offset)) // np.asarray(
            scale.chunk_size
        )
        return compressed_morton_code(position.tolist(), grid_shape(scale.size, scale.chunk_size))

    def fetch(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        scale = self.scale()
        spatial = slice(1, 4) if self.channels else slice(0, 3)
        out = np.zeros(tuple(int(n) for n in stop - start), dtype=self.dtype)
        abs_lo = start[spatial] + self.origin[spatial]
        abs_hi = stop[spatial] + self.origin[spatial]
        c_sel = slice(int(start[0]), int(stop[0])) if self.channels else slice(0, 1)
        boxes = list(self._chunks(start, stop))
        if self._shards is not None:
            chunks = self._fetch_sharded(self._shards, boxes)
        else:
            chunks = (self._fetch_chunk(scale, lo, hi) for lo, hi in boxes)
        for (lo, hi), chunk in zip(boxes, chunks):
            if chunk is None:
                continue  # missing and fill_missing: zeros
            src, dst = overlap_slices(lo, hi, abs_lo, abs_hi)
            part = chunk[(c_sel, *src)]
            if self.channels:
                out[(slice(None), *dst)] = part
            else:
                out[dst] = part[0]
        return out

    def _chunk_codec(self) -> codecs.Codec:
        """The codec of the scale's chunks (set with the scale)."""
        self.scale()
        return cast(codecs.Codec, self._codec)

    def _expected(self, url: str, lo: np.ndarray, hi: np.ndarray) -> codecs.Expected:
        info = self._info
        channels = info.num_channels if info is not None else 1
        return codecs.Expected(url=url, shape=(channels, *(int(n) for n in hi - lo)), dtype=self.dtype)

    def _missing(self, url: str, how: str) -> None:
        if self.fill_missing:
            logger.debug("precomputed chunk %s is missing; fill_missing: zeros", url)
            return
        raise DownloadError(
            f"precomputed chunk missing: {url} {how} (the volume has no data there); the chunk is not read "
            f"as zeros unless the description sets fill_missing to true",
            url=url,
            status=404,
        )

    def _decode(self, body: bytes, expected: codecs.Expected) -> np.ndarray:
        codec = self._chunk_codec()
        try:
            try:
                return codec.decode(body, expected)
            except DownloadError:
                self.client.record_error()
                raise
        except codecs.MissingCodecError as exc:
            raise DescriptionError(f"scale: {exc}", field="scale") from None

    def _fetch_chunk(self, scale: PrecomputedScale, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
        url = self.chunk_url(lo, hi)
        expected = self._expected(url, lo, hi)
        codec = self._chunk_codec()
        try:
            body = self.client.get(url, max_bytes=codec.max_body_bytes(expected.nbytes))
        except DownloadError as exc:
            if exc.status != 404 or type(exc) is not DownloadError:
                raise
            self._missing(url, "answered HTTP 404")
            return None
        return self._decode(body, expected)

    def _fetch_sharded(
        self, shards: ShardedChunks, boxes: list[tuple[np.ndarray, np.ndarray]]
    ) -> list[np.ndarray | None]:
        ids = [self._chunk_id(lo) for lo, _ in boxes]
        bodies = shards.fetch(ids)
        codec = self._chunk_codec()
        out: list[np.ndarray | None] = []
        for cid, (lo, hi) in zip(ids, boxes):
            shard = shards.shard_url(shards.spec.locate(cid)[0])
            url = f"{shard} (chunk {cid})"
            body = bodies[cid]
            if body is None:
                self._missing(url, "is not in its shard")
                out.append(None)
                continue
            expected = self._expected(url, lo, hi)
            if shards.spec.data_encoding == "gzip":
                try:
                    if self._scale is not None and self._scale.encoding == "raw":
                        body = compressors.decompress("gzip", body, expected.nbytes, url)
                    else:
                        body = gunzip_at_most(body, codec.max_body_bytes(expected.nbytes), url, "chunk data")
                except DownloadError:
                    self.client.record_error()
                    raise
            out.append(self._decode(body, expected))
        return out


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
    remote["precomputed_encoding"] = chosen.encoding
    spec = scale_sharding(chosen, info)
    if spec is not None:
        remote["precomputed_sharding"] = spec.as_json()
        _check_ranges(client, join(url, chosen.key), spec, chosen)
    return Probe(remote, tuple(unit), info.dtype.itemsize)


def _check_ranges(client: HttpClient, scale_url: str, spec: Any, scale: PrecomputedScale) -> None:
    """One small Range request (the first shard index entry of the shard holding chunk 0), so that a server
    without Range support is reported by ``rbfs describe`` rather than at the first read. A missing shard
    file proves nothing and is fine."""
    first = join(scale_url, spec.shard_name(spec.locate(0)[0]))
    try:
        client.get(first, byte_range=(0, 16), max_bytes=16)
    except DownloadError as exc:
        if type(exc) is DownloadError and exc.status in (403, 404, 416):
            return
        raise


class PrecomputedFormat(RemoteFormat):
    """Remote format ``"precomputed"``: one scale of a neuroglancer precomputed volume (sharded or not)."""

    names = ("precomputed",)
    fields = {
        "precomputed_url": str,
        "scale": (str, int),
        "fill_missing": bool,
        "precomputed_encoding": str,
        "precomputed_sharding": dict,
    }
    url_source = "precomputed_url, scale and the volume's info file"
    source_help = (
        "an http(s) URL of a precomputed volume (the folder holding 'info'), gs://, s3://, file:// or a path "
        "of one"
    )
    sniff_help = "'info' (neuroglancer precomputed)"
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
        out["precomputed_url"] = check_location_base(
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
        encoding = out.get("precomputed_encoding")
        if encoding is not None and (not isinstance(encoding, str) or not encoding or "\0" in encoding):
            raise field_error(f("precomputed_encoding"), "the scale's encoding, e.g. 'raw'", encoding)
        sharding = out.get("precomputed_sharding")
        if sharding is not None:
            if encoding is None:
                raise field_error(
                    f("precomputed_encoding"), "the scale's encoding next to precomputed_sharding", None
                )
            try:
                out["precomputed_sharding"] = parse_sharding(sharding, f("precomputed_sharding")).as_json()
            except ValueError as exc:
                raise DescriptionError(str(exc), field=f("precomputed_sharding")) from None

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
        url = resolve(text)
        if url is not None and url.endswith("/info"):
            url = url[: -len("/info")]
        return url

    def sniff(self, location: str, client: HttpClient) -> bool:
        """An ``info`` file is at ``location``."""
        return sniff_file(client, f"{location}/info", MAX_INFO_BYTES)

    def probe(self, source: str, request: ProbeRequest) -> Probe:
        """Describe one scale (``request.scale``: a key or an index; default the first) from the volume's
        info file; option ``fill_missing`` goes into the description."""
        url = self.parse_source(source)
        if url is None:
            raise DescriptionError(f"source: expected {self.source_help}, found {source!r}", field="source")
        with request.client(location=url) as client:
            return _volume_description(url, client, request.scale, bool(request.options.get("fill_missing")))


#: The ``"precomputed"`` format (registered by :mod:`lazyflow_rbfs.remote.formats`).
PRECOMPUTED = PrecomputedFormat()
