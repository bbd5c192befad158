"""``rbfs ilastik [--] ILASTIK_ARGS...``: run ilastik with the lazyflow_rbfs hook installed.

ilastik's arguments are never parsed here: :func:`lazyflow_rbfs.cli.main` hands them to
:func:`run_ilastik` untouched (the subcommand's parser exists for ``--help`` and the command list).
"""

from __future__ import annotations

import argparse
import importlib
import logging

from lazyflow_rbfs.cli.args import AddCommand
from lazyflow_rbfs.cli.exits import Unavailable

__all__ = ["add_ilastik", "run_ilastik"]

logger = logging.getLogger(__name__)


def add_ilastik(command: AddCommand) -> None:
    p = command("ilastik", "Run ilastik with the lazyflow_rbfs hook installed: rbfs ilastik -- ARGS...")
    p.add_argument("ilastik_args", nargs=argparse.REMAINDER, metavar="ILASTIK_ARGS")
    p.set_defaults(func=_cmd_ilastik)


def _cmd_ilastik(args: argparse.Namespace) -> int:
    forwarded = list(args.ilastik_args)
    if forwarded[:1] == ["--"]:
        forwarded = forwarded[1:]
    return run_ilastik(forwarded)


def run_ilastik(forwarded: list[str]) -> int:
    try:
        _ilastik = importlib.import_module("lazyflow_rbfs.ilastik")
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available here"
        logger.debug("importing lazyflow_rbfs.ilastik failed", exc_info=True)
        raise Unavailable(f"the ilastik integration is not available: {type(exc).__name__}: {exc}") from exc
    result = _ilastik.main(forwarded)
    return int(result or 0)
