"""zarr v2 and v3 arrays and OME-Zarr images (remote format ``"zarr"``): fields, reading, describe.

A description of format ``"zarr"`` reads one array: ``zarr_url`` is the location ``rbfs describe`` was
given (the array itself, or an OME-Zarr image group), ``zarr_path`` the array's path below it (``""``
for the array itself, the dataset path such as ``"0"`` or ``"s1"`` for a level of an image) and
``zarr_format`` its zarr version (2 or 3). Sources: ``zarr://``, ``zarr2://`` and ``zarr3://`` URLs (the
latter two look only for that version's metadata), or plain locations (``http(s)://``, ``gs://``,
``s3://``, ``file://``, a path) holding ``zarr.json``, ``.zarray`` or ``.zgroup``.

* zarr v2: ``.zarray`` (dtype with byte order, ``order`` C/F, one compressor, no filters,
  ``dimension_separator``); an image group's ``.zattrs`` holds the NGFF 0.4 ``multiscales``.
* zarr v3: ``zarr.json`` (``regular`` grid, ``default``/``v2`` chunk keys, codecs ``transpose``, ``bytes``,
  ``gzip``, ``zstd``, ``blosc``, ``crc32c``, ``sharding_indexed``); an image group's ``attributes.ome``
  holds the NGFF 0.5 ``multiscales``; ``dimension_names`` name the axes of a plain array.
* Axes: from the image's NGFF ``axes`` (or ``dimension_names``), each one of t, c, z, y, x; unnamed
  arrays get ``zyx``-style names (``czyx``, ``tczyx`` for 4 and 5 dimensions).

A chunk the source does not have (HTTP 404, no such file) reads as the array's ``fill_value``, as zarr
defines it; a shard that does not exist, or an inner chunk its index marks as not stored, too. Any other
failure (HTTP 403 included: an authorization failure must not read as fill values) is an error.

Sharded arrays are read with HTTP Range requests: a shard's index once (cached, bounded, see
:mod:`.zarr_shards`), then each inner chunk a block needs. ``rbfs describe`` aligns blocks to the inner
chunks (the unit a read fetches), not to whole shards.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from lazyflow_rbfs.description import IdentityLocation
from lazyflow_rbfs.description.fields import check_location_base, field_error, join_field
from lazyflow_rbfs.errors import DescriptionError, DownloadError, InvalidResponseError
from lazyflow_rbfs.geometry import overlap_slices
from lazyflow_rbfs.remote.codecs.base import MissingCodecError
from lazyflow_rbfs.remote.formats.base import Probe, ProbeRequest, RemoteFormat, sniff_file
from lazyflow_rbfs.remote.formats.zarr_meta import (
    MAX_METADATA_BYTES,
    ZarrArray,
    parse_json,
    parse_v2_array,
    parse_v3_array,
)
from lazyflow_rbfs.remote.formats.zarr_ome import (
    Multiscale,
    axes_from_names,
    parse_multiscales,
    select_dataset,
)
from lazyflow_rbfs.remote.formats.zarr_shards import (
    DEFAULT_INDEX_CACHE,
    MISSING,
    ShardIndexCache,
    read_shard_index,
)
from lazyflow_rbfs.remote.http import HttpClient
from lazyflow_rbfs.remote.locations import LOCATION_SCHEMES, join, resolve

__all__ = ["ZarrReader", "ZarrFormat", "ZARR", "METADATA_FILES", "chunk_grid"]

logger = logging.getLogger(__name__)

#: The metadata file of an array, by zarr version.
METADATA_FILES = {2: ".zarray", 3: "zarr.json"}
_TRAILING = ("zarr.json", ".zarray", ".zattrs", ".zgroup")
_SCHEMES = {"zarr": None, "zarr2": 2, "zarr3": 3}


def chunk_grid(start: np.ndarray, stop: np.ndarray, chunk: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Grid positions (C order) of the chunks of shape ``chunk`` touching ``[start, stop)``."""
    step = np.asarray(chunk, dtype=np.int64)
    first = start // step
    last = (stop - 1) // step
    for index in np.ndindex(*(last - first + 1).tolist()):
        yield first + np.asarray(index, dtype=np.int64)


