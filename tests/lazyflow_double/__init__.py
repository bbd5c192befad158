"""A test double of the lazyflow, vigra and ilastik APIs that lazyflow_rbfs plugs into.

The double's modules live under ``site/`` with their real names (``lazyflow.graph``, ``vigra``,
``ilastik.__main__``, ...) and model only what ``lazyflow_rbfs`` touches; each module's docstring says
which lazyflow facts it keeps. It is never part of the package: the ``lazyflow_env`` fixture
(``tests.lazyflow_double.fixtures``) puts it in place of a missing real lazyflow for a test module.
"""

import os

#: Directory that holds the double's top-level packages (``sys.path`` entry).
SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site")
