"""Benchmark 2 — cold fill: downloadAllBlocks into an empty cache from a slow server.

The package's own CutoutServer runs in a separate process with 20 ms injected latency per request; the
volume has 256 blocks of 32×128×128 uint8 (128 MiB); ``max_parallel=16``.

* Baseline: the latency-bound ideal ``ceil(256 / 16) × 20 ms`` plus the transfer time of one
  single-connection bulk read of the whole volume (its wall time minus the 20 ms latency), measured in
  the same round.
* Informative: the same fill with ``fsync=False`` (what the four fsyncs per block cost), the same fill
  with the cache on tmpfs (``/dev/shm``: what the benchmark's file system costs), the CPU the file system
  takes to create one directory and one file (measured each round), and the client's and the server's
  CPU seconds (a MISS names the CPU floor they set on this machine).
* Peer: a straightforward user script — ``requests`` + ``ThreadPoolExecutor(16)`` + h5py write — doing
  the same 256 downloads (no validation, no locks, no atomic publishing).

Targets: ≤ 1.3× the ideal, and not slower than the peer script (≤ 1.0×).
"""

from __future__ import annotations

import io
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import common
import h5py
import numpy as np
import requests
from requests.adapters import HTTPAdapter

from lazyflow_rbfs import RESTfulBlockwiseFileset

FULL = {"shape": (128, 1024, 1024), "block": (32, 128, 128), "latency": 0.020, "parallel": 16, "repeats": 7}
QUICK = {"shape": (64, 512, 512), "block": (32, 128, 128), "latency": 0.020, "parallel": 16, "repeats": 3}


def rbfs_fill(
    server: common.ServerProcess, workdir: Path, block, parallel: int, fsync: bool = True
) -> dict[str, Any]:
    """One cold ``downloadAllBlocks`` into ``workdir/cache``; wall, client and server CPU seconds, report,
    stats."""
    common.empty_dir(workdir)
    workdir.mkdir(parents=True)
    desc = server.describe(workdir / "volume.json", block_shape=block, cache_dir="cache")
    fs = RESTfulBlockwiseFileset(desc, max_parallel=parallel, fsync=fsync)
    server.call("reset")
    s0 = server.call("cpu")
    try:
        c0, t0 = common.cpu_seconds(), time.perf_counter()
        report = fs.downloadAllBlocks(parallel)
        seconds, cpu = time.perf_counter() - t0, common.cpu_seconds() - c0
    finally:
        fs.close()
    server_cpu = server.call("cpu") - s0
    stats = server.call("stats")
    return {"seconds": seconds, "cpu": cpu, "server_cpu": server_cpu, "report": report, "stats": stats}


def peer_fill(server: common.ServerProcess, workdir: Path, block, parallel: int) -> dict[str, Any]:
    """The straightforward user script: requests + ThreadPoolExecutor + h5py, one file per block."""
    common.empty_dir(workdir)
    workdir.mkdir(parents=True)
    blocks = common.block_grid(server.info["shape"], block)
    dataset = server.info["dataset"]
    server.call("reset")
    c0, t0 = common.cpu_seconds(), time.perf_counter()
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=parallel))

    def one(bounds: tuple) -> None:
        start, stop = bounds
        response = session.get(server.url(start, stop), timeout=60)
        response.raise_for_status()
        with h5py.File(io.BytesIO(response.content), "r") as f:
            array = f[dataset][()]
        name = "block-" + "_".join(str(s) for s in start) + ".h5"
        with h5py.File(workdir / name, "w") as f:
            f.create_dataset(dataset, data=array)

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, blocks))
    session.close()
    seconds, cpu = time.perf_counter() - t0, common.cpu_seconds() - c0
    return {"seconds": seconds, "cpu": cpu, "stats": server.call("stats")}


def bulk_read(server: common.ServerProcess) -> float:
    """Wall seconds of one GET of the whole volume over a single connection."""
    url = server.url((0,) * len(server.info["shape"]), server.info["shape"])
    with requests.Session() as session:
        t0 = time.perf_counter()
        response = session.get(url, timeout=120)
        response.raise_for_status()
        body = response.content
        seconds = time.perf_counter() - t0
    if len(body) < int(np.prod(server.info["shape"])):
        raise SystemExit(f"bulk read returned {len(body)} bytes, less than the volume")
    return seconds


