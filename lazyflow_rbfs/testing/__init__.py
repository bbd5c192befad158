"""The test kit: a local cutout server with fault injection and format emulators, and sample volumes.

Used by the tests, the benchmarks and the developer commands ``rbfs serve`` and ``rbfs demo``; no
runtime module of the package imports it. The pytest fixtures are a plugin of their own
(``pytest_plugins = ["lazyflow_rbfs.testing.pytest_plugin"]``), so importing this package never needs
pytest.

Modules: :mod:`~lazyflow_rbfs.testing.server` (the HTTP core: gate, accounting, faults applied),
:mod:`~lazyflow_rbfs.testing.faults`, the format emulators :mod:`~lazyflow_rbfs.testing.cutout`,
:mod:`~lazyflow_rbfs.testing.boss` and :mod:`~lazyflow_rbfs.testing.precomputed`, their body
:mod:`~lazyflow_rbfs.testing.encoders`, :mod:`~lazyflow_rbfs.testing.volumes` (sample data, levels) and
:mod:`~lazyflow_rbfs.testing.descriptions` (the JSON a server writes about itself).

Examples
--------
>>> from lazyflow_rbfs.testing import CutoutServer, sample_volume        # doctest: +SKIP
>>> with CutoutServer(sample_volume((16, 64, 64))) as server:            # doctest: +SKIP
...     server.faults.fail_next(2, 503)
...     server.write_description("vol.json", block_shape=(8, 32, 32))
"""

from __future__ import annotations

from lazyflow_rbfs.testing import n5 as _n5  # noqa: F401 - registers the static writer "n5"
from lazyflow_rbfs.testing import zarr as _zarr  # noqa: F401 - registers the zarr writers
from lazyflow_rbfs.testing.boss import BossSettings
from lazyflow_rbfs.testing.faults import FaultRule, Faults
from lazyflow_rbfs.testing.precomputed import PrecomputedSettings
from lazyflow_rbfs.testing.precomputed_sharded import write_sharded_precomputed
from lazyflow_rbfs.testing.server import CutoutServer, RequestRecord, run_server
from lazyflow_rbfs.testing.volumes import sample_volume

__all__ = [
    "CutoutServer",
    "BossSettings",
    "PrecomputedSettings",
    "Faults",
    "FaultRule",
    "RequestRecord",
    "sample_volume",
    "run_server",
    "write_sharded_precomputed",
]
