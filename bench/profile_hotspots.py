"""Profile the hot paths behind the missed targets with pyinstrument (single-threaded, so every frame counts).

``python bench/profile_hotspots.py [--quick]`` writes text profiles to ``bench/results/profiles/``:

* ``warm_rois.txt``  — 1,000 random 64³ ``readData`` calls on a warm cache (benchmark 1);
* ``cold_block.txt`` — the per-block cold path (``_fetch_block``: lock, GET, decode, validate, publish)
  over 256 blocks of 32×128×128 from a server in another process (benchmarks 2 and 5).

Multi-threaded runs are better sampled with py-spy, e.g.
``py-spy record --gil -r 500 -f raw -o out.txt -- python bench/bench_cold_fill.py``.
"""

from __future__ import annotations

from concurrent.futures import Future

import common
import numpy as np
from bench_warm_read import populate
from pyinstrument import Profiler

from lazyflow_rbfs import RESTfulBlockwiseFileset

PROFILES = common.RESULTS_DIR / "profiles"


def profile_warm_rois(quick: bool) -> str:
    shape, block = ((64, 512, 512) if quick else (64, 1024, 1024)), (32, 256, 256)
    with common.temp_dir("prof-warm") as tmp:
        data = common.make_volume(shape, seed=3)
        desc = common.write_description_offline(tmp / "volume.json", shape, block, "cache")
        fs, _ = populate(desc, data)
        rng = np.random.default_rng(1)
        rois = []
        for _ in range(200 if quick else 1000):
            start = tuple(int(rng.integers(0, n - 64 + 1)) for n in shape)
            rois.append((start, tuple(a + 64 for a in start)))
        out = np.empty((64, 64, 64), dtype=np.uint8)
        for roi in rois:  # warm the handle cache first
            fs.readData(roi, out_array=out)
        profiler = Profiler(interval=0.0005)
        with profiler:
            for roi in rois:
                fs.readData(roi, out_array=out)
        fs.close()
    return profiler.output_text(unicode=True, color=False, show_all=False)


def profile_cold_block(quick: bool) -> str:
    shape, block = ((64, 512, 512) if quick else (128, 1024, 1024)), (32, 128, 128)
    with common.temp_dir("prof-cold") as tmp, common.ServerProcess(shape, seed=5) as server:
        profiler = Profiler(interval=0.0005)
        for rep in range(2):  # the first round warms imports and connections
            work = tmp / f"r{rep}"
            work.mkdir()
            desc = server.describe(work / "volume.json", block_shape=block, cache_dir="cache")
            fs = RESTfulBlockwiseFileset(desc, max_parallel=1)
            starts = list(fs.iterBlockStarts())
            if rep:
                profiler.start()
            for block_start in starts:
                fs._fetcher._fetch_block(block_start, Future(), False)  # one block, no pool
            if rep:
                profiler.stop()
            fs.close()
    return profiler.output_text(unicode=True, color=False, show_all=False)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, argv)
    PROFILES.mkdir(parents=True, exist_ok=True)
    for name, fn in (("warm_rois", profile_warm_rois), ("cold_block", profile_cold_block)):
        text = fn(args.quick)
        (PROFILES / f"{name}.txt").write_text(text, encoding="utf-8")
        print(f"wrote {PROFILES / (name + '.txt')}")


if __name__ == "__main__":
    main()
