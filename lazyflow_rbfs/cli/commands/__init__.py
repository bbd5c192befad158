"""The subcommands of ``rbfs``: one module per group, and the table that builds the parser from them.

Each command module has ``add_<command>(command)`` functions that add a subcommand's arguments and its
handler ``func(args) -> int``; :func:`build_parser` calls them in the order ``rbfs --help`` lists the
commands. A new command is a new ``add_...`` function and one line here.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from lazyflow_rbfs import __version__
from lazyflow_rbfs.cli import dev
from lazyflow_rbfs.cli.args import PROG, Parser
from lazyflow_rbfs.cli.commands import cache, describe, ilastik, prefetch, read, status

__all__ = ["build_parser"]


def build_parser() -> Parser:
    """The ``rbfs`` argument parser with every subcommand; each sets ``func`` to its handler."""
    common = Parser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logs on stderr and full tracebacks on errors",
    )

    parser = Parser(
        prog=PROG,
        description="Remote EM volumes through a crash-safe local block cache (lazyflow_rbfs).",
        epilog="Run 'rbfs demo' for a self-contained tour; 'rbfs COMMAND --help' for a command's options.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} (lazyflow_rbfs) {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def command(name: str, help_text: str, aliases: Sequence[str] = ()) -> Parser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common], aliases=aliases)

    status.add_info(command)
    prefetch.add_prefetch(command)
    read.add_read(command)
    read.add_export(command)
    status.add_status(command)
    status.add_verify(command)
    status.add_purge_locks(command)
    cache.add_gc(command)
    cache.add_purge(command)
    dev.add_serve(command)
    dev.add_demo(command)
    describe.add_describe(command)
    ilastik.add_ilastik(command)
    return parser
