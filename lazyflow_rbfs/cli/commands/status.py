"""``rbfs info``, ``status``, ``verify`` and ``purge-locks``: what a cache holds, and its upkeep.

None of them touches the network: a composite description's cache is opened as its local block tree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lazyflow_rbfs import geometry
from lazyflow_rbfs.cli.args import AddCommand, add_description_arg, add_roi_option, format_roi, resolve_roi
from lazyflow_rbfs.cli.commands.cache import footprint_lines, sized
from lazyflow_rbfs.cli.exits import EXIT_OK, Failure
from lazyflow_rbfs.cli.opening import (
    COMPOSITE,
    LOCAL,
    Opened,
    cache_root,
    local_description,
    open_fileset,
    read_description,
)
from lazyflow_rbfs.cli.text import fmt_bytes, fmt_shape, redact_url
from lazyflow_rbfs.remote import remote_advice, source_url

__all__ = ["add_info", "add_status", "add_verify", "add_purge_locks"]

#: ``rbfs info`` counts cached blocks only up to this many blocks (``rbfs status`` always does).
INFO_STATUS_MAX_BLOCKS = 4096


def add_info(command: AddCommand) -> None:
    p = command("info", "Describe a volume: schema, remote, geometry, blocks and cache.")
    add_description_arg(p)
    p.set_defaults(func=_cmd_info)


def add_status(command: AddCommand) -> None:
    p = command("status", "Count available, missing and partial blocks (and their bytes) in the cache.")
    add_description_arg(p)
    add_roi_option(p)
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=_cmd_status)


def add_verify(command: AddCommand) -> None:
    p = command("verify", "Check every available block; exit 1 if problems remain.")
    add_description_arg(p)
    add_roi_option(p)
    p.add_argument(
        "--repair",
        action="store_true",
        help="mark bad blocks missing (the next read downloads them again) and remove stray temp files",
    )
    p.add_argument(
        "--deep",
        action="store_true",
        help="also read every voxel of every block (finds damage inside the data, e.g. after a power loss)",
    )
    p.set_defaults(func=_cmd_verify)


def add_purge_locks(command: AddCommand) -> None:
    p = command("purge-locks", "Remove stale lock files and temporary files left by killed processes.")
    add_description_arg(p)
    p.set_defaults(func=_cmd_purge_locks)


def _cmd_info(args: argparse.Namespace) -> int:
    opened = read_description(args.description)
    desc = opened.description
    local = local_description(opened)
    lines: list[tuple[str, str]] = [("description", os.path.abspath(opened.path))]
    if opened.kind == "composite":
        remote = desc.remote_description
        lines.append(("kind", f"{COMPOSITE} (remote volume + local block cache)"))
        lines.append(("name", str(remote.name or local.name or "")))
        lines.append(("remote format", str(remote.format)))
        lines.append(("remote url", redact_url(source_url(remote))))
        if remote.hdf5_dataset:
            lines.append(("remote dataset", str(remote.hdf5_dataset)))
        lines.append(
            ("remote shape", f"{fmt_shape(remote.shape)} (origin offset {fmt_shape(remote.origin_offset)})")
        )
    else:
        lines.append(("kind", f"{LOCAL} (local block tree, no remote)"))
        lines.append(("name", str(local.name or "")))
    dtype = np.dtype(local.dtype)
    lines.append(("axes", str(local.axes)))
    lines.append(("dtype", dtype.name))
    lines.append(("shape", f"{fmt_shape(local.shape)} (on disk)"))
    lines.append(("view", f"origin {fmt_shape(local.view_origin)}, shape {fmt_shape(local.view_shape)}"))
    view_shape = np.asarray(local.view_shape, dtype=np.int64)
    block_shape = np.asarray(local.block_shape, dtype=np.int64)
    nblocks = geometry.count_blocks(np.zeros_like(view_shape), view_shape, block_shape)
    grid = np.ceil(view_shape / block_shape).astype(np.int64)
    block_bytes = int(np.prod(block_shape)) * dtype.itemsize
    lines.append(
        ("block shape", f"{fmt_shape(block_shape)} ({fmt_bytes(block_bytes)} per block, uncompressed)")
    )
    lines.append(("blocks", f"{nblocks} ({fmt_shape(grid)})"))
    lines.append(("view size", fmt_bytes(int(np.prod(view_shape)) * dtype.itemsize) + " uncompressed"))
    lines.append(("compression", str(local.compression or "none")))
    lines.append(("block files", str(local.block_file_name_format)))
    root = cache_root(opened)
    lines.append(("cache dir", root + ("" if os.path.isdir(root) else " (not created yet)")))
    lines.append(("cache", _cheap_status(opened, nblocks, root)))
    if opened.kind == "composite":
        for advice in remote_advice(desc.remote_description, local):
            lines.append(("advice", advice))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")
    return EXIT_OK


def _cheap_status(opened: Opened, nblocks: int, root: str) -> str:
    if not os.path.isdir(root):
        return f"empty: 0 of {nblocks} blocks available"
    if nblocks > INFO_STATUS_MAX_BLOCKS:
        return f"{nblocks} blocks; run 'rbfs status {opened.path}' to count the available ones"
    from lazyflow_rbfs.store import BlockwiseFileset

    with BlockwiseFileset(opened.path, "r", preparsedDescription=local_description(opened)) as fs:
        summary = fs.statusSummary()
    text = (
        f"{summary.available} of {summary.total} blocks available "
        f"({100.0 * summary.available / max(summary.total, 1):.0f}%, {fmt_bytes(summary.available_bytes)})"
    )
    return text + (f", {summary.partial} partial" if summary.partial else "")


def _cmd_status(args: argparse.Namespace) -> int:
    opened, fs = open_fileset(args, store_only=True)
    with contextlib.closing(fs):
        start, stop = resolve_roi(args.roi, fs.description.view_shape, fs.description.axes)
        summary = fs.statusSummary(roi=(start, stop))
        cache = footprint_lines(opened, fs)
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
        payload.update(cache)
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    total = max(counts["total"], 1)
    print(f"roi {format_roi(start, stop)} of {os.path.abspath(opened.path)}: {counts['total']} blocks")
    print(
        f"  available: {counts['available']} ({100.0 * counts['available'] / total:.0f}%), "
        f"{fmt_bytes(counts['available_bytes'])} on disk"
    )
    print(f"  partial:   {counts['partial']} (block or temp file without STATUS.txt)")
    print(f"  missing:   {counts['missing']}")
    if cache:
        limit = cache["max_cache_bytes"]
        print(
            f"cache {cache['cache_dir']}: {sized(cache['footprint_bytes'])} in {cache['footprint_blocks']} "
            f"block files; limit {'none' if limit is None else sized(limit)}"
        )
        age = cache["lru_age_seconds"]
        print(f"  least recently used block: {'none' if age is None else _age(age) + ' ago'}")
    return EXIT_OK


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _cmd_verify(args: argparse.Namespace) -> int:
    opened, fs = open_fileset(args, store_only=True)
    with contextlib.closing(fs):
        start, stop = resolve_roi(args.roi, fs.description.view_shape, fs.description.axes)
        report = fs.verify(repair=args.repair, roi=(start, stop), deep=args.deep)
    print(f"checked {report.checked} available blocks of roi {format_roi(start, stop)}")
    _print_some(
        report.bad_blocks,
        lambda bad: f"bad block {list(bad.block_start)}: {bad.reason} ({bad.path})",
        "bad blocks",
    )
    _print_some(report.stray_partials, lambda path: f"stray temp file: {path}", "stray temp files")
    links = report.links
    _print_some(
        links, lambda path: f"symbolic link planted in the cache (never followed): {path}", "symbolic links"
    )
    found = len(report.bad_blocks) + len(report.stray_partials) + len(links)
    if args.repair:
        print(f"repair: removed {len(report.removed)} files; bad blocks will be downloaded again when read")
        for block_start in report.skipped_locked:
            print(f"  not repaired (locked by another process): block {list(block_start)}")
        if report.skipped_locked:
            raise Failure(
                f"{len(report.skipped_locked)} blocks could not be repaired because another process holds "
                f"their lock; run 'rbfs verify --repair' again later"
            )
        print("OK" if found == 0 else f"OK: {found} problems repaired")
        return EXIT_OK
    if found:
        raise Failure(
            f"{len(report.bad_blocks)} bad blocks, {len(report.stray_partials)} stray temp files and "
            f"{len(links)} planted symbolic links; run 'rbfs verify --repair {opened.path}' to fix"
        )
    print("OK")
    return EXIT_OK


def _print_some(items: Sequence[Any], line: Callable[[Any], str], what: str, limit: int = 20) -> None:
    """One indented line per item, the first ``limit`` of them, then how many ``what`` were left out."""
    for item in items[:limit]:
        print(f"  {line(item)}")
    if len(items) > limit:
        print(f"  ... and {len(items) - limit} more {what}")


def _cmd_purge_locks(args: argparse.Namespace) -> int:
    opened, fs = open_fileset(args, store_only=True)
    with contextlib.closing(fs):
        removed = fs.purgeAllLocks()
    print(f"removed {int(removed)} stale lock/temporary file{'s' if removed != 1 else ''}")
    return EXIT_OK
