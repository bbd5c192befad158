"""pytest fixtures: real cutout servers on 127.0.0.1 serving small synthetic volumes.

Load as a plugin, in a ``conftest.py``: ``pytest_plugins = ["lazyflow_rbfs.testing.pytest_plugin"]``.
Fixtures:

* ``sample_array`` — a small deterministic ``uint8`` volume of :data:`SAMPLE_SHAPE` (``zyx``).
* ``make_cutout_server(volume=None, **options)`` — factory; every server it starts is closed afterwards.
* ``cutout_server`` — a running :class:`~lazyflow_rbfs.testing.CutoutServer` on ``sample_array``.
* ``remote_description_path`` — a remote description JSON for ``cutout_server``.
* ``composite_description_path`` — a composite description for ``cutout_server`` with blocks of
  :data:`SAMPLE_BLOCK` cached under ``tmp_path / "cache"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lazyflow_rbfs.testing import CutoutServer, sample_volume

__all__ = [
    "SAMPLE_SHAPE",
    "SAMPLE_BLOCK",
    "sample_array",
    "make_cutout_server",
    "cutout_server",
    "remote_description_path",
    "composite_description_path",
]

#: Small enough to be fast, with partial edge blocks for SAMPLE_BLOCK on every axis.
SAMPLE_SHAPE = (20, 40, 36)
SAMPLE_BLOCK = (8, 16, 16)


@pytest.fixture(scope="session")
def sample_array() -> np.ndarray:
    """A deterministic synthetic volume (read-only, shared by all tests of the session)."""
    return sample_volume(SAMPLE_SHAPE, seed=7, writeable=False)


@pytest.fixture
def make_cutout_server(sample_array: np.ndarray) -> Iterator[Callable[..., CutoutServer]]:
    """Factory ``make(volume=None, **options)`` for started servers, all closed at teardown."""
    servers: list[CutoutServer] = []

    def make(volume: Any = None, **options: Any) -> CutoutServer:
        server = CutoutServer(sample_array if volume is None else volume, **options)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def cutout_server(make_cutout_server: Callable[..., CutoutServer]) -> CutoutServer:
    """A running server on ``sample_array`` (axes ``zyx``, no origin offset)."""
    return make_cutout_server()


@pytest.fixture
def remote_description_path(cutout_server: CutoutServer, tmp_path: Path) -> Path:
    """A ``RESTful-volume-description`` file for ``cutout_server``."""
    return Path(cutout_server.write_remote_description(tmp_path / "remote.json"))


@pytest.fixture
def composite_description_path(cutout_server: CutoutServer, tmp_path: Path) -> Path:
    """A composite description for ``cutout_server``; blocks of ``SAMPLE_BLOCK`` under ``tmp_path/cache``."""
    return Path(
        cutout_server.write_description(tmp_path / "volume.json", block_shape=SAMPLE_BLOCK, cache_dir="cache")
    )
