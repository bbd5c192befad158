"""``rbfs``: the command line of lazyflow_rbfs.

Every subcommand only parses its arguments, calls the library, prints and maps errors to exit codes:

* ``0`` success;
* ``1`` a runtime failure (download/prefetch failed, a block is missing or corrupt, an I/O error);
* ``2`` a usage or description error (bad option, bad roi, missing or invalid description file);
* ``130`` interrupted (Ctrl-C).

Errors are printed as one line, ``rbfs: error: ...``, on stderr; ``-v`` adds debug logs and the full
traceback. Results go to stdout, progress bars and logs to stderr. Run ``rbfs --help`` for the commands.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import math
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from lazyflow_rbfs import __version__, geometry
from lazyflow_rbfs.errors import (
    DescriptionError,
    OutOfBoundsError,
    RbfsError,
    SchemaError,
)
from lazyflow_rbfs.remote import remote_advice, source_url

__all__ = ["main", "parse_roi", "resolve_roi", "parse_shape"]

logger = logging.getLogger(__name__)

PROG = "rbfs"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Upper bound of voxel bytes ``rbfs read`` holds in memory at once (it writes slab by slab).
READ_SLAB_BYTES = 256 * 1024 * 1024

#: ``rbfs info`` counts cached blocks only up to this many blocks (``rbfs status`` always does).
INFO_STATUS_MAX_BLOCKS = 4096

_COMPOSITE = "RESTful-blockwise-fileset-description"
_LOCAL = "blockwise-fileset-description"
_DEFAULT_AXES = {1: "x", 2: "yx", 3: "zyx", 4: "tzyx", 5: "tzyxc"}


class UsageError(Exception):
    """A command line that cannot be carried out as given (exit status 2)."""


class _Unavailable(UsageError):
    """An optional part (the ilastik integration) cannot be imported (exit status 2)."""


class _Failure(Exception):
    """A runtime failure already described for the user (exit status 1)."""


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a one-line summary of what was done and what was not (exit status 130)."""


# ---------------------------------------------------------------------------------------------------------
# Parsing helpers (pure, unit-tested)

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


