"""BossDB cutout API (remote format ``"boss"``): fields, URLs, tokens, request splitting, decoding, describe.

A cutout is ``GET <boss_url>/v1/cutout/<collection>/<experiment>/<channel>/<resolution>/<x0>:<x1>/<y0>:<y1>/
<z0>:<z1>/[<t0>:<t1>/]`` with the headers ``Authorization: Token <token>`` and ``Accept:
application/blosc`` (a blosc-compressed C-order (t)ZYX array) or ``application/npygz`` (a zlib-compressed
``.npy``). The service refuses cutouts above a size limit, so a larger roi is split into several requests
along its 512 x 512 x 16 (x, y, z) cuboid grid and assembled here. Rate limiting (HTTP 429 with
``Retry-After``) is retried with back-off by the HTTP layer.

Tokens are the user's, never the description's: they come from intern's configuration, each for the one
origin it is configured for (:mod:`.boss_tokens`); any other host gets the public token ``"public"``. A
token is a header only: never logged, written, or shown in a repr (see :mod:`lazyflow_rbfs.remote.http`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from lazyflow_rbfs.description import DEFAULT_BOSS_URL, IdentityLocation, parse_dtype
from lazyflow_rbfs.description.fields import check_http_base, field_error, join_field, parse_int, parse_str
from lazyflow_rbfs.errors import DescriptionError, InvalidResponseError
from lazyflow_rbfs.geometry import to_slices
from lazyflow_rbfs.remote import codecs
from lazyflow_rbfs.remote.formats.base import Probe, ProbeOption, ProbeRequest, RemoteFormat, fetch_block
from lazyflow_rbfs.remote.formats.boss_tokens import (
    INTERN_CONFIG,
    PUBLIC_TOKEN,
    configured_credentials,
    intern_config_path,
    resolve_token,
    token_source,
)
from lazyflow_rbfs.remote.http import HttpClient

__all__ = [
    "BOSS",
    "BOSS_CUBOID_XYZ",
    "BossFormat",
    "BossReader",
    "DEFAULT_MAX_CUTOUT_BYTES",
    "INTERN_CONFIG",
    "PUBLIC_TOKEN",
    "configured_credentials",
    "cuboid_advice",
    "cutout_url",
    "intern_config_path",
    "request_headers",
    "resolve_token",
    "split_cutout",
    "token_source",
]

logger = logging.getLogger(__name__)

#: The Boss stores data in cuboids of 512 x 512 x 16 voxels (x, y, z); aligned requests are cheapest.
BOSS_CUBOID_XYZ = (512, 512, 16)

#: Largest cutout (uncompressed bytes) requested at once unless the description's ``max_cutout_bytes``
#: says otherwise. The service refuses cutouts above 500 MB (HTTP 413); intern splits above 64 Mi voxels.
DEFAULT_MAX_CUTOUT_BYTES = 128 * 1024 * 1024

_ACCEPT = {"blosc": "application/blosc", "npygz": "application/npygz"}


def request_headers(desc: Any, token: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(public, secret)`` request headers of a Boss volume: the ``Accept`` type (and the public token)
    are no secret; a user's token is (the HTTP layer keeps it on its origin and out of messages)."""
    public = {"Accept": _ACCEPT[str(desc.boss_encoding or "blosc")]}
    secret: dict[str, str] = {}
    (public if token == PUBLIC_TOKEN else secret)["Authorization"] = f"Token {token}"
    return public, secret


# ---------------------------------------------------------------------------------------------------------
# URLs and splitting (pure)


def cutout_url(desc: Any, start: Sequence[int], stop: Sequence[int]) -> str:
    """The cutout URL of the box ``[start, stop)`` in Boss coordinates, in the order of ``desc.axes``."""
    axes = str(desc.axes)
    ranges = {a: f"{int(lo)}:{int(hi)}" for a, lo, hi in zip(axes, start, stop)}
    parts = [
        str(desc.boss_url).rstrip("/"),
        "v1",
        "cutout",
        quote(str(desc.collection), safe=""),
        quote(str(desc.experiment), safe=""),
        quote(str(desc.channel), safe=""),
        str(int(desc.resolution or 0)),
        ranges["x"],
        ranges["y"],
        ranges["z"],
    ]
    if "t" in ranges:
        parts.append(ranges["t"])
    return "/".join(parts) + "/"


