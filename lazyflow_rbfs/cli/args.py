"""Argument plumbing of ``rbfs``: roi and shape syntax, argument types, the options commands share.

Pure parsing functions (:func:`parse_roi`, :func:`resolve_roi`, :func:`parse_shape`) are unit-tested on
their own; the ``*_arg`` functions are their argparse ``type=`` wrappers (one integer parser,
:func:`int_at_least`, serves every integer option); the ``add_*`` functions add the arguments several
commands share, so they read the same everywhere.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Sequence

import numpy as np

from lazyflow_rbfs import geometry
from lazyflow_rbfs.cli.exits import UsageError
from lazyflow_rbfs.errors import OutOfBoundsError

__all__ = [
    "PROG",
    "parse_roi",
    "resolve_roi",
    "format_roi_items",
    "format_roi",
    "parse_shape",
    "Parser",
    "AddCommand",
    "roi_arg",
    "shape_arg",
    "int_at_least",
    "positive_int",
    "non_negative_int",
    "seconds_arg",
    "scheduler_arg",
    "timeout_arg",
    "size_arg",
    "add_cache_size_option",
    "add_description_arg",
    "add_roi_option",
    "add_request_options",
    "add_network_options",
    "add_progress_options",
    "want_progress",
]

PROG = "rbfs"

# ---------------------------------------------------------------------------------------------------------
# Parsing (pure, unit-tested)

_INT = r"[+-]?\d+"
_ROI_ITEM = re.compile(rf"^\s*(?:(?P<single>{_INT})|(?P<start>{_INT})?\s*:\s*(?P<stop>{_INT})?)\s*$")


def parse_roi(text: str) -> tuple[tuple[int | None, int | None], ...]:
    """Parse a roi written in slice syntax, one comma-separated item per axis.

    ``"0:64,0:512,0:512"``; ``:`` is a whole axis, open ends are allowed (``10:``, ``:20``), a single
    integer ``i`` means ``i:i+1``, negative numbers count from the end of the axis (as in Python).
    Nothing is evaluated: only integers, ``:`` and ``,`` are accepted.

    Returns
    -------
    One ``(start, stop)`` pair per axis, ``None`` for an open end; resolve it with :func:`resolve_roi`.

    Raises
    ------
    ValueError
        The text is not of that form.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected a roi such as '0:64,0:512,0:512', found {text!r}")
    items = []
    for axis, item in enumerate(text.split(",")):
        match = _ROI_ITEM.match(item)
        if match is None:
            raise ValueError(
                f"expected a roi such as '0:64,0:512,0:512' (integers, ':' and ','), found {text!r} "
                f"(item {axis} is {item.strip()!r})"
            )
        if match.group("single") is not None:
            i = int(match.group("single"))
            items.append((i, i + 1 if i != -1 else None))
        else:
            start, stop = match.group("start"), match.group("stop")
            items.append((None if start is None else int(start), None if stop is None else int(stop)))
    return tuple(items)


