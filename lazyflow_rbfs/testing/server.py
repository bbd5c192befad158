"""A local test service: serves a numpy volume over HTTP on ``127.0.0.1``, in the formats the client reads.

Used for the demo (``rbfs serve``, ``rbfs demo``), the tests and the benchmarks, so besides serving it
counts and logs requests, can hold them at a gate, and injects faults on demand
(:mod:`~lazyflow_rbfs.testing.faults`: error statuses, HTML pages, truncated bodies, stalls, wrong shapes
and dtypes). Only ever binds to the address it is given (``127.0.0.1`` by default).

What is served where is each format emulator's business:

* the seed's HDF5 cutout API and its ``npz`` twin (:mod:`~lazyflow_rbfs.testing.cutout`), at every path
  the others do not claim;
* the BossDB cutout API under ``/v1/`` (:mod:`~lazyflow_rbfs.testing.boss`, :class:`BossSettings`);
* a neuroglancer precomputed volume under ``/precomputed/sample/``
  (:mod:`~lazyflow_rbfs.testing.precomputed`, :class:`PrecomputedSettings`).

This module is the HTTP core: connections, the gate, accounting, faults applied to the emulators'
replies, and the addresses and descriptions (:mod:`~lazyflow_rbfs.testing.descriptions`) of the volume.
"""

from __future__ import annotations

import gzip
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from lazyflow_rbfs.description import normalize_h5_path
from lazyflow_rbfs.testing import descriptions
from lazyflow_rbfs.testing.boss import BossEmulator, BossSettings
from lazyflow_rbfs.testing.cutout import FORMATS as CUTOUT_FORMATS
from lazyflow_rbfs.testing.cutout import CutoutEmulator
from lazyflow_rbfs.testing.faults import Faults
from lazyflow_rbfs.testing.precomputed import PrecomputedEmulator, PrecomputedSettings
from lazyflow_rbfs.testing.replies import HttpError, NotFound, Reply
from lazyflow_rbfs.testing.static import apply_range, file_reply
from lazyflow_rbfs.testing.volumes import ServedVolume, load_volume