def _cuboid(axes: str) -> np.ndarray:
    size = {"x": BOSS_CUBOID_XYZ[0], "y": BOSS_CUBOID_XYZ[1], "z": BOSS_CUBOID_XYZ[2], "t": 1}
    return np.array([size.get(a, 1) for a in axes], dtype=np.int64)


def split_cutout(
    start: Sequence[int], stop: Sequence[int], axes: str, itemsize: int, max_bytes: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split the box ``[start, stop)`` (Boss coordinates) into boxes of at most ``max_bytes`` each.

    Cuts fall on the Boss cuboid grid (512 x 512 x 16) where possible: the axis spanning the most cuboids
    is halved at a cuboid boundary until every piece fits; a single cuboid larger than the limit is halved
    at a voxel. The pieces tile the box exactly, in C order of their starts.
    """
    lo0 = np.asarray(start, dtype=np.int64)
    hi0 = np.asarray(stop, dtype=np.int64)
    cuboid = _cuboid(axes)
    max_bytes = max(int(max_bytes), int(itemsize))
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    todo = [(lo0, hi0)]
    while todo:
        lo, hi = todo.pop()
        if int(np.prod(hi - lo)) * itemsize <= max_bytes:
            pieces.append((lo, hi))
            continue
        first = lo // cuboid
        last = (hi - 1) // cuboid
        spans = last - first + 1
        if (spans > 1).any():
            axis = int(np.argmax(spans))
            cut = (first[axis] + spans[axis] // 2) * cuboid[axis]
        else:
            axis = int(np.argmax(hi - lo))
            cut = lo[axis] + (hi[axis] - lo[axis]) // 2
        left_hi = hi.copy()
        left_hi[axis] = cut
        right_lo = lo.copy()
        right_lo[axis] = cut
        todo.append((right_lo, hi))
        todo.append((lo, left_hi))
    pieces.sort(key=lambda box: tuple(box[0].tolist()))
    return pieces


def cuboid_advice(
    axes: str,
    origin_offset: Sequence[int],
    block_shape: Sequence[int],
    view_origin: Sequence[int] | None = None,
) -> list[str]:
    """Advice when local blocks fight the Boss cuboid grid (512 x 512 x 16), for ``rbfs info``.

    Returns an empty list when every block starts on a cuboid boundary and spans whole cuboids.
    """
    cuboid = _cuboid(axes)
    block = np.asarray(block_shape, dtype=np.int64)
    origin = np.asarray(origin_offset, dtype=np.int64)
    if view_origin is not None:
        origin = origin + np.asarray(view_origin, dtype=np.int64)
    advice: list[str] = []
    names = [a for a, c in zip(axes, cuboid.tolist()) if c > 1]
    bad_shape = [a for a, b, c in zip(axes, block.tolist(), cuboid.tolist()) if c > 1 and b % c]
    if bad_shape:
        recommended = [
            int(-(-b // c) * c) if c > 1 else int(b) for b, c in zip(block.tolist(), cuboid.tolist())
        ]
        advice.append(
            f"block_shape {[int(b) for b in block]} is not a multiple of the Boss cuboid "
            f"{dict(zip(names, [int(c) for c in cuboid if c > 1]))} on axes {''.join(bad_shape)}: "
            f"each block reads partial cuboids; recommended block_shape {recommended}"
        )
    bad_origin = [a for a, o, c in zip(axes, origin.tolist(), cuboid.tolist()) if c > 1 and o % c]
    if bad_origin:
        advice.append(
            f"blocks start at Boss coordinates {[int(o) for o in origin]} (origin_offset + view_origin), "
            f"off the cuboid grid on axes {''.join(bad_origin)}: every block touches extra cuboids"
        )
    return advice


# ---------------------------------------------------------------------------------------------------------
# Reader


class BossReader:
    """Fetch rois of a ``"boss"`` remote description through an :class:`HttpClient`.

    The client must carry the headers of :func:`request_headers`. Coordinates passed in are the volume's own;
    ``origin_offset`` is added for the URLs.
    """

    def __init__(self, desc: Any, client: HttpClient) -> None:
        self.desc = desc
        self.client = client
        self.axes = str(desc.axes)
        self.dtype = np.dtype(desc.dtype)
        self.origin = np.asarray(desc.origin_offset, dtype=np.int64)
        self.encoding = str(desc.boss_encoding or "blosc")
        self.max_bytes = int(desc.max_cutout_bytes or DEFAULT_MAX_CUTOUT_BYTES)
        if self.encoding == "blosc":
            try:
                codecs.blosc_decompressor()
            except codecs.MissingCodecError as exc:
                raise DescriptionError(
                    f"boss_encoding: expected an encoding this installation decodes, found 'blosc': {exc}; "
                    f"or set boss_encoding to 'npygz'",
                    field="boss_encoding",
                ) from None

    def pieces(self, start: np.ndarray, stop: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The requests of a roi: ``(start, stop)`` pairs in volume coordinates."""
        for lo, hi in split_cutout(
            start + self.origin, stop + self.origin, self.axes, self.dtype.itemsize, self.max_bytes
        ):
            yield lo - self.origin, hi - self.origin

    def urls(self, start: np.ndarray, stop: np.ndarray) -> list[str]:
        return [
            cutout_url(self.desc, lo + self.origin, hi + self.origin) for lo, hi in self.pieces(start, stop)
        ]

    def fetch(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        pieces = list(self.pieces(start, stop))
        if len(pieces) == 1:
            return self._fetch_one(start, stop)
        logger.debug(
            "boss cutout of shape %s split into %d requests", tuple((stop - start).tolist()), len(pieces)
        )
        out = np.empty(tuple(int(n) for n in stop - start), dtype=self.dtype)
        for lo, hi in pieces:
            out[to_slices(lo - start, hi - start)] = self._fetch_one(lo, hi)
        return out

    def _fetch_one(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        url = cutout_url(self.desc, start + self.origin, stop + self.origin)
        expected = codecs.Expected(url=url, shape=tuple(int(n) for n in stop - start), dtype=self.dtype)
        return fetch_block(self.client, url, self.encoding, expected)


# ---------------------------------------------------------------------------------------------------------
# Describing a Boss channel (rbfs describe)

#: Largest metadata response read (collection, experiment, channel and coordinate frame JSON).
MAX_METADATA_BYTES = 16 * 1024 * 1024

_BOSS_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def _get_json(client: HttpClient, url: str) -> Any:
    body = client.get(url, max_bytes=MAX_METADATA_BYTES)
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidResponseError(
            f"response from {url} is not JSON ({exc}); beginning {body[:60]!r}", url=url, status=200
        ) from exc


def _json_field(obj: Any, key: str, url: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidResponseError(
            f"response from {url} lacks a usable {key!r} (found {value!r})", url=url, status=200
        )
    return value


def _resolution(scale: str | int | None) -> int:
    if scale is None:
        return 0
    if isinstance(scale, int) and not isinstance(scale, bool):
        return scale
    if isinstance(scale, str) and scale.isdigit():
        return int(scale)
    raise DescriptionError(
        f"scale: expected a Boss resolution level (an integer >= 0), found {scale!r}", field="scale"
    )


def _blosc_installed() -> bool:
    try:
        codecs.blosc_decompressor()
    except codecs.MissingCodecError:
        logger.info("no blosc package installed: the description asks the Boss for npygz bodies")
        return False
    return True


def _channel_description(
    names: tuple[str, str, str], base: str, client: HttpClient, resolution: int
) -> dict[str, Any]:
    """The remote description of a channel, from the experiment, channel and coordinate frame metadata."""
    collection, experiment, channel = names
    c, e, ch = (quote(n, safe="") for n in names)
    exp_url = f"{base}/v1/collection/{c}/experiment/{e}/"
    experiment_info = _get_json(client, exp_url)
    frame_name = _json_field(experiment_info, "coord_frame", exp_url, str)
    hierarchy = experiment_info.get("hierarchy_method", "anisotropic")
    levels = experiment_info.get("num_hierarchy_levels")
    if isinstance(levels, int) and not isinstance(levels, bool) and not 0 <= resolution < max(levels, 1):
        raise DescriptionError(
            f"scale: expected a Boss resolution from 0 to {levels - 1} for {collection}/{experiment}, found "
            f"{resolution}",
            field="scale",
        )
    chan_url = f"{base}/v1/collection/{c}/experiment/{e}/channel/{ch}/"
    channel_info = _get_json(client, chan_url)
    dtype = parse_dtype(_json_field(channel_info, "datatype", chan_url, str), "dtype")
    frame_url = f"{base}/v1/coord/{quote(frame_name, safe='')}/"
    frame = _get_json(client, frame_url)
    factor = 2**resolution
    start, stop = [], []
    for axis in "zyx":
        lo = int(_json_field(frame, f"{axis}_start", frame_url, int))
        hi = int(_json_field(frame, f"{axis}_stop", frame_url, int))
        if hi <= lo or lo < 0:
            raise InvalidResponseError(
                f"response from {frame_url}: {axis}_start {lo} and {axis}_stop {hi} are not a valid extent",
                url=frame_url,
                status=200,
            )
        f = factor if (axis in "yx" or hierarchy == "isotropic") else 1
        start.append(lo // f)
        stop.append(-(-hi // f))
    return {
        "_schema_name": "RESTful-volume-description",
        "_schema_version": 1.0,
        "name": f"{collection}/{experiment}/{channel}",
        "format": "boss",
        "axes": "zyx",
        "dtype": np.dtype(dtype).name,
        "origin_offset": start,
        "bounds": stop,
        "boss_url": base,
        "collection": collection,
        "experiment": experiment,
        "channel": channel,
        "resolution": resolution,
        # blosc is the Boss's native body; without a blosc package, npygz (zlib) needs nothing extra.
        "boss_encoding": "blosc" if _blosc_installed() else "npygz",
    }


# ---------------------------------------------------------------------------------------------------------
# The format


class BossFormat(RemoteFormat):
    """Remote format ``"boss"``: a BossDB channel at one resolution, in cutouts split at the size limit."""

    names = ("boss",)
    fields = {
        "boss_url": str,
        "collection": str,
        "experiment": str,
        "channel": str,
        "resolution": int,
        "boss_encoding": str,
        "max_cutout_bytes": int,
    }
    url_source = "boss_url, collection, experiment, channel and resolution"
    source_help = "boss://collection/experiment/channel"
    metadata_help = (
        "the Boss API's JSON metadata of the collection, experiment, channel or coordinate frame; check "
        "the names in the boss:// source and --boss-url"
    )
    source_schemes = ("boss",)
    probe_options = (
        ProbeOption("boss_url", "--boss-url", f"Boss API base URL (default {DEFAULT_BOSS_URL})", "BASE"),
    )

    #: ``boss_encoding`` values: the body encodings the Boss sends (``Accept`` types).
    ENCODINGS = tuple(_ACCEPT)

    def validate(self, out: dict[str, Any], prefix: str) -> None:
        def f(name: str) -> str:
            return join_field(prefix, name)

        if out["axes"] not in ("zyx", "tzyx"):
            raise field_error(
                f("axes"), "'zyx' or 'tzyx' for format 'boss' (BossDB cutouts are (t)ZYX)", out["axes"]
            )
        base = out["boss_url"]
        out["boss_url"] = (
            DEFAULT_BOSS_URL if base is None else check_http_base(base, f("boss_url"), "the Boss API")
        )
        for name in ("collection", "experiment", "channel"):
            value = parse_str(out[name], f(name))
            if value is None or _BOSS_NAME.fullmatch(value) is None:
                raise field_error(f(name), f"the Boss {name} name (letters, digits, '_', '-', '.')", value)
            out[name] = value
        resolution = parse_int(out["resolution"], f("resolution"))
        if resolution is None:
            resolution = 0
        if resolution < 0:
            raise field_error(
                f("resolution"), "a resolution level >= 0 (0 is the native resolution)", resolution
            )
        out["resolution"] = resolution
        encoding = parse_str(out["boss_encoding"], f("boss_encoding"))
        if encoding is None:
            encoding = "blosc"
        if encoding not in self.ENCODINGS:
            raise field_error(f("boss_encoding"), f"one of {list(self.ENCODINGS)}", encoding)
        out["boss_encoding"] = encoding
        limit = parse_int(out["max_cutout_bytes"], f("max_cutout_bytes"))
        if limit is not None and limit <= 0:
            raise field_error(f("max_cutout_bytes"), "a positive number of bytes", limit)
        out["max_cutout_bytes"] = limit

    def request_headers(self, desc: Any) -> tuple[dict[str, str], dict[str, str]]:
        """The ``Accept`` type and the user's token for this ``boss_url``'s host (intern's configuration);
        the public token is no secret, a user's token is."""
        base = str(desc.boss_url)
        logger.debug("boss volume %s: token from %s", self.source_url(desc), token_source(base))
        return request_headers(desc, resolve_token(base))

    def open_reader(self, desc: Any, client: HttpClient) -> BossReader:
        return BossReader(desc, client)

    def source_url(self, desc: Any) -> str:
        """``<boss_url>/v1/cutout/<collection>/<experiment>/<channel>/<resolution>/``."""
        return (
            f"{str(desc.boss_url).rstrip('/')}/v1/cutout/{desc.collection}/{desc.experiment}/{desc.channel}/"
            f"{int(desc.resolution or 0)}/"
        )

    def identity_location(self, desc: Any) -> IdentityLocation:
        """The channel (the resolution is the scale); not the body encoding or the cutout limit."""
        path = f"/v1/cutout/{desc.collection}/{desc.experiment}/{desc.channel}/"
        return IdentityLocation(str(desc.boss_url).rstrip("/"), path, int(desc.resolution or 0))

    def advice(self, remote_desc: Any, local_desc: Any) -> list[str]:
        """Advice when local blocks fight the cuboid grid (:func:`cuboid_advice`)."""
        return cuboid_advice(
            str(remote_desc.axes), remote_desc.origin_offset, local_desc.block_shape, local_desc.view_origin
        )

    def parse_source(self, source: str) -> tuple[str, str, str] | None:
        """``boss://collection/experiment/channel`` → ``(collection, experiment, channel)``."""
        text = str(source).strip()
        if urlsplit(text).scheme.lower() != "boss":
            return None
        parts = [p for p in text[len("boss://") :].split("/") if p]
        if len(parts) != 3 or any(_BOSS_NAME.fullmatch(p) is None for p in parts):
            raise DescriptionError(
                f"source: expected boss://collection/experiment/channel, found {source!r}", field="source"
            )
        return parts[0], parts[1], parts[2]

    def probe(self, source: str, request: ProbeRequest) -> Probe:
        """Describe a channel: ``request.scale`` is the resolution level (default 0), option ``boss_url``
        the API (default the public BossDB). The metadata is read with the user's token for that host
        (intern's configuration), else the public one; nothing about the token is written."""
        names = self.parse_source(source)
        if names is None:
            raise DescriptionError(f"source: expected a boss:// source, found {source!r}", field="source")
        base = check_http_base(
            request.options.get("boss_url") or DEFAULT_BOSS_URL, "boss_url", "the Boss API"
        )
        resolution = _resolution(request.scale)
        token = resolve_token(base, request.environ)
        logger.debug("describing %s: Boss token from %s", source, token_source(base, request.environ))
        public = {"Accept": "application/json"}
        secret: dict[str, str] = {}
        if not any(k.lower() == "authorization" for k in request.headers):
            (public if token == PUBLIC_TOKEN else secret)["Authorization"] = f"Token {token}"
        with request.client(secret=secret, public=public) as client:
            remote = _channel_description(names, base, client, resolution)
        cuboid = (BOSS_CUBOID_XYZ[2], BOSS_CUBOID_XYZ[1], BOSS_CUBOID_XYZ[0])
        return Probe(remote, cuboid, np.dtype(remote["dtype"]).itemsize)


#: The ``"boss"`` format (registered by :mod:`lazyflow_rbfs.remote.formats`).
BOSS = BossFormat()
