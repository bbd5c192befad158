"""Two filesets in one process each keep their own ``max_parallel`` (API.md, options paragraph)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from lazyflow_rbfs import RESTfulBlockwiseFileset
from lazyflow_rbfs.testing import CutoutServer, sample_volume

pytestmark = pytest.mark.timeout(60)

SHAPE = (16, 64, 64)
BLOCK = (4, 16, 16)  # 64 blocks: far more than both budgets together


@pytest.mark.parametrize("how", ["read", "prefetch"])
def test_two_filesets_on_one_server_each_keep_their_own_max_parallel(tmp_path: Path, how: str):
    volume = sample_volume(SHAPE, seed=5)
    with CutoutServer(volume) as server:
        # Two caches of the same remote (different roots, so no block is shared between them).
        paths = [
            server.write_description(tmp_path / f"v{i}.json", block_shape=BLOCK, cache_dir=f"cache{i}")
            for i in range(2)
        ]
        server.pause()
        results: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []
        filesets = [RESTfulBlockwiseFileset(p, max_parallel=2) for p in paths]

        def read(i: int) -> None:
            try:
                if how == "prefetch":
                    filesets[i].downloadAllBlocks()
                results[i] = filesets[i][...]
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
        try:
            for t in threads:
                t.start()
            # Both budgets are in use at once: 2 + 2 requests reach the paused server (a shared budget
            # would stop at 2 and this wait would time out).
            reached = server.wait_for_in_flight(4, timeout=30)
        finally:
            server.resume()
            for t in threads:
                t.join(30)
            for fileset in filesets:
                fileset.close()
        assert reached, f"only {server.max_in_flight} requests in flight at once"
        assert errors == []
        for i in range(2):
            np.testing.assert_array_equal(results[i], volume)
        # ... and never more than the two budgets together.
        assert server.max_in_flight == 4
        assert server.requests == 2 * 64
