"""When :class:`~lazyflow_rbfs.remote.http.HttpClient` retries and how long it waits first.

Statuses in :data:`RETRY_STATUSES` (and connection errors, timeouts, bodies cut off) are retried; the
wait before retry ``n`` is what a ``Retry-After`` header asks for (capped at :data:`MAX_RETRY_AFTER`),
else none before the first retry and ``backoff * 2**(n - 1)`` seconds after that.
"""

from __future__ import annotations

import email.utils
import logging
from datetime import datetime, timezone

from lazyflow_rbfs.remote import redaction

__all__ = ["RETRY_STATUSES", "MAX_RETRY_AFTER", "retry_after", "delay"]

logger = logging.getLogger(__name__)
redaction.install_log_filter(__name__)

#: Statuses worth retrying: rate limiting and transient server trouble.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

#: ``Retry-After`` is honoured up to this many seconds.
MAX_RETRY_AFTER = 60.0


def retry_after(value: str | None) -> float | None:
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


def delay(attempts: int, backoff: float, asked: float | None) -> float:
    """Seconds to wait after ``attempts`` failed attempts: ``asked`` (a ``Retry-After``) if given, else
    none after the first and ``backoff * 2**(attempts - 1)`` (capped) after later ones."""
    if asked is not None:
        return asked
    return 0.0 if attempts <= 1 else min(backoff * 2 ** (attempts - 1), MAX_RETRY_AFTER)
