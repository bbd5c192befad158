"""The ``lazyflow_env`` fixture: the same tests against the real lazyflow or the double.

Load with ``pytest_plugins = ("tests.lazyflow_double.fixtures",)``. Choose with ``--lazyflow`` (defined in
the root ``conftest.py``) or the environment variable ``RBFS_LAZYFLOW``: ``real`` (fail if lazyflow is
not importable), ``double``, or ``auto`` (default: real if ``lazyflow.graph`` and ``vigra`` import).
"""

from __future__ import annotations

import importlib
import os
import sys
from types import SimpleNamespace

import pytest

from tests.lazyflow_double import SITE

#: Top-level modules the double replaces, and our modules that bind to whichever lazyflow they imported.
REPLACED = ("lazyflow", "vigra", "ilastik")
BOUND = ("lazyflow_rbfs.operators", "lazyflow_rbfs.ilastik", "lazyflow_rbfs.integrations")


def _modules(roots: tuple[str, ...]) -> list[str]:
    return [n for n in sys.modules if any(n == r or n.startswith(r + ".") for r in roots)]


def _use_double(config: pytest.Config) -> bool:
    try:
        mode = config.getoption("--lazyflow")
    except ValueError:
        mode = None
    mode = (mode or os.environ.get("RBFS_LAZYFLOW") or "auto").lower()
    if mode not in ("auto", "real", "double"):
        raise pytest.UsageError(f"--lazyflow/RBFS_LAZYFLOW must be auto, real or double, got {mode!r}")
    try:
        importlib.import_module("lazyflow.graph")
        importlib.import_module("vigra")
        real = not getattr(sys.modules["lazyflow"], "__double__", False)
    except ImportError:
        real = False
    if mode == "real" and not real:
        pytest.fail("RBFS_LAZYFLOW=real, but lazyflow and vigra are not importable")
    return mode == "double" or not real


@pytest.fixture(scope="module")
def lazyflow_env(request):
    """``kind`` ("real" or "double"), our ``operators`` and ``hook`` modules bound to that lazyflow, and
    lazyflow's ``Graph``, ``request_module``, ``json_config``, ``factory_module``, ``input_reader_module``.

    The double displaces any real lazyflow, vigra and ilastik for the test module only: afterwards
    ``sys.modules`` and ``sys.path`` are as they were."""
    double = _use_double(request.config)
    replaced = REPLACED + BOUND if double else BOUND
    saved = {name: sys.modules.pop(name) for name in _modules(replaced)}
    if double:
        sys.path.insert(0, SITE)
        importlib.invalidate_caches()
    imp = importlib.import_module
    try:
        yield SimpleNamespace(
            kind="double" if double else "real",
            operators=imp("lazyflow_rbfs.operators"),
            hook=imp("lazyflow_rbfs.ilastik"),
            Graph=imp("lazyflow.graph").Graph,
            request_module=imp("lazyflow.request"),
            json_config=imp("lazyflow.utility.jsonConfig"),
            factory_module=imp("lazyflow.utility.io_util.blockwiseFileset"),
            input_reader_module=imp("lazyflow.operators.ioOperators.opInputDataReader"),
        )
    finally:
        if "lazyflow_rbfs.ilastik" in sys.modules:
            sys.modules["lazyflow_rbfs.ilastik"].uninstall()
        if "lazyflow_rbfs.operators" in sys.modules:
            sys.modules["lazyflow_rbfs.operators"].unregister_from_lazyflow()
        for name in _modules(replaced):
            del sys.modules[name]
        while SITE in sys.path:
            sys.path.remove(SITE)
        sys.modules.update(saved)
