"""A local cutout service: serves a numpy volume over the openconnecto.me-style HDF5 cutout API.

Used for the demo, the tests and the benchmarks, so besides serving it counts and logs requests, can
hold them at a gate, and injects faults on demand (error statuses, HTML pages, truncated bodies, stalls,
wrong shapes and dtypes). Only ever binds to the address it is given (``127.0.0.1`` by default).

URL layout (one path segment per axis, in ``url_axes`` order, by default the reverse of ``axes`` like
openconnecto.me's ``x,y,z`` for ``zyx`` volumes)::

    http://127.0.0.1:PORT/emca/sample/hdf5/0/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/

Coordinates in URLs are server coordinates: volume index + ``origin_offset``.

The same volume is also served

* as zlib-compressed ``.npy`` (format ``npz``) at ``.../npz/0/...`` (same layout as ``hdf5``);
* over the BossDB cutout API (format ``boss``, :class:`BossSettings`)::

    GET /v1/cutout/<collection>/<experiment>/<channel>/<resolution>/<x0>:<x1>/<y0>:<y1>/<z0>:<z1>/[<t0>:<t1>/]

  with ``Accept: application/blosc`` or ``application/npygz``, the ``Authorization: Token <token>`` check
  (401 without, 403 with a wrong token), HTTP 413 above ``max_cutout_bytes``, and the metadata endpoints
  ``/v1/collection/<c>/experiment/<e>/``, ``.../channel/<ch>/`` and ``/v1/coord/<frame>/``;
* as a neuroglancer precomputed volume (format ``precomputed``, :class:`PrecomputedSettings`) under
  ``/precomputed/sample/``: ``info`` and ``<key>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>`` chunks, raw (gzip-encoded
  when the client accepts it) or jpeg.

Resolution levels (Boss ``resolution``, precomputed scales) halve y and x per level by striding.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import h5py
import numpy as np

__all__ = [
    "CutoutServer",
    "BossSettings",
    "PrecomputedSettings",
    "Faults",
    "FaultRule",
    "RequestRecord",
    "sample_volume",
    "run_server",
]

logger = logging.getLogger(__name__)

_KINDS = ("status", "html", "truncate", "stall", "wrong_shape", "wrong_dtype")


# ---------------------------------------------------------------------------------------------------
# Fault injection
# ---------------------------------------------------------------------------------------------------


@dataclass
class FaultRule:
    """One injected fault.

    ``count`` is how many more requests it applies to (``None`` or ``True``: all, permanently); ``match``
    restricts it to request paths containing that substring.
    """

    kind: str
    count: int | None = 1
    match: str | None = None
    status: int = 500
    retry_after: float | str | None = None
    seconds: float | None = None
    released: threading.Event = field(default_factory=threading.Event, repr=False)

    def applies_to(self, path: str) -> bool:
        return (self.count is None or self.count > 0) and (self.match is None or self.match in path)


class Faults:
    """Thread-safe, runtime-adjustable fault injection for a :class:`CutoutServer`.

    Each request takes the first rule (in the order added) that applies to its path and still has
    a count left. Rules with ``count=None`` never run out.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(self, kind: str, *, count: int | None = 1, match: str | None = None, **params: Any) -> FaultRule:
        """Add a rule of ``kind`` (one of ``status, html, truncate, stall, wrong_shape, wrong_dtype``)."""
        if kind not in _KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {_KINDS}")
        if count is True:
            count = None  # html(True) and the like: on until cleared
        if count is not None and (isinstance(count, bool) or count < 1):
            raise ValueError(f"count must be >= 1 or None (permanent), got {count!r}")
        rule = FaultRule(kind, count=count, match=match, **params)
        with self._lock:
            self._rules.append(rule)
        return rule

    def fail_next(
        self, n: int = 1, status: int = 500, *, retry_after: float | None = None, match: str | None = None
    ) -> FaultRule:
        """Answer the next ``n`` (matching) requests with ``status`` (and ``Retry-After`` if given)."""
        return self.add("status", count=n, match=match, status=status, retry_after=retry_after)

    def fail_matching(self, match: str, status: int = 500, *, retry_after: float | None = None) -> FaultRule:
        """Answer every request whose path contains ``match`` with ``status``, permanently."""
        return self.add("status", count=None, match=match, status=status, retry_after=retry_after)

    def html(self, n: int | None = 1, *, match: str | None = None) -> FaultRule:
        """Answer with status 200 and an HTML page instead of HDF5."""
        return self.add("html", count=n, match=match)

    def truncate(self, n: int | None = 1, *, match: str | None = None) -> FaultRule:
        """Announce the full Content-Length, send half of the body, close the connection."""
        return self.add("truncate", count=n, match=match)

    def stall(
        self, n: int | None = 1, *, seconds: float | None = None, match: str | None = None
    ) -> FaultRule:
        """Hold the response ``seconds`` (``None``: until :meth:`release` or the server closes)."""
        return self.add("stall", count=n, match=match, seconds=seconds)

    def wrong_shape(self, n: int | None = 1, *, match: str | None = None) -> FaultRule:
        """Serve a region one voxel longer on the last axis than requested."""
        return self.add("wrong_shape", count=n, match=match)

    def wrong_dtype(self, n: int | None = 1, *, match: str | None = None) -> FaultRule:
        """Serve the region in a dtype that does not cast safely to the volume's (float64 or complex)."""
        return self.add("wrong_dtype", count=n, match=match)

    def release(self) -> None:
        """Let every stalled response (now or of current stall rules) go on."""
        with self._lock:
            rules = list(self._rules)
        for rule in rules:
            rule.released.set()

    def clear(self) -> None:
        """Remove every rule and release stalled responses."""
        with self._lock:
            rules, self._rules = self._rules, []
        for rule in rules:
            rule.released.set()

    @property
    def rules(self) -> list[FaultRule]:
        """The rules still active."""
        with self._lock:
            return [r for r in self._rules if r.count is None or r.count > 0]

    def _take(self, path: str) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.applies_to(path):
                    if rule.count is not None:
                        rule.count -= 1
                    return rule
        return None


