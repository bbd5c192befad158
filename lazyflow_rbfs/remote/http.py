"""HTTP transport for the remote layer: pooled sessions, retries, deadlines, redirects and error translation.

Every network error is translated here, once, into the :class:`~lazyflow_rbfs.errors.DownloadError`
family. The rules this module keeps, whatever the server does:

* **Deadlines.** Each attempt has a deadline: ``read`` seconds after its connection is ready (at the
  latest ``connect + read`` seconds after the attempt starts). It bounds the status line, the headers,
  the body and the redirects together, so a server that trickles bytes cannot hold a request past it:
  the attempt is cut short (:mod:`.inflight`) and fails with :class:`RemoteTimeoutError`, retried like
  any other timeout. (The socket timeout still bounds each single wait for data.)
* **Closing.** :meth:`HttpClient.close` cuts the client's attempts in flight short the same way, wakes
  requests waiting for a slot or backing off before a retry, and each of them raises
  :class:`~lazyflow_rbfs.errors.ClosedError` (abandoned, not a server failure) at once; nothing in flight
  is retried after close. A connection still being made is abandoned when its connect timeout ends.
* **Redirects** are followed here (at most :data:`MAX_REDIRECTS`, ``http``/``https`` only). The caller's
  headers (``headers``: credentials, API keys, the Boss token) are sent only to the origin (scheme, host,
  port) of the URL asked for; a redirect to another origin is followed without them.
* **Secrets.** Every value of ``headers`` is a secret (:mod:`.redaction`): never logged, never shown in
  a repr, and scrubbed from every error message, log record (this module's and urllib3's) and chained
  exception this module produces, even when a server echoes it back.
* **Bodies** are read raw and bounded (``max_bytes``); an HTTP ``Content-Encoding`` (gzip, deflate) is
  inflated here with the same bound.
"""

from __future__ import annotations

import email.utils
import http.client
import itertools
import logging
import os
import re
import threading
import weakref
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from lazyflow_rbfs.errors import (
    ArgumentError,
    ClosedError,
    DownloadError,
    InvalidResponseError,
    RemoteTimeoutError,
)
from lazyflow_rbfs.remote import inflight, redaction

__all__ = [
    "HttpClient",
    "HttpStats",
    "normalize_timeout",
    "origin",
    "RETRY_STATUSES",
    "MAX_REDIRECTS",
]

logger = logging.getLogger(__name__)
redaction.install_log_filter(
    __name__, "urllib3.connectionpool", "urllib3.connection", "urllib3.response", "urllib3.util.retry"
)

#: Statuses worth retrying: rate limiting and transient server trouble.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

#: Redirects followed per attempt.
MAX_REDIRECTS = 5

#: ``Retry-After`` is honoured up to this many seconds.
MAX_RETRY_AFTER = 60.0

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 20
_EXCERPT = 200  # characters of an error page shown in a message
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TRANSPORT_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    ValueError,
)


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


class _Slots:
    """A counting limit on requests in flight that can be raised while in use, and closed."""

    def __init__(self, limit: int, closed: bool = False) -> None:
        self.limit = limit
        self._used = 0
        self._closed = closed
        self._cond = threading.Condition()

    def acquire(self) -> bool:
        """Take a slot; False (and no slot) once closed."""
        with self._cond:
            while self._used >= self.limit and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._used += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._used -= 1
            self._cond.notify()

    def raise_to(self, limit: int) -> None:
        with self._cond:
            if limit > self.limit:
                self.limit = limit
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


# ---------------------------------------------------------------------------------------------------------
# Public helpers


