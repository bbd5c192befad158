"""A small, honest test double of the lazyflow, vigra and ilastik APIs that lazyflow_rbfs plugs into.

The modules live under ``site/`` with their real names (``lazyflow.graph``, ``vigra``, ``ilastik``, ...).
:func:`install` makes them importable and :func:`uninstall` restores ``sys.modules`` and ``sys.path``
exactly as they were, so the rest of the test session never sees them. The double is never part of the
package. What each module models, and from which lazyflow fact, is written in its docstring.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field

#: Directory that holds the double's top-level packages.
SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site")

#: Top-level module names the double provides (or, for ``quilted``, must keep unimportable).
TOP_LEVEL = ("lazyflow", "vigra", "ilastik", "ilastik_main", "quilted")

#: Our modules that bind to whichever lazyflow they were imported with (the public names and their code).
BOUND = (
    "lazyflow_rbfs.operators",
    "lazyflow_rbfs.ilastik",
    "lazyflow_rbfs.integrations.lazyflow",
    "lazyflow_rbfs.integrations.ilastik",
)


def _covered(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


@dataclass
class Installation:
    saved: dict = field(default_factory=dict)
    active: bool = True


def install() -> Installation:
    """Put the double on ``sys.path``/``sys.modules`` in place of any real lazyflow, vigra and ilastik."""
    saved = {name: module for name, module in sys.modules.items() if _covered(name, TOP_LEVEL + BOUND)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, SITE)
    importlib.invalidate_caches()
    for name in (
        "vigra",
        "lazyflow",
        "lazyflow.graph",
        "lazyflow.utility.jsonConfig",
        "lazyflow.utility.io_util.blockwiseFileset",
        "lazyflow.operators.ioOperators.opInputDataReader",
    ):
        importlib.import_module(name)
    return Installation(saved=saved)


def uninstall(installation: Installation) -> None:
    """Remove every module the double (or code bound to it) added, and restore what was there."""
    if not installation.active:
        return
    installation.active = False
    for name in [n for n in sys.modules if _covered(n, TOP_LEVEL + BOUND)]:
        del sys.modules[name]
    while SITE in sys.path:
        sys.path.remove(SITE)
    sys.modules.update(installation.saved)
    importlib.invalidate_caches()


def is_double(module) -> bool:
    return bool(getattr(module, "__double__", False))
