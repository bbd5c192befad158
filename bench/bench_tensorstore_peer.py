"""Benchmark 8 — tensorstore peer: rbfs vs tensorstore on the same neuroglancer precomputed volume.

The package's CutoutServer serves a random ``uint8`` volume as neuroglancer precomputed from a separate
spawned process (10 ms injected latency per request), chunks raw and, in a second variant, gzip-encoded
(``Content-Encoding``; both clients accept it). Both clients read the same chunk-aligned region; our
``block_shape`` is the chunk, so both fetch exactly the same chunks.

* cold, in this process: rbfs ``describe_source`` + ``RESTfulBlockwiseFileset(desc, max_parallel=16)``
  (untimed), then ``readData(region)`` (timed) into a fresh cache. tensorstore: ``ts.open`` of
  ``{"driver": "neuroglancer_precomputed", "kvstore": {"driver": "http", ...}}`` with a fresh in-memory
  ``cache_pool`` and ``http_request_concurrency`` 16, then ``read()`` of the region (both timed: its open
  is its ``info`` request, as ours is inside ``readData``).
* informative: ours cold with ``fsync=False``, and ours cold with the cache on tmpfs (``/dev/shm``):
  tensorstore writes nothing to disk, so these say what our durable disk cache costs.
* a second process reading the same region (a new Python process per round; imports untimed, then open
  + read timed inside it): rbfs finds every block in the disk cache of the cold round (0 requests);
  tensorstore has only its in-memory cache, which died with the first process, so it downloads again.

Targets: ours cold ≤ 1.0× tensorstore's time; second process ≥ 5× faster than tensorstore's (the figure
is tensorstore's time / ours).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

FULL = {
    "shape": (256, 1024, 1024),
    "start": (64, 256, 256),
    "region": (128, 512, 512),
    "chunk_zyx": (64, 64, 64),
    "latency": 0.010,
    "parallel": 16,
    "repeats": 5,
}
QUICK = {
    "shape": (64, 256, 256),
    "start": (0, 64, 64),
    "region": (64, 128, 128),
    "chunk_zyx": (32, 64, 64),
    "latency": 0.010,
    "parallel": 16,
    "repeats": 2,
}


def ts_spec(url: str, parallel: int) -> dict[str, Any]:
    return {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "http", "base_url": url},
        "context": {
            "cache_pool": {"total_bytes_limit": 1 << 30},
            "http_request_concurrency": {"limit": parallel},
        },
    }


def read_rbfs(
    desc: str, start: tuple, stop: tuple, parallel: int, fsync: bool = True
) -> tuple[np.ndarray, float]:
    from lazyflow_rbfs import RESTfulBlockwiseFileset

    t0 = time.perf_counter()
    fs = RESTfulBlockwiseFileset(desc, max_parallel=parallel, fsync=fsync)
    READ_RBFS_OPEN[0] = time.perf_counter() - t0
    try:
        data = fs.readData((start, stop))
    finally:
        fs.close()
    return data, time.perf_counter() - t0


#: Seconds the last :func:`read_rbfs` spent opening the fileset (part of its total).
READ_RBFS_OPEN = [0.0]


def read_ts(url: str, start: tuple, stop: tuple, parallel: int) -> tuple[np.ndarray, float]:
    import tensorstore as ts

    (z0, y0, x0), (z1, y1, x1) = start, stop
    t0 = time.perf_counter()
    store = ts.open(ts_spec(url, parallel), read=True).result()
    data = store[x0:x1, y0:y1, z0:z1, 0].read().result()
    seconds = time.perf_counter() - t0
    return np.asarray(data).transpose(2, 1, 0), seconds  # (x, y, z) -> (z, y, x): a view, untimed


def child_main(spec: dict[str, Any]) -> None:
    """``--child``: one read in a fresh process; prints ``{"seconds": ..., "crc": ...}``."""
    import zlib

    if spec["who"] == "rbfs":
        import lazyflow_rbfs  # noqa: F401 - imported before the clock starts, like tensorstore below

        data, seconds = read_rbfs(spec["desc"], tuple(spec["start"]), tuple(spec["stop"]), spec["parallel"])
    else:
        import tensorstore  # noqa: F401

        data, seconds = read_ts(spec["url"], tuple(spec["start"]), tuple(spec["stop"]), spec["parallel"])
    crc = zlib.crc32(np.ascontiguousarray(data).tobytes())
    print(json.dumps({"seconds": seconds, "crc": crc, "open": READ_RBFS_OPEN[0]}))


def in_child(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(common.REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"second-process read by {spec['who']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_variant(cfg: dict[str, Any], gzip: bool, repeats: int, seed: int, nchunks: int) -> dict[str, list]:
    import zlib

    from lazyflow_rbfs.describe import describe_source

    start = cfg["start"]
    stop = tuple(a + n for a, n in zip(start, cfg["region"]))
    source = common.make_volume(cfg["shape"], seed)[tuple(slice(a, b) for a, b in zip(start, stop))]
    crc = zlib.crc32(np.ascontiguousarray(source).tobytes())
    out: dict[str, list] = {
        "rbfs_cold": [],
        "ts_cold": [],
        "rbfs_nosync_cold": [],
        "rbfs_tmpfs_cold": [],
        "rbfs_second": [],
        "ts_second": [],
        "rbfs_second_open": [],
        "requests": [],
    }
    with (
        common.temp_dir("tensorstore") as tmp,
        common.tmpfs_dir("tensorstore") as shm,
        common.ServerProcess(
            cfg["shape"],
            latency=cfg["latency"],
            seed=seed,
            precomputed={"chunk_zyx": cfg["chunk_zyx"], "gzip": gzip},
        ) as server,
    ):
        url = server.info["precomputed_url"]
        for i in range(repeats + 1):  # round 0 warms up (imports, connections); not counted
            work = tmp / f"r{i}"
            common.empty_dir(work)
            work.mkdir(parents=True)
            desc = describe_source(url, work / "volume.json", block_shape=cfg["chunk_zyx"], cache_dir="cache")
            scratch = describe_source(
                url, work / "nosync.json", block_shape=cfg["chunk_zyx"], cache_dir="nosync"
            )
            reads = {
                "rbfs_cold": lambda desc=desc: read_rbfs(desc, start, stop, cfg["parallel"]),
                "ts_cold": lambda: read_ts(url, start, stop, cfg["parallel"]),
                "rbfs_nosync_cold": lambda d=scratch: read_rbfs(d, start, stop, cfg["parallel"], fsync=False),
            }
            if shm is not None:
                on_tmpfs = describe_source(
                    url, work / "tmpfs.json", block_shape=cfg["chunk_zyx"], cache_dir=str(shm / f"r{i}")
                )
                reads["rbfs_tmpfs_cold"] = lambda d=on_tmpfs: read_rbfs(d, start, stop, cfg["parallel"])
            order = list(reads) if i % 2 == 0 else list(reversed(reads))
            round_requests = {}
            for who in order:
                server.call("reset")
                data, seconds = reads[who]()
                round_requests[who] = server.call("stats")["chunk_requests"]
                if i == 0 and not np.array_equal(data, source):
                    raise SystemExit(f"{who}: the cold read does not equal the source voxels")
                del data
                if i:
                    out[who].append(seconds)
            spec = {"start": start, "stop": stop, "parallel": cfg["parallel"], "desc": str(desc), "url": url}
            second = {"rbfs_second": "rbfs", "ts_second": "ts"}
            for key in second if i % 2 == 0 else reversed(list(second)):
                server.call("reset")
                result = in_child(dict(spec, who=second[key]))
                round_requests[key] = server.call("stats")["chunk_requests"]
                if result["crc"] != crc:
                    raise SystemExit(f"{key}: the second process read other voxels than the source")
                if i:
                    out[key].append(result["seconds"])
                    if key == "rbfs_second":
                        out["rbfs_second_open"].append(result["open"])
            expected = {
                "rbfs_cold": nchunks,
                "ts_cold": nchunks,
                "rbfs_nosync_cold": nchunks,
                **({"rbfs_tmpfs_cold": nchunks} if shm is not None else {}),
                "rbfs_second": 0,
                "ts_second": nchunks,
            }
            if round_requests != expected:
                raise SystemExit(f"chunk requests per read {round_requests}, expected {expected}")
            out["requests"].append(round_requests)
            common.empty_dir(work)
            if shm is not None:
                common.empty_dir(shm / f"r{i}")
    return out


def main(argv: list[str] | None = None) -> dict:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--child":
        child_main(json.loads(sys.argv[2]))
        return {}
    args = common.parse_args(__doc__, argv)
    cfg = QUICK if args.quick else FULL
    repeats = args.repeats or cfg["repeats"]
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        import tensorstore  # noqa: F401
    except ImportError:
        print("8. Tensorstore peer: SKIPPED (pip install tensorstore; see bench/requirements.txt)")
        return {}
    seed = 8
    nchunks = int(np.prod([n // c for n, c in zip(cfg["region"], cfg["chunk_zyx"])]))
    metrics: list[common.Metric] = []
    params: dict[str, Any] = {
        "volume_shape": cfg["shape"],
        "region_start": cfg["start"],
        "region_shape": cfg["region"],
        "chunk_zyx": cfg["chunk_zyx"],
        "chunks": nchunks,
        "latency_s": cfg["latency"],
        "max_parallel": cfg["parallel"],
        "tensorstore_version": importlib.metadata.version("tensorstore"),
        "repeats": repeats,
        "variants": {},
    }
    for label, gzip in (("raw", False), ("gzip", True)):
        r = run_variant(cfg, gzip, repeats, seed, nchunks)
        params["variants"][label] = {k: v for k, v in r.items()}
        kw: dict[str, Any] = {"unit": "s", "higher_is_better": False}
        metrics.append(
            common.ratio_metric(
                f"{label}: cold read of {nchunks} chunks vs tensorstore",
                r["rbfs_cold"],
                r["ts_cold"],
                op="<=",
                target=1.0,
                baseline_name="tensorstore",
                **kw,
            )
        )
        metrics.append(
            common.ratio_metric(
                f"{label}: cold with fsync=False vs tensorstore (info)",
                r["rbfs_nosync_cold"],
                r["ts_cold"],
                op=None,
                target=None,
                baseline_name="tensorstore",
                **kw,
            )
        )
        tmpfs = None
        if r["rbfs_tmpfs_cold"]:
            tmpfs = common.ratio_metric(
                f"{label}: cold with the cache on tmpfs vs tensorstore (info)",
                r["rbfs_tmpfs_cold"],
                r["ts_cold"],
                op=None,
                target=None,
                baseline_name="tensorstore",
                **kw,
            )
            metrics.append(tmpfs)
        # A speed-up: tensorstore's time / ours (the series swapped), so "≥ 5×" reads as the issue says;
        # the ours/baseline columns then show our time and tensorstore's.
        second = common.ratio_metric(
            f"{label}: second process, speed-up over tensorstore",
            r["ts_second"],
            r["rbfs_second"],
            op=">=",
            target=5.0,
            baseline_name="tensorstore",
            note="ours from the disk cache (0 requests), tensorstore downloads again",
            **kw,
        )
        second.ours, second.baseline = second.baseline, second.ours
        metrics.append(second)
        cold, nosync = metrics[-4 if tmpfs else -3], metrics[-3 if tmpfs else -2]
        if cold.passed is False:
            cold.reason = (
                f"ours {cold.ours * 1000:.0f} ms vs tensorstore {cold.baseline * 1000:.0f} ms for {nchunks} "
                f"requests at {cfg['latency'] * 1000:.0f} ms latency, {cfg['parallel']} in flight (latency "
                f"floor {common.ceil_div(nchunks, cfg['parallel']) * cfg['latency'] * 1000:.0f} ms); "
                f"tensorstore keeps the chunks in memory only, ours writes each block file durably: with "
                f"fsync=False ours takes {nosync.ours * 1000:.0f} ms ({nosync.ratio:.2f}×)"
                + (
                    f", with the cache on tmpfs {tmpfs.ours * 1000:.0f} ms ({tmpfs.ratio:.2f}×); the rest is "
                    f"our client's work per block: receive, check, lock, write and publish it"
                    if tmpfs
                    else ""
                )
            )
        if second.passed is False:
            second.reason = (
                f"ours {second.ours * 1000:.0f} ms from disk vs tensorstore {second.baseline * 1000:.0f} ms "
                f"downloading all {nchunks} chunks again; ours is the fileset's open "
                f"({statistics.median(r['rbfs_second_open']) * 1000:.1f} ms: description, cache root check) "
                f"and the read: a {np.prod(cfg['region']) / 2**20:.0f} MiB output array filled from "
                f"{nchunks} block files, copied in rows of {cfg['chunk_zyx'][-1]} voxels (a chunk's width)"
            )
    return common.report("tensorstore_peer", "8. Tensorstore peer", metrics, params, args.quick)


if __name__ == "__main__":
    main()