# ---------------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """A request the server answered: its path, status and the request headers."""

    path: str
    status: int
    headers: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


class _HttpError(Exception):
    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class _BadRequest(_HttpError):
    status = 400


class _NotFound(_HttpError):
    status = 404


@dataclass
class BossSettings:
    """How a :class:`CutoutServer` speaks the BossDB cutout API.

    ``token=None`` accepts any request; otherwise ``Authorization: Token <token>`` is required (401 when
    missing, 403 when wrong). Cutouts above ``max_cutout_bytes`` (uncompressed) get HTTP 413 like the
    real service's limit.
    """

    collection: str = "sample"
    experiment: str = "em"
    channel: str = "image"
    token: str | None = None
    max_cutout_bytes: int | None = None
    levels: int = 2

    @property
    def coord_frame(self) -> str:
        return f"{self.collection}_{self.experiment}_frame"


@dataclass
class PrecomputedSettings:
    """How a :class:`CutoutServer` serves a neuroglancer precomputed volume.

    ``chunk_xyz`` is the chunk size (x, y, z); ``encoding`` ``"raw"`` or ``"jpeg"``; ``gzip`` encodes raw
    chunks with ``Content-Encoding: gzip`` for clients that accept it; ``scales`` resolution levels.
    """

    prefix: str = "/precomputed/sample"
    chunk_xyz: tuple[int, int, int] = (16, 16, 8)
    encoding: str = "raw"
    gzip: bool = True
    scales: int = 2
    jpeg_quality: int = 95
    resolution_xyz: tuple[float, float, float] = (4.0, 4.0, 40.0)


