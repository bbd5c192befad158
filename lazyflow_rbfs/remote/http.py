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
  inflated with the same bound.

The parts live beside this module: :mod:`.retry` (which statuses, how long to wait, ``Retry-After``),
:mod:`.redirects` (following them, :func:`origin`), :mod:`.bodies` (reading and inflating),
:mod:`.failures` (classifying what went wrong, messages), :mod:`.sessions` (per-thread sessions, slots).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from lazyflow_rbfs.errors import (
    ArgumentError,
    ClosedError,
    DownloadError,
    InvalidResponseError,
)
from lazyflow_rbfs.remote import inflight, redaction, transport
from lazyflow_rbfs.remote.bodies import ACCEPT_ENCODING, excerpt, read_body
from lazyflow_rbfs.remote.failures import (
    TRANSPORT_ERRORS,
    Failure,
    status_hint,
    timeout_failure,
    transport_failure,
)
from lazyflow_rbfs.remote.ranges import ByteRange, check_answer
from lazyflow_rbfs.remote.redirects import MAX_REDIRECTS, REDIRECT_STATUSES, follow, origin
from lazyflow_rbfs.remote.retry import MAX_RETRY_AFTER, RETRY_STATUSES, delay, retry_after  # noqa: F401
from lazyflow_rbfs.remote.sessions import Session, Slots

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

_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


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
    attempts:
        HTTP attempts made by all GETs: the first one of each GET plus every retry (of GETs that
        succeeded and of GETs that failed in the end). Redirects followed within an attempt are not
        counted separately.
    retry_causes:
        ``cause → number of attempts that failed with it and were retried``, over all GETs; causes are
        ``"HTTP 429"``, ``"HTTP 503"`` and the like, ``"timeout"``, ``"connection"`` (no response) and
        ``"cut off"`` (a body that ended early). ``sum(retry_causes.values())`` is every retry made.
    """

    requests: int = 0
    retries: int = 0
    bytes_received: int = 0
    errors: int = 0
    attempts: int = 0
    retry_causes: Mapping[str, int] = field(default_factory=dict)

    @property
    def retried(self) -> int:
        """Every retry made, by GETs that succeeded and GETs that failed (sum of :attr:`retry_causes`)."""
        return sum(self.retry_causes.values())

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


def check_client_options(*, retries: object, max_parallel: object, backoff: object) -> None:
    """Check the options every client takes (:class:`HttpClient`, the file client).

    Raises
    ------
    ArgumentError
        A value of the wrong type or range, named.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ArgumentError(f"retries must be an integer >= 0, got {retries!r}")
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        raise ArgumentError(f"max_parallel must be an integer >= 1, got {max_parallel!r}")
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
        raise ArgumentError(f"backoff must be a number of seconds >= 0, got {backoff!r}")


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


# ---------------------------------------------------------------------------------------------------------
# Client


