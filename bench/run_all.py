"""Run the whole benchmark suite: ``python bench/run_all.py [--quick] [--only NAME ...]``.

Each benchmark runs in its own Python process (so one's memory and threads never affect the next),
prints its figures with PASS/MISS, and merges them into ``bench/results/latest.json``; at the end the
table of all figures is printed and written to ``bench/results/latest.md`` (the table in the README).
``--quick`` uses small sizes: a smoke run that takes well under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common

BENCHMARKS = [
    ("warm_read", "bench_warm_read.py"),
    ("cold_fill", "bench_cold_fill.py"),
    ("contention", "bench_contention.py"),
    ("scale", "bench_scale.py"),
    ("cpu_per_byte", "bench_cpu_per_byte.py"),
    ("precomputed_peer", "bench_precomputed_peer.py"),
    ("distributed", "bench_distributed.py"),
    ("formats_peers", "formats_peers.py"),
    ("cache_size", "cache_size.py"),
    ("tensorstore_peer", "bench_tensorstore_peer.py"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the lazyflow_rbfs benchmark suite.")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (well under a minute)")
    parser.add_argument("--repeats", type=int, default=None, help="override every benchmark's repeats")
    parser.add_argument(
        "--only", nargs="+", choices=[name for name, _ in BENCHMARKS], help="run only these benchmarks"
    )
    args = parser.parse_args(argv)
    selected = [(n, s) for n, s in BENCHMARKS if not args.only or n in args.only]
    if common.RESULTS_JSON.exists() and not args.only:
        common.RESULTS_JSON.unlink()  # a full run starts a fresh results file
    failures = []
    t_all = time.perf_counter()
    for name, script in selected:
        cmd = [sys.executable, str(common.BENCH_DIR / script)]
        if args.quick:
            cmd.append("--quick")
        if args.repeats:
            cmd += ["--repeats", str(args.repeats)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=str(common.REPO_ROOT), env=dict(os.environ), check=False)
        print(f"  [{name}: {time.perf_counter() - t0:.1f} s]\n", flush=True)
        if proc.returncode != 0:
            failures.append(name)
    print(f"suite finished in {time.perf_counter() - t_all:.1f} s\n")
    if not common.RESULTS_JSON.exists():
        print("no results were written")
        return 1
    print(common.write_markdown())
    data = json.loads(common.RESULTS_JSON.read_text(encoding="utf-8"))
    misses = [
        f"{key}: {m['name']}" + (f" ({m['reason']})" if m.get("reason") else "")
        for key, entry in data.get("benchmarks", {}).items()
        for m in entry["metrics"]
        if m["verdict"] == "MISS"
    ]
    if failures:
        print("benchmarks that failed to run: " + ", ".join(failures))
    print(f"{len(misses)} target(s) missed" + (": " + "; ".join(misses) if misses else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
