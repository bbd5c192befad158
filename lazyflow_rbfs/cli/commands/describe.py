"""``rbfs describe``: write a composite description from a remote volume's metadata."""

from __future__ import annotations

import argparse

from lazyflow_rbfs.cli.args import AddCommand, add_request_options
from lazyflow_rbfs.cli.exits import EXIT_OK

__all__ = ["add_describe"]


def add_describe(command: AddCommand) -> None:
    p = command(
        "describe",
        "Write a composite description from a remote volume's metadata (zarr, OME-Zarr, N5, precomputed, "
        "Boss).",
    )
    from lazyflow_rbfs.describe import add_describe_arguments

    add_describe_arguments(p)
    add_request_options(p)
    p.set_defaults(func=_cmd_describe)


def _cmd_describe(args: argparse.Namespace) -> int:
    from lazyflow_rbfs.cli.dev import rbfs_command
    from lazyflow_rbfs.describe import describe_main

    path = describe_main(args)
    print(f"wrote {path}")
    print(f"next: {rbfs_command()} info {path}")
    return EXIT_OK
