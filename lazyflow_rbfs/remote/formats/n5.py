"""N5 datasets (remote format ``"n5"``): fields, reading, describe.

An N5 dataset is a folder holding ``attributes.json`` (``dimensions``, ``blockSize``, ``dataType``,
``compression``; see :mod:`.n5_meta`) and one file per block at ``<i0>/<i1>/...`` (block grid indices,
fastest axis first). A multiscale group holds datasets ``s0``, ``s1``, ... (listed by its
``multiscales`` attribute when it has one); ``--scale`` picks one by key or index, default ``s0``.

Everything is presented in C order (slowest axis first): N5's fastest-first lists appear reversed, as
z5py presents them. A roi is read by fetching every block it touches and copying their intersections.
A block the server does not have (HTTP 404, or no such file) reads as zeros: N5 writers leave out blocks
that hold only zeros. Any other failure, a 403 included, is an error and never zeros.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from lazyflow_rbfs.description import IdentityLocation
from lazyflow_rbfs.description.fields import (
    Vector,
    check_location_base,
    field_error,
    join_field,
    parse_vector,
)
from lazyflow_rbfs.errors import DescriptionError, DownloadError
from lazyflow_rbfs.geometry import overlap_slices
from lazyflow_rbfs.remote.codecs import compressors
from lazyflow_rbfs.remote.formats.base import Probe, ProbeRequest, RemoteFormat, sniff_file
from lazyflow_rbfs.remote.formats.n5_meta import (
    COMPRESSIONS,
    MAX_ATTRIBUTES_BYTES,
    N5Attributes,
    axis_names,
    check_compression_available,
    default_axes,
    max_block_body,
    parse_attributes,
    parse_block_header,
    parse_json_object,
)
from lazyflow_rbfs.remote.formats.precomputed import chunk_boxes
from lazyflow_rbfs.remote.http import HttpClient
from lazyflow_rbfs.remote.locations import LOCATION_SCHEMES, join, resolve

__all__ = ["N5Reader", "N5Format", "N5", "ATTRIBUTES", "MAX_SCALES"]

logger = logging.getLogger(__name__)

#: The metadata file of every N5 dataset and group.
ATTRIBUTES = "attributes.json"

#: Most levels of a multiscale group looked at when listing them for a message.
MAX_SCALES = 32

_DECOMPRESSORS = frozenset(COMPRESSIONS.values()) | {"zlib"}


def _missing(exc: DownloadError) -> bool:
    return type(exc) is DownloadError and exc.status == 404


def _fetch_json(client: HttpClient, url: str) -> dict[str, Any] | None:
    """The JSON object at ``url``, ``None`` if there is no such file (404)."""
    try:
        body = client.get(url, max_bytes=MAX_ATTRIBUTES_BYTES)
    except DownloadError as exc:
        if _missing(exc):
            return None
        raise
    return parse_json_object(body, url)


# ---------------------------------------------------------------------------------------------------------
# Reader


class N5Reader:
    """Fetch rois of an ``"n5"`` remote description through an :class:`HttpClient`.

    The dataset's ``attributes.json`` is fetched at the first read (once; a failed fetch is retried at the
    next read) and checked against the description: dtype, block shape, compression and the box
    ``[origin_offset, bounds)`` inside the dataset's dimensions.
    """

    def __init__(self, desc: Any, client: HttpClient) -> None:
        self.desc = desc
        self.client = client
        dataset = str(desc.n5_dataset or "")
        self.base = join(str(desc.n5_url), dataset) if dataset else str(desc.n5_url).rstrip("/")
        self.dtype = np.dtype(desc.dtype)
        self.origin = np.asarray(desc.origin_offset, dtype=np.int64)
        self.bounds = np.asarray(desc.bounds, dtype=np.int64)
        self.block_shape = tuple(int(n) for n in desc.n5_block_shape)
        self.compression = str(desc.n5_compression)
        self._stored = self.dtype.newbyteorder(">")
        self._lock = threading.Lock()
        self._attrs: N5Attributes | None = None

    @property
    def attributes_url(self) -> str:
        return join(self.base, ATTRIBUTES)

    def attributes(self) -> N5Attributes:
        """The dataset's attributes (fetched and checked against the description the first time)."""
        with self._lock:
            if self._attrs is None:
                url = self.attributes_url
                obj = _fetch_json(self.client, url)
                if obj is None or "dimensions" not in obj:
                    raise DescriptionError(
                        f"n5_dataset: expected an N5 dataset at {self.base} (an {ATTRIBUTES} with "
                        f"'dimensions'), found {'no ' + ATTRIBUTES if obj is None else 'a group'}; the "
                        f"source changed since it was described",
                        field="n5_dataset",
                    )
                attrs = parse_attributes(obj, url)
                self._check_against_description(attrs)
                check_compression_available(attrs.compression, self.base, "n5_compression")
                self._attrs = attrs
                logger.debug(
                    "n5 %s: shape %s block %s %s %s",
                    self.base,
                    attrs.shape,
                    attrs.block_shape,
                    attrs.dtype.name,
                    attrs.compression,
                )
            return self._attrs

    def _check_against_description(self, attrs: N5Attributes) -> None:
        where = attrs.url
        changed = "; the source changed since it was described (describe it again)"
        if attrs.dtype != self.dtype:
            raise DescriptionError(
                f"dtype: expected the dataType {attrs.dtype.name} of {where}, found "
                f"{self.dtype.name}{changed}",
                field="dtype",
            )
        if len(attrs.shape) != len(self.bounds):
            raise DescriptionError(
                f"axes: expected {len(attrs.shape)} axes for {where}, found {str(self.desc.axes)!r}{changed}",
                field="axes",
            )
        if attrs.block_shape != self.block_shape:
            raise DescriptionError(
                f"n5_block_shape: expected the blockSize of {where}, {list(attrs.block_shape)} (C order), "
                f"found {list(self.block_shape)}{changed}",
                field="n5_block_shape",
            )
        if attrs.compression != self.compression:
            raise DescriptionError(
                f"n5_compression: expected the compression of {where}, {attrs.compression!r}, found "
                f"{self.compression!r}{changed}",
                field="n5_compression",
            )
        if (self.bounds > np.asarray(attrs.shape, dtype=np.int64)).any():
            raise DescriptionError(
                f"bounds: expected the box origin_offset..bounds inside the dimensions {list(attrs.shape)} "
                f"(C order) of {where}, found {self.origin.tolist()}..{self.bounds.tolist()}{changed}",
                field="bounds",
            )

    def _blocks(self, start: np.ndarray, stop: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        attrs = self.attributes()
        zero = np.zeros(len(attrs.shape), dtype=np.int64)
        yield from chunk_boxes(start + self.origin, stop + self.origin, zero, attrs.shape, attrs.block_shape)

    def block_url(self, lo: np.ndarray) -> str:
        """The URL of the block starting at ``lo`` (C order): its grid indices, fastest axis first."""
        grid = np.asarray(lo, dtype=np.int64) // np.asarray(self.block_shape, dtype=np.int64)
        return join(self.base, *(str(int(i)) for i in grid[::-1]))

    def urls(self, start: np.ndarray, stop: np.ndarray) -> list[str]:
        return [self.block_url(lo) for lo, _ in self._blocks(start, stop)]

    def fetch(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        out = np.zeros(tuple(int(n) for n in stop - start), dtype=self.dtype)
        abs_lo, abs_hi = start + self.origin, stop + self.origin
        for lo, hi in self._blocks(start, stop):
            block = self._fetch_block(lo, hi)
            if block is None:
                continue  # missing: zeros (N5 semantics)
            src, dst = overlap_slices(lo, hi, abs_lo, abs_hi)
            out[dst] = block[src]
        return out

    def _fetch_block(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
        """The block at ``[lo, hi)`` cropped to it, ``None`` if the server does not have it."""
        url = self.block_url(lo)
        cropped = tuple(int(n) for n in hi - lo)
        try:
            body = self.client.get(url, max_bytes=max_block_body(self.block_shape, self.dtype.itemsize))
        except DownloadError as exc:
            if _missing(exc):
                logger.debug("n5 block %s is missing: zeros", url)
                return None
            raise
        try:
            header = parse_block_header(body, url, cropped, self.block_shape)
            nbytes = math.prod(header.shape) * self.dtype.itemsize
            data = compressors.decompress(self.compression, body[header.offset :], nbytes, url)
        except DownloadError:
            self.client.record_error()
            raise
        block = np.frombuffer(data, dtype=self._stored).reshape(header.shape)
        return block[tuple(slice(0, n) for n in cropped)].astype(self.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------
# Describe: a dataset, or a level of a multiscale group


def _parse_scale(value: Any, field: str) -> str | int | None:
    expected = "a dataset key of the group (e.g. 's1') or a level index >= 0"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
        raise field_error(field, expected, value)
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        try:
            join("x", value)
        except ValueError:
            raise field_error(field, expected, value) from None
        return value
    if int(value) < 0:
        raise field_error(field, expected, int(value))
    return int(value)


def _group_keys(group: dict[str, Any]) -> list[str] | None:
    """The dataset paths of a group's ``multiscales`` attribute (the first one), ``None`` without it."""
    multiscales = group.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        return None
    datasets = multiscales[0].get("datasets")
    if not isinstance(datasets, list):
        return None
    keys = [d.get("path") for d in datasets if isinstance(d, dict)]
    return [k for k in keys if isinstance(k, str) and k] or None


def _list_levels(client: HttpClient, url: str) -> list[str]:
    """The ``s0``, ``s1``, ... datasets under ``url`` (for messages): up to the first one missing."""
    found = []
    for i in range(MAX_SCALES):
        if _fetch_json(client, join(url, f"s{i}", ATTRIBUTES)) is None:
            break
        found.append(f"s{i}")
    return found


def _choose_dataset(
    client: HttpClient, url: str, group: dict[str, Any] | None, scale: str | int | None
) -> tuple[str, dict[str, Any]]:
    """The dataset path under the group at ``url`` that ``scale`` names, and its attributes."""
    keys = _group_keys(group or {})
    if scale is None:
        scale = 0
    if isinstance(scale, int):
        if keys is not None:
            if scale >= len(keys):
                raise DescriptionError(
                    f"scale: expected a level index below {len(keys)} or a key of the N5 group {url} (one "
                    f"of {keys}), found {scale}",
                    field="scale",
                )
            key = keys[scale]
        else:
            key = f"s{scale}"
    else:
        key = scale
    try:
        attrs_url = join(url, key, ATTRIBUTES)
    except ValueError:
        raise DescriptionError(
            f"scale: expected a relative dataset path in the multiscales of {url}, found {key!r}",
            field="scale",
        ) from None
    obj = _fetch_json(client, attrs_url)
    if obj is None or "dimensions" not in obj:
        levels = keys if keys is not None else _list_levels(client, url)
        if not levels:
            raise DescriptionError(
                f"source: expected an N5 dataset or a multiscale group at {url}: found "
                f"{'an ' + ATTRIBUTES + ' without dimensions' if group is not None else 'no ' + ATTRIBUTES}"
                f" and no dataset s0 under it",
                field="source",
            )
        raise DescriptionError(
            f"scale: expected a level of the N5 group {url} (keys {levels}, or an index below "
            f"{len(levels)}), found {scale!r}",
            field="scale",
        )
    return key, obj


def _describe(url: str, client: HttpClient, scale: str | int | None) -> Probe:
    group = _fetch_json(client, join(url, ATTRIBUTES))
    if group is not None and "dimensions" in group:
        if scale not in (None, 0):
            raise DescriptionError(
                f"scale: {url} is a single N5 dataset, not a multiscale group; expected no scale (or 0), "
                f"found {scale!r}",
                field="scale",
            )
        dataset, obj = "", group
    else:
        dataset, obj = _choose_dataset(client, url, group, scale)
    base = join(url, dataset) if dataset else url
    attrs = parse_attributes(obj, join(base, ATTRIBUTES))
    check_compression_available(attrs.compression, base)
    axes = attrs.axes
    if axes is None and group is not None and dataset:
        axes = axis_names(group.get("axes"), len(attrs.shape), join(url, ATTRIBUTES))
    if axes is None:
        axes = default_axes(len(attrs.shape), base)
    name = url.rsplit("/", 1)[-1] + (f"/{dataset}" if dataset else "")
    remote = {
        "_schema_name": "RESTful-volume-description",
        "_schema_version": 1.0,
        "name": name,
        "format": "n5",
        "axes": axes,
        "dtype": attrs.dtype.name,
        "origin_offset": [0] * len(attrs.shape),
        "bounds": list(attrs.shape),
        "n5_url": url,
        "n5_dataset": dataset,
        "n5_block_shape": list(attrs.block_shape),
        "n5_compression": attrs.compression,
    }
    return Probe(remote, tuple(attrs.block_shape), attrs.dtype.itemsize)


# ---------------------------------------------------------------------------------------------------------
# The format


class N5Format(RemoteFormat):
    """Remote format ``"n5"``: one N5 dataset (or one level of a multiscale group)."""

    names = ("n5",)
    fields = {"n5_url": str, "n5_dataset": str, "n5_block_shape": Vector, "n5_compression": str}
    url_source = "n5_url, n5_dataset and the dataset's attributes.json"
    source_help = "an N5 dataset or multiscale group (the folder holding 'attributes.json'; n5:// prefix)"
    sniff_help = "'attributes.json' (N5)"
    metadata_help = (
        "the 'attributes.json' of an N5 dataset or of a multiscale group (s0, s1, ...); the source must be "
        "the dataset or the group folder"
    )
    source_schemes = ("n5",)
    location_schemes = LOCATION_SCHEMES

    def validate(self, out: dict[str, Any], prefix: str) -> None:
        def f(name: str) -> str:
            return join_field(prefix, name)

        ndim = len(out["axes"])
        out["n5_url"] = check_location_base(
            out["n5_url"], f("n5_url"), "the URL of the N5 container or group holding the dataset"
        )
        dataset = out["n5_dataset"]
        if dataset is None:
            dataset = ""
        if not isinstance(dataset, str):
            raise field_error(f("n5_dataset"), "a relative dataset path (or '')", dataset)
        if dataset:
            try:
                join("x", dataset)
            except ValueError:
                raise field_error(
                    f("n5_dataset"), "a relative dataset path without '.', '..' or empty parts", dataset
                ) from None
        out["n5_dataset"] = dataset
        shape = parse_vector(out["n5_block_shape"], f("n5_block_shape"), ndim)
        if shape is None or (shape <= 0).any():
            raise field_error(
                f("n5_block_shape"), f"the dataset's blockSize in C order ({ndim} integers > 0)", shape
            )
        out["n5_block_shape"] = [int(n) for n in shape]
        if out["n5_compression"] not in _DECOMPRESSORS:
            raise field_error(f("n5_compression"), f"one of {sorted(_DECOMPRESSORS)}", out["n5_compression"])

    def open_reader(self, desc: Any, client: HttpClient) -> N5Reader:
        check_compression_available(str(desc.n5_compression), str(desc.n5_url), "n5_compression")
        return N5Reader(desc, client)

    def source_url(self, desc: Any) -> str:
        """``<n5_url>/<n5_dataset> (N5)``."""
        dataset = str(desc.n5_dataset or "")
        return f"{join(str(desc.n5_url), dataset) if dataset else desc.n5_url} (N5)"

    def identity_location(self, desc: Any) -> IdentityLocation:
        """The container or group and the dataset path under it."""
        return IdentityLocation(str(desc.n5_url).rstrip("/"), scale=str(desc.n5_dataset or "") or None)

    def parse_source(self, source: str) -> str | None:
        """The dataset's or group's folder URL (``n5://`` prefix allowed), without ``/attributes.json``."""
        text = str(source).strip()
        if urlsplit(text).scheme.lower() == "n5" and "://" in text:
            text = text[len("n5://") :]
        url = resolve(text)
        if url is not None and url.endswith("/" + ATTRIBUTES):
            url = url[: -len("/" + ATTRIBUTES)]
        return url

    def sniff(self, location: str, client: HttpClient) -> bool:
        """An ``attributes.json`` is at ``location``, or under ``s0/`` (groups need not have one)."""
        return sniff_file(client, join(location, ATTRIBUTES), MAX_ATTRIBUTES_BYTES) or sniff_file(
            client, join(location, "s0", ATTRIBUTES), MAX_ATTRIBUTES_BYTES
        )

    def probe(self, source: str, request: ProbeRequest) -> Probe:
        """Describe the dataset at ``source``, or the level ``request.scale`` (key or index, default the
        first) of the multiscale group there."""
        url = self.parse_source(source)
        if url is None:
            raise DescriptionError(f"source: expected {self.source_help}, found {source!r}", field="source")
        scale = _parse_scale(request.scale, "scale")
        with request.client(location=url) as client:
            return _describe(url, client, scale)


#: The ``"n5"`` format (registered by :mod:`lazyflow_rbfs.remote.formats`).
N5 = N5Format()