def resolve_roi(
    parsed: Sequence[tuple[int | None, int | None]] | None,
    shape: Sequence[int] | np.ndarray,
    axes: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn a :func:`parse_roi` result into a checked ``(start, stop)`` for a volume of ``shape``.

    ``None`` (no roi given) is the whole volume. Values are not clamped: a roi reaching beyond the
    volume is an error, not silently shortened.

    Raises
    ------
    OutOfBoundsError
        Wrong number of axes, outside the volume, reversed or empty.
    """
    shape = [int(n) for n in shape]
    if parsed is None:
        return np.zeros(len(shape), dtype=np.int64), np.array(shape, dtype=np.int64)
    names = f" ({axes})" if axes else ""
    if len(parsed) != len(shape):
        raise OutOfBoundsError(
            f"expected a roi with {len(shape)} comma-separated items for the axes{names} of shape "
            f"{tuple(shape)}, found {len(parsed)}: {format_roi_items(parsed)}"
        )
    start, stop = [], []
    for (lo, hi), n in zip(parsed, shape):
        lo = 0 if lo is None else (lo + n if lo < 0 else lo)
        hi = n if hi is None else (hi + n if hi < 0 else hi)
        start.append(lo)
        stop.append(hi)
    try:
        return geometry.check_roi((start, stop), shape)
    except OutOfBoundsError as exc:
        raise OutOfBoundsError(
            f"roi {format_roi_items(parsed)} is not inside the volume of shape {tuple(shape)}{names}: {exc}"
        ) from None


def format_roi_items(parsed: Sequence[tuple[int | None, int | None]]) -> str:
    """The slice-syntax text of a parsed roi (inverse of :func:`parse_roi` up to single integers)."""
    return ",".join(f"{'' if a is None else a}:{'' if b is None else b}" for a, b in parsed)


def format_roi(start: Sequence[int], stop: Sequence[int]) -> str:
    """``(start, stop)`` in slice syntax, e.g. ``0:64,0:512,0:512``."""
    return ",".join(f"{int(a)}:{int(b)}" for a, b in zip(start, stop))


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"64,512,512"`` (or ``64x512x512``) into a tuple of positive integers.

    Raises
    ------
    ValueError
        Anything else.
    """
    parts = re.split(r"\s*[,x]\s*", text.strip()) if isinstance(text, str) else []
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise ValueError(
            f"expected positive integers separated by commas such as '64,512,512', found {text!r}"
        )
    return values


# ---------------------------------------------------------------------------------------------------------
# argparse types and shared options


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2, through :func:`main`."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def roi_arg(text: str) -> tuple[tuple[int | None, int | None], ...]:
    """``--roi``: :func:`parse_roi` for argparse."""
    try:
        return parse_roi(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def shape_arg(text: str) -> tuple[int, ...]:
    """``--shape`` and the like: :func:`parse_shape` for argparse."""
    try:
        return parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def int_at_least(text: str, minimum: int, expected: str) -> int:
    """An integer option of at least ``minimum``; ``expected`` says what in the error."""
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts such as ``-j``)."""
    return int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An integer >= 0 (``--retries``, ``--port``)."""
    return int_at_least(text, 0, "an integer >= 0")


def seconds_arg(text: str) -> float:
    """A finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, found {text!r}")
    return value


def scheduler_arg(text: str) -> str:
    """A dask scheduler address (``tcp://host:8786``, ``host:8786``, ``tls://...``), checked before use."""
    try:
        from lazyflow_rbfs.distributed import parse_scheduler_address
    except ImportError:
        raise argparse.ArgumentTypeError(
            "needs dask.distributed: pip install 'lazyflow_rbfs[distributed]'"
        ) from None
    try:
        return parse_scheduler_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def timeout_arg(text: str) -> float | tuple[float, float]:
    """``SECONDS`` or ``CONNECT,READ`` seconds, each > 0 (the library's ``timeout``)."""
    parts = text.split(",")
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected SECONDS or CONNECT,READ seconds, found {text!r}")
    values = [seconds_arg(p) for p in parts]
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected timeouts > 0 seconds, found {text!r}")
    return values[0] if len(values) == 1 else (values[0], values[1])


#: ``command(name, help_text, aliases=())``: adds a subcommand and returns its parser (see
#: :func:`lazyflow_rbfs.cli.commands.build_parser`).
AddCommand = Callable[..., Parser]


def add_description_arg(p: Parser) -> None:
    """The positional ``DESCRIPTION`` file."""
    p.add_argument("description", metavar="DESCRIPTION", help="a composite or local description (.json)")


def add_roi_option(p: Parser, required: bool = False, what: str = "default: the whole view") -> None:
    """``--roi R`` in view coordinates (parsed by :func:`parse_roi`; resolve with :func:`resolve_roi`)."""
    p.add_argument(
        "--roi",
        type=roi_arg,
        required=required,
        metavar="R",
        help=f"region in view coordinates, slice syntax per axis, e.g. 0:64,0:512,: ({what})",
    )


def add_request_options(p: Parser) -> None:
    """``--timeout`` and ``--retries``: how each HTTP request is made."""
    p.add_argument(
        "--timeout", type=timeout_arg, metavar="S", help="seconds per request, or CONNECT,READ (10,60)"
    )
    p.add_argument("--retries", type=non_negative_int, metavar="N", help="attempts after the first (3)")


def size_arg(text: str) -> int:
    """A size in bytes: ``500M``, ``50G``, ``2T`` (powers of 1024) or plain bytes."""
    from lazyflow_rbfs.store.eviction import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_cache_size_option(p: Parser, help_text: str | None = None) -> None:
    """``--max-cache-size SIZE``: the cache root's bound (``max_cache_bytes``)."""
    p.add_argument(
        "--max-cache-size",
        type=size_arg,
        metavar="SIZE",
        help=help_text
        or "keep the cache within SIZE bytes of blocks (500M, 50G, 2T), evicting the least recently read "
        "blocks (default: the description's max_cache_bytes, else unbounded)",
    )


def add_network_options(p: Parser) -> None:
    """``-j``, the request options, ``--lock-timeout`` and ``--max-cache-size``: how a fileset downloads
    blocks."""
    p.add_argument("-j", "--max-parallel", type=positive_int, metavar="N", help="downloads in flight (8)")
    add_request_options(p)
    p.add_argument(
        "--lock-timeout",
        type=seconds_arg,
        metavar="S",
        help="seconds to wait for a block another process downloads (default: as long as it lives)",
    )
    add_cache_size_option(p)


def add_progress_options(p: Parser, when: str = "") -> None:
    """``--progress`` / ``--no-progress`` (see :func:`want_progress`); ``when`` says when the bar shows."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help=f"show a progress bar on stderr{' ' + when if when else ''} (default: only when stderr is a "
        "terminal)",
    )
    group.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def want_progress(args: argparse.Namespace) -> bool:
    """Whether to show a progress bar: as asked, else only when stderr is a terminal."""
    if args.progress is not None:
        return bool(args.progress)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())
