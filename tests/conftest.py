"""Shared fixtures: a real cutout server on 127.0.0.1 (tests/servers.py), and the lazyflow choice."""

from tests.servers import *  # noqa: F401,F403  (fixtures)


def pytest_addoption(parser):
    parser.addoption(
        "--lazyflow",
        choices=("auto", "real", "double"),
        default=None,
        help="run the operator tests against the real lazyflow, the test double, or whichever is importable",
    )
