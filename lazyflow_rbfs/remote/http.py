"""HTTP transport for the remote layer: pooled sessions, retries, timeouts, and error translation.

Every network error is translated here, once, into the :class:`~lazyflow_rbfs.errors.DownloadError`
family. Extra headers (authentication) are sent with every request but never logged, never shown in a
repr and scrubbed from the chained ``requests`` exceptions.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from lazyflow_rbfs.errors import (
    ArgumentError,
    ClosedError,
    DownloadError,
    InvalidResponseError,
    RemoteTimeoutError,
)

__all__ = ["HttpClient", "HttpStats", "normalize_timeout", "RETRY_STATUSES"]

logger = logging.getLogger(__name__)

#: Statuses worth retrying: rate limiting and transient server trouble.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

_CHUNK = 1 << 20


class _Slots:
    """A counting limit on requests in flight that can be raised while in use."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._cond = threading.Condition()

    def __enter__(self) -> None:
        with self._cond:
            while self._used >= self.limit:
                self._cond.wait()
            self._used += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._cond:
            self._used -= 1
            self._cond.notify()

    def raise_to(self, limit: int) -> None:
        with self._cond:
            if limit > self.limit:
                self.limit = limit
                self._cond.notify_all()


class _Session(requests.Session):
    """A session that reads its environment settings (proxies, CA bundle) once per host, not per request.

    ``requests`` re-scans the environment on every request (about 0.4 ms); a cutout client sends
    thousands of requests to one host.
    """

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, str], dict] = {}

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[override]
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        env = self._environment.get(key)
        if env is None:
            env = super().merge_environment_settings(url, {}, None, None, None)
            self._environment[key] = env
        merged = dict(env["proxies"])
        merged.update(proxies or {})
        return {
            "proxies": merged,
            "stream": env["stream"] if stream is None else stream,
            "verify": env["verify"] if verify is None else verify,
            "cert": env["cert"] if cert is None else cert,
        }


class _CappedRetry(Retry):
    """urllib3 ``Retry`` that honours ``Retry-After`` but never sleeps longer than ``MAX_RETRY_AFTER``."""

    MAX_RETRY_AFTER = 60.0

    def parse_retry_after(self, retry_after: str) -> float:
        try:
            seconds = super().parse_retry_after(retry_after)
        except urllib3.exceptions.InvalidHeader:
            # Not an integer nor an HTTP date. Accept decimal seconds ("0.5"); anything else means the
            # server still asked us to back off, so fall back to the usual backoff instead of failing.
            try:
                seconds = max(float(retry_after), 0.0)
            except ValueError:
                logger.debug("ignoring unparsable Retry-After header %r", retry_after)
                seconds = 0.0
            if seconds != seconds:  # NaN
                seconds = 0.0
        return min(seconds, self.MAX_RETRY_AFTER)


@dataclass(frozen=True)
class HttpStats:
    """A snapshot of a client's counters.

    Attributes
    ----------
    requests:
        GETs issued (one per ``get`` call; retries inside it are counted in ``retries``).
    retries:
        Extra attempts urllib3 made for successful GETs (failed GETs' retries are not reported by urllib3).
    bytes_received:
        Body bytes received.
    errors:
        GETs that ended in a :class:`DownloadError`.
    """

    requests: int = 0
    retries: int = 0
    bytes_received: int = 0
    errors: int = 0

    @property
    def bytes(self) -> int:
        """Alias of ``bytes_received``."""
        return self.bytes_received


def normalize_timeout(timeout: object) -> float | tuple[float, float]:
    """Check ``timeout``: a positive number of seconds or a ``(connect, read)`` pair of them."""
    if isinstance(timeout, (tuple, list)):
        if len(timeout) != 2:
            raise ArgumentError(f"timeout must be seconds or a (connect, read) pair, got {timeout!r}")
        return (_positive(timeout[0]), _positive(timeout[1]))
    return _positive(timeout)


