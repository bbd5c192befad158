"""``rbfs prefetch`` (alias ``download``): download every missing block of the view or of a roi."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from lazyflow_rbfs import geometry
from lazyflow_rbfs.cache import PrefetchInterrupted
from lazyflow_rbfs.cli.args import (
    AddCommand,
    add_description_arg,
    add_network_options,
    add_progress_options,
    add_roi_option,
    non_negative_int,
    positive_int,
    resolve_roi,
    scheduler_arg,
    seconds_arg,
)
from lazyflow_rbfs.cli.exits import EXIT_OK, Failure, Interrupted, UsageError
from lazyflow_rbfs.cli.opening import COMPOSITE, LOCAL, open_fileset
from lazyflow_rbfs.cli.progress import open_bar, transfer_line

__all__ = ["add_prefetch"]


def add_prefetch(command: AddCommand) -> None:
    p = command("prefetch", "Download every missing block of the view or of a roi.", aliases=["download"])
    add_description_arg(p)
    add_roi_option(p)
    add_network_options(p)
    add_progress_options(p)
    p.add_argument(
        "--max-failures",
        type=non_negative_int,
        metavar="N",
        help="stop early when the first N blocks attempted all fail the same way, and at once when the "
        "cache cannot be written (8; 0: never stop early)",
    )
    p.add_argument(
        "--scheduler",
        type=scheduler_arg,
        metavar="ADDRESS",
        help="hand the blocks to a dask.distributed cluster (e.g. tcp://host:8786) whose workers see this "
        "description at the same path and share the cache directory; -j then limits each worker",
    )
    p.add_argument(
        "--batch-size", type=positive_int, metavar="N", help="with --scheduler: blocks per cluster task (64)"
    )
    p.add_argument(
        "--wait-for-workers",
        type=seconds_arg,
        metavar="S",
        help="with --scheduler: seconds to wait for a first worker when the cluster has none (60)",
    )
    p.set_defaults(func=_cmd_prefetch)


def _cmd_prefetch(args: argparse.Namespace) -> int:
    opened, fs = open_fileset(args)
    with contextlib.closing(fs):
        if opened.kind != "composite":
            raise UsageError(
                f"{opened.path} is a local {LOCAL!r}: there is nothing to download; "
                f"prefetch needs a {COMPOSITE!r}"
            )
        start, stop = resolve_roi(args.roi, fs.description.view_shape, fs.description.axes)
        for flag, value in (("--wait-for-workers", args.wait_for_workers), ("--batch-size", args.batch_size)):
            if value is not None and not args.scheduler:
                raise UsageError(f"{flag} needs --scheduler (it applies to cluster tasks only)")
        options: dict[str, Any] = {}
        if args.max_failures is not None:
            options["max_failures"] = args.max_failures
        if args.wait_for_workers is not None:
            options["wait_for_workers"] = args.wait_for_workers
        total = geometry.count_blocks(start, stop, fs.description.block_shape)
        try:
            with open_bar(args, fs, total, speed=not args.scheduler) as bar:
                report = fs.downloadAllBlocks(
                    args.max_parallel,
                    roi=(start, stop),
                    progress=bar,
                    raise_on_failure=False,
                    scheduler=args.scheduler or None,
                    batch_size=args.batch_size,
                    **options,
                )
        except PrefetchInterrupted as exc:  # leaving the with-block closes the fileset: no waiting
            r = exc.report
            raise Interrupted(
                f"prefetch interrupted after {r.seconds:.1f} s: {r.done} of {r.total} blocks done "
                f"({r.downloaded} downloaded, {r.skipped} already cached, {len(r.failed)} failed); "
                f"{r.total - r.done} not fetched (run it again to go on)"
            ) from None
        # The first failure is the error line's to tell (below), not the summary's as well.
        print(_summary_without_failure(report))
        if not args.scheduler:  # on a cluster the requests are made by the workers
            print(transfer_line(fs.remote.stats, report.seconds))
        if report.failed:
            first = f"block {list(report.failed[0])}: {report.errors.get(report.failed[0], '?')}"
            if report.stopped_early:
                raise Failure(
                    f"prefetch stopped early: {report.stop_reason}; {report.not_attempted} of {report.total} "
                    f"blocks not attempted; first failure: {first} (--max-failures N sets when to give up, "
                    "0 never)"
                )
            raise Failure(f"{len(report.failed)} of {report.total} blocks failed to download; first: {first}")
    return EXIT_OK


def _summary_without_failure(report: Any) -> str:
    """:meth:`PrefetchReport.summary` without its first-failure and stop-reason tails (the error line says
    them), but with the failures counted by error class."""
    text = (
        f"{report.total} blocks: {report.downloaded} downloaded, {report.skipped} already cached, "
        f"{len(report.failed)} failed"
    )
    if report.error_types:
        text += " (" + ", ".join(f"{n} {kind}" for kind, n in sorted(report.error_types.items())) + ")"
    if report.not_attempted:
        text += f", {report.not_attempted} not attempted"
    text += f", in {report.seconds:.1f} s"
    if getattr(report, "not_held", 0):
        text += (
            f"; the cache could not hold the whole region: {report.not_held} of its blocks were evicted "
            "again to stay within max_cache_bytes"
        )
    return text
