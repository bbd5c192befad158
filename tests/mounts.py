"""Small tmpfs file systems for the full-disk and read-only tests (root only; skipped otherwise).

A pytest plugin (tests/conftest.py loads it): the fixture ``tmpfs(name, kib,
ro=False)`` mounts a fresh tmpfs of ``kib`` KiB at ``tmp_path / name``; ``remount(path, "ro")`` changes
its options; every mount is undone at teardown.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

__all__ = ["tmpfs", "remount"]


def _mount(path: Path, options: str) -> None:
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({result.stderr.strip() or result.returncode})")


def remount(path: Path, options: str) -> None:
    """``mount -o remount,OPTIONS``, e.g. ``remount(path, "ro")``."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def _unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Factory ``mount(name, kib, ro=False)``: a fresh tmpfs of ``kib`` KiB; all unmounted at teardown."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(name: str, kib: int, ro: bool = False) -> Path:
        path = tmp_path / name
        path.mkdir()
        _mount(path, f"size={kib}k,mode=0755" + (",ro" if ro else ""))
        mounted.append(path)
        return path

    try:
        yield mount
    finally:
        for path in reversed(mounted):
            _unmount(path)
