"""The ``lazyflow_env`` fixture: the same tests against the real lazyflow or the double.

Choose with the environment variable ``RBFS_LAZYFLOW`` (or a ``--lazyflow`` option, if the root
``conftest.py`` defines one): ``real`` (fail if lazyflow is not importable), ``double``, or ``auto``
(default: real if ``lazyflow.graph`` and ``vigra`` import, else the double).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from types import ModuleType

import pytest

from tests import lazyflow_double

MODES = ("auto", "real", "double")


@dataclass
class LazyflowEnv:
    kind: str  # "real" or "double"
    operators: ModuleType  # lazyflow_rbfs.operators, imported against this lazyflow
    hook: ModuleType  # lazyflow_rbfs.ilastik
    graph: ModuleType  # lazyflow.graph
    factory_module: ModuleType  # lazyflow.utility.io_util.blockwiseFileset
    json_config: ModuleType  # lazyflow.utility.jsonConfig
    input_reader_module: ModuleType  # lazyflow.operators.ioOperators.opInputDataReader
    request_module: ModuleType  # lazyflow.request

    def Graph(self):  # noqa: N802 - mirrors lazyflow's name
        return self.graph.Graph()


def _mode(config) -> str:
    mode = None
    try:
        mode = config.getoption("--lazyflow")
    except ValueError:
        pass
    mode = (mode or os.environ.get("RBFS_LAZYFLOW") or "auto").lower()
    if mode not in MODES:
        raise pytest.UsageError(f"--lazyflow/RBFS_LAZYFLOW must be one of {MODES}, got {mode!r}")
    return mode


def _real_importable() -> bool:
    try:
        importlib.import_module("lazyflow.graph")
        importlib.import_module("vigra")
    except ImportError:
        return False
    return not lazyflow_double.is_double(sys.modules["lazyflow"])


def _forget_bound_modules() -> None:
    for name in lazyflow_double.BOUND:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def lazyflow_env(request):
    mode = _mode(request.config)
    installation = None
    if mode == "double" or (mode == "auto" and not _real_importable()):
        installation = lazyflow_double.install()
        kind = "double"
    elif not _real_importable():
        pytest.fail("RBFS_LAZYFLOW=real, but lazyflow and vigra are not importable")
    else:
        kind = "real"
    _forget_bound_modules()
    try:
        operators = importlib.import_module("lazyflow_rbfs.operators")
        hook = importlib.import_module("lazyflow_rbfs.ilastik")
        env = LazyflowEnv(
            kind=kind,
            operators=operators,
            hook=hook,
            graph=importlib.import_module("lazyflow.graph"),
            factory_module=importlib.import_module("lazyflow.utility.io_util.blockwiseFileset"),
            json_config=importlib.import_module("lazyflow.utility.jsonConfig"),
            input_reader_module=importlib.import_module("lazyflow.operators.ioOperators.opInputDataReader"),
            request_module=importlib.import_module("lazyflow.request"),
        )
        yield env
    finally:
        hook_module = sys.modules.get("lazyflow_rbfs.ilastik")
        if hook_module is not None:
            hook_module.uninstall()
        operators_module = sys.modules.get("lazyflow_rbfs.operators")
        if operators_module is not None:
            operators_module.unregister_from_lazyflow()
        _forget_bound_modules()
        if installation is not None:
            lazyflow_double.uninstall(installation)
