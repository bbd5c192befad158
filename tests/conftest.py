"""Shared fixtures: a real cutout server on 127.0.0.1 (tests/servers.py)."""

from tests.servers import *  # noqa: F401,F403  (fixtures)