_LIVE_CLIENTS: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's threads (and their requests in flight) do not exist in a forked child, and its pooled
    # sockets must not be shared: start with fresh locks, slots and sessions.
    for client in list(_LIVE_CLIENTS):
        client._lock = threading.Lock()
        client._slots = Slots(client._slots.limit, closed=client._closed)
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
        check_client_options(retries=retries, max_parallel=max_parallel, backoff=backoff)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_parallel = max_parallel
        self._headers = _check_headers(headers, "headers")
        self._public_headers = _check_headers(public_headers, "public_headers")
        weakref.finalize(self, redaction.unregister, redaction.register(self._headers))
        self._slots = Slots(max_parallel)
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
        self._attempts = 0
        self._retry_causes: dict[str, int] = {}
        _LIVE_CLIENTS.add(self)

    # -- sessions -------------------------------------------------------------------------------------

    def _session(self, url: str) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is not None:
            return session
        session = Session()
        # Retries, redirects and timeouts are ours (see get); urllib3 makes one attempt.
        adapter = inflight.Adapter(pool_connections=4, pool_maxsize=self.max_parallel, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["Accept-Encoding"] = ACCEPT_ENCODING
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
            return HttpStats(
                self._requests,
                self._retries,
                self._bytes,
                self._errors,
                self._attempts,
                dict(self._retry_causes),
            )

    def _count(
        self, *, retries: int = 0, nbytes: int = 0, error: bool = False, retry_cause: str | None = None
    ) -> None:
        with self._lock:
            self._retries += retries
            self._bytes += nbytes
            self._errors += int(error)
            if retry_cause is not None:
                self._retry_causes[retry_cause] = self._retry_causes.get(retry_cause, 0) + 1

    def record_error(self) -> None:
        """Count a GET whose body the caller found invalid (``stats.errors``)."""
        self._count(error=True)

    # -- requests -------------------------------------------------------------------------------------

    def get(
        self,
        url: str,
        *,
        max_bytes: int | None = None,
        byte_range: tuple[int, int | None] | ByteRange | None = None,
    ) -> bytes:
        """GET ``url`` and return the complete body of a 200 response (redirects followed).

        Parameters
        ----------
        url:
            An ``http``/``https`` URL.
        max_bytes:
            Refuse bodies larger than this, before and after undoing an HTTP ``Content-Encoding``
            (protects memory against a misbehaving server).
        byte_range:
            Only these bytes of the file (an HTTP ``Range`` request, no ``Content-Encoding``): ``(start,
            stop)``, half-open, exactly ``stop - start`` bytes; or ``(-n, None)``, the last ``n`` bytes
            (fewer if the file is smaller). See :mod:`.ranges`.

        Raises
        ------
        RemoteTimeoutError
            Connect or read timeout, or the response took longer than the read timeout, after retries.
        DownloadError
            Connection failure after retries, a status other than 200 (``.status``), or a bad redirect;
            with ``byte_range``: a status other than 206 (or a 200 that is exactly the range), e.g. a
            server without Range support (status 200) or a range past the end (416).
        InvalidResponseError
            Body truncated, larger than ``max_bytes``, or in an encoding that cannot be undone; with
            ``byte_range``, a ``Content-Range`` that is not the range asked for.
        ClosedError
            The client was closed (before, or while the request was in flight: it was abandoned).
        """
        wanted = None if byte_range is None else ByteRange.parse(byte_range)
        if wanted is not None:
            max_bytes = wanted.length if max_bytes is None else min(max_bytes, wanted.length)
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
        logger.debug("GET %s%s", url, "" if wanted is None else f" ({wanted})")
        attempts = 0
        while True:
            attempts += 1
            failure: Failure | None = None
            if not self._slots.acquire():
                raise self._abandoned(url)
            with self._lock:
                self._attempts += 1
            try:
                body = self._attempt(session, url, max_bytes, wanted)
            except Failure as exc:
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
            self._count(retry_cause=failure.cause_name)
            delay_s = delay(attempts, self.backoff, failure.retry_after)
            logger.debug(
                "GET %s: attempt %d failed (%s); retrying in %.2f s", url, attempts, failure.head, delay_s
            )
            if self._closing.wait(delay_s):
                raise self._abandoned(url)

    def _abandoned(self, url: str) -> ClosedError:
        return ClosedError(
            redaction.redact(f"GET {url} abandoned: the remote volume is closed; open a new one to download")
        )

    def _attempt(
        self, session: requests.Session, url: str, max_bytes: int | None, wanted: ByteRange | None = None
    ) -> bytes:
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
                body = self._exchange(session, url, max_bytes, flight, wanted)
            except Exception as exc:
                # Cut short (deadline, close): the exception is only the symptom, the reason says what.
                if flight.finish() is None:
                    if isinstance(exc, (Failure, ClosedError)):
                        raise
                    if isinstance(exc, TRANSPORT_ERRORS):
                        raise transport_failure(exc, url, self.timeout) from None
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
            raise timeout_failure(url, self.timeout)
        return body

    def _request_headers(self, same_origin: bool, wanted: ByteRange | None = None) -> CaseInsensitiveDict:
        headers = CaseInsensitiveDict(self._public_headers)
        if same_origin:
            headers.update(self._headers)
        if wanted is not None:
            # A range of an HTTP-compressed body would be a range of the compressed bytes.
            headers["Range"] = wanted.header
            headers["Accept-Encoding"] = "identity"
        return headers

    def _exchange(
        self,
        session: requests.Session,
        url: str,
        max_bytes: int | None,
        flight: inflight.Attempt,
        wanted: ByteRange | None = None,
    ) -> bytes:
        """One attempt: the request, its redirects, and the body of the final 200 (206) response."""
        home = origin(url)
        target = url
        for hops in itertools.count():
            same_origin = home is not None and origin(target) == home
            response = transport.send(
                session, target, self._request_headers(same_origin, wanted), self.timeout
            )
            with response:
                status = response.status_code
                location = response.headers.get("Location") if status in REDIRECT_STATUSES else None
                if location:
                    target = follow(target, location, hops, status)
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
                if status != 200 and not (wanted is not None and status == 206):
                    where = url if target == url else f"{url} (redirected to {target})"
                    raise Failure(
                        DownloadError,
                        f"GET {where} failed with HTTP status {status}",
                        f"{excerpt(response)}; {status_hint(status)}",
                        status=status,
                        retryable=status in RETRY_STATUSES,
                        retry_after=retry_after(response.headers.get("Retry-After")),
                    )
                exact = None if wanted is None else check_answer(status, response.headers, wanted, url)
                body = read_body(
                    response, target, max_bytes, timeout=self.timeout, count=lambda n: self._count(nbytes=n)
                )
                if exact is not None and len(body) != exact:
                    raise Failure(
                        InvalidResponseError,
                        f"GET {url} ({wanted}) returned {len(body)} bytes, expected {exact}",
                        status=status,
                        counted=False,
                    )
                return body
        raise AssertionError("unreachable")  # pragma: no cover
