"""Fault injection for the test server: error statuses, HTML pages, truncated bodies, stalls, wrong data.

A :class:`Faults` object holds an ordered list of :class:`FaultRule`; the server asks it, once per
request, which rule applies (:meth:`Faults.take`) and misbehaves accordingly. Rules can be added,
released and cleared while the server runs, from any thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "FaultRule", "Faults"]

#: The kinds of fault a rule can inject.
KINDS = ("status", "html", "truncate", "stall", "wrong_shape", "wrong_dtype")


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
    """Thread-safe, runtime-adjustable fault injection for a :class:`~lazyflow_rbfs.testing.CutoutServer`.

    Each request takes the first rule (in the order added) that applies to its path and still has
    a count left. Rules with ``count=None`` never run out.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(self, kind: str, *, count: int | None = 1, match: str | None = None, **params: Any) -> FaultRule:
        """Add a rule of ``kind`` (one of ``status, html, truncate, stall, wrong_shape, wrong_dtype``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {KINDS}")
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

    def take(self, path: str) -> FaultRule | None:
        """The rule that applies to a request for ``path`` (its count is used up by one), or ``None``.

        The server calls this once per request.
        """
        with self._lock:
            for rule in self._rules:
                if rule.applies_to(path):
                    if rule.count is not None:
                        rule.count -= 1
                    return rule
        return None
