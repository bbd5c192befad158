"""``rbfs gc`` and ``rbfs purge``: keep a cache root within its size bound, drop the blocks of a region.

Neither touches the network: the cache is opened as its local block tree.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from typing import Any

from lazyflow_rbfs.cli.args import (
    AddCommand,
    add_cache_size_option,
    add_description_arg,
    add_roi_option,
    format_roi,
    resolve_roi,
)
from lazyflow_rbfs.cli.exits import EXIT_OK, UsageError
from lazyflow_rbfs.cli.opening import COMPOSITE, local_description, open_fileset
from lazyflow_rbfs.cli.text import fmt_bytes

__all__ = ["add_gc", "add_purge", "footprint_lines"]


def add_gc(command: AddCommand) -> None:
    p = command("gc", "Evict least recently read blocks now until the cache fits its size limit.")
    add_description_arg(p)
    add_cache_size_option(
        p, "the bound to evict down to (500M, 50G, 2T; default: the description's max_cache_bytes)"
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be evicted, remove nothing")
    p.set_defaults(func=_cmd_gc)


def add_purge(command: AddCommand) -> None:
    p = command("purge", "Drop the cached blocks of a region (the next read downloads them again).")
    add_description_arg(p)
    add_roi_option(p, required=True, what="required; ':' per axis for everything")
    p.set_defaults(func=_cmd_purge)


def _limit(opened: Any, fs: Any, track_use: bool = False) -> Any:
    from lazyflow_rbfs.cache.limit import CacheLimit

    if opened.kind != "composite":
        raise UsageError(
            f"{opened.path} is a local fileset, not a cache: its blocks are never evicted; "
            f"gc and purge need a {COMPOSITE!r}"
        )
    return CacheLimit(fs.blocks, local_description(opened).max_cache_bytes, track_use=track_use)


def sized(n: int) -> str:
    return f"{fmt_bytes(n)} ({n} bytes)"


def _cmd_gc(args: argparse.Namespace) -> int:
    opened, fs = open_fileset(args, store_only=True)
    with contextlib.closing(fs):
        limit = _limit(opened, fs)
        target = args.max_cache_size if args.max_cache_size is not None else limit.limit
        if target is None:
            raise UsageError(
                f"no size limit: give --max-cache-size SIZE, or set max_cache_bytes in {opened.path}'s "
                "local_description"
            )
        report = limit.gc(target, dry_run=args.dry_run)
    if args.dry_run:
        for entry in report.planned[:20]:
            print(f"  would evict {entry.paths.file_path} ({sized(entry.size)})")
        if len(report.planned) > 20:
            print(f"  ... and {len(report.planned) - 20} more blocks")
        print(
            f"dry run: would evict {report.evicted} blocks ({sized(report.evicted_bytes)}): footprint "
            f"{sized(report.before)} -> {sized(report.after)}, limit {sized(target)}"
        )
        return EXIT_OK
    print(
        f"evicted {report.evicted} least recently read blocks ({sized(report.evicted_bytes)}): footprint "
        f"{sized(report.before)} -> {sized(report.after)}, limit {sized(target)}"
    )
    if report.skipped_locked:
        print(f"  {report.skipped_locked} blocks left alone: being written or repaired by another process")
    return EXIT_OK


def _cmd_purge(args: argparse.Namespace) -> int:
    opened, fs = open_fileset(args, store_only=True)
    with contextlib.closing(fs):
        limit = _limit(opened, fs)
        start, stop = resolve_roi(args.roi, fs.description.view_shape, fs.description.axes)
        report = limit.purge((start, stop))
    print(
        f"purged {report.evicted} blocks ({sized(report.evicted_bytes)}) of roi {format_roi(start, stop)}: "
        f"footprint {sized(report.before)} -> {sized(report.after)}"
    )
    return EXIT_OK


def footprint_lines(opened: Any, fs: Any) -> dict[str, Any]:
    """The cache's footprint, limit and the age of its least recently used block, for ``rbfs status``."""
    if opened.kind != "composite":
        return {}
    limit = _limit(opened, fs)
    fp = limit.footprint()
    oldest_use_ns = limit.oldest_use_ns()
    age = None if oldest_use_ns is None else max(time.time() - oldest_use_ns / 1e9, 0.0)
    return {
        "footprint_bytes": fp.bytes,
        "footprint_blocks": fp.blocks,
        "max_cache_bytes": fp.limit,
        "lru_age_seconds": age,
        "cache_dir": os.path.abspath(fs.root_directory),
    }