__all__ = ["CutoutServer", "RequestRecord", "run_server"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestRecord:
    """A request the server answered: its path, status and the request headers."""

    path: str
    status: int
    headers: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


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


def _counter(name: str, doc: str) -> property:
    """A read-only property of the server's counter ``name``, read under the server's condition."""

    def get(server: CutoutServer) -> int:
        with server._cond:
            return getattr(server, name)

    return property(get, doc=doc)


class CutoutServer:
    """Serve a volume over the openconnecto.me-style HDF5 cutout API, on ``127.0.0.1`` by default.

    The same volume is also served as ``npz``, over the Boss API and as a precomputed volume (see the
    module docstring).

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
        files: Mapping[str, str | os.PathLike] | None = None,
    ) -> None:
        self.volume, self._h5file = load_volume(volume)
        url_axes = url_axes if url_axes is not None else axes[::-1]
        if sorted(url_axes) != sorted(axes):
            raise ValueError(f"url_axes {url_axes!r} must be a permutation of axes {axes!r}")
        #: The volume as served: axes, shape, dtype, server coordinates and resolution levels.
        self.served = ServedVolume(self.volume, axes, origin_offset)
        self.latency = float(latency)
        self.boss = boss if boss is not None else BossSettings()
        self.precomputed = precomputed if precomputed is not None else PrecomputedSettings()
        # The volume and the cutout API as given (read-only: the emulators hold them).
        self.axes, self.shape, self.dtype = axes, self.served.shape, self.served.dtype
        self.origin_offset = self.served.origin_offset
        self.url_axes = url_axes
        self.dataset_name = normalize_h5_path(dataset_name)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.compression = compression
        self._cutout = CutoutEmulator(
            self.served,
            prefix=self.prefix,
            url_axes=url_axes,
            dataset_name=self.dataset_name,
            compression=compression,
        )
        self._boss = BossEmulator(self.boss, self.served)
        self._precomputed = PrecomputedEmulator(self.precomputed, self.served)
        self.faults = Faults()
        #: Honour ``Range`` headers of static files (``False``: answer 200 with the whole file, as a
        #: server without Range support does).
        self.range_requests = True
        self._files: dict[str, str] = {}
        for name, folder in (files or {}).items():
            self._files[name] = os.path.realpath(os.fspath(folder))
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

    def mount(self, name: str, folder: str | os.PathLike) -> str:
        """Serve the files of ``folder`` under ``/files/<name>/`` (Range requests honoured, see
        :attr:`range_requests`); returns :meth:`files_url`."""
        if not name or "/" in name:
            raise ValueError(f"a mount name is one path segment, got {name!r}")
        self._files[name] = os.path.realpath(os.fspath(folder))
        return self.files_url(name)

    def files_url(self, name: str, rel: str = "") -> str:
        """The URL of ``rel`` under the mounted folder ``name`` (the folder itself by default)."""
        return f"{self.url}/files/{name}" + (f"/{rel.strip('/')}" if rel.strip("/") else "")

    @property
    def bounds(self) -> tuple[int, ...]:
        """``shape + origin_offset``: the remote description's ``bounds``."""
        return self.served.bounds

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
        return self._cutout.url_format(self.url)

    def url_format_for(self, fmt: str = "hdf5") -> str:
        """A ``url_format`` for the ``hdf5`` or ``npz`` (zlib-compressed ``.npy``) cutouts of this volume."""
        return self._cutout.url_format(self.url, fmt)

    @property
    def precomputed_url(self) -> str:
        """The folder holding the precomputed ``info`` file."""
        return self._precomputed.url(self.url)

    def precomputed_info(self) -> dict[str, Any]:
        """The ``info`` JSON of the precomputed volume."""
        return self._precomputed.info()

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

    requests = _counter("_requests", "Requests that arrived (answered or not yet).")
    in_flight = _counter("_in_flight", "Requests arrived and not yet answered.")
    max_in_flight = _counter(
        "_max_in_flight", "Highest number of requests in flight at once since the last :meth:`reset_stats`."
    )
    bytes_sent = _counter("_bytes_sent", "Body bytes sent.")

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
        rule = self.faults.take(path)
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
        except HttpError as exc:
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
        wanted = handler.headers.get("Range")
        if reply.ranged and wanted and self.range_requests:
            try:
                body, extra["Content-Range"] = apply_range(body, wanted)
            except HttpError as exc:
                self._send(handler, exc.status, f"{exc}\n".encode(), "text/plain")
                return
            truncate = rule is not None and rule.kind == "truncate"
            self._send(handler, 206, body, reply.content_type, extra, truncate=truncate)
            return
        if extra.pop("X-Gzip", None) and "gzip" in handler.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            extra["Content-Encoding"] = "gzip"
        truncate = rule is not None and rule.kind == "truncate"
        self._send(handler, 200, body, reply.content_type, extra, truncate=truncate)

    def _route(self, handler: _Handler, path: str) -> Reply:
        if path.startswith("/files/"):
            name, _, rel = path[len("/files/") :].partition("/")
            if name not in self._files:
                raise NotFound(f"nothing is mounted at /files/{name}/")
            return file_reply(self._files[name], unquote(rel))
        if path.startswith("/v1/"):
            return self._boss.route(path, handler.headers)
        rest = self._precomputed.handles(path)
        if rest is not None:
            return self._precomputed.route(rest)
        return self._cutout.route(path)

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

    def format_fields(self, format: str, level: int = 0) -> dict[str, Any]:
        """The format's fields of a remote description of this volume (``url_format``, ``boss_url``, ...).

        Raises
        ------
        ValueError
            An unknown ``format``.
        """
        if format in CUTOUT_FORMATS:
            return self._cutout.description_fields(self.url, format)
        if format == "boss":
            return self._boss.description_fields(self.url, level)
        if format == "precomputed":
            return self._precomputed.description_fields(self.url, level)
        raise ValueError(f"unknown format {format!r}")

    def remote_description_dict(
        self, name: str | None = None, *, format: str = "hdf5", level: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """The JSON dict of a ``"RESTful-volume-description"`` of this volume.

        ``format`` is ``"hdf5"``, ``"npz"``/``"npygz"`` (zlib-compressed ``.npy`` cutouts), ``"boss"`` or
        ``"precomputed"``; ``level`` the Boss resolution / precomputed scale index; ``fields`` are added
        (e.g. ``fill_missing``, ``max_cutout_bytes``).
        """
        return descriptions.remote_description(self, name, format=format, level=level, **fields)

    def write_remote_description(
        self, path: str | os.PathLike, *, name: str | None = None, format: str = "hdf5", **fields: Any
    ) -> str:
        """Write a remote (``"RESTful-volume-description"``) JSON file; returns its path."""
        return descriptions.write_json(path, self.remote_description_dict(name, format=format, **fields))

    def write_description(
        self, path: str | os.PathLike, *, block_shape: Sequence[int], **options: Any
    ) -> str:
        """Write a composite ``"RESTful-blockwise-fileset-description"`` for this volume; returns the path.

        Options (all keyword): ``cache_dir`` becomes the local ``dataset_root_dir`` (relative paths are
        relative to the description's directory; ``None``: ``<description stem>-blocks`` beside it, as
        ``rbfs describe`` names it, so two descriptions in one folder never share a cache);
        ``view_origin``, ``view_shape``, ``local_shape`` and ``compression`` go to the local description;
        ``name``, ``format``, ``level`` and any other field to :meth:`remote_description_dict`.
        """
        composite = descriptions.composite_description(self, path, block_shape=block_shape, **options)
        return descriptions.write_json(path, composite)


def _retry_after(seconds: float | str) -> str:
    # HTTP says delay-seconds is a whole number; decimals and free text are sent as given, to test clients.
    if isinstance(seconds, str):
        return seconds
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


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
