"""One GET on a pooled connection, without the per-request machinery of ``requests``.

:func:`send` is what :class:`~lazyflow_rbfs.remote.http.HttpClient` calls for each attempt (and each
redirect hop). For a URL with no proxy it asks the session's own adapter for its urllib3 connection pool
(the same pools, tracked connections (:mod:`.inflight`), TLS settings and CA bundle as ``requests`` would
use: they are worked out once per host by ``requests`` itself) and sends the GET there directly. That
skips preparing a ``requests.Request``, merging settings, hooks and cookies on every request: about
half of the client's CPU per request (see bench/README.md). Everything else is unchanged: the caller
still follows redirects, reads the body (:mod:`.bodies`), and translates errors; failures are raised as
the same ``requests`` exceptions ``Session.get`` raises.

A URL that needs a proxy (``http_proxy``, ``https_proxy``, ``no_proxy``), whose host has credentials in
``~/.netrc`` (``NETRC``), or that ``requests`` would rewrite (non-ASCII, unquoted characters), goes
through ``Session.get`` as before, and so does every request of a session once a server set a cookie
(kept in the session's jar here as ``requests`` keeps it).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from requests.utils import get_netrc_auth, requote_uri, select_proxy
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import HTTPError as _HTTPError
from urllib3.exceptions import ProxyError as _ProxyError
from urllib3.exceptions import SSLError as _SSLError

__all__ = ["Response", "send"]

_ROUTES = "_rbfs_routes"  # attribute of a session: (scheme, netloc) -> route, or None (use requests)
_routes_lock = threading.Lock()


class Response:
    """The part of ``requests.Response`` the client uses: ``status_code``, ``headers``, ``raw``.

    As a context manager it ends like ``requests.Response.close``: a connection whose body was read to
    its end is back in its pool already; any other is closed.
    """

    __slots__ = ("status_code", "headers", "raw")

    def __init__(self, raw: urllib3.HTTPResponse) -> None:
        self.raw = raw
        self.status_code = raw.status
        self.headers = raw.headers

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.raw.close()
        self.raw.release_conn()


class _Route:
    __slots__ = ("adapter", "host_params", "pool_kwargs")

    def __init__(
        self, adapter: HTTPAdapter, host_params: dict[str, Any], pool_kwargs: dict[str, Any]
    ) -> None:
        self.adapter = adapter
        self.host_params = host_params
        self.pool_kwargs = pool_kwargs


def _route(session: requests.Session, url: str, parts: Any) -> _Route | None:
    """How ``session`` reaches ``url``'s origin directly (remembered per origin), or None."""
    routes = getattr(session, _ROUTES, None)
    if routes is None:
        with _routes_lock:
            routes = session.__dict__.setdefault(_ROUTES, {})
    key = (parts.scheme, parts.netloc)
    try:
        return routes[key]
    except KeyError:
        pass
    route = None
    env = session.merge_environment_settings(url, {}, None, None, None)
    adapter = session.get_adapter(url)
    if (
        isinstance(adapter, HTTPAdapter)
        and select_proxy(url, env["proxies"]) is None
        and not (session.trust_env and get_netrc_auth(url))  # requests adds ~/.netrc credentials
        and hasattr(adapter, "build_connection_pool_key_attributes")
    ):
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        host_params, pool_kwargs = adapter.build_connection_pool_key_attributes(
            prepared, env["verify"], env["cert"]
        )
        route = _Route(adapter, host_params, pool_kwargs)
    routes[key] = route
    return route


def send(
    session: requests.Session,
    url: str,
    headers: Mapping[str, str],
    timeout: float | tuple[float, float],
) -> requests.Response | Response:
    """GET ``url`` through ``session``'s pools, streaming (no redirects followed, nothing decoded).

    Returns a response whose body is still to be read (``raw``). Raises what ``Session.get`` raises.
    """
    parts = urlsplit(url)
    route = None
    plain = url.isascii() and parts.scheme in ("http", "https") and requote_uri(url) == url
    if plain and not session.cookies:  # cookies a server set are sent by requests, as before
        route = _route(session, url, parts)
    if route is None:
        return session.get(url, headers=headers, timeout=timeout, stream=True, allow_redirects=False)
    merged = dict(session.headers)
    merged.update(headers)
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    adapter = route.adapter
    try:
        pool = adapter.poolmanager.connection_from_host(**route.host_params, pool_kwargs=route.pool_kwargs)
        raw = pool.urlopen(
            method="GET",
            url=path,
            headers=merged,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=False,
            retries=adapter.max_retries,
            timeout=urllib3.Timeout(connect=connect, read=read),
            chunked=False,
        )
    except (ProtocolError, OSError) as err:
        raise requests.ConnectionError(err) from err
    except MaxRetryError as err:
        # The same translation as requests' adapter (one attempt: the reason is what happened).
        if isinstance(err.reason, ConnectTimeoutError) and not isinstance(err.reason, NewConnectionError):
            raise requests.ConnectTimeout(err) from err
        if isinstance(err.reason, ResponseError):
            raise requests.RetryError(err) from err
        if isinstance(err.reason, _ProxyError):
            raise requests.exceptions.ProxyError(err) from err
        if isinstance(err.reason, _SSLError):
            raise requests.exceptions.SSLError(err) from err
        raise requests.ConnectionError(err) from err
    except ClosedPoolError as err:
        raise requests.ConnectionError(err) from err
    except _SSLError as err:
        raise requests.exceptions.SSLError(err) from err
    except ReadTimeoutError as err:
        raise requests.ReadTimeout(err) from err
    except _HTTPError:
        raise
    if raw.headers.get("Set-Cookie"):
        # Kept in the session's jar as requests would (later requests then go through requests).
        prepared = requests.PreparedRequest()
        prepared.prepare(method="GET", url=url, headers=merged)
        extract_cookies_to_jar(session.cookies, prepared, raw)
    return Response(raw)
