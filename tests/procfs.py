"""What this process holds open, read from ``/proc`` (Linux): files and client sockets.

For tests that check what the code under test keeps open (or leaks) through the operating system's view
rather than through private attributes. Callers skip where ``HAVE_PROC`` is false.
"""

from __future__ import annotations

import os
from pathlib import Path

HAVE_PROC = os.path.isdir("/proc/self/fd")


def open_fds() -> tuple[list[str], list[int]]:
    """(targets of this process's non-socket file descriptors, inodes of its socket descriptors)."""
    files, sockets = [], []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the descriptor listdir itself used
        if target.startswith("socket:["):
            sockets.append(int(target[8:-1]))
        else:
            files.append(target)
    return files, sockets


def open_files_under(directory: str | os.PathLike) -> list[str]:
    """The files below ``directory`` this process holds open right now."""
    root = os.path.realpath(directory) + os.sep
    return [f for f in open_fds()[0] if f.startswith(root)]


def client_sockets_to(port: int) -> int:
    """This process's TCP sockets whose remote port is ``port`` (client ends of connections to a server)."""
    inodes = set(open_fds()[1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and int(fields[9]) in inodes:
                count += 1
    return count
