"""BossDB cutout API (remote format ``"boss"``): URLs, tokens, request splitting and decoding.

A cutout is ``GET <boss_url>/v1/cutout/<collection>/<experiment>/<channel>/<resolution>/<x0>:<x1>/<y0>:<y1>/
<z0>:<z1>/[<t0>:<t1>/]`` with the headers ``Authorization: Token <token>`` and ``Accept:
application/blosc`` (a blosc-compressed C-order (t)ZYX array) or ``application/npygz`` (a zlib-compressed
``.npy``). The service refuses cutouts above a size limit, so a larger roi is split into several requests
along its 512 x 512 x 16 (x, y, z) cuboid grid and assembled here. Rate limiting (HTTP 429 with
``Retry-After``) is retried with back-off by the HTTP layer.

The token comes from the description's ``token_env`` (an environment variable's *name*) or ``token_file``,
else from ``$INTERN_TOKEN`` (intern's convention), else it is the public token ``"public"``. It is sent as a
header only: never logged, written, or shown in a repr.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np

from lazyflow_rbfs.errors import DescriptionError, DownloadError
from lazyflow_rbfs.remote import codecs
from lazyflow_rbfs.remote.http import HttpClient

__all__ = [
    "BOSS_CUBOID_XYZ",
    "DEFAULT_MAX_CUTOUT_BYTES",
    "PUBLIC_TOKEN",
    "TOKEN_ENV_DEFAULT",
    "resolve_token",
    "token_source",
    "cutout_url",
    "split_cutout",
    "cuboid_advice",
    "BossReader",
    "boss_headers",
]

logger = logging.getLogger(__name__)

#: The Boss stores data in cuboids of 512 x 512 x 16 voxels (x, y, z); aligned requests are cheapest.
BOSS_CUBOID_XYZ = (512, 512, 16)

#: Largest cutout (uncompressed bytes) requested at once unless the description's ``max_cutout_bytes``
#: says otherwise. The service refuses cutouts above 500 MB (HTTP 413); intern splits above 64 Mi voxels.
DEFAULT_MAX_CUTOUT_BYTES = 128 * 1024 * 1024

#: intern's environment variable for the Boss token.
TOKEN_ENV_DEFAULT = "INTERN_TOKEN"

#: The token of anonymous, read-only access to public BossDB data.
PUBLIC_TOKEN = "public"

_MAX_TOKEN_FILE = 64 * 1024

_ACCEPT = {"blosc": "application/blosc", "npygz": "application/npygz"}


# ---------------------------------------------------------------------------------------------------------
# Tokens


def token_source(desc: Any, environ: Mapping[str, str] | None = None) -> str:
    """Where the token of ``desc`` comes from, for messages (never the token itself)."""
    env = os.environ if environ is None else environ
    name = getattr(desc, "token_env", None)
    if name and env.get(name):
        return f"environment variable {name} (token_env)"
    path = getattr(desc, "token_file", None)
    if path:
        return f"token file {path} (token_file)"
    if name:
        return f"environment variable {name} (token_env), which is not set"
    if env.get(TOKEN_ENV_DEFAULT):
        return f"environment variable {TOKEN_ENV_DEFAULT}"
    return f"the public token {PUBLIC_TOKEN!r}"


def resolve_token(desc: Any, environ: Mapping[str, str] | None = None, *, field_prefix: str = "") -> str:
    """The Boss token for ``desc``.

    Order: the environment variable named by ``token_env`` (if set), the file ``token_file`` (``~``
    expanded; relative paths are relative to the current directory), ``$INTERN_TOKEN``, then ``"public"``.

    Raises
    ------
    DescriptionError
        ``token_env`` names a variable that is not set (and there is no ``token_file``), or the token file
        cannot be read or is empty. The message names the variable or file, never the token.
    """
    env = os.environ if environ is None else environ
    prefix = f"{field_prefix}." if field_prefix else ""
    name = getattr(desc, "token_env", None)
    if name:
        value = env.get(name, "").strip()
        if value:
            return value
    path = getattr(desc, "token_file", None)
    if path:
        full = os.path.expanduser(path)
        try:
            with open(full, "rb") as file:
                raw = file.read(_MAX_TOKEN_FILE + 1)
        except OSError as exc:
            raise DescriptionError(
                f"{prefix}token_file: expected a readable file holding the Boss token, found {path!r} "
                f"({exc.strerror or exc})",
                field=f"{prefix}token_file",
            ) from None
        token = raw.decode("utf-8", "replace").strip() if len(raw) <= _MAX_TOKEN_FILE else ""
        if not token or any(ch.isspace() for ch in token):
            raise DescriptionError(
                f"{prefix}token_file: expected a file holding one Boss token (no spaces), found {path!r} "
                f"{'empty' if not token else 'with more than one word'}",
                field=f"{prefix}token_file",
            )
        return token
    if name:
        raise DescriptionError(
            f"{prefix}token_env: expected the name of a set environment variable holding the Boss token, "
            f"found {name!r}, which is not set (export {name}=... or use token_file)",
            field=f"{prefix}token_env",
        )
    value = env.get(TOKEN_ENV_DEFAULT, "").strip()
    return value or PUBLIC_TOKEN


def boss_headers(desc: Any, token: str) -> dict[str, str]:
    """The request headers of a Boss volume: ``Authorization: Token <token>`` and the ``Accept`` type."""
    return {"Authorization": f"Token {token}", "Accept": _ACCEPT[str(desc.boss_encoding or "blosc")]}


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

    The client must carry the headers of :func:`boss_headers`. Coordinates passed in are the volume's own;
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
            where = tuple(slice(int(a), int(b)) for a, b in zip(lo - start, hi - start))
            out[where] = self._fetch_one(lo, hi)
        return out

    def _fetch_one(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        url = cutout_url(self.desc, start + self.origin, stop + self.origin)
        shape = tuple(int(n) for n in stop - start)
        expected = codecs.Expected(url=url, shape=shape, dtype=self.dtype)
        nbytes = int(np.prod(shape)) * self.dtype.itemsize
        body = self.client.get(url, max_bytes=2 * nbytes + (1 << 20))
        try:
            if self.encoding == "blosc":
                array = codecs.decode_blosc(body, expected)
            else:
                array = codecs.decode_npy_zlib(body, expected)
            return codecs.validate_array(array, expected)
        except DownloadError:
            self.client._count(error=True)
            raise
