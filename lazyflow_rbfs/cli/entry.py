"""The entry point of ``rbfs``: run a command, map what it raises to one line and an exit status.

Errors are printed as one line, ``rbfs: error: ...``, on stderr (with a hint for file-system failures);
``-v`` adds debug logs and the full traceback. Statuses are those of :mod:`lazyflow_rbfs.cli.exits`.
Logging is configured here, for the length of a command, and nowhere else in the package.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import threading
import traceback
from argparse import Namespace
from collections.abc import Iterator, Sequence
from typing import Any

from lazyflow_rbfs.cli.args import PROG
from lazyflow_rbfs.cli.commands import build_parser
from lazyflow_rbfs.cli.commands.ilastik import launch_args, run_ilastik
from lazyflow_rbfs.cli.exits import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Failure,
    Interrupted,
    UsageError,
)
from lazyflow_rbfs.cli.text import one_line
from lazyflow_rbfs.errors import CacheWriteError, DescriptionError, OutOfBoundsError, RbfsError, SchemaError

__all__ = ["main"]


class _QuietFilter(logging.Filter):
    """Without -v: keep per-block warnings and urllib3's retry notices off the terminal.

    The commands summarise those themselves (``prefetch`` counts failed blocks and shows the first error,
    ``verify`` lists bad blocks, ``purge-locks`` counts removed files), so an error stays one line;
    ``-v`` shows everything.
    """

    _SUMMARISED = ("urllib3", "lazyflow_rbfs.cache", "lazyflow_rbfs.store")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        return not any(record.name == n or record.name.startswith(n + ".") for n in self._SUMMARISED)


@contextlib.contextmanager
def _logging(verbose: bool) -> Iterator[None]:
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(_QuietFilter())
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _write_hint(exc: CacheWriteError) -> str:
    """What to do about a file-system failure, for the one-line error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full or over quota: free space, or choose another output or cache directory"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the directory is read-only or not writable: choose another output or cache directory"
    if exc.errno == errno.ELOOP:
        return ""  # the message already says what to run
    return "the disk may be full or read-only: free space, or choose another output or cache directory"


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, (UsageError, SchemaError, DescriptionError, OutOfBoundsError)):
        return EXIT_USAGE
    return EXIT_FAILURE


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, CacheWriteError):
        hint = _write_hint(exc)
        return one_line(f"{exc} ({hint})" if hint else str(exc))
    if isinstance(exc, (UsageError, Failure, RbfsError)):
        return one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, OSError):
        return one_line(str(exc))
    return one_line(f"unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)")


def _split_ilastik(argv: list[str]) -> list[str] | None:
    """``rbfs [-v] ilastik ARGS...`` that runs ilastik: return ARGS untouched by argparse, else ``None``
    (``rbfs ilastik --help`` and the hook options are parsed as usual)."""
    for i, token in enumerate(argv):
        if token == "ilastik":
            return launch_args(argv[i + 1 :])
        if token not in ("-v", "--verbose"):
            return None
    return None


def _interrupted_text(exc: KeyboardInterrupt, args: Namespace | None) -> str:
    if isinstance(exc, Interrupted):
        return str(exc)
    if args is not None and getattr(args, "command", None) == "read":
        return f"read interrupted: {args.output} was not written (blocks already downloaded stay cached)"
    return "interrupted"


def _on_second_interrupt(signum: int, frame: Any) -> None:
    # A second Ctrl-C while the first one is still shutting down: leave now.
    os.write(2, f"{PROG}: interrupted again; exiting now\n".encode())
    os._exit(EXIT_INTERRUPTED)


def _on_first_interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, _on_second_interrupt)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupt_handling() -> Iterator[None]:
    """First Ctrl-C: ``KeyboardInterrupt`` (stop promptly); a second one exits at once with status 130.

    Only when ``main`` runs in the main thread and SIGINT has Python's default handler (an embedding
    program keeps its own).
    """
    install = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if install:
        signal.signal(signal.SIGINT, _on_first_interrupt)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rbfs`` command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    if _split_ilastik(list(sys.argv[1:] if argv is None else argv)) is not None:
        return _main(argv)  # ilastik handles its own signals
    with _interrupt_handling():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    # Until the arguments are parsed (and for ilastik's, which are not), guess -v from the words.
    verbose = any(a in ("-v", "--verbose") for a in argv[: (argv.index("--") if "--" in argv else len(argv))])
    try:
        ilastik_args = _split_ilastik(argv)
        if ilastik_args is not None:
            with _logging(verbose):
                return run_ilastik(ilastik_args)
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        verbose = bool(getattr(args, "verbose", False))  # given before or after COMMAND, else absent
        with _logging(verbose):
            return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt as exc:
        if verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"{PROG}: {_interrupted_text(exc, args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        if verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"{PROG}: error: {_error_text(exc)}", file=sys.stderr)
        return _exit_code(exc)
    finally:
        sys.stdout.flush()