def _redact_url(url: str) -> str:
    """Hide credentials in a URL (pattern): a userinfo password and secret-looking query values."""
    url = re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(
        r"([?&;][^=&;#]*(?:token|key|secret|pass|auth|sig|credential)[^=&;#]*=)[^&;#]*",
        r"\1***",
        url,
        flags=re.IGNORECASE,
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _fmt_shape(values: Sequence[int]) -> str:
    return " x ".join(str(int(v)) for v in values)


# ---------------------------------------------------------------------------------------------------------
# argparse plumbing


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2, through :func:`main`."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _roi_arg(text: str):
    try:
        return parse_roi(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _shape_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_at_least(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, found {text!r}")
    return value


def _fault_count(text: str) -> int | str:
    """A fault count: a positive integer, or ``"all"`` (every request, permanently)."""
    if text.strip().lower() == "all":
        return "all"
    return _positive_int(text)


def _fault_spec(text: str) -> tuple[int | str, float | None]:
    """``N`` or ``N:VALUE`` (a status or seconds)."""
    count, _, value = text.partition(":")
    try:
        number = float(value) if value else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N:NUMBER, found {text!r}") from None
    return _fault_count(count), number


def _match_spec(text: str) -> tuple[str, int]:
    """``TEXT`` or ``TEXT:STATUS``."""
    match, sep, status = text.rpartition(":")
    if not sep or not status.isdigit():
        return text, 404
    return match, int(status)


def _timeout_arg(text: str) -> float | tuple[float, float]:
    parts = text.split(",")
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected SECONDS or CONNECT,READ seconds, found {text!r}")
    values = [_seconds(p) for p in parts]
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected timeouts > 0 seconds, found {text!r}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def _build_parser() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logs on stderr and full tracebacks on errors",
    )

    parser = _Parser(
        prog=PROG,
        description="Remote EM volumes through a crash-safe local block cache (lazyflow_rbfs).",
        epilog="Run 'rbfs demo' for a self-contained tour; 'rbfs COMMAND --help' for a command's options.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} (lazyflow_rbfs) {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help_text: str, aliases: Sequence[str] = ()) -> _Parser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common], aliases=aliases)

    def description_arg(p: _Parser) -> None:
        p.add_argument("description", metavar="DESCRIPTION", help="a composite or local description (.json)")

    def roi_option(p: _Parser, required: bool = False, what: str = "default: the whole view") -> None:
        p.add_argument(
            "--roi",
            type=_roi_arg,
            required=required,
            metavar="R",
            help=f"region in view coordinates, slice syntax per axis, e.g. 0:64,0:512,: ({what})",
        )

    def network_options(p: _Parser) -> None:
        p.add_argument(
            "-j", "--max-parallel", type=_positive_int, metavar="N", help="downloads in flight (8)"
        )
        p.add_argument(
            "--timeout", type=_timeout_arg, metavar="S", help="seconds per request, or CONNECT,READ (10,60)"
        )
        p.add_argument("--retries", type=_non_negative_int, metavar="N", help="attempts after the first (3)")
        p.add_argument(
            "--lock-timeout",
            type=_seconds,
            metavar="S",
            help="seconds to wait for a block another process downloads (default: as long as it lives)",
        )

    def progress_options(p: _Parser) -> None:
        group = p.add_mutually_exclusive_group()
        group.add_argument(
            "--progress",
            dest="progress",
            action="store_true",
            default=None,
            help="show a progress bar on stderr (default: only when stderr is a terminal)",
        )
        group.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    p = command("info", "Describe a volume: schema, remote, geometry, blocks and cache.")
    description_arg(p)
    p.set_defaults(func=_cmd_info)

    p = command("prefetch", "Download every missing block of the view or of a roi.", aliases=["download"])
    description_arg(p)
    roi_option(p)
    network_options(p)
    progress_options(p)
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="hand the blocks to a dask.distributed cluster (e.g. tcp://host:8786) whose workers see this "
        "description at the same path and share the cache directory; -j then limits each worker",
    )
    p.add_argument("--batch-size", type=_positive_int, metavar="N", help="blocks per cluster task (64)")
    p.set_defaults(func=_cmd_prefetch)

    p = command("read", "Read a roi through the cache into an .h5 or .npy file (written atomically).")
    description_arg(p)
    roi_option(p, required=True, what="required; ':' per axis for everything")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file, .h5/.hdf5 or .npy")
    p.add_argument("--dataset", metavar="NAME", help="dataset name inside an .h5 output (default 'data')")
    network_options(p)
    p.set_defaults(func=_cmd_read)

    p = command("export", "Export a roi in an upstream format: one HDF5 file, or a blockwise subset fileset.")
    description_arg(p)
    roi_option(p, required=True, what="required")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to export into")
    p.add_argument(
        "--format",
        choices=("single-hdf5", "blockwise-subset"),
        default="single-hdf5",
        help="single-hdf5: exportRoiToHdf5; blockwise-subset: exportSubset (default single-hdf5)",
    )
    network_options(p)
    p.set_defaults(func=_cmd_export)

    p = command("status", "Count available, missing and partial blocks (and their bytes) in the cache.")
    description_arg(p)
    roi_option(p)
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=_cmd_status)

    p = command("verify", "Check every available block; exit 1 if problems remain.")
    description_arg(p)
    roi_option(p)
    p.add_argument(
        "--repair",
        action="store_true",
        help="mark bad blocks missing (the next read downloads them again) and remove stray temp files",
    )
    p.set_defaults(func=_cmd_verify)

    p = command("purge-locks", "Remove stale lock files and temporary files left by killed processes.")
    description_arg(p)
    p.set_defaults(func=_cmd_purge_locks)

    p = command("serve", "Serve an .npy/.h5 volume (or the built-in sample) as a local cutout service.")
    p.add_argument(
        "volume",
        nargs="?",
        metavar="VOLUME",
        help="an .npy file, an .h5 file (with --dataset or a single dataset) or file.h5/dataset "
        "(default: the built-in sample volume)",
    )
    p.add_argument("--dataset", metavar="NAME", help="dataset inside an .h5 VOLUME")
    p.add_argument("--axes", help="axis names of VOLUME, e.g. zyx (default by dimensionality)")
    p.add_argument(
        "--shape", type=_shape_arg, default=(64, 512, 512), help="sample volume shape (64,512,512)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=_non_negative_int, default=0, help="port, 0 picks a free one (0)")
    p.add_argument("--latency", type=_seconds, default=0.0, metavar="S", help="seconds added per response")
    p.add_argument(
        "--describe", metavar="OUT.json", help="write a composite description of the served volume"
    )
    p.add_argument("--block-shape", type=_shape_arg, metavar="Z,Y,X", help="block shape for --describe")
    p.add_argument("--cache-dir", metavar="DIR", help="cache directory (dataset_root_dir) for --describe")
    p.add_argument(
        "--format",
        choices=("hdf5", "npz", "boss", "precomputed"),
        default="hdf5",
        help="remote format of the --describe description; boss and precomputed also switch those APIs "
        "on (zyx volumes) (hdf5)",
    )
    faults = p.add_argument_group(
        "fault injection (N: how many requests, or 'all')",
        "Misbehave on purpose, to see retries, errors and recovery from the client side.",
    )
    faults.add_argument(
        "--fail", type=_fault_spec, metavar="N[:STATUS]", help="answer N requests with STATUS (503)"
    )
    faults.add_argument(
        "--fail-matching",
        type=_match_spec,
        metavar="TEXT[:STATUS]",
        help="answer every request whose path contains TEXT with STATUS (404), permanently",
    )
    faults.add_argument("--truncate", type=_fault_count, metavar="N", help="cut N bodies off halfway")
    faults.add_argument("--html", type=_fault_count, metavar="N", help="answer N requests with an HTML page")
    faults.add_argument(
        "--stall", type=_fault_spec, metavar="N[:SECONDS]", help="hold N responses SECONDS (until Ctrl-C)"
    )
    faults.add_argument(
        "--wrong-shape", type=_fault_count, metavar="N", help="serve N regions of a wrong shape"
    )
    faults.add_argument(
        "--wrong-dtype", type=_fault_count, metavar="N", help="serve N regions in a wrong dtype"
    )
    p.set_defaults(func=_cmd_serve)

    p = command("demo", "A self-contained tour: local server, cold and warm reads, prefetch, statistics.")
    p.add_argument(
        "--dir", metavar="DIR", help="where to write the description and cache (default: a new temp dir)"
    )
    p.add_argument("--shape", type=_shape_arg, default=(64, 512, 512), metavar="Z,Y,X", help="(64,512,512)")
    p.add_argument(
        "--block-shape", type=_shape_arg, default=(32, 128, 128), metavar="Z,Y,X", help="(32,128,128)"
    )
    p.add_argument(
        "-j", "--max-parallel", type=_positive_int, default=8, metavar="N", help="downloads in flight (8)"
    )
    p.add_argument(
        "--latency", type=_seconds, default=0.005, metavar="S", help="server latency per response (0.005)"
    )
    progress_options(p)
    p.set_defaults(func=_cmd_demo)

    p = command(
        "describe", "Write a composite description from a remote volume's metadata (precomputed or Boss)."
    )
    from lazyflow_rbfs.describe import add_describe_arguments

    add_describe_arguments(p)
    p.add_argument(
        "--timeout", type=_timeout_arg, metavar="S", help="seconds per request, or CONNECT,READ (10,60)"
    )
    p.add_argument("--retries", type=_non_negative_int, metavar="N", help="attempts after the first (3)")
    p.set_defaults(func=_cmd_describe)

    p = command("ilastik", "Run ilastik with the lazyflow_rbfs hook installed: rbfs ilastik -- ARGS...")
    p.add_argument("ilastik_args", nargs=argparse.REMAINDER, metavar="ILASTIK_ARGS")
    p.set_defaults(func=_cmd_ilastik)
    return parser


# ---------------------------------------------------------------------------------------------------------
# Opening descriptions


@dataclasses.dataclass
class _Opened:
    kind: str  # "composite" or "local"
    path: str
    description: Any  # composite: the composite namespace; local: the local namespace


def _read_description(path: str) -> _Opened:
    """Parse ``path`` as a composite, else as a local description. Errors here are usage errors (2)."""
    from lazyflow_rbfs import description as _description

    if not os.path.exists(path):
        raise UsageError(f"description file {path!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"expected a description file, found the directory {path!r}")
    try:
        return _Opened("composite", path, _description.read_composite(path))
    except SchemaError as composite_error:
        try:
            return _Opened("local", path, _description.read_local(path))
        except SchemaError:
            raise SchemaError(
                f"{path}: expected a {_COMPOSITE!r} or {_LOCAL!r} description; {composite_error}"
            ) from None
    except OSError as exc:
        raise UsageError(f"cannot read description {path!r}: {exc.strerror or exc}") from None


def _local_description(opened: _Opened) -> Any:
    return opened.description.local_description if opened.kind == "composite" else opened.description


def _network_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {}
    for name in ("max_parallel", "timeout", "retries", "lock_timeout"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    return options


def _open_fileset(args: argparse.Namespace, *, store_only: bool = False) -> tuple[_Opened, Any]:
    """Open the description of ``args``, read-only.

    A composite gives a ``RESTfulBlockwiseFileset`` (with the network options of ``args``), or with
    ``store_only`` just its local block tree as a ``BlockwiseFileset`` (never touching the network); a
    local description gives a ``BlockwiseFileset``.
    """
    opened = _read_description(args.description)
    if opened.kind == "composite" and not store_only:
        from lazyflow_rbfs.cache import RESTfulBlockwiseFileset

        return opened, RESTfulBlockwiseFileset(opened.path, **_network_options(args))
    from lazyflow_rbfs.store import BlockwiseFileset

    return opened, BlockwiseFileset(opened.path, "r", preparsedDescription=_local_description(opened))


def _cache_root(opened: _Opened) -> str:
    local = _local_description(opened)
    root = local.dataset_root_dir or "."
    base = os.path.dirname(os.path.abspath(opened.path))
    return os.path.normpath(os.path.join(base, root))


def _want_progress(args: argparse.Namespace) -> bool:
    if args.progress is not None:
        return bool(args.progress)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


# ---------------------------------------------------------------------------------------------------------
# Commands


def _cmd_describe(args: argparse.Namespace) -> int:
    from lazyflow_rbfs.describe import describe_main

    path = describe_main(args)
    print(f"wrote {path}")
    print(f"next: rbfs info {path}")
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    opened = _read_description(args.description)
    desc = opened.description
    local = _local_description(opened)
    lines: list[tuple[str, str]] = [("description", os.path.abspath(opened.path))]
    if opened.kind == "composite":
        remote = desc.remote_description
        lines.append(("kind", f"{_COMPOSITE} (remote volume + local block cache)"))
        lines.append(("name", str(remote.name or local.name or "")))
        lines.append(("remote format", str(remote.format)))
        lines.append(("remote url", _redact_url(source_url(remote))))
        if remote.hdf5_dataset:
            lines.append(("remote dataset", str(remote.hdf5_dataset)))
        lines.append(
            ("remote shape", f"{_fmt_shape(remote.shape)} (origin offset {_fmt_shape(remote.origin_offset)})")
        )
    else:
        lines.append(("kind", f"{_LOCAL} (local block tree, no remote)"))
        lines.append(("name", str(local.name or "")))
    dtype = np.dtype(local.dtype)
    lines.append(("axes", str(local.axes)))
    lines.append(("dtype", dtype.name))
    lines.append(("shape", f"{_fmt_shape(local.shape)} (on disk)"))
    lines.append(("view", f"origin {_fmt_shape(local.view_origin)}, shape {_fmt_shape(local.view_shape)}"))
    view_shape = np.asarray(local.view_shape, dtype=np.int64)
    block_shape = np.asarray(local.block_shape, dtype=np.int64)
    nblocks = geometry.count_blocks(np.zeros_like(view_shape), view_shape, block_shape)
    grid = np.ceil(view_shape / block_shape).astype(np.int64)
    block_bytes = int(np.prod(block_shape)) * dtype.itemsize
    lines.append(
        ("block shape", f"{_fmt_shape(block_shape)} ({_fmt_bytes(block_bytes)} per block, uncompressed)")
    )
    lines.append(("blocks", f"{nblocks} ({_fmt_shape(grid)})"))
    lines.append(("view size", _fmt_bytes(int(np.prod(view_shape)) * dtype.itemsize) + " uncompressed"))
    lines.append(("compression", str(local.compression or "none")))
    lines.append(("block files", str(local.block_file_name_format)))
    root = _cache_root(opened)
    lines.append(("cache dir", root + ("" if os.path.isdir(root) else " (not created yet)")))
    lines.append(("cache", _cheap_status(opened, nblocks, root)))
    if opened.kind == "composite":
        for advice in remote_advice(desc.remote_description, local):
            lines.append(("advice", advice))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")
    return EXIT_OK


def _cheap_status(opened: _Opened, nblocks: int, root: str) -> str:
    if not os.path.isdir(root):
        return f"empty: 0 of {nblocks} blocks available"
    if nblocks > INFO_STATUS_MAX_BLOCKS:
        return f"{nblocks} blocks; run 'rbfs status {opened.path}' to count the available ones"
    from lazyflow_rbfs.store import BlockwiseFileset

    with BlockwiseFileset(opened.path, "r", preparsedDescription=_local_description(opened)) as fs:
        summary = fs.statusSummary()
    text = (
        f"{summary.available} of {summary.total} blocks available "
        f"({100.0 * summary.available / max(summary.total, 1):.0f}%, {_fmt_bytes(summary.available_bytes)})"
    )
    return text + (f", {summary.partial} partial" if summary.partial else "")


def _cmd_prefetch(args: argparse.Namespace) -> int:
    opened, fs = _open_fileset(args)
    with contextlib.closing(fs):
        if opened.kind != "composite":
            raise UsageError(
                f"{opened.path} is a local {_LOCAL!r}: there is nothing to download; "
                f"prefetch needs a {_COMPOSITE!r}"
            )
        start, stop = resolve_roi(args.roi, fs.description.view_shape, fs.description.axes)
        if args.scheduler:
            try:
                import distributed  # noqa: F401
            except ImportError as exc:
                raise UsageError(
                    "--scheduler needs dask.distributed: pip install 'lazyflow_rbfs[distributed]'"
                ) from exc
        from lazyflow_rbfs.cache import PrefetchInterrupted

        try:
            report = fs.downloadAllBlocks(
                args.max_parallel,
                roi=(start, stop),
                progress=_want_progress(args),
                raise_on_failure=False,
                scheduler=args.scheduler or None,
                batch_size=args.batch_size,
            )
        except PrefetchInterrupted as exc:  # leaving the with-block closes the fileset: no waiting
            r = exc.report
            raise _Interrupted(
                f"prefetch interrupted after {r.seconds:.1f} s: {r.done} of {r.total} blocks done "
                f"({r.downloaded} downloaded, {r.skipped} already cached, {len(r.failed)} failed); "
                f"{r.total - r.done} not fetched (run it again to go on)"
            ) from None
        print(report.summary())
        if not args.scheduler:  # on a cluster the requests are made by the workers
            stats = fs.remote.stats
            seconds = max(report.seconds, 1e-9)
            print(
                f"{stats.requests} requests, {_fmt_bytes(stats.bytes_received)} received, "
                f"{stats.bytes_received / seconds / 1e6:.1f} MB/s"
            )
        if report.failed:
            raise _Failure(
                f"{len(report.failed)} of {report.total} blocks failed to download; first: block "
                f"{list(report.failed[0])}: {report.errors.get(report.failed[0], '?')}"
            )
    return EXIT_OK


def _slabs(start: np.ndarray, stop: np.ndarray, block_size: int, max_rows: int) -> Iterator[tuple]:
    """Split ``(start, stop)`` along axis 0 into slabs that end on block boundaries (multiples of
    ``block_size``) or at ``stop``, each at most ``max_rows`` thick unless a single block row is thicker."""
    z = int(start[0])
    end = int(stop[0])
    while z < end:
        z_end = min(end, (z // block_size + 1) * block_size)
        while z_end < end and min(end, z_end + block_size) - z <= max_rows:
            z_end = min(end, z_end + block_size)
        s, e = start.copy(), stop.copy()
        s[0], e[0] = z, z_end
        yield s, e
        z = z_end


def _cmd_read(args: argparse.Namespace) -> int:
    out = args.output
    ext = os.path.splitext(out)[1].lower()
    if ext not in (".h5", ".hdf5", ".hdf", ".npy"):
        raise UsageError(f"expected an output file ending in .h5, .hdf5 or .npy, found {out!r}")
    if ext == ".npy" and args.dataset:
        raise UsageError("--dataset applies to HDF5 outputs only, not to .npy")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"output directory {out_dir!r} does not exist")
    opened, fs = _open_fileset(args)
    with contextlib.closing(fs):
        desc = fs.description
        start, stop = resolve_roi(args.roi, desc.view_shape, desc.axes)
        shape = tuple(int(n) for n in stop - start)
        dtype = np.dtype(desc.dtype)
        plane_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        slabs = list(_slabs(start, stop, int(desc.block_shape[0]), READ_SLAB_BYTES // max(plane_bytes, 1)))
        tmp = os.path.join(out_dir, f".{os.path.basename(out)}.{os.getpid()}.{secrets.token_hex(4)}.partial")
        t0 = time.monotonic()
        try:
            if ext == ".npy":
                array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
                for s, e in slabs:
                    array[int(s[0] - start[0]) : int(e[0] - start[0])] = fs.readData((s, e))
                array.flush()
                del array
            else:
                import h5py

                name = args.dataset or "data"
                with h5py.File(tmp, "w") as f:
                    chunks = tuple(int(min(c, n)) for c, n in zip(desc.block_shape, shape))
                    ds = f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)
                    for s, e in slabs:
                        ds[int(s[0] - start[0]) : int(e[0] - start[0])] = fs.readData((s, e))
                    ds.attrs["axes"] = str(desc.axes)
                    ds.attrs["roi_start"] = start
                    ds.attrs["roi_stop"] = stop
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        seconds = time.monotonic() - t0
    nbytes = int(np.prod(shape)) * dtype.itemsize
    where = out if ext == ".npy" else f"{out}/{args.dataset or 'data'}"
    print(
        f"wrote {_fmt_shape(shape)} {dtype.name} ({_fmt_bytes(nbytes)}) "
        f"of roi {format_roi(start, stop)} to {where}"
    )
    if opened.kind == "composite":
        print(f"{fs.blocks_downloaded} blocks downloaded in {seconds:.1f} s")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    out_dir = args.output
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"expected an output directory, found the file {out_dir!r}")
    opened, fs = _open_fileset(args)
    with contextlib.closing(fs):
        desc = fs.description
        start, stop = resolve_roi(args.roi, desc.view_shape, desc.axes)
        os.makedirs(out_dir, exist_ok=True)
        if args.format == "single-hdf5":
            result = fs.exportRoiToHdf5((start, stop), out_dir)
        else:
            bs = np.asarray(desc.block_shape, dtype=np.int64)
            if (start % bs).any() or ((stop % bs != 0) & (stop != np.asarray(desc.view_shape))).any():
                raise UsageError(
                    f"--format blockwise-subset needs a roi on block boundaries (block shape "
                    f"{_fmt_shape(bs)}), found {format_roi(start, stop)}"
                )
            if opened.kind == "composite":
                # exportSubset copies the cached blocks: make sure the roi's blocks are all there.
                fs.downloadAllBlocks(roi=(start, stop), progress=False)
            result = fs.exportSubset((start, stop), out_dir)
    target = result if isinstance(result, (str, os.PathLike)) else out_dir
    print(f"exported roi {format_roi(start, stop)} ({args.format}) to {os.fspath(target)}")
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    opened, fs = _open_fileset(args, store_only=True)
    with contextlib.closing(fs):
        start, stop = resolve_roi(args.roi, fs.description.view_shape, fs.description.axes)
        summary = fs.statusSummary(roi=(start, stop))
    counts = {
        "total": int(summary.total),
        "available": int(summary.available),
        "partial": int(summary.partial),
        "missing": int(summary.missing),
        "available_bytes": int(summary.available_bytes),
    }
    if args.json:
        payload = {"description": os.path.abspath(opened.path), "roi": format_roi(start, stop)}
        payload.update(counts)
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    total = max(counts["total"], 1)
    print(f"roi {format_roi(start, stop)} of {os.path.abspath(opened.path)}: {counts['total']} blocks")
    print(
        f"  available: {counts['available']} ({100.0 * counts['available'] / total:.0f}%), "
        f"{_fmt_bytes(counts['available_bytes'])} on disk"
    )
    print(f"  partial:   {counts['partial']} (block or temp file without STATUS.txt)")
    print(f"  missing:   {counts['missing']}")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    opened, fs = _open_fileset(args, store_only=True)
    with contextlib.closing(fs):
        start, stop = resolve_roi(args.roi, fs.description.view_shape, fs.description.axes)
        report = fs.verify(repair=args.repair, roi=(start, stop))
    print(f"checked {report.checked} available blocks of roi {format_roi(start, stop)}")
    for bad in report.bad_blocks[:20]:
        print(f"  bad block {list(bad.block_start)}: {bad.reason} ({bad.path})")
    if len(report.bad_blocks) > 20:
        print(f"  ... and {len(report.bad_blocks) - 20} more bad blocks")
    for path in report.stray_partials[:20]:
        print(f"  stray temp file: {path}")
    if len(report.stray_partials) > 20:
        print(f"  ... and {len(report.stray_partials) - 20} more stray temp files")
    found = len(report.bad_blocks) + len(report.stray_partials)
    if args.repair:
        print(f"repair: removed {len(report.removed)} files; bad blocks will be downloaded again when read")
        for block_start in report.skipped_locked:
            print(f"  not repaired (locked by another process): block {list(block_start)}")
        if report.skipped_locked:
            raise _Failure(
                f"{len(report.skipped_locked)} blocks could not be repaired because another process holds "
                f"their lock; run 'rbfs verify --repair' again later"
            )
        print("OK" if found == 0 else f"OK: {found} problems repaired")
        return EXIT_OK
    if found:
        raise _Failure(
            f"{len(report.bad_blocks)} bad blocks and {len(report.stray_partials)} stray temp files; "
            f"run 'rbfs verify --repair {opened.path}' to fix"
        )
    print("OK")
    return EXIT_OK


def _cmd_purge_locks(args: argparse.Namespace) -> int:
    opened, fs = _open_fileset(args, store_only=True)
    with contextlib.closing(fs):
        removed = fs.purgeAllLocks()
    print(f"removed {int(removed)} stale lock/temporary file{'s' if removed != 1 else ''}")
    return EXIT_OK


def _default_block_shape(shape: Sequence[int]) -> tuple[int, ...]:
    n = len(shape)
    return tuple(int(min(s, 128 if i >= n - 2 else 32)) for i, s in enumerate(shape))


def _load_serve_volume(args: argparse.Namespace) -> tuple[Any, int]:
    """What ``rbfs serve`` hands to CutoutServer (an array, an .npy memmap or ``file.h5/dataset``) and
    its number of axes."""
    from lazyflow_rbfs.server import sample_volume

    if args.volume is None:
        if args.dataset:
            raise UsageError("--dataset needs a VOLUME")
        return sample_volume(args.shape), len(args.shape)
    path, dataset = args.volume, args.dataset
    lower = path.lower()
    match = re.search(r"\.(h5|hdf5|hdf)/", lower)
    if match is not None and dataset is None:
        path, dataset = path[: match.end() - 1], path[match.end() :]
        lower = path.lower()
    if not os.path.isfile(path):
        raise UsageError(f"volume file {path!r} does not exist")
    if lower.endswith(".npy"):
        if dataset:
            raise UsageError("--dataset applies to HDF5 volumes only, not to .npy")
        volume = np.load(path, mmap_mode="r")
        return volume, volume.ndim
    if not lower.endswith((".h5", ".hdf5", ".hdf")):
        raise UsageError(f"expected an .npy or .h5 VOLUME, found {path!r}")
    import h5py

    with h5py.File(path, "r") as f:
        if dataset:
            if not isinstance(f.get(dataset), h5py.Dataset):
                raise UsageError(f"{path} has no dataset {dataset!r}")
        else:
            names: list[str] = []
            f.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
            if len(names) != 1:
                raise UsageError(
                    f"{path} holds {len(names)} datasets ({', '.join(names[:5]) or 'none'}): "
                    f"choose one with --dataset"
                )
            dataset = names[0]
        ndim = f[dataset].ndim
    return f"{path}/{dataset.strip('/')}", ndim


def _cmd_serve(args: argparse.Namespace) -> int:
    from lazyflow_rbfs.server import CutoutServer

    if args.describe is None and (args.block_shape or args.cache_dir):
        raise UsageError("--block-shape and --cache-dir go with --describe")
    volume, ndim = _load_serve_volume(args)
    axes = args.axes or _DEFAULT_AXES.get(ndim)
    if axes is None:
        raise UsageError(f"the volume has {ndim} axes: name them with --axes")
    apis: dict[str, Any] = {}
    if args.format in ("boss", "precomputed"):
        if axes != "zyx":
            raise UsageError(f"--format {args.format} serves zyx volumes; this one has axes {axes!r}")
        from lazyflow_rbfs.server import BossSettings, PrecomputedSettings

        apis = {"boss": BossSettings()} if args.format == "boss" else {"precomputed": PrecomputedSettings()}
    try:
        server = CutoutServer(volume, axes=axes, host=args.host, port=args.port, latency=args.latency, **apis)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with server:
        print(f"serving {_fmt_shape(server.shape)} {server.dtype.name} ({server.axes}) at {server.url}")
        print(f"url_format: {server.url_format}")
        if args.format == "precomputed":
            print(f"precomputed: {server.precomputed_url}")
        for line in _install_faults(server, args):
            print(f"fault: {line}")
        if args.describe:
            block_shape = args.block_shape or _default_block_shape(server.shape)
            if len(block_shape) != len(server.shape):
                raise UsageError(
                    f"--block-shape has {len(block_shape)} entries, "
                    f"but the volume has {len(server.shape)} axes"
                )
            server.write_description(
                args.describe, block_shape=block_shape, cache_dir=args.cache_dir, format=args.format
            )
            print(f"description: {os.path.abspath(args.describe)}")
            print(f"try: rbfs info {args.describe}")
        print("press Ctrl-C to stop", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print(f"stopped after {server.requests} requests", flush=True)
    return EXIT_OK


def _install_faults(server: Any, args: argparse.Namespace) -> list[str]:
    """Add the fault rules asked for on the command line; return a line describing each."""
    faults = server.faults
    lines = []

    def many(count: int | str) -> str:
        return "every request" if count == "all" else f"the next {count} request(s)"

    def n(count: int | str) -> int | None:  # the server's count: None is "permanently"
        return None if count == "all" else int(count)

    if args.fail:
        count, status = args.fail
        faults.fail_next(n(count), int(status or 503))
        lines.append(f"HTTP {int(status or 503)} for {many(count)}")
    if args.fail_matching:
        match, status = args.fail_matching
        faults.fail_matching(match, status)
        lines.append(f"HTTP {status} for every path containing {match!r}")
    for name, method, what in (
        ("truncate", faults.truncate, "bodies cut off halfway"),
        ("html", faults.html, "an HTML page with status 200"),
        ("wrong_shape", faults.wrong_shape, "regions of the wrong shape"),
        ("wrong_dtype", faults.wrong_dtype, "regions in the wrong dtype"),
    ):
        value = getattr(args, name)
        if value is not None:
            method(n(value))
            lines.append(f"{what} for {many(value)}")
    if args.stall:
        count, seconds = args.stall
        faults.stall(n(count), seconds=seconds)
        held = "until Ctrl-C" if seconds is None else f"{seconds:g} s"
        lines.append(f"responses held {held} for {many(count)}")
    return lines


def _cmd_demo(args: argparse.Namespace) -> int:
    from lazyflow_rbfs.cache import RESTfulBlockwiseFileset
    from lazyflow_rbfs.server import CutoutServer, sample_volume

    shape = tuple(args.shape)
    if len(args.block_shape) != len(shape):
        raise UsageError(f"--block-shape has {len(args.block_shape)} entries, --shape has {len(shape)}")
    if len(shape) not in _DEFAULT_AXES:
        raise UsageError(f"--shape must have 1 to 5 axes, found {len(shape)}")
    block_shape = tuple(min(b, s) for b, s in zip(args.block_shape, shape))
    directory = args.dir or tempfile.mkdtemp(prefix="rbfs-demo-")
    cache_dir = os.path.join(directory, "cache")
    if os.path.isdir(cache_dir) and os.listdir(cache_dir):
        raise UsageError(
            f"{cache_dir} already holds a cache, so the demo could not show a cold read: "
            f"choose another --dir or delete it"
        )
    os.makedirs(directory, exist_ok=True)
    description_path = os.path.join(directory, "volume.json")

    t0 = time.monotonic()
    source = sample_volume(shape)
    print(
        f"sample volume: {_fmt_shape(shape)} {source.dtype.name} ({_fmt_bytes(source.nbytes)}), "
        f"made in {time.monotonic() - t0:.1f} s"
    )
    with CutoutServer(source, axes=_DEFAULT_AXES[len(shape)], latency=args.latency) as server:
        server.write_description(description_path, block_shape=block_shape, cache_dir="cache", name="demo")
        print(f"server: {server.url} (latency {args.latency * 1000:.0f} ms per response)")
        print(f"description: {description_path}")
        with RESTfulBlockwiseFileset(description_path, max_parallel=args.max_parallel) as vol:
            nblocks = geometry.count_blocks(
                np.zeros(len(shape), np.int64), np.array(shape), np.array(block_shape)
            )
            print(f"cache: {_fmt_shape(block_shape)} blocks, {nblocks} in all, in {cache_dir}")
            start = np.array([s // 4 for s in shape], dtype=np.int64)
            stop = np.array([s // 4 + max(1, s // 2) for s in shape], dtype=np.int64)
            roi = format_roi(start, stop)
            expected = source[geometry.to_slices(start, stop)]

            t = time.monotonic()
            cold = vol.readData((start, stop))
            cold_s = time.monotonic() - t
            cold_requests, cold_blocks = server.requests, vol.blocks_downloaded
            t = time.monotonic()
            warm = vol.readData((start, stop))
            warm_s = time.monotonic() - t
            warm_requests = server.requests - cold_requests
            if not (np.array_equal(cold, expected) and np.array_equal(warm, expected)):
                raise _Failure(f"the data read for roi {roi} differs from the served volume")
            print(
                f"read {roi} cold: {cold_s * 1000:.0f} ms, {cold_requests} requests, {cold_blocks} blocks "
                f"downloaded; data equals the source"
            )
            print(
                f"read {roi} warm: {warm_s * 1000:.0f} ms, {warm_requests} requests "
                f"({cold_s / max(warm_s, 1e-6):.0f}x faster)"
            )

            before_requests, before_bytes = server.requests, vol.remote.stats.bytes_received
            report = vol.downloadAllBlocks(progress=_want_progress(args), raise_on_failure=False)
            print(f"prefetch: {report.summary()}")
            if report.failed:
                raise _Failure(f"prefetch failed for {len(report.failed)} blocks")
            stats = vol.remote.stats
            prefetched = stats.bytes_received - before_bytes
            print(
                f"prefetch: {server.requests - before_requests} requests, {_fmt_bytes(prefetched)} received, "
                f"{prefetched / max(report.seconds, 1e-9) / 1e6:.1f} MB/s with {args.max_parallel} in flight"
            )
            whole = vol.readData((np.zeros(len(shape), np.int64), np.array(shape, np.int64)))
            if not np.array_equal(whole, source):
                raise _Failure("the prefetched volume differs from the served volume")
            once = (
                "each exactly once" if server.requests == nblocks == vol.blocks_downloaded else "some twice"
            )
            print(
                f"total: {server.requests} requests, {_fmt_bytes(stats.bytes_received)} received, "
                f"{vol.blocks_downloaded} of {nblocks} blocks downloaded ({once}); "
                f"the whole cached volume equals the source"
            )
    print("the server has stopped, but every block is cached: these work offline now")
    print(f"  rbfs info {description_path}")
    print(f"  rbfs status {description_path}")
    print(f"  rbfs read {description_path} --roi {roi} -o {os.path.join(directory, 'roi.h5')}")
    print(f"  rbfs verify {description_path}")
    print("and against a live server (new port, fresh cache):")
    print(f"  rbfs serve --describe {os.path.join(directory, 'live.json')} --cache-dir live-cache")
    return EXIT_OK


def _cmd_ilastik(args: argparse.Namespace) -> int:
    forwarded = list(args.ilastik_args)
    if forwarded[:1] == ["--"]:
        forwarded = forwarded[1:]
    return _run_ilastik(forwarded)


def _run_ilastik(forwarded: list[str]) -> int:
    try:
        _ilastik = importlib.import_module("lazyflow_rbfs.ilastik")
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available here"
        logger.debug("importing lazyflow_rbfs.ilastik failed", exc_info=True)
        raise _Unavailable(f"the ilastik integration is not available: {type(exc).__name__}: {exc}") from exc
    result = _ilastik.main(forwarded)
    return int(result or 0)


# ---------------------------------------------------------------------------------------------------------
# Logging, errors and the entry point


class _QuietFilter(logging.Filter):
    """Without -v: keep per-block warnings and urllib3's retry notices off the terminal.

    The commands summarise those themselves (``prefetch`` counts failed blocks and shows the first error,
    ``verify`` lists bad blocks, ``purge-locks`` counts removed files), so an error stays one line;
    ``-v`` shows everything.
    """

    _SUMMARISED = ("urllib3", "lazyflow_rbfs.cache", "lazyflow_rbfs.store")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        return not any(record.name == n or record.name.startswith(n + ".") for n in self._SUMMARISED)


@contextlib.contextmanager
def _logging(verbose: bool) -> Iterator[None]:
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(_QuietFilter())
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, (UsageError, SchemaError, DescriptionError, OutOfBoundsError)):
        return EXIT_USAGE
    return EXIT_FAILURE


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, (UsageError, _Failure, RbfsError)):
        return _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, OSError):
        return _one_line(str(exc))
    return _one_line(f"unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)")


def _split_ilastik(argv: list[str]) -> list[str] | None:
    """``rbfs [-v] ilastik ARGS...``: return ARGS untouched by argparse, else ``None``."""
    for i, token in enumerate(argv):
        if token == "ilastik":
            rest = argv[i + 1 :]
            return rest[1:] if rest[:1] == ["--"] else rest
        if token not in ("-v", "--verbose"):
            return None
    return None


def _interrupted_text(exc: KeyboardInterrupt, args: argparse.Namespace | None) -> str:
    if isinstance(exc, _Interrupted):
        return str(exc)
    if args is not None and getattr(args, "func", None) is _cmd_read:
        return f"read interrupted: {args.output} was not written (blocks already downloaded stay cached)"
    return "interrupted"


def _on_second_interrupt(signum: int, frame: Any) -> None:
    # A second Ctrl-C while the first one is still shutting down: leave now.
    os.write(2, f"{PROG}: interrupted again; exiting now\n".encode())
    os._exit(EXIT_INTERRUPTED)


def _on_first_interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, _on_second_interrupt)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupt_handling() -> Iterator[None]:
    """First Ctrl-C: ``KeyboardInterrupt`` (stop promptly); a second one exits at once with status 130.

    Only when ``main`` runs in the main thread and SIGINT has Python's default handler (an embedding
    program keeps its own).
    """
    install = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if install:
        signal.signal(signal.SIGINT, _on_first_interrupt)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rbfs`` command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    if _split_ilastik(list(sys.argv[1:] if argv is None else argv)) is not None:
        return _main(argv)  # ilastik handles its own signals
    with _interrupt_handling():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    # Until the arguments are parsed (and for ilastik's, which are not), guess -v from the words.
    verbose = any(a in ("-v", "--verbose") for a in argv[: (argv.index("--") if "--" in argv else len(argv))])
    try:
        ilastik_args = _split_ilastik(argv)
        if ilastik_args is not None:
            with _logging(verbose):
                return _run_ilastik(ilastik_args)
        parser = _build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        verbose = bool(getattr(args, "verbose", False))  # given before or after COMMAND, else absent
        with _logging(verbose):
            return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt as exc:
        if verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"{PROG}: {_interrupted_text(exc, args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        if verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"{PROG}: error: {_error_text(exc)}", file=sys.stderr)
        return _exit_code(exc)
    finally:
        sys.stdout.flush()
