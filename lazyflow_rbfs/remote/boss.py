"""BossDB cutout API (remote format ``"boss"``): URLs, tokens, request splitting and decoding.

A cutout is ``GET <boss_url>/v1/cutout/<collection>/<experiment>/<channel>/<resolution>/<x0>:<x1>/<y0>:<y1>/
<z0>:<z1>/[<t0>:<t1>/]`` with the headers ``Authorization: Token <token>`` and ``Accept:
application/blosc`` (a blosc-compressed C-order (t)ZYX array) or ``application/npygz`` (a zlib-compressed
``.npy``). The service refuses cutouts above a size limit, so a larger roi is split into several requests
along its 512 x 512 x 16 (x, y, z) cuboid grid and assembled here. Rate limiting (HTTP 429 with
``Retry-After``) is retried with back-off by the HTTP layer.

Tokens are the user's, never the description's: they come from intern's configuration (the file
``~/.intern/intern.cfg``, or ``INTERN_PROTOCOL``, ``INTERN_HOST`` and ``INTERN_TOKEN`` together;
``INTERN_TOKEN`` alone is for ``https://api.bossdb.io``), and each is sent only to the origin (scheme, host,
port) it is configured for; any other host gets the public token ``"public"``. A token is a header only:
never logged, written, or shown in a repr (see :mod:`.http`).
"""

from __future__ import annotations

import configparser
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np

from lazyflow_rbfs.description import DEFAULT_BOSS_URL
from lazyflow_rbfs.errors import DescriptionError, DownloadError
from lazyflow_rbfs.remote import codecs
from lazyflow_rbfs.remote.http import HttpClient, origin

__all__ = [
    "BOSS_CUBOID_XYZ",
    "DEFAULT_MAX_CUTOUT_BYTES",
    "PUBLIC_TOKEN",
    "INTERN_CONFIG",
    "configured_credentials",
    "intern_config_path",
    "resolve_token",
    "token_source",
    "cutout_url",
    "split_cutout",
    "cuboid_advice",
    "BossReader",
    "request_headers",
]

logger = logging.getLogger(__name__)

#: The Boss stores data in cuboids of 512 x 512 x 16 voxels (x, y, z); aligned requests are cheapest.
BOSS_CUBOID_XYZ = (512, 512, 16)

#: Largest cutout (uncompressed bytes) requested at once unless the description's ``max_cutout_bytes``
#: says otherwise. The service refuses cutouts above 500 MB (HTTP 413); intern splits above 64 Mi voxels.
DEFAULT_MAX_CUTOUT_BYTES = 128 * 1024 * 1024

#: intern's configuration file, relative to the home directory.
INTERN_CONFIG = os.path.join(".intern", "intern.cfg")

#: The token of anonymous, read-only access to public BossDB data.
PUBLIC_TOKEN = "public"

_MAX_CONFIG = 64 * 1024
_INTERN_SECTIONS = ("Volume Service", "Project Service", "Metadata Service", "Default")

_ACCEPT = {"blosc": "application/blosc", "npygz": "application/npygz"}


# ---------------------------------------------------------------------------------------------------------
# Tokens: the user's intern configuration, each token for the one origin it is configured for


@dataclass(frozen=True)
class _Credential:
    origin: tuple[str, str, int]  # scheme, host, port
    token: str = field(repr=False)
    source: str  # for messages: where it is configured (never the token)


def intern_config_path(environ: Mapping[str, str] | None = None) -> str:
    """``~/.intern/intern.cfg`` of the user (``$HOME`` of ``environ``, else of this process)."""
    env = os.environ if environ is None else environ
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, INTERN_CONFIG)


def _configured_origin(protocol: str, host: str) -> tuple[str, str, int] | None:
    # intern builds "<protocol>://<host>/v1/...": host is a host name with an optional port, nothing else.
    host = host.strip()
    if not host or any(ch in host for ch in "/?#@\\") or any(ch.isspace() for ch in host):
        return None
    return origin(f"{protocol.strip().lower()}://{host}")


def _usable(token: str) -> bool:
    return bool(token) and not any(ch.isspace() or ord(ch) < 32 for ch in token)