@dataclass
class _Reply:
    """A successful answer: an array to encode (faults may alter it first) or a finished body."""

    content_type: str
    data: np.ndarray | None = None
    encode: Callable[[np.ndarray], bytes] | None = None
    body: bytes = b""
    extra: dict[str, str] = field(default_factory=dict)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops connections when many clients start at once
    block_on_close = False  # idle keep-alive connections must not block close()
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: CutoutServer) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("cutout server: error while handling a request from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60  # idle keep-alive connections are dropped after this
    rbfs_headers: dict[str, str] = {}
    rbfs_departed = False
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("cutout server: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.owner._handle(self)


class CutoutServer:
    """Serve a volume over the openconnecto.me-style HDF5 cutout API, on ``127.0.0.1`` by default.

    Parameters
    ----------
    volume:
        A numpy array (or array-like with ``shape``/``dtype``/slicing, e.g. an ``h5py.Dataset``), a path
        to an ``.npy`` file, or ``"file.h5/dataset"``.
    axes:
        Axis names of ``volume`` (distinct characters of ``txyzc``).
    host, port:
        Where to listen; port 0 picks a free port.
    dataset_name:
        Name of the dataset inside every HDF5 response.
    origin_offset:
        Server coordinates of the volume's first voxel (like bock11's z offset of 2917).
    latency:
        Seconds added to every response.
    prefix:
        URL path before ``/hdf5/0/``.
    url_axes:
        Order of the per-axis path segments; default ``axes`` reversed.
    compression:
        h5py compression of the response datasets (``None``: uncompressed, fastest).
    boss:
        :class:`BossSettings` of the Boss cutout API (names, token check, size limit).
    precomputed:
        :class:`PrecomputedSettings` of the precomputed volume (chunk size, encoding, gzip, scales).

    Examples
    --------
    >>> with CutoutServer(sample_volume((16, 64, 64))) as server:          # doctest: +SKIP
    ...     server.write_description("vol.json", block_shape=(8, 32, 32), cache_dir="blocks")
    """

    def __init__(
        self,
        volume: Any,
        *,
        axes: str = "zyx",
        host: str = "127.0.0.1",
        port: int = 0,
        dataset_name: str = "cube",
        origin_offset: Sequence[int] | None = None,
        latency: float = 0.0,
        prefix: str = "/emca/sample",
        url_axes: str | None = None,
        compression: str | None = None,
        boss: BossSettings | None = None,
        precomputed: PrecomputedSettings | None = None,
    ) -> None:
        self._h5file: h5py.File | None = None
        self.volume = self._load(volume)
        ndim = len(self.volume.shape)
        if len(axes) != ndim or len(set(axes)) != ndim or not set(axes) <= set("txyzc"):
            raise ValueError(f"axes must be {ndim} distinct characters of 'txyzc', got {axes!r}")
        self.axes = axes
        self.url_axes = url_axes if url_axes is not None else axes[::-1]
        if sorted(self.url_axes) != sorted(axes):
            raise ValueError(f"url_axes {self.url_axes!r} must be a permutation of axes {axes!r}")
        self.shape = tuple(int(s) for s in self.volume.shape)
        self.dtype = np.dtype(self.volume.dtype)
        self.origin_offset = tuple(
            int(o) for o in (origin_offset if origin_offset is not None else [0] * ndim)
        )
        if len(self.origin_offset) != ndim or min(self.origin_offset) < 0:
            raise ValueError(f"origin_offset must be {ndim} integers >= 0, got {origin_offset!r}")
        self.dataset_name = "/" + dataset_name.strip("/")
        self.latency = float(latency)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.compression = compression
        self.boss = boss if boss is not None else BossSettings()
        self.precomputed = precomputed if precomputed is not None else PrecomputedSettings()
        self.faults = Faults()
        self._cond = threading.Condition()
        self._paused = False
        self._closing = threading.Event()
        self._requests = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._bytes_sent = 0
        self._log: list[RequestRecord] = []
        self._thread: threading.Thread | None = None
        self._httpd = _HTTPServer((host, port), self)
        self.host = host

    # -- volume ---------------------------------------------------------------------------------------

    def _load(self, volume: Any) -> Any:
        if isinstance(volume, (str, os.PathLike)):
            path = os.fspath(volume)
            if path.endswith(".npy"):
                return np.load(path, mmap_mode="r")
            parts = path.split("/")
            for i, part in enumerate(parts):
                if part.lower().endswith((".h5", ".hdf5", ".hdf")) and i + 1 < len(parts):
                    self._h5file = h5py.File("/".join(parts[: i + 1]), "r")
                    return self._h5file["/".join(parts[i + 1 :])]
            raise ValueError(f"volume path {path!r} must be an .npy file or 'file.h5/dataset'")
        if not hasattr(volume, "shape") or not hasattr(volume, "dtype"):
            volume = np.asarray(volume)
        return volume

    # -- addresses ------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    @property
    def url_format(self) -> str:
        """A ``url_format`` for a remote description of this volume."""
        segments = "/".join(f"{{{a}_start}},{{{a}_stop}}" for a in self.url_axes)
        return f"{self.url}{self.prefix}/hdf5/0/{segments}/"

    def url_format_for(self, fmt: str = "hdf5") -> str:
        """A ``url_format`` for the ``hdf5`` or ``npz`` (zlib-compressed ``.npy``) cutouts of this volume."""
        if fmt not in ("hdf5", "npz", "npygz"):
            raise ValueError(f"url_format_for: expected 'hdf5', 'npz' or 'npygz', got {fmt!r}")
        segments = "/".join(f"{{{a}_start}},{{{a}_stop}}" for a in self.url_axes)
        kind = "hdf5" if fmt == "hdf5" else "npz"
        return f"{self.url}{self.prefix}/{kind}/0/{segments}/"

    @property
    def precomputed_url(self) -> str:
        """The folder holding the precomputed ``info`` file."""
        return f"{self.url}{self.precomputed.prefix}"

    @property
    def bounds(self) -> tuple[int, ...]:
        """``shape + origin_offset``: the remote description's ``bounds``."""
        return tuple(s + o for s, o in zip(self.shape, self.origin_offset))

    def cutout_url(self, start: Sequence[int], stop: Sequence[int]) -> str:
        """The URL of a region given in volume coordinates (``origin_offset`` is added)."""
        values = {}
        for a, lo, hi, o in zip(self.axes, start, stop, self.origin_offset):
            values[f"{a}_start"], values[f"{a}_stop"] = int(lo) + o, int(hi) + o
        return self.url_format.format(**values)

    # -- lifetime -------------------------------------------------------------------------------------

    def start(self) -> CutoutServer:
        """Start serving in a daemon thread (idempotent). Returns ``self``."""
        if self._closing.is_set():
            raise RuntimeError("this CutoutServer is closed; create a new one")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.02},  # how fast close() is noticed
                name=f"cutout-server-{self.port}",
                daemon=True,
            )
            self._thread.start()
            logger.debug("cutout server listening on %s", self.url)
        return self

    def close(self) -> None:
        """Stop serving, release stalled and paused requests, drop connections. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        with self._cond:
            self._paused = False
            self._cond.notify_all()
        self.faults.release()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.drop_connections()
        self._httpd.server_close()
        if self._h5file is not None:
            self._h5file.close()

    def __enter__(self) -> CutoutServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<CutoutServer {self.url_format} shape={self.shape} dtype={self.dtype.name} axes={self.axes!r} "
            f"origin_offset={self.origin_offset}>"
        )

    # -- gate and accounting --------------------------------------------------------------------------

    def pause(self) -> None:
        """Hold every request that arrives from now on (before it is answered) until :meth:`resume`."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        """Let held and future requests through."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def requests(self) -> int:
        """Requests that arrived (answered or not yet)."""
        with self._cond:
            return self._requests

    @property
    def in_flight(self) -> int:
        """Requests arrived and not yet answered."""
        with self._cond:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Highest number of requests in flight at the same time since the last :meth:`reset_stats`."""
        with self._cond:
            return self._max_in_flight

    @property
    def bytes_sent(self) -> int:
        """Body bytes sent."""
        with self._cond:
            return self._bytes_sent

    @property
    def request_log(self) -> list[RequestRecord]:
        """Answered requests (``path``, ``status``, ``headers``), in the order they were answered.

        A request is logged (and leaves ``in_flight``) just before its response is sent, so a client that
        got a response always finds it here.
        """
        with self._cond:
            return list(self._log)

    def request_log_paths(self) -> list[str]:
        """The paths of :attr:`request_log`, in order of completion."""
        with self._cond:
            return [record.path for record in self._log]

    def reset_stats(self) -> None:
        """Zero the counters and the log (requests in flight stay counted in ``in_flight``)."""
        with self._cond:
            self._requests = 0
            self._bytes_sent = 0
            self._max_in_flight = self._in_flight
            self._log.clear()

    def wait_for_requests(self, n: int, timeout: float | None = None) -> bool:
        """Block until at least ``n`` requests have arrived; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._requests >= n, timeout)

    def wait_for_in_flight(self, n: int, timeout: float | None = None) -> bool:
        """Block until at least ``n`` requests are in flight at once; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight >= n, timeout)

    def _arrive(self) -> None:
        with self._cond:
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._cond.notify_all()
            while self._paused and not self._closing.is_set():
                self._cond.wait()

    def _depart(self, record: RequestRecord, nbytes: int) -> None:
        with self._cond:
            self._in_flight -= 1
            self._bytes_sent += nbytes
            self._log.append(record)
            self._cond.notify_all()

    # -- request handling -----------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        path = handler.path
        handler.rbfs_headers = {k: v for k, v in handler.headers.items()}
        handler.rbfs_departed = False
        self._arrive()
        try:
            if self.latency > 0:
                self._closing.wait(self.latency)
            self._respond(handler, urlsplit(path).path)
        except (TimeoutError, BrokenPipeError, ConnectionResetError) as exc:
            logger.debug("cutout server: client went away during %s: %s", path, exc)
            handler.close_connection = True
        finally:
            if not handler.rbfs_departed:  # failed before answering
                self._depart(RequestRecord(path, 500, handler.rbfs_headers), 0)

    def _respond(self, handler: _Handler, path: str) -> None:
        rule = self.faults._take(path)
        if rule is not None and rule.kind == "stall":
            rule.released.wait(rule.seconds)
            rule = None
        if rule is not None and rule.kind == "status":
            extra = {} if rule.retry_after is None else {"Retry-After": _retry_after(rule.retry_after)}
            self._send(handler, rule.status, b"injected failure\n", "text/plain", extra)
            return
        if rule is not None and rule.kind == "html":
            page = b"<!DOCTYPE html><html><body><h1>Service temporarily unavailable</h1></body></html>\n"
            self._send(handler, 200, page, "text/html; charset=utf-8")
            return
        try:
            reply = self._route(handler, path)
        except _HttpError as exc:
            self._send(handler, exc.status, f"{exc}\n".encode(), "text/plain")
            return
        body = reply.body
        if reply.data is not None and reply.encode is not None:
            data = reply.data
            if rule is not None and rule.kind == "wrong_shape":
                data = np.concatenate([data, data[..., :1]], axis=-1)
            if rule is not None and rule.kind == "wrong_dtype":
                data = data.astype(np.complex128 if data.dtype.kind in "fc" else np.float64)
            body = reply.encode(data)
        extra = dict(reply.extra)
        if extra.pop("X-Gzip", None) and "gzip" in handler.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            extra["Content-Encoding"] = "gzip"
        truncate = rule is not None and rule.kind == "truncate"
        self._send(handler, 200, body, reply.content_type, extra, truncate=truncate)

    def _route(self, handler: _Handler, path: str) -> _Reply:
        if path.startswith("/v1/"):
            return self._boss(handler, path)
        pre = self.precomputed.prefix.rstrip("/") + "/"
        if path.startswith(pre):
            return self._precomputed(path[len(pre) :])
        if path.startswith(f"{self.prefix}/npz/0/"):
            return _Reply("application/octet-stream", np.asarray(self.volume[self._region(path)]), _npy_zlib)
        return _Reply("application/x-hdf5", np.asarray(self.volume[self._region(path)]), self._encode)

    # -- resolution levels (Boss resolutions, precomputed scales): y and x strided by 2**level ---------

    def _level(self, level: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shape and origin (server coordinates) of the volume at ``level``, in ``axes`` order."""
        step = 2**level
        shape = tuple(-(-n // step) if a in "yx" else n for a, n in zip(self.axes, self.shape))
        origin = tuple(o // step if a in "yx" else o for a, o in zip(self.axes, self.origin_offset))
        return shape, origin

    def _read_level(self, level: int, region: Sequence[slice]) -> np.ndarray:
        """``region`` (level coordinates relative to its origin) of the volume at ``level``, strided reads."""
        step = 2**level
        index = tuple(
            slice(r.start * step, min(r.stop * step, n), step) if a in "yx" and step > 1 else r
            for a, r, n in zip(self.axes, region, self.shape)
        )
        return np.asarray(self.volume[index])

    # -- Boss -----------------------------------------------------------------------------------------

    def _boss_auth(self, handler: _Handler) -> None:
        token = self.boss.token
        if token is None:
            return
        sent = handler.headers.get("Authorization")
        if sent is None:
            raise _HttpError(
                '{"status": 401, "message": "Authentication credentials were not provided."}', 401
            )
        if sent != f"Token {token}":
            raise _HttpError('{"status": 403, "message": "Invalid token."}', 403)

    def _boss(self, handler: _Handler, path: str) -> _Reply:
        self._boss_auth(handler)
        parts = [p for p in path.split("/") if p]
        b = self.boss
        if parts[:2] == ["v1", "coord"] and len(parts) == 3:
            if parts[2] != b.coord_frame:
                raise _NotFound(f"coordinate frame {parts[2]!r} not found")
            return _json_reply(self._boss_coord_frame())
        if parts[:2] == ["v1", "collection"] and len(parts) in (5, 7) and parts[3] == "experiment":
            if parts[2] != b.collection or parts[4] != b.experiment:
                raise _NotFound(f"collection/experiment {parts[2]}/{parts[4]} not found")
            if len(parts) == 5:
                return _json_reply(self._boss_experiment())
            if parts[5] != "channel" or parts[6] != b.channel:
                raise _NotFound(f"channel {'/'.join(parts[5:])} not found")
            return _json_reply(self._boss_channel())
        if parts[:2] != ["v1", "cutout"] or len(parts) not in (9, 10):
            raise _NotFound(f"unknown Boss path {path!r}")
        if self.axes not in ("zyx", "tzyx"):
            raise _NotFound(f"this volume's axes {self.axes!r} are not served over the Boss API (zyx, tzyx)")
        if parts[2:5] != [b.collection, b.experiment, b.channel]:
            raise _NotFound(f"channel {'/'.join(parts[2:5])} not found")
        try:
            level = int(parts[5])
        except ValueError:
            raise _BadRequest(f"resolution {parts[5]!r} is not an integer") from None
        if not 0 <= level < max(1, b.levels):
            raise _BadRequest(f"resolution {level} not available (0..{max(1, b.levels) - 1})")
        shape, origin = self._level(level)
        ranges: dict[str, tuple[int, int]] = {}
        for axis, text in zip("xyzt", parts[6:]):
            match = re.fullmatch(r"(\d+):(\d+)", text)
            if match is None:
                raise _BadRequest(f"malformed range {text!r} for axis {axis}: expected 'start:stop'")
            ranges[axis] = (int(match.group(1)), int(match.group(2)))
        squeeze_t = "t" in self.axes and "t" not in ranges
        if "t" in ranges and "t" not in self.axes:
            raise _BadRequest("this channel has no time axis")
        if squeeze_t:
            ranges["t"] = (0, 1)
        region = []
        for axis, size, o in zip(self.axes, shape, origin):
            lo, hi = ranges[axis]
            if not o <= lo < hi <= o + size:
                raise _BadRequest(f"axis {axis}: {lo}:{hi} is outside [{o}, {o + size}) or empty/reversed")
            region.append(slice(lo - o, hi - o))
        itemsize = self.dtype.itemsize
        nbytes = math.prod(s.stop - s.start for s in region) * itemsize
        if b.max_cutout_bytes is not None and nbytes > b.max_cutout_bytes:
            raise _HttpError(
                f"Cutout request is over {b.max_cutout_bytes} bytes when uncompressed ({nbytes}). "
                f"Reduce cutout dimensions.",
                413,
            )
        data = self._read_level(level, region)
        if squeeze_t:
            data = data[0]
        accept = handler.headers.get("Accept", "")
        if accept == "application/blosc" and _blosc_module() is not None:
            return _Reply("application/blosc", data, _blosc)
        if accept == "application/npygz":
            return _Reply("application/npygz", data, _npy_zlib)
        raise _HttpError(
            f"unsupported Accept {accept!r}: this server sends application/blosc or application/npygz "
            f"(never pickles)",
            406,
        )

    def _boss_coord_frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"name": self.boss.coord_frame, "description": "", "voxel_unit": "nanometers"}
        for axis, size, o, voxel in zip(
            "xyz", self._xyz(self.shape), self._xyz(self.origin_offset), (4, 4, 40)
        ):
            frame[f"{axis}_start"], frame[f"{axis}_stop"] = o, o + size
            frame[f"{axis}_voxel_size"] = voxel
        return frame

    def _boss_experiment(self) -> dict[str, Any]:
        t = self.shape[self.axes.index("t")] if "t" in self.axes else 1
        return {
            "name": self.boss.experiment,
            "collection": self.boss.collection,
            "coord_frame": self.boss.coord_frame,
            "num_hierarchy_levels": max(1, self.boss.levels),
            "hierarchy_method": "anisotropic",
            "num_time_samples": t,
        }

    def _boss_channel(self) -> dict[str, Any]:
        return {
            "name": self.boss.channel,
            "experiment": self.boss.experiment,
            "type": "image",
            "datatype": self.dtype.name,
            "base_resolution": 0,
            "default_time_sample": 0,
            "downsample_status": "DOWNSAMPLED",
        }

    def _xyz(self, values: Sequence[int]) -> tuple[int, int, int]:
        by_axis = dict(zip(self.axes, values))
        return (int(by_axis.get("x", 1)), int(by_axis.get("y", 1)), int(by_axis.get("z", 1)))

    # -- precomputed ----------------------------------------------------------------------------------

    def precomputed_info(self) -> dict[str, Any]:
        """The ``info`` JSON of the precomputed volume."""
        pc = self.precomputed
        channels = self.shape[0] if self.axes == "czyx" else 1
        scales = []
        for level in range(max(1, pc.scales)):
            shape, origin = self._level(level)
            f = 2**level
            scales.append(
                {
                    "key": f"{f}_{f}_1",
                    "size": list(self._xyz(shape)),
                    "voxel_offset": list(self._xyz(origin)),
                    "chunk_sizes": [list(pc.chunk_xyz)],
                    "encoding": pc.encoding,
                    "resolution": [pc.resolution_xyz[0] * f, pc.resolution_xyz[1] * f, pc.resolution_xyz[2]],
                }
            )
        return {
            "@type": "neuroglancer_multiscale_volume",
            "type": "image",
            "data_type": self.dtype.name,
            "num_channels": channels,
            "scales": scales,
        }

    def _precomputed(self, rest: str) -> _Reply:
        if self.axes not in ("zyx", "czyx"):
            raise _NotFound(f"this volume's axes {self.axes!r} are not served as precomputed (zyx, czyx)")
        info = self.precomputed_info()
        if rest == "info":
            return _json_reply(info)
        key, _, name = rest.rpartition("/")
        levels = {s["key"]: level for level, s in enumerate(info["scales"])}
        if key not in levels:
            raise _NotFound(f"no scale {key!r}")
        match = re.fullmatch(r"(\d+)-(\d+)_(\d+)-(\d+)_(\d+)-(\d+)", name)
        if match is None:
            raise _NotFound(f"no chunk {name!r}")
        x0, x1, y0, y1, z0, z1 = (int(g) for g in match.groups())
        scale = info["scales"][levels[key]]
        region: dict[str, slice] = {}
        for axis, lo, hi, size, off, chunk in zip(
            "xyz",
            (x0, y0, z0),
            (x1, y1, z1),
            scale["size"],
            scale["voxel_offset"],
            self.precomputed.chunk_xyz,
        ):
            # Only the chunks of the grid exist, like files in a bucket.
            if (lo - off) % chunk or lo < off or hi != min(lo + chunk, off + size) or lo >= off + size:
                raise _NotFound(f"no chunk {name!r} in scale {key!r}")
            region[axis] = slice(lo - off, hi - off)
        index = tuple(region.get(a, slice(0, n)) for a, n in zip(self.axes, self.shape))
        data = self._read_level(levels[key], index)
        if self.axes == "zyx":
            data = data[np.newaxis]
        if self.precomputed.encoding == "jpeg":
            quality = self.precomputed.jpeg_quality
            return _Reply("image/jpeg", data, lambda d: _jpeg(d, quality))
        extra = {"X-Gzip": "1"} if self.precomputed.gzip else {}
        return _Reply("application/octet-stream", data, _raw_chunk, extra=extra)

    def _region(self, path: str) -> tuple[slice, ...]:
        head = f"{self.prefix}/hdf5/0/"
        if path.startswith(f"{self.prefix}/npz/0/"):
            head = f"{self.prefix}/npz/0/"
        if not path.startswith(head):
            raise _NotFound(f"unknown path {path!r}; cutouts are at {head}<one 'start,stop' per axis>/")
        segments = path[len(head) :].strip("/").split("/")
        if len(segments) != len(self.url_axes):
            raise _BadRequest(
                f"expected {len(self.url_axes)} 'start,stop' segments for axes {self.url_axes!r}, "
                f"got {len(segments)}"
            )
        slices: dict[str, slice] = {}
        for axis, segment in zip(self.url_axes, segments):
            try:
                lo_text, hi_text = segment.split(",")
                lo, hi = int(lo_text), int(hi_text)
            except ValueError:
                raise _BadRequest(
                    f"malformed segment {segment!r} for axis {axis}: expected 'start,stop'"
                ) from None
            i = self.axes.index(axis)
            origin, size = self.origin_offset[i], self.shape[i]
            if not origin <= lo < hi <= origin + size:
                raise _BadRequest(
                    f"axis {axis}: {lo},{hi} is outside [{origin}, {origin + size}) or empty/reversed"
                )
            slices[axis] = slice(lo - origin, hi - origin)
        return tuple(slices[a] for a in self.axes)

    def _encode(self, data: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as f:
            f.create_dataset(self.dataset_name, data=data, compression=self.compression)
        return buffer.getvalue()

    def _send(
        self,
        handler: _Handler,
        status: int,
        body: bytes,
        content_type: str,
        extra: dict[str, str] | None = None,
        *,
        truncate: bool = False,
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            handler.send_header(key, value)
        if truncate:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        payload = body[: len(body) // 2] if truncate else body
        # Account before the first byte leaves: a client that saw the response finds it counted and logged.
        self._depart(RequestRecord(handler.path, status, handler.rbfs_headers), len(payload))
        handler.rbfs_departed = True
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()

    # -- descriptions ---------------------------------------------------------------------------------

    def remote_description_dict(
        self, name: str | None = None, *, format: str = "hdf5", level: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """The JSON dict of a ``"RESTful-volume-description"`` of this volume.

        ``format`` is ``"hdf5"``, ``"npz"``/``"npygz"`` (zlib-compressed ``.npy`` cutouts), ``"boss"`` or
        ``"precomputed"``; ``level`` the Boss resolution / precomputed scale index; ``fields`` are added
        (e.g. ``token_env``, ``fill_missing``, ``max_cutout_bytes``).
        """
        shape, origin = self._level(level)
        desc: dict[str, Any] = {
            "_schema_name": "RESTful-volume-description",
            "_schema_version": 1.0,
            "name": name or "cutout-server",
            "format": format,
            "axes": self.axes,
            "origin_offset": list(origin),
            "bounds": [s + o for s, o in zip(shape, origin)],
            "dtype": self.dtype.name,
        }
        if format == "hdf5":
            desc["url_format"] = self.url_format
            desc["hdf5_dataset"] = self.dataset_name.lstrip("/")
        elif format in ("npz", "npygz"):
            desc["url_format"] = self.url_format_for(format)
        elif format == "boss":
            desc.update(
                boss_url=self.url,
                collection=self.boss.collection,
                experiment=self.boss.experiment,
                channel=self.boss.channel,
                resolution=level,
            )
        elif format == "precomputed":
            desc.update(precomputed_url=self.precomputed_url, scale=level)
        else:
            raise ValueError(f"unknown format {format!r}")
        desc.update(fields)
        return desc

    def write_remote_description(
        self, path: str | os.PathLike, *, name: str | None = None, format: str = "hdf5", **fields: Any
    ) -> str:
        """Write a remote (``"RESTful-volume-description"``) JSON file; returns its path."""
        return _write_json(path, self.remote_description_dict(name, format=format, **fields))

    def write_description(
        self,
        path: str | os.PathLike,
        *,
        block_shape: Sequence[int],
        cache_dir: str | os.PathLike | None = None,
        view_origin: Sequence[int] | None = None,
        view_shape: Sequence[int] | None = None,
        name: str | None = None,
        local_shape: Sequence[int] | None = None,
        compression: str | None = None,
        format: str = "hdf5",
        level: int = 0,
        **remote_fields: Any,
    ) -> str:
        """Write a composite ``"RESTful-blockwise-fileset-description"`` for this volume; returns the path.

        ``cache_dir`` becomes the local ``dataset_root_dir`` (relative paths are relative to the
        description's directory; ``None``: ``<description stem>-blocks`` beside it, as ``rbfs describe``
        names it, so two descriptions in one folder never share a cache). ``format``, ``level`` and
        ``remote_fields`` go to :meth:`remote_description_dict`.
        """
        remote = self.remote_description_dict(name, format=format, level=level, **remote_fields)
        local: dict[str, Any] = {
            "_schema_name": "blockwise-fileset-description",
            "_schema_version": 1.1,
            "name": (name or "cutout-server") + "-blocks",
            "format": "hdf5",
            "axes": self.axes,
            "shape": [
                int(s)
                for s in (
                    local_shape
                    if local_shape is not None
                    else [b - o for b, o in zip(remote["bounds"], remote["origin_offset"])]
                )
            ],
            "dtype": self.dtype.name,
            "block_shape": [int(b) for b in block_shape],
            "block_file_name_format": f"block-{{roiString}}.h5/{self.dataset_name.lstrip('/')}",
        }
        if cache_dir is None:
            cache_dir = f"{os.path.splitext(os.path.basename(os.fspath(path)))[0] or 'volume'}-blocks"
        local["dataset_root_dir"] = os.fspath(cache_dir)
        if view_origin is not None:
            local["view_origin"] = [int(v) for v in view_origin]
        if view_shape is not None:
            local["view_shape"] = [int(v) for v in view_shape]
        if compression is not None:
            local["compression"] = compression
        composite = {
            "_schema_name": "RESTful-blockwise-fileset-description",
            "_schema_version": 1.0,
            "remote_description": remote,
            "local_description": local,
        }
        return _write_json(path, composite)


def _json_reply(obj: Any) -> _Reply:
    return _Reply("application/json", body=json.dumps(obj).encode("utf-8"))


def _npy_zlib(data: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(data), allow_pickle=False)
    return zlib.compress(buffer.getvalue(), 1)


def _blosc_module() -> Any:
    """python-blosc (the Boss's own, blosc1 bodies), else blosc2, else ``None``."""
    for name in ("blosc", "blosc2"):
        try:
            return __import__(name)
        except ImportError:
            continue
    return None


def _blosc(data: np.ndarray) -> bytes:
    # Like the Boss: raw C-order bytes, blosc-compressed (typesize is the bit depth, as the Boss passes it).
    module = _blosc_module()
    raw = np.ascontiguousarray(data).tobytes()
    if module.__name__ == "blosc":
        return module.compress(raw, typesize=min(255, data.dtype.itemsize * 8))
    return module.compress(raw, typesize=data.dtype.itemsize)


def _raw_chunk(data: np.ndarray) -> bytes:
    # (c, z, y, x) in C order is x, y, z, c in Fortran order; little-endian.
    return np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()


def _jpeg(data: np.ndarray, quality: int) -> bytes:
    from PIL import Image  # type: ignore[import-not-found]

    c, z, y, x = data.shape
    pixels = np.ascontiguousarray(data.astype(np.uint8).transpose(1, 2, 3, 0).reshape(z * y, x, c))
    image = Image.fromarray(pixels[..., 0] if c == 1 else pixels, mode=None)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _retry_after(seconds: float | str) -> str:
    # HTTP says delay-seconds is a whole number; decimals and free text are sent as given, to test clients.
    if isinstance(seconds, str):
        return seconds
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def _write_json(path: str | os.PathLike, obj: dict[str, Any]) -> str:
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


# ---------------------------------------------------------------------------------------------------
# Sample data and the blocking entry point
# ---------------------------------------------------------------------------------------------------


def sample_volume(shape: Sequence[int] = (64, 256, 256), dtype: Any = np.uint8, seed: int = 0) -> np.ndarray:
    """A deterministic synthetic EM-like volume: smooth blobs, membrane-like dark sheets and texture.

    Every voxel also carries a hash of its position, so a block placed at the wrong position (or
    transposed) is detected by any comparison with the original.

    Parameters
    ----------
    shape:
        Any number of axes (1 to 5 make sense).
    dtype:
        Integer types use up to 16 bits of their range; floats lie in ``[0, 1]``; bool is a threshold.
    seed:
        Same seed, same volume.
    """
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    grids = [
        np.arange(n, dtype=np.float32).reshape([n if i == k else 1 for k in range(ndim)])
        for i, n in enumerate(shape)
    ]
    value = np.zeros(shape, dtype=np.float32)
    for _ in range(4):  # smooth blobs: separable products of cosines, in [-4, 4] summed
        wave = np.float32(1.0)
        for g in grids:
            wave = wave * np.cos(
                g * np.float32(rng.uniform(0.04, 0.2)) + np.float32(rng.uniform(0, 2 * math.pi))
            )
        value += wave
    value *= np.float32(0.55 / 8)
    value += np.float32(0.55 / 2)
    # membranes: thin dark sheets where a slanted phase crosses multiples of pi
    phase = np.zeros(shape, dtype=np.float32)
    for g in grids:
        phase += g * np.float32(rng.uniform(0.05, 0.15))
    np.sin(phase, out=phase)
    for _ in range(3):
        phase *= phase  # sin**8
    phase *= np.float32(-0.25)
    value += phase
    value += np.float32(0.25)
    # texture: a hash of the position, so every voxel depends on where it is
    index = np.zeros(shape, dtype=np.uint32)
    stride = 1
    for g, n in zip(reversed(grids), reversed(shape)):
        index += g.astype(np.uint32) * np.uint32(stride % (1 << 32))
        stride *= n
    index += np.uint32((seed * 0x9E3779B9) % (1 << 32))
    index *= np.uint32(2654435761)
    index >>= np.uint32(24)
    value += index.astype(np.float32) * np.float32(0.2 / 255)
    if dtype.kind == "b":
        return value > 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo = max(int(info.min), 0)
        hi = min(int(info.max), 65535)
        value *= np.float32(hi - lo)
        value += np.float32(lo)
        np.rint(value, out=value)
        return value.astype(dtype)
    return value.astype(dtype)


def run_server(
    volume: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready_callback: Callable[[CutoutServer], None] | None = None,
    stop_event: threading.Event | None = None,
    **options: Any,
) -> None:
    """Serve ``volume`` until ``stop_event`` is set or the process is interrupted (Ctrl-C).

    ``ready_callback(server)`` is called once the server listens (e.g. to print its ``url_format`` or
    write a description). ``options`` go to :class:`CutoutServer`.
    """
    stop = stop_event if stop_event is not None else threading.Event()
    with CutoutServer(volume, host=host, port=port, **options) as server:
        if ready_callback is not None:
            ready_callback(server)
        try:
            stop.wait()
        except KeyboardInterrupt:
            logger.info("cutout server on %s interrupted, shutting down", server.url)
