"""Secrets of the HTTP layer, and the one place that scrubs them from text.

Every value of an :class:`~lazyflow_rbfs.remote.http.HttpClient`'s ``headers`` (and the credential after
an auth scheme: ``Token abc`` gives ``abc`` too) is registered here while its client lives. :func:`redact`
replaces each of them, in any case, and any start of one cut short by an excerpt (its first
:data:`PREFIX` characters or more), with ``***``. It runs on every message the HTTP layer builds, on the
exceptions it chains (:func:`sanitized`), on log records (:func:`install_log_filter`) and, through
:func:`scrub_error`, on errors raised above the HTTP layer from what a server sent. Values shorter than
:data:`MIN_SECRET` characters are not registered: they would garble every message and protect nothing.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import traceback
from collections.abc import Iterator, Mapping

import requests

__all__ = [
    "register",
    "unregister",
    "redact",
    "active",
    "longest",
    "sanitized",
    "exception_chain",
    "scrub_error",
    "install_log_filter",
    "MIN_SECRET",
    "PREFIX",
]

#: Shorter header values are not treated as secrets.
MIN_SECRET = 4

#: A secret cut short is still recognised from this many characters on.
PREFIX = 8

_REDACTED = "***"


class _Secrets:
    """The secrets of every live client of this process, and the one function that scrubs them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_owner: dict[int, frozenset[str]] = {}
        self._keys = itertools.count()
        self._values: tuple[str, ...] = ()  # longest first
        self._folded: tuple[str, ...] = ()
        self.longest = 0

    def add(self, values: frozenset[str]) -> int:
        with self._lock:
            key = next(self._keys)
            if values:
                self._by_owner[key] = values
                self._rebuild()
            return key

    def remove(self, key: int) -> None:
        with self._lock:
            if self._by_owner.pop(key, None) is not None:
                self._rebuild()

    def _rebuild(self) -> None:
        values = sorted({v for vs in self._by_owner.values() for v in vs}, key=len, reverse=True)
        self._values = tuple(values)
        self._folded = tuple(v.lower() for v in values)
        self.longest = len(values[0]) if values else 0

    @property
    def active(self) -> bool:
        return bool(self._values)

    def redact(self, text: str) -> str:
        """``text`` with every secret, in any case, and every cut-off start of one (its first
        :data:`PREFIX` characters or more, as an excerpt of an echoing body may hold) replaced."""
        values, folded = self._values, self._folded
        if not values or not text:
            return text
        lowered = text.lower()
        if len(lowered) != len(text):  # a few characters change length when lowered: match exactly
            lowered, folded = text, values
        spans: list[tuple[int, int]] = []
        for secret in folded:
            head = secret[:PREFIX]
            start = lowered.find(head)
            while start >= 0:
                end, stop = start + len(head), min(len(text), start + len(secret))
                while end < stop and lowered[end] == secret[end - start]:
                    end += 1
                spans.append((start, end))
                start = lowered.find(head, end)
        if not spans:
            return text
        spans.sort()
        pieces, last = [], 0
        for start, end in spans:
            if end <= last:
                continue
            if start > last:
                pieces.append(text[last:start])
            if start >= last:
                pieces.append(_REDACTED)
            last = end
        pieces.append(text[last:])
        return "".join(pieces)

    def after_fork(self) -> None:
        self._lock = threading.Lock()


_REGISTRY = _Secrets()


def _values_of(headers: Mapping[str, str]) -> frozenset[str]:
    """Every header value, and the credential after an auth scheme (``Token abc`` -> ``abc`` too)."""
    values: set[str] = set()
    for value in headers.values():
        parts = [value.strip()]
        scheme, _, credential = parts[0].partition(" ")
        if credential.strip() and scheme.isalpha():
            parts.append(credential.strip())
        values.update(p for p in parts if len(p) >= MIN_SECRET)
    return frozenset(values)


def exception_chain(
    exc: BaseException, *, prune: tuple[type[BaseException], ...] = ()
) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (in its ``args``, ``reason``, ``__cause__``, ``__context__``),
    each once, depth first. Exceptions of the types ``prune`` are yielded but not looked into. What the
    caller changes in an exception it is given (its ``args``) is seen before its wrapped ones are."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, prune):
            continue
        stack.extend(item.args)
        stack.extend((getattr(item, "reason", None), item.__cause__, item.__context__))


def sanitized(exc: BaseException | None) -> BaseException | None:
    """``exc`` fit to be chained: no request/response objects (they carry the headers), no secret text.

    String arguments of ``exc`` and of everything it wraps are scrubbed in place; should a secret still
    show in the formatted chain, a plain stand-in with the scrubbed message is returned instead.
    """
    if exc is None:
        return None
    for item in exception_chain(exc):
        if isinstance(item, requests.RequestException):
            item.request = None
            item.response = None
        if _REGISTRY.active:
            try:
                item.args = tuple(_REGISTRY.redact(a) if isinstance(a, str) else a for a in item.args)
            except (AttributeError, TypeError):  # an exception type with read-only args
                pass
    if _REGISTRY.active:
        text = "".join(traceback.format_exception(exc))
        if _REGISTRY.redact(text) != text:
            return _ScrubbedCause(f"{type(exc).__name__}: {_REGISTRY.redact(str(exc))}")
    return exc


class _ScrubbedCause(Exception):
    """Stands in for a transport exception whose text held a secret."""


def scrub_error(exc: BaseException) -> BaseException:
    """Scrub the secrets of this process's clients from ``exc`` in place (message, string attributes,
    chained exceptions) and return it: for errors raised above the HTTP layer from what a server sent
    (a decoder quoting the start of a body that echoes a token)."""
    if not _REGISTRY.active:
        return exc
    try:
        exc.args = tuple(_REGISTRY.redact(a) if isinstance(a, str) else a for a in exc.args)
    except (AttributeError, TypeError):
        pass
    for name in getattr(exc, "_fields", ()):
        value = getattr(exc, name, None)
        if isinstance(value, str):
            setattr(exc, name, _REGISTRY.redact(value))
    if exc.__cause__ is not None:
        exc.__cause__ = sanitized(exc.__cause__)
    if exc.__context__ is not None:
        exc.__context__ = sanitized(exc.__context__)
    return exc


class _RedactingFilter(logging.Filter):
    """Scrubs the secrets of live clients from the records of the logger it is installed on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _REGISTRY.active:
            return True
        message = record.getMessage()
        clean = _REGISTRY.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _REGISTRY.redact(logging.Formatter().formatException(record.exc_info))
        return True


def install_log_filter(*names: str) -> None:
    """Scrub the secrets of live clients from the records of the loggers ``names`` (idempotent)."""
    for name in names:
        target = logging.getLogger(name)
        if not any(isinstance(f, _RedactingFilter) for f in target.filters):
            target.addFilter(_RedactingFilter())


def register(headers: Mapping[str, str]) -> int:
    """Register the secrets of ``headers`` (values, credentials); returns the key for :func:`unregister`."""
    return _REGISTRY.add(_values_of(headers))


def unregister(key: int) -> None:
    """Forget the secrets registered under ``key``."""
    _REGISTRY.remove(key)


def redact(text: str) -> str:
    """``text`` with every registered secret (and every start of one cut short) replaced by ``***``."""
    return _REGISTRY.redact(text)


def active() -> bool:
    """True while any secret is registered."""
    return _REGISTRY.active


def longest() -> int:
    """Length of the longest registered secret (0 without any)."""
    return _REGISTRY.longest


os.register_at_fork(after_in_child=lambda: _REGISTRY.after_fork())
