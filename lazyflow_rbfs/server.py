"""A local cutout service: serves a numpy volume over the openconnecto.me-style HDF5 cutout API.

Used for the demo, the tests and the benchmarks, so besides serving it counts and logs requests, can
hold them at a gate, and injects faults on demand (error statuses, HTML pages, truncated bodies, stalls,
wrong shapes and dtypes). Only ever binds to the address it is given (``127.0.0.1`` by default).

URL layout (one path segment per axis, in ``url_axes`` order, by default the reverse of ``axes`` like
openconnecto.me's ``x,y,z`` for ``zyx`` volumes)::

    http://127.0.0.1:PORT/emca/sample/hdf5/0/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/

Coordinates in URLs are server coordinates: volume index + ``origin_offset``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import secrets
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import h5py
import numpy as np

__all__ = ["CutoutServer", "Faults", "FaultRule", "RequestRecord", "sample_volume", "run_server"]

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
    retry_after: float | None = None
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


class _BadRequest(Exception):
    pass


class _NotFound(Exception):
    pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
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
            region = self._region(path)
        except _NotFound as exc:
            self._send(handler, 404, f"{exc}\n".encode(), "text/plain")
            return
        except _BadRequest as exc:
            self._send(handler, 400, f"{exc}\n".encode(), "text/plain")
            return
        data = np.asarray(self.volume[region])
        if rule is not None and rule.kind == "wrong_shape":
            data = np.concatenate([data, data[..., :1]], axis=-1)
        if rule is not None and rule.kind == "wrong_dtype":
            data = data.astype(np.complex128 if data.dtype.kind in "fc" else np.float64)
        body = self._encode(data)
        truncate = rule is not None and rule.kind == "truncate"
        self._send(handler, 200, body, "application/x-hdf5", truncate=truncate)

    def _region(self, path: str) -> tuple[slice, ...]:
        head = f"{self.prefix}/hdf5/0/"
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

    def remote_description_dict(self, name: str | None = None) -> dict[str, Any]:
        """The JSON dict of a ``"RESTful-volume-description"`` of this volume."""
        return {
            "_schema_name": "RESTful-volume-description",
            "_schema_version": 1.0,
            "name": name or "cutout-server",
            "format": "hdf5",
            "axes": self.axes,
            "origin_offset": list(self.origin_offset),
            "bounds": list(self.bounds),
            "dtype": self.dtype.name,
            "url_format": self.url_format,
            "hdf5_dataset": self.dataset_name.lstrip("/"),
        }

    def write_remote_description(self, path: str | os.PathLike, *, name: str | None = None) -> str:
        """Write a remote (``"RESTful-volume-description"``) JSON file; returns its path."""
        return _write_json(path, self.remote_description_dict(name))

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
    ) -> str:
        """Write a composite ``"RESTful-blockwise-fileset-description"`` for this volume; returns the path.

        ``cache_dir`` becomes the local ``dataset_root_dir`` (relative paths are relative to the
        description's directory; ``None`` leaves the default, the description's directory).
        """
        local: dict[str, Any] = {
            "_schema_name": "blockwise-fileset-description",
            "_schema_version": 1.1,
            "name": (name or "cutout-server") + "-blocks",
            "format": "hdf5",
            "axes": self.axes,
            "shape": [int(s) for s in (local_shape if local_shape is not None else self.shape)],
            "dtype": self.dtype.name,
            "block_shape": [int(b) for b in block_shape],
            "block_file_name_format": f"block-{{roiString}}.h5/{self.dataset_name.lstrip('/')}",
        }
        if cache_dir is not None:
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
            "remote_description": self.remote_description_dict(name),
            "local_description": local,
        }
        return _write_json(path, composite)


def _retry_after(seconds: float) -> str:
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
