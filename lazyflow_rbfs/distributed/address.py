"""Dask scheduler addresses: checked (:func:`parse_scheduler_address`) before anything connects to one."""

from __future__ import annotations

import dask.config
from distributed.comm import registry as _comm_registry
from distributed.comm.addressing import parse_host_port

from lazyflow_rbfs.errors import ArgumentError

__all__ = ["parse_scheduler_address"]

#: Address schemes that name a host and a port (``inproc://`` addresses name a process instead).
_HOST_PORT_SCHEMES = frozenset({"tcp", "tls", "ws", "wss", "ucx", "ucxx"})


def parse_scheduler_address(address: str) -> str:
    """Check a dask scheduler address without connecting; return it with its scheme (``tcp://`` default).

    Accepted are the forms dask's own ``Client`` accepts: ``SCHEME://LOCATION`` for a scheme dask knows
    (``tcp``, ``tls``, ``ws``, ``wss``, ``ucx``, ``inproc``, and any a plug-in registers), or a bare
    ``HOST:PORT`` (dask's default scheme, ``tcp``). For schemes with a host, LOCATION is ``HOST:PORT`` or
    ``[IPv6]:PORT`` with a port in 1..65535 and nothing after it.

    Raises
    ------
    ArgumentError
        The address is not of that form (the message says what was expected and what was found).
    """
    expected = "a dask scheduler address such as tcp://10.0.0.1:8786 or 10.0.0.1:8786"
    if not isinstance(address, str) or not address.strip() or any(c.isspace() for c in address.strip()):
        raise ArgumentError(f"expected {expected}, found {address!r}")
    text = address.strip()
    scheme, sep, location = text.partition("://")
    if not sep:
        scheme, location = dask.config.get("distributed.comm.default-scheme", "tcp"), text
    scheme = scheme.lower()
    if scheme in ("http", "https"):
        raise ArgumentError(
            f"{address!r} is a web address (the dashboard, perhaps); expected {expected}: the scheduler's "
            "own address, which its log prints as 'Scheduler at:'"
        )
    try:
        _comm_registry.get_backend(scheme)
    except ValueError:
        known = ", ".join(f"{name}://" for name in sorted(_comm_registry.backends))
        raise ArgumentError(
            f"unknown scheme {scheme!r} in scheduler address {address!r}; expected one of {known}"
        ) from None
    if not location or "://" in location:
        raise ArgumentError(f"expected {expected}, found {address!r}")
    if scheme in _HOST_PORT_SCHEMES:
        try:
            host, port = parse_host_port(location)
        except ValueError:
            host, port = "", -1
        if not host or not 0 < port < 65536:
            raise ArgumentError(f"expected {expected} (HOST:PORT, a port from 1 to 65535), found {address!r}")
    return f"{scheme}://{location}"
