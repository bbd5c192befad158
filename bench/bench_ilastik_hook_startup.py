"""Start-up cost of the permanent ilastik hook (``rbfs ilastik --install-hook``).

Two identical venvs (``python -m venv --without-pip``), the hook installed in one of them; fresh
interpreters (``python -c pass``, no ``PYTHONPATH``) are started alternately in both, and the medians of
their wall times compared. Also reported: the import time of the start-up module itself
(``python -X importtime``, its own line). Target (issue 15): at most a few milliseconds; the line says
PASS if the median difference is at most 3 ms.

    python bench/bench_ilastik_hook_startup.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import summarize, temp_dir  # also puts the repository root on sys.path

from lazyflow_rbfs.integrations import ilastik_startup
from lazyflow_rbfs.integrations.ilastik_hook import install_hook

TARGET_MS = 3.0


def _venv(root: Path) -> tuple[str, str]:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = str(root / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    site_dir = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return python, site_dir


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", ilastik_startup.DISABLE_VARIABLE):
        env.pop(name, None)
    return env


def _start(python: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([python, "-c", "pass"], check=True, env=env)
    return time.perf_counter() - t0


def _module_import_us(python: str, env: dict[str, str]) -> float:
    done = subprocess.run([python, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, env=env)
    for line in done.stderr.splitlines():
        if line.rstrip().endswith(ilastik_startup.MODULE_NAME):
            return float(line.split("|")[1])  # cumulative microseconds (equal to self: it imports nothing)
    raise RuntimeError(f"the hook was not imported at start-up:\n{done.stderr}")


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--quick", action="store_true", help="10 starts each instead of 60")
    parser.add_argument("--repeats", type=int, default=None, help="starts per interpreter")
    args = parser.parse_args()
    repeats = args.repeats or (10 if args.quick else 60)
    env = _env()
    with temp_dir("rbfs-hook-bench-") as tmp:
        plain, _ = _venv(tmp / "plain")
        hooked, hooked_site = _venv(tmp / "hooked")
        install_hook(hooked_site)
        for python in (plain, hooked):  # warm the file cache and write the .pyc files
            _start(python, env)
        without, with_hook = [], []
        for _ in range(repeats):
            without.append(_start(plain, env))
            with_hook.append(_start(hooked, env))
        module_us = statistics.median(_module_import_us(hooked, env) for _ in range(max(5, repeats // 6)))
    a, b = summarize([t * 1000 for t in without]), summarize([t * 1000 for t in with_hook])
    diff = b["median"] - a["median"]
    verdict = "PASS" if diff <= TARGET_MS else "MISS"
    print(
        f"ilastik hook start-up: python -c pass {a['median']:.2f} ms without, {b['median']:.2f} ms with "
        f"(median of {repeats} alternating starts; ratio {b['median'] / a['median']:.3f}): "
        f"{diff:+.2f} ms [target <= {TARGET_MS:g} ms: {verdict}]; start-up module import {module_us:.0f} us "
        f"(-X importtime, median)"
    )


if __name__ == "__main__":
    main()
