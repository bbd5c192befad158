"""The ilastik hook and launcher: ``lazyflow_rbfs.ilastik.install()``, ``uninstall()``, ``main(argv)``.

The public name of :mod:`lazyflow_rbfs.integrations.ilastik`, where the code lives, and of
:mod:`lazyflow_rbfs.integrations.ilastik_hook` (``install_hook()``, ``uninstall_hook()``,
``hook_status()``: the permanent hook of ``rbfs ilastik --install-hook``). Importing it never imports
lazyflow, vigra or ilastik; :func:`install` and :func:`main` do.
"""

from __future__ import annotations

from lazyflow_rbfs.integrations.ilastik import (
    EXIT_UNAVAILABLE,
    JSON_ATTEMPTS,
    install,
    installed,
    main,
    uninstall,
)
from lazyflow_rbfs.integrations.ilastik_hook import (
    HookStatus,
    default_site_dir,
    hook_status,
    install_hook,
    uninstall_hook,
)

__all__ = [
    "install",
    "uninstall",
    "installed",
    "main",
    "EXIT_UNAVAILABLE",
    "JSON_ATTEMPTS",
    "install_hook",
    "uninstall_hook",
    "hook_status",
    "HookStatus",
    "default_site_dir",
]
