"""``--scheduler`` / ``scheduler=``: bad addresses, unreachable schedulers, clusters without workers.

Issue 9, item 13.

Real ``dask scheduler`` and ``dask worker`` processes; ``rbfs`` runs as a subprocess where what it prints
at exit matters (no traceback, no ``Client.__del__`` noise).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from lazyflow_rbfs import RESTfulBlockwiseFileset  # noqa: E402
from lazyflow_rbfs.distributed import parse_scheduler_address, prefetch_on_cluster  # noqa: E402
from lazyflow_rbfs.errors import ArgumentError, RemoteTimeoutError  # noqa: E402
from lazyflow_rbfs.testing.pytest_plugin import SAMPLE_BLOCK, SAMPLE_SHAPE  # noqa: E402

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[1]
N_BLOCKS = 3 * 3 * 3

BAD_ADDRESSES = [
    "127.0.0.1:notaport",
    "http://127.0.0.1:8787",
    "https://scheduler.example.org",
    "tcp://",
    "tcp://127.0.0.1",
    "tcp://127.0.0.1:0",
    "tcp://127.0.0.1:99999",
    "tcp://127.0.0.1:8786/path",
    "gopher://127.0.0.1:8786",
    "::1:8786",
    "tcp://127.0.0.1:8786 extra",
    "",
]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


def _rbfs(*argv: str, timeout: float, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lazyflow_rbfs", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(**env),
    )


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port where connections are refused: bound (so no server can take it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _drain(stream) -> None:
    for _ in stream:
        pass


def _start(argv: list[str], ready: str) -> tuple[subprocess.Popen, str]:
    """Start a dask process; return it and the first stderr line containing ``ready`` (its handshake)."""
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_env())
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if ready in line:
            # Keep reading its log so that a full pipe never blocks it.
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
            return proc, line
    proc.wait()
    raise RuntimeError(f"{argv} ended before printing {ready!r}:\n{''.join(lines)}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def empty_scheduler() -> Iterator[str]:
    """A real dask scheduler process with no worker; yields its address."""
    proc, line = _start(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
        ],
        "Scheduler at:",
    )
    try:
        yield line.split("Scheduler at:")[1].strip()
    finally:
        _stop(proc)


def _one_error_line(stderr: str, *fragments: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("rbfs: error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], lines
    assert "Traceback" not in stderr and "__del__" not in stderr and "Exception ignored" not in stderr, stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


# ---------------------------------------------------------------- malformed addresses


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_parse_scheduler_address_refuses_what_dask_cannot_connect_to(address):
    with pytest.raises(ArgumentError) as info:
        parse_scheduler_address(address)
    assert "scheduler address" in str(info.value) or "web address" in str(info.value)


@pytest.mark.parametrize(
    "address, expected",
    [
        ("127.0.0.1:8786", "tcp://127.0.0.1:8786"),
        ("tcp://10.0.0.1:8786", "tcp://10.0.0.1:8786"),
        ("TCP://node-3.cluster:8786", "tcp://node-3.cluster:8786"),
        ("tls://10.0.0.1:8786", "tls://10.0.0.1:8786"),
        ("tcp://[::1]:8786", "tcp://[::1]:8786"),
        ("[::1]:8786", "tcp://[::1]:8786"),
        ("ws://10.0.0.1:8786", "ws://10.0.0.1:8786"),
        ("inproc://10.0.0.1/1234/1", "inproc://10.0.0.1/1234/1"),
    ],
)
def test_parse_scheduler_address_accepts_dask_s_forms(address, expected):
    assert parse_scheduler_address(address) == expected


def test_rbfs_prefetch_with_a_malformed_scheduler_exits_2_at_once(composite_description_path):
    for address in ("127.0.0.1:notaport", "http://127.0.0.1:8787"):
        done = _rbfs("prefetch", str(composite_description_path), "--scheduler", address, timeout=30)
        assert done.returncode == 2, done.stderr
        _one_error_line(done.stderr, "--scheduler", address)
        assert "unexpected" not in done.stderr
        assert done.stdout == ""


def test_download_all_blocks_with_a_malformed_scheduler_raises_argument_error(composite_description_path):
    with RESTfulBlockwiseFileset(composite_description_path) as fileset:
        with pytest.raises(ArgumentError, match="notaport"):
            fileset.downloadAllBlocks(scheduler="127.0.0.1:notaport")
        with pytest.raises(ArgumentError, match="web address"):
            fileset.downloadAllBlocks(scheduler="http://127.0.0.1:8787")


# ---------------------------------------------------------------- nothing listens there


def test_rbfs_prefetch_with_an_unreachable_scheduler_exits_1_in_bounded_time(
    composite_description_path, dead_port
):
    address = f"tcp://127.0.0.1:{dead_port}"
    done = _rbfs(
        "prefetch",
        str(composite_description_path),
        "--scheduler",
        address,
        timeout=60,
        DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s",
    )
    assert done.returncode == 1, done.stderr
    _one_error_line(done.stderr, "cannot connect to the dask scheduler at " + address)


def test_prefetch_on_an_unreachable_scheduler_raises_remote_timeout_error(
    composite_description_path, dead_port
):
    import dask

    address = f"tcp://127.0.0.1:{dead_port}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(RemoteTimeoutError) as info:
            prefetch_on_cluster(composite_description_path, address)
    assert info.value.url == address and info.value.status is None
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, OSError)


# ---------------------------------------------------------------- a scheduler without workers


def test_rbfs_prefetch_on_a_scheduler_without_workers_reports_the_wait_and_gives_up(
    composite_description_path, empty_scheduler
):
    done = _rbfs(
        "prefetch",
        str(composite_description_path),
        "--scheduler",
        empty_scheduler,
        "--wait-for-workers",
        "1",
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert f"no worker on the dask scheduler at {empty_scheduler} yet: waiting up to 1 s" in done.stderr
    _one_error_line(done.stderr, f"no worker joined the dask scheduler at {empty_scheduler} within 1 s")


def test_prefetch_waits_for_a_worker_to_join(
    composite_description_path, empty_scheduler, cutout_server, sample_array
):
    # Zero seconds: fail at once, without a wait.
    with pytest.raises(RemoteTimeoutError, match="has no worker"):
        prefetch_on_cluster(composite_description_path, empty_scheduler, wait_for_workers=0)

    # The warning that announces the wait is the cue to start a worker; the prefetch then goes ahead.
    waiting = threading.Event()

    class Cue(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting up to" in record.getMessage():
                waiting.set()

    cue = Cue(logging.WARNING)
    logging.getLogger("lazyflow_rbfs.distributed").addHandler(cue)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = prefetch_on_cluster(
                composite_description_path, empty_scheduler, wait_for_workers=60
            )
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    worker = None
    try:
        thread.start()
        assert waiting.wait(30)
        worker, _ = _start(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                empty_scheduler,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
            ],
            "Registered to:",
        )
        thread.join(60)
    finally:
        logging.getLogger("lazyflow_rbfs.distributed").removeHandler(cue)
        if worker is not None:
            _stop(worker)
    assert "error" not in outcome, outcome
    report = outcome["report"]
    assert (report.total, report.downloaded, report.failed) == (N_BLOCKS, N_BLOCKS, [])
    with RESTfulBlockwiseFileset(composite_description_path) as fileset:
        np.testing.assert_array_equal(fileset.readData(((0, 0, 0), SAMPLE_SHAPE)), sample_array)
    assert SAMPLE_BLOCK  # the fixture's geometry: 3 x 3 x 3 blocks
