"""``rbfs``: the command line of lazyflow_rbfs.

Every subcommand only parses its arguments, calls the library, prints and maps errors to exit codes:

* ``0`` success;
* ``1`` a runtime failure (download/prefetch failed, a block is missing or corrupt, an I/O error);
* ``2`` a usage or description error (bad option, bad roi, missing or invalid description file);
* ``130`` interrupted (Ctrl-C).

Errors are printed as one line, ``rbfs: error: ...``, on stderr; ``-v`` adds debug logs and the full
traceback. Results go to stdout, progress bars and logs to stderr. Run ``rbfs --help`` for the commands.

Modules: :mod:`~lazyflow_rbfs.cli.entry` (``main``: errors to exit statuses),
:mod:`~lazyflow_rbfs.cli.exits`, :mod:`~lazyflow_rbfs.cli.args` (roi and option parsing),
:mod:`~lazyflow_rbfs.cli.opening` (opening a description), :mod:`~lazyflow_rbfs.cli.text`,
:mod:`~lazyflow_rbfs.cli.commands` (one module per group of commands) and :mod:`~lazyflow_rbfs.cli.dev`
(``serve`` and ``demo``, the only place that runs the test kit).
"""

from __future__ import annotations

from lazyflow_rbfs.cli.args import parse_roi, parse_shape, resolve_roi
from lazyflow_rbfs.cli.entry import main

__all__ = ["main", "parse_roi", "resolve_roi", "parse_shape"]