def check(result: dict[str, Any], nblocks: int, parallel: int, who: str) -> None:
    stats = result["stats"]
    if stats["requests"] != nblocks:
        raise SystemExit(f"{who}: {stats['requests']} requests for {nblocks} blocks")
    if stats["max_in_flight"] > parallel:
        raise SystemExit(f"{who}: {stats['max_in_flight']} requests in flight, more than {parallel}")
    report = result.get("report")
    if report is not None and report.downloaded != nblocks:
        raise SystemExit(f"{who}: downloaded {report.downloaded} of {nblocks} blocks: {report.summary()}")


def fs_share(results: dict[str, list[dict[str, Any]]], inode_us: list[float], ideal: list) -> str:
    """The file system's part of a MISS: the tmpfs fill and the inode creations, from the same run."""
    med = statistics.median
    text = (
        f"; the file system: a block creates a directory and {common.INODES_PER_BLOCK['files']} files, "
        f"{med(inode_us):.0f} µs of CPU here (isolated, each round)"
    )
    if results["tmpfs"]:
        tmpfs = [r["seconds"] for r in results["tmpfs"]]
        text += (
            f"; with the cache on tmpfs the fill takes {med(tmpfs) * 1000:.0f} ms "
            f"({med(t / i for t, i in zip(tmpfs, ideal)):.2f}× the ideal; client CPU "
            f"{med(r['cpu'] for r in results['tmpfs']):.2f} s)"
        )
    return text