def _get_metadata(client: HttpClient, url: str) -> dict[str, Any] | None:
    """A metadata file as JSON, ``None`` if absent (404; 403 too: buckets answer it for absent objects)."""
    try:
        body = client.get(url, max_bytes=MAX_METADATA_BYTES)
    except DownloadError as exc:
        if type(exc) is DownloadError and exc.status in (403, 404):
            return None
        raise
    return parse_json(body, url)


def _parse_array(obj: dict[str, Any], url: str, version: int) -> ZarrArray:
    return parse_v2_array(obj, url) if version == 2 else parse_v3_array(obj, url)


# ---------------------------------------------------------------------------------------------------------
# Reader


class ZarrReader:
    """Fetch rois of a ``"zarr"`` remote description through a client.

    The array's metadata is fetched at the first read (once; a failed fetch is retried at the next read)
    and checked against the description: zarr version, dtype, dimensions, and the box ``[origin_offset,
    bounds)`` inside the array's shape.
    """

    def __init__(self, desc: Any, client: HttpClient, *, index_cache: int = DEFAULT_INDEX_CACHE) -> None:
        self.desc = desc
        self.client = client
        self.base = str(desc.zarr_url).rstrip("/")
        self.path = str(desc.zarr_path or "")
        self.array_url = join(self.base, self.path) if self.path else self.base
        self.version = int(desc.zarr_format)
        self.dtype = np.dtype(desc.dtype)
        self.origin = np.asarray(desc.origin_offset, dtype=np.int64)
        self.bounds = np.asarray(desc.bounds, dtype=np.int64)
        self.indexes = ShardIndexCache(index_cache)
        self._lock = threading.Lock()
        self._array: ZarrArray | None = None

    @property
    def metadata_url(self) -> str:
        return join(self.array_url, METADATA_FILES[self.version])

    def array(self) -> ZarrArray:
        """The array's validated metadata (fetched and checked the first time)."""
        with self._lock:
            if self._array is None:
                url = self.metadata_url
                obj = parse_json(self.client.get(url, max_bytes=MAX_METADATA_BYTES), url)
                try:
                    array = _parse_array(obj, url, self.version)
                except InvalidResponseError:
                    self.client.record_error()
                    raise
                self._check_against_description(array)
                self._array = array
                logger.debug(
                    "zarr v%d %s: shape %s chunks %s%s dtype %s",
                    array.zarr_format,
                    self.array_url,
                    array.shape,
                    array.chunks,
                    f" (inner {array.shard.inner})" if array.shard else "",
                    array.dtype,
                )
            return self._array

    def _check_against_description(self, array: ZarrArray) -> None:
        where = array.url
        if array.dtype != self.dtype:
            raise DescriptionError(
                f"dtype: expected the dtype {array.dtype.name} of the array {where}, found {self.dtype.name} "
                f"(the array changed since it was described?)",
                field="dtype",
            )
        if array.ndim != len(self.bounds):
            raise DescriptionError(
                f"axes: expected {array.ndim} axes for the array {where}, found {str(self.desc.axes)!r}",
                field="axes",
            )
        if (self.bounds > np.asarray(array.shape, dtype=np.int64)).any():
            raise DescriptionError(
                f"bounds: expected bounds within the shape {list(array.shape)} of the array {where}, found "
                f"{self.bounds.tolist()} (the array changed since it was described?)",
                field="bounds",
            )

    def _chunk_url(self, array: ZarrArray, grid: np.ndarray) -> str:
        return join(self.array_url, array.chunk_key(grid))

    def urls(self, start: np.ndarray, stop: np.ndarray) -> list[str]:
        array = self.array()
        lo, hi = start + self.origin, stop + self.origin
        return [self._chunk_url(array, g) for g in chunk_grid(lo, hi, array.chunks)]

    def fetch(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        array = self.array()
        lo, hi = start + self.origin, stop + self.origin
        out = np.full(tuple(int(n) for n in stop - start), array.fill_value, dtype=self.dtype)
        try:
            if array.shard is None:
                self._fetch_chunks(array, lo, hi, out)
            else:
                self._fetch_sharded(array, lo, hi, out)
        except MissingCodecError as exc:
            raise DescriptionError(f"zarr_url: {exc}", field="zarr_url") from None
        return out

    def _put(
        self, out: np.ndarray, chunk: np.ndarray, c_lo: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> None:
        src, dst = overlap_slices(c_lo, c_lo + np.asarray(chunk.shape, dtype=np.int64), lo, hi)
        out[dst] = chunk[src]

    def _decode(self, codec: Any, body: bytes, shape: tuple[int, ...], url: str) -> np.ndarray:
        try:
            return codec.decode(body, shape, url)
        except InvalidResponseError:
            self.client.record_error()
            raise

    def _fetch_chunks(self, array: ZarrArray, lo: np.ndarray, hi: np.ndarray, out: np.ndarray) -> None:
        codec = array.codec
        step = np.asarray(array.chunks, dtype=np.int64)
        for grid in chunk_grid(lo, hi, array.chunks):
            url = self._chunk_url(array, grid)
            try:
                body = self.client.get(url, max_bytes=codec.max_body_bytes(array.chunks))  # type: ignore[union-attr]
            except DownloadError as exc:
                if type(exc) is DownloadError and exc.status == 404:
                    logger.debug("zarr chunk %s is missing: fill_value", url)
                    continue
                raise
            self._put(out, self._decode(codec, body, array.chunks, url), grid * step, lo, hi)

    def _fetch_sharded(self, array: ZarrArray, lo: np.ndarray, hi: np.ndarray, out: np.ndarray) -> None:
        spec = array.shard
        if spec is None:  # pragma: no cover - callers check
            return
        per_shard = array.chunks_per_shard
        per = np.asarray(per_shard, dtype=np.int64)
        inner = np.asarray(spec.inner, dtype=np.int64)
        limit = spec.codec.max_body_bytes(spec.inner)
        for grid in chunk_grid(lo, hi, array.chunks):
            url = self._chunk_url(array, grid)
            index = self.indexes.get(url, lambda url=url: read_shard_index(self.client, url, spec, per_shard))
            if index is None:
                continue  # the shard does not exist: fill_value
            s_lo = grid * np.asarray(array.chunks, dtype=np.int64)
            s_hi = s_lo + np.asarray(array.chunks, dtype=np.int64)
            for inner_grid in chunk_grid(np.maximum(lo, s_lo), np.minimum(hi, s_hi), spec.inner):
                offset, nbytes = (int(v) for v in index[tuple(inner_grid - grid * per)])
                if offset == MISSING:
                    continue  # not stored: fill_value
                if nbytes > limit:
                    self.client.record_error()
                    raise InvalidResponseError(
                        f"zarr shard {url}: its index says an inner chunk holds {nbytes} bytes, more than "
                        f"the {limit} an inner chunk of {list(spec.inner)} can need; refusing to read it",
                        url=url,
                        status=None,
                    )
                body = self.client.get(url, byte_range=(offset, offset + nbytes), max_bytes=nbytes)
                where = f"{url} (bytes {offset}-{offset + nbytes - 1})"
                self._put(out, self._decode(spec.codec, body, spec.inner, where), inner_grid * inner, lo, hi)


# ---------------------------------------------------------------------------------------------------------
# Describe


def _locate(client: HttpClient, url: str, version: int | None) -> tuple[int, dict[str, Any], str] | None:
    """The node at ``url``: ``(zarr version, metadata, metadata URL)``; ``None`` if nothing is there.
    v2 arrays are found by ``.zarray``, v2 groups by ``.zattrs`` (their attributes), v3 by ``zarr.json``."""
    if version in (None, 3):
        meta_url = join(url, "zarr.json")
        obj = _get_metadata(client, meta_url)
        if obj is not None:
            return 3, obj, meta_url
    if version in (None, 2):
        for name in (".zarray", ".zattrs"):
            meta_url = join(url, name)
            obj = _get_metadata(client, meta_url)
            if obj is not None:
                return 2, obj, meta_url
    return None


def _probe(url: str, version: int | None, client: HttpClient, scale: str | int | None) -> Probe:
    found = _locate(client, url, version)
    looked = {None: "zarr.json, .zarray or .zattrs", 2: ".zarray or .zattrs", 3: "zarr.json"}[version]
    if found is None:
        raise DescriptionError(
            f"source: found no zarr array or image at {url}: looked for {looked} there and found none (is it "
            f"the folder of the array or of the OME-Zarr image?)",
            field="source",
        )
    found_version, obj, meta_url = found
    is_array = (found_version == 2 and meta_url.endswith(".zarray")) or (
        found_version == 3 and obj.get("node_type") == "array"
    )
    multiscale: Multiscale | None = None
    path = ""
    if is_array:
        if scale not in (None, 0, "0"):
            raise DescriptionError(
                f"scale: {url} is a single zarr array, not a multiscale image; expected no --scale, found "
                f"{scale!r}",
                field="scale",
            )
        array = _parse_array(obj, meta_url, found_version)
    else:
        attrs = obj.get("attributes", {}) if found_version == 3 else obj
        multiscale = parse_multiscales(attrs if isinstance(attrs, dict) else {}, meta_url)
        if multiscale is None:
            raise DescriptionError(
                f"source: {url} is a zarr group without OME-Zarr multiscales; expected an array or an image: "
                f"give the path of an array in it",
                field="source",
            )
        path = select_dataset(multiscale, scale)
        array_meta_url = join(url, path, METADATA_FILES[found_version])
        array_obj = _get_metadata(client, array_meta_url)
        if array_obj is None:
            raise DescriptionError(
                f"source: the OME-Zarr image {url} lists dataset {path!r}, but {array_meta_url} is not there",
                field="source",
            )
        array = _parse_array(array_obj, array_meta_url, found_version)
    if min(array.shape, default=0) <= 0:
        raise DescriptionError(
            f"source: the array {array.url} has shape {list(array.shape)}; expected at least one voxel on "
            f"every axis",
            field="source",
        )
    if multiscale is not None:
        axes = axes_from_names(multiscale.axes, multiscale.axis_types, array.ndim, multiscale.url)
    else:
        axes = axes_from_names(array.dimension_names, None, array.ndim, array.url)
    name = url.rsplit("/", 1)[-1] or "zarr"
    remote = {
        "_schema_name": "RESTful-volume-description",
        "_schema_version": 1.0,
        "name": f"{name}/{path}" if path else name,
        "format": "zarr",
        "axes": axes,
        "dtype": array.dtype.name,
        "origin_offset": [0] * array.ndim,
        "bounds": list(array.shape),
        "zarr_url": url,
        "zarr_path": path,
        "zarr_format": found_version,
    }
    logger.debug("described zarr v%d %s%s as %s", found_version, url, f" ({path})" if path else "", axes)
    return Probe(remote, tuple(array.unit), array.dtype.itemsize)


def _check_path(value: Any, field: str) -> str:
    expected = "the array's path below zarr_url ('' for zarr_url itself), relative, without '.' or '..'"
    if value is None:
        return ""
    if not isinstance(value, str):
        raise field_error(field, expected, value)
    if value == "":
        return value
    try:
        join("file:///x", value)
    except ValueError:
        raise field_error(field, expected, value) from None
    return value


class ZarrFormat(RemoteFormat):
    """Remote format ``"zarr"``: one zarr v2/v3 array, or one level of an OME-Zarr image."""

    names = ("zarr",)
    fields = {"zarr_url": str, "zarr_path": str, "zarr_format": int}
    url_source = "zarr_url, zarr_path and the array's metadata"
    source_help = (
        "a zarr array or OME-Zarr image (http(s)://, gs://, s3://, file:// or a path; zarr://, zarr2://, "
        "zarr3:// prefixes allowed)"
    )
    sniff_help = "'zarr.json', '.zarray' or '.zgroup' (zarr)"
    metadata_help = (
        "the array's metadata ('zarr.json' for zarr v3, '.zarray' for v2) or an OME-Zarr image group's "
        "('zarr.json', '.zattrs'); the source must be the array or the image folder"
    )
    source_schemes = tuple(_SCHEMES)
    location_schemes = LOCATION_SCHEMES

    def validate(self, out: dict[str, Any], prefix: str) -> None:
        def f(name: str) -> str:
            return join_field(prefix, name)

        out["zarr_url"] = check_location_base(
            out["zarr_url"], f("zarr_url"), "the location of the zarr array or OME-Zarr image"
        )
        out["zarr_path"] = _check_path(out["zarr_path"], f("zarr_path"))
        version = out["zarr_format"]
        if isinstance(version, bool) or version not in (2, 3):
            raise field_error(f("zarr_format"), "2 or 3 (the array's zarr version)", version)
        out["zarr_format"] = int(version)

    def open_reader(self, desc: Any, client: HttpClient) -> ZarrReader:
        return ZarrReader(desc, client)

    def source_url(self, desc: Any) -> str:
        """``<zarr_url>/<zarr_path> (zarr v<N>)``."""
        base = str(desc.zarr_url).rstrip("/")
        where = f"{base}/{desc.zarr_path}" if desc.zarr_path else base
        return f"{where} (zarr v{desc.zarr_format})"

    def identity_location(self, desc: Any) -> IdentityLocation:
        """The location described and the array's path below it (a ``file://`` client is rooted at
        ``zarr_url``)."""
        path = str(desc.zarr_path or "")
        return IdentityLocation(str(desc.zarr_url).rstrip("/"), path=f"/{path}" if path else "")

    def _split(self, source: str) -> tuple[int | None, str] | None:
        text = str(source).strip()
        version = None
        scheme = urlsplit(text).scheme.lower() if "://" in text else ""
        if scheme in _SCHEMES:
            version = _SCHEMES[scheme]
            text = text.split("://", 1)[1]
            if not text:
                raise DescriptionError(
                    f"source: expected {scheme}://<location>, found {source!r}", field="source"
                )
        elif scheme not in LOCATION_SCHEMES:
            return None
        url = resolve(text)
        if url is None:
            return None
        if not _SCHEMES.get(scheme, 0) and scheme not in _SCHEMES and url.endswith("/info"):
            return None  # a precomputed info file, not a zarr location
        for name in _TRAILING:
            if url.endswith("/" + name):
                url = url[: -len(name) - 1]
                break
        return version, url

    def parse_source(self, source: str) -> str | None:
        """The location (``http(s)://`` or ``file:///`` URL) of a ``zarr://``, ``zarr2://`` or ``zarr3://``
        source or a plain location, without a trailing metadata file name."""
        split = self._split(source)
        return None if split is None else split[1]

    def sniff(self, location: str, client: HttpClient) -> bool:
        """``zarr.json``, ``.zarray`` or ``.zgroup`` is at ``location`` (or ``location`` is one of them)."""
        for name in _TRAILING:
            if location.endswith("/" + name):
                location = location[: -len(name) - 1]
                break
        return any(
            sniff_file(client, join(location, name), MAX_METADATA_BYTES)
            for name in ("zarr.json", ".zarray", ".zgroup")
        )

    def probe(self, source: str, request: ProbeRequest) -> Probe:
        """Describe the array, or level ``request.scale`` (a dataset path or an index; default the first)
        of the OME-Zarr image, at ``source``."""
        split = self._split(source)
        if split is None:
            raise DescriptionError(f"source: expected {self.source_help}, found {source!r}", field="source")
        version, url = split
        with request.client(location=url) as client:
            return _probe(url, version, client, request.scale)


#: The ``"zarr"`` format (registered by :mod:`lazyflow_rbfs.remote.formats`).
ZARR = ZarrFormat()
