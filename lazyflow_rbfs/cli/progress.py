"""What ``rbfs`` shows while and after it downloads: the progress bar and the transfer summary.

``prefetch``, ``read`` and ``export`` share both: :func:`open_bar` makes the bar (only when asked, or on a
terminal; see :func:`~lazyflow_rbfs.cli.args.want_progress`) and :func:`transfer_line` says what the
HTTP client did: block requests, attempts, retries by cause, failures, bytes and speed.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from lazyflow_rbfs.cli.args import want_progress
from lazyflow_rbfs.cli.text import fmt_bytes

__all__ = ["open_bar", "transfer_line"]


@contextlib.contextmanager
def open_bar(
    args: argparse.Namespace, fs: Any, total: int, desc: str | None = None, *, speed: bool = True
) -> Iterator[Any]:
    """A :class:`~lazyflow_rbfs.cache.ProgressBar` of ``total`` blocks for a composite ``fs`` when the
    command should show one, else ``False`` (pass either as a prefetch's ``progress``); closed on exit.
    ``speed=False`` leaves MB/s out (on a cluster the workers receive the bytes, not this process)."""
    if not want_progress(args):
        yield False
        return
    from lazyflow_rbfs.cache import ProgressBar

    remote = getattr(fs, "remote", None)
    bytes_received = (lambda: remote.stats.bytes_received) if remote is not None and speed else None
    with ProgressBar(total, bytes_received=bytes_received, desc=desc) as bar:
        yield bar


def transfer_line(stats: Any, seconds: float) -> str:
    """One line about the HTTP traffic of ``stats`` (an ``HttpStats``) over ``seconds``.

    ``32 GETs, 35 attempts (3 retries: 3 after HTTP 503), 0 failed, 1.2 MB received, 4.0 MB/s``: a GET
    is one request of a block (or of a shard index...), an attempt one try of it on the wire.
    """
    retried = sum(stats.retry_causes.values())
    causes = ", ".join(
        f"{n} after {cause}"
        for cause, n in sorted(stats.retry_causes.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    retries = f"{retried} retr{'y' if retried == 1 else 'ies'}" + (f": {causes}" if causes else "")
    return (
        f"{stats.requests} GET{'s' if stats.requests != 1 else ''}, "
        f"{stats.attempts} attempt{'s' if stats.attempts != 1 else ''} ({retries}), "
        f"{stats.errors} failed, {fmt_bytes(stats.bytes_received)} received, "
        f"{stats.bytes_received / max(seconds, 1e-9) / 1e6:.1f} MB/s"
    )
