"""What ``rbfs`` exits with: the exit statuses, and the exceptions that say which one a failure gets.

* ``0`` success;
* ``1`` a runtime failure (download/prefetch failed, a block is missing or corrupt, an I/O error);
* ``2`` a usage or description error (bad option, bad roi, missing or invalid description file);
* ``130`` interrupted (Ctrl-C).

Commands raise :class:`UsageError` (2) or :class:`Failure` (1) with a message for the user; errors of the
library map to a status in :mod:`lazyflow_rbfs.cli.entry`.
"""

from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "UsageError",
    "Unavailable",
    "Failure",
    "Interrupted",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command line that cannot be carried out as given (exit status 2)."""


class Unavailable(UsageError):
    """An optional part (the ilastik integration) cannot be imported (exit status 2)."""


class Failure(Exception):
    """A runtime failure already described for the user (exit status 1)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a one-line summary of what was done and what was not (exit status 130)."""