def main(argv: list[str] | None = None) -> dict:
    args = common.parse_args(__doc__, argv)
    cfg = QUICK if args.quick else FULL
    repeats = args.repeats or cfg["repeats"]
    shape, block, latency, parallel = cfg["shape"], cfg["block"], cfg["latency"], cfg["parallel"]
    nblocks = len(common.block_grid(shape, block))
    rounds = common.ceil_div(nblocks, parallel)

    with (
        common.temp_dir("cold") as tmp,
        common.tmpfs_dir("cold") as shm,
        common.ServerProcess(shape, latency=latency, seed=5) as server,
    ):
        # Warm-up (untimed): imports, first connections, page cache of the server's code paths.
        check(rbfs_fill(server, tmp / "warm-rbfs", block, parallel), nblocks, parallel, "rbfs")
        check(peer_fill(server, tmp / "warm-peer", block, parallel), nblocks, parallel, "peer")
        bulk_read(server)
        fill_data = None
        results: dict[str, list[dict[str, Any]]] = {
            "rbfs": [],
            "peer": [],
            "bulk": [],
            "nosync": [],
            "tmpfs": [],
            "inodes": [],
        }
        for i in range(repeats):
            bulk = bulk_read(server)
            results["bulk"].append({"seconds": bulk})
            r = rbfs_fill(server, tmp / f"rbfs-{i}", block, parallel)
            check(r, nblocks, parallel, "rbfs")
            results["rbfs"].append(r)
            p = peer_fill(server, tmp / f"peer-{i}", block, parallel)
            check(p, nblocks, parallel, "peer")
            results["peer"].append(p)
            n = rbfs_fill(server, tmp / f"nosync-{i}", block, parallel, fsync=False)
            check(n, nblocks, parallel, "rbfs fsync=False")
            results["nosync"].append(n)
            common.empty_dir(tmp / f"nosync-{i}")
            if shm is not None:
                t = rbfs_fill(server, shm / f"tmpfs-{i}", block, parallel)
                check(t, nblocks, parallel, "rbfs, cache on tmpfs")
                results["tmpfs"].append(t)
                common.empty_dir(shm / f"tmpfs-{i}")
            results["inodes"].append(common.inode_cost(tmp))
            if fill_data is None:  # verify the cache once (untimed): every voxel where it belongs
                fs = RESTfulBlockwiseFileset(str(tmp / f"rbfs-{i}" / "volume.json"))
                got = fs.readData(((0,) * len(shape), shape))
                fs.close()
                fill_data = common.make_volume(shape, seed=5)
                if not np.array_equal(got, fill_data):
                    raise SystemExit("the filled cache does not hold the server's volume")
                del got, fill_data
                fill_data = True
            common.empty_dir(tmp / f"rbfs-{i}")
            common.empty_dir(tmp / f"peer-{i}")

    ideal = [rounds * latency + max(b["seconds"] - latency, 0.0) for b in results["bulk"]]
    ours = [r["seconds"] for r in results["rbfs"]]
    peer = [p["seconds"] for p in results["peer"]]
    metrics = [
        common.ratio_metric(
            f"fill {nblocks} blocks vs latency-bound ideal",
            ours,
            ideal,
            op="<=",
            target=1.3,
            unit="s",
            baseline_name="ideal",
            higher_is_better=False,
            note=f"ideal = {rounds}×{latency * 1000:.0f} ms + bulk transfer",
        ),
        common.ratio_metric(
            f"fill {nblocks} blocks vs peer script",
            ours,
            peer,
            op="<=",
            target=1.0,
            unit="s",
            baseline_name="peer",
            higher_is_better=False,
        ),
        common.ratio_metric(
            "peer script vs ideal (info)",
            peer,
            ideal,
            op=None,
            target=None,
            unit="s",
            baseline_name="ideal",
            higher_is_better=False,
        ),
        common.ratio_metric(
            "client CPU: rbfs vs peer (info)",
            [r["cpu"] for r in results["rbfs"]],
            [p["cpu"] for p in results["peer"]],
            op=None,
            target=None,
            unit="s",
            baseline_name="peer",
            higher_is_better=False,
        ),
        common.ratio_metric(
            "fill with fsync=False vs ideal (info)",
            [r["seconds"] for r in results["nosync"]],
            ideal,
            op=None,
            target=None,
            unit="s",
            baseline_name="ideal",
            higher_is_better=False,
        ),
    ]
    if results["tmpfs"]:
        metrics.append(
            common.ratio_metric(
                "fill with the cache on tmpfs vs ideal (info)",
                [r["seconds"] for r in results["tmpfs"]],
                ideal,
                op=None,
                target=None,
                unit="s",
                baseline_name="ideal",
                higher_is_better=False,
            )
        )
    inode_us = [common.inode_cpu_per_block_us(c) for c in results["inodes"]]
    cores = os.cpu_count() or 1
    cpu_floor = [(r["cpu"] + r["server_cpu"]) / cores for r in results["rbfs"]]
    if metrics[0].passed is False:
        med = statistics.median
        floor = med(c / i for c, i in zip(cpu_floor, ideal))
        metrics[0].reason = (
            f"{'CPU-bound' if floor >= 1 else 'not bound by total CPU'}: client "
            f"{med(r['cpu'] for r in results['rbfs']):.2f} s + server "
            f"{med(r['server_cpu'] for r in results['rbfs']):.2f} s of CPU on {cores} cores need "
            f"≥ {med(cpu_floor):.2f} s even perfectly overlapped ({floor:.2f}× the ideal, which counts no "
            f"CPU); without fsync the fill takes "
            f"{med(r['seconds'] for r in results['nosync']) * 1000:.0f} ms "
            f"(with: {metrics[0].ours * 1000:.0f} ms)" + fs_share(results, inode_us, ideal)
        )
    if metrics[1].passed is False:
        metrics[1].reason = (
            f"client CPU ours {metrics[3].ours * 1000:.0f} ms vs peer {metrics[3].baseline * 1000:.0f} ms; "
            f"the "
            f"peer writes without fsync, ours with fsync=False took "
            f"{statistics.median(r['seconds'] for r in results['nosync']) * 1000:.0f} ms"
        )
    params = {
        "shape": shape,
        "block": block,
        "blocks": nblocks,
        "latency_s": latency,
        "max_parallel": parallel,
        "repeats": repeats,
        "bulk_seconds": common.summarize([b["seconds"] for b in results["bulk"]]),
        "ideal_seconds": common.summarize(ideal),
        "rbfs_seconds": common.summarize(ours),
        "peer_seconds": common.summarize(peer),
        "rbfs_cpu_seconds": common.summarize([r["cpu"] for r in results["rbfs"]]),
        "server_cpu_seconds": common.summarize([r["server_cpu"] for r in results["rbfs"]]),
        "cpu_floor_seconds": common.summarize(cpu_floor),
        "rbfs_nosync_seconds": common.summarize([r["seconds"] for r in results["nosync"]]),
        "rbfs_tmpfs_seconds": common.summarize([r["seconds"] for r in results["tmpfs"]])
        if results["tmpfs"]
        else None,
        "rbfs_tmpfs_cpu_seconds": common.summarize([r["cpu"] for r in results["tmpfs"]])
        if results["tmpfs"]
        else None,
        "inode_cpu_us": {
            k: common.summarize([c[k] for c in results["inodes"]]) for k in ("mkdir_us", "create_us")
        },
        "peer_cpu_seconds": common.summarize([p["cpu"] for p in results["peer"]]),
        "rbfs_max_in_flight": max(r["stats"]["max_in_flight"] for r in results["rbfs"]),
        "requests_per_fill": results["rbfs"][0]["stats"]["requests"],
    }
    return common.report("cold_fill", "2. Cold fill", metrics, params, args.quick)


if __name__ == "__main__":
    main()
