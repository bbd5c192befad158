"""Shared fixtures: a real cutout server on 127.0.0.1 (the test kit's plugin), and the lazyflow choice."""

pytest_plugins = ["lazyflow_rbfs.testing.pytest_plugin", "tests.mounts"]


def pytest_addoption(parser):
    parser.addoption(
        "--lazyflow",
        choices=("auto", "real", "double"),
        default=None,
        help="run the operator tests against the real lazyflow, the test double, or whichever is importable",
    )