@dataclass(frozen=True)
class HttpStats:
    """A snapshot of a client's counters.

    Attributes
    ----------
    requests:
        GETs issued (one per ``get`` call; retries inside it are counted in ``retries``).
    retries:
        Extra attempts made by GETs that succeeded.
    bytes_received:
        Body bytes received (as sent, before any HTTP ``Content-Encoding`` is undone).
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


def _check_headers(headers: Mapping[str, str] | None, option: str) -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in (headers or {}).items():
        name, text = str(key), str(value).strip()
        if _HEADER_NAME.fullmatch(name) is None:
            raise ArgumentError(
                f"{option}: expected header names of letters, digits and !#$%&'*+-.^_`|~, found {name!r}"
            )
        if any(ch in text for ch in "\r\n\0"):
            raise ArgumentError(
                f"{option}: the value of header {name!r} holds a line break or NUL (value not shown); "
                f"expected one line"
            )
        checked[name] = text
    return checked


def origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` an ``http``/``https`` URL connects to, or ``None``: not http(s), user info in
    it, or read differently by ``urllib.parse`` and by urllib3 (which makes the connection), as with
    ``http://a:1\\@b:2/``. ``None`` is no origin: never the same as another."""
    try:
        parsed = urllib3.util.parse_url(url)
        split = urlsplit(url)
        split_port = split.port
    except (ValueError, urllib3.exceptions.LocationParseError):
        return None
    scheme = (parsed.scheme or "").lower()
    if scheme not in _DEFAULT_PORTS or parsed.auth is not None or "@" in split.netloc:
        return None
    host = (parsed.host or "").strip("[]").lower().rstrip(".")
    port = parsed.port or _DEFAULT_PORTS[scheme]
    split_host = (split.hostname or "").rstrip(".")
    if not host or host != split_host or port != (split_port or _DEFAULT_PORTS[scheme]):
        return None
    return scheme, host, port


# ---------------------------------------------------------------------------------------------------------
# Client


_LIVE_CLIENTS: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's threads (and their requests in flight) do not exist in a forked child, and its pooled
    # sockets must not be shared: start with fresh locks, slots and sessions.
    for client in list(_LIVE_CLIENTS):
        client._lock = threading.Lock()
        client._slots = _Slots(client._slots.limit, closed=client._closed)
        client._local = threading.local()
        client._sessions = {}
        client._flights = set()
        client._closing = threading.Event()
        if client._closed:
            client._closing.set()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _drop_session(client_ref: weakref.ref, key: int) -> None:
    client = client_ref()
    if client is not None:
        client._forget_session(key)


