"""Benchmark 4 — scale: a view of 1,000,000 tiny blocks, nothing downloaded.

Each size runs in a fresh client process (so its peak RSS is its own), against a server process serving
a zero volume of 100×1000×1000 uint8 in blocks of 1×10×10; the 10⁵-block case is a view of the first 10
planes. Measured per size:

* ``statusSummary()`` of the whole view (what ``rbfs status`` shows), target ≤ 5 s per million blocks;
* the per-block status path (``getBlockStatus`` over ``iterBlockStarts``), informative: it is what a
  prefetch pays per block to skip cached ones;
* time from calling ``downloadAllBlocks`` to the first request arriving at the server, target ≤ 1 s;
* peak RSS of the client process after a prefetch has made a fixed number of requests; target: flat,
  ``peak RSS(10⁶) / peak RSS(10⁵) ≤ 1.10``.

The baseline of the time figures is the target itself (ratios are "seconds / budget").
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import traceback
from typing import Any

import common

FULL = {"shape": (100, 1000, 1000), "block": (1, 10, 10), "planes_small": 10, "requests": 400, "repeats": 3}
QUICK = {"shape": (10, 1000, 1000), "block": (1, 10, 10), "planes_small": 1, "requests": 100, "repeats": 1}
STATUS_SAMPLE = 100_000  # blocks timed on the per-block status path (extrapolated to a million)


def _client_main(conn: Any, desc: str, parallel: int) -> None:
    """Fresh process: status, per-block status scan, then a prefetch the parent stops; report numbers."""
    try:
        import itertools
        import logging

        from lazyflow_rbfs import RESTfulBlockwiseFileset

        # The prefetch is stopped by closing the fileset: its "block failed" warnings are expected.
        logging.getLogger("lazyflow_rbfs").setLevel(logging.ERROR)

        out: dict[str, Any] = {"rss_start_mib": common.current_rss_mib()}
        fs = RESTfulBlockwiseFileset(desc, max_parallel=parallel)
        t0 = time.perf_counter()
        summary = fs.statusSummary()
        out["status_seconds"] = time.perf_counter() - t0
        out["blocks"] = summary.total
        out["missing"] = summary.missing
        n = min(STATUS_SAMPLE, summary.total)
        t0 = time.perf_counter()
        for block_start in itertools.islice(fs.iterBlockStarts(), n):
            fs.getBlockStatus(block_start)
        out["per_block_status_seconds"] = (time.perf_counter() - t0) / n
        out["rss_before_prefetch_mib"] = common.current_rss_mib()
        errors: list[str] = []

        def prefetch() -> None:
            try:
                fs.downloadAllBlocks(parallel, raise_on_failure=False)
            except Exception:  # the parent closes the fileset under it: expected
                errors.append(traceback.format_exc())

        conn.send(("ready", None))
        conn.recv()  # "go"
        thread = threading.Thread(target=prefetch, name="prefetch")
        called = time.monotonic()
        thread.start()
        conn.send(("called", called))
        conn.recv()  # "stop": the server saw enough requests
        out["rss_peak_mib"] = common.peak_rss_mib()
        out["rss_at_stop_mib"] = common.current_rss_mib()
        fs.close()
        thread.join()
        conn.send(("done", out))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def measure(server: common.ServerProcess, desc: str, parallel: int, requests: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_client_main, args=(child, desc, parallel), name="rbfs-bench-scale-client")
    proc.start()
    child.close()
    try:
        status, payload = parent.recv()
        if status != "ready":
            raise SystemExit(f"scale client failed:\n{payload}")
        server.call("reset")
        parent.send("go")
        status, called = parent.recv()
        ok, first = server.call("wait_requests", 1, 60.0)
        if not ok:
            raise SystemExit("no request reached the server within 60 s of calling downloadAllBlocks")
        ok, _ = server.call("wait_requests", requests, 120.0)
        if not ok:
            raise SystemExit(f"the prefetch did not reach {requests} requests within 120 s")
        parent.send("stop")
        status, out = parent.recv()
        if status != "done":
            raise SystemExit(f"scale client failed:\n{out}")
        out["first_request_seconds"] = first - called
        return out
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.terminate()
            proc.join()
        parent.close()


def main(argv: list[str] | None = None) -> dict:
    args = common.parse_args(__doc__, argv)
    cfg = QUICK if args.quick else FULL
    repeats = args.repeats or cfg["repeats"]
    shape, block = cfg["shape"], cfg["block"]
    small_view = (cfg["planes_small"],) + tuple(shape[1:])
    runs: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
    with common.temp_dir("scale") as tmp, common.ServerProcess(shape, kind="zeros") as server:
        for i in range(repeats):
            for size, view in (("small", small_view), ("large", tuple(shape))):
                work = tmp / f"{size}-{i}"
                work.mkdir()
                desc = server.describe(
                    work / "volume.json", block_shape=block, cache_dir="cache", view_shape=view
                )
                runs[size].append(measure(server, desc, 16, cfg["requests"]))
                common.empty_dir(work)

    large, small = runs["large"], runs["small"]
    million = 1_000_000
    nblocks = large[0]["blocks"]
    status_per_million = [r["status_seconds"] * million / r["blocks"] for r in large]
    scan_per_million = [r["per_block_status_seconds"] * million for r in large]
    first = [r["first_request_seconds"] for r in large]
    metrics = [
        common.ratio_metric(
            f"status of {nblocks:,} blocks / 5 s per million",
            status_per_million,
            [5.0] * len(large),
            op="<=",
            target=1.0,
            unit="s",
            baseline_name="budget",
            higher_is_better=False,
            note="statusSummary(), per million blocks",
        ),
        common.ratio_metric(
            "per-block status path / 5 s per million (info)",
            scan_per_million,
            [5.0] * len(large),
            op=None,
            target=None,
            unit="s",
            baseline_name="budget",
            higher_is_better=False,
            note="getBlockStatus over iterBlockStarts, per million",
        ),
        common.ratio_metric(
            "downloadAllBlocks → first request / 1 s",
            first,
            [1.0] * len(large),
            op="<=",
            target=1.0,
            unit="s",
            baseline_name="budget",
            higher_is_better=False,
        ),
        common.ratio_metric(
            f"peak RSS {nblocks:,} vs {small[0]['blocks']:,} blocks",
            [r["rss_peak_mib"] for r in large],
            [r["rss_peak_mib"] for r in small],
            op="<=",
            target=1.10,
            unit="MiB",
            baseline_name=f"{small[0]['blocks']:,} blocks",
            higher_is_better=False,
            note=f"after {cfg['requests']} prefetch requests",
        ),
    ]
    params = {
        "shape": shape,
        "block": block,
        "blocks_large": nblocks,
        "blocks_small": small[0]["blocks"],
        "prefetch_requests_before_stop": cfg["requests"],
        "repeats": repeats,
        "large": large,
        "small": small,
    }
    return common.report("scale", "4. Scale", metrics, params, args.quick)


if __name__ == "__main__":
    main()