def _from_config_file(path: str) -> list[_Credential]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(_MAX_CONFIG + 1)
        if len(text) > _MAX_CONFIG:
            raise ValueError(f"larger than {_MAX_CONFIG} bytes")
        parser.read_string(text, source=path)
    except (OSError, ValueError, configparser.Error) as exc:
        # The message of a parse error may quote a line of the file: only its type is shown.
        logger.warning("ignoring the intern configuration %s: cannot read it (%s)", path, type(exc).__name__)
        return []
    # intern reads "[Volume Service]" for cutouts and "[Project Service]"/"[Metadata Service]" for
    # metadata, each falling back to "[Default]": every complete section names a token and its host.
    names = [n for n in _INTERN_SECTIONS if parser.has_section(n)]
    names += [n for n in parser.sections() if n not in _INTERN_SECTIONS]
    found: list[_Credential] = []
    for name in names:
        section = parser[name]
        protocol, host = section.get("protocol", ""), section.get("host", "")
        token = section.get("token", "").strip()
        where = _configured_origin(protocol, host)
        if where is None or not _usable(token):
            if token:
                logger.warning(
                    "ignoring section [%s] of %s: expected protocol (http or https), host (a host name with "
                    "an optional port) and a token of one word, found protocol %r and host %r",
                    name,
                    path,
                    protocol,
                    host,
                )
            continue
        found.append(_Credential(where, token, f"{path} [{name}]"))
    return found


def configured_credentials(environ: Mapping[str, str] | None = None) -> list[_Credential]:
    """The Boss tokens of the user's intern configuration, each bound to one origin, in order of priority.

    ``~/.intern/intern.cfg`` first (intern's own choice when the file exists), then the variables
    ``INTERN_PROTOCOL``, ``INTERN_HOST`` and ``INTERN_TOKEN`` together, or ``INTERN_TOKEN`` alone for
    ``https://api.bossdb.io``. ``INTERN_TOKEN`` with only one of the other two is ignored (with a warning):
    which host it is for is not clear.
    """
    env = os.environ if environ is None else environ
    found: list[_Credential] = []
    path = intern_config_path(env)
    if os.path.isfile(path):
        found.extend(_from_config_file(path))
    token = env.get("INTERN_TOKEN", "").strip()
    protocol, host = env.get("INTERN_PROTOCOL", ""), env.get("INTERN_HOST", "")
    if token and protocol and host:
        where = _configured_origin(protocol, host)
        if where is not None and _usable(token):
            found.append(_Credential(where, token, "INTERN_PROTOCOL, INTERN_HOST and INTERN_TOKEN"))
        else:
            logger.warning(
                "ignoring INTERN_TOKEN: expected INTERN_PROTOCOL http or https and INTERN_HOST a host name "
                "with an optional port, found %r and %r",
                protocol,
                host,
            )
    elif token and not protocol and not host:
        if _usable(token):
            bossdb = origin(DEFAULT_BOSS_URL)
            if bossdb is not None:
                found.append(_Credential(bossdb, token, f"INTERN_TOKEN (for {DEFAULT_BOSS_URL})"))
    elif token:
        logger.warning(
            "ignoring INTERN_TOKEN: it is set with only one of INTERN_PROTOCOL and INTERN_HOST; set both "
            "(intern needs the three together), or neither for %s",
            DEFAULT_BOSS_URL,
        )
    return found


def _credential_for(boss_url: str, environ: Mapping[str, str] | None) -> _Credential | None:
    target = origin(str(boss_url).strip())
    if target is None:
        return None
    for credential in configured_credentials(environ):
        if credential.origin == target:
            return credential
    return None


def resolve_token(boss_url: str, environ: Mapping[str, str] | None = None) -> str:
    """The Boss token for requests to ``boss_url``: the one the user's intern configuration names for
    exactly that origin (scheme, host and port), else the public token ``"public"``."""
    credential = _credential_for(boss_url, environ)
    return PUBLIC_TOKEN if credential is None else credential.token


def token_source(boss_url: str, environ: Mapping[str, str] | None = None) -> str:
    """Where the token for ``boss_url`` comes from, for messages (never the token itself)."""
    credential = _credential_for(boss_url, environ)
    if credential is None:
        return f"the public token {PUBLIC_TOKEN!r} (no intern configuration names this host)"
    return credential.source


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
            where = tuple(slice(int(a), int(b)) for a, b in zip(lo - start, hi - start))
            out[where] = self._fetch_one(lo, hi)
        return out

    def _fetch_one(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        url = cutout_url(self.desc, start + self.origin, stop + self.origin)
        shape = tuple(int(n) for n in stop - start)
        expected = codecs.Expected(url=url, shape=shape, dtype=self.dtype)
        nbytes = int(np.prod(shape)) * self.dtype.itemsize
        body = self.client.get(url, max_bytes=codecs.max_body_bytes(self.encoding, nbytes))
        try:
            if self.encoding == "blosc":
                array = codecs.decode_blosc(body, expected)
            else:
                array = codecs.decode_npy_zlib(body, expected)
            return codecs.validate_array(array, expected)
        except DownloadError:
            self.client.record_error()
            raise
