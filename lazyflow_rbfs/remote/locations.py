"""Locations of remote data (re-exported from the foundation module :mod:`lazyflow_rbfs.locations`, which
the description layer uses too)."""

from __future__ import annotations

from lazyflow_rbfs.locations import LOCATION_SCHEMES, file_url, http_url, is_file_url, join, resolve

__all__ = ["LOCATION_SCHEMES", "http_url", "resolve", "is_file_url", "join", "file_url"]
