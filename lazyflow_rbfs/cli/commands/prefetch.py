"""``rbfs prefetch`` (alias ``download``): download every missing block of the view or of a roi."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

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
    want_progress,
)
from lazyflow_rbfs.cli.exits import EXIT_OK, Failure, Interrupted, UsageError
from lazyflow_rbfs.cli.opening import COMPOSITE, LOCAL, open_fileset
from lazyflow_rbfs.cli.text import fmt_bytes

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
    p.add_argument("--batch-size", type=positive_int, metavar="N", help="blocks per cluster task (64)")
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
        if args.wait_for_workers is not None and not args.scheduler:
            raise UsageError("--wait-for-workers needs --scheduler")
        options: dict[str, Any] = {}
        if args.max_failures is not None:
            options["max_failures"] = args.max_failures
        if args.wait_for_workers is not None:
            options["wait_for_workers"] = args.wait_for_workers
        try:
            report = fs.downloadAllBlocks(
                args.max_parallel,
                roi=(start, stop),
                progress=want_progress(args),
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
        print(report.summary())
        if not args.scheduler:  # on a cluster the requests are made by the workers
            stats = fs.remote.stats
            seconds = max(report.seconds, 1e-9)
            print(
                f"{stats.requests} requests, {fmt_bytes(stats.bytes_received)} received, "
                f"{stats.bytes_received / seconds / 1e6:.1f} MB/s"
            )
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