class _Failure(Exception):
    """Why one attempt failed; the retry loop turns the last one into a :class:`DownloadError`."""

    def __init__(
        self,
        error: type[DownloadError],
        head: str,
        tail: str = "",
        *,
        status: int | None = None,
        counted: bool = True,
        retryable: bool = False,
        retry_after: float | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__()
        self.error, self.head, self.tail, self.status = error, head, tail, status
        self.counted, self.retryable, self.retry_after, self.cause = counted, retryable, retry_after, cause

    def message(self, attempts: int) -> str:
        return self.head + (f" after {attempts} attempt(s)" if self.counted else "") + self.tail


class HttpClient:
    """GET with retries, deadlines and bounded bodies, one pooled ``requests.Session`` per thread.

    Parameters
    ----------
    timeout:
        Seconds, or ``(connect, read)``. ``read`` bounds each wait for data and, per attempt, the whole
        response (status line, headers, body, redirects) from the moment the connection is ready.
    retries:
        Attempts after the first one, for connection errors, timeouts, bodies cut off and statuses in
        :data:`RETRY_STATUSES` (``Retry-After`` is honoured up to :data:`MAX_RETRY_AFTER` seconds).
    backoff:
        Backoff factor in seconds: no wait before the first retry, then ``backoff * 2**(n - 1)``.
    max_parallel:
        At most this many requests in flight through this client at once.
    headers:
        Extra headers sent with every request to the origin of the URL asked for; secrets: never logged,
        shown, or sent to another origin on a redirect, and scrubbed from error text.
    public_headers:
        Headers that are no secret (``Accept``, a public token): sent to every origin, never scrubbed.
        ``headers`` win over them.
    """

    def __init__(
        self,
        *,
        timeout: float | tuple[float, float] = (5, 60),
        retries: int = 3,
        backoff: float = 0.2,
        max_parallel: int = 8,
        headers: Mapping[str, str] | None = None,
        public_headers: Mapping[str, str] | None = None,
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
        self._headers = _check_headers(headers, "headers")
        self._public_headers = _check_headers(public_headers, "public_headers")
        weakref.finalize(self, redaction.unregister, redaction.register(self._headers))
        self._slots = _Slots(max_parallel)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: dict[int, requests.Session] = {}
        self._flights: set[inflight.Attempt] = set()
        self._closing = threading.Event()
        self._next_key = 0
        self._closed = False
        self._requests = 0
        self._retries = 0
        self._bytes = 0
        self._errors = 0
        _LIVE_CLIENTS.add(self)

    # -- sessions -------------------------------------------------------------------------------------

    def _session(self, url: str) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is not None:
            return session
        session = _Session()
        # Retries, redirects and timeouts are ours (see get); urllib3 makes one attempt.
        adapter = inflight.Adapter(pool_connections=4, pool_maxsize=self.max_parallel, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["Accept-Encoding"] = "gzip, deflate"  # the encodings _inflate undoes
        with self._lock:
            if self._closed:
                session.close()
                raise self._abandoned(url)
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
        """Abandon the requests in flight and close every session. Idempotent; returns at once.

        A request in flight in another thread (receiving, waiting for a slot, or backing off before a
        retry) raises :class:`ClosedError` promptly and is not retried; later requests raise it at once.
        """
        with self._lock:
            self._closed = True
            flights = list(self._flights)
            sessions = list(self._sessions.values())
            self._sessions.clear()
        self._closing.set()
        self._slots.close()
        for flight in flights:
            flight.abort(inflight.ABANDONED)
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
        """Names (never values) of the extra headers, public ones included."""
        return sorted(set(self._headers) | set(self._public_headers))

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

    def record_error(self) -> None:
        """Count a GET whose body the caller found invalid (``stats.errors``)."""
        self._count(error=True)

    # -- requests -------------------------------------------------------------------------------------

    def get(self, url: str, *, max_bytes: int | None = None) -> bytes:
        """GET ``url`` and return the complete body of a 200 response (redirects followed).

        Parameters
        ----------
        url:
            An ``http``/``https`` URL.
        max_bytes:
            Refuse bodies larger than this, before and after undoing an HTTP ``Content-Encoding``
            (protects memory against a misbehaving server).

        Raises
        ------
        RemoteTimeoutError
            Connect or read timeout, or the response took longer than the read timeout, after retries.
        DownloadError
            Connection failure after retries, a status other than 200 (``.status``), or a bad redirect.
        InvalidResponseError
            Body truncated, larger than ``max_bytes``, or in an encoding that cannot be undone.
        ClosedError
            The client was closed (before, or while the request was in flight: it was abandoned).
        """
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise DownloadError(
                redaction.redact(
                    f"refusing to download {url}: only http and https URLs are supported, got scheme "
                    f"{scheme!r}"
                ),
                url=url,
                status=None,
            )
        with self._lock:
            if self._closed:
                raise self._abandoned(url)
            self._requests += 1
        session = self._session(url)
        logger.debug("GET %s", url)
        attempts = 0
        while True:
            attempts += 1
            failure: _Failure | None = None
            if not self._slots.acquire():
                raise self._abandoned(url)
            try:
                body = self._attempt(session, url, max_bytes)
            except _Failure as exc:
                failure = exc
            finally:
                self._slots.release()
            if failure is None:
                self._count(retries=attempts - 1)
                logger.debug("GET %s -> %d bytes", url, len(body))
                return body
            if not failure.retryable or attempts > self.retries:
                self._count(error=True)
                error = failure.error(
                    redaction.redact(failure.message(attempts)), url=url, status=failure.status
                )
                raise error from redaction.sanitized(failure.cause)
            delay = self._delay(attempts, failure.retry_after)
            logger.debug(
                "GET %s: attempt %d failed (%s); retrying in %.2f s", url, attempts, failure.head, delay
            )
            if self._closing.wait(delay):
                raise self._abandoned(url)

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return 0.0 if attempts <= 1 else min(self.backoff * 2 ** (attempts - 1), MAX_RETRY_AFTER)

    def _abandoned(self, url: str) -> ClosedError:
        return ClosedError(
            redaction.redact(f"GET {url} abandoned: the remote volume is closed; open a new one to download")
        )

    def _attempt(self, session: requests.Session, url: str, max_bytes: int | None) -> bytes:
        connect, read = self.timeout if isinstance(self.timeout, tuple) else (self.timeout, self.timeout)
        flight = inflight.Attempt(connect, read)
        with self._lock:
            if self._closed:
                raise self._abandoned(url)
            self._flights.add(flight)
        inflight.begin(flight)
        body = b""
        try:
            try:
                body = self._exchange(session, url, max_bytes, flight)
            except Exception as exc:
                # Cut short (deadline, close): the exception is only the symptom, the reason says what.
                if flight.finish() is None:
                    if isinstance(exc, (_Failure, ClosedError)):
                        raise
                    if isinstance(exc, _TRANSPORT_ERRORS):
                        raise self._transport_failure(exc, url) from None
                    raise
            # A body read to its end may have been ended by the shutdown: the reason decides.
            reason = flight.finish()
        finally:
            inflight.end()
            flight.finish()
            with self._lock:
                self._flights.discard(flight)
        if reason == inflight.ABANDONED:
            raise self._abandoned(url)
        if reason == inflight.TIMED_OUT:
            raise self._timeout(url)
        return body

    def _timeout(self, url: str) -> _Failure:
        return _Failure(
            RemoteTimeoutError,
            f"GET {url} timed out (timeout={self.timeout}, the read part bounding the whole response)",
            "; the server is too slow or unreachable (increase timeout or retries, or check the server)",
            retryable=True,
        )

    def _transport_failure(self, exc: BaseException, url: str, *, reading: bool = False) -> _Failure:
        if _is_timeout(exc):
            failure = self._timeout(url)
            failure.cause = exc
            return failure
        if reading:
            return _Failure(
                InvalidResponseError,
                f"response from {url} was cut off while reading its body ({type(exc).__name__})",
                "; the server or the connection dropped the transfer, try again",
                retryable=True,
                cause=exc,
            )
        return _Failure(
            DownloadError,
            f"GET {url} failed",
            f" (timeout={self.timeout}): could not get a response ({type(exc).__name__}); check that the "
            f"server is reachable and the URL is right",
            retryable=True,
            cause=exc,
        )

    def _request_headers(self, same_origin: bool) -> CaseInsensitiveDict:
        headers = CaseInsensitiveDict(self._public_headers)
        if same_origin:
            headers.update(self._headers)
        return headers

    def _exchange(
        self, session: requests.Session, url: str, max_bytes: int | None, flight: inflight.Attempt
    ) -> bytes:
        """One attempt: the request, its redirects, and the body of the final 200 response."""
        home = origin(url)
        target = url
        for hops in itertools.count():
            same_origin = home is not None and origin(target) == home
            response = session.get(
                target,
                headers=self._request_headers(same_origin),
                timeout=self.timeout,
                stream=True,
                allow_redirects=False,
            )
            with response:
                status = response.status_code
                location = response.headers.get("Location") if status in _REDIRECT_STATUSES else None
                if location:
                    target = self._follow(target, location, hops, status)
                    logger.debug(
                        "GET %s: HTTP %d, redirected to %s%s",
                        url,
                        status,
                        target,
                        ""
                        if origin(target) == home or not self._headers
                        else " (another origin: headers not sent)",
                    )
                    continue
                if status != 200:
                    where = url if target == url else f"{url} (redirected to {target})"
                    raise _Failure(
                        DownloadError,
                        f"GET {where} failed with HTTP status {status}",
                        f"{self._excerpt(response)}; {_status_hint(status)}",
                        status=status,
                        retryable=status in RETRY_STATUSES,
                        retry_after=_retry_after(response.headers.get("Retry-After")),
                    )
                return self._read_body(response, target, max_bytes)
        raise AssertionError("unreachable")  # pragma: no cover

    def _follow(self, current: str, location: str, hops: int, status: int) -> str:
        target = urljoin(current, location.strip())
        if urlsplit(target).scheme.lower() not in ("http", "https"):
            raise _Failure(
                DownloadError,
                f"GET {current}: HTTP {status} redirects to a {urlsplit(target).scheme or 'relative'!s} URL "
                f"({target!r}); only http and https redirects are followed",
                counted=False,
                status=status,
            )
        if hops >= MAX_REDIRECTS:
            raise _Failure(
                DownloadError,
                f"GET {current}: more than {MAX_REDIRECTS} redirects (HTTP {status} to {target}); the server "
                f"redirects in a loop, check the URL",
                counted=False,
                status=status,
            )
        return target

    def _read_body(self, response: requests.Response, url: str, max_bytes: int | None) -> bytes:
        status = response.status_code
        length = _content_length(response)
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", "identity"):
            encoding = ""
        elif encoding not in ("gzip", "x-gzip", "deflate"):
            raise _Failure(
                InvalidResponseError,
                f"response from {url} has Content-Encoding {encoding!r}; expected gzip, deflate or none "
                f"(the client asks for those only)",
                counted=False,
                status=status,
            )
        if max_bytes is not None and length is not None and length > max_bytes:
            raise _Failure(
                InvalidResponseError,
                f"response from {url} announces {length} bytes, more than the {max_bytes} bytes a cutout of "
                f"the requested size can need; refusing to download it",
                counted=False,
                status=status,
            )
        raw = response.raw
        try:
            if length is not None:
                body = raw.read(length, decode_content=False)  # one read: cheaper than chunks
            else:
                chunks = bytearray()
                while True:
                    want = _CHUNK if max_bytes is None else min(_CHUNK, max_bytes + 1 - len(chunks))
                    chunk = raw.read(want, decode_content=False)
                    if not chunk:
                        break
                    chunks += chunk
                    if max_bytes is not None and len(chunks) > max_bytes:
                        raise _Failure(
                            InvalidResponseError,
                            f"response from {url} is larger than the {max_bytes} bytes a cutout of the "
                            f"requested size can need; refusing to download it",
                            counted=False,
                            status=status,
                        )
                body = bytes(chunks)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError) as exc:
            failure = self._transport_failure(exc, url, reading=True)
            failure.status = status
            raise failure from None
        self._count(nbytes=len(body))
        if length is not None and len(body) != length:
            raise _Failure(
                InvalidResponseError,
                f"response from {url} is truncated: Content-Length is {length} but {len(body)} bytes arrived",
                "; the server or the connection dropped the transfer, try again",
                status=status,
                retryable=True,
            )
        if encoding:
            body = _inflate(body, encoding, max_bytes, url, status)
        return body

    def _excerpt(self, response: requests.Response) -> str:
        """A short, printable, scrubbed excerpt of an error page (e.g. "token invalid"); bounded."""
        try:
            raw = response.raw.read(4 * _EXCERPT + redaction.longest(), decode_content=False)
        except Exception:  # noqa: BLE001 - best effort, the status already says what went wrong
            return ""
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            try:
                wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
                raw = zlib.decompressobj(wbits).decompress(raw, 4 * _EXCERPT + redaction.longest())
            except zlib.error:
                return ""
        # Scrub the whole excerpt before cutting it: a secret cut in half would not be recognised.
        text = " ".join(redaction.redact(raw.decode("utf-8", "replace")).split())[:_EXCERPT]
        return f" (server said: {text!r})" if text else ""


def _inflate(body: bytes, encoding: str, limit: int | None, url: str, status: int) -> bytes:
    """Undo an HTTP ``Content-Encoding`` without ever holding more than ``limit + 1`` bytes of output."""
    out = bytearray()
    rest = body
    wbits = 16 + zlib.MAX_WBITS if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
    try:
        while rest:
            inflater = zlib.decompressobj(wbits)
            try:
                out += inflater.decompress(rest, 0 if limit is None else limit + 1 - len(out))
            except zlib.error:
                if encoding != "deflate" or wbits < 0 or out:
                    raise
                wbits = -zlib.MAX_WBITS  # a raw deflate stream, as some servers send
                continue
            if limit is not None and (len(out) > limit or inflater.unconsumed_tail):
                raise _Failure(
                    InvalidResponseError,
                    f"response from {url} inflates (Content-Encoding {encoding}) to more than the {limit} "
                    f"bytes a cutout of the requested size can need; refusing it",
                    counted=False,
                    status=status,
                )
            if not inflater.eof:
                raise zlib.error("the compressed stream ends early")
            rest = inflater.unused_data
            if encoding == "deflate":
                break
    except zlib.error as exc:
        raise _Failure(
            InvalidResponseError,
            f"response from {url} is not valid {encoding} data (Content-Encoding): {exc}",
            counted=False,
            status=status,
        ) from None
    return bytes(out)


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (integer, decimal or HTTP date), capped; None if absent
    or unparsable (the usual backoff applies then)."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            logger.debug("ignoring unparsable Retry-After header %r", text)
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return (
            "check the credentials (the headers option; for the Boss, a token for this host in "
            "~/.intern/intern.cfg or INTERN_PROTOCOL, INTERN_HOST and INTERN_TOKEN)"
        )
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
