"""The ilastik hook and launcher: ``lazyflow_rbfs.ilastik.install()``, ``uninstall()``, ``main(argv)``.

The public name of :mod:`lazyflow_rbfs.integrations.ilastik`, where the code lives. Importing it never
imports lazyflow, vigra or ilastik; :func:`install` and :func:`main` do.
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

__all__ = ["install", "uninstall", "installed", "main", "EXIT_UNAVAILABLE", "JSON_ATTEMPTS"]