def _positive(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ArgumentError(f"a timeout must be a positive number of seconds, got {value!r}")
    return float(value)


_LIVE_CLIENTS: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's threads (and their requests in flight) do not exist in a forked child, and its pooled
    # sockets must not be shared: start with fresh locks, slots and sessions.
    for client in list(_LIVE_CLIENTS):
        client._lock = threading.Lock()
        client._slots = _Slots(client._slots.limit)
        client._local = threading.local()
        client._sessions = {}


os.register_at_fork(after_in_child=_after_fork_in_child)


def _drop_session(client_ref: weakref.ref, key: int) -> None:
    client = client_ref()
    if client is not None:
        client._forget_session(key)


class HttpClient:
    """GET with retries and bounded bodies, one pooled ``requests.Session`` per thread.

    Parameters
    ----------
    timeout:
        Seconds, or ``(connect, read)``; applies to every request.
    retries:
        Attempts after the first one, for connection errors, read errors and statuses in
        :data:`RETRY_STATUSES` (``Retry-After`` is honoured).
    backoff:
        urllib3 ``backoff_factor`` in seconds.
    max_parallel:
        At most this many requests in flight through this client at once (also the pool size).
    headers:
        Extra headers sent with every request; never logged.
    """

    def __init__(
        self,
        *,
        timeout: float | tuple[float, float] = (5, 60),
        retries: int = 3,
        backoff: float = 0.2,
        max_parallel: int = 8,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout = normalize_timeout(timeout)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ArgumentError(f"retries must be an integer >= 0, got {retries!r}")
        if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
            raise ArgumentError(f"max_parallel must be an integer >= 1, got {max_parallel!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
            raise ArgumentError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
        self.retries = retries
        self.backoff = float(backoff)
        self.max_parallel = max_parallel
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self._slots = _Slots(max_parallel)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: dict[int, requests.Session] = {}
        self._next_key = 0
        self._closed = False
        self._requests = 0
        self._retries = 0
        self._bytes = 0
        self._errors = 0
        _LIVE_CLIENTS.add(self)

    # -- sessions -------------------------------------------------------------------------------------

    def _make_retry(self, budget: int | None = None) -> Retry:
        budget = self.retries if budget is None else budget
        return _CappedRetry(
            total=budget,
            connect=budget,
            read=budget,
            status=budget,
            other=0,
            redirect=5,
            backoff_factor=self.backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            respect_retry_after_header=True,
            raise_on_status=False,
        )

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is not None:
            return session
        session = _Session()
        adapter = HTTPAdapter(
            pool_connections=4, pool_maxsize=self.max_parallel, max_retries=self._make_retry()
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update(self._headers)
        with self._lock:
            if self._closed:
                session.close()
                raise ClosedError("the remote volume is closed; open a new RESTfulVolume to download")
            key = self._next_key
            self._next_key += 1
            self._sessions[key] = session
        self._local.session = session
        # Close the session when its thread is gone, so short-lived threads leave no sockets behind.
        weakref.finalize(threading.current_thread(), _drop_session, weakref.ref(self), key)
        return session

    def raise_max_parallel(self, max_parallel: int) -> None:
        """Allow up to ``max_parallel`` requests in flight from now on (never lowers the limit)."""
        self._slots.raise_to(max_parallel)
        self.max_parallel = self._slots.limit

    def _forget_session(self, key: int) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            session.close()

    def close(self) -> None:
        """Close every session; later requests raise :class:`ClosedError`. Idempotent."""
        with self._lock:
            self._closed = True
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<HttpClient timeout={self.timeout} retries={self.retries} max_parallel={self.max_parallel} "
            f"headers={self.header_names} (values hidden)>"
        )

    @property
    def header_names(self) -> list[str]:
        """Names (never values) of the extra headers."""
        return sorted(self._headers)

    # -- stats ----------------------------------------------------------------------------------------

    @property
    def stats(self) -> HttpStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return HttpStats(self._requests, self._retries, self._bytes, self._errors)

    def _count(self, *, retries: int = 0, nbytes: int = 0, error: bool = False) -> None:
        with self._lock:
            self._retries += retries
            self._bytes += nbytes
            self._errors += int(error)

    # -- requests -------------------------------------------------------------------------------------

    def get(self, url: str, *, max_bytes: int | None = None) -> bytes:
        """GET ``url`` and return the complete body of a 200 response.

        Parameters
        ----------
        url:
            An ``http``/``https`` URL.
        max_bytes:
            Refuse bodies larger than this (protects memory against a misbehaving server).

        Raises
        ------
        RemoteTimeoutError
            Connect or read timeout after retries.
        DownloadError
            Connection failure after retries, or a status other than 200 (``.status``).
        InvalidResponseError
            Body truncated, or larger than ``max_bytes``.
        ClosedError
            The client was closed.
        """
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise DownloadError(
                f"refusing to download {url}: only http and https URLs are supported, got scheme {scheme!r}",
                url=url,
                status=None,
            )
        with self._lock:
            if self._closed:
                raise ClosedError("the remote volume is closed; open a new RESTfulVolume to download")
            self._requests += 1
        session = self._session()
        adapter = session.get_adapter(url)
        logger.debug("GET %s", url)
        budget = self.retries  # shared by urllib3's retries and ours, so at most retries + 1 requests
        pause = threading.Event()  # never set: backoff between body retries
        while True:
            adapter.max_retries = self._make_retry(budget)  # per-thread session: no other user
            try:
                with self._slots:
                    return self._get(session, url, max_bytes)
            except DownloadError as exc:
                used = getattr(exc, "_attempts", None)  # set only for bodies cut off while reading
                if used is None or budget - used < 0:
                    self._count(error=True)
                    raise
                budget -= used
                logger.debug("GET %s: body cut off (%s); retrying", url, exc)
                pause.wait(self.backoff)

    def _get(self, session: requests.Session, url: str, max_bytes: int | None) -> bytes:
        try:
            response = session.get(url, timeout=self.timeout, stream=True)
        except requests.RequestException as exc:
            raise _translate(exc, url, None, self._limits()) from _scrubbed(exc)
        with response:
            status = response.status_code
            history = getattr(getattr(response.raw, "retries", None), "history", ()) or ()
            self._count(retries=len(history))
            if status != 200:
                hint = _status_hint(status)
                detail = _short_text(response)
                raise DownloadError(
                    f"GET {url} failed with HTTP status {status} after {len(history) + 1} attempt(s)"
                    f"{detail}; {hint}",
                    url=url,
                    status=status,
                )
            try:
                body = self._read_body(response, url, max_bytes)
            except DownloadError as exc:
                if getattr(exc, "_cut_off", False):
                    exc._attempts = len(history) + 1  # type: ignore[attr-defined]
                raise
        self._count(nbytes=len(body))
        logger.debug("GET %s -> %d bytes", url, len(body))
        return body

    def _limits(self) -> str:
        return f"timeout={self.timeout}, up to {self.retries + 1} attempt(s)"

    def _read_body(self, response: requests.Response, url: str, max_bytes: int | None) -> bytes:
        length = _content_length(response)
        if max_bytes is not None and length is not None and length > max_bytes:
            raise InvalidResponseError(
                f"response from {url} announces {length} bytes, more than the {max_bytes} bytes a cutout of "
                f"the requested size can need; refusing to download it",
                url=url,
                status=response.status_code,
            )
        encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
        if length is not None and not encoded:
            # One read of the announced length: much cheaper than iterating over chunks.
            try:
                body = response.raw.read(length, decode_content=False)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                raise _cut_off(
                    _translate(exc, url, response.status_code, self._limits(), while_reading=True)
                ) from _scrubbed(exc)
            if len(body) != length:
                raise _cut_off(
                    InvalidResponseError(
                        f"response from {url} is truncated: Content-Length is {length} but {len(body)} bytes "
                        f"arrived; the server or the connection dropped the transfer, try again",
                        url=url,
                        status=response.status_code,
                    )
                )
            return body
        chunks = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK):
                chunks += chunk
                if max_bytes is not None and len(chunks) > max_bytes:
                    raise InvalidResponseError(
                        f"response from {url} is larger than the {max_bytes} bytes a cutout of the requested "
                        f"size can need; refusing to download it",
                        url=url,
                        status=response.status_code,
                    )
        except requests.RequestException as exc:
            raise _cut_off(
                _translate(exc, url, response.status_code, self._limits(), while_reading=True)
            ) from _scrubbed(exc)
        if length is not None and not encoded and len(chunks) != length:
            raise InvalidResponseError(
                f"response from {url} is truncated: Content-Length is {length} but {len(chunks)} bytes "
                f"arrived; the server or the connection dropped the transfer, try again",
                url=url,
                status=response.status_code,
            )
        return bytes(chunks)


def _cut_off(exc: DownloadError) -> DownloadError:
    exc._cut_off = True  # type: ignore[attr-defined]
    return exc


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _short_text(response: requests.Response) -> str:
    # A short, printable excerpt of an error page helps users (e.g. "token invalid"); bounded.
    try:
        text = response.raw.read(300, decode_content=True)
    except Exception:  # noqa: BLE001 - best effort, the status already says what went wrong
        return ""
    text = text.decode("utf-8", "replace").strip() if isinstance(text, bytes) else ""
    text = " ".join(text.split())[:200]
    return f" (server said: {text!r})" if text else ""


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return "check the credentials passed as headers (or the token)"
    if status == 404:
        return (
            "check the description's url_format (or boss/precomputed fields) and that the region exists on "
            "the server"
        )
    if status == 413:
        return "the service refuses requests this large; lower max_cutout_bytes (boss) or the block_shape"
    if status == 406:
        return "the server cannot send the requested encoding (boss_encoding)"
    if status == 400:
        return "the server rejected the region; check the description's bounds, origin_offset and axes"
    if status in RETRY_STATUSES:
        return "the server is overloaded or failing; retry later or increase retries"
    return "check the server and the description's url_format"


def _is_timeout(exc: BaseException) -> bool:
    """True if ``exc`` or anything it wraps is a connect/read timeout."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, urllib3.exceptions.NewConnectionError):
            continue  # a subclass of ConnectTimeoutError in urllib3, but a refused/failed connection
        if isinstance(item, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
            return True
        stack.extend(item.args)
        stack.append(getattr(item, "reason", None))
        stack.append(item.__cause__)
        stack.append(item.__context__)
    return False


def _translate(
    exc: BaseException, url: str, status: int | None, limits: str, *, while_reading: bool = False
) -> DownloadError:
    if _is_timeout(exc):
        return RemoteTimeoutError(
            f"GET {url} timed out ({limits}); the server is too slow or unreachable "
            f"(increase timeout or retries, or check the server)",
            url=url,
            status=status,
        )
    if while_reading:
        return InvalidResponseError(
            f"response from {url} was cut off while reading its body ({type(exc).__name__}); "
            f"the server or the connection dropped the transfer, try again",
            url=url,
            status=status,
        )
    return DownloadError(
        f"GET {url} failed ({limits}): could not get a response ({type(exc).__name__}); "
        f"check that the server is reachable and the URL is right",
        url=url,
        status=status,
    )


def _scrubbed(exc: BaseException) -> BaseException:
    """Drop the request/response objects (they carry the headers) from an exception we chain."""
    if isinstance(exc, requests.RequestException):
        exc.request = None
        exc.response = None
    return exc
